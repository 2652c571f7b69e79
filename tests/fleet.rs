//! deploy/local/fleet.sh end to end: moto's S3 server, two real replicas of the built binary sharing
//! one bucket, and a real Prometheus (when installed; CI installs it). The script publishes a new
//! version, rolls it out through one replica under traffic and checks that the other follows, so
//! this is the test of "several replicas agree": it passes only if the script exits 0 and said so
//! at each check, and nothing it started is left listening.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use common::{python_venv, repo_root};

/// Prometheus on PATH or in /usr/bin, as the script looks for it; without it, a note (and a
/// failure under CI=true, where it is installed).
fn prometheus_present() -> bool {
    let on_path = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join("prometheus").is_file()));
    let found = on_path || PathBuf::from("/usr/bin/prometheus").is_file();
    if !found {
        let note = "note: prometheus not found (PATH, /usr/bin): the fleet ran without it \
                    (Debian: apt-get install prometheus; .ci/run does)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{note}");
        let _ = writeln!(std::io::stderr(), "{note}");
    }
    found
}

/// The line of `out` that starts with `start`.
fn line<'a>(out: &'a str, start: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in:\n{out}"))
}

/// The words of the table row for `replica`'s breast_cancer in the last table printed.
fn final_row(out: &str, replica: &str) -> Vec<String> {
    let table = &out[out
        .rfind("== 6. what each replica serves")
        .expect("step 6 ran")..];
    let row = table
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{replica} ")))
        .unwrap_or_else(|| panic!("no row for replica {replica} in:\n{table}"));
    row.split_whitespace().map(String::from).collect()
}

#[test]
fn two_replicas_sharing_a_bucket_agree_through_a_rollout() {
    let venv = python_venv();
    let prometheus = prometheus_present();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("deploy/local/fleet.sh"))
        .current_dir(repo_root())
        .env("SWITCHYARD_BIN", env!("CARGO_BIN_EXE_switchyard"))
        .env("FLEET_VENV", &venv)
        .env("FLEET_DIR", dir.path())
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("PROMETHEUS_BIN");
    for (key, _) in std::env::vars() {
        if key.starts_with("FLEET_") && key != "FLEET_VENV" && key != "FLEET_DIR" {
            cmd.env_remove(key); // the script's defaults, whatever the caller's shell says
        }
    }
    let output = cmd.output().expect("bash runs deploy/local/fleet.sh");
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    let logs: String = ["s3.log", "replica-a.log", "replica-b.log", "prometheus.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
            let tail: Vec<_> = text.lines().rev().take(15).collect();
            let tail: Vec<_> = tail.into_iter().rev().collect();
            format!("--- {f}:\n{}\n", tail.join("\n"))
        })
        .collect();
    assert!(
        output.status.success(),
        "fleet.sh failed ({}):\n{out}\n{}\n{logs}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!out.contains("FAIL"), "{out}");

    // The checks of the run, in order.
    for check in [
        "ok: A and B agree: both serve version 1 of each model, read from the bucket",
        "ok: A and B agree: breast_cancer pinned to 1 on both",
        "ok: A and B agree: both have breast_cancer 2 ready, and still serve the pinned 1",
        "ok: A and B agree: the rollout succeeded; both pin breast_cancer 2",
        "ok: A and B agree: every model, version, pin and rollout state is the same on A and B",
    ] {
        line(&out, check);
    }
    // B followed each step the rollout went through (written to the bucket by whichever replica
    // decided), and at each partial step the sticky keys went to the same version on both.
    let agreed = |state: &str| {
        out.lines()
            .any(|l| l.starts_with("ok: A and B agree: rollout ") && l.contains(state))
    };
    for state in [
        "ab 1->2 running, step 1 of 2 (20%, 50%), candidate 20%",
        "ab 1->2 running, step 2 of 2 (20%, 50%), candidate 50%",
        "ab 1->2 succeeded at step 2 of 2 (20%, 50%)",
    ] {
        assert!(agreed(state), "no agreement on {state:?} in:\n{out}");
    }
    for step in [1, 2] {
        line(
            &out,
            &format!(
                "ok: sticky keys (x-user: user-0..user-15) at step {step}: each answered by the \
                 same version on A and B"
            ),
        );
    }
    let traffic = line(&out, "ok: traffic: ");
    assert!(
        traffic.ends_with("requests answered, none failed"),
        "{traffic}"
    );

    // The final table: both replicas serve the same, breast_cancer 2 pinned by the rollout.
    for replica in ["A", "B"] {
        let row = final_row(&out, replica);
        assert_eq!(row[2..6], ["breast_cancer", "1,2", "2", "2"], "{row:?}");
        assert_eq!(
            row[6..].join(" "),
            "ab 1->2 succeeded at step 2 of 2 (20%, 50%)"
        );
    }

    if prometheus {
        line(
            &out,
            "ok: Prometheus scrapes A and B and sees the same on each",
        );
        // breast_cancer 1 and 2, diabetes 1, iris 1 on each replica, as Prometheus scraped them.
        for replica in ["(A)", "(B)"] {
            let loaded = out
                .lines()
                .skip_while(|l| !l.contains("sum by (instance) (switchyard_model_versions_loaded)"))
                .find(|l| l.contains(replica))
                .unwrap_or_else(|| panic!("no versions-loaded row for {replica}:\n{out}"));
            assert!(
                loaded.trim_end().ends_with(&format!("{replica}  4")),
                "{loaded}"
            );
        }
        let rules = std::fs::read_to_string(repo_root().join("deploy/prometheus/alerts.yml"))
            .unwrap()
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with("- alert:") || l.starts_with("- record:")
            })
            .count();
        let loaded = line(&out, "   alert rules loaded: ");
        assert!(
            loaded.starts_with(&format!("   alert rules loaded: {rules} in ")),
            "{loaded} (alerts.yml has {rules} rules)"
        );
    } else {
        line(&out, "== 7. Prometheus' view: skipped (no Prometheus)");
    }
    line(&out, "fleet: the replicas agreed at every check");

    // The cleanup trap stopped everything the script started: nothing answers where it listened.
    let mut urls: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            l.strip_prefix("replica A: ")
                .or_else(|| l.strip_prefix("replica B: "))
                .or_else(|| l.strip_prefix("Prometheus: "))
                .or_else(|| l.strip_suffix(", bucket switchyard-fleet (created)"))
        })
        .filter_map(|rest| rest.split([' ', ',']).next())
        .collect();
    urls.sort();
    assert_eq!(
        urls.len(),
        if prometheus { 4 } else { 3 },
        "{urls:?}\n{out}"
    );
    for url in urls {
        let addr = url.trim_start_matches("http://");
        assert!(
            TcpStream::connect(addr).is_err(),
            "{addr} still accepts connections after fleet.sh exited"
        );
    }
}

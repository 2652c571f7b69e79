//! `switchyard rollout ...`: the real binary against a real server (in this process), through a
//! rollout's life: refused flags, start, status, pause, resume, history, abort.

mod common;

use std::process::{Command, Output};

use common::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs the CLI against `server` (off the runtime's threads: the server answers on them).
async fn cli(server: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .args(["--server", server])
        .env_remove("SWITCHYARD_TOKEN")
        .env_remove("SWITCHYARD_TOKEN_FILE");
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The output's line that starts with `start` (leading spaces ignored).
fn line(text: &str, start: &str) -> String {
    text.lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
        .to_string()
}

/// Runs the CLI and expects success; returns its stdout.
async fn ok(server: &str, args: &[&str]) -> String {
    let out = cli(server, args).await;
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        stderr(&out),
        stdout(&out)
    );
    stdout(&out)
}

/// Runs the CLI and expects it to fail; returns its stderr.
async fn fails(server: &str, args: &[&str]) -> String {
    let out = cli(server, args).await;
    assert!(
        !out.status.success(),
        "{args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_through_the_cli() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let server = s.base.as_str();
    let m = "breast_cancer";

    // No rollout yet: status says so and how to start one.
    let e = fails(server, &["rollout", "status", m]).await;
    assert!(
        e.contains("model 'breast_cancer' has no rollout") && e.contains("404"),
        "{e}"
    );
    let e = fails(server, &["rollout", "history", "nope"]).await;
    assert!(e.contains("unknown model 'nope'"), "{e}");

    // Steps that do not increase are refused before anything is sent, naming the flag.
    let e = fails(
        server,
        &[
            "rollout",
            "start",
            m,
            "--candidate",
            "2",
            "--steps",
            "50,10",
        ],
    )
    .await;
    assert!(
        e.contains("--steps must increase (step 1 is 10, after 50)"),
        "{e}"
    );

    // Version 1 is the stable one: pinned, so the rollout starts from it.
    ok(server, &["promote", m, "1"]).await;
    let start = [
        "rollout",
        "start",
        m,
        "--candidate",
        "2",
        "--steps",
        "10,50",
        "--interval",
        "1h",
    ];
    let t = ok(server, &start).await;
    assert_eq!(line(&t, "rollout:"), "rollout:    canary, version 1 -> 2");
    assert_eq!(line(&t, "phase:"), "phase:      running");
    assert_eq!(
        line(&t, "step:"),
        "step:       1 of 2 (10%, 50%); candidate share now 10%"
    );
    assert!(line(&t, "interval:").starts_with("interval:   1h (#0), ends "));
    assert_eq!(line(&t, "failures:"), "failures:   0 of 2");
    assert!(
        line(&t, "last decision:").contains("started  canary rollout of version 2"),
        "{t}"
    );
    // A second start is refused while this one runs.
    let e = fails(server, &start).await;
    assert!(e.contains("already has a running rollout"), "{e}");

    let t = ok(server, &["rollout", "status", m]).await;
    assert_eq!(line(&t, "phase:"), "phase:      running");
    assert_eq!(
        line(&t, "candidate ")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>(),
        ["candidate", "2"]
    );
    assert!(line(&t, "p99_ratio").contains("inconclusive"), "{t}");

    let t = ok(server, &["rollout", "pause", m]).await;
    assert_eq!(line(&t, "phase:"), "phase:      paused");
    assert_eq!(
        line(&t, "reason:"),
        "reason:     paused by the operator at step 1 (10% on the candidate)"
    );
    let e = fails(server, &["rollout", "pause", m]).await;
    assert!(
        e.contains("cannot pause the rollout of model 'breast_cancer': the rollout is paused")
            && e.contains("409"),
        "{e}"
    );

    let t = ok(server, &["rollout", "resume", m]).await;
    assert_eq!(line(&t, "phase:"), "phase:      running");
    assert!(line(&t, "interval:").starts_with("interval:   1h (#1), ends "));
    assert_eq!(line(&t, "reason:"), "reason:     resumed by the operator");

    let t = ok(server, &["rollout", "history", m]).await;
    let rows: Vec<Vec<&str>> = t
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{t}");
    for (row, (decision, interval)) in
        rows.iter()
            .zip([("started", "0"), ("paused", "0"), ("resumed", "1")])
    {
        assert_eq!(row[1..4], [decision, "1", interval], "{t}");
    }

    let t = ok(server, &["rollout", "abort", m]).await;
    assert_eq!(line(&t, "phase:"), "phase:      aborted");
    assert_eq!(
        line(&t, "reason:"),
        "reason:     aborted by the operator at step 1: all traffic back to version 1"
    );
    assert!(line(&t, "interval:").contains("rollout finished"), "{t}");
    let e = fails(server, &["rollout", "promote", m]).await;
    assert!(e.contains("the rollout already aborted"), "{e}");

    // --json prints the server's answer as is.
    let v: serde_json::Value =
        serde_json::from_str(&ok(server, &["rollout", "history", m, "--json"]).await).unwrap();
    assert_eq!(v["rollout"]["phase"], "aborted");
    assert_eq!(v["rollout"]["history"].as_array().map(Vec::len), Some(4));
    assert_eq!(v["pinned_version"], 1);
}

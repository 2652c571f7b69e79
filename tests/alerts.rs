//! The Prometheus alert rules in deploy/prometheus: valid for Prometheus (`promtool check rules`)
//! and doing what their unit tests say (`promtool test rules`: each alert fires on a series made to
//! fire it and stays silent on its near misses). Skipped with a note where promtool is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const RULES: &str = "deploy/prometheus/alerts.yml";
const RULE_TESTS: &str = "deploy/prometheus/alerts.test.yml";

#[test]
fn alert_rules_are_valid() {
    if let Some(promtool) = promtool() {
        run_promtool(&promtool, &["check", "rules", RULES]);
    }
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    if let Some(promtool) = promtool() {
        run_promtool(&promtool, &["test", "rules", RULE_TESTS]);
    }
}

/// promtool from PATH, or None after a note saying how to get it.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        // Written past the test harness's capture, so it shows in a passing run too.
        let _ = writeln!(
            std::io::stderr(),
            "note: promtool not found on PATH; {RULES} was not checked \
             (install promtool, Debian: apt-get install prometheus, to run it; CI does)"
        );
    }
    found
}

fn run_promtool(promtool: &Path, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

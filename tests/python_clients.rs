//! Runs the Python interoperability tests (tests/python, real `tritonclient` against the real
//! binary, compared with Python onnxruntime) as part of `cargo test`.
//!
//! The Python packages are installed on first use into `target/tmp/python-venv` with the host's
//! `python3 -m venv` and pip, from tests/python/requirements.txt; the venv is rebuilt when that
//! file changes. `SWITCHYARD_PYTHON` picks another interpreter.

mod common;

use std::process::Command;

use common::{python_venv, repo_root};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

#[test]
fn python_clients() {
    let venv = python_venv();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args([
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/python",
    ])
    .current_dir(repo_root())
    .env("SWITCHYARD_BIN", BIN)
    .env_remove("ORT_DYLIB_PATH");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

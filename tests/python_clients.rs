//! Runs the Python interoperability tests (tests/python, real `tritonclient` against the real
//! binary, compared with Python onnxruntime) as part of `cargo test`.
//!
//! The Python packages are installed on first use into `target/tmp/python-venv` with the host's
//! `python3 -m venv` and pip, from tests/python/requirements.txt; the venv is rebuilt when that
//! file changes. `SWITCHYARD_PYTHON` picks another interpreter.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) {
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed with {status}");
}

/// The venv with the pinned test requirements, created or refreshed when needed.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let requirements = root().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("tests/python/requirements.txt");
    let stamp = dir.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let _ = std::fs::remove_dir_all(&dir);
    run(Command::new(&python).args(["-m", "venv"]).arg(&dir));
    run(Command::new(dir.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements));
    std::fs::write(&stamp, wanted).unwrap();
    dir
}

#[test]
fn python_clients() {
    let venv = venv();
    run(Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .current_dir(root())
        .env("SWITCHYARD_BIN", BIN)
        // Where test_deploy.py keeps the npm packages it installs, across runs.
        .env("SWITCHYARD_TARGET_TMPDIR", env!("CARGO_TARGET_TMPDIR"))
        .env_remove("ORT_DYLIB_PATH"));
}

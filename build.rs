//! Build script: gRPC code generation, and the ONNX Runtime library for `cargo run` / `cargo test`.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`), so the build itself never needs the
//! library. For convenience, this script fetches `libonnxruntime.so.<ORT_VERSION>` from the PyPI
//! wheel with the host's `pip` into `<target>/onnxruntime-<ORT_VERSION>/` when it is absent, and
//! compiles that path in as the server's last-resort default. Failure to fetch is a warning, not an
//! error: the server then tells the operator how to provide the library (`--ort-library`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The ONNX Runtime release `ort` 2.0.0-rc.15 targets (API 31).
const ORT_VERSION: &str = "1.31.1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    compile_protos()?;
    let lib = default_ort_library_path();
    println!(
        "cargo:rustc-env=SWITCHYARD_DEFAULT_ORT_LIBRARY={}",
        lib.display()
    );
    println!("cargo:rustc-env=SWITCHYARD_ORT_VERSION={ORT_VERSION}");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_SKIP_ORT_FETCH");
    println!("cargo:rerun-if-env-changed=SWITCHYARD_PYTHON");
    // A missing file counts as changed, so the fetch is retried on every build until it succeeds.
    println!("cargo:rerun-if-changed={}", lib.display());
    if !lib.exists()
        && std::env::var_os("SWITCHYARD_SKIP_ORT_FETCH").is_none()
        && let Err(e) = fetch_ort_library(&lib)
    {
        println!(
            "cargo:warning=could not fetch ONNX Runtime {ORT_VERSION} with pip ({e}); \
             the server will need --ort-library or ORT_DYLIB_PATH"
        );
    }
    Ok(())
}

fn compile_protos() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; tonic-prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", &protoc) };
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Raw tensor bytes as slices of the received message, not a fresh copy each.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .compile_protos(&["proto/inference.proto"], &["proto"])?;
    Ok(())
}

/// `<target dir>/onnxruntime-<version>/libonnxruntime.so.<version>`. The target directory is the
/// ancestor of OUT_DIR holding cargo's `CACHEDIR.TAG`, so debug and release builds share one copy.
fn default_ort_library_path() -> PathBuf {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let target = out
        .ancestors()
        .find(|p| p.join("CACHEDIR.TAG").exists())
        .map(Path::to_path_buf)
        .unwrap_or(out);
    target
        .join(format!("onnxruntime-{ORT_VERSION}"))
        .join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

fn wheel_platform() -> Result<&'static str, String> {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    match (os.as_str(), arch.as_str()) {
        ("linux", "x86_64") => Ok("manylinux_2_28_x86_64"),
        ("linux", "aarch64") => Ok("manylinux_2_28_aarch64"),
        _ => Err(format!("no onnxruntime wheel is fetched for {os}/{arch}")),
    }
}

fn python() -> String {
    std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Downloads the wheel with pip (so pip's index configuration and cache apply), extracts the one
/// library file, and renames it into place so concurrent builds never see a partial file.
fn fetch_ort_library(dest: &Path) -> Result<(), String> {
    let platform = wheel_platform()?;
    let dir = dest.parent().ok_or("library path has no parent")?;
    let staging = dir.join(format!("staging-{}", std::process::id()));
    std::fs::create_dir_all(&staging).map_err(|e| format!("create {}: {e}", staging.display()))?;
    let result = (|| {
        run(Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                &format!("onnxruntime=={ORT_VERSION}"),
                "--no-deps",
                "--only-binary=:all:",
                "--platform",
                platform,
                "--python-version",
                "3.11",
                "-d",
            ])
            .arg(&staging))?;
        let member = format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}");
        let extracted = staging.join("libonnxruntime.so");
        let script = "import glob, sys, zipfile\n\
                      whl = glob.glob(sys.argv[1] + '/onnxruntime-*.whl')[0]\n\
                      open(sys.argv[3], 'wb').write(zipfile.ZipFile(whl).read(sys.argv[2]))\n";
        run(Command::new(python())
            .args(["-c", script])
            .arg(&staging)
            .arg(&member)
            .arg(&extracted))?;
        std::fs::rename(&extracted, dest)
            .map_err(|e| format!("rename into {}: {e}", dest.display()))
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

//! Finding and loading the ONNX Runtime shared library, and the process's one ORT environment.
//!
//! ONNX Runtime allows a single environment per process (a second one is an error even after the
//! first is dropped), so it lives in a process-wide `OnceLock`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;

/// The ONNX Runtime release this build targets (the PyPI wheel `onnxruntime==` this).
pub const ORT_VERSION: &str = env!("SWITCHYARD_ORT_VERSION");
/// Where the build script put the library fetched from PyPI.
const BUILD_DEFAULT: &str = env!("SWITCHYARD_DEFAULT_ORT_LIBRARY");

static ENVIRONMENT: OnceLock<Loaded> = OnceLock::new();
static INIT: Mutex<()> = Mutex::new(());

struct Loaded {
    env: Environment,
    path: PathBuf,
}

fn library_file() -> String {
    format!("libonnxruntime.so.{ORT_VERSION}")
}

/// Where to look, in order, when no path is given: beside the executable (the Docker image and
/// release archives), then `../lib` from it, then what the build script fetched.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(library_file()));
        out.push(dir.join("../lib").join(library_file()));
    }
    out.push(PathBuf::from(BUILD_DEFAULT));
    out
}

fn how_to_fix() -> String {
    format!(
        "Switchyard needs ONNX Runtime {ORT_VERSION} ({lib}). Get it from the PyPI wheel:\n  \
         python3 -m pip download onnxruntime=={ORT_VERSION} --no-deps --only-binary=:all: \
         --platform manylinux_2_28_x86_64 --python-version 3.11 -d /tmp/ort\n  \
         unzip -j /tmp/ort/onnxruntime-*.whl 'onnxruntime/capi/{lib}' -d /opt/onnxruntime\n\
         then pass --ort-library /opt/onnxruntime/{lib} (or set ORT_DYLIB_PATH). \
         A `cargo build` with python3 and pip on the PATH fetches it automatically.",
        lib = library_file()
    )
}

fn list(paths: &[PathBuf]) -> String {
    let lines: Vec<String> = paths.iter().map(|p| format!("  {}", p.display())).collect();
    lines.join("\n")
}

/// Why ONNX Runtime could not be loaded; every message ends with how to get the library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    #[error(
        "the ONNX Runtime library '{}' given by --ort-library/ORT_DYLIB_PATH does not exist.\n{}",
        .0.display(),
        how_to_fix()
    )]
    Missing(PathBuf),
    #[error(
        "the ONNX Runtime library was not found; looked in:\n{}\n{}",
        list(.0),
        how_to_fix()
    )]
    NotFound(Vec<PathBuf>),
    #[error("cannot load ONNX Runtime from '{}': {source}.\n{}", path.display(), how_to_fix())]
    Load {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(#[source] ort::Error),
}

/// Picks the library path: `explicit` (the `--ort-library` flag or `ORT_DYLIB_PATH`) wins; it
/// must exist. Otherwise the first existing candidate.
pub fn resolve_path(explicit: Option<&Path>) -> Result<PathBuf, LibraryError> {
    if let Some(p) = explicit {
        return if p.exists() {
            Ok(p.to_path_buf())
        } else {
            Err(LibraryError::Missing(p.to_path_buf()))
        };
    }
    let candidates = candidate_paths();
    match candidates.iter().find(|p| p.exists()) {
        Some(p) => Ok(p.clone()),
        None => Err(LibraryError::NotFound(candidates)),
    }
}

/// Loads ONNX Runtime (once per process) and returns the environment. Later calls return the
/// same environment whatever path they pass.
pub fn init(explicit: Option<&Path>) -> Result<&'static Environment, LibraryError> {
    if let Some(l) = ENVIRONMENT.get() {
        return Ok(&l.env);
    }
    let _guard = INIT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(l) = ENVIRONMENT.get() {
        return Ok(&l.env);
    }
    let path = resolve_path(explicit)?;
    let builder = ort::init_from(&path).map_err(|source| LibraryError::Load {
        path: path.clone(),
        source,
    })?;
    let env = builder
        .with_name("switchyard")
        .with_telemetry(false)
        .build()
        .map_err(LibraryError::Environment)?;
    tracing::info!(path = %path.display(), "ONNX Runtime loaded");
    let loaded = ENVIRONMENT.get_or_init(|| Loaded { env, path });
    Ok(&loaded.env)
}

/// The library path in use, once loaded.
pub fn loaded_path() -> Option<&'static Path> {
    ENVIRONMENT.get().map(|l| l.path.as_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_missing_path_is_a_clear_error() {
        let e = resolve_path(Some(Path::new("/nonexistent/libonnxruntime.so")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/libonnxruntime.so") && e.contains("pip download"),
            "{e}"
        );
    }

    #[test]
    fn candidates_end_with_the_build_default() {
        let c = candidate_paths();
        assert_eq!(c.last().unwrap(), &PathBuf::from(BUILD_DEFAULT));
        assert!(BUILD_DEFAULT.ends_with(&library_file()));
    }
}

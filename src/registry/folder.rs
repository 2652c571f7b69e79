//! The folder registry backend: a directory in Triton's repository layout.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{Registry, RegistryError};

pub struct FolderRegistry {
    root: PathBuf,
}

impl FolderRegistry {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn io_err(path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Io(format!("{}: {e}", path.display()))
}

/// Names of the sub-directories of `dir`, skipping hidden ones (editors, `.git`, staging folders).
fn subdirs(dir: &Path) -> Result<Vec<String>, RegistryError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // `metadata` follows symlinks, so a symlinked model or version folder counts.
        let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
        if is_dir && !name.starts_with('.') {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

impl Registry for FolderRegistry {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    fn models(&self) -> Result<Vec<String>, RegistryError> {
        subdirs(&self.root)
    }

    fn versions(&self, model: &str) -> Result<Vec<u64>, RegistryError> {
        let mut versions: Vec<u64> = subdirs(&self.root.join(model))?
            .iter()
            // Version folders are positive integers; anything else (notes, samples) is ignored.
            .filter_map(|n| {
                n.parse::<u64>()
                    .ok()
                    .filter(|&v| v > 0 && n == &v.to_string())
            })
            .collect();
        versions.sort_unstable();
        Ok(versions)
    }

    fn read(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        let mut path = self.root.join(model);
        if let Some(v) = version {
            path.push(v.to_string());
        }
        path.push(file);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_models_and_numeric_versions_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in [
            "a/1",
            "a/10",
            "a/2",
            "a/notes",
            "a/0",
            "a/007",
            "b/3",
            ".hidden/1",
        ] {
            std::fs::create_dir_all(root.join(p)).unwrap();
        }
        std::fs::write(root.join("README.md"), "x").unwrap();
        std::fs::write(root.join("a/1/model.onnx"), b"onnx").unwrap();
        let r = FolderRegistry::new(root);
        assert_eq!(r.models().unwrap(), vec!["a", "b"]);
        assert_eq!(r.versions("a").unwrap(), vec![1, 2, 10]);
        assert_eq!(
            r.read("a", Some(1), "model.onnx").unwrap(),
            Some(b"onnx".to_vec())
        );
        assert_eq!(r.read("a", Some(2), "model.onnx").unwrap(), None);
        assert_eq!(r.read("a", None, "config.toml").unwrap(), None);
        assert!(r.versions("missing").is_err());
    }
}

//! The folder registry backend: a directory in Triton's repository layout.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::routing::ROUTING_FILE;
use super::{Registry, RegistryError, Routing, Stamp};

/// Held (an exclusive `flock`) while routing.toml is read, changed and replaced.
const ROUTING_LOCK: &str = ".routing.lock";

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

    fn path(&self, model: &str, version: Option<u64>, file: &str) -> PathBuf {
        let mut path = self.root.join(model);
        if let Some(v) = version {
            path.push(v.to_string());
        }
        path.push(file);
        path
    }
}

/// Writes `bytes` to `dest` through a temporary file in the same folder and a rename, so readers
/// see the old content or the new, never a part.
fn replace_file(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = dest.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        dest.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
        let path = self.path(model, version, file);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn stamp(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Stamp>, RegistryError> {
        let path = self.path(model, version, file);
        match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(Stamp {
                size: m.len(),
                modified_ns: m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos()),
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    fn routing(&self, model: &str) -> Result<Routing, RegistryError> {
        let origin = format!("{model}/{ROUTING_FILE}");
        match self.read(model, None, ROUTING_FILE)? {
            None => Ok(Routing::default()),
            Some(bytes) => {
                Routing::parse(&String::from_utf8_lossy(&bytes), &origin).map_err(RegistryError::Io)
            }
        }
    }

    fn update_routing(
        &self,
        model: &str,
        change: &mut dyn FnMut(&mut Routing),
    ) -> Result<Routing, RegistryError> {
        let dir = self.root.join(model);
        if !dir.is_dir() {
            return Err(RegistryError::Io(format!(
                "{}: no such model folder",
                dir.display()
            )));
        }
        let lock_path = dir.join(ROUTING_LOCK);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        // Read-modify-write under an exclusive lock shared by every process using this folder.
        lock.lock().map_err(|e| io_err(&lock_path, e))?;
        let mut routing = self.routing(model)?;
        change(&mut routing);
        let dest = dir.join(ROUTING_FILE);
        replace_file(&dest, routing.to_toml().as_bytes()).map_err(|e| io_err(&dest, e))?;
        drop(lock);
        Ok(routing)
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
        let st = r.stamp("a", Some(1), "model.onnx").unwrap().unwrap();
        assert_eq!(st.size, 4);
        assert_eq!(r.stamp("a", Some(2), "model.onnx").unwrap(), None);
    }

    #[test]
    fn concurrent_routing_writers_never_lose_an_update() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        let r = std::sync::Arc::new(FolderRegistry::new(dir.path()));
        assert_eq!(r.routing("m").unwrap(), Routing::default());
        // Each writer adds its own increments to the same file through read-modify-write.
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        r.update_routing("m", &mut |routing| {
                            routing.pinned_version = Some(routing.pinned_version.unwrap_or(0) + 1);
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(r.routing("m").unwrap().pinned_version, Some(100));
        assert!(r.update_routing("nope", &mut |_| {}).is_err());
    }
}

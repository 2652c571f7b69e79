//! The folder registry backend: a directory in Triton's repository layout.
//!
//! Reads follow symlinked model and version folders (operators link models in). Writes of routing
//! state never follow a link: they go through a handle on the model's real folder, open every file
//! with `O_NOFOLLOW` (the temporary one also with `O_EXCL`), keep the destination's permissions,
//! and fsync the file before the rename and the folder after it, so a crash leaves the old pin or
//! the new one, never a part or none. Files are opened non-blocking, so a planted FIFO is refused
//! instead of hanging the manager.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, Permissions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

use super::routing::ROUTING_FILE;
use super::{Registry, RegistryError, Routing, Stamp, validate_model_name};

/// Held (an exclusive `flock`) while routing.toml is read, changed and replaced.
const ROUTING_LOCK: &str = ".routing.lock";
/// Permissions of a routing file written for the first time (before the umask).
const NEW_FILE_MODE: u32 = 0o644;

pub struct FolderRegistry {
    root: PathBuf,
    /// Folder names already reported as not valid model names, so polls do not repeat it.
    warned: Mutex<HashSet<OsString>>,
}

impl FolderRegistry {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        tracing::info!(path = %root.display(), "folder registry");
        Self {
            root,
            warned: Mutex::new(HashSet::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A file's path relative to the root (what callers see) and its absolute path (what is
    /// opened and logged), for a model name that passed validation.
    fn path(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<(PathBuf, String), RegistryError> {
        validate_model_name(model)?;
        let rel = match version {
            Some(v) => format!("{model}/{v}/{file}"),
            None => format!("{model}/{file}"),
        };
        Ok((self.root.join(&rel), rel))
    }

    /// An I/O error as callers see it (the relative path); the absolute path goes to the log.
    fn io_err(&self, abs: &Path, rel: &str, e: std::io::Error) -> RegistryError {
        tracing::warn!(path = %abs.display(), error = %e, "registry I/O error");
        RegistryError::Io {
            path: rel.to_string(),
            source: e,
        }
    }

    /// Names of the sub-directories of `dir`, skipping hidden ones (editors, `.git`, staging
    /// folders).
    fn subdirs(&self, dir: &Path, rel: &str) -> Result<Vec<OsString>, RegistryError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| self.io_err(dir, rel, e))? {
            let entry = entry.map_err(|e| self.io_err(dir, rel, e))?;
            let name = entry.file_name();
            // `metadata` follows symlinks, so a symlinked model or version folder counts.
            let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            if is_dir && !name.as_encoded_bytes().starts_with(b".") {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    fn warn_once(&self, folder: OsString, reason: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(folder) {
            tracing::warn!(%reason, "registry folder skipped: its name is not a valid model name");
        }
    }

    /// The model's own folder, opened without following a link: writes happen only inside the
    /// registry, whatever is planted in it.
    fn open_model_dir(&self, model: &str) -> Result<OwnedFd, RegistryError> {
        validate_model_name(model)?;
        let abs = self.root.join(model);
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(CWD, &abs, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) => Err(RegistryError::Refused {
                path: model.to_string(),
                reason: "no such model folder".into(),
            }),
            Err(Errno::LOOP | Errno::NOTDIR) => Err(RegistryError::Refused {
                path: model.to_string(),
                reason: "not a folder (a symbolic link or a file); routing state is written only \
                         into a model's own folder"
                    .into(),
            }),
            Err(e) => Err(self.io_err(&abs, model, e.into())),
        }
    }
}

/// A planted link where the registry writes.
fn link_refused() -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidInput,
        "is a symbolic link, which routing state never follows",
    )
}

/// Opens `path` (relative to `dir`) for reading; `Ok(None)` when it does not exist. Non-blocking,
/// so a FIFO is refused, not waited on; with `follow` false a symbolic link is refused too.
fn open_read(dir: BorrowedFd<'_>, path: &Path, follow: bool) -> std::io::Result<Option<File>> {
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
    if !follow {
        flags |= OFlags::NOFOLLOW;
    }
    let file = match rustix::fs::openat(dir, path, flags, Mode::empty()) {
        Ok(fd) => File::from(fd),
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) if !follow => return Err(link_refused()),
        Err(e) => return Err(e.into()),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(Some(file))
}

/// Writes `bytes` to `name` in `dir` through a new temporary file and a rename, so readers see
/// the old content or the new, never a part. `mode`: the permissions to keep, if the file existed.
fn replace_file(
    dir: BorrowedFd<'_>,
    name: &str,
    bytes: &[u8],
    mode: Option<u32>,
) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let tmp = format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let result = (|| {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create_mode = Mode::from_raw_mode(mode.unwrap_or(NEW_FILE_MODE));
        let mut f = File::from(rustix::fs::openat(dir, &tmp, flags, create_mode)?);
        if let Some(m) = mode {
            // The umask may have narrowed the mode given at creation.
            f.set_permissions(Permissions::from_mode(m))?;
        }
        f.write_all(bytes)?;
        f.sync_all()?;
        rustix::fs::renameat(dir, &tmp, dir, name)?;
        // The rename itself is durable only once the folder is synced.
        rustix::fs::fsync(dir)?;
        Ok(())
    })();
    if result.is_err() {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
    }
    result
}

impl Registry for FolderRegistry {
    fn describe(&self) -> String {
        // Only the folder's own name: this reaches callers in error messages.
        match self.root.file_name() {
            Some(name) => format!("folder registry '{}'", name.to_string_lossy()),
            None => "folder registry".into(),
        }
    }

    fn models(&self) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        for folder in self.subdirs(&self.root, "the registry folder")? {
            match folder.to_str().map(|s| (s, validate_model_name(s))) {
                Some((name, Ok(()))) => out.push(name.to_string()),
                Some((_, Err(e))) => self.warn_once(folder.clone(), &e.to_string()),
                None => {
                    let why = format!(
                        "the folder name '{}' is not UTF-8",
                        folder.to_string_lossy().escape_default()
                    );
                    self.warn_once(folder, &why)
                }
            }
        }
        Ok(out)
    }

    fn versions(&self, model: &str) -> Result<Vec<u64>, RegistryError> {
        validate_model_name(model)?;
        let mut versions: Vec<u64> = self
            .subdirs(&self.root.join(model), model)?
            .iter()
            // Version folders are positive integers; anything else (notes, samples) is ignored.
            .filter_map(|n| n.to_str().and_then(super::version_folder))
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
        let (abs, rel) = self.path(model, version, file)?;
        let read = || -> std::io::Result<Option<Vec<u8>>> {
            let Some(mut f) = open_read(CWD, &abs, true)? else {
                return Ok(None);
            };
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        };
        read().map_err(|e| self.io_err(&abs, &rel, e))
    }

    fn stamp(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Stamp>, RegistryError> {
        let (abs, rel) = self.path(model, version, file)?;
        match std::fs::metadata(&abs) {
            Ok(m) => Ok(Some(Stamp {
                size: m.len(),
                modified_ns: m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos()),
                tag: 0,
            })),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_err(&abs, &rel, e)),
        }
    }

    fn routing(&self, model: &str) -> Result<Routing, RegistryError> {
        let (abs, rel) = self.path(model, None, ROUTING_FILE)?;
        let file = open_read(CWD, &abs, false).map_err(|e| self.io_err(&abs, &rel, e))?;
        read_routing(file, &rel, |e| self.io_err(&abs, &rel, e))
    }

    fn update_routing(
        &self,
        model: &str,
        change: &mut dyn FnMut(&mut Routing),
    ) -> Result<Routing, RegistryError> {
        let dir = self.open_model_dir(model)?;
        let dir = dir.as_fd();
        let abs = |file: &str| self.root.join(model).join(file);
        let rel = |file: &str| format!("{model}/{file}");
        let io = |file: &str, e: std::io::Error| self.io_err(&abs(file), &rel(file), e);

        let lock_flags =
            OFlags::RDONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let lock = match rustix::fs::openat(
            dir,
            ROUTING_LOCK,
            lock_flags,
            Mode::from_raw_mode(NEW_FILE_MODE),
        ) {
            Ok(fd) => File::from(fd),
            Err(Errno::LOOP) => return Err(io(ROUTING_LOCK, link_refused())),
            Err(e) => return Err(io(ROUTING_LOCK, e.into())),
        };
        match lock.metadata() {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                let e = std::io::Error::new(ErrorKind::InvalidInput, "not a regular file");
                return Err(io(ROUTING_LOCK, e));
            }
            Err(e) => return Err(io(ROUTING_LOCK, e)),
        }
        // Read-modify-write under an exclusive lock shared by every process using this folder.
        lock.lock().map_err(|e| io(ROUTING_LOCK, e))?;

        let current =
            open_read(dir, Path::new(ROUTING_FILE), false).map_err(|e| io(ROUTING_FILE, e))?;
        let mode = match &current {
            Some(f) => Some(
                f.metadata()
                    .map_err(|e| io(ROUTING_FILE, e))?
                    .permissions()
                    .mode()
                    & 0o777,
            ),
            None => None,
        };
        let before = read_routing(current, &rel(ROUTING_FILE), |e| io(ROUTING_FILE, e))?;
        let mut routing = before.clone();
        change(&mut routing);
        // A change that changed nothing (a decision another replica already made, a refusal)
        // writes nothing.
        if routing != before {
            let text = routing.to_toml().map_err(|reason| RegistryError::Refused {
                path: rel(ROUTING_FILE),
                reason,
            })?;
            replace_file(dir, ROUTING_FILE, text.as_bytes(), mode)
                .map_err(|e| io(ROUTING_FILE, e))?;
        }
        drop(lock);
        Ok(routing)
    }
}

/// The routing policy in an opened routing.toml (the default when there is none).
fn read_routing(
    file: Option<File>,
    rel: &str,
    io: impl Fn(std::io::Error) -> RegistryError,
) -> Result<Routing, RegistryError> {
    let Some(mut file) = file else {
        return Ok(Routing::default());
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io)?;
    Routing::parse(&text).map_err(|reason| RegistryError::Refused {
        path: rel.to_string(),
        reason,
    })
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
    fn model_dir() -> (tempfile::TempDir, FolderRegistry) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("reg/m/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        let r = FolderRegistry::new(dir.path().join("reg"));
        (dir, r)
    }

    #[test]
    fn unsafe_names_are_refused_before_the_file_system() {
        let (dir, r) = model_dir();
        std::fs::create_dir_all(dir.path().join("reg/bad name/1")).unwrap();
        std::fs::create_dir_all(dir.path().join("reg/m\u{202e}/1")).unwrap();
        std::fs::write(dir.path().join("outside/config.toml"), "x").unwrap();
        assert_eq!(r.models().unwrap(), vec!["m"]);
        for bad in ["../outside", "..", "/etc", ".m", "a\0b"] {
            assert!(matches!(
                r.read(bad, None, "config.toml"),
                Err(RegistryError::Name(_))
            ));
            assert!(matches!(r.versions(bad), Err(RegistryError::Name(_))));
            assert!(matches!(
                r.stamp(bad, None, "config.toml"),
                Err(RegistryError::Name(_))
            ));
            assert!(matches!(r.routing(bad), Err(RegistryError::Name(_))));
            assert!(matches!(
                r.update_routing(bad, &mut |_| {}),
                Err(RegistryError::Name(_))
            ));
        }
        assert!(!dir.path().join("outside/routing.toml").exists());
    }

    #[test]
    fn errors_name_paths_relative_to_the_root() {
        let (dir, r) = model_dir();
        std::fs::create_dir(dir.path().join("reg/m/1/model.onnx")).unwrap();
        let e = r.read("m", Some(1), "model.onnx").unwrap_err().to_string();
        assert!(e.starts_with("m/1/model.onnx: "), "{e}");
        let root = dir.path().to_string_lossy().to_string();
        for e in [
            e,
            r.versions("gone").unwrap_err().to_string(),
            r.update_routing("gone", &mut |_| {})
                .unwrap_err()
                .to_string(),
            r.describe(),
        ] {
            assert!(!e.contains(&root), "{e}");
        }
        std::fs::write(dir.path().join("reg/m/routing.toml"), "pinned = 1").unwrap();
        let e = r.routing("m").unwrap_err().to_string();
        assert!(e.starts_with("m/routing.toml: "), "{e}");
    }

    #[test]
    fn a_planted_fifo_is_refused_not_waited_on() {
        let (dir, r) = model_dir();
        for p in ["reg/m/1/model.onnx", "reg/m/routing.toml"] {
            rustix::fs::mknodat(
                CWD,
                dir.path().join(p),
                rustix::fs::FileType::Fifo,
                Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
        }
        let e = r.read("m", Some(1), "model.onnx").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        assert!(r.routing("m").is_err());
        assert!(r.update_routing("m", &mut |_| {}).is_err());
    }

    #[test]
    fn a_link_planted_at_the_lock_is_not_followed() {
        let (dir, r) = model_dir();
        let target = dir.path().join("outside/created-by-the-lock");
        std::os::unix::fs::symlink(&target, dir.path().join("reg/m/.routing.lock")).unwrap();
        let e = r
            .update_routing("m", &mut |r| r.pinned_version = Some(1))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("m/.routing.lock") && e.contains("symbolic link"),
            "{e}"
        );
        assert!(!target.exists());
        assert!(!dir.path().join("reg/m/routing.toml").exists());
    }

    #[test]
    fn a_linked_routing_file_or_model_folder_is_not_followed() {
        let (dir, r) = model_dir();
        // routing.toml pointing at a file elsewhere: neither read nor replaced.
        let target = dir.path().join("outside/routing.toml");
        std::fs::write(&target, "pinned_version = 5\n").unwrap();
        let link = dir.path().join("reg/m/routing.toml");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = r.routing("m").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(
            r.update_routing("m", &mut |r| r.pinned_version = Some(1))
                .is_err()
        );
        assert_eq!(
            std::fs::read_to_string(&target).unwrap(),
            "pinned_version = 5\n"
        );
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());

        // A model folder that is a link to a folder elsewhere: served (reads follow), never
        // written into.
        std::fs::create_dir_all(dir.path().join("elsewhere/1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), dir.path().join("reg/linked"))
            .unwrap();
        assert_eq!(r.models().unwrap(), vec!["linked", "m"]);
        assert_eq!(r.versions("linked").unwrap(), vec![1]);
        let e = r
            .update_routing("linked", &mut |r| r.pinned_version = Some(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("linked: not a folder"), "{e}");
        assert!(!dir.path().join("elsewhere/routing.toml").exists());
        assert!(!dir.path().join("elsewhere/.routing.lock").exists());
    }

    #[test]
    fn replacing_keeps_the_mode_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, r) = model_dir();
        let path = dir.path().join("reg/m/routing.toml");
        r.update_routing("m", &mut |r| r.pinned_version = Some(1))
            .unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o640)).unwrap();
        r.update_routing("m", &mut |r| r.pinned_version = Some(2))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "{mode:o}");
        assert_eq!(r.routing("m").unwrap().pinned_version, Some(2));
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("reg/m"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        assert_eq!(names, vec![".routing.lock", "1", "routing.toml"]);
    }
}

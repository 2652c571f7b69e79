//! Who may call what: two scopes, `infer` (health, metadata, inference) and `admin` (everything
//! that changes state: load, unload, promote, the repository index, rollouts).
//!
//! Tokens come from files, one per line (blank lines and `#` comments ignored), re-read when the
//! file changes so tokens rotate without a restart. Callers send `Authorization: Bearer <token>`
//! (REST) or the `authorization` metadata key (gRPC). Without an admin token file, admin calls are
//! answered only for callers on loopback: a safe default for a server that listens on `0.0.0.0`.
//! An admin token also grants the infer scope.
//!
//! Comparison is in constant time: both sides are hashed (SHA-256) and every configured token is
//! compared, so neither the length nor the position of a near miss shows in the timing.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::shutdown;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Infer,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Infer => "infer",
            Self::Admin => "admin",
        }
    }
}

/// Why a call was refused. Messages name the missing scope and the remedy, never a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or credentials that grant nothing here (401 / UNAUTHENTICATED).
    #[error(
        "this endpoint needs the {} scope: send 'Authorization: Bearer <token>' with {}",
        scope.as_str(),
        match scope { Scope::Admin => "an admin token", Scope::Infer => "an infer or admin token" }
    )]
    Missing { scope: Scope },
    #[error("the token does not grant the {} scope", scope.as_str())]
    Invalid { scope: Scope },
    /// No admin token is configured and the caller is not on loopback (403 / PERMISSION_DENIED).
    #[error(
        "admin endpoints answer only loopback callers while no admin token is configured; \
         start the server with --admin-token-file to allow remote operators"
    )]
    LoopbackOnly,
}

impl AuthError {
    /// The metric label of a refusal.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing_token",
            Self::Invalid { .. } => "invalid_token",
            Self::LoopbackOnly => "not_loopback",
        }
    }
}

/// Problems reading a token file (at start: fatal; on reload: logged, the old tokens stay).
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read the token file '{path}': {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the token file '{path}' is not UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("the token file '{path}' holds no token (one per line; '#' starts a comment)")]
    Empty { path: PathBuf },
    #[error("the token file '{path}', line {line}: a token must be one word of visible ASCII")]
    BadToken { path: PathBuf, line: usize },
}

type Digest32 = [u8; 32];

fn digest(token: &[u8]) -> Digest32 {
    Sha256::digest(token).into()
}

/// The tokens of one file, re-read when its size or modification time changes.
pub struct TokenFile {
    path: PathBuf,
    tokens: ArcSwap<Vec<Digest32>>,
    stamp: Mutex<Option<FileStamp>>,
}

/// What a file looks like: size, times and inode, so a same-size rewrite (a rotated token of the
/// same length) or a rename over the file is seen even within one timestamp tick.
pub type FileStamp = (u64, SystemTime, u64, i64, i64);

pub fn stamp_of(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| {
        (
            m.len(),
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            m.ino(),
            m.ctime(),
            m.ctime_nsec(),
        )
    })
}

/// The tokens of a token file's text with their line numbers: trimmed lines, blank lines and
/// `#` comments skipped. The server reads every one; clients send the first.
pub fn token_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

fn parse_tokens(path: &Path, text: &str) -> Result<Vec<Digest32>, TokenFileError> {
    let mut out = Vec::new();
    for (line_no, line) in token_lines(text) {
        if !line.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenFileError::BadToken {
                path: path.to_path_buf(),
                line: line_no,
            });
        }
        out.push(digest(line.as_bytes()));
    }
    if out.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

fn read_tokens(path: &Path) -> Result<Vec<Digest32>, TokenFileError> {
    let bytes = std::fs::read(path).map_err(|source| TokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|_| TokenFileError::NotUtf8 {
        path: path.to_path_buf(),
    })?;
    parse_tokens(path, &text)
}

impl TokenFile {
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let stamp = stamp_of(&path);
        let tokens = read_tokens(&path)?;
        Ok(Self {
            path,
            tokens: ArcSwap::from_pointee(tokens),
            stamp: Mutex::new(stamp),
        })
    }

    /// Re-reads the file if it changed. A file that became unreadable or empty keeps the tokens
    /// it had (an operator's half-finished edit must not lock everyone out, nor open the door).
    pub fn reload_if_changed(&self) -> Result<bool, TokenFileError> {
        let now = stamp_of(&self.path);
        let mut last = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
        if now == *last {
            return Ok(false);
        }
        // Remember the stamp either way: a broken file is reported once per change.
        *last = now;
        let tokens = read_tokens(&self.path)?;
        self.tokens.store(Arc::new(tokens));
        Ok(true)
    }

    /// Whether `token` is one of the file's, in time independent of where (or whether) it matches.
    pub fn accepts(&self, token: &[u8]) -> bool {
        let presented = digest(token);
        let tokens = self.tokens.load();
        let mut found = subtle::Choice::from(0u8);
        for t in tokens.iter() {
            found |= t.ct_eq(&presented);
        }
        found.into()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The access policy of both front ends.
#[derive(Default)]
pub struct Auth {
    admin: Option<TokenFile>,
    infer: Option<TokenFile>,
}

/// The token of an `Authorization: Bearer <token>` value (the scheme is case-insensitive).
pub fn bearer(value: &[u8]) -> Option<&[u8]> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = text.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().as_bytes())
        .filter(|t| !t.is_empty())
}

impl Auth {
    pub fn new(admin: Option<TokenFile>, infer: Option<TokenFile>) -> Self {
        Self { admin, infer }
    }

    /// Loads the token files named on the command line.
    pub fn from_files(admin: Option<&Path>, infer: Option<&Path>) -> Result<Self, TokenFileError> {
        Ok(Self::new(
            admin.map(TokenFile::load).transpose()?,
            infer.map(TokenFile::load).transpose()?,
        ))
    }

    pub fn admin_tokens(&self) -> bool {
        self.admin.is_some()
    }

    pub fn infer_tokens(&self) -> bool {
        self.infer.is_some()
    }

    /// Decides a call. `peer` is the caller's address (`None` when unknown: treated as remote;
    /// callers pass `None` for a request a proxy forwarded, see [`forwarded`]); `authorization`
    /// the raw `Authorization` header or metadata value.
    pub fn check(
        &self,
        scope: Scope,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
    ) -> Result<(), AuthError> {
        let token = authorization.and_then(bearer);
        let admin_ok = |t: &[u8]| self.admin.as_ref().is_some_and(|f| f.accepts(t));
        match scope {
            Scope::Admin => match (&self.admin, token) {
                (None, _) => {
                    if peer.is_some_and(|ip| is_loopback(&ip)) {
                        Ok(())
                    } else {
                        Err(AuthError::LoopbackOnly)
                    }
                }
                (Some(_), None) => Err(AuthError::Missing { scope }),
                (Some(_), Some(t)) if admin_ok(t) => Ok(()),
                (Some(_), Some(_)) => Err(AuthError::Invalid { scope }),
            },
            Scope::Infer => match (&self.infer, token) {
                (None, _) => Ok(()),
                (Some(_), None) => Err(AuthError::Missing { scope }),
                (Some(f), Some(t)) if f.accepts(t) || admin_ok(t) => Ok(()),
                (Some(_), Some(_)) => Err(AuthError::Invalid { scope }),
            },
        }
    }

    /// Logs how admin calls are protected (once, at start).
    pub fn log_policy(&self) {
        match &self.admin {
            Some(f) => tracing::info!(
                file = %f.path().display(),
                "admin endpoints need a token from --admin-token-file (loopback included)"
            ),
            None => tracing::warn!(
                "no --admin-token-file: admin endpoints (load, unload, promote, repository) \
                 answer only callers on loopback"
            ),
        }
        match &self.infer {
            Some(f) => {
                tracing::info!(file = %f.path().display(), "inference endpoints need a token")
            }
            None => tracing::info!("inference endpoints are open (no --infer-token-file)"),
        }
    }

    /// Re-reads changed token files every `every`, until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: shutdown::Signal) {
        stop.every(every, || {
            self.reload();
            std::future::ready(())
        })
        .await;
    }

    fn reload(&self) {
        for (scope, file) in [(Scope::Admin, &self.admin), (Scope::Infer, &self.infer)] {
            let Some(file) = file else { continue };
            match file.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(scope = scope.as_str(), file = %file.path().display(), "token file reloaded")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(scope = scope.as_str(), error = %e, "token file not reloaded; the previous tokens stay in force")
                }
            }
        }
    }
}

/// Headers a proxy adds when it forwards a request. A request carrying one came through a proxy,
/// so its loopback address says nothing about the caller: the loopback-only default must not let a
/// proxy on the same host (nginx, Envoy, a service-mesh sidecar) open admin to everyone.
pub const FORWARDING_HEADERS: &[&str] = &["forwarded", "x-forwarded-for", "x-real-ip"];

/// The caller's address as far as the access policy is concerned: unknown if a proxy forwarded it.
pub fn effective_peer(peer: Option<IpAddr>, forwarded: bool) -> Option<IpAddr> {
    if forwarded { None } else { peer }
}

/// Whether a request's headers say it was forwarded by a proxy.
pub fn forwarded(headers: &http::HeaderMap) -> bool {
    FORWARDING_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// Loopback, including IPv4-mapped IPv6 (`::ffff:127.0.0.1`, what a dual-stack socket reports).
pub fn is_loopback(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::NamedTempFile, TokenFile) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        let t = TokenFile::load(f.path()).unwrap();
        (f, t)
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7)));

    #[test]
    fn bearer_values() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"abc"), None);
    }

    #[test]
    fn admin_without_tokens_is_loopback_only() {
        let auth = Auth::default();
        assert_eq!(auth.check(Scope::Admin, LOCAL, None), Ok(()));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(auth.check(Scope::Admin, Some(mapped), None), Ok(()));
        assert_eq!(
            auth.check(Scope::Admin, REMOTE, Some(b"Bearer x")),
            Err(AuthError::LoopbackOnly)
        );
        assert_eq!(
            auth.check(Scope::Admin, None, None),
            Err(AuthError::LoopbackOnly)
        );
        assert!(
            AuthError::LoopbackOnly
                .to_string()
                .contains("--admin-token-file")
        );
        assert_eq!(auth.check(Scope::Infer, REMOTE, None), Ok(()));
    }

    #[test]
    fn forwarded_requests_are_not_loopback() {
        let mut headers = http::HeaderMap::new();
        assert!(!forwarded(&headers));
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert!(forwarded(&headers));
        let auth = Auth::default();
        assert_eq!(
            auth.check(
                Scope::Admin,
                effective_peer(LOCAL, forwarded(&headers)),
                None
            ),
            Err(AuthError::LoopbackOnly)
        );
        assert_eq!(
            auth.check(Scope::Admin, effective_peer(LOCAL, false), None),
            Ok(())
        );
    }

    #[test]
    fn admin_tokens_apply_to_loopback_too() {
        let (_f, admin) = file("# operators\nalpha\n\n  beta  \n");
        let auth = Auth::new(Some(admin), None);
        let scope = Scope::Admin;
        assert_eq!(
            auth.check(scope, LOCAL, None),
            Err(AuthError::Missing { scope })
        );
        assert_eq!(
            auth.check(scope, LOCAL, Some(b"Bearer alph")),
            Err(AuthError::Invalid { scope })
        );
        assert_eq!(auth.check(scope, REMOTE, Some(b"Bearer alpha")), Ok(()));
        assert_eq!(auth.check(scope, REMOTE, Some(b"Bearer beta")), Ok(()));
        // Comments are not tokens.
        assert!(auth.check(scope, REMOTE, Some(b"Bearer #")).is_err());
    }

    #[test]
    fn infer_scope_takes_infer_or_admin_tokens() {
        let (_a, admin) = file("root-token\n");
        let (_i, infer) = file("app-token\n");
        let auth = Auth::new(Some(admin), Some(infer));
        let scope = Scope::Infer;
        assert_eq!(
            auth.check(scope, LOCAL, None),
            Err(AuthError::Missing { scope })
        );
        assert_eq!(auth.check(scope, REMOTE, Some(b"Bearer app-token")), Ok(()));
        assert_eq!(
            auth.check(scope, REMOTE, Some(b"Bearer root-token")),
            Ok(())
        );
        // An infer token is not an admin token.
        assert_eq!(
            auth.check(Scope::Admin, LOCAL, Some(b"Bearer app-token")),
            Err(AuthError::Invalid {
                scope: Scope::Admin
            })
        );
        let msg = AuthError::Invalid { scope }.to_string();
        assert!(!msg.contains("app-token") && msg.contains("infer"));
    }

    #[test]
    fn rotation_and_broken_edits() {
        let (f, admin) = file("old\n");
        assert!(admin.accepts(b"old"));
        std::fs::write(f.path(), "new-token-longer\n").unwrap();
        // Size changed, so the stamp differs even within one mtime tick.
        assert!(admin.reload_if_changed().unwrap());
        assert!(admin.accepts(b"new-token-longer") && !admin.accepts(b"old"));
        std::fs::write(f.path(), "# all commented out\n").unwrap();
        assert!(matches!(
            admin.reload_if_changed(),
            Err(TokenFileError::Empty { .. })
        ));
        assert!(
            admin.accepts(b"new-token-longer"),
            "a broken edit keeps the old tokens"
        );
        assert!(
            !admin.reload_if_changed().unwrap(),
            "reported once per change"
        );
    }

    #[test]
    fn token_files_are_checked_at_load() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), "").unwrap();
        assert!(matches!(
            TokenFile::load(f.path()),
            Err(TokenFileError::Empty { .. })
        ));
        std::fs::write(f.path(), "two words\n").unwrap();
        assert!(matches!(
            TokenFile::load(f.path()),
            Err(TokenFileError::BadToken { line: 1, .. })
        ));
        assert!(matches!(
            TokenFile::load("/nonexistent/tokens"),
            Err(TokenFileError::Read { .. })
        ));
    }
}

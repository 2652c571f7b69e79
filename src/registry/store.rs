//! The object-store registry backend: the folder layout kept in S3 (and S3-compatible stores),
//! Google Cloud Storage, Azure Blob Storage or a `file://` folder, through the `object_store`
//! crate and its usual credentials chain (environment, profile, instance or pod role).
//!
//! - Models and versions are found by listing; a model file's change is seen in its ETag and
//!   size (the [`Stamp`]), so the manager's stable-file rule and refusal rules apply unchanged.
//! - `model.onnx` is fetched by its ETag (If-Match, so a file replaced mid-download is not mixed
//!   up), its length checked, and kept in `--registry-cache-dir` (a folder per registry URL, this
//!   user's only) under a name holding its ETag and its sha256: written to a temporary file, then
//!   renamed, so a partial download is never used; a cached copy is used only while the store has
//!   the same object and its bytes still hash to its name, so a restart reuses what it has. The
//!   loader then checks the bytes against metadata.json's sha256 exactly as for a folder.
//! - routing.toml (the pin and the rollout) is changed by compare-and-swap: read with its ETag,
//!   write with `PutMode::Update` (or `Create` when there was none), and on a lost race read again.
//!   Two replicas promoting at once never lose an update. A `file://` registry has no conditional
//!   update in `object_store`, so its routing goes through the folder backend's lock.
//! - A store that fails (unreachable, throttled, 5xx) is retried by `object_store` with backoff;
//!   when it still fails, this backend backs off further (0.5 s doubling to 30 s) and reads nothing
//!   meanwhile (writes of routing state still try), so the manager keeps serving what is loaded and
//!   retries what failed once the store is back ([`Registry::degraded`]). Each failure counts in
//!   `switchyard_registry_errors_total{operation}`; the first and the recovery are logged, and
//!   callers see a short, stable reason (the store's own error, which may quote request details,
//!   stays in the log).
//!
//! The [`Registry`] trait is synchronous (the manager runs on blocking threads); the store's
//! futures run on a small runtime of this backend's own, so any thread may call it.

use std::collections::HashSet;
use std::future::Future;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig, UpdateVersion,
};
use sha2::Sha256;

use super::routing::ROUTING_FILE;
use super::{FolderRegistry, MODEL_FILE, Registry, RegistryError, Routing, Stamp};
use super::{validate_model_name, version_folder};
use crate::monitoring::metrics;

/// The first pause after a failed store call; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between tries of an unreachable store.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Attempts at one routing change before giving up (each lost race re-reads and retries).
const CAS_ATTEMPTS: u32 = 32;

/// Why an object-store registry cannot be opened. Reported at start, before serving.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("'{0}' is not a URL: {1}")]
    Url(String, #[source] url::ParseError),
    #[error(
        "the registry URL scheme '{0}' is not supported; use s3://bucket/prefix, gs://bucket/prefix, \
         az://container/prefix or file:///path"
    )]
    Scheme(String),
    #[error("the registry URL '{0}' names no bucket (or container)")]
    NoBucket(String),
    #[error("cannot configure the object store for '{url}': {source}")]
    Store {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("cannot create the registry cache folder '{path}': {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--registry-option '{key}' is not an option of {scheme}:// stores: {reason}")]
    Option {
        scheme: String,
        key: String,
        reason: String,
    },
    #[error("cannot start the registry's I/O threads: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A store's builder with the client timeouts, then the environment's settings (`AWS_*`, ...,
/// as the builders' own `from_env` reads them), then the `--registry-option`s; the caller sets
/// the URL last, so it names the bucket whatever the environment says. (Timeouts first:
/// `with_client_options` would replace what the environment says, such as allow_http.)
macro_rules! configured {
    ($builder:ty, $env:literal, $scheme:expr, $options:expr) => {{
        let mut builder = <$builder>::new().with_client_options(client_options());
        for (key, value) in from_env($env) {
            if let Ok(key) = key.parse() {
                builder = builder.with_config(key, value);
            }
        }
        for (key, value) in $options {
            builder = builder.with_config(option($scheme, key)?, value);
        }
        builder
    }};
}

/// Whether a store call waits out the backoff (reads) or always tries (routing changes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Backoff,
    Always,
}

/// Consecutive failures of the store and when to try it again.
#[derive(Debug, Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
}

pub struct ObjectRegistry {
    store: Arc<dyn ObjectStore>,
    /// The prefix inside the bucket that holds the model folders (may be empty).
    root: Path,
    /// The URL as given, without query or credentials: for logs and messages.
    url: String,
    /// This registry's folder in the cache (namespaced by the URL).
    cache: PathBuf,
    /// `file://`: routing state goes through the folder backend's lock.
    local: Option<FolderRegistry>,
    runtime: Option<tokio::runtime::Runtime>,
    health: Mutex<Health>,
    warned: Mutex<HashSet<String>>,
    downloads: AtomicU64,
    /// Failed store calls since the start.
    failures: AtomicU64,
}

impl ObjectRegistry {
    /// Opens the registry at `url` (s3://, s3a://, gs://, az://, abfs[s]://, file://), keeping local
    /// copies of model files under `cache_dir`. Credentials and endpoints come from the environment
    /// (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as every tool of those clouds reads them. Nothing is
    /// fetched yet: an unreachable store shows at the first listing, not here.
    pub fn open(
        url: &str,
        cache_dir: &FsPath,
        options: &[(String, String)],
    ) -> Result<Self, OpenError> {
        // reqwest is built without a crypto provider of its own and refuses to build a client
        // without one: rustls uses ring, as the rest of the process does. Installing fails
        // harmlessly when one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let parsed = url::Url::parse(url).map_err(|e| OpenError::Url(url.to_string(), e))?;
        let shown = shown_url(&parsed);
        let store_err = |source| OpenError::Store {
            url: shown.clone(),
            source,
        };
        let scheme = parsed.scheme().to_ascii_lowercase();
        if scheme != "file" && parsed.host_str().is_none_or(str::is_empty) {
            return Err(OpenError::NoBucket(shown));
        }
        let prefix = Path::from_url_path(parsed.path()).map_err(|e| store_err(e.into()))?;
        let (store, root, local): (Arc<dyn ObjectStore>, Path, Option<FolderRegistry>) =
            match scheme.as_str() {
                "s3" | "s3a" => {
                    let s3 = configured!(AmazonS3Builder, "AWS_", &scheme, options)
                        .with_url(url)
                        // If-Match / If-None-Match: what S3 and most compatible stores support.
                        .with_conditional_put(S3ConditionalPut::ETagMatch)
                        .with_retry(retry())
                        .build()
                        .map_err(store_err)?;
                    (Arc::new(s3), prefix, None)
                }
                "gs" => {
                    let gcs = configured!(GoogleCloudStorageBuilder, "GOOGLE_", &scheme, options)
                        .with_url(url)
                        .with_retry(retry())
                        .build()
                        .map_err(store_err)?;
                    (Arc::new(gcs), prefix, None)
                }
                "az" | "adl" | "azure" | "abfs" | "abfss" => {
                    let azure = configured!(MicrosoftAzureBuilder, "AZURE_", &scheme, options)
                        .with_url(url)
                        .with_retry(retry())
                        .build()
                        .map_err(store_err)?;
                    (Arc::new(azure), prefix, None)
                }
                "file" if !options.is_empty() => {
                    return Err(OpenError::Option {
                        scheme,
                        key: options[0].0.clone(),
                        reason: "a file:// registry takes no options".into(),
                    });
                }
                "file" => {
                    let dir = parsed
                        .to_file_path()
                        .map_err(|()| OpenError::Scheme(format!("{scheme} (not a local path)")))?;
                    let fs = LocalFileSystem::new_with_prefix(&dir).map_err(store_err)?;
                    (
                        Arc::new(fs),
                        Path::default(),
                        Some(FolderRegistry::new(dir)),
                    )
                }
                other => return Err(OpenError::Scheme(other.to_string())),
            };
        let cache = private_cache(cache_dir, &shown).map_err(|source| OpenError::Cache {
            path: cache_dir.display().to_string(),
            source,
        })?;
        if std::env::var_os("AWS_PROFILE").is_some()
            && std::env::var_os("AWS_ACCESS_KEY_ID").is_none()
            && matches!(scheme.as_str(), "s3" | "s3a")
        {
            tracing::warn!(
                "AWS_PROFILE is set, but profiles are not read here: give the credentials as \
                 AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a web identity (IRSA) or an instance role"
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sy-registry-io")
            .enable_all()
            .build()
            .map_err(OpenError::Runtime)?;
        metrics::init_registry_errors();
        tracing::info!(registry = %shown, cache = %cache_dir.display(), "object-store registry");
        Ok(Self {
            store,
            root,
            url: shown,
            cache,
            local,
            runtime: Some(runtime),
            health: Mutex::new(Health::default()),
            warned: Mutex::new(HashSet::new()),
            downloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// How many model files were downloaded (not served from the cache): for tests and logs.
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    fn key(&self, rel: &str) -> Path {
        rel.split('/')
            .fold(self.root.clone(), |p, part| p.clone().join(part))
    }

    /// Runs one store call on the registry's runtime, with the backoff and the error count.
    /// `rel` is the path relative to the registry root, for messages.
    fn call<T, F>(
        &self,
        operation: &'static str,
        gate: Gate,
        rel: &str,
        fut: F,
    ) -> Result<T, StoreFailure>
    where
        T: Send + 'static,
        F: Future<Output = object_store::Result<T>> + Send + 'static,
    {
        if gate == Gate::Backoff && self.backing_off().is_some() {
            return Err(StoreFailure::Registry(RegistryError::Unreachable {
                registry: self.url.clone(),
            }));
        }
        let Some(runtime) = &self.runtime else {
            return Err(StoreFailure::Registry(stopped(rel)));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        match rx.recv() {
            Ok(Ok(value)) => {
                self.succeeded();
                Ok(value)
            }
            // A listing that finds no bucket is a broken registry, not an absent file.
            Ok(Err(e)) if is_answer(&e) && !(operation == "list" && is_not_found(&e)) => {
                // The store answered (not found, precondition): it is reachable.
                self.succeeded();
                Err(StoreFailure::Store(e))
            }
            Ok(Err(e)) => {
                self.failed(operation, &e);
                Err(StoreFailure::Store(e))
            }
            Err(_) => Err(StoreFailure::Registry(stopped(rel))),
        }
    }

    fn lock_health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backing_off(&self) -> Option<Duration> {
        let health = self.lock_health();
        let wait = health.retry_at?.checked_duration_since(Instant::now())?;
        (!wait.is_zero()).then_some(wait)
    }

    fn succeeded(&self) {
        let mut health = self.lock_health();
        if health.failures > 0 {
            tracing::info!(registry = %self.url, failures = health.failures, "object store reachable again");
            *health = Health::default();
        }
    }

    fn failed(&self, operation: &'static str, e: &object_store::Error) {
        metrics::record_registry_error(operation);
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut health = self.lock_health();
        health.failures = health.failures.saturating_add(1);
        let pause = FIRST_BACKOFF
            .saturating_mul(1u32 << (health.failures - 1).min(16))
            .min(MAX_BACKOFF);
        health.retry_at = Some(Instant::now() + pause);
        if health.failures == 1 {
            tracing::warn!(registry = %self.url, operation, error = %e,
                "object store call failed; serving what is loaded and retrying with backoff");
        } else {
            tracing::debug!(registry = %self.url, operation, failures = health.failures,
                pause_ms = pause.as_millis() as u64, error = %e, "object store still failing");
        }
    }

    fn warn_once(&self, name: &str, reason: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert(name.to_string()) {
            tracing::warn!(name, %reason, "registry entry skipped: its name is not a valid model name");
        }
    }

    /// The names of the "folders" directly under `rel` (common prefixes), hidden ones skipped.
    fn folders(&self, rel: &str, gate: Gate) -> Result<Vec<String>, RegistryError> {
        let store = self.store.clone();
        let prefix = if rel.is_empty() {
            self.root.clone()
        } else {
            self.key(rel)
        };
        let shown = if rel.is_empty() {
            "the registry root"
        } else {
            rel
        };
        let listing = self
            .call("list", gate, shown, async move {
                let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
                store.list_with_delimiter(prefix.as_ref()).await
            })
            .map_err(|f| f.into_error(shown))?;
        let mut names: Vec<String> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        Ok(names)
    }

    /// A small file's bytes, `None` when it does not exist.
    fn get(&self, rel: &str, gate: Gate) -> Result<Option<Tagged>, RegistryError> {
        let store = self.store.clone();
        let key = self.key(rel);
        let got = self.call("get", gate, rel, async move {
            let result = store.get(&key).await?;
            let version = UpdateVersion {
                e_tag: result.meta.e_tag.clone(),
                version: result.meta.version.clone(),
            };
            Ok((result.bytes().await?.to_vec(), version))
        });
        match got {
            Ok(found) => Ok(Some(found)),
            Err(StoreFailure::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(f) => Err(f.into_error(rel)),
        }
    }

    fn head(
        &self,
        rel: &str,
        gate: Gate,
    ) -> Result<Option<object_store::ObjectMeta>, RegistryError> {
        let store = self.store.clone();
        let key = self.key(rel);
        match self.call("head", gate, rel, async move { store.head(&key).await }) {
            Ok(meta) => Ok(Some(meta)),
            Err(StoreFailure::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(f) => Err(f.into_error(rel)),
        }
    }

    /// The model file, from the cache when the store still has the same object, else downloaded.
    fn model_file(&self, model: &str, version: u64) -> Result<Option<Vec<u8>>, RegistryError> {
        let rel = format!("{model}/{version}/{MODEL_FILE}");
        let Some(meta) = self.head(&rel, Gate::Backoff)? else {
            return Ok(None);
        };
        let dir = self.cache.join(model).join(version.to_string());
        // `model.onnx.<object tag>-<sha256 of the bytes>`: which object, and what it must hash to.
        let stem = format!(
            "{MODEL_FILE}.{}-",
            cache_tag(meta.e_tag.as_deref(), meta.size, meta.last_modified)
        );
        if let Some(bytes) = self.cached(&dir, &stem, meta.size) {
            return Ok(Some(bytes));
        }
        let bytes = self.download(&rel, &meta)?;
        let digest = hex(&<Sha256 as sha2::Digest>::digest(&bytes));
        let keep = || -> std::io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let tmp = dir.join(format!(
                ".download-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let written = std::fs::File::create_new(&tmp).and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            });
            match written.and_then(|()| std::fs::rename(&tmp, dir.join(format!("{stem}{digest}"))))
            {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(e)
                }
            }
        };
        match keep() {
            // Older copies of this version's file are of no further use.
            Ok(()) => remove_entries(&dir, |name| {
                (name.starts_with(MODEL_FILE) && !name.starts_with(&stem))
                    || name.starts_with(".download-")
            }),
            // The bytes are good; only the cache failed. Serve them, and say so.
            Err(e) => tracing::warn!(path = %dir.display(), error = %e,
                "cannot keep a cached copy of a model file"),
        }
        Ok(Some(bytes))
    }

    /// The cached copy named `<stem><sha256>`, if it is there, of the listed length, and still
    /// hashes to its name; one that does not is removed (it is fetched again).
    fn cached(&self, dir: &FsPath, stem: &str, size: u64) -> Option<Vec<u8>> {
        let entry = std::fs::read_dir(dir)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(stem)))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(&path).ok()?;
        let digest = hex(&<Sha256 as sha2::Digest>::digest(&bytes));
        if bytes.len() as u64 == size && name[stem.len()..] == digest {
            return Some(bytes);
        }
        tracing::warn!(path = %path.display(), "cached model file does not match its name; fetching it again");
        let _ = std::fs::remove_file(&path);
        None
    }

    /// Downloads exactly the object `meta` describes (If-Match its ETag) and checks its length.
    fn download(
        &self,
        rel: &str,
        meta: &object_store::ObjectMeta,
    ) -> Result<Vec<u8>, RegistryError> {
        let store = self.store.clone();
        let key = self.key(rel);
        let options = GetOptions {
            if_match: meta.e_tag.clone(),
            ..GetOptions::default()
        };
        let capacity = usize::try_from(meta.size).unwrap_or(0);
        let fetched = self.call("get", Gate::Backoff, rel, async move {
            let mut stream = store.get_opts(&key, options).await?.into_stream();
            let mut bytes = Vec::with_capacity(capacity);
            while let Some(chunk) = stream.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok(bytes)
        });
        let bytes = match fetched {
            Ok(b) => b,
            Err(StoreFailure::Store(object_store::Error::Precondition { .. })) => {
                return Err(RegistryError::Refused {
                    path: rel.to_string(),
                    reason: "the object changed while it was being fetched; it is fetched again \
                             at the next poll"
                        .into(),
                });
            }
            Err(f) => return Err(f.into_error(rel)),
        };
        if bytes.len() as u64 != meta.size {
            let reason = format!(
                "download refused: {} bytes arrived, the store lists {}",
                bytes.len(),
                meta.size
            );
            tracing::warn!(registry = %self.url, path = rel, %reason);
            return Err(RegistryError::Refused {
                path: rel.to_string(),
                reason,
            });
        }
        self.downloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(registry = %self.url, path = rel, bytes = bytes.len(), "model file downloaded");
        Ok(bytes)
    }

    /// Forgets cached copies of models (`model = None`) or versions no longer in the registry.
    fn prune_cache(&self, model: Option<&str>, present: &[String]) {
        let dir = match model {
            Some(m) => self.cache.join(m),
            None => self.cache.clone(),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !present.contains(&name) && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// routing.toml with its version (`None`: no file yet).
    fn read_routing(
        &self,
        model: &str,
        gate: Gate,
    ) -> Result<(Routing, Option<UpdateVersion>), RegistryError> {
        let rel = format!("{model}/{ROUTING_FILE}");
        let Some((bytes, version)) = self.get(&rel, gate)? else {
            return Ok((Routing::default(), None));
        };
        let text = String::from_utf8(bytes).map_err(|_| RegistryError::Refused {
            path: rel.clone(),
            reason: "not UTF-8 text".into(),
        })?;
        let routing = Routing::parse(&text).map_err(|reason| RegistryError::Refused {
            path: rel.clone(),
            reason,
        })?;
        Ok((routing, Some(version)))
    }
}

impl Drop for ObjectRegistry {
    fn drop(&mut self) {
        // Dropping a runtime inside another one's context panics; this never waits.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An object's bytes and its version (ETag, and the generation where the store has one: GCS's
/// conditional writes need it).
type Tagged = (Vec<u8>, UpdateVersion);

/// A store call's failure: the store's own error (the caller decides what NotFound or a
/// precondition means) or one already put as the registry's.
enum StoreFailure {
    Store(object_store::Error),
    Registry(RegistryError),
}

impl StoreFailure {
    fn into_error(self, rel: &str) -> RegistryError {
        match self {
            StoreFailure::Store(source) => {
                tracing::warn!(path = rel, error = %source, "object store error");
                RegistryError::Store {
                    path: rel.to_string(),
                    kind: kind(&source),
                    source,
                }
            }
            StoreFailure::Registry(e) => e,
        }
    }
}

/// Errors that are the store's answer about an object (or a name in a listing object_store
/// cannot parse), not a failure to reach it: no backoff for them.
fn is_answer(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::NotModified { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

/// What callers are told of a store error: short and the same every time (so a model's recorded
/// failure is not re-reported at each poll), without the request details the store's own message
/// may quote; that goes to the log.
fn kind(e: &object_store::Error) -> &'static str {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => "not found in the object store (or no such bucket)",
        E::Precondition { .. } => "changed by another writer meanwhile",
        E::AlreadyExists { .. } => "created by another writer meanwhile",
        E::NotModified { .. } => "not modified",
        E::InvalidPath { .. } => "the listing holds a name that is not a valid object path",
        E::PermissionDenied { .. } => "access denied by the object store",
        E::Unauthenticated { .. } => "the object store refused the credentials",
        E::NotSupported { .. } | E::NotImplemented { .. } => {
            "an operation this object store does not support"
        }
        _ => "the object store failed (the server log has its error)",
    }
}

fn stopped(rel: &str) -> RegistryError {
    RegistryError::Refused {
        path: rel.to_string(),
        reason: "the registry's I/O threads have stopped (shutting down)".into(),
    }
}

/// A `--registry-option` key as the store's builder knows it (`aws_endpoint`, `endpoint`, ...).
fn option<K>(scheme: &str, key: &str) -> Result<K, OpenError>
where
    K: std::str::FromStr,
    K::Err: std::fmt::Display,
{
    key.to_ascii_lowercase()
        .parse()
        .map_err(|e: K::Err| OpenError::Option {
            scheme: scheme.to_string(),
            key: key.to_string(),
            reason: e.to_string(),
        })
}

/// The environment's settings for a store (`AWS_*`, `GOOGLE_*`, `AZURE_*`), keys lowercased.
fn from_env(prefix: &str) -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

/// No deadline for a whole request (a large model takes what the link needs), but one for each
/// read, so a store that stops answering mid-way fails in 30 s rather than never.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout_disabled()
        .with_read_timeout(Duration::from_secs(30))
}

/// The URL for logs and messages: scheme, bucket and prefix; never a user, password or query.
fn shown_url(url: &url::Url) -> String {
    if url.scheme() == "file" {
        // Never an absolute local path: messages reach callers.
        let last = url
            .path()
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        return format!("file://.../{last}");
    }
    let host = url.host_str().unwrap_or_default();
    format!("{}://{host}{}", url.scheme(), url.path())
}

/// The name part of a cached copy: which object (ETag, else size and time) it holds.
fn cache_tag(e_tag: Option<&str>, size: u64, modified: chrono::DateTime<chrono::Utc>) -> String {
    let id = match e_tag {
        Some(t) => format!("etag:{t}"),
        None => format!(
            "size:{size}:modified:{}",
            modified.timestamp_nanos_opt().unwrap_or(0)
        ),
    };
    let digest = <Sha256 as sha2::Digest>::digest(id.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the files in `dir` whose names `doomed` picks (best effort: a cache).
fn remove_entries(dir: &FsPath, doomed: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(&doomed) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// This registry's folder under `cache_dir`: one per registry URL (two registries never share
/// copies), created readable by this user only, and refused if another user owns it (cached
/// bytes are trusted only as far as their folder is).
fn private_cache(cache_dir: &FsPath, url: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let digest = <Sha256 as sha2::Digest>::digest(url.as_bytes());
    let dir = cache_dir.join(format!("registry-{}", hex(&digest[..8])));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a folder of this user's (a link, or another user's)",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

impl Registry for ObjectRegistry {
    fn describe(&self) -> String {
        format!("object-store registry '{}'", self.url)
    }

    fn models(&self) -> Result<Vec<String>, RegistryError> {
        let mut out = Vec::new();
        for name in self.folders("", Gate::Backoff)? {
            match validate_model_name(&name) {
                Ok(()) => out.push(name),
                Err(e) => self.warn_once(&name, &e.to_string()),
            }
        }
        self.prune_cache(None, &out);
        Ok(out)
    }

    fn versions(&self, model: &str) -> Result<Vec<u64>, RegistryError> {
        validate_model_name(model)?;
        let mut versions: Vec<u64> = self
            .folders(model, Gate::Backoff)?
            .iter()
            .filter_map(|n| version_folder(n))
            .collect();
        versions.sort_unstable();
        let present: Vec<String> = versions.iter().map(u64::to_string).collect();
        self.prune_cache(Some(model), &present);
        Ok(versions)
    }

    fn degraded(&self) -> bool {
        self.lock_health().failures > 0
    }

    fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn read(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError> {
        validate_model_name(model)?;
        match version {
            Some(v) if file == MODEL_FILE => self.model_file(model, v),
            Some(v) => Ok(self
                .get(&format!("{model}/{v}/{file}"), Gate::Backoff)?
                .map(|(b, _)| b)),
            None => Ok(self
                .get(&format!("{model}/{file}"), Gate::Backoff)?
                .map(|(b, _)| b)),
        }
    }

    fn stamp(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Stamp>, RegistryError> {
        validate_model_name(model)?;
        let rel = match version {
            Some(v) => format!("{model}/{v}/{file}"),
            None => format!("{model}/{file}"),
        };
        Ok(self.head(&rel, Gate::Backoff)?.map(|meta| Stamp {
            size: meta.size,
            modified_ns: meta
                .last_modified
                .timestamp_nanos_opt()
                .map_or(0, |n| n.max(0) as u128),
            tag: meta.e_tag.as_deref().map_or(0, tag_hash),
        }))
    }

    fn routing(&self, model: &str) -> Result<Routing, RegistryError> {
        validate_model_name(model)?;
        if let Some(local) = &self.local {
            return local.routing(model);
        }
        Ok(self.read_routing(model, Gate::Backoff)?.0)
    }

    fn update_routing(
        &self,
        model: &str,
        change: &mut dyn FnMut(&mut Routing),
    ) -> Result<Routing, RegistryError> {
        validate_model_name(model)?;
        if let Some(local) = &self.local {
            return local.update_routing(model, change);
        }
        let rel = format!("{model}/{ROUTING_FILE}");
        // A change of routing (an operator's promote, a rollback) is tried even while reads back
        // off: it must not wait out a backoff the store may already have recovered from.
        if self
            .folders(model, Gate::Always)
            .is_ok_and(|f| f.is_empty())
            && self.head(&rel, Gate::Always)?.is_none()
        {
            return Err(RegistryError::Refused {
                path: model.to_string(),
                reason: "no such model in the registry".into(),
            });
        }
        for attempt in 0..CAS_ATTEMPTS {
            let (before, version) = self.read_routing(model, Gate::Always)?;
            let mut routing = before.clone();
            change(&mut routing);
            // A change that changed nothing (a decision another replica already made, a refusal)
            // writes nothing.
            if routing == before {
                return Ok(routing);
            }
            let text = routing.to_toml().map_err(|reason| RegistryError::Refused {
                path: rel.clone(),
                reason,
            })?;
            let mode = match version {
                None => PutMode::Create,
                Some(v) if v.e_tag.is_none() && v.version.is_none() => {
                    return Err(RegistryError::Refused {
                        path: rel,
                        reason: "the store gave no ETag or generation for it, so it cannot be \
                                 changed conditionally"
                            .into(),
                    });
                }
                Some(v) => PutMode::Update(v),
            };
            let store = self.store.clone();
            let key = self.key(&rel);
            let put = self.call("put", Gate::Always, &rel, async move {
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                store.put_opts(&key, PutPayload::from(text), opts).await
            });
            match put {
                Ok(_) => return Ok(routing),
                Err(StoreFailure::Store(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                )) => {
                    // Another writer got there first: read its state and apply the change again.
                    tracing::debug!(model, attempt, "routing.toml changed under us; retrying");
                    std::thread::sleep(Duration::from_millis(5 + u64::from(attempt) * 5));
                }
                Err(f) => return Err(f.into_error(&rel)),
            }
        }
        Err(RegistryError::Refused {
            path: rel,
            reason: format!(
                "{CAS_ATTEMPTS} conditional writes in a row lost the race to other writers; \
                 try again"
            ),
        })
    }
}

/// A stable 64-bit digest of an ETag: stamps compare ETags without keeping the strings.
fn tag_hash(e_tag: &str) -> u64 {
    let digest = <Sha256 as sha2::Digest>::digest(e_tag.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_follow_the_object() {
        let t = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        assert_eq!(cache_tag(Some("a"), 1, t), cache_tag(Some("a"), 2, t));
        assert_ne!(cache_tag(Some("a"), 1, t), cache_tag(Some("b"), 1, t));
        assert_ne!(cache_tag(None, 1, t), cache_tag(None, 2, t));
        assert_eq!(cache_tag(Some("a"), 1, t).len(), 16);
    }

    #[test]
    fn urls_are_checked_and_shown_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let err = |url: &str| {
            ObjectRegistry::open(url, dir.path(), &[])
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("http://example.com/models").contains("scheme 'http' is not supported"));
        assert!(err("s3:///prefix").contains("names no bucket"));
        assert!(err("not a url").contains("is not a URL"));
        let bad = ObjectRegistry::open(
            "s3://b/p",
            dir.path(),
            &[("aws_nonsense".into(), "1".into())],
        );
        let bad = bad.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            bad.contains("'aws_nonsense' is not an option of s3:// stores"),
            "{bad}"
        );
        let u = url::Url::parse("s3://user:secret@bucket/models?x=1").unwrap();
        assert_eq!(shown_url(&u), "s3://bucket/models");
        let u = url::Url::parse("file:///srv/secret/place/models/").unwrap();
        assert_eq!(shown_url(&u), "file://.../models");
    }

    /// The whole backend over a `file://` folder (the S3 path is tested against a real S3 server
    /// in tests/object_store.rs).
    #[test]
    fn a_file_url_registry_lists_reads_caches_and_routes() {
        let root = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("iris/1")).unwrap();
        std::fs::create_dir_all(root.path().join("iris/2")).unwrap();
        std::fs::create_dir_all(root.path().join("iris/notes")).unwrap();
        std::fs::create_dir_all(root.path().join(".hidden/1")).unwrap();
        std::fs::write(root.path().join("iris/1/model.onnx"), b"one").unwrap();
        std::fs::write(root.path().join("iris/2/model.onnx"), b"two!").unwrap();
        std::fs::write(root.path().join("iris/config.toml"), b"x = 1").unwrap();
        let url = url::Url::from_directory_path(root.path()).unwrap();
        let reg = ObjectRegistry::open(url.as_str(), cache.path(), &[]).unwrap();
        assert_eq!(reg.models().unwrap(), vec!["iris"]);
        assert_eq!(reg.versions("iris").unwrap(), vec![1, 2]);
        assert_eq!(
            reg.read("iris", None, "config.toml").unwrap().unwrap(),
            b"x = 1"
        );
        assert_eq!(reg.read("iris", None, "warmup.json").unwrap(), None);
        assert_eq!(
            reg.read("iris", Some(2), MODEL_FILE).unwrap().unwrap(),
            b"two!"
        );
        assert_eq!(reg.downloads(), 1);
        // The second read comes from the cache.
        assert_eq!(
            reg.read("iris", Some(2), MODEL_FILE).unwrap().unwrap(),
            b"two!"
        );
        assert_eq!(reg.downloads(), 1);
        let s = reg.stamp("iris", Some(2), MODEL_FILE).unwrap().unwrap();
        assert_eq!(s.size, 4);
        assert_eq!(reg.stamp("iris", Some(3), MODEL_FILE).unwrap(), None);
        // A changed file is a new stamp and a new download.
        std::fs::write(root.path().join("iris/2/model.onnx"), b"two, changed").unwrap();
        assert_ne!(reg.stamp("iris", Some(2), MODEL_FILE).unwrap().unwrap(), s);
        assert_eq!(
            reg.read("iris", Some(2), MODEL_FILE).unwrap().unwrap(),
            b"two, changed"
        );
        assert_eq!(reg.downloads(), 2);
        let version_dir = reg.cache.join("iris/2");
        let kept: Vec<_> = std::fs::read_dir(&version_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(kept.len(), 1, "old copies are removed: {kept:?}");
        // A cached copy whose bytes no longer hash to its name is dropped and fetched again.
        std::fs::write(&kept[0], b"two, chang3d").unwrap();
        assert_eq!(
            reg.read("iris", Some(2), MODEL_FILE).unwrap().unwrap(),
            b"two, changed"
        );
        assert_eq!(reg.downloads(), 3);
        // Versions and models gone from the registry leave the cache.
        std::fs::remove_dir_all(root.path().join("iris/2")).unwrap();
        assert_eq!(reg.versions("iris").unwrap(), vec![1]);
        assert!(!version_dir.exists());
        assert!(!reg.describe().contains(&root.path().display().to_string()));
        // Routing goes through the folder lock and reads back through the store.
        let r = reg
            .update_routing("iris", &mut |r| r.pinned_version = Some(1))
            .unwrap();
        assert_eq!(r.pinned_version, Some(1));
        assert_eq!(reg.routing("iris").unwrap().pinned_version, Some(1));
        assert!(reg.read("../etc", None, "config.toml").is_err());
    }
}

//! Where models come from. A registry lists models and their versions and hands out the files of
//! a version; the model manager decides what to load. The folder backend is the default; an
//! object-store backend for fleets implements the same trait.
//!
//! Layout (Triton-style, everything but `model.onnx` optional):
//! ```text
//! <root>/<model>/config.toml
//! <root>/<model>/routing.toml        written by operators' promote: the pinned version
//! <root>/<model>/<version>/model.onnx | metadata.json | baseline.json | warmup.json
//! ```

pub mod config;
pub mod folder;
pub mod name;
pub mod routing;
pub mod store;

pub use config::{ModelConfig, VersionPolicy};
pub use folder::FolderRegistry;
pub use name::{MAX_MODEL_NAME_LEN, NameError, parse_model_name, validate_model_name};
pub use routing::Routing;
pub use store::ObjectRegistry;

/// The model file every version folder must hold.
pub const MODEL_FILE: &str = "model.onnx";
/// Optional model card: `sha256` of model.onnx, training data digest, metrics.
pub const METADATA_FILE: &str = "metadata.json";
/// Optional per-model configuration.
pub const CONFIG_FILE: &str = "config.toml";
/// Optional warm-up request (V2 JSON) run on every session before a version serves.
pub const WARMUP_FILE: &str = "warmup.json";

/// Size, modification time and (in object stores) a digest of the ETag of a file: a cheap change
/// detector, checked before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub size: u64,
    pub modified_ns: u128,
    /// A digest of the object's ETag; 0 for a folder, where size and time say it.
    pub tag: u64,
}

/// A version folder's number: a positive integer written plainly (`7`, not `07` or `+7`);
/// anything else (notes, samples) is not a version.
pub fn version_folder(name: &str) -> Option<u64> {
    name.parse::<u64>()
        .ok()
        .filter(|&v| v > 0 && name == v.to_string())
}

/// Registry failures. Their messages reach callers (load errors, status reasons), so paths in them
/// are relative to the registry root (`model/version/file`); backends log absolute locations.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{path}: {source}")]
    Io {
        /// Relative to the registry root.
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file or folder the registry refuses to use as it is (a planted link, not a regular file,
    /// unparseable content).
    #[error("{path}: {reason}")]
    Refused { path: String, reason: String },
    /// An object store's answer or failure (after its own retries). `kind` is what callers see;
    /// the store's own message (which may quote request details) is the source, for the log.
    #[error("{path}: {kind}")]
    Store {
        /// Relative to the registry root.
        path: String,
        kind: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// The store failed recently; no read is made until the backoff ends.
    #[error(
        "{registry} is unreachable (retrying with backoff; the server log has the store's error)"
    )]
    Unreachable { registry: String },
}

pub trait Registry: Send + Sync + 'static {
    /// A short name for logs and error messages; never an absolute path, since errors that
    /// mention it reach callers.
    fn describe(&self) -> String;
    /// Model names, sorted.
    fn models(&self) -> Result<Vec<String>, RegistryError>;
    /// The versions present for `model`, ascending.
    fn versions(&self, model: &str) -> Result<Vec<u64>, RegistryError>;
    /// A model-level file (`version = None`, e.g. config.toml) or a version's file.
    /// `Ok(None)` when it does not exist.
    fn read(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Vec<u8>>, RegistryError>;
    /// The stamp of a file, `Ok(None)` when it does not exist.
    fn stamp(
        &self,
        model: &str,
        version: Option<u64>,
        file: &str,
    ) -> Result<Option<Stamp>, RegistryError>;
    /// Whether the backend's store failed recently (it is backing off): a read that failed now
    /// may be the store's fault rather than the file's, so the manager tries it again later and
    /// does not report it as the model's failure.
    fn degraded(&self) -> bool {
        false
    }
    /// How many store calls have failed since the start (0 for backends without a remote store):
    /// a pass that saw it change may have missed files that are fine.
    fn failures(&self) -> u64 {
        0
    }
    /// The model's routing policy (default when none was written).
    fn routing(&self, model: &str) -> Result<Routing, RegistryError>;
    /// Changes the routing policy atomically: concurrent writers (other replicas, other
    /// operators) never lose each other's update.
    fn update_routing(
        &self,
        model: &str,
        change: &mut dyn FnMut(&mut Routing),
    ) -> Result<Routing, RegistryError>;
}

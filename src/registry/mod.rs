//! Where models come from. A registry lists models and their versions and hands out the files of
//! a version; the model manager decides what to load. The folder backend is the default; an
//! object-store backend for fleets implements the same trait.
//!
//! Layout (Triton-style, everything but `model.onnx` optional):
//! ```text
//! <root>/<model>/config.toml
//! <root>/<model>/<version>/model.onnx | metadata.json | baseline.json
//! ```

pub mod config;
pub mod folder;

pub use config::{ModelConfig, VersionPolicy};
pub use folder::FolderRegistry;

/// The model file every version folder must hold.
pub const MODEL_FILE: &str = "model.onnx";
/// Optional model card: `sha256` of model.onnx, training data digest, metrics.
pub const METADATA_FILE: &str = "metadata.json";
/// Optional per-model configuration.
pub const CONFIG_FILE: &str = "config.toml";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    Io(String),
}

pub trait Registry: Send + Sync + 'static {
    /// Human-readable location, for logs and errors.
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
}

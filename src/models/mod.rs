//! Models in service: the live table requests read, the manager that keeps it in step with the
//! registry, and the status rows operators see.
//!
//! - [`table`]: the table (`Table`, `ModelEntry`, `VersionState`) and how a request finds its version.
//! - [`manager`]: the single writer: initial load, polling, load/unload, promotion.
//! - [`status`]: one row per model version for the status API, the CLI and the repository index.
//! - [`loader`]: reading, checking and warming one version; [`version`]: a loaded version.

pub mod loader;
pub mod manager;
pub mod status;
pub mod table;
pub mod version;

pub use manager::{ControlMode, ManagerOptions, ModelManager};
pub use status::VersionStatus;
pub use table::{ModelEntry, Table, VersionState};
pub use version::LoadedVersion;

//! Monitoring: Prometheus metrics, and serving-data monitoring of every version — online
//! training/serving skew against its baseline.json (`baseline`, `skew`, `drift`; the same
//! statistics offline from capture files in `offline`), Parquet capture (`capture`), feedback
//! and live quality (`feedback`, `quality`). `version` holds what one loaded version carries.

pub mod baseline;
pub mod capture;
pub mod drift;
pub mod feedback;
pub mod metrics;
pub mod offline;
pub mod quality;
pub mod skew;
pub mod version;

pub use version::{Card, VersionMonitor};

/// A version's training reference for skew: per-feature histograms (written by models/train.py).
pub const BASELINE_FILE: &str = "baseline.json";

/// The server-wide side of monitoring: whether it is on, the capture writer, the feedback store.
pub struct Monitoring {
    pub enabled: bool,
    pub capture: Option<capture::Capture>,
    pub feedback: feedback::FeedbackStore,
}

//! The status rows: one per model version (and one per model that failed as a whole), for the
//! status API, the operator CLI and the repository index. The one place that says what state a
//! model is in, so every view agrees.

use std::time::{Duration, SystemTime};

use crate::models::table::{Table, VersionState};

/// One row of `status()`: a model version, or a model that failed as a whole (`version: None`).
#[derive(Debug, Clone)]
pub struct VersionStatus {
    pub model: String,
    pub version: Option<u64>,
    pub state: &'static str,
    pub pinned: bool,
    /// Serves requests that name no version.
    pub default: bool,
    pub loaded_at: Option<SystemTime>,
    pub load_duration: Option<Duration>,
    pub sha256: Option<String>,
    pub reason: String,
}

/// Every model and version of `table` with its state.
pub fn rows(table: &Table) -> Vec<VersionStatus> {
    let mut out = Vec::new();
    for (name, entry) in &table.models {
        let default = entry.default_version().map(|v| v.version);
        if let Some(error) = &entry.error {
            out.push(VersionStatus {
                model: name.clone(),
                version: None,
                state: "UNAVAILABLE",
                pinned: false,
                default: false,
                loaded_at: None,
                load_duration: None,
                sha256: None,
                reason: error.clone(),
            });
        }
        for (&v, state) in &entry.versions {
            let lv = match state {
                VersionState::Ready(lv) => Some(lv),
                _ => None,
            };
            let mut reason = state.reason().to_string();
            if let Some(r) = entry.refused.get(&v) {
                reason = format!("serving the previous file; the new one was refused: {r}");
            }
            if entry.pinned == Some(v) && lv.is_none() {
                reason = format!(
                    "pinned but not ready; version {} serves instead. {reason}",
                    default.map_or("none".into(), |d| d.to_string())
                );
            }
            out.push(VersionStatus {
                model: name.clone(),
                version: Some(v),
                state: state.name(),
                pinned: entry.pinned == Some(v),
                default: default == Some(v),
                loaded_at: lv.map(|l| l.loaded_at),
                load_duration: lv.map(|l| l.load_duration),
                sha256: lv.map(|l| l.sha256.clone()),
                reason: reason.trim().to_string(),
            });
        }
    }
    out
}

//! The live model table: what requests read (through `ArcSwap`, a lock-free load and an `Arc`
//! clone) to find the version that serves them. Only the manager writes it.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::models::version::LoadedVersion;
use crate::routing::LiveRollout;

#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(Arc<LoadedVersion>),
    Failed(String),
    /// Taken out of service; finishing the requests it has.
    Unloading,
}

impl VersionState {
    /// The state names of the repository extension (Triton's spelling).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Loading => "LOADING",
            Self::Ready(_) => "READY",
            Self::Failed(_) => "UNAVAILABLE",
            Self::Unloading => "UNLOADING",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Failed(r) => r,
            _ => "",
        }
    }
}

#[derive(Clone, Default)]
pub struct ModelEntry {
    pub versions: BTreeMap<u64, VersionState>,
    /// A model-level problem (bad config.toml, no version folders).
    pub error: Option<String>,
    /// The version an operator pinned (`switchyard promote`), from the registry.
    pub pinned: Option<u64>,
    /// The model's rollout, from the registry (also once it ended, for its status).
    pub rollout: Option<Arc<LiveRollout>>,
    /// Why the newest file of a version was refused while its previous file keeps serving.
    pub refused: BTreeMap<u64, String>,
}

impl ModelEntry {
    /// The version that serves requests naming none: the pinned one when it is ready, else the
    /// highest ready one.
    pub fn default_version(&self) -> Option<&Arc<LoadedVersion>> {
        fn ready(s: &VersionState) -> Option<&Arc<LoadedVersion>> {
            match s {
                VersionState::Ready(v) => Some(v),
                _ => None,
            }
        }
        self.pinned
            .and_then(|p| self.versions.get(&p).and_then(ready))
            .or_else(|| self.versions.values().rev().find_map(ready))
    }

    /// Version `v` when it is ready.
    pub fn ready(&self, v: u64) -> Option<&Arc<LoadedVersion>> {
        match self.versions.get(&v) {
            Some(VersionState::Ready(lv)) => Some(lv),
            _ => None,
        }
    }

    /// The rollout when it is running or paused (it splits traffic).
    pub fn active_rollout(&self) -> Option<&Arc<LiveRollout>> {
        self.rollout.as_ref().filter(|r| r.state.phase.active())
    }

    pub fn ready_versions(&self) -> impl Iterator<Item = &Arc<LoadedVersion>> {
        self.versions.values().filter_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }

    /// Why the model has no ready version: its own error, else each version's state.
    pub fn describe_failure(&self) -> String {
        self.error.clone().unwrap_or_else(|| {
            let states: Vec<String> = self
                .versions
                .iter()
                .map(|(v, s)| match s {
                    VersionState::Failed(r) => format!("version {v} failed: {r}"),
                    other => format!("version {v} is {}", other.name().to_lowercase()),
                })
                .collect();
            states.join("; ")
        })
    }
}

#[derive(Clone, Default)]
pub struct Table {
    pub models: BTreeMap<String, ModelEntry>,
}

impl Table {
    /// The version that serves a request for `model` (and `version`, when the caller named one).
    pub fn resolve(&self, model: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>> {
        let Some(entry) = self.models.get(model) else {
            return Err(Error::NotFound(format!("unknown model '{model}'")));
        };
        match version {
            Some(v) => match entry.versions.get(&v) {
                Some(VersionState::Ready(lv)) => Ok(lv.clone()),
                Some(VersionState::Loading) => Err(Error::Unavailable(format!(
                    "model '{model}' version {v} is still loading"
                ))),
                Some(VersionState::Unloading) => Err(Error::Unavailable(format!(
                    "model '{model}' version {v} is being unloaded"
                ))),
                Some(VersionState::Failed(reason)) => Err(Error::Unavailable(format!(
                    "model '{model}' version {v} is not available: {reason}"
                ))),
                None => {
                    let known: Vec<String> =
                        entry.versions.keys().map(ToString::to_string).collect();
                    Err(Error::NotFound(format!(
                        "model '{model}' has no version {v} (versions: {})",
                        if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        }
                    )))
                }
            },
            None => entry.default_version().cloned().ok_or_else(|| {
                Error::Unavailable(format!(
                    "model '{model}' has no ready version ({})",
                    entry.describe_failure()
                ))
            }),
        }
    }

    /// Every model is free of model-level errors and every selected version is ready.
    pub fn all_ready(&self) -> bool {
        self.models.values().all(|m| {
            m.error.is_none()
                && m.versions
                    .values()
                    .all(|s| matches!(s, VersionState::Ready(_)))
        })
    }
}

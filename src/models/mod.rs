//! The live model table and the manager that fills it from the registry.
//!
//! Requests read the table through `ArcSwap` (a lock-free load and an `Arc` clone); only the
//! manager writes it, by publishing a new table. A version is published as `Ready` only after it
//! loaded and warmed up, and a failed version never replaces anything.

pub mod loader;
pub mod version;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::error::{Error, Result};
use crate::monitoring::metrics;
use crate::registry::config::{Defaults, ModelConfig, Resolved};
use crate::registry::{CONFIG_FILE, Registry};
pub use version::LoadedVersion;

#[derive(Clone)]
pub enum VersionState {
    Loading,
    Ready(Arc<LoadedVersion>),
    Failed(String),
}

impl VersionState {
    /// The state names of the repository extension (Triton's spelling).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Loading => "LOADING",
            Self::Ready(_) => "READY",
            Self::Failed(_) => "UNAVAILABLE",
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
    /// A model-level problem (bad config.toml, no version folders) that stops every version.
    pub error: Option<String>,
}

impl ModelEntry {
    /// The version that serves requests naming none: the highest ready one.
    pub fn default_version(&self) -> Option<&Arc<LoadedVersion>> {
        self.versions.values().rev().find_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }

    pub fn ready_versions(&self) -> impl Iterator<Item = &Arc<LoadedVersion>> {
        self.versions.values().filter_map(|s| match s {
            VersionState::Ready(v) => Some(v),
            _ => None,
        })
    }
}

#[derive(Clone, Default)]
pub struct Table {
    pub models: BTreeMap<String, ModelEntry>,
}

pub struct ModelManager {
    registry: Arc<dyn Registry>,
    defaults: Defaults,
    env: &'static Environment,
    live: ArcSwap<Table>,
    initial_load_done: AtomicBool,
    /// Bumped whenever the table or the load state changes, for watchers (gRPC health).
    changes: tokio::sync::watch::Sender<u64>,
}

impl ModelManager {
    pub fn new(registry: Arc<dyn Registry>, defaults: Defaults, env: &'static Environment) -> Self {
        Self {
            registry,
            defaults,
            env,
            live: ArcSwap::from_pointee(Table::default()),
            initial_load_done: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    /// The current table (a cheap snapshot).
    pub fn snapshot(&self) -> Arc<Table> {
        self.live.load_full()
    }

    pub fn initial_load_done(&self) -> bool {
        self.initial_load_done.load(Ordering::Acquire)
    }

    /// A receiver that sees a new value after every change of the table or the load state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn publish(&self, edit: impl Fn(&mut Table)) {
        self.live.rcu(|current| {
            let mut next = Table::clone(current);
            edit(&mut next);
            next
        });
        self.changed();
    }

    /// Loads every model in the registry. Blocking: call it from a blocking thread.
    pub fn load_all(&self) {
        match self.registry.models() {
            Ok(models) => {
                for model in models {
                    self.load_model(&model);
                }
            }
            Err(e) => {
                tracing::error!(registry = %self.registry.describe(), error = %e, "cannot list models")
            }
        }
        self.initial_load_done.store(true, Ordering::Release);
        self.changed();
    }

    fn model_settings(&self, model: &str) -> Result<Resolved, String> {
        let origin = format!("{model}/{CONFIG_FILE}");
        let config = match self.registry.read(model, None, CONFIG_FILE) {
            Ok(Some(bytes)) => {
                let text = String::from_utf8(bytes)
                    .map_err(|_| format!("{origin}: the file is not UTF-8"))?;
                ModelConfig::parse(&text, &origin)?
            }
            Ok(None) => ModelConfig::default(),
            Err(e) => return Err(e.to_string()),
        };
        config.resolve(&self.defaults, &origin)
    }

    /// Loads the versions of one model that its policy selects.
    pub fn load_model(&self, model: &str) {
        let fail_model = |reason: String| {
            tracing::error!(model, %reason, "model not loaded");
            metrics::record_load(model, Default::default(), false);
            self.publish(|t| {
                let entry = t.models.entry(model.to_string()).or_default();
                entry.error = Some(reason.clone());
            });
        };
        let settings = match self.model_settings(model) {
            Ok(s) => s,
            Err(reason) => return fail_model(reason),
        };
        let available = match self.registry.versions(model) {
            Ok(v) => v,
            Err(e) => return fail_model(e.to_string()),
        };
        let selected = settings.version_policy.select(&available);
        if selected.is_empty() {
            return fail_model(format!(
                "no version folder to serve (found {available:?}, version policy {:?}); \
                 expected <model>/<positive integer>/model.onnx",
                settings.version_policy
            ));
        }
        self.publish(|t| {
            let entry = t.models.entry(model.to_string()).or_default();
            entry.error = None;
            for &v in &selected {
                entry.versions.entry(v).or_insert(VersionState::Loading);
            }
        });
        for v in selected {
            let started = Instant::now();
            let state = match loader::load_version(
                self.registry.as_ref(),
                self.env,
                model,
                v,
                &settings,
            ) {
                Ok(loaded) => {
                    tracing::info!(
                        model,
                        version = v,
                        provider = loaded.provider,
                        instances = settings.runtime.instances,
                        max_batch_size = loaded.max_batch_size,
                        ms = started.elapsed().as_millis() as u64,
                        "model version ready"
                    );
                    metrics::record_load(model, started.elapsed(), true);
                    metrics::set_version_ready(model, v, true);
                    VersionState::Ready(Arc::new(loaded))
                }
                Err(reason) => {
                    tracing::error!(model, version = v, %reason, "model version failed to load");
                    metrics::record_load(model, started.elapsed(), false);
                    metrics::set_version_ready(model, v, false);
                    VersionState::Failed(reason)
                }
            };
            self.publish(|t| {
                let entry = t.models.entry(model.to_string()).or_default();
                // A failed reload never replaces a version that is serving.
                let keep = matches!(state, VersionState::Failed(_))
                    && matches!(entry.versions.get(&v), Some(VersionState::Ready(_)));
                if !keep {
                    entry.versions.insert(v, state.clone());
                }
            });
        }
    }

    /// The version that serves a request for `model` (and `version`, when the caller named one).
    pub fn resolve(&self, model: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>> {
        let table = self.live.load();
        let Some(entry) = table.models.get(model) else {
            return Err(Error::NotFound(format!("unknown model '{model}'")));
        };
        match version {
            Some(v) => match entry.versions.get(&v) {
                Some(VersionState::Ready(lv)) => Ok(lv.clone()),
                Some(VersionState::Loading) => Err(Error::Unavailable(format!(
                    "model '{model}' version {v} is still loading"
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
                let why = entry.error.clone().unwrap_or_else(|| {
                    let states: Vec<String> = entry
                        .versions
                        .iter()
                        .map(|(v, s)| match s {
                            VersionState::Failed(r) => format!("version {v} failed: {r}"),
                            other => format!("version {v} is {}", other.name().to_lowercase()),
                        })
                        .collect();
                    states.join("; ")
                });
                Error::Unavailable(format!("model '{model}' has no ready version ({why})"))
            }),
        }
    }

    /// True once the initial load finished; with `strict`, also every selected version is ready.
    pub fn ready(&self, strict: bool) -> bool {
        if !self.initial_load_done() {
            return false;
        }
        if !strict {
            return true;
        }
        let table = self.live.load();
        table.models.values().all(|m| {
            m.error.is_none()
                && m.versions
                    .values()
                    .all(|s| matches!(s, VersionState::Ready(_)))
        })
    }
}

//! The manager: the one writer of the live table, keeping it in step with the registry.
//!
//! Requests keep the `Arc` of the version they resolved until they finish, so a version that is
//! replaced or unloaded completes what it already has and is freed when its last request ends.
//! Only the manager writes the table, and every
//! change goes through one lock (`control`), so loads, unloads, polls and promotions never race.
//! A version is published `Ready` only after it loaded, passed its checks and warmed up; a
//! version that fails never replaces one that serves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::error::{Error, Result};
use crate::models::loader;
use crate::models::status::{self, VersionStatus};
use crate::models::table::{ModelEntry, Table, VersionState};
use crate::models::version::LoadedVersion;
use crate::monitoring::metrics;
use crate::registry::config::{ConfigError, Defaults, ModelConfig, Resolved};
use crate::registry::{CONFIG_FILE, MODEL_FILE, Registry, Routing, Stamp};
use crate::routing::{LiveRollout, controller};

/// How the set of loaded models is decided (Triton's `--model-control-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ControlMode {
    /// Load the registry at start; never change it afterwards.
    None,
    /// Load at start, then follow the registry: new, changed and removed versions and models.
    Poll,
    /// Load only what `--load-model` names at start; afterwards only the repository API loads
    /// and unloads.
    Explicit,
}

impl ControlMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Poll => "poll",
            Self::Explicit => "explicit",
        }
    }
}

/// Settings of the manager.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub defaults: Defaults,
    pub mode: ControlMode,
    /// Models to load at start in explicit mode (`*` for all).
    pub initial_models: Vec<String>,
    /// How long an unload waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// What the manager remembers about the registry between passes.
#[derive(Default)]
struct Control {
    models: HashMap<String, ModelControl>,
}

#[derive(Default)]
struct ModelControl {
    /// The config.toml bytes the current settings came from (`Some(None)`: no file).
    applied_config: Option<Option<Vec<u8>>>,
    /// The config.toml bytes whose failure was reported: polling does not fail them again (no
    /// error log, failure count or table change every interval); a changed file is looked at.
    failed_config: Option<Option<Vec<u8>>>,
    versions: HashMap<u64, FileState>,
}

#[derive(Default, Clone, Copy)]
struct FileState {
    /// model.onnx as seen by the previous poll: a file must look the same twice in a row
    /// (one whole interval) before it is loaded, so a copy in progress is never read half-way.
    seen: Option<Stamp>,
    /// model.onnx as it was when the version's current state was decided.
    applied: Option<Stamp>,
}

/// How a pass treats files that just changed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// At start and on operator request: load what is there now.
    Now,
    /// Polling: load a new or changed file only once it has been stable for one interval.
    WhenStable,
}

pub struct ModelManager {
    registry: Arc<dyn Registry>,
    options: ManagerOptions,
    env: &'static Environment,
    live: ArcSwap<Table>,
    initial_load_done: AtomicBool,
    /// Bumped whenever the table or the load state changes, for watchers (gRPC health).
    changes: tokio::sync::watch::Sender<u64>,
    control: Mutex<Control>,
    routing: Mutex<()>,
}

impl ModelManager {
    pub fn new(
        registry: Arc<dyn Registry>,
        options: ManagerOptions,
        env: &'static Environment,
    ) -> Self {
        Self {
            registry,
            options,
            env,
            live: ArcSwap::from_pointee(Table::default()),
            initial_load_done: AtomicBool::new(false),
            changes: tokio::sync::watch::Sender::new(0),
            control: Mutex::new(Control::default()),
            routing: Mutex::new(()),
        }
    }

    pub fn registry(&self) -> &dyn Registry {
        self.registry.as_ref()
    }

    pub fn mode(&self) -> ControlMode {
        self.options.mode
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

    /// Serializes reads-and-applies of routing policies with writes of them, so a state read
    /// before another thread's write is never applied after it. Taken after `control` when both.
    fn routing_lock(&self) -> MutexGuard<'_, ()> {
        self.routing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The initial load. Blocking: call it from a blocking thread. A registry that cannot be
    /// listed, or whose store fails during the pass (an object store not reachable yet), leaves
    /// the initial load not done, so the server is not ready; each poll tries again.
    pub fn load_all(&self) {
        let failures = self.registry.failures();
        let names: Vec<String> = match self.registry.models() {
            Ok(models) => match self.options.mode {
                ControlMode::Explicit if !self.options.initial_models.iter().any(|m| m == "*") => {
                    for wanted in &self.options.initial_models {
                        if !models.contains(wanted) {
                            tracing::error!(model = %wanted, "--load-model names a model the registry does not have");
                        }
                    }
                    models
                        .into_iter()
                        .filter(|m| self.options.initial_models.contains(m))
                        .collect()
                }
                _ => models,
            },
            Err(e) => {
                tracing::error!(registry = %self.registry.describe(), error = %e,
                    "cannot list models; not ready until the registry answers");
                return;
            }
        };
        let mut control = self.lock();
        for name in names {
            self.sync_model(&mut control, &name, Pass::Now);
        }
        drop(control);
        if self.registry.failures() != failures {
            // The store failed part-way: what loaded serves, the rest is read again at the next
            // poll (in every control mode), and the server is ready once a whole pass succeeds.
            tracing::warn!(registry = %self.registry.describe(),
                "the registry failed during the initial load; trying again at the next poll");
            return;
        }
        self.initial_load_done.store(true, Ordering::Release);
        self.changed();
    }

    /// One polling pass: follow the registry (new, changed and removed models and versions).
    /// In the other modes only the routing policy (pinned versions) is refreshed.
    pub fn poll(&self) {
        if !self.initial_load_done() {
            self.load_all();
            return;
        }
        if self.options.mode != ControlMode::Poll {
            self.refresh_routing();
            return;
        }
        let models = match self.registry.models() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list models; keeping the current ones");
                return;
            }
        };
        let mut control = self.lock();
        for name in &models {
            self.sync_model(&mut control, name, Pass::WhenStable);
        }
        let gone: Vec<String> = self
            .snapshot()
            .models
            .keys()
            .filter(|m| !models.contains(m))
            .cloned()
            .collect();
        for name in gone {
            tracing::info!(model = %name, "model removed from the registry; unloading");
            self.remove_model(&mut control, &name);
        }
        // A model whose pass stopped early (a broken config.toml edit, a model-level error) did
        // not read its routing policy; it must still follow a fleet-wide abort or promotion.
        // The others read theirs in `sync_model`.
        let stopped_early: Vec<String> = self
            .snapshot()
            .models
            .iter()
            .filter(|(_, e)| e.error.is_some())
            .map(|(name, _)| name.clone())
            .collect();
        self.refresh_routing_of(stopped_early);
    }

    /// Loads (or reloads what changed of) one model now. The repository API's load.
    pub fn load_model(&self, name: &str) -> Result<()> {
        let available = self
            .registry
            .models()
            .map_err(|e| Error::Internal(e.to_string()))?;
        if !available.iter().any(|m| m == name) {
            return Err(Error::NotFound(format!(
                "model '{name}' is not in the registry ({})",
                self.registry.describe()
            )));
        }
        let mut control = self.lock();
        self.sync_model(&mut control, name, Pass::Now);
        drop(control);
        let table = self.snapshot();
        let entry = table.models.get(name);
        match entry.and_then(ModelEntry::default_version) {
            Some(_) => Ok(()),
            None => {
                let why = entry.map(ModelEntry::describe_failure).unwrap_or_default();
                Err(Error::Unavailable(format!(
                    "model '{name}' did not load: {why}"
                )))
            }
        }
    }

    /// Takes a model out of service, waits for its in-flight requests, and forgets it.
    pub fn unload_model(&self, name: &str) -> Result<()> {
        if !self.snapshot().models.contains_key(name) {
            return Err(Error::NotFound(format!("model '{name}' is not loaded")));
        }
        let mut control = self.lock();
        self.remove_model(&mut control, name);
        Ok(())
    }

    /// Pins the version that serves requests naming none (`None` unpins), in the registry.
    /// Refused while a rollout splits the model's traffic (it decides what serves).
    pub fn promote(&self, name: &str, version: Option<u64>) -> Result<Option<u64>> {
        if let Some(v) = version {
            self.require_ready(name, v)?;
        }
        let (routing, refused) = self.update_routing(name, |r| {
            if let Some(rollout) = r.rollout.as_ref().filter(|r| r.phase.active()) {
                return Some(format!(
                    "model '{name}' has a {} rollout of version {} ({}); use `switchyard rollout \
                     promote|abort {name}` to end it first",
                    rollout.phase.as_str(),
                    rollout.candidate(),
                    rollout.spec.kind.as_str()
                ));
            }
            r.pinned_version = version;
            None
        })?;
        if let Some(reason) = refused {
            return Err(Error::FailedPrecondition(reason));
        }
        tracing::info!(model = name, pinned = ?routing.pinned_version, "routing policy changed");
        Ok(routing.pinned_version)
    }

    /// `Ok` when version `v` of `name` is ready on this server; the error lists the ready ones.
    pub fn require_ready(&self, name: &str, v: u64) -> Result<()> {
        let table = self.snapshot();
        let entry = table
            .models
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("unknown model '{name}'")))?;
        if entry.ready(v).is_some() {
            return Ok(());
        }
        let ready: Vec<String> = entry
            .ready_versions()
            .map(|lv| lv.version.to_string())
            .collect();
        Err(Error::FailedPrecondition(format!(
            "model '{name}' version {v} is not ready on this server (ready: {}); load it first",
            if ready.is_empty() {
                "none".into()
            } else {
                ready.join(", ")
            }
        )))
    }

    /// Changes a model's routing policy in the registry (atomically: concurrent writers never lose
    /// an update) and serves the result at once. `change` may run more than once (a backend that
    /// retries on conflict); what its last run returned comes back with the policy written.
    pub fn update_routing<T>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut Routing) -> T,
    ) -> Result<(Routing, T)> {
        // Not the control lock: a rollback must not wait behind a model load.
        let _routing = self.routing_lock();
        if !self.snapshot().models.contains_key(name) {
            return Err(Error::NotFound(format!("unknown model '{name}'")));
        }
        let mut out = None;
        let routing = self
            .registry
            .update_routing(name, &mut |r| out = Some(change(r)))
            .map_err(|e| Error::Internal(format!("cannot write the routing policy: {e}")))?;
        let out = out.ok_or_else(|| {
            Error::Internal("the registry did not apply the routing change".into())
        })?;
        self.apply_routing(name, &routing);
        Ok((routing, out))
    }

    /// Serves `routing` for `name` if it differs from what is served (pin and rollout state).
    fn apply_routing(&self, name: &str, routing: &Routing) {
        let table = self.snapshot();
        let Some(entry) = table.models.get(name) else {
            return;
        };
        let current = entry.rollout.as_ref().map(|l| &l.state);
        if entry.pinned == routing.pinned_version && current == routing.rollout.as_ref() {
            return;
        }
        let previous = entry.rollout.clone();
        let trained_at = routing
            .rollout
            .as_ref()
            .and_then(|r| entry.ready(r.candidate()))
            .and_then(|v| v.monitor.card().trained_at);
        drop(table);
        let next = routing
            .rollout
            .clone()
            .map(|r| LiveRollout::next(previous.as_ref(), r));
        if let Some(live) = &next {
            let before = previous.as_deref().map(|p| &p.state);
            controller::observe(name, before, &live.state, trained_at);
        }
        self.publish(|t| {
            if let Some(e) = t.models.get_mut(name) {
                e.pinned = routing.pinned_version;
                e.rollout = next.clone();
            }
        });
    }

    /// Re-reads every loaded model's routing policy (other replicas may have promoted, or moved
    /// a rollout on).
    pub fn refresh_routing(&self) {
        let names: Vec<String> = self.snapshot().models.keys().cloned().collect();
        self.refresh_routing_of(names);
    }

    fn refresh_routing_of(&self, names: Vec<String>) {
        let _routing = self.routing_lock();
        for name in names {
            match self.registry.routing(&name) {
                Ok(r) => self.apply_routing(&name, &r),
                Err(e) => {
                    tracing::warn!(model = %name, error = %e, "cannot read the routing policy")
                }
            }
        }
    }

    /// The settings `config.toml` (its bytes, `None` when there is none) gives a model.
    fn model_settings(
        &self,
        model: &str,
        bytes: Option<&[u8]>,
    ) -> std::result::Result<Resolved, ConfigError> {
        let origin = format!("{model}/{CONFIG_FILE}");
        let config = match bytes {
            Some(b) => ModelConfig::parse_bytes(b, &origin)?,
            None => ModelConfig::default(),
        };
        config.resolve(&self.options.defaults, &origin)
    }

    /// Records a model-level failure. A poll that meets the failure already recorded does
    /// nothing (no error log, failure count or table change every interval); an operator's load
    /// reports it again.
    fn fail_model(&self, model: &str, reason: String, pass: Pass) {
        let table = self.snapshot();
        let entry = table.models.get(model);
        if pass == Pass::WhenStable && entry.is_some_and(|e| e.error.as_ref() == Some(&reason)) {
            return;
        }
        let serving = entry.is_some_and(|e| e.default_version().is_some());
        drop(table);
        if serving {
            tracing::error!(model, %reason, "model change refused; the loaded versions keep serving");
        } else {
            tracing::error!(model, %reason, "model not loaded");
        }
        metrics::record_load(model, Duration::ZERO, false);
        self.publish(|t| {
            t.models.entry(model.to_string()).or_default().error = Some(reason.clone());
        });
    }

    /// A read of the registry failed: the model's failure, unless the registry's store is failing
    /// (then it is the store's: the model keeps what it has and the next poll reads again).
    fn fail_read(&self, model: &str, reason: String, pass: Pass) {
        if self.registry.degraded() {
            tracing::debug!(model, %reason, "registry unavailable; keeping the model as it is");
            return;
        }
        self.fail_model(model, reason, pass)
    }

    /// Brings one model in line with the registry: settings, the versions its policy selects,
    /// its routing policy. Versions load one by one and are published as each is ready.
    fn sync_model(&self, control: &mut Control, model: &str, pass: Pass) {
        let config_text = match self.registry.read(model, None, CONFIG_FILE) {
            Ok(t) => t,
            Err(e) => return self.fail_read(model, e.to_string(), pass),
        };
        let ctl = control.models.entry(model.to_string()).or_default();
        if pass == Pass::WhenStable && ctl.failed_config.as_ref() == Some(&config_text) {
            return; // the same broken file: already reported
        }
        let config_changed = ctl.applied_config.as_ref() != Some(&config_text);
        let settings = match self.model_settings(model, config_text.as_deref()) {
            Ok(s) => s,
            Err(e) => {
                ctl.failed_config = Some(config_text);
                // A changed file (the same text returned above): report it even if its
                // message matches the last one.
                return self.fail_model(model, e.to_string(), Pass::Now);
            }
        };
        ctl.failed_config = None;
        let available = match self.registry.versions(model) {
            Ok(v) => v,
            Err(e) => return self.fail_read(model, e.to_string(), pass),
        };
        let selected = settings.version_policy.select(&available);
        if selected.is_empty() {
            ctl.applied_config = Some(config_text);
            let had_versions = self
                .snapshot()
                .models
                .get(model)
                .is_some_and(|e| !e.versions.is_empty());
            if had_versions {
                self.unload_versions(
                    model,
                    &self.snapshot().models[model]
                        .versions
                        .keys()
                        .copied()
                        .collect::<Vec<_>>(),
                );
            }
            let reason = format!(
                "no version folder to serve (found {available:?}, version policy {:?}); \
                 expected <model>/<positive integer>/{MODEL_FILE}",
                settings.version_policy
            );
            return self.fail_model(model, reason, pass);
        }
        let clean = self
            .snapshot()
            .models
            .get(model)
            .is_some_and(|e| e.error.is_none());
        let known = self.snapshot().models.contains_key(model);
        if !clean {
            self.publish(|t| {
                t.models.entry(model.to_string()).or_default().error = None;
            });
        }
        {
            let _routing = self.routing_lock();
            match self.registry.routing(model) {
                Ok(r) => self.apply_routing(model, &r),
                // Keep serving the policy we have (pin and rollout): a passing read error must
                // not end a rollout and send traffic to the highest version.
                Err(e) if known => {
                    tracing::warn!(model, error = %e, "cannot read the routing policy; keeping the current one")
                }
                Err(e) => {
                    tracing::warn!(model, error = %e, "cannot read the routing policy; nothing pinned")
                }
            }
        }

        for &v in &selected {
            let stamp = match self.registry.stamp(model, Some(v), MODEL_FILE) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(model, version = v, error = %e, "cannot read the model file's state");
                    continue;
                }
            };
            let fs = ctl.versions.entry(v).or_default();
            if pass == Pass::WhenStable && fs.seen != stamp {
                // New or still changing: look again at the next poll.
                fs.seen = stamp;
                continue;
            }
            fs.seen = stamp;
            let state = self
                .snapshot()
                .models
                .get(model)
                .and_then(|e| e.versions.get(&v).cloned());
            // Polling does not retry an unchanged file that failed (no load storms); an
            // operator's load does.
            let retry = pass == Pass::Now && matches!(state, Some(VersionState::Failed(_)));
            if state.is_some() && !config_changed && fs.applied == stamp && !retry {
                continue;
            }
            fs.applied = stamp;
            if !self.load_version(model, v, &settings, config_changed) && self.registry.degraded() {
                // The store failed while the version was read: the file may well be fine.
                // Try it again once the store answers (a poll with an unchanged file would not).
                fs.applied = None;
            }
        }
        ctl.applied_config = Some(config_text);

        let stale: Vec<u64> = self
            .snapshot()
            .models
            .get(model)
            .map(|e| {
                e.versions
                    .keys()
                    .copied()
                    .filter(|v| !selected.contains(v))
                    .collect()
            })
            .unwrap_or_default();
        if !stale.is_empty() {
            tracing::info!(model, versions = ?stale, "versions no longer in the registry or the policy; unloading");
            self.unload_versions(model, &stale);
            for v in stale {
                ctl.versions.remove(&v);
            }
        }
    }

    /// Loads one version off the serving path and swaps it in, or records why it was refused.
    /// False when it was refused or failed.
    fn load_version(
        &self,
        model: &str,
        v: u64,
        settings: &Resolved,
        settings_changed: bool,
    ) -> bool {
        let started = Instant::now();
        let (current, reference) = {
            let table = self.snapshot();
            let entry = table.models.get(model);
            let current = entry.and_then(|e| match e.versions.get(&v) {
                Some(VersionState::Ready(lv)) => Some(lv.clone()),
                _ => None,
            });
            // A new file must keep the serving signature: the same version's, else the default's.
            let reference = current
                .clone()
                .or_else(|| entry.and_then(|e| e.default_version().cloned()));
            (current, reference)
        };
        if current.is_none() {
            self.publish(|t| {
                t.models
                    .entry(model.to_string())
                    .or_default()
                    .versions
                    .insert(v, VersionState::Loading);
            });
        }
        // A panic anywhere in loading fails this version only; the manager and the rest serve on.
        let mut ok = true;
        let result = catch_panic(|| {
            loader::read_model(self.registry.as_ref(), model, v).and_then(|(bytes, sha256)| {
                if let Some(cur) = &current
                    && cur.sha256 == sha256
                    && !settings_changed
                {
                    return Ok(None); // the same bytes (the file was only touched)
                }
                loader::build_version(
                    self.registry.as_ref(),
                    self.env,
                    model,
                    v,
                    &bytes,
                    sha256,
                    settings,
                    loader::Expectation {
                        signature: reference.as_ref().map(|r| &r.signature),
                        allow_signature_change: settings.allow_signature_change,
                    },
                )
                .map(Some)
            })
        })
        .unwrap_or_else(|panic| Err(loader::LoadError::Panicked(panic)))
        // The manager boundary: from here on a refusal is the reason operators read.
        .map_err(|e| e.to_string());
        match result {
            Ok(None) => {}
            Ok(Some(loaded)) => {
                let replacing = current.is_some();
                tracing::info!(
                    model, version = v, provider = loaded.provider, sha256 = %loaded.sha256,
                    instances = settings.runtime.instances, max_batch_size = loaded.max_batch_size,
                    ms = started.elapsed().as_millis() as u64,
                    "{}", if replacing { "model version reloaded and swapped in" } else { "model version ready" }
                );
                metrics::record_load(model, started.elapsed(), true);
                metrics::set_version_ready(model, v, true);
                if self.initial_load_done() {
                    metrics::record_swap(model);
                }
                let loaded = Arc::new(loaded);
                self.publish(|t| {
                    let e = t.models.entry(model.to_string()).or_default();
                    e.versions.insert(v, VersionState::Ready(loaded.clone()));
                    e.refused.remove(&v);
                });
                // The replaced version is freed when its last in-flight request ends.
                drop(current);
            }
            Err(reason) => {
                ok = false;
                metrics::record_load(model, started.elapsed(), false);
                if current.is_some() {
                    tracing::error!(model, version = v, %reason, "new model file refused; the previous one keeps serving");
                    self.publish(|t| {
                        t.models
                            .entry(model.to_string())
                            .or_default()
                            .refused
                            .insert(v, reason.clone());
                    });
                } else {
                    tracing::error!(model, version = v, %reason, "model version failed to load");
                    metrics::set_version_ready(model, v, false);
                    self.publish(|t| {
                        t.models
                            .entry(model.to_string())
                            .or_default()
                            .versions
                            .insert(v, VersionState::Failed(reason.clone()));
                    });
                }
            }
        }
        self.update_loaded_gauge(model);
        ok
    }

    fn update_loaded_gauge(&self, model: &str) {
        let ready = self
            .snapshot()
            .models
            .get(model)
            .map_or(0, |e| e.ready_versions().count());
        metrics::set_versions_loaded(model, ready);
    }

    /// Takes versions out of service, then waits (up to the drain timeout) for the requests
    /// they already have before forgetting them.
    fn unload_versions(&self, model: &str, versions: &[u64]) {
        // Only the manager writes the table (under the control lock), so this snapshot is current.
        let draining: Vec<Arc<LoadedVersion>> = self
            .snapshot()
            .models
            .get(model)
            .map(|e| {
                versions
                    .iter()
                    .filter_map(|v| match e.versions.get(v) {
                        Some(VersionState::Ready(lv)) => Some(lv.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.publish(|t| {
            if let Some(e) = t.models.get_mut(model) {
                for v in versions {
                    if let Some(state) = e.versions.get_mut(v) {
                        *state = VersionState::Unloading;
                    }
                }
            }
        });
        let deadline = Instant::now() + self.options.drain_timeout;
        for lv in draining {
            // Its skew, quality and age gauges would otherwise keep their last values (and keep
            // alerts firing) for a version that no longer serves.
            lv.monitor.retire();
            // The table no longer holds it; what remains are in-flight requests (and `draining`).
            while Arc::strong_count(&lv) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            let version = lv.version;
            match Arc::try_unwrap(lv) {
                // The worker threads own the sessions: wait for them to drop those, so the
                // memory is free before it is handed back below.
                Ok(lv) => {
                    if !lv.scheduler.stop(self.options.drain_timeout) {
                        tracing::warn!(
                            model,
                            version,
                            "drain timeout: the worker threads are still finishing; their sessions are freed when they end"
                        );
                    }
                }
                Err(_) => tracing::warn!(
                    model,
                    version,
                    "drain timeout: requests still in flight keep the version alive"
                ),
            }
        }
        self.publish(|t| {
            if let Some(e) = t.models.get_mut(model) {
                for v in versions {
                    e.versions.remove(v);
                    e.refused.remove(v);
                }
            }
        });
        for &v in versions {
            metrics::set_version_ready(model, v, false);
            tracing::info!(model, version = v, "model version unloaded");
        }
        self.update_loaded_gauge(model);
        release_memory();
    }

    fn remove_model(&self, control: &mut Control, model: &str) {
        let versions: Vec<u64> = self
            .snapshot()
            .models
            .get(model)
            .map(|e| e.versions.keys().copied().collect())
            .unwrap_or_default();
        self.unload_versions(model, &versions);
        // Under the routing lock, so no concurrent apply sets the gauges again after they are
        // zeroed.
        let _routing = self.routing_lock();
        let last = self
            .snapshot()
            .models
            .get(model)
            .and_then(|e| e.rollout.clone());
        self.publish(|t| {
            t.models.remove(model);
        });
        if let Some(live) = last {
            controller::forget(model, &live.state);
        }
        control.models.remove(model);
    }

    /// The version that serves a request for `model` (and `version`, when the caller named one).
    pub fn resolve(&self, model: &str, version: Option<u64>) -> Result<Arc<LoadedVersion>> {
        self.live.load().resolve(model, version)
    }

    /// True once the initial load finished; with `strict`, also every selected version is ready.
    pub fn ready(&self, strict: bool) -> bool {
        self.initial_load_done() && (!strict || self.live.load().all_ready())
    }

    /// Every model and version with its state, for the status API, the operator CLI and the
    /// repository index.
    pub fn status(&self) -> Vec<VersionStatus> {
        status::rows(&self.snapshot())
    }
}

/// Runs `f`, turning a panic into its message (a load must never leave a version `Loading`).
fn catch_panic<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// Hands memory freed by unloaded sessions back to the operating system, so RSS falls after an
/// unload instead of staying at its peak (glibc keeps freed arenas otherwise).
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(catch_panic(|| 7), Ok(7));
        let e = catch_panic(|| -> u8 { panic!("a static message") }).unwrap_err();
        assert_eq!(e, "a static message");
        let e = catch_panic(|| -> u8 { panic!("{} is not a version", "x") }).unwrap_err();
        assert_eq!(e, "x is not a version");
    }
}

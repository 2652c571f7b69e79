//! The protocol-agnostic API the front ends call: health, metadata, inference. REST and gRPC are
//! thin adapters over this, so they share every rule, message and metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::core::infer::{
    InferRequest, InferResponse, ParamValue, Parameters, Protocol, ROUTING_KEY, parse_version,
};
use crate::core::signature::TensorSpec;
use crate::error::{Error, Result};
use crate::models::{ControlMode, LoadedVersion, ModelManager, VersionStatus};
use crate::monitoring::{Monitoring, metrics};
use crate::registry;
use crate::routing::window::{Outcome, Variant};
use crate::routing::{self, LiveRollout, Route, compare};

pub const SERVER_NAME: &str = "switchyard";
pub const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `platform` model metadata reports, as Triton does for ONNX models.
pub const PLATFORM: &str = "onnxruntime_onnx";

/// Protocol extensions this server implements (server metadata `extensions`).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "schedule_policy", "model_repository"];

#[derive(Debug, Clone)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// How the version is served: execution provider, instances, batching.
    pub parameters: Parameters,
}

/// One row of the repository index: a model version (or a model that failed as a whole).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    /// Empty for a model-level failure.
    pub version: String,
    pub state: &'static str,
    pub reason: String,
}

/// Records a request as cancelled if dropped (the caller went away) before it finished.
/// Under a rollout, a caller that gave up waiting also counts against the variant that kept it
/// waiting: a candidate that hangs must fail its analysis, not stay inconclusive for ever.
struct CancelGuard<'a> {
    /// `None` once the request finished normally.
    target: Option<&'a LoadedVersion>,
    protocol: Protocol,
    started: Instant,
    rollout: Option<(&'a LiveRollout, Variant)>,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.target {
            if let Some((live, variant)) = self.rollout {
                live.window
                    .record(variant, Outcome::ServerError, self.started.elapsed());
            }
            t.requests
                .record(self.protocol, "cancelled", self.started.elapsed());
        }
    }
}

/// A model name from a caller, refused (400 / INVALID_ARGUMENT) unless the registry allows it.
fn check_name(model: &str) -> Result<()> {
    registry::validate_model_name(model).map_err(|e| Error::invalid(e.to_string()))
}

/// The refusal when the server already handles `--max-concurrent-requests` inference requests.
pub fn server_busy(limit: usize) -> Error {
    Error::Overloaded(format!(
        "the server is handling its maximum of {limit} concurrent inference requests \
         (--max-concurrent-requests); retry later"
    ))
}

pub struct Service {
    models: Arc<ModelManager>,
    strict_readiness: bool,
    shutting_down: AtomicBool,
    monitoring: Arc<Monitoring>,
}

impl Service {
    pub fn new(models: Arc<ModelManager>, strict_readiness: bool, monitoring: Monitoring) -> Self {
        Self {
            models,
            strict_readiness,
            shutting_down: AtomicBool::new(false),
            monitoring: Arc::new(monitoring),
        }
    }

    /// Capture, feedback store: the server-wide side of monitoring.
    pub fn monitoring(&self) -> &Monitoring {
        &self.monitoring
    }

    pub fn models(&self) -> &Arc<ModelManager> {
        &self.models
    }

    /// The process is up and answering.
    pub fn live(&self) -> bool {
        true
    }

    /// Ready for traffic: the initial load is done (and, with strict readiness, every model is
    /// ready) and the server is not draining.
    pub fn ready(&self) -> bool {
        !self.shutting_down.load(Ordering::Acquire) && self.models.ready(self.strict_readiness)
    }

    /// Readiness turns false first, so load balancers stop sending before the listeners close.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Every call that takes a model name from a caller checks it first, before any lookup or
    /// file system access (metadata, readiness and inference go through `resolve`).
    pub fn resolve(&self, model: &str, version: &str) -> Result<Arc<LoadedVersion>> {
        check_name(model)?;
        self.models.resolve(model, parse_version(model, version)?)
    }

    /// Whether `model` (at `version`, or any version) can take requests now. Unknown models and
    /// versions are errors, so callers can tell "not ready" from "no such thing".
    pub fn model_ready(&self, model: &str, version: &str) -> Result<bool> {
        match self.resolve(model, version) {
            Ok(_) => Ok(true),
            Err(Error::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn require_explicit(&self, action: &str, model: &str) -> Result<()> {
        match self.models.mode() {
            ControlMode::Explicit => Ok(()),
            mode => Err(Error::FailedPrecondition(format!(
                "cannot {action} '{model}': the model control mode is '{}', where {}; \
                 start the server with --model-control-mode explicit to load and unload through the API",
                mode.as_str(),
                if mode == ControlMode::Poll {
                    "the registry decides what is loaded"
                } else {
                    "the registry is loaded once at start"
                }
            ))),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ModelManager) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let models = self.models.clone();
        tokio::task::spawn_blocking(move || f(&models))
            .await
            .map_err(|e| Error::Internal(format!("model control task failed: {e}")))?
    }

    /// Loads (or reloads what changed of) a model, off the serving path; returns once it serves.
    pub async fn load_model(&self, model: &str) -> Result<()> {
        check_name(model)?;
        self.require_explicit("load", model)?;
        let name = model.to_string();
        self.blocking(move |m| m.load_model(&name)).await
    }

    /// Unloads a model after the requests it has in flight.
    pub async fn unload_model(&self, model: &str) -> Result<()> {
        check_name(model)?;
        self.require_explicit("unload", model)?;
        let name = model.to_string();
        self.blocking(move |m| m.unload_model(&name)).await
    }

    /// Pins (or with `None` unpins) the version that serves requests naming none.
    pub async fn promote(&self, model: &str, version: Option<u64>) -> Result<Option<u64>> {
        check_name(model)?;
        let name = model.to_string();
        self.blocking(move |m| m.promote(&name, version)).await
    }

    /// The model's rollout (current or last) as the admin API shows it.
    pub fn rollout_status(&self, model: &str) -> Result<serde_json::Value> {
        check_name(model)?;
        let table = self.models.snapshot();
        let entry = table
            .models
            .get(model)
            .ok_or_else(|| Error::NotFound(format!("unknown model '{model}'")))?;
        let live = entry
            .rollout
            .as_ref()
            .ok_or_else(|| routing::controller::no_rollout(model))?;
        let mut status = routing::status_json(model, entry.pinned, live);
        let (stable, candidate) = (live.state.stable, live.state.candidate());
        let quality = |v: u64| {
            entry
                .ready(v)
                .map(|lv| lv.monitor.quality(routing::now_ms()))
        };
        status["quality"] = quality_comparison(quality(stable), quality(candidate));
        Ok(status)
    }

    /// Starts a rollout (validated; the registry write runs off the serving threads).
    pub async fn start_rollout(
        &self,
        model: &str,
        spec: routing::RolloutSpec,
    ) -> Result<serde_json::Value> {
        check_name(model)?;
        let name = model.to_string();
        self.blocking(move |m| routing::controller::start(m, &name, spec).map(|_| ()))
            .await?;
        self.rollout_status(model)
    }

    /// Pauses, resumes, promotes or aborts the model's rollout.
    pub async fn rollout_action(
        &self,
        model: &str,
        action: routing::controller::Action,
    ) -> Result<serde_json::Value> {
        check_name(model)?;
        let name = model.to_string();
        self.blocking(move |m| routing::controller::act(m, &name, action).map(|_| ()))
            .await?;
        self.rollout_status(model)
    }

    /// Joins feedback labels with the predictions of the requests they name.
    pub fn feedback(&self, model: &str, body: &[u8]) -> Result<serde_json::Value> {
        check_name(model)?;
        if !self.models.snapshot().models.contains_key(model) {
            return Err(Error::NotFound(format!("unknown model '{model}'")));
        }
        if !self.monitoring.enabled {
            return Err(Error::FailedPrecondition(
                "feedback needs monitoring: the server runs with --monitoring off".into(),
            ));
        }
        let items = crate::monitoring::feedback::parse_feedback(body)
            .map_err(|e| Error::invalid(format!("feedback: {e}")))?;
        let outcome = self
            .monitoring
            .feedback
            .join(model, items, routing::now_ms());
        serde_json::to_value(&outcome)
            .map_err(|e| Error::Internal(format!("cannot encode the feedback outcome: {e}")))
    }

    /// The skew of a loaded version over its window, against its baseline.json.
    pub fn skew_report(&self, model: &str, version: &str) -> Result<serde_json::Value> {
        check_name(model)?;
        let named = parse_version(model, version)?;
        let target = self.models.snapshot().resolve(model, named)?;
        if !self.monitoring.enabled {
            return Err(Error::FailedPrecondition(
                "skew is not computed: the server runs with --monitoring off".into(),
            ));
        }
        let (report, window) = target
            .monitor
            .skew_report(routing::now_ms())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "model '{model}' version {} has no {}, so no skew is computed for it",
                    target.version,
                    crate::monitoring::BASELINE_FILE
                ))
            })?;
        let mut value = serde_json::to_value(&report)
            .map_err(|e| Error::Internal(format!("cannot encode the skew report: {e}")))?;
        if let Some(obj) = value.as_object_mut() {
            obj.insert("model".into(), model.into());
            obj.insert("version".into(), target.version.into());
            obj.insert("window_seconds".into(), window.as_secs_f64().into());
        }
        Ok(value)
    }

    /// Sets every loaded version's monitoring gauges (skew, quality, age) for a scrape.
    pub fn export_monitoring(&self) {
        let now = routing::now_ms();
        for entry in self.models.snapshot().models.values() {
            for v in entry.ready_versions() {
                v.monitor.export(now);
            }
        }
    }

    pub fn status(&self) -> Vec<VersionStatus> {
        self.models.status()
    }

    /// Every model and version the server knows, with its state (the repository extension's
    /// index). `ready_only` keeps the ready ones. The rows are the manager's status rows, so the
    /// index, the status API and the CLI always agree.
    pub fn repository_index(&self, ready_only: bool) -> Vec<IndexEntry> {
        self.models
            .status()
            .into_iter()
            .filter(|row| !ready_only || row.state == "READY")
            .map(|row| IndexEntry {
                name: row.model,
                version: row.version.map(|v| v.to_string()).unwrap_or_default(),
                state: row.state,
                reason: row.reason,
            })
            .collect()
    }

    pub fn model_metadata(&self, model: &str, version: &str) -> Result<ModelMetadata> {
        let target = self.resolve(model, version)?;
        let table = self.models.snapshot();
        let versions = table
            .models
            .get(model)
            .map(|m| m.ready_versions().map(|v| v.version.to_string()).collect())
            .unwrap_or_default();
        let mut parameters = Parameters::new();
        let p = |s: &str| ParamValue::String(s.to_string());
        parameters.insert("version".into(), p(&target.version.to_string()));
        parameters.insert("execution_provider".into(), p(target.provider));
        parameters.insert(
            "device".into(),
            p(&target.settings.runtime.device.to_string()),
        );
        parameters.insert(
            "instances".into(),
            ParamValue::Int(target.settings.runtime.instances as i64),
        );
        parameters.insert(
            "max_batch_size".into(),
            ParamValue::Int(target.max_batch_size as i64),
        );
        parameters.insert("sha256".into(), p(&target.sha256));
        Ok(ModelMetadata {
            name: target.model.clone(),
            versions,
            platform: PLATFORM,
            inputs: target.signature.inputs.clone(),
            outputs: target.signature.outputs.clone(),
            parameters,
        })
    }

    /// Counts a request refused before it was read (server-wide admission), under the model's
    /// name when the server has it.
    pub fn record_refused(&self, protocol: Protocol, started: Instant, model: &str, e: &Error) {
        let known = self.models.snapshot().models.contains_key(model);
        let label = if known { model } else { metrics::UNKNOWN_MODEL };
        metrics::record_request(label, "", protocol, e.label(), started.elapsed());
    }

    /// Chooses the version that answers a request: the one the caller named, else the model's
    /// rollout split (when one is running or paused), else the default version. `header` reads a
    /// request header (the A/B key may be one); the `routing_key` parameter of `request` is the
    /// other place a sticky key can come from.
    pub fn route(
        &self,
        model: &str,
        version: &str,
        header: &dyn Fn(&str) -> Option<String>,
        request: Option<&InferRequest>,
    ) -> Result<Route> {
        check_name(model)?;
        let named = parse_version(model, version)?;
        let table = self.models.snapshot();
        if named.is_none()
            && let Some(entry) = table.models.get(model)
            && let Some(live) = entry.active_rollout()
        {
            let spec = &live.state.spec;
            let key = if spec.kind == routing::Kind::Ab {
                let param = match request.and_then(|r| r.parameters.get(ROUTING_KEY)) {
                    None => None,
                    Some(ParamValue::String(k)) => Some(k.clone()),
                    Some(ParamValue::Int(k)) => Some(k.to_string()),
                    Some(ParamValue::Uint(k)) => Some(k.to_string()),
                    Some(other) => {
                        return Err(Error::invalid(format!(
                            "parameter '{ROUTING_KEY}' must be a string or an integer, got {other:?}"
                        )));
                    }
                };
                spec.sticky_header.as_deref().and_then(header).or(param)
            } else {
                None
            };
            if let Some(route) =
                routing::split::route(live, key.as_deref(), |v| entry.ready(v).cloned())
            {
                return Ok(route);
            }
        }
        table.resolve(model, named).map(Route::direct)
    }

    /// Runs one inference on a version the front end already routed (REST routes before
    /// reading the body, so an unknown model or a full queue costs no decoding). `request` is what
    /// the front end decoded: its error, if decoding failed, is reported after the routing error,
    /// so an unknown model is always a 404. Every call is counted in the request metrics,
    /// `started` being when the request arrived. Also says which
    /// side of a rollout answered (`None` outside rollouts), errors included, for the front ends'
    /// `x-switchyard-variant`.
    pub async fn infer_on(
        &self,
        protocol: Protocol,
        started: Instant,
        model: &str,
        route: Result<Route>,
        request: Result<InferRequest>,
    ) -> (Result<InferResponse>, Option<Variant>) {
        let (target, variant, rollout, copy) = match route {
            Ok(r) => (Ok(r.target), r.variant, r.rollout, r.copy),
            Err(e) => (Err(e), None, None, None),
        };
        // If the caller goes away mid-request this future is dropped: count it as cancelled.
        let mut cancelled = CancelGuard {
            target: target.as_deref().ok(),
            protocol,
            started,
            // Only where both variants face callers alike (not shadow, not a 100% step), so a
            // cancellation never weighs on one side only.
            rollout: rollout
                .as_deref()
                .filter(|l| l.state.spec.kind != routing::Kind::Shadow && l.state.weight() < 1.0)
                .zip(variant),
        };
        let result = match (&target, request) {
            (Err(e), _) => Err(e.clone()),
            (Ok(_), Err(e)) => Err(e),
            (Ok(t), Ok(req)) => {
                // A copy's version half full: shed before anything is cloned for it.
                let copy = copy.filter(|c| !shed_copy(c));
                let copy_of = copy.as_ref().map(|_| req.clone());
                let large = offload_monitoring(&req);
                let watch = maybe_blocking(large, || t.monitor.watch(&req, &self.monitoring));
                // The analysis compares the versions' own time (queue and run), measured the
                // same way for callers and copies: not the caller's upload and decoding.
                let ran = Instant::now();
                let result = t.infer(req).await;
                maybe_blocking(large, || {
                    t.monitor
                        .observe(watch, &result, variant, started.elapsed(), &self.monitoring)
                });
                if let (Some(live), Some(v)) = (&rollout, variant) {
                    observe_variant(live, v, &result, ran.elapsed());
                    // Shadow copies take only spare capacity: when callers wait for the version
                    // that answered this one, a copy would take CPU from them. One in ten runs
                    // anyway, so the analysis still progresses under sustained load.
                    let shadow = live.state.spec.kind == routing::Kind::Shadow;
                    let copy = copy.filter(|c| {
                        let busy = shadow && t.scheduler.queued() > 0 && fastrand::u8(..10) != 0;
                        if busy {
                            metrics::record_shadow(&c.model, "shed");
                        }
                        !busy
                    });
                    if let (Ok(resp), Some(copy), Some(req)) = (&result, copy, copy_of) {
                        spawn_copy(
                            live.clone(),
                            v,
                            t.clone(),
                            copy,
                            req,
                            &resp.outputs,
                            self.monitoring.clone(),
                        );
                    }
                }
                result
            }
        };
        cancelled.target = None;
        let outcome = match &result {
            Ok(_) => "success",
            Err(e) => e.label(),
        };
        match &target {
            Ok(t) => t.requests.record(protocol, outcome, started.elapsed()),
            Err(_) => {
                let known = self.models.snapshot().models.contains_key(model);
                let label = if known { model } else { metrics::UNKNOWN_MODEL };
                metrics::record_request(label, "", protocol, outcome, started.elapsed());
            }
        }
        if let Err(e) = &result {
            tracing::debug!(model, protocol = protocol.as_str(), error = %e, "inference failed");
        }
        (result, variant)
    }
}

/// Elements beyond which a request's monitoring (binning every value, copying it for capture)
/// is worth moving off the async threads: the same size the REST front end decodes off them.
const OFFLOAD_ELEMENTS: usize = 64 * 1024;

fn offload_monitoring(req: &InferRequest) -> bool {
    req.inputs.iter().map(|t| t.data.len()).sum::<usize>() > OFFLOAD_ELEMENTS
        && tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Runs `f` in place, telling the runtime to move other tasks off this thread when `blocking`
/// (so a large request's binning never stalls everyone else's small ones).
fn maybe_blocking<T>(blocking: bool, f: impl FnOnce() -> T) -> T {
    if blocking {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// Sheds (and counts) a copy whose version's queue is half full.
fn shed_copy(copy: &LoadedVersion) -> bool {
    let shed = copy.scheduler.half_full();
    if shed {
        metrics::record_shadow(&copy.model, "shed");
    }
    shed
}

/// Counts one request a variant of a rollout ran (a caller's or a copy) in the open interval.
/// Failures of the caller's own making (bad inputs) say nothing of the version: not counted; but
/// inputs that fit the signature and that the version refused at run time are its failure.
fn observe_variant(
    live: &LiveRollout,
    variant: Variant,
    result: &Result<InferResponse>,
    elapsed: Duration,
) {
    let outcome = match result {
        Ok(resp) => {
            let (rows, non_finite_rows) = compare::non_finite_rows(&resp.outputs);
            Outcome::Answered {
                rows,
                non_finite_rows,
            }
        }
        Err(e) if e.fails_the_version() => Outcome::ServerError,
        Err(_) => return,
    };
    live.window.record(variant, outcome, elapsed);
}

#[allow(clippy::too_many_arguments)]
/// Runs a copy of a request on the other variant after the caller has its answer, and compares
/// the two answers. Never delays or fails the caller: it runs in its own task, and is shed
/// (counted) when the other version's queue is half full.
fn spawn_copy(
    live: Arc<LiveRollout>,
    served: Variant,
    answered_by: Arc<LoadedVersion>,
    copy: Arc<LoadedVersion>,
    request: InferRequest,
    answer: &[crate::core::tensor::Tensor],
    monitoring: Arc<Monitoring>,
) {
    let stable_task = match served {
        Variant::Stable => answered_by.monitor.card().task.clone(),
        Variant::Candidate => copy.monitor.card().task.clone(),
    };
    let answer = answer.to_vec();
    tokio::spawn(async move {
        let started = Instant::now();
        // The copy's version sees its traffic in its skew window and capture too (a shadow
        // candidate's predictions are what the capture is for), but its answer reached nobody,
        // so no feedback can ever name it.
        let watch = copy
            .monitor
            .watch(&request, &monitoring)
            .map(|w| w.no_feedback());
        let result = copy.infer(request).await;
        let other = served.other();
        copy.monitor
            .observe(watch, &result, Some(other), started.elapsed(), &monitoring);
        observe_variant(&live, other, &result, started.elapsed());
        match result {
            Ok(resp) => {
                metrics::record_shadow(&copy.model, "answered");
                let measure = compare::Measure::from_task(stable_task.as_deref());
                let (stable, candidate) = match served {
                    Variant::Stable => (&answer, &resp.outputs),
                    Variant::Candidate => (&resp.outputs, &answer),
                };
                live.window.compare(|a| a.add(measure, stable, candidate));
            }
            Err(e) => {
                metrics::record_shadow(&copy.model, "failed");
                tracing::debug!(model = %copy.model, version = copy.version, error = %e, "copy of a request failed");
            }
        }
    });
}

/// The two variants of a rollout compared on real outcomes (feedback labels over the quality
/// window): each side's live figures and, for classifiers when both have labels, the p-value of a
/// two-proportion test that their accuracies are equal.
fn quality_comparison(
    stable: Option<crate::monitoring::quality::QualitySummary>,
    candidate: Option<crate::monitoring::quality::QualitySummary>,
) -> serde_json::Value {
    use crate::monitoring::quality::two_proportion_p_value;
    let side = |q: &Option<crate::monitoring::quality::QualitySummary>| {
        q.as_ref().map(|q| {
            serde_json::json!({
                "labels": q.labels,
                "accuracy": q.accuracy,
                "mae": q.mae,
                "rmse": q.rmse,
            })
        })
    };
    let p_value = match (&stable, &candidate) {
        (Some(s), Some(c)) if s.accuracy.is_some() && c.accuracy.is_some() => {
            two_proportion_p_value(s.correct, s.labels, c.correct, c.labels)
        }
        _ => None,
    };
    serde_json::json!({
        "stable": side(&stable),
        "candidate": side(&candidate),
        "accuracy_p_value": p_value,
    })
}

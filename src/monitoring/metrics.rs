//! Prometheus metrics (`metrics` facade + `metrics-exporter-prometheus`), rendered at `/metrics`.
//!
//! Names carry the `switchyard_` prefix and base units; labels are bounded: `model` and `version`
//! come from the registry (never from a caller's unknown model name), `protocol` and `outcome`
//! from fixed sets. The semantics follow Triton's where both have the metric: inference rows vs
//! executions give the average batch size.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::core::infer::Protocol;

pub const REQUESTS: &str = "switchyard_requests_total";
pub const REQUEST_DURATION: &str = "switchyard_request_duration_seconds";
pub const QUEUE_DURATION: &str = "switchyard_queue_duration_seconds";
pub const COMPUTE_DURATION: &str = "switchyard_compute_duration_seconds";
pub const INFERENCE_ROWS: &str = "switchyard_inference_rows_total";
pub const EXECUTIONS: &str = "switchyard_executions_total";
pub const BATCH_SIZE: &str = "switchyard_batch_size_rows";
pub const PENDING: &str = "switchyard_pending_requests";
pub const MODEL_READY: &str = "switchyard_model_version_ready";
pub const LOAD_DURATION: &str = "switchyard_model_load_duration_seconds";
pub const LOAD_FAILURES: &str = "switchyard_model_load_failures_total";
pub const SWAPS: &str = "switchyard_model_swaps_total";
pub const VERSIONS_LOADED: &str = "switchyard_model_versions_loaded";
pub const CONNECTION_ERRORS: &str = "switchyard_connection_errors_total";
pub const AUTH_REFUSALS: &str = "switchyard_auth_refusals_total";
pub const BATCH_FALLBACKS: &str = "switchyard_batch_fallbacks_total";
pub const ROLLOUT_WEIGHT: &str = "switchyard_rollout_weight";
pub const ROLLOUT_STATE: &str = "switchyard_rollout_state";
pub const ROLLOUT_ANALYSIS: &str = "switchyard_rollout_analysis_total";
pub const DISAGREEMENT: &str = "switchyard_prediction_disagreement";
pub const SHADOW_REQUESTS: &str = "switchyard_shadow_requests_total";
pub const DEPLOYMENTS: &str = "switchyard_deployments_total";
pub const ROLLBACK_SECONDS: &str = "switchyard_rollback_seconds";
pub const LEAD_TIME: &str = "switchyard_deployment_lead_time_seconds";
pub const FEATURE_SKEW: &str = "switchyard_feature_skew";
pub const FEATURE_SKEW_ALERT: &str = "switchyard_feature_skew_alert";
pub const FEATURE_SKEW_ROWS: &str = "switchyard_feature_skew_rows";
pub const MODEL_QUALITY_HELDOUT: &str = "switchyard_model_quality_heldout";
pub const MODEL_AGE: &str = "switchyard_model_age_seconds";
pub const REGISTRY_ERRORS: &str = "switchyard_registry_errors_total";

/// The `model` label for requests naming a model the server does not have: keeps cardinality
/// bounded whatever callers send.
pub const UNKNOWN_MODEL: &str = "_unknown";

const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];
const LOAD_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const ROLLBACK_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(LOAD_DURATION.into()), LOAD_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), BATCH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ROLLBACK_SECONDS.into()),
                        ROLLBACK_BUCKETS,
                    )
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            describe();
            describe_front_ends();
            describe_rollouts();
            describe_monitoring();
            init_registry_errors();
            // Histograms buffer samples until drained; drain them even if nobody scrapes.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("sy-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Inference requests by model, version, protocol and outcome (success or an error label)."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from receiving an inference request to having its response ready."
    );
    describe_histogram!(
        QUEUE_DURATION,
        Unit::Seconds,
        "Time a request waited in its version's queue before its batch ran."
    );
    describe_histogram!(
        COMPUTE_DURATION,
        Unit::Seconds,
        "Time one model execution (a batch) took, inputs and outputs included."
    );
    describe_counter!(
        INFERENCE_ROWS,
        "Rows inferred (a batch of n rows counts n), as Triton's nv_inference_count."
    );
    describe_counter!(
        EXECUTIONS,
        "Model executions (batches), as Triton's nv_inference_exec_count."
    );
    describe_histogram!(BATCH_SIZE, "Rows per model execution.");
    describe_gauge!(PENDING, "Requests waiting in a version's queue.");
    describe_gauge!(
        MODEL_READY,
        "1 when a model version is loaded and ready, 0 otherwise."
    );
    describe_histogram!(
        LOAD_DURATION,
        Unit::Seconds,
        "Time to load, check and warm a model version."
    );
    describe_counter!(
        LOAD_FAILURES,
        "Model versions that failed to load (including refused reloads)."
    );
    describe_counter!(
        SWAPS,
        "Versions swapped into service after the initial load (new versions and reloads)."
    );
    describe_gauge!(VERSIONS_LOADED, "Ready versions of a model.");
    describe_counter!(
        BATCH_FALLBACKS,
        "Merged batches that failed and were rerun request by request (a model whose outputs \
         are not batch-major fails every merged batch)."
    );
}

/// Counts one finished inference request.
pub fn record_request(
    model: &str,
    version: &str,
    protocol: Protocol,
    outcome: &'static str,
    elapsed: Duration,
) {
    let model = model.to_string();
    let version = version.to_string();
    let protocol = protocol.as_str();
    metrics::counter!(REQUESTS, "model" => model.clone(), "version" => version.clone(),
        "protocol" => protocol, "outcome" => outcome)
    .increment(1);
    metrics::histogram!(REQUEST_DURATION, "model" => model, "version" => version, "protocol" => protocol)
        .record(elapsed.as_secs_f64());
}

/// One version's request counters and latency histograms, by protocol: the handles of the
/// common case (a success) are made once at load, so a request costs no label strings and no
/// registry lookup; other outcomes take `record_request`.
pub struct RequestMetrics {
    model: String,
    version: String,
    /// Indexed by `protocol_index`.
    success: [Counter; 2],
    duration: [Histogram; 2],
}

fn protocol_index(p: Protocol) -> usize {
    match p {
        Protocol::Http => 0,
        Protocol::Grpc => 1,
    }
}

impl RequestMetrics {
    pub fn new(model: &str, version: u64) -> Self {
        let version = version.to_string();
        let handles = |p: Protocol| {
            let labels = [
                ("model", model.to_string()),
                ("version", version.clone()),
                ("protocol", p.as_str().to_string()),
            ];
            let mut with_outcome = labels.to_vec();
            with_outcome.push(("outcome", "success".to_string()));
            (
                metrics::counter!(REQUESTS, &with_outcome),
                metrics::histogram!(REQUEST_DURATION, &labels),
            )
        };
        let (http_ok, http_time) = handles(Protocol::Http);
        let (grpc_ok, grpc_time) = handles(Protocol::Grpc);
        Self {
            model: model.to_string(),
            version,
            success: [http_ok, grpc_ok],
            duration: [http_time, grpc_time],
        }
    }

    /// Counts one request of this version, as `record_request` does.
    pub fn record(&self, protocol: Protocol, outcome: &'static str, elapsed: Duration) {
        let i = protocol_index(protocol);
        if outcome == "success" {
            self.success[i].increment(1);
        } else {
            metrics::counter!(REQUESTS, "model" => self.model.clone(), "version" => self.version.clone(),
                "protocol" => protocol.as_str(), "outcome" => outcome)
            .increment(1);
        }
        self.duration[i].record(elapsed.as_secs_f64());
    }
}

/// Handles for one loaded version's scheduler metrics, created once at load.
#[derive(Clone)]
pub struct VersionMetrics {
    pub queue_duration: Histogram,
    pub compute_duration: Histogram,
    pub inference_rows: Counter,
    pub executions: Counter,
    pub batch_size: Histogram,
    pub pending: Gauge,
    pub batch_fallbacks: Counter,
}

impl VersionMetrics {
    pub fn new(model: &str, version: u64) -> Self {
        let labels = [
            ("model", model.to_string()),
            ("version", version.to_string()),
        ];
        Self {
            queue_duration: metrics::histogram!(QUEUE_DURATION, &labels),
            compute_duration: metrics::histogram!(COMPUTE_DURATION, &labels),
            inference_rows: metrics::counter!(INFERENCE_ROWS, &labels),
            executions: metrics::counter!(EXECUTIONS, &labels),
            batch_size: metrics::histogram!(BATCH_SIZE, &labels),
            pending: metrics::gauge!(PENDING, &labels),
            batch_fallbacks: metrics::counter!(BATCH_FALLBACKS, &labels),
        }
    }

    /// Handles that record nowhere, for schedulers outside a server (tests, benchmarks).
    pub fn noop() -> Self {
        Self {
            queue_duration: Histogram::noop(),
            compute_duration: Histogram::noop(),
            inference_rows: Counter::noop(),
            executions: Counter::noop(),
            batch_size: Histogram::noop(),
            pending: Gauge::noop(),
            batch_fallbacks: Counter::noop(),
        }
    }
}

pub fn set_version_ready(model: &str, version: u64, ready: bool) {
    metrics::gauge!(MODEL_READY, "model" => model.to_string(), "version" => version.to_string())
        .set(if ready { 1.0 } else { 0.0 });
}

pub fn record_load(model: &str, elapsed: Duration, ok: bool) {
    metrics::histogram!(LOAD_DURATION, "model" => model.to_string()).record(elapsed.as_secs_f64());
    let failures = metrics::counter!(LOAD_FAILURES, "model" => model.to_string());
    failures.increment(if ok { 0 } else { 1 });
}

/// The operations of a registry that can fail against a remote store.
const REGISTRY_OPERATIONS: [&str; 4] = ["list", "get", "head", "put"];

/// Shows the registry error counters at 0 from the start, so a rate and an alert on them have a
/// series before the first failure.
pub fn init_registry_errors() {
    for op in REGISTRY_OPERATIONS {
        metrics::counter!(REGISTRY_ERRORS, "operation" => op).increment(0);
    }
}

/// One failed store call (after the store client's own retries).
pub fn record_registry_error(operation: &'static str) {
    metrics::counter!(REGISTRY_ERRORS, "operation" => operation).increment(1);
}

pub fn record_swap(model: &str) {
    metrics::counter!(SWAPS, "model" => model.to_string()).increment(1);
}

pub fn set_versions_loaded(model: &str, n: usize) {
    metrics::gauge!(VERSIONS_LOADED, "model" => model.to_string()).set(n as f64);
}

fn describe_front_ends() {
    metrics::describe_counter!(
        CONNECTION_ERRORS,
        "Connections closed by the server before a request: reason tls_handshake, \
         handshake_timeout or read_timeout (headers not received in time, or an idle keep-alive)."
    );
    metrics::describe_counter!(
        AUTH_REFUSALS,
        "Calls refused by the access policy, by protocol, scope and reason \
         (missing_token, invalid_token, not_loopback)."
    );
}

pub fn record_connection_error(protocol: &'static str, reason: &'static str) {
    metrics::counter!(CONNECTION_ERRORS, "protocol" => protocol, "reason" => reason).increment(1);
}

pub fn record_auth_refusal(protocol: &'static str, scope: &'static str, reason: &'static str) {
    metrics::counter!(AUTH_REFUSALS, "protocol" => protocol, "scope" => scope, "reason" => reason)
        .increment(1);
}

fn describe_rollouts() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        ROLLOUT_WEIGHT,
        "Share of a model's callers each version of its rollout gets (0..1); after the rollout, \
         1 for the version it left serving."
    );
    describe_gauge!(
        ROLLOUT_STATE,
        "1 for the state of a model's current or last rollout (running, paused, succeeded, \
         aborted), 0 for the others."
    );
    describe_counter!(
        ROLLOUT_ANALYSIS,
        "Rollout checks decided by this replica, by check and result (pass, fail, inconclusive)."
    );
    describe_gauge!(
        DISAGREEMENT,
        "Prediction disagreement between stable and candidate in the last decided interval: \
         fraction of rows (classifiers) or mean difference over stable's spread (regressors)."
    );
    describe_counter!(
        SHADOW_REQUESTS,
        "Copies of requests run on the other version of a rollout (shadow traffic and compared \
         samples), by outcome: answered, shed (its queue half full) or failed."
    );
    describe_counter!(
        DEPLOYMENTS,
        "Rollouts ended by this replica, by outcome (succeeded, aborted): the change failure rate \
         is aborted / all."
    );
    describe_histogram!(
        ROLLBACK_SECONDS,
        Unit::Seconds,
        "Time to restore: from the end of the interval that failed (or the operator's abort) \
         to this replica serving 100% stable."
    );
    describe_gauge!(
        LEAD_TIME,
        Unit::Seconds,
        "From the promoted version's training date (metadata.json trained_at) to its promotion."
    );
}

/// The rollout of `model` is in `state`: one-hot over every state.
pub fn set_rollout_state(model: &str, state: &str, all: &[&'static str]) {
    for s in all {
        metrics::gauge!(ROLLOUT_STATE, "model" => model.to_string(), "state" => *s)
            .set(if *s == state { 1.0 } else { 0.0 });
    }
}

pub fn set_rollout_weight(model: &str, version: u64, weight: f64) {
    metrics::gauge!(ROLLOUT_WEIGHT, "model" => model.to_string(), "version" => version.to_string())
        .set(weight);
}

pub fn record_rollout_check(model: &str, check: &str, result: &'static str) {
    metrics::counter!(
        ROLLOUT_ANALYSIS,
        "model" => model.to_string(),
        "check" => check.to_string(),
        "result" => result
    )
    .increment(1);
}

pub fn set_disagreement(model: &str, candidate: u64, value: f64) {
    metrics::gauge!(DISAGREEMENT, "model" => model.to_string(), "candidate" => candidate.to_string())
        .set(value);
}

pub fn record_shadow(model: &str, outcome: &'static str) {
    metrics::counter!(SHADOW_REQUESTS, "model" => model.to_string(), "outcome" => outcome)
        .increment(1);
}

pub fn record_deployment(model: &str, outcome: &'static str) {
    metrics::counter!(DEPLOYMENTS, "model" => model.to_string(), "outcome" => outcome).increment(1);
}

pub fn record_rollback(model: &str, seconds: f64) {
    metrics::histogram!(ROLLBACK_SECONDS, "model" => model.to_string()).record(seconds);
}

pub fn set_lead_time(model: &str, seconds: f64) {
    metrics::gauge!(LEAD_TIME, "model" => model.to_string()).set(seconds);
}

fn describe_monitoring() {
    use metrics::describe_gauge;
    metrics::describe_counter!(
        REGISTRY_ERRORS,
        "Failed calls to an object-store registry by operation (list, get, head, put), after the \
         store client's retries; the loaded models keep serving meanwhile."
    );
    describe_gauge!(
        FEATURE_SKEW,
        "Training/serving skew of a feature (output:<name> for the model's outputs) over the \
         sliding window, against the version's baseline.json: statistic js_distance, psi \
         (numeric), linf (categorical), out_of_range (share of values outside the training \
         range), non_finite (NaN/inf values)."
    );
    describe_gauge!(
        FEATURE_SKEW_ALERT,
        "1 when a feature's skew is over one of its thresholds (with enough rows in the window)."
    );
    describe_gauge!(FEATURE_SKEW_ROWS, "Rows in the version's skew window.");
    describe_gauge!(
        MODEL_QUALITY_HELDOUT,
        "The held-out metric the model card (metadata.json heldout_metrics) reports: decay is \
         live / held-out."
    );
    describe_gauge!(
        MODEL_AGE,
        Unit::Seconds,
        "Time since the version was trained (metadata.json trained_at)."
    );
    super::capture::describe();
    super::feedback::describe();
    super::quality::describe();
}

fn mv(model: &str, version: &str) -> [(&'static str, String); 2] {
    [
        ("model", model.to_string()),
        ("version", version.to_string()),
    ]
}

pub fn set_skew(model: &str, version: &str, feature: &str, statistic: &'static str, value: f64) {
    metrics::gauge!(FEATURE_SKEW, "model" => model.to_string(), "version" => version.to_string(),
        "feature" => feature.to_string(), "statistic" => statistic)
    .set(value);
}

pub fn set_skew_alert(model: &str, version: &str, feature: &str, alert: bool) {
    metrics::gauge!(FEATURE_SKEW_ALERT, "model" => model.to_string(),
        "version" => version.to_string(), "feature" => feature.to_string())
    .set(if alert { 1.0 } else { 0.0 });
}

pub fn set_skew_rows(model: &str, version: &str, rows: u64) {
    metrics::gauge!(FEATURE_SKEW_ROWS, &mv(model, version)).set(rows as f64);
}

pub fn set_quality_heldout(model: &str, version: &str, metric: &str, value: f64) {
    metrics::gauge!(MODEL_QUALITY_HELDOUT, "model" => model.to_string(),
        "version" => version.to_string(), "metric" => metric.to_string())
    .set(value);
}

pub fn set_model_age(model: &str, version: &str, seconds: f64) {
    metrics::gauge!(MODEL_AGE, &mv(model, version)).set(seconds);
}

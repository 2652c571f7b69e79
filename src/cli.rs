//! Command line: `switchyard serve` and its flags. Every flag can also be set through the
//! environment variable named beside it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::logging::LogFormat;
use crate::models::{ControlMode, ManagerOptions};
use crate::registry::config::{Defaults, Device};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Serve ONNX models over the Open Inference Protocol (KServe V2), REST and gRPC"
)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the models of a registry.
    Serve(Box<ServeArgs>),
    /// List the models and versions of a running server: state, pinned, load time, reason.
    Models(AdminArgs),
    /// Load (or reload what changed of) a model on a running server (explicit control mode).
    Load(ModelArgs),
    /// Unload a model from a running server, after its in-flight requests (explicit control mode).
    Unload(ModelArgs),
    /// Pin the version that serves requests naming none; stored in the registry, so it survives
    /// restarts and every replica sharing the registry follows it.
    Promote(PromoteArgs),
    /// Progressive delivery: start, watch, pause, resume, promote or abort a model's rollout
    /// (canary, sticky A/B or shadow), and read its decisions.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Training/serving skew per feature, worst first: a running server's online window
    /// (`skew MODEL`), or capture files read offline (`skew --capture DIR --baseline PATH`),
    /// computed by the same code.
    Skew(SkewArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SkewArgs {
    /// Model name. With --capture, only its files (model=MODEL/) are read.
    #[arg(value_parser = crate::registry::parse_model_name, required_unless_present = "capture")]
    pub model: Option<String>,
    /// Version (default: the one serving requests that name none). With --capture, only its files.
    #[arg(long, requires = "model", value_parser = clap::value_parser!(u64).range(1..))]
    pub version: Option<u64>,
    /// Offline: a capture folder (--capture-dir of a server) to read instead of asking a server.
    #[arg(long, requires = "baseline")]
    pub capture: Option<PathBuf>,
    /// Offline: the version's baseline.json.
    #[arg(long, requires = "capture")]
    pub baseline: Option<PathBuf>,
    /// Offline: the model's config.toml, for its [monitoring] thresholds and skew_min_rows.
    #[arg(long, requires = "capture")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start rolling out a candidate version; prints the rollout's status.
    Start(Box<RolloutStartArgs>),
    /// The rollout's phase, step, what this replica measured in the open interval and its
    /// checks, and the last decision.
    Status(RolloutArgs),
    /// Hold the weights where they are: no analysis, no steps, until resumed.
    Pause(RolloutArgs),
    /// Resume a paused rollout with a fresh interval.
    Resume(RolloutArgs),
    /// End the rollout now by pinning the candidate.
    Promote(RolloutArgs),
    /// End the rollout now: all traffic back to the stable version.
    Abort(RolloutArgs),
    /// Every decision of the rollout, with the checks behind it.
    History(RolloutArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RolloutArgs {
    /// Model name.
    #[arg(value_parser = crate::registry::parse_model_name)]
    pub model: String,
    /// Print the server's JSON answer instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// A rollout spec from flags. Flags left out are not sent: the server fills its defaults.
#[derive(Debug, Clone, Args)]
pub struct RolloutStartArgs {
    /// Model name.
    #[arg(value_parser = crate::registry::parse_model_name)]
    pub model: String,
    /// The version to roll out.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub candidate: u64,
    /// The version serving now (default: the pinned one, else the one serving requests that
    /// name no version).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub stable: Option<u64>,
    /// How traffic is split (default canary).
    #[arg(long, value_enum)]
    pub kind: Option<crate::routing::Kind>,
    /// The candidate's share at each step, in percent, increasing (default 5,25,50,100; not for
    /// shadow).
    #[arg(long, value_delimiter = ',', value_parser = step_percent)]
    pub steps: Option<Vec<f64>>,
    /// How long each analysis interval lasts: "60s", "5m", "1h" (default 60s).
    #[arg(long, value_parser = interval_text)]
    pub interval: Option<String>,
    /// A/B: the request header whose value keeps a caller on its variant.
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Shadow: the fraction of requests copied to the candidate (default 1).
    #[arg(long)]
    pub shadow_fraction: Option<f64>,
    /// Canary and A/B: the fraction of requests also run on the other variant to measure
    /// disagreement (default 0.1).
    #[arg(long)]
    pub compare_fraction: Option<f64>,
    /// Largest fraction of compared rows whose predictions may differ (default 0.05).
    #[arg(long)]
    pub max_disagreement: Option<f64>,
    /// How much the candidate's error rate may exceed stable's (default 0.01).
    #[arg(long)]
    pub max_error_rate_increase: Option<f64>,
    /// Largest candidate p99 latency as a multiple of stable's (default 1.5).
    #[arg(long)]
    pub max_p99_ratio: Option<f64>,
    /// ...failing only when the candidate's p99 is also this many ms above stable's (default 1).
    #[arg(long)]
    pub p99_slack_ms: Option<f64>,
    /// Largest fraction of candidate rows with NaN or infinite outputs (default 0).
    #[arg(long)]
    pub max_nan_rate: Option<f64>,
    /// Fewest requests per variant before a check can pass or fail (default 100).
    #[arg(long)]
    pub min_requests: Option<u64>,
    /// Failed intervals that roll the candidate back (default 2).
    #[arg(long)]
    pub failure_limit: Option<u32>,
    /// Print the server's JSON answer instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// Where the running server's admin endpoints are, and how to prove who we are.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The server's REST address: http://host:port, or https://host:port for a TLS server.
    #[arg(
        long,
        env = "SWITCHYARD_SERVER",
        default_value = "http://127.0.0.1:8000"
    )]
    pub server: String,

    /// File holding the admin token (its first token line is sent as `Authorization: Bearer`).
    /// The token can also come from the SWITCHYARD_TOKEN environment variable.
    #[arg(long, env = "SWITCHYARD_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// PEM CA certificate(s) to verify an https:// server with (default: the system's roots).
    #[arg(long, env = "SWITCHYARD_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// PEM client certificate for a server that requires mutual TLS (with --client-key).
    #[arg(long, env = "SWITCHYARD_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, env = "SWITCHYARD_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model name.
    #[arg(value_parser = crate::registry::parse_model_name)]
    pub model: String,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct PromoteArgs {
    /// Model name.
    #[arg(value_parser = crate::registry::parse_model_name)]
    pub model: String,
    /// Version to pin.
    #[arg(required_unless_present = "unpin")]
    pub version: Option<u64>,
    /// Remove the pin: the highest ready version serves again.
    #[arg(long, conflicts_with = "version")]
    pub unpin: bool,
    #[command(flatten)]
    pub admin: AdminArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The registry: a folder, or an object store URL (s3://bucket/prefix, gs://bucket/prefix,
    /// az://container/prefix, file:///path) holding <model>/<version>/model.onnx, with optional
    /// <model>/config.toml. Object stores take their credentials and endpoint from the usual
    /// environment (AWS_*, GOOGLE_*, AZURE_*: e.g. AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP).
    #[arg(long, env = "SWITCHYARD_MODEL_REPOSITORY", default_value = "models")]
    pub model_repository: PathBuf,

    /// Where an object-store registry keeps the local copies of model files ONNX Runtime loads
    /// (kept across restarts; default: <temp dir>/switchyard-registry-cache).
    #[arg(long, env = "SWITCHYARD_REGISTRY_CACHE_DIR")]
    pub registry_cache_dir: Option<PathBuf>,

    /// An object-store setting as KEY=VALUE, over the environment's (repeat it; the keys are
    /// object_store's: aws_endpoint, aws_region, aws_allow_http, aws_access_key_id, ...,
    /// google_service_account, azure_storage_account_name, ...). Secrets belong in the environment.
    #[arg(long = "registry-option", value_name = "KEY=VALUE", value_parser = parse_key_value,
          env = "SWITCHYARD_REGISTRY_OPTIONS", value_delimiter = ',')]
    pub registry_options: Vec<(String, String)>,

    /// Address to listen on.
    #[arg(long, env = "SWITCHYARD_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// How the loaded models are decided: none (load the registry at start only), poll (follow
    /// the registry: new, changed and removed versions), explicit (only --load-model at start,
    /// then the repository API).
    #[arg(
        long,
        env = "SWITCHYARD_MODEL_CONTROL_MODE",
        value_enum,
        default_value = "none"
    )]
    pub model_control_mode: ControlMode,

    /// Seconds between registry polls (poll mode), and between re-reads of pinned versions
    /// (every mode). A new or changed model file is loaded once it has stayed the same for one
    /// whole interval.
    #[arg(long, env = "SWITCHYARD_REPOSITORY_POLL_SECS", default_value_t = 5.0, value_parser = poll_secs)]
    pub repository_poll_secs: f64,

    /// Model to load at start in explicit mode (repeatable; `*` loads every model).
    #[arg(
        long = "load-model",
        env = "SWITCHYARD_LOAD_MODEL",
        value_delimiter = ','
    )]
    pub load_models: Vec<String>,

    /// Seconds an unload waits for the requests a version still has.
    #[arg(long, env = "SWITCHYARD_UNLOAD_DRAIN_SECS", default_value_t = 30)]
    pub unload_drain_secs: u64,

    /// REST port (0 picks a free one; the chosen port is logged).
    #[arg(long, env = "SWITCHYARD_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,

    /// gRPC port (0 picks a free one; the chosen port is logged).
    #[arg(long, env = "SWITCHYARD_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,

    /// Largest request body accepted, in bytes (REST body and gRPC message); larger gets 413.
    #[arg(long, env = "SWITCHYARD_MAX_REQUEST_SIZE", default_value_t = 64 * 1024 * 1024)]
    pub max_request_size: usize,

    /// Admin tokens, one per line (`#` comments allowed); re-read when the file changes. Without
    /// it, admin endpoints (load, unload, promote, repository) answer only loopback callers.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// Inference tokens, one per line; when given, health, metadata and inference need an
    /// inference or admin token. Without it they are open.
    #[arg(long, env = "SWITCHYARD_INFER_TOKEN_FILE")]
    pub infer_token_file: Option<PathBuf>,

    /// PEM certificate chain: serve REST and gRPC over TLS (with --tls-key). Reloaded when the
    /// file changes.
    #[arg(long, env = "SWITCHYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SWITCHYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): require clients to present a certificate it signed (mutual TLS).
    #[arg(long, env = "SWITCHYARD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Most inference requests in flight, server-wide; beyond it callers get 429 /
    /// RESOURCE_EXHAUSTED before their body is read. 0 = no limit.
    #[arg(
        long,
        env = "SWITCHYARD_MAX_CONCURRENT_REQUESTS",
        default_value_t = 1024
    )]
    pub max_concurrent_requests: usize,

    /// Seconds a client has to send a request's headers, and then its body (each); also how long
    /// an idle keep-alive connection and a TLS handshake may last.
    #[arg(long, env = "SWITCHYARD_REQUEST_READ_TIMEOUT_SECS", default_value_t = 30.0, value_parser = read_timeout_secs)]
    pub request_read_timeout_secs: f64,

    /// Seconds between HTTP/2 keep-alive pings on idle gRPC connections.
    #[arg(long, env = "SWITCHYARD_GRPC_KEEPALIVE_SECS", default_value_t = 60)]
    pub grpc_keepalive_secs: u64,

    /// Seconds to wait for a keep-alive ping's answer before closing the gRPC connection.
    #[arg(
        long,
        env = "SWITCHYARD_GRPC_KEEPALIVE_TIMEOUT_SECS",
        default_value_t = 20
    )]
    pub grpc_keepalive_timeout_secs: u64,

    /// Path of libonnxruntime.so (default: beside the binary, then the copy `cargo build` fetched).
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub ort_library: Option<PathBuf>,

    /// Ready only when every model version selected in the registry loaded (Triton's default);
    /// otherwise ready once the initial load has finished, whatever failed.
    #[arg(long, env = "SWITCHYARD_STRICT_READINESS", default_value_t = false)]
    pub strict_readiness: bool,

    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(long, env = "SWITCHYARD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,

    /// Serving-data monitoring on every request: online skew against each version's
    /// baseline.json, predictions kept for feedback. `off` leaves only the request metrics.
    #[arg(long, env = "SWITCHYARD_MONITORING", value_enum, default_value = "on")]
    pub monitoring: Toggle,

    /// Capture predicted rows (inputs, outputs, latency) as Parquet files under this folder,
    /// partitioned model=/version=/date=/hour=. Off when unset.
    #[arg(long, env = "SWITCHYARD_CAPTURE_DIR")]
    pub capture_dir: Option<PathBuf>,

    /// Default share of requests captured (config.toml `monitoring.capture_sample_rate` overrides).
    #[arg(long, env = "SWITCHYARD_CAPTURE_SAMPLE_RATE", default_value_t = 1.0, value_parser = fraction)]
    pub capture_sample_rate: f64,

    /// Rows the capture queue holds; beyond it captured rows are dropped and counted, never
    /// waited for.
    #[arg(long, env = "SWITCHYARD_CAPTURE_QUEUE_ROWS", default_value_t = 65_536)]
    pub capture_queue_rows: usize,

    /// Bytes of tensor data the capture queue holds (a row can be a whole large request);
    /// beyond it captured rows are dropped and counted.
    #[arg(long, env = "SWITCHYARD_CAPTURE_QUEUE_BYTES", default_value_t = 256 << 20)]
    pub capture_queue_bytes: u64,

    /// A capture file is closed (and becomes visible) past this size in bytes...
    #[arg(long, env = "SWITCHYARD_CAPTURE_MAX_FILE_BYTES", default_value_t = 64 << 20)]
    pub capture_max_file_bytes: u64,

    /// ...or this age ("30s", "5m").
    #[arg(long, env = "SWITCHYARD_CAPTURE_MAX_FILE_AGE", default_value = "5m", value_parser = duration)]
    pub capture_max_file_age: std::time::Duration,

    /// Predicted rows kept for feedback (of requests with an id); the oldest go first.
    #[arg(long, env = "SWITCHYARD_FEEDBACK_CAPACITY", default_value_t = 100_000)]
    pub feedback_capacity: usize,

    /// How long a prediction waits for its feedback; later labels are counted as late.
    #[arg(long, env = "SWITCHYARD_FEEDBACK_TTL", default_value = "1h", value_parser = duration)]
    pub feedback_ttl: std::time::Duration,

    /// Default sessions per model version (config.toml `runtime.instances` overrides).
    #[arg(long, env = "SWITCHYARD_INSTANCES", default_value_t = crate::registry::config::default_instances())]
    pub instances: usize,

    /// Default ONNX Runtime intra-op threads per session; 0 = one per core.
    #[arg(long, env = "SWITCHYARD_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Default device: cpu, cuda or cuda:N.
    #[arg(long, env = "SWITCHYARD_DEVICE", default_value = "cpu", value_parser = Device::parse)]
    pub device: Device,

    /// Default largest batch in rows; 0 disables batching.
    #[arg(long, env = "SWITCHYARD_MAX_BATCH_SIZE", default_value_t = 64)]
    pub max_batch_size: usize,

    /// Default time the first request of a batch may wait for more, in microseconds.
    #[arg(long, env = "SWITCHYARD_MAX_QUEUE_DELAY_US", default_value_t = 0)]
    pub max_queue_delay_us: u64,

    /// Default most requests waiting per model version; beyond it callers get 429.
    #[arg(long, env = "SWITCHYARD_MAX_QUEUE_SIZE", default_value_t = 1024)]
    pub max_queue_size: usize,

    /// Default queue deadline in microseconds for requests that set no `timeout`; 0 = none.
    #[arg(long, env = "SWITCHYARD_DEFAULT_TIMEOUT_US", default_value_t = 0)]
    pub default_timeout_us: u64,
}

/// On or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    On,
    Off,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number between 0 and 1")),
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::routing::spec::parse_duration(s)
}

fn poll_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.01..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0.01 and 86400"
        )),
    }
}

/// One `--steps` entry: a percentage, with or without its `%`.
fn step_percent(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches('%').trim();
    n.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("'{s}' is not a percentage (e.g. --steps 5,25,50,100)"))
}

/// `--interval` is sent as written (the server reads it); parsing it here fails fast.
fn interval_text(s: &str) -> Result<String, String> {
    crate::routing::spec::parse_duration(s).map(|_| s.to_string())
}

fn read_timeout_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "'{s}' is not a number of seconds between 0.05 and 3600"
        )),
    }
}

impl ServeArgs {
    /// The read timeout as a duration.
    pub fn read_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.request_read_timeout_secs.clamp(0.05, 3600.0))
    }

    /// TLS files, when TLS is on.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            }),
            _ => None,
        }
    }

    /// Settings with every default, as `switchyard serve` with no flags (for tests and embedding).
    pub fn with_repository(path: impl Into<PathBuf>) -> Self {
        let args = Cli::parse_from(["switchyard", "serve"]);
        match args.command {
            Command::Serve(mut serve) => {
                serve.model_repository = path.into();
                *serve
            }
            _ => unreachable!("parsed `serve`"),
        }
    }

    /// The registry as an object-store URL (`scheme://...`), or `None` for a folder.
    pub fn repository_url(&self) -> Option<&str> {
        self.model_repository.to_str().filter(|s| {
            s.split_once("://")
                .is_some_and(|(scheme, _)| !scheme.contains('/'))
        })
    }

    /// The object-store registry's cache folder.
    pub fn registry_cache(&self) -> PathBuf {
        self.registry_cache_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("switchyard-registry-cache"))
    }

    /// The pause between model-control passes.
    pub fn poll_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.repository_poll_secs.clamp(0.01, 86_400.0))
    }

    pub fn manager_options(&self) -> ManagerOptions {
        ManagerOptions {
            defaults: self.defaults(),
            mode: self.model_control_mode,
            initial_models: self.load_models.clone(),
            drain_timeout: std::time::Duration::from_secs(self.unload_drain_secs),
        }
    }

    pub fn defaults(&self) -> Defaults {
        Defaults {
            max_batch_size: self.max_batch_size,
            max_queue_delay_us: self.max_queue_delay_us,
            max_queue_size: self.max_queue_size.max(1),
            default_timeout_us: self.default_timeout_us,
            instances: self.instances.max(1),
            intra_op_threads: self.intra_op_threads,
            device: self.device,
            capture_sample_rate: self.capture_sample_rate,
            monitoring: self.monitoring == Toggle::On,
        }
    }
}

/// `KEY=VALUE`, both non-empty.
fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("'{s}' is not KEY=VALUE")),
    }
}

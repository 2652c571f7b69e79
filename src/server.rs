//! Wiring: ONNX Runtime, registry, model manager, service, and the listeners; startup order and
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::auth::Auth;
use crate::cli::{ServeArgs, Toggle};
use crate::grpc::{self, GrpcOptions};
use crate::http::{self, HttpState};
use crate::listener;
use crate::models::ModelManager;
use crate::monitoring::capture::{Capture, CaptureSettings};
use crate::monitoring::feedback::FeedbackStore;
use crate::monitoring::{Monitoring, metrics};
use crate::registry::{FolderRegistry, ObjectRegistry, Registry};
use crate::runtime::library;
use crate::service::Service;
use crate::shutdown;
use crate::tls::{Alpn, Tls};

/// How often token and certificate files are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(2);

pub type StartError = String;

/// A running server: its bound addresses and the handles to stop it.
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub service: Arc<Service>,
    /// The server-wide inference slots (`--max-concurrent-requests`), shared by REST and gRPC.
    pub admission: Arc<Semaphore>,
    trigger: shutdown::Trigger,
    http_task: JoinHandle<Result<(), String>>,
    grpc_task: JoinHandle<Result<(), String>>,
    drain_timeout: Duration,
}

async fn bind(host: &str, port: u16, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("cannot listen for {what} on {host}:{port}: {e}"))
}

impl Server {
    /// Loads ONNX Runtime, binds the listeners and starts serving. Models load in the background
    /// (the server is live at once, ready once they are loaded).
    pub async fn start(args: ServeArgs) -> Result<Server, StartError> {
        let metrics = metrics::install();
        let env = library::init(args.ort_library.as_deref()).map_err(|e| e.to_string())?;
        let registry: Arc<dyn Registry> = match args.repository_url() {
            Some(url) => Arc::new(
                ObjectRegistry::open(url, &args.registry_cache(), &args.registry_options)
                    .map_err(|e| e.to_string())?,
            ),
            None => {
                let repo = &args.model_repository;
                if !repo.is_dir() {
                    return Err(format!(
                        "the model repository '{}' does not exist or is not a directory \
                         (set --model-repository or SWITCHYARD_MODEL_REPOSITORY)",
                        repo.display()
                    ));
                }
                Arc::new(FolderRegistry::new(repo.clone()))
            }
        };
        let models = Arc::new(ModelManager::new(registry, args.manager_options(), env));
        let service = Arc::new(Service::new(
            models.clone(),
            args.strict_readiness,
            monitoring(&args)?,
        ));

        let auth = Arc::new(
            Auth::from_files(
                args.admin_token_file.as_deref(),
                args.infer_token_file.as_deref(),
            )
            .map_err(|e| e.to_string())?,
        );
        auth.log_policy();
        let tls = match args.tls_files() {
            None => None,
            Some(files) => Some((
                Arc::new(Tls::load(files.clone(), Alpn::Http1).map_err(|e| e.to_string())?),
                Arc::new(Tls::load(files, Alpn::H2).map_err(|e| e.to_string())?),
            )),
        };
        let admission = Arc::new(Semaphore::new(if args.max_concurrent_requests == 0 {
            Semaphore::MAX_PERMITS
        } else {
            args.max_concurrent_requests.min(Semaphore::MAX_PERMITS)
        }));
        let read_timeout = args.read_timeout();

        let (trigger, signal) = shutdown::channel();
        let stop_models = signal.clone();
        // Both listeners are bound before anything starts, so a busy port fails the start cleanly.
        let http_listener = bind(&args.host, args.http_port, "REST").await?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|e| format!("cannot read the REST address: {e}"))?;
        let grpc_listener = bind(&args.host, args.grpc_port, "gRPC").await?;
        let grpc_addr = grpc_listener
            .local_addr()
            .map_err(|e| format!("cannot read the gRPC address: {e}"))?;
        tokio::spawn(auth.clone().watch(RELOAD_EVERY, signal.clone()));
        if let Some((http_tls, grpc_tls)) = &tls {
            tokio::spawn(http_tls.clone().watch(RELOAD_EVERY, signal.clone()));
            tokio::spawn(grpc_tls.clone().watch(RELOAD_EVERY, signal.clone()));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };

        let app = http::router(Arc::new(HttpState {
            service: service.clone(),
            metrics,
            max_request_size: args.max_request_size,
            auth: auth.clone(),
            admission: admission.clone(),
            max_concurrent_requests: args.max_concurrent_requests,
            read_timeout,
            stop: signal.clone(),
        }));
        let http_incoming = listener::accept(
            http_listener,
            tls.as_ref().map(|t| t.0.clone()),
            read_timeout,
            "http",
            signal.clone(),
        );
        let http_signal = signal.clone();
        let http_task = tokio::spawn(async move {
            listener::serve_http(http_incoming, app, read_timeout, http_signal).await;
            Ok(())
        });
        tracing::info!(protocol = "http", addr = %http_addr, scheme, "listening");

        let options = GrpcOptions {
            max_message_size: args.max_request_size,
            keepalive_interval: Duration::from_secs(args.grpc_keepalive_secs.max(1)),
            keepalive_timeout: Duration::from_secs(args.grpc_keepalive_timeout_secs.max(1)),
        };
        let guard = grpc::guard::Guard {
            read_timeout,
            auth,
            admission: admission.clone(),
            max_concurrent_requests: args.max_concurrent_requests,
            service: service.clone(),
        };
        let grpc_incoming = listener::accept(
            grpc_listener,
            tls.as_ref().map(|t| t.1.clone()),
            read_timeout,
            "grpc",
            signal.clone(),
        );
        let grpc_service = service.clone();
        let grpc_task = tokio::spawn(async move {
            grpc::serve(grpc_incoming, grpc_service, guard, options, signal)
                .await
                .map_err(|e| format!("the gRPC server failed: {e}"))
        });
        tracing::info!(protocol = "grpc", addr = %grpc_addr, scheme, "listening");

        tokio::spawn(crate::routing::controller::run(
            models.clone(),
            stop_models.clone(),
        ));
        tokio::spawn(manage_models(
            models.clone(),
            args.poll_interval(),
            stop_models,
        ));

        Ok(Server {
            http_addr,
            grpc_addr,
            service,
            admission,
            trigger,
            http_task,
            grpc_task,
            drain_timeout: Duration::from_secs(args.shutdown_timeout_secs),
        })
    }

    /// Starts the graceful shutdown: readiness turns false, listeners stop accepting.
    pub fn shutdown(&self) {
        self.service.begin_shutdown();
        self.trigger.trigger();
    }

    /// Waits until both listeners have drained (or the drain timeout passed), then writes out
    /// what the capture queue holds: every row accepted before the drain ends up on disk.
    pub async fn wait(self) -> Result<(), StartError> {
        let service = self.service.clone();
        let result = self.drain().await;
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(capture) = &service.monitoring().capture {
                capture.close();
            }
        })
        .await;
        result
    }

    async fn drain(self) -> Result<(), StartError> {
        let both = async {
            let (http, grpc) = tokio::join!(self.http_task, self.grpc_task);
            for r in [http, grpc] {
                r.map_err(|e| format!("a server task failed: {e}"))??;
            }
            Ok(())
        };
        match tokio::time::timeout(self.drain_timeout, both).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(
                    secs = self.drain_timeout.as_secs(),
                    "in-flight requests did not finish within the shutdown timeout"
                );
                Ok(())
            }
        }
    }
}

/// The server-wide side of monitoring, from the flags. The capture folder is created by the
/// writer; a folder it cannot write is reported (and counted), never fatal.
fn monitoring(args: &ServeArgs) -> Result<Monitoring, StartError> {
    let on = args.monitoring == Toggle::On;
    if !on && let Some(dir) = &args.capture_dir {
        tracing::warn!(dir = %dir.display(), "--capture-dir is ignored: --monitoring is off");
    }
    let capture = match &args.capture_dir {
        Some(dir) if on => Some(
            Capture::start(CaptureSettings {
                dir: dir.clone(),
                queue_rows: args.capture_queue_rows,
                queue_bytes: args.capture_queue_bytes,
                max_file_bytes: args.capture_max_file_bytes,
                max_file_age: args.capture_max_file_age,
            })
            .map_err(|e| format!("cannot start the capture writer: {e}"))?,
        ),
        _ => None,
    };
    Ok(Monitoring {
        enabled: on,
        capture,
        feedback: FeedbackStore::new(args.feedback_capacity, args.feedback_ttl),
    })
}

/// The initial load, then a pass every `poll` interval: following the registry in poll mode,
/// re-reading pinned versions in every mode. Loading runs on blocking threads, never on the
/// threads that serve requests.
async fn manage_models(models: Arc<ModelManager>, poll: Duration, stop: shutdown::Signal) {
    let loading = models.clone();
    let _ = tokio::task::spawn_blocking(move || loading.load_all()).await;
    if models.initial_load_done() {
        tracing::info!(registry = %models.registry().describe(), mode = models.mode().as_str(), "initial model load finished");
    }
    stop.every(poll, || {
        let m = models.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || m.poll()).await;
        }
    })
    .await;
}

/// `switchyard serve`: runs until SIGINT/SIGTERM, then drains and returns.
pub async fn run(args: ServeArgs) -> Result<(), StartError> {
    let server = Server::start(args).await?;
    shutdown::os_signal().await;
    server.shutdown();
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

//! The gRPC front end: the Open Inference Protocol's `inference.GRPCInferenceService` over tonic,
//! plus the standard `grpc.health.v1` service. A thin adapter over [`Service`], like REST.

pub mod convert;
pub mod guard;

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::core::infer::Protocol;
use crate::core::signature::TensorSpec;
use crate::error::Error;
use crate::listener::Accepted;
use crate::routing::Variant;
use crate::service::{self, Service};
use crate::shutdown;

#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("inference");
}

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Requests of one `ModelStreamInfer` stream that may run at once; responses keep request order.
const STREAM_CONCURRENCY: usize = 16;

/// Settings of the gRPC listener.
#[derive(Debug, Clone)]
pub struct GrpcOptions {
    pub max_message_size: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// The gRPC code of each error variant.
pub fn code_of(e: &Error) -> Code {
    match e {
        Error::InvalidInput(_) | Error::Rejected(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::PayloadTooLarge { .. } => Code::ResourceExhausted,
        Error::ReadTimeout(_) => Code::DeadlineExceeded,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Overloaded(_) => Code::ResourceExhausted,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Cancelled(_) => Code::Cancelled,
        Error::Inference(_) | Error::Internal(_) => Code::Internal,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::FailedPrecondition(_) => Code::FailedPrecondition,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        Status::new(code_of(&e), e.to_string())
    }
}

/// Logs an admin call (the guard has checked the caller already).
fn audit<T>(
    action: &str,
    model: &str,
    peer: Option<std::net::SocketAddr>,
    result: &Result<T, Error>,
) {
    let model = model.escape_debug();
    let peer = crate::http::guard::peer_text(peer);
    match result {
        Ok(_) => {
            tracing::info!(action, %model, %peer, protocol = "grpc", outcome = "ok", "admin call")
        }
        Err(e) => {
            tracing::info!(action, %model, %peer, protocol = "grpc", outcome = "failed", error = %e, "admin call")
        }
    }
}

#[derive(Clone)]
pub struct GrpcFrontEnd {
    service: Arc<Service>,
    /// Server-wide inference slots (`--max-concurrent-requests`), shared with REST.
    admission: Arc<Semaphore>,
    max_concurrent: usize,
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .iter()
        .map(|t| pb::model_metadata_response::TensorMetadata {
            name: t.name.clone(),
            datatype: t.datatype.as_str().to_string(),
            shape: t.shape.clone(),
        })
        .collect()
}

impl GrpcFrontEnd {
    pub fn new(service: Arc<Service>, admission: Arc<Semaphore>, max_concurrent: usize) -> Self {
        Self {
            service,
            admission,
            max_concurrent,
        }
    }

    /// Takes a server-wide slot (`--max-concurrent-requests`) for one decoded request, then runs
    /// it. The slot is taken once the message is in, so a client that trickles its message holds
    /// none; each message of a stream takes its own.
    async fn infer_admitted(
        &self,
        started: Instant,
        req: pb::ModelInferRequest,
        metadata: &tonic::metadata::MetadataMap,
    ) -> (Result<pb::ModelInferResponse, Error>, Option<Variant>) {
        let Ok(_slot) = self.admission.clone().try_acquire_owned() else {
            let e = service::server_busy(self.max_concurrent);
            self.service
                .record_refused(Protocol::Grpc, started, &req.model_name, &e);
            return (Err(e), None);
        };
        self.infer_one(started, req, metadata).await
    }

    /// Runs one request; an A/B rollout's sticky key may come from the call's metadata (the
    /// rollout's `sticky_header`) or the `routing_key` parameter.
    async fn infer_one(
        &self,
        started: Instant,
        mut req: pb::ModelInferRequest,
        metadata: &tonic::metadata::MetadataMap,
    ) -> (Result<pb::ModelInferResponse, Error>, Option<Variant>) {
        // Taken, not cloned: the decoder reads neither.
        let model = std::mem::take(&mut req.model_name);
        let version = std::mem::take(&mut req.model_version);
        let decoded = convert::decode_request(req);
        let header = |name: &str| {
            metadata
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let route = self
            .service
            .route(&model, &version, &header, decoded.as_ref().ok());
        let (result, variant) = self
            .service
            .infer_on(Protocol::Grpc, started, &model, route, decoded)
            .await;
        (result.map(convert::encode_response), variant)
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for GrpcFrontEnd {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse {
            live: self.service.live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.service.ready(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let ready = self.service.model_ready(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: service::SERVER_NAME.into(),
            version: service::SERVER_VERSION.into(),
            extensions: service::EXTENSIONS.iter().map(|s| s.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let m = self.service.model_metadata(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensor_metadata(&m.inputs),
            outputs: tensor_metadata(&m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let started = Instant::now();
        let (metadata, _, message) = req.into_parts();
        let (result, variant) = self.infer_admitted(started, message, &metadata).await;
        // Failures say which side of a rollout failed them too.
        let tag = |m: &mut tonic::metadata::MetadataMap| {
            if let Some(v) = variant {
                m.insert(
                    crate::http::HEADER_VARIANT,
                    tonic::metadata::MetadataValue::from_static(v.as_str()),
                );
            }
        };
        match result {
            Ok(reply) => {
                let mut response = Response::new(reply);
                tag(response.metadata_mut());
                Ok(response)
            }
            Err(e) => {
                let mut status = Status::from(e);
                tag(status.metadata_mut());
                Err(status)
            }
        }
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let this = self.clone();
        let (metadata, _, messages) = req.into_parts();
        let metadata = Arc::new(metadata);
        let responses = messages
            .map(move |msg| {
                let this = this.clone();
                let metadata = metadata.clone();
                async move {
                    let req = msg?;
                    let started = Instant::now();
                    // Echo enough to correlate an error with its request.
                    let (model_name, model_version, id) = (
                        req.model_name.clone(),
                        req.model_version.clone(),
                        req.id.clone(),
                    );
                    Ok(match this.infer_admitted(started, req, &metadata).await.0 {
                        Ok(resp) => pb::ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(resp),
                        },
                        Err(e) => pb::ModelStreamInferResponse {
                            error_message: e.to_string(),
                            infer_response: Some(pb::ModelInferResponse {
                                model_name,
                                model_version,
                                id,
                                ..Default::default()
                            }),
                        },
                    })
                }
            })
            .buffered(STREAM_CONCURRENCY);
        Ok(Response::new(Box::pin(responses)))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let peer = req.remote_addr();
        let index = self.service.repository_index(req.into_inner().ready);
        audit::<()>("index", "", peer, &Ok(()));
        let models = index
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state.into(),
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let peer = req.remote_addr();
        let model = req.into_inner().model_name;
        let result = self.service.load_model(&model).await;
        audit("load", &model, peer, &result);
        result?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let peer = req.remote_addr();
        let model = req.into_inner().model_name;
        let result = self.service.unload_model(&model).await;
        audit("unload", &model, peer, &result);
        result?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}

/// Keeps `grpc.health.v1` in step with readiness: updated on every model-table change, and set
/// to NOT_SERVING when shutdown begins.
async fn report_health(
    health: tonic_health::server::HealthReporter,
    service: Arc<Service>,
    stop: shutdown::Signal,
) {
    use tonic_health::ServingStatus;
    let set = |status: ServingStatus| {
        let health = health.clone();
        async move {
            for name in ["", "inference.GRPCInferenceService"] {
                health.set_service_status(name, status).await;
            }
        }
    };
    let mut changes = service.models().subscribe();
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        let status = if service.ready() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set(status).await;
        tokio::select! {
            () = &mut stopped => break,
            r = changes.changed() => if r.is_err() { break },
        }
    }
    set(ServingStatus::NotServing).await;
}

/// Serves gRPC on accepted connections until `stop` fires, then drains in-flight calls.
pub async fn serve(
    incoming: mpsc::Receiver<Accepted>,
    service: Arc<Service>,
    guard: guard::Guard,
    options: GrpcOptions,
    stop: shutdown::Signal,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // `grpc.health.v1` follows readiness: NOT_SERVING while loading and once draining.
    tokio::spawn(report_health(health, service.clone(), stop.clone()));
    let front_end = GrpcFrontEnd::new(
        service,
        guard.admission.clone(),
        guard.max_concurrent_requests,
    );
    let inference = GrpcInferenceServiceServer::new(front_end)
        .max_decoding_message_size(options.max_message_size)
        .max_encoding_message_size(options.max_message_size);
    // Connections arrive accepted (TCP_NODELAY set, TLS done) from the shared listener.
    let incoming = futures_util::stream::unfold(incoming, |mut rx| async move {
        rx.recv().await.map(|a| (Ok::<_, std::io::Error>(a.io), rx))
    });
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(options.keepalive_interval))
        .http2_keepalive_timeout(Some(options.keepalive_timeout))
        .layer(guard)
        .add_service(health_service)
        .add_service(inference)
        .serve_with_incoming_shutdown(incoming, stop.wait())
        .await
}

//! The REST front end: the Open Inference Protocol (KServe V2) over HTTP, plus `/metrics`.
//!
//! Handlers only translate between HTTP and the [`Service`]; every rule lives behind it.

pub mod admin;
pub mod body;
pub mod guard;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::auth::Auth;
use crate::codec;
use crate::core::infer::Protocol;
use crate::core::signature::TensorSpec;
use crate::error::Error;
use crate::service::{self, ModelMetadata, Service};

/// Triton's binary extension header: the length of the JSON part of a body.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Which side of a rollout answered: `stable` or `candidate` (absent outside rollouts).
pub const HEADER_VARIANT: &str = "x-switchyard-variant";

/// Bodies larger than this are decompressed and decoded on a blocking thread, so one big request
/// never stalls the async threads that serve everyone's small ones.
const OFFLOAD_BYTES: usize = 256 * 1024;

pub struct HttpState {
    pub service: Arc<Service>,
    pub metrics: PrometheusHandle,
    pub max_request_size: usize,
    pub auth: Arc<Auth>,
    /// Inference requests in flight, server-wide (`--max-concurrent-requests`).
    pub admission: Arc<Semaphore>,
    pub max_concurrent_requests: usize,
    /// Time a request's body has to arrive (`--request-read-timeout-secs`).
    pub read_timeout: Duration,
    /// Shutdown: ends the background reads of refused bodies.
    pub stop: crate::shutdown::Signal,
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_v),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_v),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_v))
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v2/repository/index", post(repository_index))
        .route("/metrics", get(render_metrics))
        .merge(admin::routes())
        .fallback(unknown_path)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
}

/// The HTTP status of each error variant.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidInput(_) | Error::Rejected(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        Error::ReadTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        // nginx's "client closed request"; the caller never reads it, but logs and metrics do.
        Error::Cancelled(_) => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Error::Inference(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        Error::FailedPrecondition(_) => StatusCode::CONFLICT,
    }
}

/// The V2 error body: `{"error": "<message>"}` with the status the error variant decides.
pub fn error_response(e: &Error) -> Response {
    (status_of(e), axum::Json(json!({ "error": e.to_string() }))).into_response()
}

async fn unknown_path(uri: axum::http::Uri) -> Response {
    error_response(&Error::NotFound(format!(
        "no such endpoint: {}",
        uri.path()
    )))
}

async fn live(State(s): State<Arc<HttpState>>) -> Response {
    let live = s.service.live();
    let status = if live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ "live": live }))).into_response()
}

async fn ready(State(s): State<Arc<HttpState>>) -> Response {
    let ready = s.service.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(json!({ "ready": ready }))).into_response()
}

async fn server_metadata() -> Response {
    axum::Json(json!({
        "name": service::SERVER_NAME,
        "version": service::SERVER_VERSION,
        "extensions": service::EXTENSIONS,
    }))
    .into_response()
}

#[derive(Serialize)]
struct TensorMetadataJson<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
}

fn tensors(specs: &[TensorSpec]) -> Vec<TensorMetadataJson<'_>> {
    specs
        .iter()
        .map(|t| TensorMetadataJson {
            name: &t.name,
            datatype: t.datatype.as_str(),
            shape: &t.shape,
        })
        .collect()
}

fn metadata_json(m: &ModelMetadata) -> serde_json::Value {
    let parameters: serde_json::Map<String, serde_json::Value> = m
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), codec::param_json(v)))
        .collect();
    json!({
        "name": m.name,
        "versions": m.versions,
        "platform": m.platform,
        "inputs": tensors(&m.inputs),
        "outputs": tensors(&m.outputs),
        "parameters": parameters,
    })
}

async fn model_metadata(state: State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    metadata(state, &model, "")
}

async fn model_metadata_v(
    state: State<Arc<HttpState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata(state, &model, &version)
}

fn metadata(State(s): State<Arc<HttpState>>, model: &str, version: &str) -> Response {
    match s.service.model_metadata(model, version) {
        Ok(m) => axum::Json(metadata_json(&m)).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn model_ready(state: State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    readiness(state, &model, "")
}

async fn model_ready_v(
    state: State<Arc<HttpState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    readiness(state, &model, &version)
}

fn readiness(State(s): State<Arc<HttpState>>, model: &str, version: &str) -> Response {
    match s.service.model_ready(model, version) {
        Ok(ready) => {
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, axum::Json(json!({ "name": model, "ready": ready }))).into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn infer(
    state: State<Arc<HttpState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(state, model, String::new(), headers, body).await
}

async fn infer_v(
    state: State<Arc<HttpState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    run_infer(state, model, version, headers, body).await
}

async fn run_infer(
    State(s): State<Arc<HttpState>>,
    model: String,
    version: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let leftover = body::Leftover::new(&headers, s.read_timeout, &s.stop);
    // Admission before work: an unknown model, a full queue or a bad header costs no body read.
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let first = s.service.route(&model, &version, &header, None);
    let admitted = match &first {
        Err(e) => Err(e.clone()),
        Ok(r) => r.target.scheduler.refuse_if_full(),
    }
    .and_then(|()| Ok((body::header_length(&headers)?, body::encoding(&headers)?)));
    let (target, request, _permit) = match admitted {
        Err(e) => {
            body::discard(body, s.max_request_size as u64, &leftover);
            (first, Err(e), None)
        }
        Ok((header_len, encoding)) => {
            // Not held across the upload: a slow client must not keep an unloaded version alive.
            drop(first);
            let wire = Wire {
                header_len,
                encoding,
            };
            let read = decode(&s, &headers, body, wire, &leftover).await;
            // The server-wide slot is taken once the body is in, so slow uploads hold none.
            let permit = s.admission.clone().try_acquire_owned().ok();
            let read = match (read, &permit) {
                (Ok(_), None) => Err(service::server_busy(s.max_concurrent_requests)),
                (read, _) => read,
            };
            // Routed again now the body is in: the A/B key may be a request parameter.
            let route = s.service.route(
                &model,
                &version,
                &header,
                read.as_ref().ok().map(|(r, _)| r),
            );
            (route, read, permit)
        }
    };
    let (request, format) = match request {
        Ok((r, f)) => (Ok(r), f),
        Err(e) => (Err(e), codec::OutputFormat::default()),
    };
    let (result, variant) = s
        .service
        .infer_on(Protocol::Http, started, &model, target, request)
        .await;
    let result = result.and_then(|resp| codec::encode_response(&resp, &format));
    let mut response = match result {
        Ok((bytes, None)) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Ok((bytes, Some(json_len))) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                ),
                (
                    header::HeaderName::from_static(HEADER_CONTENT_LENGTH),
                    HeaderValue::from(json_len),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => error_response(&e),
    };
    if let Some(v) = variant {
        response.headers_mut().insert(
            header::HeaderName::from_static(HEADER_VARIANT),
            HeaderValue::from_static(v.as_str()),
        );
    }
    response
}

/// How an inference body is encoded, from its headers.
struct Wire {
    /// `Inference-Header-Content-Length`: binary tensors follow the JSON part.
    header_len: Option<usize>,
    /// `Content-Encoding` (`None` for identity).
    encoding: Option<&'static str>,
}

/// Reads, decompresses and decodes an inference body; large ones on a blocking thread.
async fn decode(
    s: &HttpState,
    headers: &HeaderMap,
    body: Body,
    Wire {
        header_len,
        encoding,
    }: Wire,
    leftover: &body::Leftover,
) -> crate::error::Result<(crate::core::infer::InferRequest, codec::OutputFormat)> {
    let bytes = body::read(body, headers, s.max_request_size, leftover).await?;
    let limit = s.max_request_size;
    let work = move || {
        let bytes = body::decompress(bytes, encoding, limit)?;
        codec::decode_request(&bytes, header_len)
    };
    if encoding.is_none() && headers_small(headers, OFFLOAD_BYTES) {
        work()
    } else {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| Error::Internal(format!("the request decoder failed: {e}")))?
    }
}

/// Largest body of a control request (index, promote).
const CONTROL_BODY_LIMIT: usize = 64 * 1024;

/// Reads a control request's small JSON body under the same read deadline as inference bodies.
pub async fn read_small_body(
    s: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> crate::error::Result<bytes::Bytes> {
    let leftover = body::Leftover::new(headers, s.read_timeout, &s.stop);
    let limit = CONTROL_BODY_LIMIT.min(s.max_request_size);
    body::read(body, headers, limit, &leftover).await
}

/// Whether the declared body is at most `limit` bytes (unknown length counts as large).
fn headers_small(headers: &HeaderMap, limit: usize) -> bool {
    body::content_length(headers).is_some_and(|n| n <= limit as u64)
}

/// The repository extension's index: `POST /v2/repository/index`, optional body `{"ready": true}`.
async fn repository_index(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_small_body(&s, &headers, body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let ready_only = if body.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => v
                .get("ready")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false),
            Err(e) => {
                return error_response(&Error::invalid(format!(
                    "malformed index request JSON: {e}"
                )));
            }
        }
    };
    let index: Vec<serde_json::Value> = s
        .service
        .repository_index(ready_only)
        .into_iter()
        .map(|e| {
            let mut v = json!({"name": e.name, "state": e.state});
            if !e.version.is_empty() {
                v["version"] = json!(e.version);
            }
            if !e.reason.is_empty() {
                v["reason"] = json!(e.reason);
            }
            v
        })
        .collect();
    axum::Json(index).into_response()
}

/// `POST /v2/models/{model}/feedback`: `{"id": "<request id>", "labels": [...]}` (one label per
/// row of that request's prediction), or an array of them. Labels arriving after their
/// prediction left the store are counted as late, not refused.
async fn feedback(
    State(s): State<Arc<HttpState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let leftover = body::Leftover::new(&headers, s.read_timeout, &s.stop);
    let bytes = match body::read(body, &headers, s.max_request_size, &leftover).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    let service = s.service.clone();
    // Up to 10 000 items per call: parsed and joined off the async threads.
    match tokio::task::spawn_blocking(move || service.feedback(&model, &bytes)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&Error::Internal(format!("feedback task failed: {e}"))),
    }
}

async fn render_metrics(State(s): State<Arc<HttpState>>) -> Response {
    s.service.export_monitoring();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

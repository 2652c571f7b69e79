//! What every gRPC call passes before tonic decodes it: the access policy (scope by method) and
//! server-wide admission for `ModelInfer` (`--max-concurrent-requests`), decided from the
//! HTTP/2 headers alone. A tower layer, so refusals cost no message decoding.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};

use super::code_of;
use crate::auth::{self, Auth, AuthError, Scope};
use crate::core::infer::Protocol;
use crate::monitoring::metrics;
use crate::service;

const SERVICE_PREFIX: &str = "/inference.GRPCInferenceService/";
const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";
/// The one client-streaming method: its request body lasts as long as the stream.
const MODEL_STREAM_INFER: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
/// The standard health service stays open: kubelet and load-balancer probes send no credentials.
const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// The scope a gRPC method needs (`None`: open).
pub fn scope_of(path: &str) -> Option<Scope> {
    if path.starts_with(HEALTH_PREFIX) {
        return None;
    }
    match path.strip_prefix(SERVICE_PREFIX) {
        Some("RepositoryIndex" | "RepositoryModelLoad" | "RepositoryModelUnload") => {
            Some(Scope::Admin)
        }
        // Unknown services and methods: tonic answers UNIMPLEMENTED, after the infer check.
        _ => Some(Scope::Infer),
    }
}

pub fn auth_status(e: &AuthError) -> Status {
    match e {
        AuthError::Missing { .. } | AuthError::Invalid { .. } => {
            Status::unauthenticated(e.to_string())
        }
        AuthError::LoopbackOnly => Status::permission_denied(e.to_string()),
    }
}

#[derive(Clone)]
pub struct Guard {
    /// How long a unary call's request message may take to arrive (`--request-read-timeout-secs`).
    pub read_timeout: Duration,
    pub auth: Arc<Auth>,
    pub admission: Arc<Semaphore>,
    pub max_concurrent_requests: usize,
    pub service: Arc<service::Service>,
}

impl<S> Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guarded<S> {
    inner: S,
    guard: Guard,
}

type HttpResponse = http::Response<tonic::body::Body>;
type HttpRequest = http::Request<tonic::body::Body>;

/// A request body that must end by a deadline: a unary message that trickles in (a slow-loris
/// client) fails with DEADLINE_EXCEEDED instead of holding the call open.
struct Deadline {
    inner: tonic::body::Body,
    due: tokio::time::Instant,
    /// Armed at the first wait only: a small message usually arrives with its headers, and a
    /// timer per call costs a timer-wheel entry and its removal.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    timeout: Duration,
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {}
            ready => return ready,
        }
        let due = this.due;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if sleep.as_mut().poll(cx).is_ready() {
            metrics::record_connection_error("grpc", "read_timeout");
            return Poll::Ready(Some(Err(Status::deadline_exceeded(format!(
                "the request message did not arrive within {:.1} s (see --request-read-timeout-secs)",
                this.timeout.as_secs_f64()
            )))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<S> Service<HttpRequest> for Guarded<S>
where
    S: Service<HttpRequest, Response = HttpResponse> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<HttpResponse, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let path = req.uri().path();
        if let Some(scope) = scope_of(path) {
            let peer = req
                .extensions()
                .get::<TcpConnectInfo>()
                .and_then(TcpConnectInfo::remote_addr);
            let authorization = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(http::HeaderValue::as_bytes);
            let caller = auth::effective_peer(peer.map(|p| p.ip()), auth::forwarded(req.headers()));
            if let Err(e) = self.guard.auth.check(scope, caller, authorization) {
                metrics::record_auth_refusal("grpc", scope.as_str(), e.label());
                if scope == Scope::Admin {
                    tracing::warn!(method = path, peer = %crate::http::guard::peer_text(peer), outcome = "refused", reason = e.label(), "admin call refused");
                }
                let response = auth_status(&e).into_http();
                return Box::pin(async move { Ok(response) });
            }
        }
        if path == MODEL_INFER && self.guard.admission.available_permits() == 0 {
            // Refused before the message is decoded; the slot itself is taken in the handler.
            let e = service::server_busy(self.guard.max_concurrent_requests);
            self.guard
                .service
                .record_refused(Protocol::Grpc, Instant::now(), "", &e);
            let response = Status::new(code_of(&e), e.to_string()).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let req = if path == MODEL_STREAM_INFER {
            req
        } else {
            let timeout = self.guard.read_timeout;
            let due = tokio::time::Instant::now() + timeout;
            req.map(|inner| {
                tonic::body::Body::new(Deadline {
                    inner,
                    due,
                    sleep: None,
                    timeout,
                })
            })
        };
        // The usual tower dance: the clone is ready only after poll_ready, so keep the ready one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_method() {
        assert_eq!(scope_of("/grpc.health.v1.Health/Check"), None);
        assert_eq!(
            scope_of("/inference.GRPCInferenceService/RepositoryModelLoad"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_of("/inference.GRPCInferenceService/RepositoryIndex"),
            Some(Scope::Admin)
        );
        assert_eq!(scope_of(MODEL_INFER), Some(Scope::Infer));
        assert_eq!(
            scope_of("/inference.GRPCInferenceService/ServerLive"),
            Some(Scope::Infer)
        );
        assert_eq!(scope_of("/other.Service/X"), Some(Scope::Infer));
    }
}

//! What every REST request passes before its handler: the access policy (scope by path), the
//! audit log of admin calls, and server-wide admission for inference (`--max-concurrent-requests`),
//! all decided from the headers alone, before any body is read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{HttpState, body, error_response};
use crate::auth::{self, AuthError, Scope};
use crate::core::infer::Protocol;
use crate::monitoring::metrics;
use crate::service;

/// The scope a path needs: everything that changes or lists server state is admin.
pub fn scope_of(path: &str) -> Scope {
    if path.starts_with("/admin/") || path == "/admin" || path.starts_with("/v2/repository/") {
        Scope::Admin
    } else {
        Scope::Infer
    }
}

/// The version an admin handler acted on, for the audit log (set as a response extension).
#[derive(Debug, Clone, Copy)]
pub struct AuditVersion(pub Option<u64>);

/// 401 with a `WWW-Authenticate` challenge, or 403 for the loopback-only default.
pub fn auth_response(e: &AuthError) -> Response {
    let status = match e {
        AuthError::Missing { .. } | AuthError::Invalid { .. } => StatusCode::UNAUTHORIZED,
        AuthError::LoopbackOnly => StatusCode::FORBIDDEN,
    };
    let mut response = (status, axum::Json(json!({ "error": e.to_string() }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// The model a path names (`.../models/{model}/...`), for logs and metrics.
fn model_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/');
    parts.find(|p| *p == "models")?;
    parts.next().filter(|m| !m.is_empty())
}

/// The admin action a request asks for, in one word.
fn action_of(method: &Method, path: &str) -> &'static str {
    let mut parts = path.rsplit('/');
    let last = parts.next().unwrap_or_default();
    let before = parts.next().unwrap_or_default();
    match (method, before, last) {
        (&Method::GET, _, "rollout") => return "rollout_status",
        (&Method::PUT, _, "rollout") => return "rollout_start",
        (&Method::POST, "rollout", "pause") => return "rollout_pause",
        (&Method::POST, "rollout", "resume") => return "rollout_resume",
        (&Method::POST, "rollout", "promote") => return "rollout_promote",
        (&Method::POST, "rollout", "abort") => return "rollout_abort",
        _ => {}
    }
    match (method, last) {
        (&Method::POST, "load") => "load",
        (&Method::POST, "unload") => "unload",
        (&Method::POST, "promote") => "promote",
        (&Method::POST, "index") => "index",
        (&Method::GET, "models") => "status",
        (&Method::GET, "skew") => "skew",
        _ => "other",
    }
}

/// The caller's address for the audit log.
pub fn peer_text(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "unknown".into(), |p| p.to_string())
}

/// Answers `response` to a request whose body will not be read, discarding the body politely.
fn refuse(s: &HttpState, req: Request, response: Response) -> Response {
    let leftover = body::Leftover::new(req.headers(), s.read_timeout, &s.stop);
    body::discard(req.into_body(), s.max_request_size as u64, &leftover);
    response
}

pub async fn guard(State(s): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let scope = scope_of(path);
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let caller = auth::effective_peer(peer.map(|p| p.ip()), auth::forwarded(req.headers()));
    if let Err(e) = s.auth.check(scope, caller, authorization) {
        metrics::record_auth_refusal("http", scope.as_str(), e.label());
        if scope == Scope::Admin {
            tracing::warn!(
                action = action_of(req.method(), path),
                model = %model_of(path).unwrap_or("-").escape_debug(),
                peer = %peer_text(peer),
                outcome = "refused",
                reason = e.label(),
                "admin call refused"
            );
        }
        let response = auth_response(&e);
        return refuse(&s, req, response);
    }
    match scope {
        Scope::Admin => {
            let action = action_of(req.method(), path);
            let model = model_of(path).map(str::to_owned);
            let response = next.run(req).await;
            let version = response
                .extensions()
                .get::<AuditVersion>()
                .and_then(|v| v.0);
            let status = response.status();
            let outcome = if status.is_success() { "ok" } else { "failed" };
            tracing::info!(
                action,
                model = %model.as_deref().unwrap_or("-").escape_debug(),
                version,
                outcome,
                status = status.as_u16(),
                peer = %peer_text(peer),
                "admin call"
            );
            response
        }
        Scope::Infer
            if req.method() == Method::POST
                && path.ends_with("/infer")
                && s.admission.available_permits() == 0 =>
        {
            // Server-wide admission, refused before the body is read; the slot itself is taken
            // once the body is in (`run_infer`), so slow uploads cannot hold them all.
            let e = service::server_busy(s.max_concurrent_requests);
            let model = model_of(path).unwrap_or_default();
            s.service
                .record_refused(Protocol::Http, Instant::now(), model, &e);
            let response = error_response(&e);
            refuse(&s, req, response)
        }
        Scope::Infer => next.run(req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        for admin in [
            "/admin/models",
            "/admin/models/m/promote",
            "/admin/models/m/versions/1/skew",
            "/v2/repository/index",
            "/v2/repository/models/m/load",
        ] {
            assert_eq!(scope_of(admin), Scope::Admin, "{admin}");
        }
        for infer in [
            "/v2/health/ready",
            "/v2/models/m/infer",
            "/v2/models/m/feedback",
            "/v2",
            "/metrics",
            "/administrator",
        ] {
            assert_eq!(scope_of(infer), Scope::Infer, "{infer}");
        }
    }

    #[test]
    fn audit_fields() {
        assert_eq!(model_of("/admin/models/iris/load"), Some("iris"));
        assert_eq!(model_of("/v2/repository/models/iris/unload"), Some("iris"));
        assert_eq!(model_of("/admin/models"), None);
        assert_eq!(action_of(&Method::GET, "/admin/models/iris/skew"), "skew");
        assert_eq!(
            action_of(&Method::POST, "/admin/models/iris/promote"),
            "promote"
        );
        assert_eq!(action_of(&Method::GET, "/admin/models"), "status");
        assert_eq!(
            action_of(&Method::POST, "/admin/models/iris/rollout/promote"),
            "rollout_promote"
        );
        assert_eq!(
            action_of(&Method::PUT, "/admin/models/iris/rollout"),
            "rollout_start"
        );
    }
}

//! Operator endpoints, under their own prefix (`/admin`) so they can be protected apart from the
//! predict endpoints; plus the V2 repository extension's load and unload.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::routing::RolloutSpec;
use crate::routing::controller::Action;
use serde_json::{Value, json};

use super::guard::AuditVersion;
use super::{HttpState, error_response};
use crate::error::Error;

pub fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/admin/models", get(models))
        .route("/admin/models/{model}/load", post(load))
        .route("/admin/models/{model}/unload", post(unload))
        .route("/admin/models/{model}/promote", post(promote))
        .route(
            "/admin/models/{model}/rollout",
            get(rollout_status).put(rollout_start),
        )
        .route(
            "/admin/models/{model}/rollout/{action}",
            post(rollout_action),
        )
        .route("/admin/models/{model}/skew", get(skew_default))
        .route("/admin/models/{model}/versions/{version}/skew", get(skew))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

async fn models(State(s): State<Arc<HttpState>>) -> Response {
    let now = std::time::SystemTime::now();
    let rows: Vec<Value> = s
        .service
        .status()
        .into_iter()
        .map(|v| {
            json!({
                "model": v.model,
                "version": v.version,
                "state": v.state,
                "pinned": v.pinned,
                "default": v.default,
                "loaded_secs_ago": v.loaded_at.and_then(|t| now.duration_since(t).ok()).map(|d| d.as_secs()),
                "load_ms": v.load_duration.map(|d| d.as_millis() as u64),
                "sha256": v.sha256,
                "reason": v.reason,
            })
        })
        .collect();
    axum::Json(json!({"mode": s.service.models().mode().as_str(), "models": rows})).into_response()
}

async fn load(State(s): State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    match s.service.load_model(&model).await {
        Ok(()) => axum::Json(json!({"model": model, "loaded": true})).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn unload(State(s): State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    match s.service.unload_model(&model).await {
        Ok(()) => axum::Json(json!({"model": model, "unloaded": true})).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Reads a control request's small JSON body; a bad one is a 400 naming `what` it should be.
async fn read_json<T: serde::de::DeserializeOwned>(
    s: &HttpState,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<T, Error> {
    let bytes = super::read_small_body(s, headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::invalid(format!("malformed {what}: {e}")))
}

/// Body `{"version": N}` pins N; `{"version": null}` unpins.
async fn promote(
    State(s): State<Arc<HttpState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let version = match read_json::<Value>(&s, &headers, body, "promote request JSON").await {
        Ok(v) => match &v["version"] {
            Value::Null => None,
            n => match n.as_u64().filter(|&n| n > 0) {
                Some(n) => Some(n),
                None => {
                    return error_response(&Error::invalid(format!(
                        "\"version\" must be a positive integer or null, not {n}"
                    )));
                }
            },
        },
        Err(e) => return error_response(&e),
    };
    let mut response = match s.service.promote(&model, version).await {
        Ok(pinned) => axum::Json(json!({"model": model, "pinned_version": pinned})).into_response(),
        Err(e) => error_response(&e),
    };
    response.extensions_mut().insert(AuditVersion(version));
    response
}

async fn rollout_status(State(s): State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    match s.service.rollout_status(&model) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Body: a rollout spec (`{"candidate": 2, "kind": "canary", "steps": [5, 25, 50, 100], ...}`).
async fn rollout_start(
    State(s): State<Arc<HttpState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let spec = match read_json::<RolloutSpec>(&s, &headers, body, "rollout spec").await {
        Ok(spec) => spec,
        Err(e) => return error_response(&e),
    };
    let candidate = spec.candidate;
    let mut response = match s.service.start_rollout(&model, spec).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    };
    response
        .extensions_mut()
        .insert(AuditVersion(Some(candidate)));
    response
}

/// `pause`, `resume`, `promote` or `abort`.
async fn rollout_action(
    State(s): State<Arc<HttpState>>,
    Path((model, action)): Path<(String, String)>,
) -> Response {
    let Some(action) = Action::parse(&action) else {
        return error_response(&Error::NotFound(format!(
            "no rollout action '{action}': use pause, resume, promote or abort"
        )));
    };
    match s.service.rollout_action(&model, action).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The version's training/serving skew over its window, worst feature first.
async fn skew(
    State(s): State<Arc<HttpState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    match s.service.skew_report(&model, &version) {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

/// The same for the version serving requests that name none.
async fn skew_default(State(s): State<Arc<HttpState>>, Path(model): Path<String>) -> Response {
    match s.service.skew_report(&model, "") {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => error_response(&e),
    }
}

//! The one error type of the serving path.
//!
//! Each variant decides the HTTP status, the gRPC code and the short, stable label used in metrics,
//! so REST and gRPC report the same failure the same way. Messages name the problem (the model, the
//! input, what was expected) because they go back to the caller verbatim.

use axum::http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or does not fit the model's signature.
    #[error("{0}")]
    InvalidInput(String),
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request body is over the configured limit.
    #[error("request body of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge { size: u64, limit: u64 },
    /// The model (or the server) exists but cannot serve now: loading, unloading, shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// A bounded queue is full; the caller should back off and retry.
    #[error("{0}")]
    Overloaded(String),
    /// The request's deadline passed before it could run.
    #[error("{0}")]
    Timeout(String),
    /// The caller went away before its request ran.
    #[error("{0}")]
    Cancelled(String),
    /// ONNX Runtime failed while running the model.
    #[error("{0}")]
    Inference(String),
    /// The operation is not available in this server's configuration.
    #[error("{0}")]
    Unimplemented(String),
    /// The operation conflicts with the current state (for example, loading in a control mode that
    /// forbids it).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bug or an environment problem on our side.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// The label used in metrics (`outcome`/`reason`): short, stable, low cardinality.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::NotFound(_) => "model_not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::Unavailable(_) => "unavailable",
            Self::Overloaded(_) => "overloaded",
            Self::Timeout(_) => "timeout",
            Self::Cancelled(_) => "cancelled",
            Self::Inference(_) => "inference",
            Self::Unimplemented(_) => "unimplemented",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::Internal(_) => "internal",
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            // nginx's "client closed request"; the caller never reads it, but logs and metrics do.
            Self::Cancelled(_) => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            Self::Inference(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::FailedPrecondition(_) => StatusCode::CONFLICT,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Self::InvalidInput(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::PayloadTooLarge { .. } => Code::ResourceExhausted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Overloaded(_) => Code::ResourceExhausted,
            Self::Timeout(_) => Code::DeadlineExceeded,
            Self::Cancelled(_) => Code::Cancelled,
            Self::Inference(_) | Self::Internal(_) => Code::Internal,
            Self::Unimplemented(_) => Code::Unimplemented,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
        }
    }

    /// Adds context in front of the message, keeping the variant (and so the status code).
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        let wrap = |m: String| format!("{prefix}: {m}");
        match self {
            Self::InvalidInput(m) => Self::InvalidInput(wrap(m)),
            Self::NotFound(m) => Self::NotFound(wrap(m)),
            Self::Unavailable(m) => Self::Unavailable(wrap(m)),
            Self::Overloaded(m) => Self::Overloaded(wrap(m)),
            Self::Timeout(m) => Self::Timeout(wrap(m)),
            Self::Cancelled(m) => Self::Cancelled(wrap(m)),
            Self::Inference(m) => Self::Inference(wrap(m)),
            Self::Unimplemented(m) => Self::Unimplemented(wrap(m)),
            Self::FailedPrecondition(m) => Self::FailedPrecondition(wrap(m)),
            Self::Internal(m) => Self::Internal(wrap(m)),
            other @ Self::PayloadTooLarge { .. } => other,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_maps_consistently() {
        let cases = [
            (Error::invalid("x"), 400, tonic::Code::InvalidArgument),
            (Error::NotFound("x".into()), 404, tonic::Code::NotFound),
            (
                Error::PayloadTooLarge { size: 2, limit: 1 },
                413,
                tonic::Code::ResourceExhausted,
            ),
            (
                Error::Unavailable("x".into()),
                503,
                tonic::Code::Unavailable,
            ),
            (
                Error::Overloaded("x".into()),
                429,
                tonic::Code::ResourceExhausted,
            ),
            (
                Error::Timeout("x".into()),
                504,
                tonic::Code::DeadlineExceeded,
            ),
            (Error::Inference("x".into()), 500, tonic::Code::Internal),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.http_status().as_u16(), status, "{e:?}");
            assert_eq!(e.grpc_code(), code, "{e:?}");
            assert!(!e.label().is_empty());
        }
    }

    #[test]
    fn context_keeps_the_variant() {
        let e = Error::invalid("bad shape").context("input 'X'");
        assert_eq!(e.to_string(), "input 'X': bad shape");
        assert_eq!(e.http_status(), StatusCode::BAD_REQUEST);
    }
}

//! The one error type of the serving path.
//!
//! Each variant has a short, stable label used in metrics; the front ends map variants to their
//! own codes (`http::status_of`, `grpc::code_of`), so the core knows no transport and REST and
//! gRPC report the same failure the same way. Messages name the problem (the model, the
//! input, what was expected) because they go back to the caller verbatim.

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed or does not fit the model's signature.
    #[error("{0}")]
    InvalidInput(String),
    /// The model refused values that fit its signature, at run time (an index out of range, say).
    /// The caller gets the same answer as for any invalid input, but a rollout counts it against
    /// the version that refused: another version may answer the same request.
    #[error("{0}")]
    Rejected(String),
    /// No such model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request body is over the configured limit.
    #[error("request body of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge { size: u64, limit: u64 },
    /// The request's headers or body did not arrive within the read timeout (a slow or stalled
    /// client).
    #[error("{0}")]
    ReadTimeout(String),
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

    /// A failure of the server or the model rather than of the caller's request: what a rollout's
    /// error-rate check counts (inference errors, timeouts, overload, unavailability, bugs).
    pub fn server_side(&self) -> bool {
        matches!(
            self,
            Self::Inference(_)
                | Self::Timeout(_)
                | Self::Overloaded(_)
                | Self::Unavailable(_)
                | Self::Internal(_)
        )
    }

    /// What a rollout's error-rate check counts against the version that ran the request: its
    /// server-side failures, and the inputs it refused at run time.
    pub fn fails_the_version(&self) -> bool {
        self.server_side() || matches!(self, Self::Rejected(_))
    }

    /// The label used in metrics (`outcome`/`reason`): short, stable, low cardinality.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "invalid_input",
            Self::Rejected(_) => "rejected",
            Self::NotFound(_) => "model_not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ReadTimeout(_) => "read_timeout",
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

    /// Adds context in front of the message, keeping the variant (and so the status code).
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        let wrap = |m: String| format!("{prefix}: {m}");
        match self {
            Self::InvalidInput(m) => Self::InvalidInput(wrap(m)),
            Self::Rejected(m) => Self::Rejected(wrap(m)),
            Self::NotFound(m) => Self::NotFound(wrap(m)),
            Self::ReadTimeout(m) => Self::ReadTimeout(wrap(m)),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let all = [
            Error::invalid("x"),
            Error::Rejected("x".into()),
            Error::NotFound("x".into()),
            Error::PayloadTooLarge { size: 2, limit: 1 },
            Error::ReadTimeout("x".into()),
            Error::Unavailable("x".into()),
            Error::Overloaded("x".into()),
            Error::Timeout("x".into()),
            Error::Cancelled("x".into()),
            Error::Inference("x".into()),
            Error::Unimplemented("x".into()),
            Error::FailedPrecondition("x".into()),
            Error::Internal("x".into()),
        ];
        let labels: std::collections::HashSet<_> = all.iter().map(Error::label).collect();
        assert_eq!(labels.len(), all.len());
    }

    #[test]
    fn a_run_time_refusal_counts_against_the_version_a_bad_input_does_not() {
        assert!(Error::Rejected("index 1000 out of range".into()).fails_the_version());
        assert!(Error::Inference("x".into()).fails_the_version());
        assert!(!Error::invalid("wrong shape").fails_the_version());
        assert!(!Error::Rejected("x".into()).server_side());
    }

    #[test]
    fn context_keeps_the_variant() {
        let e = Error::invalid("bad shape").context("input 'X'");
        assert_eq!(e.to_string(), "input 'X': bad shape");
        assert!(matches!(e, Error::InvalidInput(_)));
    }
}

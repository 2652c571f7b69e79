//! Protocol-agnostic inference requests and responses. Front ends decode into these and encode
//! from them; everything between (routing, validation, batching, running) sees only these types.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::tensor::Tensor;
use crate::error::{Error, Result};

/// A request or response parameter value (V2 `parameters`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    String(String),
}

pub type Parameters = BTreeMap<String, ParamValue>;

/// Which front end a request came through; a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    /// Caller's request id, echoed in the response.
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Names of the outputs to return; empty means all of them.
    pub outputs: Vec<String>,
    pub parameters: Parameters,
}

impl InferRequest {
    /// The request's queue deadline: the `timeout` parameter in microseconds, as Triton's
    /// schedule-policy extension defines it. `None` when absent or 0.
    pub fn timeout(&self) -> Result<Option<Duration>> {
        let us = match self.parameters.get("timeout") {
            None => return Ok(None),
            Some(ParamValue::Int(v)) if *v >= 0 => *v as u64,
            Some(ParamValue::Uint(v)) => *v,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "parameter 'timeout' must be a non-negative integer number of microseconds, got {other:?}"
                )));
            }
        };
        Ok((us > 0).then(|| Duration::from_micros(us)))
    }
}

#[derive(Debug, Clone)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: u64,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
    pub parameters: Parameters,
}

/// The request parameter that carries a sticky A/B key (for callers that cannot set a header).
pub const ROUTING_KEY: &str = "routing_key";

/// Parses the version a caller named: empty means "let the server choose".
pub fn parse_version(model: &str, version: &str) -> Result<Option<u64>> {
    if version.is_empty() {
        return Ok(None);
    }
    match version.parse::<u64>() {
        Ok(v) if v > 0 => Ok(Some(v)),
        _ => Err(Error::NotFound(format!(
            "model '{model}' has no version '{version}' (versions are positive integers)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_parameter() {
        let mut r = InferRequest::default();
        assert_eq!(r.timeout().unwrap(), None);
        r.parameters.insert("timeout".into(), ParamValue::Int(1500));
        assert_eq!(r.timeout().unwrap(), Some(Duration::from_micros(1500)));
        r.parameters.insert("timeout".into(), ParamValue::Int(0));
        assert_eq!(r.timeout().unwrap(), None);
        r.parameters
            .insert("timeout".into(), ParamValue::String("1s".into()));
        assert!(r.timeout().is_err());
        r.parameters.insert("timeout".into(), ParamValue::Int(-3));
        assert!(r.timeout().is_err());
    }

    #[test]
    fn versions_are_positive_integers() {
        assert_eq!(parse_version("m", "").unwrap(), None);
        assert_eq!(parse_version("m", "3").unwrap(), Some(3));
        for bad in ["0", "-1", "v2", "1.0"] {
            let e = parse_version("m", bad).unwrap_err();
            assert!(matches!(e, crate::error::Error::NotFound(_)), "{bad}");
        }
    }
}

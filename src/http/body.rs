//! Reading request bodies: the size limit (413), `Content-Encoding` (gzip, deflate, as
//! `tritonclient` can send), and the binary extension's header.

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::HEADER_CONTENT_LENGTH;
use crate::error::{Error, Result};

fn too_large(size: u64, limit: usize) -> Error {
    Error::PayloadTooLarge {
        size,
        limit: limit as u64,
    }
}

/// Reads the whole body, refusing more than `limit` bytes (before and after decompression).
pub async fn read(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(len, limit));
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(too_large(limit as u64 + 1, limit));
        }
        Err(e) => return Err(Error::invalid(format!("cannot read the request body: {e}"))),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(bytes),
        Some("gzip") => inflate(flate2::read::GzDecoder::new(&bytes[..]), "gzip", limit),
        Some("deflate") => inflate(flate2::read::ZlibDecoder::new(&bytes[..]), "deflate", limit),
        Some(other) => Err(Error::invalid(format!(
            "unsupported Content-Encoding '{other}' (supported: gzip, deflate)"
        ))),
    }
}

fn inflate(reader: impl Read, name: &str, limit: usize) -> Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Error::invalid(format!(
                "the {name} request body cannot be decompressed: {e}"
            ))
        })?;
    if out.len() > limit {
        return Err(too_large(out.len() as u64, limit));
    }
    Ok(Bytes::from(out))
}

/// `Inference-Header-Content-Length`, when present: the body then carries binary tensor data.
pub fn header_length(headers: &HeaderMap) -> Result<Option<usize>> {
    match headers.get(HEADER_CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map(Some)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Inference-Header-Content-Length must be a byte count, not {v:?}"
                ))
            }),
    }
}

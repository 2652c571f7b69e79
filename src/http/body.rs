//! Reading request bodies: the size limit (413), the read deadline (408), `Content-Encoding`
//! (gzip, deflate, as `tritonclient` can send), and the binary extension's header.
//!
//! A refused body is not simply dropped: clients such as Python `requests` write the whole body
//! before they read the answer, and a server that closes on them leaves them with a broken pipe
//! instead of the 413 and its message. So what remains is read and thrown away in the
//! background, up to a bounded amount and until the read deadline, while the answer goes out.

use std::io::Read;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::HEADER_CONTENT_LENGTH;
use crate::error::{Error, Result};
use crate::shutdown;

fn too_large(size: u64, limit: usize) -> Error {
    Error::PayloadTooLarge {
        size,
        limit: limit as u64,
    }
}

/// The declared `Content-Length`, if any.
pub fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// What to do with a body that will not (all) be read: its read deadline, whether the client is
/// waiting for `100 Continue` before it sends the body, and the server's shutdown signal.
#[derive(Clone)]
pub struct Leftover {
    pub deadline: Instant,
    pub expect_continue: bool,
    pub stop: shutdown::Signal,
}

impl Leftover {
    /// For a request that arrived now.
    pub fn new(headers: &HeaderMap, read_timeout: Duration, stop: &shutdown::Signal) -> Self {
        Self {
            deadline: Instant::now() + read_timeout,
            expect_continue: headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
            stop: stop.clone(),
        }
    }
}

/// Reads and discards up to `budget` bytes of `body` in the background, until the read deadline or
/// shutdown, so a client that writes its whole body before reading can read the answer it gets
/// early. A client that asked for `100 Continue` has sent nothing yet: its body is dropped, so
/// it is never invited to upload what will be thrown away.
pub fn discard(body: Body, budget: u64, how: &Leftover) {
    if how.expect_continue {
        return;
    }
    let (deadline, stop) = (how.deadline, how.stop.clone());
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0u64;
        let stopped = stop.wait();
        tokio::pin!(stopped);
        while seen <= budget {
            let frame = tokio::select! {
                () = &mut stopped => return,
                f = tokio::time::timeout_at(deadline, body.frame()) => f,
            };
            match frame {
                Ok(Some(Ok(frame))) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                }
                _ => return,
            }
        }
    });
}

/// Reads the whole (still encoded) body, refusing more than `limit` bytes and a body that has not
/// arrived by the read deadline. What a refused client still sends is discarded in the background.
pub async fn read(body: Body, headers: &HeaderMap, limit: usize, how: &Leftover) -> Result<Bytes> {
    let deadline = how.deadline;
    let declared = content_length(headers);
    if let Some(len) = declared
        && len > limit as u64
    {
        // Discard what fits the budget; a body larger than that closes the connection.
        if len <= 2 * limit as u64 {
            discard(body, len, how);
        }
        return Err(too_large(len, limit));
    }
    let mut body = body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(Error::ReadTimeout(format!(
                    "the request body did not arrive in time ({} of {} bytes received; \
                     see --request-read-timeout-secs)",
                    total,
                    declared.map_or("unknown".into(), |d| d.to_string())
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Error::invalid(format!("cannot read the request body: {e}")));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        total += data.len();
        if total > limit {
            discard(body, limit as u64, how);
            return Err(too_large(total as u64, limit));
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut all = BytesMut::with_capacity(total);
            for c in &chunks {
                all.extend_from_slice(c);
            }
            all.freeze()
        }
    })
}

/// The body's `Content-Encoding`, checked: `None` for identity.
pub fn encoding(headers: &HeaderMap) -> Result<Option<&'static str>> {
    let value = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match value.as_deref() {
        None | Some("") | Some("identity") => Ok(None),
        Some("gzip") => Ok(Some("gzip")),
        Some("deflate") => Ok(Some("deflate")),
        Some(other) => Err(Error::invalid(format!(
            "unsupported Content-Encoding '{other}' (supported: gzip, deflate)"
        ))),
    }
}

/// Decompresses a body read with `encoding`, refusing more than `limit` bytes of output.
/// CPU-bound: large bodies are decompressed off the async threads.
pub fn decompress(bytes: Bytes, encoding: Option<&str>, limit: usize) -> Result<Bytes> {
    match encoding {
        None => Ok(bytes),
        Some("gzip") => inflate(flate2::read::GzDecoder::new(&bytes[..]), "gzip", limit),
        Some(_) => inflate(flate2::read::ZlibDecoder::new(&bytes[..]), "deflate", limit),
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

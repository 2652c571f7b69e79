//! The limit of the transport itself: a bare hyper HTTP/1.1 server that answers every
//! `POST /v2/models/{any}/infer` with one FIXED V2 response shaped like `mlp_small`'s (one FP32
//! output `output`, shape [1, 4]). It reads each request body whole, so it pays the same transport
//! cost as Switchyard, but parses nothing and runs no model. `loadtest/compare.sh` divides
//! Switchyard's REST req/s by this server's (issue 13, goal 3).
//!
//! Same runtime as `switchyard serve`: tokio's multi-thread runtime with its default worker count,
//! TCP_NODELAY and HTTP/1.1 keep-alive on every connection.
//!
//! cargo run --release --example bare_hyper -- --port 9200 [--host 127.0.0.1]
//!
//! Also answers `GET /v2/models/{any}` (mlp_small's metadata as Switchyard returns it, which the
//! load generator reads to build its requests) and `GET /v2/health/ready`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// What `switchyard serve` answers for mlp_small with JSON outputs.
const INFER_JSON: &str = r#"{"model_name":"mlp_small","model_version":"1","outputs":[{"name":"output","datatype":"FP32","shape":[1,4],"data":[0.025532525,-0.024087707,-0.0070415908,0.007479824]}]}"#;

/// The JSON part of the binary form (Triton's extension): the 16 output bytes follow it.
const INFER_BINARY_HEADER: &str = r#"{"model_name":"mlp_small","model_version":"1","outputs":[{"name":"output","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}"#;
const OUTPUT: [f32; 4] = [
    0.025_532_525,
    -0.024_087_707,
    -0.007_041_590_8,
    0.007_479_824,
];

/// `GET /v2/models/mlp_small` as Switchyard answers it (the load generator reads `inputs`).
const METADATA: &str = r#"{"inputs":[{"datatype":"FP32","name":"input","shape":[-1,16]}],"name":"mlp_small","outputs":[{"datatype":"FP32","name":"output","shape":[-1,4]}],"parameters":{"device":"cpu","execution_provider":"CPUExecutionProvider","instances":2,"max_batch_size":64,"sha256":"3e192f5405f57db6b70df62b76a337b7cb4ca30927b18a973a63553ca460c2ea","version":"1"},"platform":"onnxruntime_onnx","versions":["1"]}"#;

const HEADER_LEN: HeaderName = HeaderName::from_static("inference-header-content-length");

/// The fixed bodies, built once: each response clones a `Bytes` (a reference count, no copy).
#[derive(Clone)]
struct Fixed {
    json: Bytes,
    binary: Bytes,
    binary_header_len: HeaderValue,
}

impl Fixed {
    fn new() -> Self {
        let mut binary = INFER_BINARY_HEADER.as_bytes().to_vec();
        OUTPUT
            .iter()
            .for_each(|x| binary.extend_from_slice(&x.to_le_bytes()));
        Self {
            json: Bytes::from_static(INFER_JSON.as_bytes()),
            binary: Bytes::from(binary),
            binary_header_len: HeaderValue::from(INFER_BINARY_HEADER.len()),
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        "application/json",
        Bytes::from_static(body.as_bytes()),
    )
}

async fn handle(fixed: Fixed, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let model_path = path.strip_prefix("/v2/models/");
    let infer = model_path.is_some_and(|p| p.ends_with("/infer"));
    if req.method() == Method::POST && infer {
        let binary = req.headers().contains_key(&HEADER_LEN);
        // Read the whole body, as a real server must, and drop it unparsed.
        if let Err(e) = req.into_body().collect().await {
            eprintln!("reading a request body: {e}");
            return Ok(json(
                StatusCode::BAD_REQUEST,
                r#"{"error":"could not read the request body"}"#,
            ));
        }
        return Ok(if binary {
            let mut resp = respond(
                StatusCode::OK,
                "application/octet-stream",
                fixed.binary.clone(),
            );
            resp.headers_mut()
                .insert(HEADER_LEN, fixed.binary_header_len.clone());
            resp
        } else {
            respond(StatusCode::OK, "application/json", fixed.json.clone())
        });
    }
    Ok(match (req.method(), path, model_path) {
        (&Method::GET, "/v2/health/ready" | "/v2/health/live", _) => {
            json(StatusCode::OK, r#"{"ready":true}"#)
        }
        (&Method::GET, _, Some(m)) if !m.is_empty() && !m.contains('/') => {
            json(StatusCode::OK, METADATA)
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"error":"bare_hyper answers POST /v2/models/{m}/infer, GET /v2/models/{m} and GET /v2/health/ready only"}"#,
        ),
    })
}

fn parse_args() -> Result<SocketAddr, String> {
    let mut host = "127.0.0.1".to_string();
    let mut port = "8000".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value,
            "--host" => host = value,
            _ => return Err(format!("unknown argument '{flag}' (--port P, --host H)")),
        }
    }
    format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("'{host}:{port}' is no socket address: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let addr = parse_args()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    eprintln!("bare_hyper listening on http://{addr}");
    let fixed = Fixed::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(true);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let fixed = fixed.clone();
        let conn = http.serve_connection(
            TokioIo::new(tcp),
            hyper::service::service_fn(move |req| handle(fixed.clone(), req)),
        );
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
}

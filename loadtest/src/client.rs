//! Connections to a target: one HTTP/1.1 connection per REST caller (like wrk), HTTP/2 channels
//! for gRPC. Every error is classified into a short kind for the report.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::payload::{Body, InputSpec};
use crate::pb;
use crate::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

/// What happened to one request: `Ok(())`, or the error kind (`http 429`, `grpc Unavailable`,
/// `connect`, `timeout`, `io`).
pub type Outcome = Result<(), String>;

pub fn infer_path(model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("/v2/models/{model}/infer")
    } else {
        format!("/v2/models/{model}/versions/{version}/infer")
    }
}

/// One HTTP/1.1 connection, reopened after an error.
pub struct RestConn {
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl RestConn {
    pub fn new(authority: &str) -> Self {
        Self {
            authority: authority.to_string(),
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let tcp = TcpStream::connect(&self.authority)
                .await
                .map_err(|_| "connect".to_string())?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|_| "connect".to_string())?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| "connect".to_string())
    }

    /// Sends one request and reads the whole answer. Returns the status and the body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<(u16, Bytes), String> {
        let authority = self.authority.clone();
        let sender = self.connect().await?;
        sender.ready().await.map_err(|_| "io".to_string())?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, authority);
        req = match header_len {
            Some(n) => req
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .header("Inference-Header-Content-Length", n),
            None => req.header(hyper::header::CONTENT_TYPE, "application/json"),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("request: {e}"))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|_| "io".to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| "io".to_string())?
                .to_bytes();
            Ok((status, body))
        }
        .await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    pub async fn infer(&mut self, path: &str, body: &Body) -> Outcome {
        let Body::Rest { bytes, header_len } = body else {
            return Err("internal: gRPC body on a REST target".into());
        };
        match self
            .call(Method::POST, path, bytes.clone(), *header_len)
            .await?
        {
            (200, _) => Ok(()),
            (status, _) => Err(format!("http {status}")),
        }
    }

    /// Drops the connection (after a timeout its state is unknown).
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

pub async fn grpc_channel(
    authority: &str,
    timeout: Duration,
) -> Result<GrpcInferenceServiceClient<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{authority}"))
        .map_err(|e| format!("grpc://{authority}: {e}"))?
        .tcp_nodelay(true)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to grpc://{authority}: {e}"))?;
    Ok(GrpcInferenceServiceClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

pub async fn grpc_infer(client: &mut GrpcInferenceServiceClient<Channel>, body: &Body) -> Outcome {
    let Body::Grpc(req) = body else {
        return Err("internal: REST body on a gRPC target".into());
    };
    match client.model_infer(req.clone()).await {
        Ok(_) => Ok(()),
        Err(status)
            if status.code() == tonic::Code::Unknown && status.message().contains("transport") =>
        {
            Err("io".into())
        }
        Err(status) => Err(format!("grpc {:?}", status.code())),
    }
}

/// The model's inputs, from `GET /v2/models/{m}[/versions/{v}]` or the ModelMetadata RPC.
pub async fn fetch_inputs(
    authority: &str,
    grpc: bool,
    model: &str,
    version: &str,
    timeout: Duration,
) -> Result<Vec<InputSpec>, String> {
    if grpc {
        let mut c = grpc_channel(authority, timeout).await?;
        let m = c
            .model_metadata(pb::ModelMetadataRequest {
                name: model.into(),
                version: version.into(),
            })
            .await
            .map_err(|s| {
                format!(
                    "model metadata of '{model}' from grpc://{authority}: {}",
                    s.message()
                )
            })?
            .into_inner();
        return Ok(m
            .inputs
            .into_iter()
            .map(|t| InputSpec {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
            })
            .collect());
    }
    let path = if version.is_empty() {
        format!("/v2/models/{model}")
    } else {
        format!("/v2/models/{model}/versions/{version}")
    };
    let mut conn = RestConn::new(authority);
    let (status, body) = conn
        .call(Method::GET, &path, Bytes::new(), None)
        .await
        .map_err(|e| format!("GET http://{authority}{path}: {e}"))?;
    if status != 200 {
        return Err(format!(
            "GET http://{authority}{path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("model metadata: {e}"))?;
    let inputs = v["inputs"]
        .as_array()
        .ok_or("model metadata has no inputs")?;
    inputs
        .iter()
        .map(|t| {
            Ok(InputSpec {
                name: t["name"]
                    .as_str()
                    .ok_or("input without a name")?
                    .to_string(),
                datatype: t["datatype"]
                    .as_str()
                    .ok_or("input without a datatype")?
                    .to_string(),
                shape: serde_json::from_value(t["shape"].clone())
                    .map_err(|e| format!("input shape: {e}"))?,
            })
        })
        .collect()
}

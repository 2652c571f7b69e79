//! Connections to a target: one HTTP/1.1 connection per REST caller (like wrk), plain or TLS,
//! HTTP/2 channels for gRPC. Every error is classified into a short kind for the report.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HeaderValue;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

use crate::payload::{Body, InputSpec};
use crate::pb;
use crate::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::secure::Security;
use crate::target::Target;

/// What happened to one request: `Ok(())`, or the error kind (`http 429`, `grpc Unavailable`,
/// `connect`, `tls`, `timeout`, `io`).
pub type Outcome = Result<(), String>;

/// Where and how to reach one target, shared by all its connections.
pub struct Endpoint {
    /// `host:port`.
    pub authority: String,
    /// `http`, `https`, `grpc` or `grpcs`, for messages.
    scheme: &'static str,
    /// For https:// targets: the connector and the name the certificate must carry.
    rest_tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    /// For grpcs:// targets.
    grpc_tls: Option<ClientTlsConfig>,
    /// The `Host` header, built once.
    host: HeaderValue,
    /// `Authorization: Bearer ...`, built once.
    header: Option<HeaderValue>,
    /// The same as gRPC metadata.
    metadata: Option<AsciiMetadataValue>,
}

impl Endpoint {
    pub fn new(target: &Target, grpc: bool, security: &Security) -> Result<Self, String> {
        let (rest_tls, grpc_tls) = match (target.tls, grpc) {
            (false, _) => (None, None),
            (true, true) => (None, Some(security.grpc_tls(&target.host))),
            (true, false) => {
                let connector = security
                    .rest_tls
                    .clone()
                    .ok_or("internal: no TLS settings for an https:// target")?;
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| format!("'{}' is no TLS server name: {e}", target.host))?;
                (Some((connector, name)), None)
            }
        };
        let host = HeaderValue::from_str(&target.authority)
            .map_err(|_| format!("'{}' is no valid Host header", target.authority))?;
        Ok(Self {
            authority: target.authority.clone(),
            host,
            scheme: target.scheme(grpc),
            rest_tls,
            grpc_tls,
            header: security.header.clone(),
            metadata: security.metadata.clone(),
        })
    }

    /// `scheme://host:port`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

/// A failed REST call: the kind counted in the report, and what went wrong in words (shown when
/// fetching metadata fails, where a run stops).
#[derive(Debug)]
pub struct CallError {
    pub kind: &'static str,
    pub detail: String,
}

impl CallError {
    fn new(kind: &'static str, detail: impl fmt::Display) -> Self {
        Self {
            kind,
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.detail, self.kind)
    }
}

pub fn infer_path(model: &str, version: &str) -> String {
    if version.is_empty() {
        format!("/v2/models/{model}/infer")
    } else {
        format!("/v2/models/{model}/versions/{version}/infer")
    }
}

/// One HTTP/1.1 connection, plain or TLS, reopened after an error.
pub struct RestConn {
    endpoint: Arc<Endpoint>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, CallError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| CallError::new("connect", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl RestConn {
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        Self {
            endpoint,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, CallError> {
        let usable = self.sender.as_ref().is_some_and(|s| !s.is_closed());
        if !usable {
            let tcp = TcpStream::connect(&self.endpoint.authority)
                .await
                .map_err(|e| CallError::new("connect", e))?;
            let _ = tcp.set_nodelay(true);
            let sender = match &self.endpoint.rest_tls {
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| CallError::new("tls", format!("TLS handshake: {e}")))?;
                    handshake(tls).await?
                }
                None => handshake(tcp).await?,
            };
            self.sender = Some(sender);
        }
        self.sender
            .as_mut()
            .ok_or_else(|| CallError::new("connect", "no connection"))
    }

    /// Sends one request and reads the whole answer. Returns the status and the body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Bytes,
        header_len: Option<usize>,
    ) -> Result<(u16, Bytes), CallError> {
        let endpoint = self.endpoint.clone();
        let sender = self.connect().await?;
        sender.ready().await.map_err(|e| CallError::new("io", e))?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, endpoint.host.clone());
        if let Some(auth) = &endpoint.header {
            req = req.header(hyper::header::AUTHORIZATION, auth.clone());
        }
        req = match header_len {
            Some(n) => req
                .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                .header("Inference-Header-Content-Length", n),
            None => req.header(hyper::header::CONTENT_TYPE, "application/json"),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| CallError::new("request", e))?;
        let result = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| CallError::new("io", e))?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::new("io", e))?
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
            .await
        {
            Ok((200, _)) => Ok(()),
            Ok((status, _)) => Err(format!("http {status}")),
            Err(e) => Err(e.kind.to_string()),
        }
    }

    /// Drops the connection (after a timeout its state is unknown).
    pub fn reset(&mut self) {
        self.sender = None;
    }
}

/// Adds the token to every gRPC call, metadata included.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

/// The client for one-off calls (model metadata).
pub type MetadataClient = GrpcInferenceServiceClient<InterceptedService<Channel, Auth>>;

const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Sends a pre-encoded message and hands the answer back as bytes, undecoded: the REST client
/// sends a body serialised once and does not parse the answer, and the gRPC one must cost as
/// little, or the load generator measures its own protobuf work on the cores it shares.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// One HTTP/2 connection that sends ModelInfer calls (with `Auth`'s token); clones share it.
#[derive(Clone)]
pub struct GrpcClient {
    grpc: tonic::client::Grpc<InterceptedService<Channel, Auth>>,
}

/// Opens one HTTP/2 connection. `timeout` bounds each call made through it (`None`: the caller
/// bounds its calls itself, which saves a second timer per call).
async fn connect(endpoint: &Endpoint, timeout: Option<Duration>) -> Result<Channel, String> {
    let url = endpoint.url();
    let scheme = if endpoint.grpc_tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut builder = Channel::from_shared(format!("{scheme}://{}", endpoint.authority))
        .map_err(|e| format!("{url}: {e}"))?
        .tcp_nodelay(true);
    if let Some(t) = timeout {
        builder = builder.timeout(t);
    }
    if let Some(tls) = &endpoint.grpc_tls {
        builder = builder
            .tls_config(tls.clone())
            .map_err(|e| format!("{url}: TLS settings: {e}"))?;
    }
    builder.connect().await.map_err(|e| {
        // tonic's top-level message is just "transport error"; the cause says why.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        format!("cannot connect to {url}: {e}{cause}")
    })
}

pub async fn grpc_channel(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<MetadataClient, String> {
    let channel = connect(endpoint, Some(timeout)).await?;
    Ok(
        GrpcInferenceServiceClient::with_interceptor(channel, Auth(endpoint.metadata.clone()))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    )
}

/// A connection for the load itself (callers bound each call with their own timeout).
pub async fn grpc_load_channel(endpoint: &Endpoint) -> Result<GrpcClient, String> {
    let channel = connect(endpoint, None).await?;
    let authed = InterceptedService::new(channel, Auth(endpoint.metadata.clone()));
    Ok(GrpcClient {
        grpc: tonic::client::Grpc::new(authed)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX),
    })
}

pub async fn grpc_infer(client: &mut GrpcClient, body: &Body) -> Outcome {
    let Body::Grpc(message) = body else {
        return Err("internal: REST body on a gRPC target".into());
    };
    // Not ready: the connection failed (tonic's generated clients say "transport error" then).
    if client.grpc.ready().await.is_err() {
        return Err("io".into());
    }
    let req = tonic::Request::new(message.clone());
    let path = hyper::http::uri::PathAndQuery::from_static(MODEL_INFER);
    match client.grpc.unary(req, path, RawCodec).await {
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
    endpoint: &Arc<Endpoint>,
    grpc: bool,
    model: &str,
    version: &str,
    timeout: Duration,
) -> Result<Vec<InputSpec>, String> {
    if grpc {
        let mut c = grpc_channel(endpoint, timeout).await?;
        let m = c
            .model_metadata(pb::ModelMetadataRequest {
                name: model.into(),
                version: version.into(),
            })
            .await
            .map_err(|s| {
                format!(
                    "model metadata of '{model}' from {}: {} ({:?})",
                    endpoint.url(),
                    s.message(),
                    s.code()
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
    let url = endpoint.url();
    let mut conn = RestConn::new(endpoint.clone());
    let (status, body) =
        tokio::time::timeout(timeout, conn.call(Method::GET, &path, Bytes::new(), None))
            .await
            .map_err(|_| format!("GET {url}{path}: no answer within {timeout:?}"))?
            .map_err(|e| format!("GET {url}{path}: {e}"))?;
    if status != 200 {
        let hint = match (status, endpoint.header.is_some()) {
            (401, false) => " (give a token with --token, --token-file or SWITCHYARD_TOKEN)",
            _ => "",
        };
        return Err(format!(
            "GET {url}{path} answered {status}: {}{hint}",
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

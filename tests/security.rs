//! The control plane is safe to expose: tokens and scopes (REST, gRPC, CLI), the loopback-only
//! default seen from a non-loopback address (in a network namespace made by the test), TLS with
//! real clients, admission before work, slow clients, and a 413 a write-first client can read.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, breast_cancer_rows, metric_sum};
use switchyard::grpc::pb;
use switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn write_tokens(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

async fn get_with(s: &TestServer, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = s.client.get(s.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let www = r.headers().get("www-authenticate").cloned();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    if status == 401 {
        assert_eq!(www.unwrap(), "Bearer", "401 carries a Bearer challenge");
    }
    (status, body)
}

fn bc_body(rows: usize) -> serde_json::Value {
    serde_json::json!({"inputs": [{"name": "X", "shape": [rows, 30], "datatype": "FP32",
                                   "data": breast_cancer_rows(rows)}]})
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_tokens_gate_admin_calls_and_rotate_without_restart() {
    // No token file: loopback callers may administer (the safe default).
    let open = TestServer::start(&["iris"]).await;
    assert_eq!(get_with(&open, "/admin/models", None).await.0, 200);
    drop(open);

    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), "admin", "# operators\nfirst-secret\n");
    let path = tokens.clone();
    let s = TestServer::start_configured(&["iris"], |a| a.admin_token_file = Some(path)).await;
    // Loopback included, a token is now required.
    let (status, body) = get_with(&s, "/admin/models", None).await;
    assert_eq!(status, 401);
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("admin scope"), "{msg}");
    let (status, body) = get_with(&s, "/admin/models", Some("first-secre")).await;
    assert_eq!(status, 401);
    assert!(
        !body["error"].as_str().unwrap().contains("first"),
        "never hints at a token"
    );
    assert_eq!(
        get_with(&s, "/admin/models", Some("first-secret")).await.0,
        200
    );
    // The repository extension is admin too; predict endpoints stay open.
    let r = s
        .client
        .post(s.url("/v2/repository/index"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(get_with(&s, "/v2/models/iris", None).await.0, 200);

    // Rotation: the file changes, the new token works and the old one stops, no restart.
    std::fs::write(&tokens, "second-secret-token\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_with(&s, "/admin/models", Some("second-secret-token"))
        .await
        .0
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the rotated token was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get_with(&s, "/admin/models", Some("first-secret")).await.0,
        401
    );
    let metrics = s.text("/metrics").await;
    assert!(
        metric_sum(
            &metrics,
            "switchyard_auth_refusals_total",
            &["protocol=\"http\"", "scope=\"admin\""]
        ) >= 3.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn infer_tokens_gate_predict_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let admin = write_tokens(dir.path(), "admin", "root-token\n");
    let infer = write_tokens(dir.path(), "infer", "app-token\nother-app\n");
    let reg = common::registry(&["breast_cancer"]);
    let mut a = common::args(reg.path());
    a.admin_token_file = Some(admin);
    a.infer_token_file = Some(infer);
    let mut s = TestServer::start_with(a).await;
    s.keep_registry(reg);
    // Readiness itself needs a token now.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_with(&s, "/v2/health/ready", Some("app-token")).await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = get_with(&s, "/v2/models/breast_cancer", None).await;
    assert_eq!(status, 401);
    assert!(body["error"].as_str().unwrap().contains("infer scope"));
    let url = s.url("/v2/models/breast_cancer/infer");
    for (token, want) in [
        (None, 401),
        (Some("nope"), 401),
        (Some("app-token"), 200),
        (Some("root-token"), 200),
    ] {
        let mut req = s.client.post(&url).json(&bc_body(2));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        assert_eq!(req.send().await.unwrap().status(), want, "{token:?}");
    }
    // An infer token is not an admin token.
    assert_eq!(
        get_with(&s, "/admin/models", Some("app-token")).await.0,
        401
    );
    assert_eq!(
        get_with(&s, "/admin/models", Some("root-token")).await.0,
        200
    );

    // gRPC: the same scopes through the `authorization` metadata key; health stays open.
    let addr = s.server.as_ref().unwrap().grpc_addr;
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let req = |token: Option<&str>| {
        let mut r = tonic::Request::new(pb::ModelMetadataRequest {
            name: "breast_cancer".into(),
            version: String::new(),
        });
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let e = c.model_metadata(req(None)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("infer scope"), "{}", e.message());
    assert!(c.model_metadata(req(Some("other-app"))).await.is_ok());
    let index = |token: Option<&str>| {
        let mut r = tonic::Request::new(pb::RepositoryIndexRequest::default());
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    };
    let e = c
        .repository_index(index(Some("app-token")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(e.message().contains("admin scope"));
    assert!(c.repository_index(index(Some("root-token"))).await.is_ok());
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    assert!(
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .is_ok(),
        "grpc.health.v1 stays open for probes"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_sends_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin = write_tokens(dir.path(), "admin", "cli-secret\n");
    let path = admin.clone();
    let s = TestServer::start_configured(&["iris"], |a| a.admin_token_file = Some(path)).await;
    let server = s.base.clone();
    let run = move |extra: Vec<String>, env_token: Option<&'static str>| {
        let mut cmd = Command::new(BIN);
        cmd.args(["models", "--server", &server]).args(extra);
        cmd.env_remove("SWITCHYARD_TOKEN")
            .env_remove("SWITCHYARD_TOKEN_FILE");
        if let Some(t) = env_token {
            cmd.env("SWITCHYARD_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(vec![], None)
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains("--token-file"), "{err}");
    let file = admin.display().to_string();
    let out = tokio::task::spawn_blocking({
        let run = run.clone();
        move || run(vec!["--token-file".into(), file], None)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("iris"));
    let out = tokio::task::spawn_blocking(move || run(vec![], Some("cli-secret")))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads an HTTP/1.1 response head and as much body as `Content-Length` says.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String)> {
    read_answer(stream, false)
}

/// As [`read_response`]; `head_only` for the answer to a HEAD request (headers, no body).
fn read_answer(stream: &mut TcpStream, head_only: bool) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            let len = if head_only { 0 } else { len };
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk)?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let body = String::from_utf8_lossy(&buf[end + 4..]).to_string();
            return Ok((status, body));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("connection closed after {} bytes", buf.len()),
    ))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes `request` on a fresh connection (from a blocking thread) and reads the answer.
async fn exchange(addr: SocketAddr, request: String) -> (u16, String) {
    tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(request.as_bytes()).unwrap();
        read_answer(&mut c, request.starts_with("HEAD ")).unwrap()
    })
    .await
    .unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_writes_first_reads_its_413() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| {
        a.max_request_size = 1 << 20;
    })
    .await;
    let addr = s.server.as_ref().unwrap().http_addr;
    // Like Python `requests`: the whole body goes out before anything is read.
    let status = tokio::task::spawn_blocking(move || {
        let body = vec![b' '; 3 << 19]; // 1.5 MiB of JSON whitespace
        let mut c = connect(addr);
        write!(
            c,
            "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        c.write_all(&body).unwrap();
        read_response(&mut c).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.0, 413);
    assert!(
        status.1.contains("over the limit of 1048576 bytes"),
        "{}",
        status.1
    );

    // Without Content-Length (chunked), the limit is found while reading: same answer.
    let (code, _) = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        write!(
            c,
            "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        let chunk = vec![b' '; 64 << 10];
        for _ in 0..20 {
            write!(c, "{:x}\r\n", chunk.len()).unwrap();
            c.write_all(&chunk).unwrap();
            c.write_all(b"\r\n").unwrap();
        }
        c.write_all(b"0\r\n\r\n").unwrap();
        read_response(&mut c).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(code, 413);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_come_before_the_body_is_read() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| {
        a.max_concurrent_requests = 1;
        a.request_read_timeout_secs = 60.0;
    })
    .await;
    let addr = s.server.as_ref().unwrap().http_addr;
    // An unknown model is answered from the headers: the body is never sent here, and the
    // answer still comes (long before the 60 s read timeout could produce one).
    let (code, body) = exchange(
        addr,
        "POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".into(),
    )
    .await;
    assert_eq!(code, 404, "{body}");

    // A slow upload holds no server-wide slot: with one slot, a request whose body has not
    // arrived does not keep another from being served.
    let mut slow = connect(addr);
    let payload = serde_json::to_vec(&bc_body(1)).unwrap();
    write!(
        slow,
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, _) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_body(1))
        .await;
    assert_eq!(code, 200);
    // With every slot taken (here by the test itself), a request is refused from its headers:
    // its body is never sent, and the answer still comes.
    let slot = s
        .server
        .as_ref()
        .unwrap()
        .admission
        .clone()
        .acquire_owned()
        .await
        .unwrap();
    let (code, body) = exchange(
        addr,
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
            .into(),
    )
    .await;
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("--max-concurrent-requests"), "{body}");
    // gRPC is refused before its message is decoded, the same way.
    let grpc = s.server.as_ref().unwrap().grpc_addr;
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let e = c
        .model_infer(pb::ModelInferRequest {
            model_name: "breast_cancer".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    // Each message of a stream needs a slot too: refused in-stream, the stream goes on.
    let msg = pb::ModelInferRequest {
        model_name: "breast_cancer".into(),
        id: "m1".into(),
        ..Default::default()
    };
    let mut stream = c
        .model_stream_infer(futures_util::stream::iter(vec![msg]))
        .await
        .unwrap()
        .into_inner();
    let answer = stream.message().await.unwrap().unwrap();
    assert!(
        answer.error_message.contains("--max-concurrent-requests"),
        "{answer:?}"
    );
    assert_eq!(answer.infer_response.unwrap().id, "m1");
    drop(slot);
    // The slow upload finishes normally once its body arrives.
    slow.write_all(&payload).unwrap();
    let (code, _) = tokio::task::spawn_blocking(move || read_response(&mut slow).unwrap())
        .await
        .unwrap();
    assert_eq!(code, 200);
    // A client that waits for `100 Continue` is answered with the refusal instead, never invited
    // to upload a body that would be thrown away.
    let (code, _) = exchange(
        addr,
        "POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
            .into(),
    )
    .await;
    assert_eq!(
        code, 404,
        "the first answer is the refusal, not 100 Continue"
    );
    let metrics = s.text("/metrics").await;
    assert!(
        metric_sum(
            &metrics,
            "switchyard_requests_total",
            &["model=\"breast_cancer\"", "outcome=\"overloaded\""]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_while_others_are_served() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| {
        a.request_read_timeout_secs = 1.0;
    })
    .await;
    let addr = s.server.as_ref().unwrap().http_addr;
    // Slow loris: headers trickle in a byte at a time and never finish.
    let loris = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        let started = Instant::now();
        let head = b"POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        c.write_all(head).unwrap();
        loop {
            if c.write_all(b"a").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
            // Closed by the server: a read sees EOF or a reset.
            c.set_nonblocking(true).unwrap();
            let mut b = [0u8; 64];
            let closed = match c.read(&mut b) {
                Ok(0) => true,
                Ok(_) => true,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            };
            c.set_nonblocking(false).unwrap();
            if closed {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the slow client was never cut off"
            );
        }
    });
    // Meanwhile everyone else is served.
    for _ in 0..20 {
        let (code, _) = s
            .post_json("/v2/models/breast_cancer/infer", &bc_body(1))
            .await;
        assert_eq!(code, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loris.await.unwrap();

    // A body that stalls half-way gets 408.
    let (code, body) = exchange(
        addr,
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inputs\""
            .into(),
    )
    .await;
    assert_eq!(code, 408, "{body}");
    assert!(body.contains("--request-read-timeout-secs"), "{body}");

    // An idle keep-alive connection is closed too.
    let closed = tokio::task::spawn_blocking(move || {
        let mut c = connect(addr);
        c.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (code, _) = read_response(&mut c).unwrap();
        assert_eq!(code, 200);
        let mut b = [0u8; 16];
        matches!(c.read(&mut b), Ok(0) | Err(_))
    })
    .await
    .unwrap();
    assert!(closed, "idle keep-alive connection stayed open");
    let metrics = s.text("/metrics").await;
    assert!(
        metric_sum(
            &metrics,
            "switchyard_connection_errors_total",
            &["reason=\"read_timeout\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric_sum(
            &metrics,
            "switchyard_requests_total",
            &["outcome=\"read_timeout\""]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_json_bodies_do_not_stall_small_requests() {
    let s = TestServer::start(&["breast_cancer"]).await;
    // ~12 MB of JSON numbers each: decoding takes a while (and fails validation afterwards).
    let numbers: Vec<f32> = (0..1_200_000).map(|i| (i % 1000) as f32 * 0.731).collect();
    let big = serde_json::to_vec(&serde_json::json!({"inputs": [
        {"name": "X", "shape": [numbers.len() / 30, 30], "datatype": "FP32", "data": numbers}]}))
    .unwrap();
    let big = bytes::Bytes::from(big);
    let url = s.url("/v2/models/breast_cancer/infer");
    let mut bigs = Vec::new();
    for _ in 0..4 {
        let (client, url, body) = (reqwest::Client::new(), url.clone(), big.clone());
        bigs.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.post(url).body(body).send().await.unwrap();
            r.bytes().await.unwrap();
            t.elapsed()
        }));
    }
    let mut small = Vec::new();
    while bigs.iter().any(|h| !h.is_finished()) {
        let t = Instant::now();
        let (code, _) = s
            .post_json("/v2/models/breast_cancer/infer", &bc_body(1))
            .await;
        assert_eq!(code, 200);
        small.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut big_times = Vec::new();
    for h in bigs {
        big_times.push(h.await.unwrap());
    }
    big_times.sort();
    let worst_small = small.iter().max().copied().unwrap_or_default();
    eprintln!(
        "big requests {big_times:?}; {} small ones, worst {worst_small:?}",
        small.len()
    );
    assert!(
        worst_small < big_times[0] / 2,
        "a small request waited {worst_small:?} while big bodies were decoded ({big_times:?})"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_message_that_trickles_in_is_cut_off() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| {
        a.request_read_timeout_secs = 1.0;
    })
    .await;
    let addr = s.server.as_ref().unwrap().grpc_addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{addr}/inference.GRPCInferenceService/ModelInfer"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    // A gRPC frame announcing 1000 bytes, of which 10 arrive; the rest never does.
    let mut frame = vec![0u8];
    frame.extend_from_slice(&1000u32.to_be_bytes());
    frame.extend_from_slice(&[0u8; 10]);
    send.send_data(bytes::Bytes::from(frame), false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("the server answers instead of waiting forever")
        .unwrap();
    let mut status = response.headers().get("grpc-status").cloned();
    let mut message = response.headers().get("grpc-message").cloned();
    if status.is_none() {
        let mut body = response.into_body();
        while body.data().await.is_some() {}
        let trailers = body.trailers().await.unwrap().unwrap_or_default();
        status = trailers.get("grpc-status").cloned();
        message = trailers.get("grpc-message").cloned();
    }
    assert_eq!(status.unwrap(), "4", "DEADLINE_EXCEEDED: {message:?}");
    drop(send);
    // Other callers were never affected.
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_paths_cannot_be_dressed_up_and_proxies_are_not_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = write_tokens(dir.path(), "admin", "the-admin-token\n");
    let s = TestServer::start_configured(&["iris"], |a| a.admin_token_file = Some(tokens)).await;
    let addr = s.server.as_ref().unwrap().http_addr;
    // Spellings a proxy or a client might normalise differently: none reaches an admin handler.
    for (method, path) in [
        ("GET", "//admin/models"),
        ("GET", "/%61dmin/models"),
        ("GET", "/admin/models/"),
        ("GET", "/ADMIN/models"),
        ("HEAD", "/admin/models"),
        ("POST", "/admin/models/iris/promote/"),
        ("POST", "/admin//models/iris/promote"),
        ("POST", "/v2/repository/models/iris%2Fx/load"),
        ("POST", "/v2//repository/index"),
    ] {
        let (code, body) = exchange(
            addr,
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n{{\"version\": 1}}"),
        )
        .await;
        assert!(
            code == 401 || code == 404,
            "{method} {path} answered {code}: {body}"
        );
    }
    let status = s.server.as_ref().unwrap().service.status();
    assert!(status.iter().all(|v| !v.pinned), "nothing was promoted");
    drop(s);

    // Without a token file, loopback may administer, but not through a proxy that forwarded the
    // request (its loopback address says nothing about the caller).
    let s = TestServer::start(&["iris"]).await;
    assert_eq!(get_with(&s, "/admin/models", None).await.0, 200);
    for header in [
        "X-Forwarded-For: 203.0.113.7",
        "Forwarded: for=203.0.113.7",
        "X-Real-IP: 203.0.113.7",
    ] {
        let addr = s.server.as_ref().unwrap().http_addr;
        let (code, body) = exchange(
            addr,
            format!("GET /admin/models HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n"),
        )
        .await;
        assert_eq!(code, 403, "{header}: {body}");
    }
}

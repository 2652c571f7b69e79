//! Runs the load generator briefly against a real Switchyard and checks its bookkeeping: every
//! request sent is counted once, as a success or as a classified error.

use std::path::PathBuf;
use std::process::Command;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use serde_json::Value;
use switchyard::cli::ServeArgs;
use switchyard::server::Server;

const LOADTEST: &str = env!("CARGO_BIN_EXE_switchyard-loadtest");

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

async fn start(configure: impl FnOnce(&mut ServeArgs)) -> Server {
    let mut args = ServeArgs::with_repository(models_dir());
    args.host = "127.0.0.1".into();
    args.http_port = 0;
    args.grpc_port = 0;
    configure(&mut args);
    let server = Server::start(args).await.unwrap();
    while !server.service.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server
}

/// Runs the load generator; a SWITCHYARD_TOKEN in the test's own environment is not passed on.
async fn run_loadtest(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(LOADTEST)
            .args(&args)
            .env_remove("SWITCHYARD_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

async fn loadtest(args: &[&str]) -> Value {
    let out = run_loadtest(args).await;
    assert!(
        out.status.success(),
        "loadtest failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One target replaying `request` (a request file, so no metadata is fetched): the first result.
async fn replay(
    target: &str,
    model: &str,
    request: &std::path::Path,
    concurrency: &str,
    requests: &str,
) -> Value {
    replay_with(target, model, request, concurrency, requests, &[]).await
}

/// `replay` with more options (token, CA).
async fn replay_with(
    target: &str,
    model: &str,
    request: &std::path::Path,
    concurrency: &str,
    requests: &str,
    extra: &[&str],
) -> Value {
    let request = request.display().to_string();
    let mut args = vec![
        "--target",
        target,
        "--model",
        model,
        "--request-file",
        &request,
        "--concurrency",
        concurrency,
        "--requests",
        requests,
        "--duration",
        "30s",
        "--warmup",
        "0s",
        "--json",
    ];
    args.extend_from_slice(extra);
    let doc = loadtest(&args).await;
    doc["results"][0].clone()
}

fn counts_add_up(r: &Value) {
    let errors: u64 = r["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        r["sent"].as_u64().unwrap(),
        r["ok"].as_u64().unwrap() + errors,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_and_mode_counts_add_up() {
    let s = start(|_| {}).await;
    let (http, grpc) = (s.http_addr, s.grpc_addr);
    let doc = loadtest(&[
        "--target",
        &format!("json=http://{http}"),
        "--target",
        &format!("bin=binary+http://{http}"),
        "--target",
        &format!("grpc=grpc://{grpc}"),
        "--model",
        "breast_cancer",
        "--concurrency",
        "4",
        "--batch",
        "2",
        "--requests",
        "200",
        "--duration",
        "20s",
        "--warmup",
        "0s",
        "--json",
    ])
    .await;
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        counts_add_up(r);
        assert_eq!(r["sent"], 200, "{r}");
        assert_eq!(r["ok"], 200, "{r}");
        assert!(r["latency_ms"]["p50"].as_f64().unwrap() > 0.0);
        assert!(r["rows_per_s"].as_f64().unwrap() > r["requests_per_s"].as_f64().unwrap());
    }
    assert_eq!(results[2]["protocol"], "grpc");

    // Open loop: a fixed number of requests at a fixed rate.
    let doc = loadtest(&[
        "--target",
        &format!("sy=http://{http}"),
        "--model",
        "iris",
        "--rate",
        "400",
        "--requests",
        "100",
        "--duration",
        "20s",
        "--warmup",
        "0s",
        "--json",
        "--plot",
        &std::env::temp_dir()
            .join(format!("sy-lt-{}.svg", std::process::id()))
            .display()
            .to_string(),
    ])
    .await;
    let r = &doc["results"][0];
    counts_add_up(r);
    assert_eq!(r["sent"], 100);
    s.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified() {
    // A queue of one request per version and one session: concurrent callers overflow it.
    let s = start(|a| {
        a.max_queue_size = 1;
        a.instances = 1;
        a.max_batch_size = 0;
    })
    .await;
    let http = s.http_addr;
    let request = std::env::temp_dir().join(format!("sy-lt-req-{}.json", std::process::id()));
    let rows: Vec<f32> = (0..30).map(|i| i as f32).collect();
    std::fs::write(
        &request,
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": rows}]}).to_string(),
    )
    .unwrap();
    let busy = &replay(
        &format!("busy=http://{http}"),
        "breast_cancer",
        &request,
        "32",
        "3000",
    )
    .await;
    counts_add_up(busy);
    assert_eq!(busy["sent"], 3000);
    assert!(
        busy["errors"]["http 429"].as_u64().unwrap_or(0) > 0,
        "the tiny queue overflows: {busy}"
    );
    assert!(busy["ok"].as_u64().unwrap() > 0);

    // A model that does not exist: every request is an http 404.
    let r = &replay(
        &format!("missing=http://{http}"),
        "no_such_model",
        &request,
        "2",
        "50",
    )
    .await;
    counts_add_up(r);
    assert_eq!(r["errors"]["http 404"], 50, "{r}");
    assert_eq!(r["ok"], 0);

    // Nothing listening: connect errors.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = &replay(
        &format!("down=http://{closed}"),
        "breast_cancer",
        &request,
        "1",
        "5",
    )
    .await;
    counts_add_up(r);
    assert_eq!(r["errors"]["connect"], 5, "{r}");
    s.shutdown();
}

/// A test CA (`ca.pem`) and a server certificate for localhost and 127.0.0.1 signed by it
/// (`server.pem`, `server.key`), as tests/tls.rs in the root crate makes them.
fn pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "loadtest test CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "switchyard");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_token() {
    let dir = pki();
    let path = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(dir.path().join("tokens"), "lt-infer-token\n").unwrap();
    std::fs::write(
        dir.path().join("token"),
        "# for the load test\nlt-infer-token\n",
    )
    .unwrap();
    let s = start(|a| {
        a.infer_token_file = Some(dir.path().join("tokens"));
        a.tls_cert = Some(dir.path().join("server.pem"));
        a.tls_key = Some(dir.path().join("server.key"));
    })
    .await;
    let (http, grpc) = (s.http_addr.port(), s.grpc_addr.port());
    let (ca, token) = (path("ca.pem"), path("token"));

    // With the token and the CA: every protocol over TLS, model metadata fetched the same way.
    let doc = loadtest(&[
        "--target",
        &format!("json=https://127.0.0.1:{http}"),
        "--target",
        &format!("bin=binary+https://localhost:{http}"),
        "--target",
        &format!("grpc=grpcs://localhost:{grpc}"),
        "--ca-cert",
        &ca,
        "--token-file",
        &token,
        "--model",
        "breast_cancer",
        "--concurrency",
        "4",
        "--requests",
        "100",
        "--duration",
        "20s",
        "--warmup",
        "0s",
        "--json",
    ])
    .await;
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    for r in results {
        counts_add_up(r);
        assert_eq!(
            (r["sent"].as_u64(), r["ok"].as_u64()),
            (Some(100), Some(100)),
            "{r}"
        );
    }
    assert_eq!(results[0]["url"], format!("https://127.0.0.1:{http}"));
    assert_eq!(results[2]["url"], format!("grpcs://localhost:{grpc}"));

    // The token given with --token.
    let request = dir.path().join("request.json");
    let rows: Vec<f32> = (0..30).map(|i| i as f32).collect();
    std::fs::write(
        &request,
        serde_json::json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": rows}]}).to_string(),
    )
    .unwrap();
    let r = &replay_with(
        &format!("tls=https://localhost:{http}"),
        "breast_cancer",
        &request,
        "2",
        "50",
        &["--ca-cert", &ca, "--token", "lt-infer-token"],
    )
    .await;
    assert_eq!(
        (r["sent"].as_u64(), r["ok"].as_u64()),
        (Some(50), Some(50)),
        "{r}"
    );

    // Without the token every request is refused, and counted as such.
    let r = &replay_with(
        &format!("tls=https://localhost:{http}"),
        "breast_cancer",
        &request,
        "2",
        "50",
        &["--ca-cert", &ca],
    )
    .await;
    counts_add_up(r);
    assert_eq!(r["errors"]["http 401"], 50, "{r}");
    assert_eq!(r["ok"], 0);
    let r = &replay_with(
        &format!("grpc=grpcs://localhost:{grpc}"),
        "breast_cancer",
        &request,
        "2",
        "50",
        &["--ca-cert", &ca],
    )
    .await;
    counts_add_up(r);
    assert_eq!(r["errors"]["grpc Unauthenticated"], 50, "{r}");

    // A wrong token is refused too.
    let r = &replay_with(
        &format!("tls=https://localhost:{http}"),
        "breast_cancer",
        &request,
        "1",
        "10",
        &["--ca-cert", &ca, "--token", "not-the-token"],
    )
    .await;
    assert_eq!(r["errors"]["http 401"], 10, "{r}");

    // Fetching the metadata without a token stops the run with a hint.
    let out = run_loadtest(&[
        "--target",
        &format!("tls=https://localhost:{http}"),
        "--ca-cert",
        &ca,
        "--model",
        "breast_cancer",
        "--requests",
        "1",
        "--warmup",
        "0s",
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("401") && err.contains("--token"), "{err}");

    // Without --ca-cert the system roots do not know the test CA: the run stops, naming TLS.
    let out = run_loadtest(&[
        "--target",
        &format!("tls=https://localhost:{http}"),
        "--token-file",
        &token,
        "--model",
        "breast_cancer",
        "--requests",
        "1",
        "--warmup",
        "0s",
    ])
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("TLS") || err.contains("CA"), "{err}");
    s.shutdown();
}

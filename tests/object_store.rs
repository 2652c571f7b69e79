//! The object-store registry against a real S3-compatible server: moto's server mode (from PyPI,
//! installed into the test venv), a fresh one per test on an ephemeral port. The server under test
//! reaches it through the same `--model-repository s3://bucket/prefix` and `--registry-option`
//! settings an operator uses; the test publishes, swaps, corrupts and removes versions with
//! `object_store`'s own S3 client, as a CI pipeline would with any S3 tool.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path as FsPath;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, breast_cancer_rows, metric_sum, python_venv, repo_root};
use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use switchyard::registry::{ObjectRegistry, Registry};
use tokio::net::{TcpListener, TcpStream};

const BUCKET: &str = "switchyard-models";
const PREFIX: &str = "prod/registry";

/// moto's S3 server, run like `moto_server` but serving one request at a time: its conditional
/// writes check the precondition and then write in two steps, so a threaded server could let two
/// racing writers both succeed; real stores make that one atomic step.
const MOTO: &str = r#"
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.moto_server.threaded_moto_server import MotoRequestHandler
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app),
           threaded=False, request_handler=MotoRequestHandler)
"#;

/// A moto S3 server, killed on drop.
struct S3 {
    child: Child,
    endpoint: String,
}

impl S3 {
    fn start() -> Self {
        let venv = python_venv();
        let mut child = Command::new(venv.join("bin/python"))
            .args(["-c", MOTO, "127.0.0.1", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("moto's server starts (moto[server] is in tests/python/requirements.txt)");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = Vec::new();
        let endpoint = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!("moto exited before listening: {seen:?}");
            };
            if let Some(at) = line.find("Running on http://") {
                let url = line[at + "Running on ".len()..].trim();
                break url.trim_end_matches('/').to_string();
            }
            seen.push(line);
        };
        // moto logs every request; keep its pipe drained.
        std::thread::spawn(move || for _ in lines {});
        let s3 = Self { child, endpoint };
        let created = create_bucket(&format!("{}/{BUCKET}", s3.endpoint));
        assert!(created, "bucket {BUCKET} created");
        s3
    }

    fn store(&self) -> Arc<dyn ObjectStore> {
        store_at(&self.endpoint)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates the bucket (moto needs no signature for it), from any thread.
fn create_bucket(url: &str) -> bool {
    let url = url.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .put(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    })
    .join()
    .unwrap()
}

fn store_at(endpoint: &str) -> Arc<dyn ObjectStore> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_allow_http(true)
            .with_conditional_put(S3ConditionalPut::ETagMatch)
            .build()
            .unwrap(),
    )
}

/// The settings an operator passes for an S3-compatible store at `endpoint`.
fn options(endpoint: &str) -> Vec<(String, String)> {
    [
        ("aws_endpoint", endpoint),
        ("aws_region", "us-east-1"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_allow_http", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn key(rel: &str) -> Path {
    Path::from(format!("{PREFIX}/{rel}"))
}

/// Uploads `models/<src>/<version>/*` as `<name>/<as_version>/*`.
async fn publish(
    store: &Arc<dyn ObjectStore>,
    src: &str,
    version: u64,
    name: &str,
    as_version: u64,
) {
    let dir = repo_root()
        .join("models")
        .join(src)
        .join(version.to_string());
    // model.onnx last, as a careful publisher does: its card is there when it appears.
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| p.ends_with("model.onnx"));
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let name_of = file.file_name().unwrap().to_str().unwrap();
        store
            .put(
                &key(&format!("{name}/{as_version}/{name_of}")),
                PutPayload::from(bytes),
            )
            .await
            .unwrap();
    }
}

async fn remove_version(store: &Arc<dyn ObjectStore>, name: &str, version: u64) {
    let prefix = key(&format!("{name}/{version}"));
    let listed: Vec<_> =
        futures_util::StreamExt::collect::<Vec<_>>(store.list(Some(&prefix))).await;
    for meta in listed {
        store.delete(&meta.unwrap().location).await.unwrap();
    }
}

fn infer_body() -> Value {
    json!({"inputs": [{"name": "X", "shape": [2, 30], "datatype": "FP32",
                       "data": breast_cancer_rows(2)}]})
}

async fn start_server(endpoint: &str, cache: &FsPath) -> TestServer {
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let mut a = common::args(FsPath::new(&url));
    a.registry_cache_dir = Some(cache.to_path_buf());
    a.registry_options = options(endpoint);
    a.model_control_mode = switchyard::models::ControlMode::Poll;
    a.repository_poll_secs = 0.1;
    TestServer::start_with(a).await
}

/// The version that answers requests naming none.
async fn served_version(s: &TestServer) -> Option<String> {
    let (status, body) = s.post_json("/v2/models/bc/infer", &infer_body()).await;
    (status == 200).then(|| {
        body["model_version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    })
}

async fn wait_for(what: &str, secs: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Callers that keep predicting until stopped and count what failed.
struct Callers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Callers {
    fn start(s: &TestServer, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                let client = s.client.clone();
                let url = s.url("/v2/models/bc/infer");
                tokio::spawn(async move {
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let (status, body) = common::post(&client, &url, &infer_body()).await;
                        if status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{status} {body}"));
                        }
                    }
                    errors
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for t in self.tasks {
            errors.extend(t.await.unwrap());
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_swap_corrupt_pin_and_remove_through_s3_with_no_failed_request() {
    let s3 = S3::start();
    let store = s3.store();
    publish(&store, "breast_cancer", 1, "bc", 1).await;
    let cache = tempfile::tempdir().unwrap();
    let s = start_server(&s3.endpoint, cache.path()).await;
    s.wait_ready().await;
    assert_eq!(served_version(&s).await.as_deref(), Some("1"));
    let callers = Callers::start(&s, 4);

    // Publish: version 2 is found by listing, downloaded, checked, warmed and swapped in.
    publish(&store, "breast_cancer", 2, "bc", 2).await;
    wait_for("version 2 serves", 30, async || {
        served_version(&s).await.as_deref() == Some("2")
    })
    .await;

    // A corrupt upload (bytes that are not its card's sha256) is refused; version 2 serves on.
    let mut bytes = std::fs::read(repo_root().join("models/breast_cancer/2/model.onnx")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    let card = std::fs::read(repo_root().join("models/breast_cancer/2/metadata.json")).unwrap();
    store
        .put(&key("bc/3/metadata.json"), card.into())
        .await
        .unwrap();
    store
        .put(&key("bc/3/model.onnx"), bytes.into())
        .await
        .unwrap();
    wait_for("version 3 refused for its sha256", 30, async || {
        let (_, index) = s.post_json("/v2/repository/index", &json!({})).await;
        index.as_array().into_iter().flatten().any(|e| {
            e["name"] == "bc"
                && e["version"] == "3"
                && e["state"] == "UNAVAILABLE"
                && e["reason"].as_str().is_some_and(|r| r.contains("sha256"))
        })
    })
    .await;
    let (status, _) = s.get("/v2/models/bc/versions/3/ready").await;
    assert_ne!(status, 200, "a corrupt version is never ready");
    assert_eq!(served_version(&s).await.as_deref(), Some("2"));

    // Pin version 1: the pin is written to the bucket (conditionally) and followed.
    let (status, body) = s
        .post_json("/admin/models/bc/promote", &json!({"version": 1}))
        .await;
    assert_eq!(status, 200, "{body}");
    let routing = store
        .get(&key("bc/routing.toml"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let routing = String::from_utf8(routing.to_vec()).unwrap();
    assert!(routing.contains("pinned_version = 1"), "{routing}");
    wait_for("version 1 pinned", 10, async || {
        served_version(&s).await.as_deref() == Some("1")
    })
    .await;
    let (status, body) = s
        .post_json("/admin/models/bc/promote", &json!({"version": null}))
        .await;
    assert_eq!(status, 200, "{body}");

    // Remove versions 2 and 3: they unload; version 1 serves.
    remove_version(&store, "bc", 3).await;
    remove_version(&store, "bc", 2).await;
    wait_for("version 2 unloaded", 30, async || {
        let (status, _) = s.get("/v2/models/bc/versions/2").await;
        status == 404 && served_version(&s).await.as_deref() == Some("1")
    })
    .await;

    let (ok, failed, errors) = callers.finish().await;
    assert!(ok > 100, "callers made progress: {ok}");
    assert_eq!(failed, 0, "no request failed during the swaps: {errors:?}");
    // The cache holds verified copies under their ETag's name.
    let namespace = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let cached = std::fs::read_dir(namespace.join("bc/1")).unwrap().count();
    assert_eq!(cached, 1);
}

#[test]
fn two_replicas_updating_routing_at_once_lose_no_update() {
    let s3 = S3::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = s3.store();
    rt.block_on(publish(&store, "breast_cancer", 1, "bc", 1));
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let caches: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let replicas: Vec<Arc<ObjectRegistry>> = caches
        .iter()
        .map(|c| Arc::new(ObjectRegistry::open(&url, c.path(), &options(&s3.endpoint)).unwrap()))
        .collect();
    const THREADS: usize = 3;
    const EACH: u64 = 8;
    let writers: Vec<_> = (0..THREADS * replicas.len())
        .map(|i| {
            let reg = replicas[i % replicas.len()].clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    // A read-modify-write: with a lost update the final count is short.
                    reg.update_routing("bc", &mut |r| {
                        r.pinned_version = Some(r.pinned_version.unwrap_or(0) + 1)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let want = (THREADS * replicas.len()) as u64 * EACH;
    for reg in &replicas {
        assert_eq!(reg.routing("bc").unwrap().pinned_version, Some(want));
    }
    // A model that is not in the bucket gets no routing file.
    let err = replicas[0]
        .update_routing("nope", &mut |r| r.pinned_version = Some(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such model"), "{err}");
}

/// A TCP proxy in front of the S3 server that can be taken down (connections refused by being
/// closed at once, open ones cut) and brought back, with the server's data intact.
struct Proxy {
    up: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    endpoint: String,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let target = target.trim_start_matches("http://").to_string();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { up, open, endpoint }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.open.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_outage_keeps_serving_shows_errors_and_recovers() {
    let s3 = S3::start();
    let store = s3.store();
    publish(&store, "breast_cancer", 1, "bc", 1).await;
    let proxy = Proxy::start(&s3.endpoint).await;
    let cache = tempfile::tempdir().unwrap();
    let s = start_server(&proxy.endpoint, cache.path()).await;
    s.wait_ready().await;
    let errors = |text: &str| metric_sum(text, "switchyard_registry_errors_total", &[]);
    assert_eq!(errors(&s.text("/metrics").await), 0.0);

    proxy.down();
    let callers = Callers::start(&s, 2);
    wait_for("registry errors counted", 30, async || {
        errors(&s.text("/metrics").await) > 0.0
    })
    .await;
    // Still ready, still serving what is loaded, while the store is away.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ready, _) = s.get("/v2/health/ready").await;
    assert_eq!(ready, 200);
    assert_eq!(served_version(&s).await.as_deref(), Some("1"));
    let (status, _) = s.get("/v2/models/bc/versions/1/ready").await;
    assert_eq!(status, 200);

    // Published while the store was unreachable to us; seen once it is back.
    publish(&store, "breast_cancer", 2, "bc", 2).await;
    proxy.up();
    // A routing change right after the outage goes through (routing changes skip the reads'
    // backoff; whether one is still running at this moment depends on timing).
    let (status, body) = s
        .post_json("/admin/models/bc/promote", &json!({"version": 1}))
        .await;
    assert_eq!(status, 200, "promote right after the outage: {body}");
    wait_for("version 2 loaded after the outage", 60, async || {
        s.get("/v2/models/bc/versions/2/ready").await.0 == 200
    })
    .await;
    assert_eq!(
        served_version(&s).await.as_deref(),
        Some("1"),
        "the pin holds"
    );
    let (ok, failed, errs) = callers.finish().await;
    assert!(ok > 0);
    assert_eq!(failed, 0, "no request failed during the outage: {errs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_down_at_start_keeps_the_server_unready_until_it_answers() {
    let s3 = S3::start();
    let store = s3.store();
    publish(&store, "breast_cancer", 1, "bc", 1).await;
    let proxy = Proxy::start(&s3.endpoint).await;
    proxy.down();
    let cache = tempfile::tempdir().unwrap();
    // The default control mode (none): only the initial load reads the registry.
    let url = format!("s3://{BUCKET}/{PREFIX}");
    let mut a = common::args(FsPath::new(&url));
    a.registry_cache_dir = Some(cache.path().to_path_buf());
    a.registry_options = options(&proxy.endpoint);
    a.repository_poll_secs = 0.2;
    let s = TestServer::start_with(a).await;
    wait_for("registry errors counted", 30, async || {
        metric_sum(
            &s.text("/metrics").await,
            "switchyard_registry_errors_total",
            &[],
        ) > 0.0
    })
    .await;
    let (ready, _) = s.get("/v2/health/ready").await;
    assert_eq!(ready, 503, "not ready with nothing loaded");
    let (live, _) = s.get("/v2/health/live").await;
    assert_eq!(live, 200);
    proxy.up();
    wait_for("ready once the store answers", 60, async || {
        s.get("/v2/health/ready").await.0 == 200
    })
    .await;
    assert_eq!(served_version(&s).await.as_deref(), Some("1"));
}

//! Model lifecycle through the real server: hot swap from the registry under load (poll mode),
//! refused models that never take the serving one down, explicit load/unload with draining,
//! promotion that survives restarts and reaches every replica, and the operator CLI.
//! Waits are on observable state with a generous deadline; no test asserts a time.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, add_model, breast_cancer_rows, metric_sum, repo_root};
use serde_json::{Value, json};
use switchyard::models::ControlMode;

fn bc(rows: usize) -> Value {
    json!({"inputs": [{"name": "X", "shape": [rows, 30], "datatype": "FP32", "data": breast_cancer_rows(rows)}]})
}

fn copy_version(from_model: &str, from_version: u64, reg: &Path, model: &str, version: u64) {
    // Copied beside the model under a hidden name, then renamed: the version appears whole.
    let src = repo_root()
        .join("models")
        .join(from_model)
        .join(from_version.to_string());
    let staging = reg.join(model).join(format!(".staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), staging.join(f.file_name())).unwrap();
    }
    std::fs::rename(&staging, reg.join(model).join(version.to_string())).unwrap();
}

async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(s: &TestServer) -> Vec<Value> {
    let (code, v) = s.get("/admin/models").await;
    assert_eq!(code, 200);
    v["models"].as_array().unwrap().clone()
}

async fn version_state(s: &TestServer, model: &str, version: u64) -> Option<(String, String)> {
    status(s)
        .await
        .into_iter()
        .find(|r| r["model"] == model && r["version"] == version)
        .map(|r| {
            (
                r["state"].as_str().unwrap().to_string(),
                r["reason"].as_str().unwrap_or_default().to_string(),
            )
        })
}

async fn start(
    reg: &Path,
    mode: ControlMode,
    configure: impl FnOnce(&mut switchyard::cli::ServeArgs),
) -> TestServer {
    let mut a = common::args(reg);
    a.model_control_mode = mode;
    a.repository_poll_secs = 0.05;
    configure(&mut a);
    let s = TestServer::start_with(a).await;
    s.wait_ready().await;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_swaps_versions_under_load_without_failing_a_request() {
    let reg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(reg.path().join("breast_cancer")).unwrap();
    copy_version("breast_cancer", 1, reg.path(), "breast_cancer", 1);
    let s = start(reg.path(), ControlMode::Poll, |_| {}).await;
    let held = s
        .server
        .as_ref()
        .unwrap()
        .service
        .resolve("breast_cancer", "1")
        .unwrap();
    let v1_sessions = held.sessions.clone();
    let v1 = Arc::downgrade(&held);
    drop(held);

    // Bounded concurrent load: 6 callers, each recording (status, version) in order.
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..6)
        .map(|_| {
            let (client, url, stop) = (
                s.client.clone(),
                s.url("/v2/models/breast_cancer/infer"),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let r = client.post(&url).json(&bc(2)).send().await.unwrap();
                    let status = r.status().as_u16();
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    seen.push((
                        status,
                        v["model_version"].as_str().unwrap_or("?").to_string(),
                    ));
                }
                seen
            })
        })
        .collect();
    let metrics_before = metric_sum(
        &s.text("/metrics").await,
        "switchyard_requests_total",
        &["model=\"breast_cancer\""],
    );
    wait_until("requests are flowing", || async {
        metric_sum(
            &s.text("/metrics").await,
            "switchyard_requests_total",
            &["model=\"breast_cancer\""],
        ) > metrics_before + 50.0
    })
    .await;

    // A new version appears: it is loaded, warmed and swapped in.
    copy_version("breast_cancer", 2, reg.path(), "breast_cancer", 2);
    wait_until("version 2 serves", || async {
        s.post_json("/v2/models/breast_cancer/infer", &bc(1))
            .await
            .1["model_version"]
            == "2"
    })
    .await;
    // The old version is removed: it is unloaded once its in-flight requests are done.
    std::fs::remove_dir_all(reg.path().join("breast_cancer/1")).unwrap();
    wait_until("version 1 is unloaded", || async {
        version_state(&s, "breast_cancer", 1).await.is_none()
    })
    .await;
    assert!(
        v1.upgrade().is_none(),
        "nothing keeps the unloaded version alive"
    );
    assert_eq!(v1_sessions.count(), 0, "its sessions were dropped");

    // A version written in place, slowly: it is never served half-written.
    let dir3 = reg.path().join("breast_cancer/3");
    std::fs::create_dir_all(&dir3).unwrap();
    let src = repo_root().join("models/breast_cancer/2");
    std::fs::copy(src.join("metadata.json"), dir3.join("metadata.json")).unwrap();
    let bytes = std::fs::read(src.join("model.onnx")).unwrap();
    std::fs::write(dir3.join("model.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(dir3.join("model.onnx"), &bytes).unwrap();
    wait_until("version 3 serves", || async {
        s.post_json("/v2/models/breast_cancer/infer", &bc(1))
            .await
            .1["model_version"]
            == "3"
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for c in callers {
        let seen = c.await.unwrap();
        // Each caller moves forward through versions, never back to one that was replaced.
        let versions: Vec<u64> = seen.iter().map(|(_, v)| v.parse().unwrap_or(0)).collect();
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
        all.extend(seen);
    }
    let failed: Vec<_> = all.iter().filter(|(status, _)| *status != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        all.len(),
        &failed[..failed.len().min(5)]
    );
    for v in ["1", "2"] {
        assert!(
            all.iter().any(|(_, seen)| seen == v),
            "no response from version {v}"
        );
    }
    let text = s.text("/metrics").await;
    assert!(
        metric_sum(
            &text,
            "switchyard_model_swaps_total",
            &["model=\"breast_cancer\""]
        ) >= 2.0,
        "{text}"
    );
    // (Metrics are process-wide and other tests use the same model name, so count states instead.)
    let ready = status(&s)
        .await
        .into_iter()
        .filter(|r| r["state"] == "READY")
        .count();
    assert_eq!(ready, 2, "versions 2 and 3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_new_files_are_refused_and_the_serving_version_stays() {
    let reg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(reg.path().join("breast_cancer")).unwrap();
    copy_version("breast_cancer", 1, reg.path(), "breast_cancer", 1);
    copy_version("breast_cancer", 2, reg.path(), "breast_cancer", 2);
    let s = start(reg.path(), ControlMode::Poll, |_| {}).await;
    let (_, v2_out) = s.post_json("/v2/models/breast_cancer/infer", &bc(3)).await;
    let (_, v1_out) = s
        .post_json("/v2/models/breast_cancer/versions/1/infer", &bc(3))
        .await;
    assert_eq!(v2_out["model_version"], "2");
    let serves_v2 = || async {
        let (status, r) = s.post_json("/v2/models/breast_cancer/infer", &bc(3)).await;
        assert_eq!(status, 200, "{r}");
        assert_eq!(r["model_version"], "2");
        assert_eq!(r["outputs"], v2_out["outputs"]);
    };

    // A corrupt file.
    std::fs::create_dir_all(reg.path().join("breast_cancer/3")).unwrap();
    std::fs::write(
        reg.path().join("breast_cancer/3/model.onnx"),
        b"\x08\x07garbage",
    )
    .unwrap();
    wait_until("version 3 is refused", || async {
        matches!(version_state(&s, "breast_cancer", 3).await, Some((state, reason)) if state == "UNAVAILABLE" && reason.contains("cannot load the model"))
    })
    .await;
    serves_v2().await;

    // A valid model with another signature (iris: 4 features, 3 classes).
    let dir4 = reg.path().join("breast_cancer/4");
    std::fs::create_dir_all(&dir4).unwrap();
    std::fs::copy(
        repo_root().join("models/iris/1/model.onnx"),
        dir4.join("model.onnx"),
    )
    .unwrap();
    wait_until("version 4 is refused as incompatible", || async {
        matches!(version_state(&s, "breast_cancer", 4).await, Some((state, reason)) if state == "UNAVAILABLE" && reason.contains("signature differs") && reason.contains("'X' (FP32 [-1,30]) became 'X' (FP32 [-1,4])"))
    })
    .await;
    serves_v2().await;

    // Version 2's file replaced by other bytes that do not match its model card.
    std::fs::write(
        reg.path().join("breast_cancer/2/model.onnx"),
        std::fs::read(repo_root().join("models/breast_cancer/1/model.onnx")).unwrap(),
    )
    .unwrap();
    wait_until("the new version 2 file is refused", || async {
        matches!(version_state(&s, "breast_cancer", 2).await, Some((state, reason)) if state == "READY" && reason.contains("refused") && reason.contains("sha256"))
    })
    .await;
    serves_v2().await;
    let text = s.text("/metrics").await;
    assert!(
        metric_sum(
            &text,
            "switchyard_model_load_failures_total",
            &["model=\"breast_cancer\""]
        ) >= 3.0
    );

    // The same change made properly (model card updated too) is swapped in.
    std::fs::copy(
        repo_root().join("models/breast_cancer/1/metadata.json"),
        reg.path().join("breast_cancer/2/metadata.json"),
    )
    .unwrap();
    // Touch the model file so the change is noticed on its own stamp.
    std::fs::write(
        reg.path().join("breast_cancer/2/model.onnx"),
        std::fs::read(repo_root().join("models/breast_cancer/1/model.onnx")).unwrap(),
    )
    .unwrap();
    wait_until("version 2 serves the new file", || async {
        let (_, r) = s.post_json("/v2/models/breast_cancer/infer", &bc(3)).await;
        r["model_version"] == "2" && r["outputs"] == v1_out["outputs"]
    })
    .await;
    assert_eq!(
        version_state(&s, "breast_cancer", 2).await.unwrap(),
        ("READY".to_string(), String::new())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_loads_and_unloads_through_the_api_and_drains_first() {
    let reg = tempfile::tempdir().unwrap();
    // Requests to bc_slow wait up to a second in the queue: one is in flight during the unload.
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_slow",
        "[batching]\nmax_queue_delay_us = 1000000\n[runtime]\ninstances = 1\n",
    );
    add_model(reg.path(), "iris", "iris", "");
    let s = start(reg.path(), ControlMode::Explicit, |a| {
        a.load_models = vec!["bc_slow".into()]
    })
    .await;
    assert_eq!(s.get("/v2/models/iris").await.0, 404, "not loaded at start");
    let iris = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});

    let r = s
        .client
        .post(s.url("/v2/repository/models/iris/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.post_json("/v2/models/iris/infer", &iris).await.0, 200);
    let r = s
        .client
        .post(s.url("/v2/repository/models/nope/load"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let in_flight = {
        let (client, url) = (s.client.clone(), s.url("/v2/models/bc_slow/infer"));
        tokio::spawn(async move {
            client
                .post(url)
                .json(&bc(1))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let lv = s
        .server
        .as_ref()
        .unwrap()
        .service
        .resolve("bc_slow", "")
        .unwrap();
    while lv.scheduler.queued() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let freed = Arc::downgrade(&lv);
    let sessions = lv.sessions.clone();
    assert_eq!(sessions.count(), 1, "bc_slow has one instance");
    drop(lv);
    let r = s
        .client
        .post(s.url("/admin/models/bc_slow/unload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        freed.upgrade().is_none(),
        "the version is freed once the unload returns"
    );
    assert_eq!(
        sessions.count(),
        0,
        "the worker threads have dropped the sessions before the unload returns (and trims memory)"
    );
    // The server had answered the in-flight request before the unload returned.
    let text = s.text("/metrics").await;
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &["model=\"bc_slow\"", "outcome=\"success\""]
        ),
        1.0
    );
    assert_eq!(in_flight.await.unwrap(), 200);
    assert_eq!(s.post_json("/v2/models/bc_slow/infer", &bc(1)).await.0, 404);

    // gRPC unload of iris.
    let addr = s.server.as_ref().unwrap().grpc_addr;
    let mut g =
        switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
    g.repository_model_unload(switchyard::grpc::pb::RepositoryModelUnloadRequest {
        model_name: "iris".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.post_json("/v2/models/iris/infer", &iris).await.0, 404);
    g.repository_model_load(switchyard::grpc::pb::RepositoryModelLoadRequest {
        model_name: "iris".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(s.post_json("/v2/models/iris/infer", &iris).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_survives_restarts_reaches_replicas_and_the_cli_drives_it() {
    let reg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(reg.path().join("breast_cancer")).unwrap();
    copy_version("breast_cancer", 1, reg.path(), "breast_cancer", 1);
    copy_version("breast_cancer", 2, reg.path(), "breast_cancer", 2);
    let a = start(reg.path(), ControlMode::None, |_| {}).await;
    let b = start(reg.path(), ControlMode::None, |_| {}).await;
    let default_version = |s: &TestServer| {
        let (client, url) = (s.client.clone(), s.url("/v2/models/breast_cancer/infer"));
        async move {
            let (_, r) = common::post(&client, &url, &bc(1)).await;
            r["model_version"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(default_version(&a).await, "2");

    let r = a
        .client
        .post(a.url("/admin/models/breast_cancer/promote"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        default_version(&a).await,
        "1",
        "takes effect at once on the replica that promoted"
    );
    wait_until("the other replica follows the registry", || async {
        default_version(&b).await == "1"
    })
    .await;
    let pinned: Vec<Value> = status(&a)
        .await
        .into_iter()
        .filter(|r| r["pinned"] == true)
        .collect();
    assert_eq!(pinned.len(), 1);
    assert_eq!(pinned[0]["version"], 1);
    assert_eq!(pinned[0]["default"], true);

    let r = a
        .client
        .post(a.url("/admin/models/breast_cancer/promote"))
        .json(&json!({"version": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(r.text().await.unwrap().contains("version 9 is not ready"));
    let r = a
        .client
        .post(a.url("/admin/models/nope/promote"))
        .json(&json!({"version": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A restart reads the pin from the registry.
    drop(a);
    let a2 = start(reg.path(), ControlMode::None, |_| {}).await;
    assert_eq!(default_version(&a2).await, "1");

    // The operator CLI against the running server.
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let server = a2.base.clone();
    let out = tokio::task::spawn_blocking(move || {
        let models = std::process::Command::new(bin)
            .args(["models", "--server", &server])
            .output()
            .unwrap();
        let unpin = std::process::Command::new(bin)
            .args(["promote", "breast_cancer", "--unpin", "--server", &server])
            .output()
            .unwrap();
        let bad = std::process::Command::new(bin)
            .args(["promote", "breast_cancer", "7", "--server", &server])
            .output()
            .unwrap();
        let load = std::process::Command::new(bin)
            .args(["load", "breast_cancer", "--server", &server])
            .output()
            .unwrap();
        (models, unpin, bad, load)
    })
    .await
    .unwrap();
    let table = String::from_utf8_lossy(&out.0.stdout);
    assert!(out.0.status.success(), "{table}");
    assert!(
        table.contains("mode: none") && table.contains("MODEL") && table.contains("breast_cancer"),
        "{table}"
    );
    let row1 = table
        .lines()
        .find(|l| l.starts_with("breast_cancer") && l.split_whitespace().nth(1) == Some("1"))
        .unwrap();
    assert!(
        row1.contains("READY") && row1.contains("yes") && row1.contains('*'),
        "{row1}"
    );
    assert!(
        out.1.status.success(),
        "{}",
        String::from_utf8_lossy(&out.1.stderr)
    );
    assert_eq!(
        default_version(&a2).await,
        "2",
        "unpinned: the highest version serves"
    );
    assert!(!out.2.status.success());
    assert!(String::from_utf8_lossy(&out.2.stderr).contains("version 7 is not ready"));
    assert!(
        !out.3.status.success(),
        "load is refused outside explicit mode"
    );
    assert!(String::from_utf8_lossy(&out.3.stderr).contains("model control mode is 'none'"));
    assert_eq!(
        std::fs::read_to_string(reg.path().join("breast_cancer/routing.toml"))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_uses_the_registry_sample_and_a_bad_sample_refuses_the_version() {
    let reg = tempfile::tempdir().unwrap();
    add_model(reg.path(), "iris", "iris_sampled", "");
    add_model(reg.path(), "iris", "iris_bad_sample", "");
    let sample = json!({"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32",
                                    "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]});
    std::fs::write(
        reg.path().join("iris_sampled/1/warmup.json"),
        sample.to_string(),
    )
    .unwrap();
    let wrong = json!({"inputs": [{"name": "X", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]});
    std::fs::write(
        reg.path().join("iris_bad_sample/1/warmup.json"),
        wrong.to_string(),
    )
    .unwrap();
    let mut s = TestServer::start_with(common::args(reg.path())).await;
    s.keep_registry(tempfile::tempdir().unwrap());
    s.wait_loaded().await;
    assert_eq!(
        version_state(&s, "iris_sampled", 1).await.unwrap().0,
        "READY"
    );
    assert_eq!(
        s.post_json("/v2/models/iris_sampled/infer", &sample)
            .await
            .0,
        200
    );
    let (state, reason) = version_state(&s, "iris_bad_sample", 1).await.unwrap();
    assert_eq!(state, "UNAVAILABLE");
    assert!(
        reason.contains("warmup.json") && reason.contains("dimension 1 must be 4"),
        "{reason}"
    );
    assert_eq!(
        s.get("/v2/models/iris_bad_sample/versions/1/ready").await.0,
        503
    );
    drop(reg);
}

async fn load_failures(s: &TestServer, model: &str) -> f64 {
    metric_sum(
        &s.text("/metrics").await,
        "switchyard_model_load_failures_total",
        &[&format!("model=\"{model}\"")],
    )
}

/// The model-level row of the status (a model that failed as a whole), if any.
async fn model_error(s: &TestServer, model: &str) -> Option<String> {
    status(s)
        .await
        .into_iter()
        .find(|r| r["model"] == model && r["version"].is_null())
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
}

/// Adds a version to `model` and waits until it serves: at least two polls pass meanwhile (a new
/// file must look the same twice before it loads).
async fn let_polls_pass(s: &TestServer, reg: &Path, model: &str, version: u64) {
    copy_version("iris", 1, reg, model, version);
    wait_until(&format!("{model} version {version} serves"), || async {
        version_state(s, model, version)
            .await
            .is_some_and(|(state, _)| state == "READY")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_broken_config_fails_once_per_change() {
    let reg = tempfile::tempdir().unwrap();
    add_model(
        reg.path(),
        "iris",
        "iris_cfg_once",
        "[batching]\nmax_bach_size = 3\n",
    );
    add_model(reg.path(), "iris", "iris_witness", "");
    let s = start(reg.path(), ControlMode::Poll, |_| {}).await;
    assert!(
        model_error(&s, "iris_cfg_once")
            .await
            .is_some_and(|r| r.contains("max_bach_size"))
    );
    assert_eq!(load_failures(&s, "iris_cfg_once").await, 1.0);

    let_polls_pass(&s, reg.path(), "iris_witness", 2).await;
    assert_eq!(
        load_failures(&s, "iris_cfg_once").await,
        1.0,
        "an unchanged broken config.toml is failed once, not on every poll"
    );

    // A changed file that is still broken is failed again, once.
    let config = reg.path().join("iris_cfg_once/config.toml");
    std::fs::write(&config, "[batching]\nmax_queue_size = 0\n").unwrap();
    wait_until("the new error is reported", || async {
        model_error(&s, "iris_cfg_once")
            .await
            .is_some_and(|r| r.contains("max_queue_size"))
    })
    .await;
    let_polls_pass(&s, reg.path(), "iris_witness", 3).await;
    assert_eq!(load_failures(&s, "iris_cfg_once").await, 2.0);

    // A fixed file is acted on.
    std::fs::write(&config, "[batching]\nmax_queue_size = 8\n").unwrap();
    wait_until("the fixed model serves", || async {
        version_state(&s, "iris_cfg_once", 1)
            .await
            .is_some_and(|(state, _)| state == "READY")
    })
    .await;
    assert_eq!(model_error(&s, "iris_cfg_once").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_shows_versions_that_keep_serving_when_the_config_breaks() {
    let reg = tempfile::tempdir().unwrap();
    add_model(reg.path(), "iris", "iris_idx", "");
    let s = start(reg.path(), ControlMode::Poll, |_| {}).await;
    std::fs::write(
        reg.path().join("iris_idx/config.toml"),
        "[runtime]\ninstances = 0\n",
    )
    .unwrap();
    wait_until("the broken config is reported", || async {
        model_error(&s, "iris_idx").await.is_some()
    })
    .await;
    let index = |ready: bool| {
        let (client, url) = (s.client.clone(), s.url("/v2/repository/index"));
        async move {
            let (code, v) = common::post(&client, &url, &json!({ "ready": ready })).await;
            assert_eq!(code, 200, "{v}");
            v.as_array().unwrap().clone()
        }
    };
    let all = index(false).await;
    assert!(
        all.iter()
            .any(|r| r["name"] == "iris_idx" && r["version"] == "1" && r["state"] == "READY"),
        "the version still serves, so the index lists it: {all:?}"
    );
    assert!(
        all.iter().any(|r| r["name"] == "iris_idx"
            && r.get("version").is_none()
            && r["state"] == "UNAVAILABLE"
            && r["reason"]
                .as_str()
                .is_some_and(|m| m.contains("runtime.instances"))),
        "the config problem is listed too: {all:?}"
    );
    let ready = index(true).await;
    assert_eq!(
        ready,
        vec![json!({"name": "iris_idx", "version": "1", "state": "READY"})]
    );
    // The status API and the index agree row for row.
    assert_eq!(all.len(), status(&s).await.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_warm_up_cannot_be_built_fails_alone() {
    // huge_shape declares [-1, 2^32, 2^32]: a synthesized warm-up row would overflow.
    let reg = common::registry(&["iris", "huge_shape"]);
    let mut s = TestServer::start_with(common::args(reg.path())).await;
    s.keep_registry(reg);
    s.wait_loaded().await;
    let (state, reason) = version_state(&s, "huge_shape", 1).await.unwrap();
    assert_eq!(state, "UNAVAILABLE");
    assert!(
        reason.contains("warm-up input 'x'") && reason.contains("warmup.json"),
        "{reason}"
    );
    let iris = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    assert_eq!(s.post_json("/v2/models/iris/infer", &iris).await.0, 200);
    assert_eq!(s.get("/v2/health/ready").await.0, 200);
}

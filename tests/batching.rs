//! Dynamic batching, overload and deadlines through the real server (REST over loopback).
//! No test asserts a time: waits use long queue delays so the order of events is certain.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::{add_model, breast_cancer_rows, metric_sum, serve_registry};
use serde_json::{Value, json};

fn bc(rows: usize, offset: usize) -> Value {
    let data: Vec<f32> = breast_cancer_rows(rows + offset)[offset * 30..].to_vec();
    json!({"inputs": [{"name": "X", "shape": [rows, 30], "datatype": "FP32", "data": data}]})
}

#[tokio::test]
async fn batched_results_equal_unbatched_results_exactly() {
    let reg = tempfile::tempdir().unwrap();
    // Requests wait up to 50 ms for company, so a burst becomes a few batches.
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_batched",
        "[batching]\nmax_batch_size = 64\nmax_queue_delay_us = 50000\n[runtime]\ninstances = 1\n",
    );
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_alone",
        "[batching]\nmax_batch_size = 0\n",
    );
    let s = serve_registry(reg).await;
    let (_, m) = s.get("/v2/models/bc_alone").await;
    assert_eq!(m["parameters"]["max_batch_size"], 0);

    let mut tasks = Vec::new();
    for i in 0..32 {
        let (client, url) = (s.client.clone(), s.url("/v2/models/bc_batched/infer"));
        let body = bc(1 + i % 3, i);
        tasks.push(tokio::spawn(async move {
            let (_, r) = common::post(&client, &url, &body).await;
            (body, r)
        }));
    }
    for t in tasks {
        let (body, batched) = t.await.unwrap();
        let (status, alone) = s.post_json("/v2/models/bc_alone/infer", &body).await;
        assert_eq!(status, 200);
        assert_eq!(
            batched["outputs"], alone["outputs"],
            "bit-identical whether batched or not"
        );
    }
    let text = s.text("/metrics").await;
    let rows = metric_sum(
        &text,
        "switchyard_inference_rows_total",
        &["model=\"bc_batched\""],
    );
    let execs = metric_sum(
        &text,
        "switchyard_executions_total",
        &["model=\"bc_batched\""],
    );
    assert_eq!(
        rows,
        (0..32).map(|i| 1 + i % 3).sum::<usize>() as f64,
        "every row counted once (warm-up is not)"
    );
    assert!(
        execs < 32.0,
        "requests were merged: {execs} executions for 32 requests"
    );
}

#[tokio::test]
async fn mixed_widths_and_oversized_requests_in_one_burst() {
    let reg = tempfile::tempdir().unwrap();
    add_model(
        reg.path(),
        "dynamic_width",
        "dw",
        "[batching]\nmax_batch_size = 4\nmax_queue_delay_us = 20000\n[runtime]\ninstances = 1\n",
    );
    let s = serve_registry(reg).await;
    let mut tasks = Vec::new();
    for i in 0..24usize {
        let (client, url) = (s.client.clone(), s.url("/v2/models/dw/infer"));
        // Widths 1..=3; every fifth request has 7 rows, more than max_batch_size.
        let (rows, width) = (if i % 5 == 0 { 7 } else { 1 + i % 2 }, 1 + i % 3);
        let data: Vec<f32> = (0..rows * width).map(|k| (i * 100 + k) as f32).collect();
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "x", "shape": [rows, width], "datatype": "FP32", "data": data.clone()}]});
            let (_, r) = common::post(&client, &url, &body).await;
            (rows, width, data, r)
        }));
    }
    for t in tasks {
        let (rows, width, data, r) = t.await.unwrap();
        assert_eq!(r["outputs"][0]["shape"], json!([rows, width]), "{r}");
        let want: Vec<f64> = data.iter().map(|&v| v as f64 * 2.0).collect();
        assert_eq!(r["outputs"][0]["data"], json!(want));
    }
}

#[tokio::test]
async fn a_full_queue_answers_429_at_once_and_the_server_recovers() {
    let reg = tempfile::tempdir().unwrap();
    // The first request waits a whole second for company, holding its queue slot.
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_tiny_queue",
        "[batching]\nmax_queue_size = 2\nmax_queue_delay_us = 1000000\n[runtime]\ninstances = 1\n",
    );
    let s = serve_registry(reg).await;
    let url = s.url("/v2/models/bc_tiny_queue/infer");
    let waiting: Vec<_> = (0..2)
        .map(|i| {
            let (client, url) = (s.client.clone(), url.clone());
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&bc(1, i))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let server = s.server.as_ref().unwrap();
    let version = server.service.resolve("bc_tiny_queue", "").unwrap();
    while version.scheduler.queued() < 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, body) = s
        .post_json("/v2/models/bc_tiny_queue/infer", &bc(1, 5))
        .await;
    assert_eq!(status, 429, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("maximum of 2 waiting requests") && msg.contains("bc_tiny_queue"),
        "{msg}"
    );
    for w in waiting {
        assert_eq!(w.await.unwrap(), 200);
    }
    let (status, _) = s
        .post_json("/v2/models/bc_tiny_queue/infer", &bc(1, 6))
        .await;
    assert_eq!(status, 200, "recovered");
    let text = s.text("/metrics").await;
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &["model=\"bc_tiny_queue\"", "outcome=\"overloaded\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_request_whose_deadline_passes_in_the_queue_gets_504_and_is_not_run() {
    let reg = tempfile::tempdir().unwrap();
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_deadline",
        "[batching]\nmax_queue_delay_us = 1000000\n[runtime]\ninstances = 1\n",
    );
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_default_timeout",
        "[batching]\nmax_queue_delay_us = 1000000\ndefault_timeout_us = 1000\n",
    );
    let s = serve_registry(reg).await;
    let mut body = bc(1, 0);
    body["parameters"] = json!({"timeout": 1000});
    let (status, r) = s.post_json("/v2/models/bc_deadline/infer", &body).await;
    assert_eq!(status, 504, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("past its timeout of 1.0 ms, and was not run"),
        "{r}"
    );
    let (status, _) = s
        .post_json("/v2/models/bc_default_timeout/infer", &bc(1, 0))
        .await;
    assert_eq!(status, 504, "the model's default timeout applies");
    let text = s.text("/metrics").await;
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_inference_rows_total",
            &["model=\"bc_deadline\""]
        ),
        0.0,
        "nothing ran"
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &["model=\"bc_deadline\"", "outcome=\"timeout\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn a_caller_that_disconnects_is_removed_from_the_queue_and_not_run() {
    let reg = tempfile::tempdir().unwrap();
    add_model(
        reg.path(),
        "breast_cancer",
        "bc_gone",
        "[batching]\nmax_queue_delay_us = 1000000\n[runtime]\ninstances = 1\n",
    );
    let s = serve_registry(reg).await;
    let version = s
        .server
        .as_ref()
        .unwrap()
        .service
        .resolve("bc_gone", "")
        .unwrap();
    let body = bc(3, 0).to_string();
    let mut stream = TcpStream::connect(s.server.as_ref().unwrap().http_addr).unwrap();
    write!(
        stream,
        "POST /v2/models/bc_gone/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    while version.scheduler.queued() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(stream);
    // The batcher notices the closed caller and drops the request without running it.
    while version.scheduler.queued() > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (status, _) = s.post_json("/v2/models/bc_gone/infer", &bc(1, 0)).await;
    assert_eq!(status, 200);
    let text = s.text("/metrics").await;
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_inference_rows_total",
            &["model=\"bc_gone\""]
        ),
        1.0,
        "the last request's row; never the 3 rows of the caller that left"
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &["model=\"bc_gone\"", "outcome=\"cancelled\""]
        ),
        1.0
    );
}

#[tokio::test]
async fn config_errors_and_unavailable_devices_fail_only_their_model() {
    let reg = tempfile::tempdir().unwrap();
    add_model(
        reg.path(),
        "iris",
        "iris_cuda",
        "[runtime]\ndevice = \"cuda\"\n",
    );
    add_model(
        reg.path(),
        "iris",
        "iris_bad_value",
        "[batching]\npreferred_batch_sizes = [500]\n",
    );
    add_model(reg.path(), "iris", "iris_ok", "");
    let mut s = common::TestServer::start_with(common::args(reg.path())).await;
    s.keep_registry(reg);
    s.wait_loaded().await;
    let (status, r) = s
        .post_json("/v2/models/iris_cuda/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(status, 503);
    let msg = r["error"].as_str().unwrap();
    assert!(
        msg.contains("device 'cuda:0'") && msg.contains("no CUDA execution provider"),
        "{msg}"
    );
    let (status, r) = s
        .post_json("/v2/models/iris_bad_value/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(status, 503);
    let msg = r["error"].as_str().unwrap();
    assert!(
        msg.contains("iris_bad_value/config.toml")
            && msg.contains("batching.preferred_batch_sizes"),
        "{msg}"
    );
    let body = json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]});
    assert_eq!(s.post_json("/v2/models/iris_ok/infer", &body).await.0, 200);
}

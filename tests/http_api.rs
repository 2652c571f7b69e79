//! The REST front end against a real server on an ephemeral port, over real sockets.

mod common;

use std::collections::HashMap;
use std::io::Write;

use common::{TestServer, breast_cancer_rows};
use serde_json::{Value, json};

fn bc_request(rows: usize) -> Value {
    json!({"inputs": [{"name": "X", "shape": [rows, 30], "datatype": "FP32", "data": breast_cancer_rows(rows)}]})
}

#[tokio::test]
async fn health_and_server_metadata() {
    let s = TestServer::start(&["breast_cancer"]).await;
    assert_eq!(s.get("/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(
        s.get("/v2/health/ready").await,
        (200, json!({"ready": true}))
    );
    let (status, meta) = s.get("/v2").await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "switchyard");
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("binary_tensor_data"))
    );
    let (status, body) = s.get("/v2/nope").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/v2/nope"));
}

#[tokio::test]
async fn model_metadata_comes_from_the_onnx_signature() {
    let s = TestServer::start(&["breast_cancer", "iris", "diabetes"]).await;
    let (status, m) = s.get("/v2/models/breast_cancer").await;
    assert_eq!(status, 200);
    assert_eq!(m["name"], "breast_cancer");
    assert_eq!(m["versions"], json!(["1", "2"]));
    assert_eq!(m["platform"], "onnxruntime_onnx");
    assert_eq!(
        m["inputs"],
        json!([{"name": "X", "datatype": "FP32", "shape": [-1, 30]}])
    );
    assert_eq!(
        m["outputs"],
        json!([{"name": "label", "datatype": "INT64", "shape": [-1]},
               {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}])
    );
    assert_eq!(
        m["parameters"]["execution_provider"],
        "CPUExecutionProvider"
    );
    assert_eq!(m["parameters"]["version"], "2");
    let (_, m1) = s.get("/v2/models/breast_cancer/versions/1").await;
    assert_eq!(m1["parameters"]["version"], "1");
    let (_, d) = s.get("/v2/models/diabetes").await;
    assert_eq!(
        d["outputs"],
        json!([{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}])
    );
    let (_, i) = s.get("/v2/models/iris").await;
    assert_eq!(i["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(s.get("/v2/models/breast_cancer/ready").await.0, 200);
    assert_eq!(
        s.get("/v2/models/breast_cancer/versions/1/ready").await.0,
        200
    );
    assert_eq!(
        s.get("/v2/models/breast_cancer/versions/3/ready").await.0,
        404
    );
    assert_eq!(s.get("/v2/models/nope/ready").await.0, 404);
    assert_eq!(s.get("/v2/models/nope").await.0, 404);
}

#[tokio::test]
async fn infer_default_and_explicit_versions() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let mut req = bc_request(3);
    req["id"] = json!("req-42");
    let (status, r) = s.post_json("/v2/models/breast_cancer/infer", &req).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["model_name"], "breast_cancer");
    assert_eq!(
        r["model_version"], "2",
        "the highest version serves by default"
    );
    assert_eq!(r["id"], "req-42");
    assert_eq!(r["outputs"][0]["name"], "label");
    assert_eq!(r["outputs"][0]["shape"], json!([3]));
    assert_eq!(r["outputs"][1]["shape"], json!([3, 2]));
    for row in r["outputs"][1]["data"].as_array().unwrap().chunks(2) {
        let sum = row[0].as_f64().unwrap() + row[1].as_f64().unwrap();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to 1: {row:?}");
    }
    let (status, r1) = s
        .post_json("/v2/models/breast_cancer/versions/1/infer", &req)
        .await;
    assert_eq!(status, 200);
    assert_eq!(r1["model_version"], "1");
    assert_ne!(
        r1["outputs"][1]["data"], r["outputs"][1]["data"],
        "versions differ"
    );

    // Nested data is the same tensor as flat data.
    let rows = breast_cancer_rows(3);
    let nested: Vec<Vec<f32>> = rows.chunks(30).map(<[f32]>::to_vec).collect();
    let req = json!({"inputs": [{"name": "X", "shape": [3, 30], "datatype": "FP32", "data": nested}],
                     "outputs": [{"name": "probabilities"}]});
    let (status, n) = s.post_json("/v2/models/breast_cancer/infer", &req).await;
    assert_eq!(status, 200);
    assert_eq!(
        n["outputs"].as_array().unwrap().len(),
        1,
        "only the requested output"
    );
    assert_eq!(n["outputs"][0], r["outputs"][1]);
}

/// Builds a binary-extension body: JSON header, then the raw input bytes.
fn binary_body(rows: usize, binary_outputs: bool) -> (Vec<u8>, usize) {
    let data = breast_cancer_rows(rows);
    let raw: Vec<u8> = data.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut header = json!({"inputs": [{"name": "X", "shape": [rows, 30], "datatype": "FP32",
                                        "parameters": {"binary_data_size": raw.len()}}]});
    if binary_outputs {
        header["parameters"] = json!({"binary_data_output": true});
    }
    let mut body = serde_json::to_vec(&header).unwrap();
    let n = body.len();
    body.extend_from_slice(&raw);
    (body, n)
}

#[tokio::test]
async fn binary_tensor_extension_both_ways() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let (_, json_resp) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_request(4))
        .await;

    let (body, n) = binary_body(4, false);
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Inference-Header-Content-Length", n)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["outputs"], json_resp["outputs"],
        "binary input, JSON output"
    );

    let (body, n) = binary_body(4, true);
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Inference-Header-Content-Length", n)
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let json_len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let header: Value = serde_json::from_slice(&bytes[..json_len]).unwrap();
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 32);
    assert_eq!(header["outputs"][1]["parameters"]["binary_data_size"], 32);
    let labels: Vec<i64> = bytes[json_len..json_len + 32]
        .chunks(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let probs: Vec<f32> = bytes[json_len + 32..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(json!(labels), json_resp["outputs"][0]["data"]);
    let json_probs: Vec<f32> =
        serde_json::from_value(json_resp["outputs"][1]["data"].clone()).unwrap();
    assert_eq!(probs, json_probs, "bit-identical through either encoding");
}

#[tokio::test]
async fn compressed_bodies_are_accepted() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let body = serde_json::to_vec(&bc_request(2)).unwrap();
    let (_, plain) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_request(2))
        .await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zl.write_all(&body).unwrap();
    for (encoding, bytes) in [
        ("gzip", gz.finish().unwrap()),
        ("deflate", zl.finish().unwrap()),
    ] {
        let r = s
            .client
            .post(s.url("/v2/models/breast_cancer/infer"))
            .header("Content-Encoding", encoding)
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{encoding}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["outputs"], plain["outputs"], "{encoding}");
    }
}

#[tokio::test]
async fn every_datatype_round_trips_through_json_and_binary() {
    let s = TestServer::start(&["identity_all_types"]).await;
    let values: Vec<(&str, &str, Value)> = vec![
        ("bool", "BOOL", json!([true, false, false, true])),
        ("uint8", "UINT8", json!([0, 255, 7, 8])),
        ("uint16", "UINT16", json!([0, 65535, 7, 8])),
        ("uint32", "UINT32", json!([0, 4294967295u64, 7, 8])),
        (
            "uint64",
            "UINT64",
            json!([0, 18446744073709551615u64, 7, 8]),
        ),
        ("int8", "INT8", json!([-128, 127, 0, 1])),
        ("int16", "INT16", json!([-32768, 32767, 0, 1])),
        ("int32", "INT32", json!([-2147483648i64, 2147483647, 0, 1])),
        (
            "int64",
            "INT64",
            json!([-9223372036854775808i64, 9223372036854775807i64, 0, 1]),
        ),
        ("fp16", "FP16", json!([1.5, -2.0, 0.25, 65504.0])),
        ("fp32", "FP32", json!([1.5, -2.25, 3.0e-5, 1.0e30])),
        ("fp64", "FP64", json!([1.5, -2.25, 1.0e-300, 1.0e300])),
        ("bytes", "BYTES", json!(["a", "héllo", "", "zz"])),
    ];
    let inputs: Vec<Value> = values
        .iter()
        .map(|(n, dt, data)| json!({"name": format!("in_{n}"), "shape": [2, 2], "datatype": dt, "data": data}))
        .collect();
    let (status, r) = s
        .post_json(
            "/v2/models/identity_all_types/infer",
            &json!({"inputs": inputs}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    for (n, dt, data) in &values {
        let out = r["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == format!("out_{n}"))
            .unwrap();
        assert_eq!(out["datatype"], *dt);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(&out["data"], data, "{n}");
    }

    // The same through binary outputs: the bytes decode back to the JSON values.
    let (status, _) = s
        .post_json(
            "/v2/models/identity_all_types/infer",
            &json!({"inputs": inputs, "parameters": {"binary_data_output": true}}),
        )
        .await;
    // post_json parses JSON only; a binary body is not JSON, so check the raw response.
    assert_eq!(status, 200);
    let r = s
        .client
        .post(s.url("/v2/models/identity_all_types/infer"))
        .body(serde_json::to_vec(&json!({"inputs": inputs, "outputs": [{"name": "out_bytes", "parameters": {"binary_data": true}}]})).unwrap())
        .send()
        .await
        .unwrap();
    let n: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = r.bytes().await.unwrap();
    let mut tail = &bytes[n..];
    let mut strings = Vec::new();
    while !tail.is_empty() {
        let len = u32::from_le_bytes(tail[..4].try_into().unwrap()) as usize;
        strings.push(String::from_utf8(tail[4..4 + len].to_vec()).unwrap());
        tail = &tail[4 + len..];
    }
    assert_eq!(strings, vec!["a", "héllo", "", "zz"]);
}

#[tokio::test]
async fn bad_inputs_get_clear_4xx_and_the_server_keeps_serving() {
    let s = TestServer::start(&["breast_cancer"]).await;
    let (_, good) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_request(2))
        .await;
    let x = |shape: Value, datatype: &str, data: Value| {
        json!({"inputs": [{"name": "X", "shape": shape, "datatype": datatype, "data": data}]})
            .to_string()
    };
    let row = json!(breast_cancer_rows(1));
    let infer = "/v2/models/breast_cancer/infer";
    // (path, body, headers, status, message)
    type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/v2/models/nope/infer", bc_request(1).to_string(), vec![], 404, "unknown model 'nope'"),
        ("/v2/models/breast_cancer/versions/9/infer", bc_request(1).to_string(), vec![], 404, "has no version 9"),
        ("/v2/models/breast_cancer/versions/abc/infer", bc_request(1).to_string(), vec![], 404, "positive integers"),
        (infer, "{".into(), vec![], 400, "malformed inference request JSON"),
        (infer, "{}".into(), vec![], 400, "missing field `inputs`"),
        (infer, "[1,2]".into(), vec![], 400, "malformed inference request JSON"),
        (infer, x(json!([1, 30]), "INT64", json!(vec![1; 30])), vec![], 400, "datatype INT64, but the model expects FP32"),
        (infer, x(json!([1, 30]), "FLOAT32", row.clone()), vec![], 400, "unknown datatype 'FLOAT32'"),
        (infer, x(json!([30]), "FP32", row.clone()), vec![], 400, "rank 1, but the model expects rank 2"),
        (infer, x(json!([1, 29]), "FP32", json!(vec![0.5; 29])), vec![], 400, "dimension 1 must be 30"),
        (infer, x(json!([2, 30]), "FP32", row.clone()), vec![], 400, "holds 60 elements, but 30 were given"),
        (infer, x(json!([-1, 30]), "FP32", row.clone()), vec![], 400, "negative dimension"),
        (infer, x(json!([1, 30]), "FP32", json!(vec!["a"; 30])), vec![], 400, "element 0 is the string \"a\""),
        (infer, x(json!([1, 30]), "FP32", json!(null)), vec![], 400, "input 'X': element 0 is null"),
        (infer, x(json!([2, 30]), "FP32", json!([row.clone(), null])), vec![], 400, "element 30 is null"),
        (infer, json!({"inputs": []}).to_string(), vec![], 400, "missing input 'X' (FP32 [-1,30])"),
        (infer, json!({"inputs": [{"name": "Y", "shape": [1, 30], "datatype": "FP32", "data": row}]}).to_string(), vec![], 400, "unknown input 'Y'"),
        (infer, json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": row}], "outputs": [{"name": "proba"}]}).to_string(), vec![], 400, "unknown output 'proba'"),
        (infer, json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": row}], "parameters": {"timeout": "soon"}}).to_string(), vec![], 400, "parameter 'timeout'"),
        (infer, bc_request(1).to_string(), vec![("Inference-Header-Content-Length", "100000".into())], 400, "Inference-Header-Content-Length is 100000"),
        (infer, bc_request(1).to_string(), vec![("Inference-Header-Content-Length", "ten".into())], 400, "must be a byte count"),
        (infer, bc_request(1).to_string(), vec![("Content-Encoding", "br".into())], 400, "unsupported Content-Encoding 'br'"),
        (infer, "not gzip".into(), vec![("Content-Encoding", "gzip".into())], 400, "cannot be decompressed"),
        (infer, json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": 120}}]}).to_string(), vec![], 400, "no Inference-Header-Content-Length"),
    ];
    for (path, body, headers, status, message) in cases {
        let mut req = s.client.post(s.url(path)).body(body.clone());
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path} {body}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains(message),
            "{path} {body}: {msg:?} lacks {message:?}"
        );
        // The server keeps answering correctly.
        let (status, again) = s.post_json(infer, &bc_request(2)).await;
        assert_eq!(status, 200);
        assert_eq!(again["outputs"], good["outputs"]);
    }

    // Binary data that does not add up.
    let (mut body, n) = binary_body(1, false);
    body.extend_from_slice(&[0; 8]);
    let r = s
        .client
        .post(s.url(infer))
        .header("Inference-Header-Content-Length", n)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("8 bytes of binary data that no input claims")
    );
    let r = s.client.get(s.url(infer)).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = TestServer::start_configured(&["breast_cancer"], |a| a.max_request_size = 4096).await;
    let big = bc_request(40).to_string();
    assert!(big.len() > 4096);
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 4096 bytes"),
        "{v}"
    );
    // Compressed small, inflated big: still refused.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(format!("{{\"inputs\":[], \"pad\": \"{}\"}}", "a".repeat(100_000)).as_bytes())
        .unwrap();
    let r = s
        .client
        .post(s.url("/v2/models/breast_cancer/infer"))
        .header("Content-Encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let (status, _) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_request(1))
        .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_request_the_model_rejects_at_run_time_fails_alone() {
    let s = TestServer::start(&["gather"]).await;
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let client = s.client.clone();
        let url = s.url("/v2/models/gather/infer");
        // Every fifth request asks for index 50, outside the 10-entry table.
        let idx = if i % 5 == 0 {
            vec![1, 50]
        } else {
            vec![i % 10, (i + 1) % 10]
        };
        tasks.push(tokio::spawn(async move {
            let body = json!({"inputs": [{"name": "idx", "shape": [2], "datatype": "INT64", "data": idx}]});
            let r = client.post(url).json(&body).send().await.unwrap();
            (idx, r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    for t in tasks {
        let (idx, status, body) = t.await.unwrap();
        if idx.contains(&50) {
            assert_eq!(status, 400, "{body}");
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .contains("the model rejected the input")
            );
        } else {
            assert_eq!(status, 200, "{body}");
            let want: Vec<f64> = idx.iter().map(|&i| i as f64 * 1.5).collect();
            assert_eq!(body["outputs"][0]["data"], json!(want));
        }
    }
}

#[tokio::test]
async fn a_model_with_a_fixed_batch_dimension_serves_concurrent_requests() {
    let s = TestServer::start(&["fixed_shape"]).await;
    let (_, m) = s.get("/v2/models/fixed_shape").await;
    assert_eq!(m["parameters"]["max_batch_size"], 0);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let client = s.client.clone();
        let url = s.url("/v2/models/fixed_shape/infer");
        tasks.push(tokio::spawn(async move {
            let x = vec![i as f32; 4];
            let body =
                json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": x}]});
            let (_, r) = common::post(&client, &url, &body).await;
            (i, r)
        }));
    }
    for t in tasks {
        let (i, r) = t.await.unwrap();
        assert_eq!(r["outputs"][0]["data"], json!(vec![i as f64 + 1.0; 4]));
    }
}

#[tokio::test]
async fn broken_models_are_reported_and_never_take_good_ones_down() {
    let reg = common::registry(&["breast_cancer", "iris"]);
    let root = reg.path().to_path_buf();
    let root = root.as_path();
    // Garbage bytes, a config typo, a file that does not match its model card, no versions.
    std::fs::create_dir_all(root.join("garbage/1")).unwrap();
    std::fs::write(
        root.join("garbage/1/model.onnx"),
        b"this is not an onnx model",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("typo/1")).unwrap();
    std::fs::copy(
        root.join("iris/1/model.onnx"),
        root.join("typo/1/model.onnx"),
    )
    .unwrap();
    std::fs::write(
        root.join("typo/config.toml"),
        "[batching]\nmax_bach_size = 8\n",
    )
    .unwrap();
    std::fs::write(root.join("iris/1/metadata.json"), r#"{"sha256": "00ff"}"#).unwrap();
    std::fs::create_dir_all(root.join("empty/notes")).unwrap();
    let mut s = TestServer::start_with(common::args(root)).await;
    s.keep_registry(reg);
    s.wait_loaded().await;
    assert_eq!(
        s.get("/v2/health/ready").await.0,
        200,
        "non-strict: ready once loading is done"
    );
    let (status, _) = s
        .post_json("/v2/models/breast_cancer/infer", &bc_request(1))
        .await;
    assert_eq!(status, 200);
    for (model, reason) in [
        ("garbage", "ONNX Runtime cannot load the model"),
        ("typo", "typo/config.toml"),
        ("iris", "sha256"),
        ("empty", "no version folder"),
    ] {
        let (status, body) = s
            .post_json(&format!("/v2/models/{model}/infer"), &json!({"inputs": []}))
            .await;
        assert_eq!(status, 503, "{model}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(reason),
            "{model}: {body}"
        );
        assert_eq!(s.get(&format!("/v2/models/{model}/ready")).await.0, 503);
    }
    let metrics = s.text("/metrics").await;
    assert!(
        metrics.contains("switchyard_model_load_failures_total{model=\"garbage\"} 1"),
        "{metrics}"
    );

    // Strict readiness: the same registry never becomes ready.
    let mut a = common::args(root);
    a.strict_readiness = true;
    let strict = TestServer::start_with(a).await;
    strict.wait_loaded().await;
    assert_eq!(strict.get("/v2/health/ready").await.0, 503);
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text() {
    let s = TestServer::start(&["breast_cancer"]).await;
    for _ in 0..3 {
        s.post_json("/v2/models/breast_cancer/infer", &bc_request(2))
            .await;
    }
    s.post_json("/v2/models/breast_cancer/infer", &json!({"inputs": []}))
        .await;
    s.post_json("/v2/models/not_a_model/infer", &bc_request(1))
        .await;
    let text = s.text("/metrics").await;
    for needle in [
        "switchyard_requests_total{model=\"breast_cancer\",version=\"2\",protocol=\"http\",outcome=\"success\"}",
        "outcome=\"invalid_input\"",
        "switchyard_requests_total{model=\"_unknown\",version=\"\",protocol=\"http\",outcome=\"model_not_found\"}",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_queue_duration_seconds_bucket",
        "switchyard_compute_duration_seconds_bucket",
        "switchyard_inference_rows_total{model=\"breast_cancer\",version=\"2\"}",
        "switchyard_executions_total{model=\"breast_cancer\",version=\"2\"}",
        "switchyard_batch_size_rows_bucket",
        "switchyard_pending_requests{model=\"breast_cancer\",version=\"2\"}",
        "switchyard_model_version_ready{model=\"breast_cancer\",version=\"1\"} 1",
        "switchyard_model_load_duration_seconds_bucket",
        "# HELP switchyard_requests_total",
    ] {
        assert!(text.contains(needle), "/metrics lacks {needle}:\n{text}");
    }
    assert!(
        !text.contains("not_a_model"),
        "unknown model names never become labels"
    );

    check_exposition(&text);
    match which("promtool") {
        Some(promtool) => promtool_check(&promtool, &text),
        // Written past the test harness's capture, so it shows in a passing run too.
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "note: promtool not found on PATH; /metrics was checked with prometheus-parse only \
                 (install promtool, Debian: apt-get install prometheus, to run its check too; CI does)"
            );
        }
    }
}

fn promtool_check(promtool: &std::path::Path, text: &str) {
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Validates Prometheus text exposition with the `prometheus-parse` crate, which skips what it
/// cannot read, so every skipped line is an error here; plus the rules of promtool's linter
/// that apply: a TYPE and a HELP for every family, counters named `_total`, histograms whose
/// buckets are cumulative and end at `+Inf`.
fn check_exposition(text: &str) {
    use prometheus_parse::{LineInfo, SampleType, Scrape, Value};
    let mut types: HashMap<String, SampleType> = HashMap::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Ignored => assert!(
                line.starts_with('#') && !line.starts_with("# HELP") && !line.starts_with("# TYPE"),
                "not a valid exposition line: {line:?}"
            ),
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                let family = metric_alias.unwrap_or(metric_name);
                assert!(
                    types.insert(family.clone(), sample_type).is_none(),
                    "two TYPE lines for {family}"
                );
                if sample_type == SampleType::Counter {
                    assert!(
                        family.ends_with("_total"),
                        "counter {family} must end in _total"
                    );
                }
            }
            LineInfo::Sample {
                metric_name, value, ..
            } => {
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| {
                        metric_name
                            .strip_suffix(suffix)
                            .filter(|f| types.get(*f) == Some(&SampleType::Histogram))
                    })
                    .unwrap_or(metric_name);
                assert!(
                    types.contains_key(family),
                    "sample {line:?} comes before (or without) its family's TYPE"
                );
                let v = value.to_ascii_lowercase();
                assert!(
                    v.parse::<f64>().is_ok() || ["nan", "+inf", "-inf"].contains(&v.as_str()),
                    "sample value of {line:?} is not a number"
                );
            }
            LineInfo::Doc { .. } | LineInfo::Empty => {}
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    for family in types.keys() {
        assert!(scrape.docs.contains_key(family), "{family} has no HELP");
    }
    let mut histograms = 0;
    for sample in &scrape.samples {
        if let Value::Histogram(buckets) = &sample.value {
            histograms += 1;
            assert!(
                buckets.last().is_some_and(|b| b.less_than == f64::INFINITY),
                "{} {:?} has no +Inf bucket",
                sample.metric,
                sample.labels
            );
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
                "{} {:?}: buckets are not cumulative",
                sample.metric,
                sample.labels
            );
        }
    }
    assert!(histograms > 0, "the parser saw the histograms");
}

#[test]
fn the_exposition_check_refuses_malformed_text() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 3\n\
                # HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    check_exposition(good);
    for bad in [
        "a_total 1\n",                                              // no TYPE
        "# HELP a A.\n# TYPE a counter\na 1\n",                     // counter without _total
        "# TYPE a_total counter\na_total 1\n",                      // no HELP
        "# HELP a_total A.\n# TYPE a_total counter\n{} 1\n",        // not a sample
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n", // not a number
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n",  // no +Inf bucket
    ] {
        let refused = std::panic::catch_unwind(|| check_exposition(bad)).is_err();
        assert!(refused, "accepted: {bad:?}");
    }
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

//! Progressive delivery through the real server: canary, sticky A/B and shadow rollouts of a
//! candidate version, their automatic analysis and rollback, operators' actions, restarts and two
//! replicas sharing one registry. Every test has its own model name (metrics are process-wide).
//! No test asserts a time: waits poll the rollout's status until a deadline, and traffic drives
//! the analysis (an interval without enough requests holds its step).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{TestServer, breast_cancer_rows, metric_sum};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// How long a test waits for a rollout to reach a phase before failing.
const DEADLINE: Duration = Duration::from_secs(30);

/// What serves as version 2 of a test model (version 1 is always `models/breast_cancer/1`).
#[derive(Clone, Copy)]
enum Candidate {
    /// `models/breast_cancer/2`: a real retrain, disagreeing with version 1 on most rows.
    Retrained,
    /// A copy of version 1: identical answers.
    Good,
    /// A model of `tests/fixtures/models` (`bc_constant`, `bc_nan`, `bc_slow`, `bc_flaky`).
    Fixture(&'static str),
}

fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// A registry holding `model`: breast_cancer version 1 and `candidate` as version 2, with
/// `config` as its config.toml (when not empty).
fn registry(model: &str, candidate: Candidate, config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = common::repo_root();
    let m = dir.path().join(model);
    copy_files(&root.join("models/breast_cancer/1"), &m.join("1"));
    let v2 = match candidate {
        Candidate::Retrained => root.join("models/breast_cancer/2"),
        Candidate::Good => root.join("models/breast_cancer/1"),
        Candidate::Fixture(name) => root.join("tests/fixtures/models").join(name).join("1"),
    };
    copy_files(&v2, &m.join("2"));
    if !config.is_empty() {
        std::fs::write(m.join("config.toml"), config).unwrap();
    }
    dir
}

/// A server over `reg` (re-reading the registry's routing every `poll_secs`), ready.
async fn serve(reg: &Path, poll_secs: f64) -> TestServer {
    let mut a = common::args(reg);
    a.repository_poll_secs = poll_secs;
    let s = TestServer::start_with(a).await;
    s.wait_ready().await;
    s
}

/// A server over its own registry of `model` (see [`registry`]).
async fn start(model: &str, candidate: Candidate, config: &str) -> TestServer {
    let reg = registry(model, candidate, config);
    let mut s = serve(reg.path(), 5.0).await;
    s.keep_registry(reg);
    s
}

/// `n` breast-cancer-like rows starting at row `offset`.
fn rows(n: usize, offset: usize) -> Vec<f32> {
    breast_cancer_rows(n + offset)[offset * 30..].to_vec()
}

fn infer_body(data: Vec<f32>) -> Value {
    let n = data.len() / 30;
    json!({"inputs": [{"name": "X", "shape": [n, 30], "datatype": "FP32", "data": data}]})
}

/// Request `i`: two rows, different for each `i` (up to 400).
fn body(i: usize) -> Value {
    infer_body(rows(2, i % 400))
}

/// Request `i` with feature 0 of each row at 1000 or more: `bc_flaky` fails on it, version 1
/// answers it.
fn flaky_body(i: usize) -> Value {
    let mut data = rows(2, i % 400);
    for (r, row) in data.chunks_mut(30).enumerate() {
        row[0] = 1000.0 + (i * 2 + r) as f32;
    }
    infer_body(data)
}

/// One inference answer.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    /// `x-switchyard-variant`.
    variant: Option<String>,
    /// The body's `model_version`.
    version: Option<String>,
    body: Value,
}

impl Reply {
    /// Answered, by the version the variant header names (when there is one).
    fn assert_consistent(&self, stable: &str, candidate: &str) {
        assert_eq!(self.status, 200, "{:?}", self.body);
        let want = match self.variant.as_deref() {
            None => return,
            Some("stable") => stable,
            Some("candidate") => candidate,
            Some(other) => panic!("unknown variant {other:?}"),
        };
        assert_eq!(
            self.version.as_deref(),
            Some(want),
            "variant {:?} answered by version {:?}",
            self.variant,
            self.version
        );
    }

    fn on_candidate(&self) -> bool {
        self.variant.as_deref() == Some("candidate")
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = client.post(url).json(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let variant = r
        .headers()
        .get("x-switchyard-variant")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    let version = body["model_version"].as_str().map(str::to_string);
    Reply {
        status,
        variant,
        version,
        body,
    }
}

/// Infers with `model`, naming no version.
async fn infer(s: &TestServer, model: &str, body: &Value) -> Reply {
    send(
        &s.client,
        &s.url(&format!("/v2/models/{model}/infer")),
        body,
        &[],
    )
    .await
}

/// `n` requests (`make(i)`), 16 at a time, answers in order.
async fn burst(s: &TestServer, model: &str, n: usize, make: impl Fn(usize) -> Value) -> Vec<Reply> {
    let url = s.url(&format!("/v2/models/{model}/infer"));
    let bodies: Vec<Value> = (0..n).map(make).collect();
    futures_util::stream::iter(bodies)
        .map(|b| {
            let (client, url) = (s.client.clone(), url.clone());
            async move { send(&client, &url, &b, &[]).await }
        })
        .buffered(16)
        .collect()
        .await
}

async fn put_rollout(s: &TestServer, model: &str, spec: &Value) -> (u16, Value) {
    let r = s
        .client
        .put(s.url(&format!("/admin/models/{model}/rollout")))
        .json(spec)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Starts a rollout and returns its status.
async fn start_rollout(s: &TestServer, model: &str, spec: Value) -> Value {
    let (status, body) = put_rollout(s, model, &spec).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rollout"]["phase"], "running", "{body}");
    body
}

async fn act(s: &TestServer, model: &str, action: &str) -> (u16, Value) {
    s.post_json(
        &format!("/admin/models/{model}/rollout/{action}"),
        &json!({}),
    )
    .await
}

async fn status(s: &TestServer, model: &str) -> Value {
    let (code, body) = s.get(&format!("/admin/models/{model}/rollout")).await;
    assert_eq!(code, 200, "{body}");
    body
}

fn phase(st: &Value) -> &str {
    st["rollout"]["phase"].as_str().unwrap()
}

fn step(st: &Value) -> u64 {
    st["rollout"]["step"].as_u64().unwrap()
}

/// Sends traffic (`make(i)`, 16 requests at a time) until the rollout's status satisfies `done`;
/// returns that status and every answer.
async fn drive(
    s: &TestServer,
    model: &str,
    make: impl Fn(usize) -> Value,
    done: impl Fn(&Value) -> bool,
) -> (Value, Vec<Reply>) {
    let deadline = Instant::now() + DEADLINE;
    let mut replies = Vec::new();
    loop {
        let st = status(s, model).await;
        if done(&st) {
            return (st, replies);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not get there within {DEADLINE:?}: {st:#}"
        );
        let from = replies.len();
        replies.extend(burst(s, model, 16, |i| make(from + i)).await);
    }
}

/// Polls the rollout's status (no traffic) until it satisfies `done`.
async fn wait_status(s: &TestServer, model: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, st) = s.get(&format!("/admin/models/{model}/rollout")).await;
        if code == 200 && done(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout status did not get there within {DEADLINE:?}: {code} {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The decisions of the rollout's history, in order.
fn decisions(st: &Value) -> Vec<String> {
    st["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_str().unwrap().to_string())
        .collect()
}

async fn metric(s: &TestServer, name: &str, labels: &[&str]) -> f64 {
    metric_sum(&s.text("/metrics").await, name, labels)
}

/// A check's value as reasons write it.
fn fmt_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// Checks a rollout that was rolled back by the analysis: aborted because `check` failed (and
/// only it), the reason giving its value and threshold, after exactly `failure_limit` failed
/// intervals; every request naming no version then gets version 1; the deployment counted as
/// aborted.
async fn assert_rolled_back(s: &TestServer, model: &str, st: &Value, check: &str) {
    let r = &st["rollout"];
    assert_eq!(phase(st), "aborted", "{st:#}");
    assert_eq!(st["pinned_version"], 1, "{st:#}");
    let reason = r["reason"].as_str().unwrap();
    assert!(reason.contains("rolled back to version 1"), "{reason}");
    let last = &r["last_decision"];
    assert_eq!(last["decision"], "rolled_back", "{st:#}");
    let failing: Vec<&Value> = last["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["verdict"] == "fail")
        .collect();
    let names: Vec<&str> = failing
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    assert_eq!(names, [check], "only {check} fails: {reason}");
    let (value, threshold) = (
        failing[0]["value"].as_f64().unwrap(),
        failing[0]["threshold"].as_f64().unwrap(),
    );
    assert!(value > threshold, "{value} > {threshold}");
    let said = format!("{check} {} > {}", fmt_value(value), fmt_value(threshold));
    assert!(reason.contains(&said), "{said:?} in {reason}");
    // Exactly failure_limit failed intervals: the last one rolled back.
    let limit = r["failure_limit"].as_u64().unwrap();
    let d = decisions(st);
    let failed = d.iter().filter(|d| *d == "failed").count() as u64;
    let rolled_back = d.iter().filter(|d| *d == "rolled_back").count() as u64;
    assert_eq!((failed + rolled_back, rolled_back), (limit, 1), "{d:?}");
    assert_eq!(r["failures"], limit);

    for reply in burst(s, model, 40, body).await {
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        assert_eq!(reply.version.as_deref(), Some("1"));
        assert_eq!(reply.variant, None, "no rollout splits any more");
    }
    let m = format!("model=\"{model}\"");
    assert_eq!(
        metric(
            s,
            "switchyard_deployments_total",
            &[&m, "outcome=\"aborted\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(s, "switchyard_rollout_state", &[&m, "state=\"aborted\""]).await,
        1.0
    );
}

/// Runs a canary of a bad `candidate` with `spec` (merged over short intervals) under traffic
/// `make` until it ends; checks it was rolled back because `check` failed. Returns the answers.
async fn bad_candidate(
    model: &str,
    candidate: Candidate,
    spec: Value,
    make: impl Fn(usize) -> Value,
    check: &str,
) -> Vec<Reply> {
    let s = start(model, candidate, "").await;
    let mut full = json!({
        "candidate": 2, "stable": 1, "kind": "canary", "steps": [25, 50, 75],
        "interval": "400ms", "min_requests": 20, "failure_limit": 2, "p99_slack_ms": 1000.0,
    });
    for (k, v) in spec.as_object().unwrap() {
        full[k] = v.clone();
    }
    start_rollout(&s, model, full).await;
    let (st, replies) = drive(&s, model, make, |st| phase(st) != "running").await;
    assert_rolled_back(&s, model, &st, check).await;
    replies
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_splits_by_weight_and_says_who_answered() {
    let model = "bc_canary_split";
    let s = start(model, Candidate::Retrained, "").await;
    let st = start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [30], "interval": "1h", "compare_fraction": 0}),
    )
    .await;
    assert_eq!(st["rollout"]["weight"], 0.3);
    let n = 3000;
    let replies = burst(&s, model, n, body).await;
    for r in &replies {
        r.assert_consistent("1", "2");
        assert!(r.variant.is_some(), "a rollout answer names its variant");
    }
    let hits = replies.iter().filter(|r| r.on_candidate()).count() as f64;
    // Binomial(3000, 0.3): sd ≈ 25; 5 sd.
    let (mean, sd) = (n as f64 * 0.3, (n as f64 * 0.3 * 0.7).sqrt());
    assert!(
        (hits - mean).abs() < 5.0 * sd,
        "{hits} of {n} on the candidate, expected {mean} ± {}",
        5.0 * sd
    );
    let st = status(&s, model).await;
    assert_eq!(
        st["rollout"]["window"]["candidate"]["requests"]
            .as_u64()
            .unwrap(),
        hits as u64,
        "the window counts what callers got (nothing compared)"
    );

    // A request naming a version bypasses the rollout.
    for v in ["1", "2"] {
        let r = send(
            &s.client,
            &s.url(&format!("/v2/models/{model}/versions/{v}/infer")),
            &body(0),
            &[],
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.version.as_deref(), Some(v));
        assert_eq!(r.variant, None, "named version {v}: no variant");
    }
}

/// Whether each key got the candidate, one request per key, 16 at a time.
async fn round(s: &TestServer, model: &str, keys: &[String]) -> Vec<bool> {
    let url = s.url(&format!("/v2/models/{model}/infer"));
    futures_util::stream::iter(keys.iter().enumerate())
        .map(|(i, k)| {
            let (client, url) = (s.client.clone(), url.clone());
            async move { send(&client, &url, &body(i), &[("x-user-id", k)]).await }
        })
        .buffered(16)
        .collect::<Vec<Reply>>()
        .await
        .iter()
        .map(|r| {
            r.assert_consistent("1", "2");
            // Once promoted (no variant any more) version 2 answers everyone.
            r.version.as_deref() == Some("2")
        })
        .collect()
}

/// Fails if a key that was on the candidate is back on stable; records who is on it now.
fn never_back(ever: &mut [bool], now: &[bool], keys: &[String]) {
    for ((e, n), k) in ever.iter_mut().zip(now).zip(keys) {
        assert!(!*e || *n, "key {k} moved back from candidate to stable");
        *e |= *n;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sticky_keys_keep_their_variant_and_never_move_back() {
    let model = "bc_sticky";
    let s = start(model, Candidate::Good, "").await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "kind": "ab", "sticky_header": "x-user-id",
               "steps": [10, 40, 70, 100], "interval": "500ms", "min_requests": 20,
               "compare_fraction": 1.0, "p99_slack_ms": 1000.0, "failure_limit": 3}),
    )
    .await;
    let keys: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut ever = vec![false; keys.len()];
    let mut checked = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    loop {
        let st = status(&s, model).await;
        if phase(&st) == "succeeded" {
            break;
        }
        assert_eq!(phase(&st), "running", "{st:#}");
        if !checked.contains(&step(&st)) {
            // Hold the step (no traffic decides while paused) and check it twice over.
            assert_eq!(act(&s, model, "pause").await.0, 200);
            let st = status(&s, model).await;
            let (at, weight) = (step(&st), st["rollout"]["weight"].as_f64().unwrap());
            let first = round(&s, model, &keys).await;
            never_back(&mut ever, &first, &keys);
            assert_eq!(
                round(&s, model, &keys).await,
                first,
                "every key keeps its variant within step {at}"
            );
            let share = first.iter().filter(|c| **c).count() as f64;
            let n = keys.len() as f64;
            let sd = (n * weight * (1.0 - weight)).sqrt();
            assert!(
                (share - n * weight).abs() <= 5.0 * sd,
                "step {at}: {share} of {n} keys on the candidate at weight {weight}"
            );
            if checked.is_empty() {
                the_key_can_come_from_anywhere(&s, model, &keys, &first).await;
            }
            checked.push(at);
            assert_eq!(act(&s, model, "resume").await.0, 200);
        }
        let now = round(&s, model, &keys).await;
        never_back(&mut ever, &now, &keys);
        assert!(
            Instant::now() < deadline,
            "the rollout did not succeed within {DEADLINE:?}: {st:#}"
        );
    }
    assert_eq!(checked[0], 0, "step 0 was checked while paused");
    let st = status(&s, model).await;
    assert_eq!(st["pinned_version"], 2, "{st:#}");
    // Promoted: every key on version 2, no rollout any more.
    for (i, k) in keys.iter().enumerate().take(50) {
        let r = send(
            &s.client,
            &s.url(&format!("/v2/models/{model}/infer")),
            &body(i),
            &[("x-user-id", k)],
        )
        .await;
        assert_eq!((r.status, r.version.as_deref()), (200, Some("2")));
        assert_eq!(r.variant, None);
    }
}

/// The sticky key works as the `routing_key` request parameter too (REST and gRPC), and a
/// request without a key is still answered.
async fn the_key_can_come_from_anywhere(
    s: &TestServer,
    model: &str,
    keys: &[String],
    by_header: &[bool],
) {
    let url = s.url(&format!("/v2/models/{model}/infer"));
    // Some keys of each variant.
    let picked: Vec<usize> = (0..keys.len())
        .filter(|&i| by_header[i])
        .take(5)
        .chain((0..keys.len()).filter(|&i| !by_header[i]).take(5))
        .collect();
    assert!(picked.len() == 10, "both variants among the keys");
    let addr = s.server.as_ref().unwrap().grpc_addr;
    let mut grpc =
        switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap();
    for i in picked {
        let mut b = body(i);
        b["parameters"] = json!({"routing_key": keys[i]});
        let r = send(&s.client, &url, &b, &[]).await;
        r.assert_consistent("1", "2");
        assert_eq!(
            r.on_candidate(),
            by_header[i],
            "key {} as a parameter gets what it gets as a header",
            keys[i]
        );

        let raw: Vec<u8> = rows(2, i).iter().flat_map(|f| f.to_le_bytes()).collect();
        let mut parameters = std::collections::HashMap::new();
        parameters.insert(
            "routing_key".to_string(),
            switchyard::grpc::pb::InferParameter {
                parameter_choice: Some(
                    switchyard::grpc::pb::infer_parameter::ParameterChoice::StringParam(
                        keys[i].clone(),
                    ),
                ),
            },
        );
        let answer = grpc
            .model_infer(switchyard::grpc::pb::ModelInferRequest {
                model_name: model.into(),
                inputs: vec![
                    switchyard::grpc::pb::model_infer_request::InferInputTensor {
                        name: "X".into(),
                        datatype: "FP32".into(),
                        shape: vec![2, 30],
                        ..Default::default()
                    },
                ],
                raw_input_contents: vec![raw.into()],
                parameters,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.model_version,
            if by_header[i] { "2" } else { "1" },
            "key {} over gRPC",
            keys[i]
        );
    }
    // No key: the weighted split still answers.
    for r in burst(s, model, 20, body).await {
        r.assert_consistent("1", "2");
        assert!(r.variant.is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_never_changes_what_callers_get_and_rolls_back_a_failing_candidate() {
    let model = "bc_shadow";
    let s = start(model, Candidate::Fixture("bc_flaky"), "").await;
    // What version 1 answers, asked directly.
    let mut expected = Vec::new();
    for i in 0..40 {
        let r = send(
            &s.client,
            &s.url(&format!("/v2/models/{model}/versions/1/infer")),
            &flaky_body(i),
            &[],
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        expected.push(r.body["outputs"].clone());
    }
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "kind": "shadow", "shadow_fraction": 1.0,
               "interval": "400ms", "min_requests": 10, "failure_limit": 1,
               "p99_slack_ms": 1000.0}),
    )
    .await;
    // Every copy fails on the candidate; no caller notices.
    let (st, replies) = drive(
        &s,
        model,
        |i| flaky_body(i % 40),
        |st| phase(st) != "running",
    )
    .await;
    assert!(!replies.is_empty());
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.version.as_deref(), Some("1"));
        assert_ne!(r.variant.as_deref(), Some("candidate"));
        assert_eq!(r.body["outputs"], expected[i % 40], "request {i}");
    }
    let m = format!("model=\"{model}\"");
    assert!(
        metric(
            &s,
            "switchyard_shadow_requests_total",
            &[&m, "outcome=\"failed\""]
        )
        .await
            > 0.0
    );
    assert_rolled_back(&s, model, &st, "error_rate_increase").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shadow_copies_are_shed_when_the_candidate_queue_is_half_full() {
    let model = "bc_shadow_shed";
    // One slow session (~9 ms a run) and room for two waiting requests: a copy that finds one
    // copy waiting is shed. Two callers never fill stable's queue of two.
    let s = start(
        model,
        Candidate::Fixture("bc_slow"),
        "[batching]\nmax_queue_size = 2\n[runtime]\ninstances = 1\n",
    )
    .await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "kind": "shadow", "shadow_fraction": 1.0,
               "interval": "1h"}),
    )
    .await;
    let url = s.url(&format!("/v2/models/{model}/infer"));
    let callers: Vec<_> = (0..2)
        .map(|c| {
            let (client, url) = (s.client.clone(), url.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for i in 0..100 {
                    out.push(send(&client, &url, &body(c * 100 + i), &[]).await);
                }
                out
            })
        })
        .collect();
    for c in callers {
        for r in c.await.unwrap() {
            assert_eq!(r.status, 200, "{:?}", r.body);
            assert_eq!(r.version.as_deref(), Some("1"));
            assert_eq!(r.variant.as_deref(), Some("stable"));
        }
    }
    let m = format!("model=\"{model}\"");
    let shed = metric(
        &s,
        "switchyard_shadow_requests_total",
        &[&m, "outcome=\"shed\""],
    )
    .await;
    assert!(shed > 0.0, "copies were shed");
    assert!(shed < 200.0, "not every copy: {shed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disagreeing_retrain_is_rolled_back() {
    bad_candidate(
        "bc_bad_retrain",
        Candidate::Retrained,
        json!({"compare_fraction": 1.0}),
        body,
        "disagreement",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_constant_candidate_is_rolled_back() {
    bad_candidate(
        "bc_bad_constant",
        Candidate::Fixture("bc_constant"),
        json!({"compare_fraction": 1.0, "failure_limit": 1}),
        body,
        "disagreement",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_answering_nan_is_rolled_back() {
    // Not compared: NaN rows would also count as disagreeing.
    bad_candidate(
        "bc_bad_nan",
        Candidate::Fixture("bc_nan"),
        json!({"compare_fraction": 0}),
        body,
        "nan_rate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_candidate_is_rolled_back() {
    // bc_slow's answers differ from version 1's; only its latency is on trial here.
    bad_candidate(
        "bc_bad_slow",
        Candidate::Fixture("bc_slow"),
        json!({"compare_fraction": 0.1, "max_disagreement": 1.0, "max_p99_ratio": 1.5,
               "p99_slack_ms": 1.0}),
        body,
        "p99_ratio",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_candidate_is_rolled_back() {
    let replies = bad_candidate(
        "bc_bad_flaky",
        Candidate::Fixture("bc_flaky"),
        json!({"compare_fraction": 0}),
        flaky_body,
        "error_rate_increase",
    )
    .await;
    // Callers on the candidate got its refusal (a 400, as a single version would give them);
    // stable answered the others.
    let failed = replies.iter().filter(|r| r.status != 200).count();
    assert!(failed > 0, "the candidate failed some callers");
    for r in &replies {
        if r.status != 200 {
            assert_eq!(r.status, 400, "{:?}", r.body);
            let e = r.body["error"].as_str().unwrap();
            assert!(e.contains("the model rejected the input"), "{e}");
            // A failure says which side failed it.
            assert_eq!(r.variant.as_deref(), Some("candidate"));
        } else {
            assert_eq!(
                (r.status, r.version.as_deref()),
                (200, Some("1")),
                "{:?}",
                r.body
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_candidate_is_promoted_after_the_last_step() {
    let model = "bc_good";
    let s = start(model, Candidate::Good, "").await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [25, 100], "interval": "400ms",
               "min_requests": 20, "compare_fraction": 1.0, "p99_slack_ms": 1000.0,
               "failure_limit": 3}),
    )
    .await;
    let (st, replies) = drive(&s, model, body, |st| phase(st) != "running").await;
    for r in &replies {
        r.assert_consistent("1", "2");
    }
    assert_eq!(phase(&st), "succeeded", "{st:#}");
    assert_eq!(st["pinned_version"], 2);
    let d = decisions(&st);
    assert_eq!(d.first().map(String::as_str), Some("started"));
    assert!(d.iter().any(|d| d == "advanced"), "{d:?}");
    assert_eq!(d.last().map(String::as_str), Some("succeeded"), "{d:?}");
    let agreement = &st["rollout"]["last_decision"]["checks"];
    assert!(
        agreement
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["verdict"] == "pass"),
        "{agreement:#}"
    );
    for r in burst(&s, model, 40, body).await {
        assert_eq!((r.status, r.version.as_deref()), (200, Some("2")));
        assert_eq!(r.variant, None);
    }
    let m = format!("model=\"{model}\"");
    assert_eq!(
        metric(
            &s,
            "switchyard_deployments_total",
            &[&m, "outcome=\"succeeded\""]
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(&s, "switchyard_rollout_state", &[&m, "state=\"succeeded\""]).await,
        1.0
    );
    assert_eq!(
        metric(&s, "switchyard_rollout_weight", &[&m, "version=\"2\""]).await,
        1.0
    );
    // Lead time: from the candidate's trained_at (metadata.json) to the promotion just made.
    let card: Value = serde_json::from_slice(
        &std::fs::read(common::repo_root().join("models/breast_cancer/1/metadata.json")).unwrap(),
    )
    .unwrap();
    let trained: jiff::Timestamp = card["trained_at"].as_str().unwrap().parse().unwrap();
    let finished = st["rollout"]["finished"].as_str().unwrap();
    let finished: jiff::Timestamp = finished.parse().unwrap();
    let expected = (finished.as_millisecond() - trained.as_millisecond()) as f64 / 1000.0;
    let lead = metric(&s, "switchyard_deployment_lead_time_seconds", &[&m]).await;
    assert!(
        (lead - expected).abs() < 0.002,
        "lead time {lead} vs {expected}"
    );
}

/// Counts what steady callers got.
#[derive(Default)]
struct Tally {
    total: AtomicU64,
    by_version: [AtomicU64; 3],
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn version(&self, v: usize) -> u64 {
        self.by_version[v].load(Ordering::Relaxed)
    }

    /// Waits (callers running) until version `v` answered `n` more requests than `from`.
    async fn wait_for(&self, v: usize, from: u64, n: u64) {
        let deadline = Instant::now() + DEADLINE;
        while self.version(v) < from + n {
            assert!(
                Instant::now() < deadline,
                "version {v} answered {} requests, not {n}",
                self.version(v) - from
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_request_fails_under_steady_load_across_steps_promotion_and_abort() {
    let model = "bc_steady";
    let s = start(model, Candidate::Good, "").await;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let url = s.url(&format!("/v2/models/{model}/infer"));
    let callers: Vec<_> = (0..8)
        .map(|c| {
            let (client, url, tally, stop) =
                (s.client.clone(), url.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = c * 50;
                while !stop.load(Ordering::Relaxed) {
                    let r = send(&client, &url, &body(i), &[]).await;
                    i += 1;
                    tally.total.fetch_add(1, Ordering::Relaxed);
                    match r.version.as_deref() {
                        Some("1") if r.status == 200 => {
                            tally.by_version[1].fetch_add(1, Ordering::Relaxed);
                        }
                        Some("2") if r.status == 200 => {
                            tally.by_version[2].fetch_add(1, Ordering::Relaxed);
                        }
                        _ => tally
                            .failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", r.status, r.body)),
                    }
                }
            })
        })
        .collect();

    // 1 → 2 through three steps, promoted by the analysis.
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [20, 60, 100], "interval": "400ms",
               "min_requests": 20, "compare_fraction": 1.0, "p99_slack_ms": 1000.0,
               "failure_limit": 3}),
    )
    .await;
    let st = wait_status(&s, model, |st| phase(st) != "running").await;
    assert_eq!(phase(&st), "succeeded", "{st:#}");
    assert_eq!(
        decisions(&st).iter().filter(|d| *d == "advanced").count(),
        2,
        "{st:#}"
    );

    // Back from 2 to 1, aborted by an operator while it splits.
    let spec = json!({"candidate": 1, "stable": 2, "steps": [50], "interval": "1h"});
    start_rollout(&s, model, spec.clone()).await;
    tally.wait_for(1, tally.version(1), 100).await;
    let (code, st) = act(&s, model, "abort").await;
    assert_eq!((code, phase(&st)), (200, "aborted"), "{st:#}");
    assert_eq!(st["pinned_version"], 2);
    tally.wait_for(2, tally.version(2), 100).await;

    // Again, promoted by an operator.
    start_rollout(&s, model, spec).await;
    tally.wait_for(1, tally.version(1), 100).await;
    let (code, st) = act(&s, model, "promote").await;
    assert_eq!((code, phase(&st)), (200, "succeeded"), "{st:#}");
    assert_eq!(st["pinned_version"], 1);
    tally.wait_for(1, tally.version(1), 100).await;

    stop.store(true, Ordering::Relaxed);
    for c in callers {
        c.await.unwrap();
    }
    let failures = std::mem::take(&mut *tally.failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, first: {:?}",
        failures.len(),
        tally.total.load(Ordering::Relaxed),
        failures.first()
    );
    let r = infer(&s, model, &body(0)).await;
    assert_eq!((r.status, r.version.as_deref()), (200, Some("1")));
    let m = format!("model=\"{model}\"");
    assert_eq!(
        metric(
            &s,
            "switchyard_deployments_total",
            &[&m, "outcome=\"succeeded\""]
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &s,
            "switchyard_deployments_total",
            &[&m, "outcome=\"aborted\""]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_resumes_the_rollout_at_its_step() {
    let model = "bc_restart";
    let reg = registry(model, Candidate::Good, "");
    let mut s = serve(reg.path(), 5.0).await;
    let started = start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [10, 50, 100], "interval": "300ms",
               "min_requests": 10, "compare_fraction": 1.0, "p99_slack_ms": 1000.0,
               "failure_limit": 3}),
    )
    .await;
    let id = started["rollout"]["id"].as_str().unwrap().to_string();
    // Four requests at a time: too few for the next interval to pass before the pause.
    let deadline = Instant::now() + DEADLINE;
    let mut i = 0;
    while step(&status(&s, model).await) == 0 {
        assert!(Instant::now() < deadline, "step 0 never passed");
        for r in burst(&s, model, 4, |k| body(i + k)).await {
            r.assert_consistent("1", "2");
        }
        i += 4;
    }
    let (code, before) = act(&s, model, "pause").await;
    assert_eq!(code, 200, "{before}");
    assert_eq!((step(&before), phase(&before)), (1, "paused"), "{before:#}");

    let server = s.server.take().unwrap();
    server.shutdown();
    server.wait().await.unwrap();
    drop(s);

    let s = serve(reg.path(), 5.0).await;
    let after = status(&s, model).await;
    assert_eq!(after["rollout"]["id"], id.as_str());
    assert_eq!((step(&after), phase(&after)), (1, "paused"), "{after:#}");
    assert_eq!(after["rollout"]["history"], before["rollout"]["history"]);
    assert_eq!(after["rollout"]["weight"], 0.5);
    let replies = burst(&s, model, 100, body).await;
    for r in &replies {
        r.assert_consistent("1", "2");
    }
    let on_candidate = replies.iter().filter(|r| r.on_candidate()).count();
    assert!(
        on_candidate > 0 && on_candidate < replies.len(),
        "both variants answer at 50%: {on_candidate} of {}",
        replies.len()
    );
    // The new server carries it on to the end.
    assert_eq!(act(&s, model, "resume").await.0, 200);
    let (st, _) = drive(&s, model, body, |st| phase(st) != "running").await;
    assert_eq!(phase(&st), "succeeded", "{st:#}");
    assert_eq!(st["rollout"]["id"], id.as_str());
    assert_eq!(st["pinned_version"], 2);
}

/// The version each key gets from `s`.
async fn versions_by_key(s: &TestServer, model: &str, keys: &[String]) -> Vec<String> {
    let url = s.url(&format!("/v2/models/{model}/infer"));
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let r = send(&s.client, &url, &body(i), &[("x-user-id", k)]).await;
        r.assert_consistent("1", "2");
        out.push(r.version.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_route_alike_and_both_see_an_abort() {
    let model = "bc_replicas";
    let reg = registry(model, Candidate::Retrained, "");
    let a = serve(reg.path(), 0.2).await;
    let b = serve(reg.path(), 0.2).await;
    let started = start_rollout(
        &a,
        model,
        json!({"candidate": 2, "stable": 1, "kind": "ab", "sticky_header": "x-user-id",
               "steps": [50], "interval": "1h", "compare_fraction": 0}),
    )
    .await;
    let id = started["rollout"]["id"].clone();
    wait_status(&b, model, |st| st["rollout"]["id"] == id).await;

    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let on_a = versions_by_key(&a, model, &keys).await;
    let on_b = versions_by_key(&b, model, &keys).await;
    assert_eq!(on_a, on_b, "both replicas give each key the same version");
    assert!(on_a.iter().any(|v| v == "1") && on_a.iter().any(|v| v == "2"));

    let (code, st) = act(&a, model, "abort").await;
    assert_eq!((code, phase(&st)), (200, "aborted"));
    let seen = wait_status(&b, model, |st| phase(st) == "aborted").await;
    assert_eq!(seen["rollout"]["id"], id);
    assert_eq!(seen["pinned_version"], 1);
    for (i, k) in keys.iter().enumerate() {
        let r = send(
            &b.client,
            &b.url(&format!("/v2/models/{model}/infer")),
            &body(i),
            &[("x-user-id", k)],
        )
        .await;
        assert_eq!((r.status, r.version.as_deref()), (200, Some("1")));
        assert_eq!(r.variant, None);
    }
    drop((a, b));
    drop(reg);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rollout_endpoints_refuse_what_they_cannot_do() {
    let model = "bc_admin";
    let s = start(model, Candidate::Good, "").await;
    let path = format!("/admin/models/{model}/rollout");

    // No rollout yet.
    let (code, e) = s.get(&path).await;
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("has no rollout"),
        "{e}"
    );
    let (code, e) = act(&s, model, "abort").await;
    assert_eq!(code, 404, "{e}");
    let (code, e) = s.get("/admin/models/nope/rollout").await;
    assert_eq!(code, 404, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown model 'nope'"),
        "{e}"
    );

    // Bad specs name the field.
    for (spec, needle) in [
        (json!({"candidate": 2, "stable": 1, "stepz": [5]}), "stepz"),
        (
            json!({"candidate": 2, "stable": 1, "steps": [50, 25]}),
            "steps",
        ),
        (
            json!({"candidate": 2, "stable": 1, "max_nan_rate": 2}),
            "max_nan_rate",
        ),
        (json!({"stable": 1}), "candidate"),
    ] {
        let (code, e) = put_rollout(&s, model, &spec).await;
        assert_eq!(code, 400, "{spec}: {e}");
        let msg = e["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{spec}: {msg}");
    }
    // A candidate that is not loaded.
    let (code, e) = put_rollout(&s, model, &json!({"candidate": 7, "stable": 1})).await;
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("version 7"), "{e}");
    assert_eq!(s.get(&path).await.0, 404, "nothing was started");

    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "interval": "1h"}),
    )
    .await;
    let (code, e) = put_rollout(&s, model, &json!({"candidate": 2, "stable": 1})).await;
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("already has a running rollout"),
        "{e}"
    );
    let (code, e) = act(&s, model, "explode").await;
    assert_eq!(code, 404, "{e}");
    assert!(e["error"].as_str().unwrap().contains("explode"), "{e}");
    let (code, e) = act(&s, model, "resume").await;
    assert_eq!(code, 409, "{e}");
    assert!(e["error"].as_str().unwrap().contains("not paused"), "{e}");
    let (code, e) = s
        .post_json(
            &format!("/admin/models/{model}/promote"),
            &json!({"version": 2}),
        )
        .await;
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("running rollout of version 2"),
        "{e}"
    );

    let (code, st) = act(&s, model, "abort").await;
    assert_eq!((code, phase(&st)), (200, "aborted"));
    let (code, e) = act(&s, model, "abort").await;
    assert_eq!(code, 409, "{e}");
    assert!(
        e["error"].as_str().unwrap().contains("already aborted"),
        "{e}"
    );
    // Ended: the pin is the operator's again.
    let (code, e) = s
        .post_json(
            &format!("/admin/models/{model}/promote"),
            &json!({"version": 2}),
        )
        .await;
    assert_eq!(code, 200, "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_routing_key_of_the_wrong_type_is_refused() {
    let model = "bc_bad_key";
    let s = start(model, Candidate::Good, "").await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "kind": "ab", "steps": [50], "interval": "1h"}),
    )
    .await;
    let mut b = body(0);
    b["parameters"] = json!({"routing_key": 1.5});
    let r = infer(&s, model, &b).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    let e = r.body["error"].as_str().unwrap();
    assert!(
        e.contains("routing_key") && e.contains("string or an integer"),
        "{e}"
    );
    b["parameters"] = json!({"routing_key": "user-7"});
    assert_eq!(infer(&s, model, &b).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_removed_mid_rollout_is_rolled_back_not_held() {
    let model = "bc_removed";
    let reg = registry(model, Candidate::Good, "");
    let mut a = common::args(reg.path());
    a.repository_poll_secs = 0.2;
    a.model_control_mode = switchyard::models::ControlMode::Poll;
    let mut s = TestServer::start_with(a).await;
    s.wait_ready().await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [50], "interval": "500ms",
               "min_requests": 1000000}),
    )
    .await;
    std::fs::remove_dir_all(reg.path().join(model).join("2")).unwrap();
    s.keep_registry(reg);
    let (st, replies) = drive(&s, model, body, |st| phase(st) != "running").await;
    assert_eq!(phase(&st), "aborted", "{st}");
    let reason = st["rollout"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("the candidate version 2 is not ready on this replica"),
        "{reason}"
    );
    // Callers were answered throughout (by version 1 once version 2 was gone).
    assert!(replies.iter().all(|r| r.status == 200));
    assert_eq!(
        infer(&s, model, &body(1)).await.version.as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_compares_the_variants_on_real_outcomes() {
    let model = "bc_canary_feedback";
    let s = start(model, Candidate::Retrained, "").await;
    start_rollout(
        &s,
        model,
        json!({"candidate": 2, "stable": 1, "steps": [50], "interval": "1h", "compare_fraction": 0}),
    )
    .await;
    // Requests with ids; the "truth" here is label 1 for every row, so each variant's live
    // accuracy is the share of rows it predicted 1, known exactly from the answers.
    let replies = burst(&s, model, 400, |i| {
        let mut b = body(i);
        b["id"] = json!(format!("r{i}"));
        b
    })
    .await;
    let (mut correct, mut labels) = ([0u64; 2], [0u64; 2]);
    let mut items = Vec::new();
    for (i, r) in replies.iter().enumerate() {
        r.assert_consistent("1", "2");
        let side = usize::from(r.on_candidate());
        let predicted = r.body["outputs"][0]["data"].as_array().unwrap();
        labels[side] += predicted.len() as u64;
        correct[side] += predicted.iter().filter(|p| p.as_i64() == Some(1)).count() as u64;
        items.push(json!({"id": format!("r{i}"), "labels": vec![1; predicted.len()]}));
    }
    let (code, outcome) = s
        .post_json(&format!("/v2/models/{model}/feedback"), &json!(items))
        .await;
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(outcome["joined"], labels[0] + labels[1], "{outcome}");

    let q = status(&s, model).await["quality"].clone();
    for (side, name) in [(0, "stable"), (1, "candidate")] {
        assert_eq!(q[name]["labels"], labels[side], "{q}");
        let want = correct[side] as f64 / labels[side] as f64;
        let got = q[name]["accuracy"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{name}: {got} != {want}");
    }
    let p = switchyard::monitoring::quality::two_proportion_p_value(
        correct[0], labels[0], correct[1], labels[1],
    );
    let (got, want) = (q["accuracy_p_value"].as_f64().unwrap(), p.unwrap());
    // JSON text rounds the last bit (serde_json's fast float parsing).
    assert!((got - want).abs() <= want * 1e-12, "{got} != {want}: {q}");
    assert!((0.0..=1.0).contains(&want));
}

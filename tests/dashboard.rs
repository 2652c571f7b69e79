//! The Grafana dashboard (deploy/grafana/switchyard.json) and the Prometheus rules
//! (deploy/prometheus/alerts.yml) against a real Prometheus scraping the real binary: traffic
//! makes every metric family appear, then every dashboard query (its template variables
//! substituted) and every rule is evaluated through Prometheus's HTTP API. A query that does not
//! parse, a dashboard query that returns nothing, or a metric name the server does not export
//! fails the test. Prometheus comes from Debian's `prometheus` package (CI installs it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use switchyard::grpc::pb;
use switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const DASHBOARD: &str = "deploy/grafana/switchyard.json";
const RULES: &str = "deploy/prometheus/alerts.yml";
/// The model the traffic goes to: breast_cancer versions 1 and 2.
const MODEL: &str = "bc";
const ADMIN_TOKEN: &str = "dashboard-test-admin-token";
/// How long any one wait (a rollout's phase, a scrape, a rule evaluation) may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Names the dashboard may show before the server exports them (a panel landing ahead of its
/// metric). A name stops being pending as soon as the server's source defines it; from then on
/// it is checked like the rest. None today.
const PENDING: &[&str] = &[];

/// Metrics the server exports that the dashboard leaves out on purpose, with the reason.
const NOT_ON_DASHBOARD: &[(&str, &str)] = &[];

/// Grafana's built-in interval variables, as Grafana would fill them on a 1 h dashboard.
const BUILTINS: &[(&str, &str)] = &[
    ("$__rate_interval", "1m"),
    ("$__range", "5m"),
    ("$__interval", "15s"),
];

// ---------------------------------------------------------------------------------------------
// The dashboard file, read statically.

fn read(path: &str) -> String {
    let p = common::repo_root().join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("a panels array") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// One query of the dashboard: where it is, and its PromQL.
struct Query {
    place: String,
    expr: String,
}

/// Every panel target's expression, and each template variable's query turned into PromQL.
fn queries(d: &Value) -> Vec<Query> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                place: format!(
                    "panel {:?} target {}",
                    p["title"].as_str().unwrap_or("?"),
                    t["refId"].as_str().unwrap_or("?")
                ),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
            });
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap_or_default();
            out.push(Query {
                place: format!("variable ${}", v["name"].as_str().unwrap_or("?")),
                expr: label_values_as_promql(q),
            });
        }
    }
    out
}

/// `label_values(selector, label)` (Grafana's variable query) as the PromQL that has those
/// values: `group by (label) (selector)`.
fn label_values_as_promql(q: &str) -> String {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("a variable query that is not label_values(...): {q}"));
    let (selector, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("label_values without a metric: {q}"));
    format!("group by ({}) ({})", label.trim(), selector.trim())
}

/// The expression with the template variables filled in.
fn substitute(expr: &str, model: &str, version: &str) -> String {
    let mut e = expr.to_string();
    for (name, value) in BUILTINS {
        e = e.replace(name, value);
    }
    for (name, value) in [("model", model), ("version", version)] {
        e = e
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    e
}

/// The `switchyard_*` identifiers of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("switchyard_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
        if !before.is_some_and(ident) {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// The metric names the server's source defines (string literals `"switchyard_..."`).
fn exported_names() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("switchyard_")
                        && piece.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        out.insert(piece.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&common::repo_root().join("src"), &mut out);
    out
}

/// The family a series name belongs to (`x_bucket`, `x_sum`, `x_count` of histogram `x`).
fn family<'a>(name: &'a str, exported: &BTreeSet<String>) -> &'a str {
    if exported.contains(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && exported.contains(base)
        {
            return base;
        }
    }
    name
}

/// Pending: listed in [`PENDING`] and not yet defined by the server's source.
fn is_pending(name: &str, exported: &BTreeSet<String>) -> bool {
    PENDING.contains(&name) && !exported.contains(name)
}

#[test]
fn the_dashboard_is_importable_and_shows_only_exported_metrics() {
    let d = dashboard();
    let mut problems = Vec::new();
    assert!(
        d["schemaVersion"].as_u64().unwrap_or(0) >= 36,
        "schemaVersion"
    );
    assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "a uid");
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v))
        .collect();
    let ds = vars.get("DS_PROMETHEUS").expect("a DS_PROMETHEUS variable");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    for name in ["model", "version"] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("a ${name} variable"));
        assert_eq!(v["type"], "query", "${name}");
        assert_eq!(v["includeAll"], true, "${name} offers All");
        assert_eq!(v["allValue"], ".*", "${name}'s All is a regex");
        assert_eq!(v["datasource"]["uid"], "${DS_PROMETHEUS}", "${name}");
    }

    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().expect("a numeric panel id")) {
            problems.push(format!("panel {title:?}: id {} used twice", p["id"]));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            problems.push(format!(
                "panel {title:?}: datasource is not ${{DS_PROMETHEUS}}"
            ));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?}: no query"));
        }
        let mut refs = BTreeSet::new();
        for t in &targets {
            if !refs.insert(t["refId"].as_str().unwrap_or_default().to_string()) {
                problems.push(format!("panel {title:?}: refId {} used twice", t["refId"]));
            }
            if t["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problems.push(format!("panel {title:?}: a target without expr"));
            }
        }
    }

    let exported = exported_names();
    let mut shown = BTreeSet::new();
    for q in queries(&d) {
        // Windows come from Grafana ($__rate_interval, $__range), never hard-coded.
        for window in q.expr.split('[').skip(1) {
            let window = window.split(']').next().unwrap_or_default();
            if !window.starts_with("$__") {
                problems.push(format!("{}: hard-coded window [{window}]", q.place));
            }
        }
        for name in metric_names(&q.expr) {
            let fam = family(&name, &exported);
            if !exported.contains(fam) && !is_pending(fam, &exported) {
                problems.push(format!(
                    "{}: {name} is not a metric the server exports",
                    q.place
                ));
            }
            shown.insert(fam.to_string());
        }
    }
    for name in &exported {
        let left_out = NOT_ON_DASHBOARD.iter().any(|(n, _)| n == name);
        if !shown.contains(name) && !left_out {
            problems.push(format!(
                "{name} is exported but on no panel (add one, or list it in NOT_ON_DASHBOARD \
                 with the reason)"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        "sum by (le) (rate(switchyard_a_bucket{x=\"switchyard_b\"}[1m])) / \
         not_switchyard_c + switchyard_d:rate",
    );
    let want: BTreeSet<String> = ["switchyard_a_bucket", "switchyard_b", "switchyard_d:rate"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
    assert_eq!(
        label_values_as_promql("label_values(m{model=~\"$model\"}, version)"),
        "group by (version) (m{model=~\"$model\"})"
    );
    assert_eq!(
        substitute(
            "rate(x{model=~\"$model\",v=~\"${version}\"}[$__rate_interval])",
            "a",
            "1"
        ),
        "rate(x{model=~\"a\",v=~\"1\"}[1m])"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Prometheus server binary, or None after a note (a failure under CI=true, where it is
/// installed).
fn prometheus() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("prometheus"))
            .find(|p| p.is_file())
    });
    let found = on_path.or_else(|| {
        let p = PathBuf::from("/usr/bin/prometheus");
        p.is_file().then_some(p)
    });
    if found.is_none() {
        let note = format!(
            "note: prometheus not found (PATH, /usr/bin): {DASHBOARD} and {RULES} were not \
             evaluated (Debian: apt-get install prometheus; .ci/run does)"
        );
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{note}");
        // Written past the test harness's capture, so it shows in a passing run too.
        let _ = writeln!(std::io::stderr(), "{note}");
    }
    found
}

/// The running server: its REST and gRPC addresses.
struct Switchyard {
    _proc: Proc,
    http: String,
    grpc: String,
}

/// Starts the binary over `registry` and waits for its initial load.
fn start_switchyard(registry: &Path, capture: &Path, token_file: &Path) -> Switchyard {
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--host", "127.0.0.1"])
        .args(["--http-port", "0", "--grpc-port", "0"])
        .arg("--model-repository")
        .arg(registry)
        .args([
            "--model-control-mode",
            "poll",
            "--repository-poll-secs",
            "0.5",
        ])
        .arg("--capture-dir")
        .arg(capture)
        // Two rows: a four-row request never fits, so capture drops are certain.
        .args(["--capture-queue-rows", "2", "--capture-max-file-age", "1s"])
        .arg("--admin-token-file")
        .arg(token_file)
        // Above the scrape interval, so Prometheus's idle connections are not the ones closed.
        .args(["--request-read-timeout-secs", "2"])
        .env_remove("ORT_DYLIB_PATH")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = mpsc::channel::<Value>();
    std::thread::spawn(move || {
        // Reads to the end even after the test stops listening, so the server never blocks.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let (mut http, mut grpc, mut loaded) = (None, None, false);
    while http.is_none() || grpc.is_none() || !loaded {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("switchyard logs 'listening' twice and 'initial model load finished'");
        match v["message"].as_str() {
            Some("listening") if v["protocol"] == "http" => {
                http = v["addr"].as_str().map(String::from)
            }
            Some("listening") if v["protocol"] == "grpc" => {
                grpc = v["addr"].as_str().map(String::from)
            }
            Some("initial model load finished") => loaded = true,
            _ => {}
        }
    }
    Switchyard {
        _proc: proc,
        http: http.unwrap(),
        grpc: grpc.unwrap(),
    }
}

/// A port free a moment ago (Prometheus does not report the port it picks for `:0`).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts Prometheus scraping `target` every second with the alert rules loaded; retries on
/// another port if the one picked was taken meanwhile. Returns it and its base URL.
async fn start_prometheus(bin: &Path, dir: &Path, target: &str) -> (Proc, String) {
    let rules = common::repo_root().join(RULES);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules:?}\n\
             scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      \
             - targets: [{target:?}]\n"
        ),
    )
    .unwrap();
    let client = reqwest::Client::new();
    for attempt in 0..5 {
        let port = free_port();
        let log_path = dir.join(format!("prometheus-{attempt}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut proc = Proc(child);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = proc.0.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains("address already in use") {
                    break; // another port
                }
                panic!("prometheus exited ({status}):\n{text}");
            }
            let ready = client
                .get(format!("{base}/-/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return (proc, base);
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {DEADLINE:?}:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    panic!("prometheus found no free port in 5 tries");
}

// ---------------------------------------------------------------------------------------------
// Traffic.

/// `n` breast-cancer-like rows starting at row `offset`.
fn rows(n: usize, offset: usize) -> Vec<f32> {
    common::breast_cancer_rows(n + offset)[offset * 30..].to_vec()
}

fn infer_body(data: Vec<f32>, id: Option<String>) -> Value {
    let n = data.len() / 30;
    let mut b =
        json!({"inputs": [{"name": "X", "shape": [n, 30], "datatype": "FP32", "data": data}]});
    if let Some(id) = id {
        b["id"] = json!(id);
    }
    b
}

/// A JSON admin call with the admin token.
async fn admin(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: &Value,
) -> (u16, Value) {
    let mut req = client.request(method, url).bearer_auth(ADMIN_TOKEN);
    if !body.is_null() {
        req = req.json(body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Sends what makes every metric family appear: predictions over REST and gRPC, bad requests,
/// capture writes and drops, feedback, a load failure and a swap, a refused admin call, a read
/// timeout, and two rollouts (one promoted by its analysis, one aborted by an operator).
async fn traffic(s: &Switchyard, registry: &Path) {
    // The server closes connections idle for its 2 s read timeout; a pooled connection reused at
    // that moment fails (IncompleteMessage, seen once in CI). Drop idle ones well before.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let base = format!("http://{}", s.http);
    let infer_url = |v: &str| format!("{base}/v2/models/{MODEL}/versions/{v}/infer");

    // REST, one row at a time with ids (captured, then labelled), and a bad request per version.
    for v in ["1", "2"] {
        for i in 0..20 {
            let body = infer_body(rows(1, i), Some(format!("rest-{v}-{i}")));
            let (code, answer) = common::post(&client, &infer_url(v), &body).await;
            assert_eq!(code, 200, "{answer}");
        }
        let bad = json!({"inputs": [{"name": "X", "shape": [1, 3], "datatype": "FP32",
                                     "data": [1.0, 2.0, 3.0]}]});
        let (code, answer) = common::post(&client, &infer_url(v), &bad).await;
        assert_eq!(code, 400, "{answer}");
        // Four rows never fit the two-row capture queue: answered, its capture dropped.
        let (code, answer) =
            common::post(&client, &infer_url(v), &infer_body(rows(4, 0), None)).await;
        assert_eq!(code, 200, "{answer}");
    }

    // gRPC.
    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", s.grpc))
        .await
        .unwrap();
    for v in ["1", "2"] {
        for i in 0..5 {
            let raw: Vec<u8> = rows(1, i).iter().flat_map(|f| f.to_le_bytes()).collect();
            let req = pb::ModelInferRequest {
                model_name: MODEL.into(),
                model_version: v.into(),
                id: format!("grpc-{v}-{i}"),
                inputs: vec![pb::model_infer_request::InferInputTensor {
                    name: "X".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 30],
                    ..Default::default()
                }],
                raw_input_contents: vec![raw.into()],
                ..Default::default()
            };
            grpc.model_infer(req).await.unwrap();
        }
    }

    // Feedback: labels for every REST prediction, an unknown id (late), a wrong count (invalid).
    let mut items: Vec<Value> = ["1", "2"]
        .iter()
        .flat_map(|v| {
            (0..20).map(move |i| json!({"id": format!("rest-{v}-{i}"), "labels": [i % 2]}))
        })
        .collect();
    items.push(json!({"id": "never-sent", "labels": [1]}));
    items.push(json!({"id": "grpc-1-0", "labels": [0, 1]}));
    let (code, outcome) = common::post(
        &client,
        &format!("{base}/v2/models/{MODEL}/feedback"),
        &json!(items),
    )
    .await;
    assert_eq!(code, 200, "{outcome}");
    assert_eq!(
        (&outcome["joined"], &outcome["late"]),
        (&json!(40), &json!(1)),
        "{outcome}"
    );

    // The broken model's version 1 failed at start; a good version 2 appears and is swapped in.
    let v2 = registry.join("broken/2");
    std::fs::create_dir_all(&v2).unwrap();
    let src = common::repo_root().join("models/breast_cancer/1");
    for f in ["model.onnx", "metadata.json"] {
        std::fs::copy(src.join(f), v2.join(f)).unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    while !client
        .get(format!("{base}/v2/models/broken/versions/2/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < deadline, "broken/2 never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An admin call with a wrong token: refused and counted.
    let r = client
        .get(format!("{base}/admin/models/{MODEL}/rollout"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A connection that never finishes its headers: closed by the read timeout and counted.
    let mut stream = TcpStream::connect(&s.http).unwrap();
    stream
        .write_all(b"POST /v2/models/bc/infer HTTP/1.1\r\n")
        .unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);

    // A canary of version 2 promoted by its analysis (compared samples give disagreement and
    // shadow counts), then a rollout back to 1 aborted by an operator (time to restore).
    let rollout = format!("{base}/admin/models/{MODEL}/rollout");
    let spec = json!({"candidate": 2, "stable": 1, "steps": [50, 100], "interval": "300ms",
                      "min_requests": 10, "compare_fraction": 0.5, "max_disagreement": 1.0,
                      "p99_slack_ms": 1000.0, "failure_limit": 3});
    let (code, st) = admin(&client, reqwest::Method::PUT, rollout.clone(), &spec).await;
    assert_eq!(code, 200, "{st}");
    let url = format!("{base}/v2/models/{MODEL}/infer");
    let deadline = Instant::now() + DEADLINE;
    let mut sent = 0;
    let st = loop {
        let (_, st) = admin(&client, reqwest::Method::GET, rollout.clone(), &Value::Null).await;
        if st["rollout"]["phase"] != "running" {
            break st;
        }
        assert!(Instant::now() < deadline, "the rollout did not end: {st:#}");
        let replies: Vec<u16> = futures_util::stream::iter(sent..sent + 16)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    common::post(&client, &url, &infer_body(rows(2, i % 400), None))
                        .await
                        .0
                }
            })
            .buffered(8)
            .collect()
            .await;
        assert!(replies.iter().all(|c| *c == 200), "{replies:?}");
        sent += 16;
    };
    assert_eq!(st["rollout"]["phase"], "succeeded", "{st:#}");
    let back = json!({"candidate": 1, "stable": 2, "steps": [50], "interval": "1h"});
    let (code, st) = admin(&client, reqwest::Method::PUT, rollout.clone(), &back).await;
    assert_eq!(code, 200, "{st}");
    let (code, st) = admin(
        &client,
        reqwest::Method::POST,
        format!("{rollout}/abort"),
        &json!({}),
    )
    .await;
    assert_eq!(
        (code, &st["rollout"]["phase"]),
        (200, &json!("aborted")),
        "{st:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// The Prometheus HTTP API.

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// GET `path`: its `data`, or Prometheus's error (a query that does not parse, ...).
    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .query(params)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let code = r.status().as_u16();
        let body: Value = r.json().await.map_err(|e| format!("HTTP {code}: {e}"))?;
        if body["status"] == "success" {
            Ok(body["data"].clone())
        } else {
            Err(format!(
                "HTTP {code}: {}: {}",
                body["errorType"], body["error"]
            ))
        }
    }

    /// An instant query at `time`: its result, empty or not.
    async fn query(&self, expr: &str, time: &str) -> Result<Vec<Value>, String> {
        let data = self
            .get("/api/v1/query", &[("query", expr), ("time", time)])
            .await?;
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            _ => vec![data["result"].clone()],
        })
    }

    /// The switchyard target's last scrape time and health.
    async fn target(&self) -> (String, String, String) {
        let data = self.get("/api/v1/targets", &[]).await.unwrap();
        let t = data["activeTargets"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["labels"]["job"] == "switchyard"))
            .cloned()
            .unwrap_or(Value::Null);
        let s = |k: &str| t[k].as_str().unwrap_or_default().to_string();
        (s("lastScrape"), s("health"), s("lastError"))
    }

    /// Waits until Prometheus has scraped `n` more times after now, successfully.
    async fn wait_scrapes(&self, n: usize) {
        let (before, _, _) = self.target().await;
        let mut seen = BTreeSet::new();
        let deadline = Instant::now() + DEADLINE;
        while seen.len() < n {
            let (last, health, error) = self.target().await;
            if last != before && health == "up" {
                seen.insert(last.clone());
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} scrapes after the traffic; target {health}: {error}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every rule group's rules once each has been evaluated without error.
    async fn rules(&self) -> Vec<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let data = self.get("/api/v1/rules", &[]).await.unwrap();
            let rules: Vec<Value> = data["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            for r in &rules {
                assert_ne!(
                    r["health"], "err",
                    "rule {} fails: {}",
                    r["name"], r["lastError"]
                );
            }
            if !rules.is_empty() && rules.iter().all(|r| r["health"] == "ok") {
                return rules;
            }
            assert!(
                Instant::now() < deadline,
                "rules not all evaluated: {rules:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The rules of the file, counted from its text (`- alert:` and `- record:` entries).
fn rules_in_file() -> usize {
    read(RULES)
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("- alert:") || l.starts_with("- record:"))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_query_and_rule_returns_data_from_a_real_prometheus() {
    let Some(prom_bin) = prometheus() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    for v in ["1", "2"] {
        let to = registry.join(MODEL).join(v);
        std::fs::create_dir_all(&to).unwrap();
        let from = common::repo_root().join("models/breast_cancer").join(v);
        for entry in std::fs::read_dir(from).unwrap().map(Result::unwrap) {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(registry.join("broken/1")).unwrap();
    std::fs::write(registry.join("broken/1/model.onnx"), b"not an ONNX model").unwrap();
    let token_file = dir.path().join("admin-tokens");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();

    let server = start_switchyard(&registry, &dir.path().join("capture"), &token_file);
    let prom_dir = dir.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let (_prom, base) = start_prometheus(&prom_bin, &prom_dir, &server.http).await;
    let api = Api {
        client: reqwest::Client::new(),
        base,
    };

    traffic(&server, &registry).await;
    api.wait_scrapes(3).await;
    let rules = api.rules().await;
    let now = format!(
        "{:.3}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    );
    let scrapes = api
        .query("count_over_time(up{job=\"switchyard\"}[10m])", &now)
        .await
        .unwrap();
    let n: f64 = scrapes[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(n >= 3.0, "{n} scrapes");

    let names: BTreeSet<String> = api
        .get("/api/v1/label/__name__/values", &[])
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let exported = exported_names();
    let mut problems = Vec::new();
    let mut pending_used = BTreeSet::new();
    let missing = |expr: &str, pending_used: &mut BTreeSet<String>| -> Vec<String> {
        let mut out = Vec::new();
        for name in metric_names(expr) {
            if names.contains(&name) {
                continue;
            }
            if is_pending(family(&name, &exported), &exported) {
                pending_used.insert(name);
            } else {
                out.push(name);
            }
        }
        out
    };

    // Every rule: loaded (all of the file), evaluated without error, parses as a query, and names
    // only metrics Prometheus has series of.
    assert_eq!(
        rules.len(),
        rules_in_file(),
        "rules loaded from {RULES}: {rules:#?}"
    );
    for r in &rules {
        let expr = r["query"].as_str().unwrap_or_default();
        let place = format!("rule {}", r["name"]);
        if let Err(e) = api.query(expr, &now).await {
            problems.push(format!("{place}: {e}\n  {expr}"));
        }
        for name in missing(expr, &mut pending_used) {
            problems.push(format!("{place}: no series of {name}"));
        }
    }

    // Every dashboard query, for all models and versions and for one of each: parses, returns
    // data, and names only metrics Prometheus has series of.
    let d = dashboard();
    let qs = queries(&d);
    let mut evaluated = 0;
    for (model, version) in [(".*", ".*"), (MODEL, "1")] {
        for q in &qs {
            let expr = substitute(&q.expr, model, version);
            let place = format!("{} (model {model}, version {version})", q.place);
            if expr.contains('$') {
                problems.push(format!("{place}: an unknown variable in {expr}"));
                continue;
            }
            let absent = missing(&expr, &mut pending_used);
            let pending = metric_names(&expr).iter().any(|n| pending_used.contains(n));
            match api.query(&expr, &now).await {
                Err(e) => problems.push(format!("{place}: {e}\n  {expr}")),
                Ok(result) if result.is_empty() && !pending => {
                    problems.push(format!("{place}: no data\n  {expr}"))
                }
                Ok(_) => {}
            }
            for name in absent {
                problems.push(format!("{place}: no series of {name}"));
            }
            evaluated += 1;
        }
    }
    for name in &pending_used {
        let _ = writeln!(
            std::io::stderr(),
            "note: {name} is not exported yet (pending in {DASHBOARD}); its queries were only \
             parsed"
        );
    }
    assert!(
        problems.is_empty(),
        "{} problems in {DASHBOARD} / {RULES}:\n{}",
        problems.len(),
        problems.join("\n")
    );
    let _ = writeln!(
        std::io::stderr(),
        "evaluated {evaluated} dashboard queries and {} rules against Prometheus",
        rules.len()
    );
}

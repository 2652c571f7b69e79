//! The operator CLI (`switchyard models|load|unload|promote|rollout`): a small client of a running
//! server's admin endpoints (`/admin/...`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::cli::{AdminArgs, Command, RolloutCommand, RolloutStartArgs, SkewArgs};
use crate::tls::{self, Alpn};

/// What stays literal in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `/admin/models/<model>/<action>`, the name percent-encoded so it stays one path segment
/// (names are validated before this; the encoding keeps that true whatever reaches it).
fn model_path(model: &str, action: &str) -> String {
    format!(
        "/admin/models/{}/{action}",
        utf8_percent_encode(model, SEGMENT)
    )
}

/// Where a `--server` address points: TLS or not, the host (for SNI) and `host:port`.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    host: String,
    authority: String,
}

fn target(server: &str) -> Result<Target, String> {
    let (tls, rest) = if let Some(rest) = server.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = server.strip_prefix("https://") {
        (true, rest)
    } else {
        return Err(format!(
            "--server must be an http:// or https:// address (e.g. http://127.0.0.1:8000), not '{server}'"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("--server '{server}' has no host"));
    }
    // `[::1]:8000`, `host:8000`, or a bare host with the scheme's port.
    let (host, has_port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("--server '{server}' has an unclosed '['"))?;
            (h.to_string(), after.starts_with(':'))
        }
        None => match authority.split_once(':') {
            Some((h, _)) => (h.to_string(), true),
            None => (authority.to_string(), false),
        },
    };
    let authority = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if tls { 443 } else { 80 })
    };
    Ok(Target {
        tls,
        host,
        authority,
    })
}

/// The token to send: the first token line of --token-file, else SWITCHYARD_TOKEN.
fn token(admin: &AdminArgs) -> Result<Option<String>, String> {
    if let Some(path) = &admin.token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file '{}': {e}", path.display()))?;
        let (_, token) = crate::auth::token_lines(&text)
            .next()
            .ok_or_else(|| format!("--token-file '{}' holds no token", path.display()))?;
        return Ok(Some(token.to_string()));
    }
    Ok(std::env::var("SWITCHYARD_TOKEN")
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

/// The TLS client settings: the CA to trust (or the system's) and an optional client cert.
fn tls_connector(admin: &AdminArgs) -> Result<tokio_rustls::TlsConnector, String> {
    let identity = admin
        .client_cert
        .as_deref()
        .zip(admin.client_key.as_deref());
    let config = tls::client_config(admin.ca_cert.as_deref(), identity, Alpn::Http1)
        .map_err(|e| e.to_string())?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn send<IO>(
    io: IO,
    server: &str,
    req: Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("{server}: {e}"))?;
    tokio::spawn(conn);
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("{server}: {e}"))
}

async fn call(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let target = target(&admin.server)?;
    let token = token(admin)?;
    let local = matches!(target.host.as_str(), "localhost" | "127.0.0.1" | "::1");
    if token.is_some() && !target.tls && !local {
        eprintln!(
            "warning: sending the admin token to {} in plain text; use an https:// server",
            admin.server
        );
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, &target.authority)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(t) = &token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(CALL_TIMEOUT, exchange(admin, &target, req))
        .await
        .map_err(|_| {
            format!(
                "{} did not answer within {} s",
                admin.server,
                CALL_TIMEOUT.as_secs()
            )
        })?
        .and_then(|(status, body)| answer(status, &body, token.is_some()))
}

/// A load waits for the model to load and an unload for its drain, so this is generous.
const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

async fn exchange(
    admin: &AdminArgs,
    target: &Target,
    req: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", admin.server))?;
    let resp = if target.tls {
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| format!("--server '{}': {e}", admin.server))?;
        let tls = tls_connector(admin)?
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {} failed: {e}", admin.server))?;
        send(tls, &admin.server, req).await?
    } else {
        send(tcp, &admin.server, req).await?
    };
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// The JSON answer, or the server's error message with its status.
fn answer(status: hyper::StatusCode, body: &[u8], sent_token: bool) -> Result<Value, String> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let msg = value["error"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(body).to_string());
        let hint = match (status.as_u16(), sent_token) {
            (401, false) => " (give a token with --token-file or SWITCHYARD_TOKEN)",
            _ => "",
        };
        Err(format!("{msg} ({status}){hint}"))
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn age(secs: &Value) -> String {
    match secs.as_u64() {
        None => "-".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7200 => format!("{}m ago", s / 60),
        Some(s) => format!("{}h ago", s / 3600),
    }
}

/// The `models` table.
pub fn table(status: &Value) -> String {
    let mut out = format!(
        "mode: {}\n{:<20} {:>7}  {:<11} {:<6} {:<7} {:<9} {:>7}  {}\n",
        cell(&status["mode"]),
        "MODEL",
        "VERSION",
        "STATE",
        "PINNED",
        "DEFAULT",
        "LOADED",
        "LOAD MS",
        "REASON"
    );
    for m in status["models"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<20} {:>7}  {:<11} {:<6} {:<7} {:<9} {:>7}  {}\n",
            cell(&m["model"]),
            cell(&m["version"]),
            cell(&m["state"]),
            if m["pinned"] == true { "yes" } else { "-" },
            if m["default"] == true { "*" } else { "" },
            age(&m["loaded_secs_ago"]),
            cell(&m["load_ms"]),
            cell(&m["reason"]),
        ));
    }
    out
}

pub async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Models(admin) => {
            let status = call(&admin, Method::GET, "/admin/models", None).await?;
            print!("{}", table(&status));
        }
        Command::Load(a) => {
            call(&a.admin, Method::POST, &model_path(&a.model, "load"), None).await?;
            println!("loaded '{}'", a.model);
        }
        Command::Unload(a) => {
            call(
                &a.admin,
                Method::POST,
                &model_path(&a.model, "unload"),
                None,
            )
            .await?;
            println!("unloaded '{}'", a.model);
        }
        Command::Promote(p) => {
            let version = if p.unpin { None } else { p.version };
            let r = call(
                &p.admin,
                Method::POST,
                &model_path(&p.model, "promote"),
                Some(json!({ "version": version })),
            )
            .await?;
            match r["pinned_version"].as_u64() {
                Some(v) => println!(
                    "'{}': version {v} now serves requests that name no version",
                    p.model
                ),
                None => println!("'{}': unpinned; the highest ready version serves", p.model),
            }
        }
        Command::Rollout(r) => rollout(r).await?,
        Command::Skew(a) => skew(a).await?,
        Command::Serve(_) => unreachable!("serve is not an admin command"),
    }
    Ok(())
}

/// `switchyard rollout ...`: one call, then the answer as tables (or as JSON with `--json`).
async fn rollout(command: RolloutCommand) -> Result<(), String> {
    let (answer, json, history) = match command {
        RolloutCommand::Start(a) => {
            let body = start_body(&a)?;
            let path = model_path(&a.model, "rollout");
            (
                call(&a.admin, Method::PUT, &path, Some(body)).await?,
                a.json,
                false,
            )
        }
        RolloutCommand::Status(a) => {
            let path = model_path(&a.model, "rollout");
            (
                call(&a.admin, Method::GET, &path, None).await?,
                a.json,
                false,
            )
        }
        RolloutCommand::History(a) => {
            let path = model_path(&a.model, "rollout");
            (
                call(&a.admin, Method::GET, &path, None).await?,
                a.json,
                true,
            )
        }
        RolloutCommand::Pause(a) => rollout_action(&a, "pause").await?,
        RolloutCommand::Resume(a) => rollout_action(&a, "resume").await?,
        RolloutCommand::Promote(a) => rollout_action(&a, "promote").await?,
        RolloutCommand::Abort(a) => rollout_action(&a, "abort").await?,
    };
    if json {
        let text = serde_json::to_string_pretty(&answer).map_err(|e| e.to_string())?;
        println!("{text}");
    } else if history {
        print!("{}", history_table(&answer));
    } else {
        print!("{}", rollout_table(&answer, jiff::Timestamp::now()));
    }
    Ok(())
}

async fn rollout_action(
    a: &crate::cli::RolloutArgs,
    action: &str,
) -> Result<(Value, bool, bool), String> {
    let path = model_path(&a.model, &format!("rollout/{action}"));
    Ok((
        call(&a.admin, Method::POST, &path, None).await?,
        a.json,
        false,
    ))
}

/// The spec fields in the server's names, for messages that name the flag instead.
const SPEC_FIELDS: &[&str] = &[
    "candidate",
    "stable",
    "kind",
    "steps",
    "interval",
    "sticky_header",
    "shadow_fraction",
    "compare_fraction",
    "max_error_rate_increase",
    "max_p99_ratio",
    "p99_slack_ms",
    "max_disagreement",
    "max_nan_rate",
    "min_requests",
    "failure_limit",
];

/// The `PUT .../rollout` body: only the flags given (the server fills the defaults). It is
/// checked here with the server's own rules first, so a bad flag fails before any call.
fn start_body(a: &RolloutStartArgs) -> Result<Value, String> {
    let mut body = serde_json::Map::new();
    body.insert("candidate".into(), json!(a.candidate));
    let mut put = |name: &str, v: Option<Value>| {
        if let Some(v) = v {
            body.insert(name.into(), v);
        }
    };
    put("stable", a.stable.map(|v| json!(v)));
    put("kind", a.kind.map(|k| json!(k.as_str())));
    put("steps", a.steps.as_ref().map(|v| json!(v)));
    put("interval", a.interval.as_ref().map(|v| json!(v)));
    put("sticky_header", a.sticky_header.as_ref().map(|v| json!(v)));
    put("shadow_fraction", a.shadow_fraction.map(|v| json!(v)));
    put("compare_fraction", a.compare_fraction.map(|v| json!(v)));
    put(
        "max_error_rate_increase",
        a.max_error_rate_increase.map(|v| json!(v)),
    );
    put("max_p99_ratio", a.max_p99_ratio.map(|v| json!(v)));
    put("p99_slack_ms", a.p99_slack_ms.map(|v| json!(v)));
    put("max_disagreement", a.max_disagreement.map(|v| json!(v)));
    put("max_nan_rate", a.max_nan_rate.map(|v| json!(v)));
    put("min_requests", a.min_requests.map(|v| json!(v)));
    put("failure_limit", a.failure_limit.map(|v| json!(v)));
    let body = Value::Object(body);
    let as_flags = |msg: String| {
        SPEC_FIELDS.iter().fold(msg, |m, f| {
            m.replace(&format!("\"{f}\""), &format!("--{}", f.replace('_', "-")))
        })
    };
    let spec: crate::routing::RolloutSpec = serde_json::from_value(body.clone())
        .map_err(|e| as_flags(format!("invalid rollout: {e}")))?;
    spec.validate()
        .map_err(|e| as_flags(format!("invalid rollout: {e}")))?;
    Ok(body)
}

/// A number as short as it reads well: "0", "1.5", "0.0123"; null (NaN) is "-".
fn num(v: &Value) -> String {
    match v.as_f64() {
        None => "-".into(),
        Some(x) => trim_zeros(format!("{x:.4}")),
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A percentage already in percent: "5%", "12.5%".
fn percent(x: f64) -> String {
    format!("{}%", trim_zeros(format!("{x:.2}")))
}

/// A fraction as a percentage with two decimals: "0.25%"; null (NaN) is "-".
fn rate(v: &Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |x| format!("{:.2}%", x * 100.0))
}

/// Milliseconds with three decimals; null is "-".
fn millis(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.3}"))
}

/// "45s", "12m 5s", "1h", "3h 20m", "2d 4h": two units at most, a zero second one left out.
fn span(secs: u64) -> String {
    let (big, small) = match secs {
        s if s < 60 => return format!("{s}s"),
        s if s < 3600 => ((s / 60, "m"), (s % 60, "s")),
        s if s < 86_400 => ((s / 3600, "h"), (s % 3600 / 60, "m")),
        s => ((s / 86_400, "d"), (s % 86_400 / 3600, "h")),
    };
    match small {
        (0, _) => format!("{}{}", big.0, big.1),
        (n, unit) => format!("{}{} {n}{unit}", big.0, big.1),
    }
}

/// The server's interval text ("3600s") the way people say it ("1h"); sub-second ones as sent.
fn interval_span(v: &Value) -> String {
    match v
        .as_str()
        .and_then(|t| crate::routing::spec::parse_duration(t).ok())
    {
        Some(d) if d.subsec_nanos() == 0 && d.as_secs() > 0 => span(d.as_secs()),
        _ => cell(v),
    }
}

/// "in 59m 58s" or "3s ago", from an RFC 3339 time; nothing when it does not parse.
fn relative(at: &Value, now: jiff::Timestamp) -> Option<String> {
    let at: jiff::Timestamp = at.as_str()?.parse().ok()?;
    let secs = at.as_second() - now.as_second();
    Some(if secs >= 0 {
        format!("in {}", span(secs.unsigned_abs()))
    } else {
        format!("{} ago", span(secs.unsigned_abs()))
    })
}

/// Rows under a header (left out when empty), each column as wide as its widest cell; `right`
/// marks the columns aligned right (numbers). The last column is not padded.
fn columns(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> Vec<String> {
    let mut all: Vec<Vec<String>> = Vec::with_capacity(rows.len() + 1);
    if !header.is_empty() {
        all.push(header.iter().map(|h| h.to_string()).collect());
    }
    all.extend(rows.iter().cloned());
    let n = all.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            all.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    all.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(
                    |(i, c)| match (right.get(i) == Some(&true), i + 1 == row.len()) {
                        (true, _) => format!("{c:>w$}", w = widths[i]),
                        (false, false) => format!("{c:<w$}", w = widths[i]),
                        (false, true) => c.clone(),
                    },
                )
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

fn lines(out: &mut String, lines: Vec<String>) {
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// One row per check: check, verdict, value, threshold, detail.
fn check_rows(checks: &Value) -> Vec<Vec<String>> {
    checks
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            vec![
                cell(&c["check"]),
                cell(&c["verdict"]),
                num(&c["value"]),
                num(&c["threshold"]),
                cell(&c["detail"]),
            ]
        })
        .collect()
}

/// The `rollout status` view (also printed after start, pause, resume, promote and abort):
/// where the rollout is, what this replica measured in the open interval, the checks of that
/// interval and the last decision. `now` makes "ends in ..." testable.
pub fn rollout_table(status: &Value, now: jiff::Timestamp) -> String {
    let r = &status["rollout"];
    let spec = &r["spec"];
    let active = matches!(r["phase"].as_str(), Some("running" | "paused"));
    let mut out = String::new();
    let pinned = match status["pinned_version"].as_u64() {
        Some(v) => format!(" (pinned version {v})"),
        None => String::new(),
    };
    out.push_str(&format!("model:      {}{pinned}\n", cell(&status["model"])));
    let how = match r["kind"].as_str() {
        Some("ab") => match spec["sticky_header"].as_str() {
            Some(h) => format!(", sticky on header {h}"),
            None => ", sticky on the routing_key parameter".into(),
        },
        Some("shadow") => format!(
            ", {} of requests copied to the candidate",
            rate(&spec["shadow_fraction"])
        ),
        _ => String::new(),
    };
    out.push_str(&format!(
        "rollout:    {}, version {} -> {}{how}\n",
        cell(&r["kind"]),
        cell(&r["stable"]),
        cell(&r["candidate"])
    ));
    out.push_str(&format!("phase:      {}\n", cell(&r["phase"])));
    let steps: Vec<f64> = r["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect();
    let step = r["step"]
        .as_u64()
        .map_or("-".into(), |s| (s + 1).to_string());
    let share = if active {
        format!(
            "; candidate share now {}",
            r["weight"]
                .as_f64()
                .map_or("-".into(), |w| percent(w * 100.0))
        )
    } else {
        String::new()
    };
    out.push_str(&format!(
        "step:       {step} of {} ({}){share}\n",
        steps.len(),
        steps
            .iter()
            .map(|s| percent(*s))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let timing = match r["phase"].as_str() {
        Some("running") => {
            let when = relative(&r["interval_ends"], now)
                .map(|w| format!(" ({w})"))
                .unwrap_or_default();
            format!("ends {}{when}", cell(&r["interval_ends"]))
        }
        Some("paused") => "on hold (resume opens a fresh interval)".into(),
        _ => format!("rollout finished {}", cell(&r["finished"])),
    };
    out.push_str(&format!(
        "interval:   {} (#{}), {timing}\n",
        interval_span(&r["interval"]),
        cell(&r["interval_index"])
    ));
    out.push_str(&format!(
        "failures:   {} of {}\n",
        cell(&r["failures"]),
        cell(&r["failure_limit"])
    ));
    out.push_str(&format!("reason:     {}\n", cell(&r["reason"])));
    if let Some(line) = quality_line(&status["quality"]) {
        out.push_str(&line);
    }

    let last_decision = |out: &mut String| {
        let last = &r["last_decision"];
        if !last.is_null() {
            out.push_str(&format!(
                "\nlast decision: {}  {}  {}\n",
                cell(&last["at"]),
                cell(&last["decision"]),
                cell(&last["reason"])
            ));
        }
    };
    if !matches!(r["phase"].as_str(), Some("running" | "paused")) {
        // What was measured after the end decides nothing: the decisions are in the history.
        last_decision(&mut out);
        return out;
    }
    let w = &r["window"];
    out.push_str("\nopen interval, as this replica measured it:\n");
    let variants: Vec<Vec<String>> = [("stable", &r["stable"]), ("candidate", &r["candidate"])]
        .into_iter()
        .map(|(name, version)| {
            let v = &w[name];
            vec![
                name.to_string(),
                cell(version),
                cell(&v["requests"]),
                cell(&v["errors"]),
                rate(&v["error_rate"]),
                millis(&v["p50_ms"]),
                millis(&v["p99_ms"]),
                rate(&v["nan_rate"]),
            ]
        })
        .collect();
    lines(
        &mut out,
        columns(
            &[
                "VARIANT",
                "VERSION",
                "REQUESTS",
                "ERRORS",
                "ERROR RATE",
                "P50 MS",
                "P99 MS",
                "NAN RATE",
            ],
            &variants,
            &[false, true, true, true, true, true, true, true],
        ),
    );
    let a = &w["agreement"];
    let disagreement = match a["measure"].as_str() {
        Some("classification") => rate(&a["disagreement"]),
        _ => num(&a["disagreement"]),
    };
    out.push_str(&format!(
        "agreement: {} compared requests ({} rows), disagreement {disagreement} ({})\n",
        cell(&a["requests"]),
        cell(&a["rows"]),
        cell(&a["measure"])
    ));

    out.push('\n');
    lines(
        &mut out,
        columns(
            &["CHECK", "VERDICT", "VALUE", "THRESHOLD", "DETAIL"],
            &check_rows(&w["checks"]),
            &[false, false, true, true, false],
        ),
    );
    last_decision(&mut out);
    out
}

/// The `rollout history` view: one row per decision, the checks behind it indented below.
pub fn history_table(status: &Value) -> String {
    let events: Vec<&Value> = status["rollout"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                cell(&e["at"]),
                cell(&e["decision"]),
                e["step"]
                    .as_u64()
                    .map_or("-".into(), |s| (s + 1).to_string()),
                cell(&e["interval"]),
                cell(&e["by"]),
                cell(&e["reason"]),
            ]
        })
        .collect();
    let table = columns(
        &["TIME", "DECISION", "STEP", "INTERVAL", "BY", "REASON"],
        &rows,
        &[false, false, true, true, false, false],
    );
    let mut out = format!(
        "model: {}, {} rollout of version {}\n",
        cell(&status["model"]),
        cell(&status["rollout"]["kind"]),
        cell(&status["rollout"]["candidate"])
    );
    let mut table = table.into_iter();
    if let Some(header) = table.next() {
        out.push_str(&header);
        out.push('\n');
    }
    for (row, e) in table.zip(&events) {
        out.push_str(&row);
        out.push('\n');
        let checks = check_rows(&e["checks"]);
        if !checks.is_empty() {
            let indented = columns(&[], &checks, &[false, false, true, true, false])
                .into_iter()
                .map(|l| format!("    {l}"))
                .collect();
            lines(&mut out, indented);
        }
    }
    out
}

/// `switchyard skew`: online from a server, or offline from capture files.
async fn skew(a: SkewArgs) -> Result<(), String> {
    let report = match (&a.capture, &a.baseline) {
        (Some(dir), Some(baseline)) => {
            let (dir, baseline, config) = (dir.clone(), baseline.clone(), a.config.clone());
            let (model, version) = (a.model.clone(), a.version);
            tokio::task::spawn_blocking(move || {
                crate::monitoring::offline::skew_of_capture(
                    &dir,
                    model.as_deref(),
                    version,
                    &baseline,
                    config.as_deref(),
                )
            })
            .await
            .map_err(|e| format!("the offline skew task failed: {e}"))??
        }
        _ => {
            let model = a.model.as_deref().unwrap_or_default();
            let path = match a.version {
                Some(v) => model_path(model, &format!("versions/{v}/skew")),
                None => model_path(model, "skew"),
            };
            call(&a.admin, Method::GET, &path, None).await?
        }
    };
    if a.json {
        println!("{report:#}");
    } else {
        let parsed: crate::monitoring::skew::SkewReport = serde_json::from_value(report.clone())
            .map_err(|e| format!("unexpected skew report from the server: {e}"))?;
        let named = match (report["model"].as_str(), report["version"].as_u64()) {
            (Some(m), Some(v)) => format!("model '{m}' version {v}"),
            (Some(m), None) => format!("model '{m}'"),
            _ => String::new(),
        };
        let what = if report.get("records").is_some() {
            format!(
                "capture{}{named}: {} records in {} files",
                if named.is_empty() { "" } else { " of " },
                cell(&report["records"]),
                cell(&report["files"])
            )
        } else {
            named
        };
        println!("{what}");
        print!("{}", parsed.table());
    }
    Ok(())
}

/// "quality: stable 0.91 (1200 labels), candidate 0.94 (1180 labels), p = 0.012" once feedback
/// has labelled either side.
fn quality_line(q: &Value) -> Option<String> {
    let side = |v: &Value| -> Option<String> {
        let labels = v["labels"].as_u64().filter(|&n| n > 0)?;
        let figure = match (v["accuracy"].as_f64(), v["mae"].as_f64()) {
            (Some(a), _) => format!("accuracy {a:.4}"),
            (None, Some(m)) => format!("MAE {m:.4}"),
            _ => return None,
        };
        Some(format!("{figure} ({labels} labels)"))
    };
    let (stable, candidate) = (side(&q["stable"]), side(&q["candidate"]));
    if stable.is_none() && candidate.is_none() {
        return None;
    }
    let p = q["accuracy_p_value"]
        .as_f64()
        .map(|p| format!(", two-proportion p = {p:.4}"))
        .unwrap_or_default();
    Some(format!(
        "quality:    stable {}, candidate {}{p}\n",
        stable.unwrap_or_else(|| "no labels".into()),
        candidate.unwrap_or_else(|| "no labels".into())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let t = target("http://127.0.0.1:8000").unwrap();
        assert_eq!((t.tls, t.authority.as_str()), (false, "127.0.0.1:8000"));
        let t = target("http://gw.local/").unwrap();
        assert_eq!(t.authority, "gw.local:80");
        let t = target("https://gw.local").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.authority.as_str()),
            (true, "gw.local", "gw.local:443")
        );
        let t = target("https://[::1]:9443").unwrap();
        assert_eq!(
            (t.host.as_str(), t.authority.as_str()),
            ("::1", "[::1]:9443")
        );
        assert!(target("ftp://x:1").is_err());
        assert!(target("127.0.0.1:8000").is_err());
        assert!(target("http://").is_err());
    }

    #[test]
    fn model_names_stay_one_path_segment() {
        assert_eq!(model_path("iris", "load"), "/admin/models/iris/load");
        assert_eq!(
            model_path("../x y", "promote"),
            "/admin/models/..%2Fx%20y/promote"
        );
        assert_eq!(
            model_path("a\u{202e}b", "unload"),
            "/admin/models/a%E2%80%AEb/unload"
        );
    }

    #[test]
    fn table_shows_every_row() {
        let status = json!({"mode": "poll", "models": [
            {"model": "m", "version": 1, "state": "READY", "pinned": true, "default": true, "loaded_secs_ago": 30, "load_ms": 7, "reason": ""},
            {"model": "m", "version": 2, "state": "UNAVAILABLE", "pinned": false, "default": false, "loaded_secs_ago": null, "load_ms": null, "reason": "bad file"}]});
        let t = table(&status);
        assert!(t.contains("mode: poll"));
        assert!(t.lines().nth(2).unwrap().contains("READY") && t.contains("30s ago"));
        assert!(t.lines().nth(3).unwrap().ends_with("bad file"));
    }

    /// A status as `routing::status_json` writes it: step 2 of a canary, one failed interval,
    /// a NaN latency (null) and a failing check.
    fn rollout_status() -> Value {
        let check = |name: &str, verdict: &str, value: Value, threshold: Value, detail: &str| json!({"check": name, "verdict": verdict, "value": value, "threshold": threshold, "detail": detail});
        let checks = json!([
            check(
                "error_rate_increase",
                "pass",
                json!(0.0),
                json!(0.01),
                "candidate 0.00% of 150 vs stable 0.00% of 450"
            ),
            check(
                "p99_ratio",
                "fail",
                json!(3.25),
                json!(1.5),
                "candidate p99 3.250 ms vs stable 1.000 ms"
            ),
            check(
                "nan_rate",
                "pass",
                json!(0.0),
                json!(0.0),
                "0 of 150 candidate rows"
            ),
            check(
                "disagreement",
                "inconclusive",
                Value::Null,
                Value::Null,
                "compared requests: 12 < min_requests 100"
            ),
        ]);
        let event = |at: &str,
                     decision: &str,
                     step: u64,
                     interval: u64,
                     reason: &str,
                     checks: Value| {
            json!({"at": at, "at_ms": 0, "decision": decision, "step": step, "interval": interval,
                   "by": "gw-1/42", "reason": reason, "checks": checks})
        };
        let history = json!([
            event(
                "2026-01-01T10:00:00Z",
                "started",
                0,
                0,
                "canary rollout of version 2 over stable version 1",
                json!([])
            ),
            event(
                "2026-01-01T10:01:00Z",
                "advanced",
                1,
                1,
                "interval passed: step 2 of 4, 25% on the candidate",
                json!([check(
                    "p99_ratio",
                    "pass",
                    json!(1.1),
                    json!(1.5),
                    "candidate p99 1.100 ms vs stable 1.000 ms"
                )])
            ),
            event(
                "2026-01-01T10:02:00Z",
                "failed",
                1,
                2,
                "interval failed (1 of 2 allowed failures), holding step 2: p99_ratio 3.25 > 1.5",
                checks.clone()
            ),
        ]);
        json!({"model": "breast_cancer", "pinned_version": 1, "rollout": {
            "id": "x", "kind": "canary", "stable": 1, "candidate": 2, "phase": "running",
            "step": 1, "steps": [5.000000000000001, 25.0, 50.0, 100.0], "weight": 0.25,
            "interval": "60s", "interval_index": 3,
            "interval_started": "2026-01-01T10:02:00Z", "interval_ends": "2026-01-01T10:03:00Z",
            "failures": 1, "failure_limit": 2, "started": "2026-01-01T10:00:00Z", "finished": null,
            "reason": "interval failed (1 of 2 allowed failures), holding step 2: p99_ratio 3.25 > 1.5",
            "spec": {"candidate": 2, "stable": 1, "kind": "canary"},
            "window": {
                "stable": {"requests": 450, "errors": 0, "error_rate": 0.0, "rows": 450, "non_finite_rows": 0, "nan_rate": 0.0, "p50_ms": 0.5, "p99_ms": 1.0},
                "candidate": {"requests": 150, "errors": 3, "error_rate": 0.02, "rows": 0, "non_finite_rows": 0, "nan_rate": null, "p50_ms": null, "p99_ms": null},
                "agreement": {"requests": 12, "rows": 12, "measure": "classification", "disagreement": 0.0833, "p99_relative_difference": null},
                "checks": checks,
            },
            "last_decision": history[2].clone(),
            "history": history,
        }})
    }

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{text}"))
    }

    #[test]
    fn rollout_status_reads_as_tables() {
        let now: jiff::Timestamp = "2026-01-01T10:02:30Z".parse().unwrap();
        let t = rollout_table(&rollout_status(), now);
        assert_eq!(
            line(&t, "model:"),
            "model:      breast_cancer (pinned version 1)"
        );
        assert_eq!(line(&t, "rollout:"), "rollout:    canary, version 1 -> 2");
        assert_eq!(line(&t, "phase:"), "phase:      running");
        assert_eq!(
            line(&t, "step:"),
            "step:       2 of 4 (5%, 25%, 50%, 100%); candidate share now 25%"
        );
        assert_eq!(
            line(&t, "interval:"),
            "interval:   1m (#3), ends 2026-01-01T10:03:00Z (in 30s)"
        );
        assert_eq!(line(&t, "failures:"), "failures:   1 of 2");
        assert!(line(&t, "reason:").ends_with("p99_ratio 3.25 > 1.5"));
        // Columns line up under their header; NaN (null) prints as "-".
        let header = line(&t, "VARIANT");
        let stable = line(&t, "stable ");
        let candidate = line(&t, "candidate ");
        assert_eq!(header.len(), stable.len());
        assert_eq!(header.len(), candidate.len());
        assert_eq!(
            stable.split_whitespace().collect::<Vec<_>>(),
            [
                "stable", "1", "450", "0", "0.00%", "0.500", "1.000", "0.00%"
            ]
        );
        assert_eq!(
            candidate.split_whitespace().collect::<Vec<_>>(),
            ["candidate", "2", "150", "3", "2.00%", "-", "-", "-"]
        );
        assert_eq!(
            line(&t, "agreement:"),
            "agreement: 12 compared requests (12 rows), disagreement 8.33% (classification)"
        );
        let p99 = line(&t, "p99_ratio");
        assert_eq!(
            p99.split_whitespace().take(4).collect::<Vec<_>>(),
            ["p99_ratio", "fail", "3.25", "1.5"]
        );
        assert!(p99.ends_with("candidate p99 3.250 ms vs stable 1.000 ms"));
        let d = line(&t, "disagreement ");
        assert_eq!(
            d.split_whitespace().take(4).collect::<Vec<_>>(),
            ["disagreement", "inconclusive", "-", "-"]
        );
        assert!(
            line(&t, "last decision:").contains("2026-01-01T10:02:00Z  failed  interval failed")
        );
    }

    #[test]
    fn ended_and_paused_rollouts_say_so() {
        let mut s = rollout_status();
        s["rollout"]["phase"] = json!("paused");
        let t = rollout_table(&s, jiff::Timestamp::UNIX_EPOCH);
        assert!(line(&t, "interval:").contains("on hold"), "{t}");
        s["rollout"]["phase"] = json!("aborted");
        s["rollout"]["finished"] = json!("2026-01-01T10:05:00Z");
        s["rollout"]["kind"] = json!("shadow");
        s["rollout"]["spec"]["shadow_fraction"] = json!(0.5);
        let t = rollout_table(&s, jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(
            line(&t, "interval:"),
            "interval:   1m (#3), rollout finished 2026-01-01T10:05:00Z"
        );
        assert!(!line(&t, "step:").contains("share"), "{t}");
        assert!(line(&t, "rollout:").ends_with("50.00% of requests copied to the candidate"));
    }

    #[test]
    fn history_has_a_row_per_decision_and_its_checks_below() {
        let t = history_table(&rollout_status());
        let rows: Vec<&str> = t.lines().collect();
        assert!(rows[0].contains("breast_cancer") && rows[0].contains("canary"));
        assert_eq!(
            rows[1].split_whitespace().collect::<Vec<_>>(),
            ["TIME", "DECISION", "STEP", "INTERVAL", "BY", "REASON"]
        );
        // Steps print 1-based; the start has no checks, the others theirs, indented.
        assert_eq!(
            rows[2].split_whitespace().take(5).collect::<Vec<_>>(),
            ["2026-01-01T10:00:00Z", "started", "1", "0", "gw-1/42"]
        );
        assert_eq!(
            rows[3].split_whitespace().take(4).collect::<Vec<_>>(),
            ["2026-01-01T10:01:00Z", "advanced", "2", "1"]
        );
        assert!(rows[4].starts_with("    p99_ratio") && rows[4].contains("pass"));
        assert!(rows[5].contains("failed") && rows[5].ends_with("p99_ratio 3.25 > 1.5"));
        assert_eq!(rows.len(), 6 + 4, "{t}");
        assert!(rows[6..].iter().all(|l| l.starts_with("    ")));
        assert!(rows[7].contains("p99_ratio") && rows[7].contains("fail"));
    }

    fn start_args(flags: &[&str]) -> Result<RolloutStartArgs, String> {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(
            ["switchyard", "rollout", "start", "m"].iter().chain(flags),
        )
        .map_err(|e| e.to_string())?;
        match cli.command {
            Command::Rollout(RolloutCommand::Start(a)) => Ok(*a),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn start_sends_only_the_flags_given() {
        let a = start_args(&["--candidate", "2"]).unwrap();
        assert_eq!(start_body(&a).unwrap(), json!({"candidate": 2}));
        let a = start_args(&[
            "--candidate",
            "3",
            "--stable",
            "1",
            "--kind",
            "ab",
            "--steps",
            "10,50%,100",
            "--interval",
            "5m",
            "--sticky-header",
            "x-user-id",
            "--max-p99-ratio",
            "2",
            "--min-requests",
            "10",
            "--failure-limit",
            "1",
        ])
        .unwrap();
        assert_eq!(
            start_body(&a).unwrap(),
            json!({"candidate": 3, "stable": 1, "kind": "ab", "steps": [10.0, 50.0, 100.0],
                   "interval": "5m", "sticky_header": "x-user-id", "max_p99_ratio": 2.0,
                   "min_requests": 10, "failure_limit": 1})
        );
    }

    #[test]
    fn bad_start_flags_are_named() {
        let bad = |flags: &[&str]| match start_args(flags) {
            Err(e) => e,
            Ok(a) => start_body(&a).unwrap_err(),
        };
        for (flags, needle) in [
            (
                &["--candidate", "2", "--steps", "50,10"][..],
                "--steps must increase",
            ),
            (
                &["--candidate", "2", "--steps", "5,lots"],
                "'lots' is not a percentage",
            ),
            (&["--candidate", "2", "--steps", "0,50"], "--steps[0] is 0"),
            (
                &["--candidate", "2", "--interval", "soon"],
                "\"soon\" is not a duration",
            ),
            (&["--candidate", "2", "--interval", "1ms"], "--interval"),
            (&["--candidate", "0"], "--candidate"),
            (&["--candidate", "2", "--stable", "2"], "already the stable"),
            (
                &["--candidate", "2", "--kind", "shadow", "--steps", "5"],
                "shadow",
            ),
            (
                &["--candidate", "2", "--sticky-header", "x-user"],
                "--sticky-header applies to ab",
            ),
            (
                &["--candidate", "2", "--max-disagreement", "3"],
                "--max-disagreement is 3",
            ),
            (&["--candidate", "2", "--kind", "blue"], "blue"),
            (&["--steps", "5"], "--candidate"),
        ] {
            let e = bad(flags);
            assert!(e.contains(needle), "{flags:?}: {e}");
        }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(&json!(0.0)), "0");
        assert_eq!(num(&json!(1.5)), "1.5");
        assert_eq!(num(&json!(0.012345)), "0.0123");
        assert_eq!(num(&Value::Null), "-");
        assert_eq!(percent(5.000000000000001), "5%");
        assert_eq!(percent(12.5), "12.5%");
        assert_eq!(
            [
                span(45),
                span(60),
                span(725),
                span(3600),
                span(12_000),
                span(180_000)
            ],
            ["45s", "1m", "12m 5s", "1h", "3h 20m", "2d 2h"]
        );
        let now: jiff::Timestamp = "2026-01-01T10:00:00Z".parse().unwrap();
        assert_eq!(
            relative(&json!("2026-01-01T09:59:57Z"), now).as_deref(),
            Some("3s ago")
        );
        assert_eq!(relative(&json!("later"), now), None);
        assert_eq!(interval_span(&json!("500ms")), "500ms");
        assert_eq!(interval_span(&json!("5400s")), "1h 30m");
    }
}

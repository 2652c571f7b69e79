//! The operator CLI (`switchyard models|load|unload|promote`): a small client of a running
//! server's admin endpoints (`/admin/...`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};

use crate::cli::{AdminArgs, Command};
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
        Command::Serve(_) => unreachable!("serve is not an admin command"),
    }
    Ok(())
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
}

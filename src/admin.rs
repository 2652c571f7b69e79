//! The operator CLI (`switchyard models|load|unload|promote`): a small client of a running
//! server's admin endpoints (`/admin/...`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::cli::{AdminArgs, Command};

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

/// `host:port` of an `http://host:port[/...]` address.
fn authority(server: &str) -> Result<String, String> {
    let rest = server.strip_prefix("http://").ok_or_else(|| {
        format!("--server must be an http:// address (e.g. http://127.0.0.1:8000), not '{server}'")
    })?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("--server '{server}' has no host"));
    }
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

async fn call(
    admin: &AdminArgs,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let authority = authority(&admin.server)?;
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| format!("cannot reach {}: {e}", admin.server))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("{}: {e}", admin.server))?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, &authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{}: {e}", admin.server))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status.is_success() {
        Ok(value)
    } else {
        let msg = value["error"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).to_string());
        Err(format!("{} ({status})", msg))
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
        assert_eq!(
            authority("http://127.0.0.1:8000").unwrap(),
            "127.0.0.1:8000"
        );
        assert_eq!(authority("http://gw.local/").unwrap(), "gw.local:80");
        assert!(authority("https://x:1").is_err());
        assert!(authority("127.0.0.1:8000").is_err());
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

//! The `switchyard` binary as operators run it: startup errors, JSON logs, graceful shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::breast_cancer_rows;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn serve(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "--log-format",
        "json",
        "serve",
        "--host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--grpc-port",
        "0",
    ])
    .args(args)
    .env_remove("ORT_DYLIB_PATH")
    .env("RUST_LOG", "info");
    c
}

fn run_to_end(mut c: Command) -> (i32, String) {
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_missing_or_wrong_onnx_runtime_library_is_a_clear_error() {
    let repo = common::repo_root().join("models");
    let repo = repo.to_str().unwrap();
    let (code, text) = run_to_end(serve(&[
        "--model-repository",
        repo,
        "--ort-library",
        "/nonexistent/libonnxruntime.so",
    ]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("'/nonexistent/libonnxruntime.so'") && text.contains("does not exist"),
        "{text}"
    );
    assert!(
        text.contains("pip download onnxruntime==1.31.1"),
        "says how to fix it: {text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // A real shared library that is not ONNX Runtime.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib/aarch64-linux-gnu/libc.so.6",
        "/usr/lib64/libc.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a libc to try");
    let (code, text) = run_to_end(serve(&["--model-repository", repo, "--ort-library", libc]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("cannot load ONNX Runtime") && text.contains("OrtGetApiBase"),
        "{text}"
    );
    assert!(!text.contains("panicked"), "{text}");

    // The environment variable ort itself documents works the same way.
    let mut c = serve(&["--model-repository", repo]);
    c.env("ORT_DYLIB_PATH", "/nonexistent/lib.so");
    let (code, text) = run_to_end(c);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("/nonexistent/lib.so"), "{text}");
}

#[test]
fn a_missing_repository_or_busy_port_is_a_clear_error() {
    let (code, text) = run_to_end(serve(&["--model-repository", "/nonexistent/models"]));
    assert_eq!(code, 1);
    assert!(
        text.contains("'/nonexistent/models' does not exist"),
        "{text}"
    );

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let repo = common::repo_root().join("models");
    let mut c = Command::new(BIN);
    c.args([
        "serve",
        "--host",
        "127.0.0.1",
        "--http-port",
        &port,
        "--model-repository",
    ])
    .arg(&repo);
    let (code, text) = run_to_end(c);
    assert_eq!(code, 1);
    assert!(
        text.contains(&format!("cannot listen for REST on 127.0.0.1:{port}")),
        "{text}"
    );
}

/// Starts the binary and returns it with the REST address read from its JSON log.
fn start(args: &[&str]) -> (Child, String, mpsc::Receiver<serde_json::Value>) {
    let mut child = serve(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|_| panic!("every log line is JSON: {line}"));
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    let mut addr = None;
    while addr.is_none() {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a 'listening' log line");
        if v["message"] == "listening" && v["protocol"] == "http" {
            addr = v["addr"].as_str().map(String::from);
        }
    }
    (child, addr.unwrap(), rx)
}

fn wait_for_log(rx: &mpsc::Receiver<serde_json::Value>, message: &str) {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no log '{message}'"));
        if v["message"] == message {
            return;
        }
    }
}

fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn sigterm_stops_accepting_finishes_in_flight_requests_and_exits_zero() {
    let repo = common::repo_root().join("models");
    let (mut child, addr, logs) = start(&["--model-repository", repo.to_str().unwrap()]);
    wait_for_log(&logs, "initial model load finished");

    // A request whose body is still arriving when the signal comes: it is in flight.
    let body = serde_json::json!({"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                                              "data": breast_cancer_rows(1)}]})
    .to_string();
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /v2/models/breast_cancer/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (head, tail) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_for_log(&logs, "SIGTERM received, shutting down");

    // New connections are refused once the listener has stopped.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(&addr).is_err() {
            refused = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "the listener still accepts after SIGTERM");

    stream.write_all(tail.as_bytes()).unwrap();
    let (status, text) = read_response(&mut stream);
    assert_eq!(status, 200, "the in-flight request completes: {text}");
    assert!(text.contains("\"model_name\":\"breast_cancer\""), "{text}");
    let code = child.wait().unwrap();
    assert_eq!(code.code(), Some(0));
}

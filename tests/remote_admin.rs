//! The admin default seen from a non-loopback address. The test makes its own network namespace
//! (`unshare -n`) where 192.0.2.1 (TEST-NET-1, documentation only) sits on the namespace's own
//! loopback device: a caller connecting to it has a non-loopback address, and no packet ever
//! leaves the namespace. The real binary runs inside; curl, the CLI (through `nsenter`) and a tonic
//! client (on a thread that joined the namespace) call it.
//!
//! Needs root (or CAP_SYS_ADMIN), util-linux `unshare`/`nsenter`, iproute2 and curl; without them
//! the test says so and checks nothing (the same decisions are unit-tested in `auth`).

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use switchyard::grpc::pb;
use switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const REMOTE: &str = "192.0.2.1";

fn namespaces_available() -> bool {
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    let available = ok(Command::new("unshare").args(["-n", "ip", "link", "set", "lo", "up"]))
        && ok(Command::new("nsenter").arg("--version"))
        && ok(Command::new("curl").arg("--version"));
    if !available {
        eprintln!(
            "SKIPPED: cannot make a network namespace here (needs root, util-linux unshare/nsenter, \
             iproute2 and curl); the loopback-only default is covered by the auth unit tests only"
        );
    }
    available
}

struct Remote {
    child: Child,
    http: u16,
    grpc: u16,
    log: mpsc::Receiver<serde_json::Value>,
}

impl Remote {
    fn start(registry: &std::path::Path, extra: &[&str]) -> Self {
        let script = format!(
            "ip link set lo up && ip addr add {REMOTE}/32 dev lo && exec \"$0\" --log-format json \
             serve --host 0.0.0.0 --http-port 0 --grpc-port 0 --model-repository \"$1\" {}",
            extra.join(" ")
        );
        let mut child = Command::new("unshare")
            .args(["-n", "sh", "-c", &script, BIN])
            .arg(registry)
            .stdout(Stdio::piped())
            .env_remove("ORT_DYLIB_PATH")
            .spawn()
            .expect("unshare runs");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(v).is_err()
                {
                    return;
                }
            }
        });
        let (mut http, mut grpc, mut loaded) = (0, 0, false);
        while http == 0 || grpc == 0 || !loaded {
            let rec = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the server starts inside the namespace");
            let port = || {
                rec["addr"]
                    .as_str()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0)
            };
            match (rec["message"].as_str(), rec["protocol"].as_str()) {
                (Some("listening"), Some("http")) => http = port(),
                (Some("listening"), Some("grpc")) => grpc = port(),
                (Some("initial model load finished"), _) => loaded = true,
                _ => {}
            }
        }
        Self {
            child,
            http,
            grpc,
            log: rx,
        }
    }

    /// Runs a command inside the server's network namespace.
    fn run(&self, program: &str, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-n", program])
            .args(args)
            .env_remove("SWITCHYARD_TOKEN")
            .output()
            .unwrap()
    }

    /// `curl` from inside: (status, body).
    fn curl(&self, host: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let url = format!("http://{host}:{}{path}", self.http);
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-s", "--max-time", "20", "-w", "\n%{http_code}"];
        if let Some(a) = &auth {
            args.extend(["-H", a]);
        }
        args.push(&url);
        let out = self.run("curl", &args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// A tonic call from a thread that joined the server's network namespace.
    fn grpc_index(&self, token: Option<&str>) -> Result<(), tonic::Status> {
        let ns = std::fs::File::open(format!("/proc/{}/ns/net", self.child.id())).unwrap();
        let url = format!("http://{REMOTE}:{}", self.grpc);
        let token = token.map(str::to_owned);
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only; the file descriptor is open for the call.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns failed");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut c = GrpcInferenceServiceClient::connect(url).await.unwrap();
                let mut req = tonic::Request::new(pb::RepositoryIndexRequest::default());
                if let Some(t) = token {
                    req.metadata_mut()
                        .insert("authorization", format!("Bearer {t}").parse().unwrap());
                }
                c.repository_index(req).await.map(|_| ())
            })
        })
        .join()
        .unwrap()
    }

    fn logs(&self) -> Vec<serde_json::Value> {
        self.log.try_iter().collect()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn admin_calls_from_a_non_loopback_address() {
    if !namespaces_available() {
        return;
    }
    let reg = common::registry(&["iris"]);

    // No admin token configured: loopback may administer, a remote caller may not.
    let s = Remote::start(reg.path(), &[]);
    let (code, body) = s.curl(REMOTE, "/admin/models", None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("--admin-token-file"), "{body}");
    assert_eq!(s.curl("127.0.0.1", "/admin/models", None).0, 200);
    // Even a token is no use while none is configured.
    assert_eq!(s.curl(REMOTE, "/admin/models", Some("guess")).0, 403);
    // Predicting stays open to remote callers.
    assert_eq!(s.curl(REMOTE, "/v2/models/iris", None).0, 200);
    let e = s.grpc_index(None).unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("--admin-token-file"));
    let server = format!("http://{REMOTE}:{}", s.http);
    let out = s.run(BIN, &["models", "--server", &server]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));
    // The refusal is in the audit log with the caller's address.
    let refused = s.logs().into_iter().find(|r| {
        r["message"] == "admin call refused" && r["peer"].as_str().unwrap_or("").contains(REMOTE)
    });
    assert!(refused.is_some(), "no audit line for the refused call");
    drop(s);

    // With a token file, remote operators with a token are let in (and loopback needs one too).
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    std::fs::write(&tokens, "remote-operator-token\n").unwrap();
    let flag = format!("--admin-token-file {}", tokens.display());
    let s = Remote::start(reg.path(), &[&flag]);
    assert_eq!(s.curl(REMOTE, "/admin/models", None).0, 401);
    assert_eq!(s.curl("127.0.0.1", "/admin/models", None).0, 401);
    assert_eq!(
        s.curl(REMOTE, "/admin/models", Some("remote-operator-token"))
            .0,
        200
    );
    assert_eq!(
        s.grpc_index(None).unwrap_err().code(),
        Code::Unauthenticated
    );
    assert!(s.grpc_index(Some("remote-operator-token")).is_ok());
    let server = format!("http://{REMOTE}:{}", s.http);
    let file = tokens.display().to_string();
    let out = s.run(BIN, &["models", "--server", &server, "--token-file", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.run(
        BIN,
        &[
            "promote",
            "iris",
            "1",
            "--server",
            &server,
            "--token-file",
            &file,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every admin action is audited: action, model, version, outcome, peer.
    let audit = s
        .logs()
        .into_iter()
        .find(|r| r["message"] == "admin call" && r["action"] == "promote");
    let audit = audit.expect("the promote is in the audit log");
    assert_eq!(audit["model"], "iris", "{audit}");
    assert_eq!(audit["version"], 1, "{audit}");
    assert_eq!(audit["outcome"], "ok");
    assert!(audit["peer"].as_str().unwrap().contains(REMOTE), "{audit}");
}

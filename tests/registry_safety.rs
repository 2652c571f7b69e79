//! Names and files from outside are untrusted: model names that could reach outside the registry
//! are refused by every entry point (REST, gRPC, the CLI) before the file system is touched,
//! routing writes keep the file's mode, and error bodies never reveal the registry's absolute path.

mod common;

use std::path::Path;

use common::{TestServer, add_model};
use serde_json::{Value, json};
use switchyard::grpc::pb;
use switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard::models::ControlMode;
use tonic::Code;

/// Hostile names as they appear percent-encoded in a URL path (a bare `..` segment never leaves
/// an HTTP client: URLs are normalised; gRPC covers it).
fn bad_names() -> Vec<String> {
    vec![
        "..%2F..%2Fetc".into(),
        "%2Fetc%2Fpasswd".into(),
        "..%2Foutside".into(),
        ".hidden".into(),
        "bad%00name".into(),
        "iris%E2%80%AEevil".into(),
        "iris%5C..%5Cx".into(),
        "m".repeat(200),
    ]
}

fn iris() -> Value {
    json!({"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]})
}

async fn start(reg: &Path, mode: ControlMode, load: &[&str]) -> TestServer {
    let mut a = common::args(reg);
    a.model_control_mode = mode;
    a.load_models = load.iter().map(|s| s.to_string()).collect();
    let s = TestServer::start_with(a).await;
    s.wait_loaded().await;
    s
}

async fn grpc(s: &TestServer) -> GrpcInferenceServiceClient<tonic::transport::Channel> {
    let addr = s.server.as_ref().unwrap().grpc_addr;
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn call(s: &TestServer, method: &str, path: &str, body: &Value) -> (u16, String) {
    let url = s.url(path);
    let req = match method {
        "GET" => s.client.get(url),
        _ => s.client.post(url).json(body),
    };
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The predict-side endpoints that take a model name (infer, metadata, ready; with and without a
/// version).
fn predict_endpoints(name: &str) -> Vec<(&'static str, String, Value)> {
    vec![
        ("POST", format!("/v2/models/{name}/infer"), iris()),
        (
            "POST",
            format!("/v2/models/{name}/versions/1/infer"),
            iris(),
        ),
        ("GET", format!("/v2/models/{name}"), Value::Null),
        ("GET", format!("/v2/models/{name}/versions/1"), Value::Null),
        ("GET", format!("/v2/models/{name}/ready"), Value::Null),
        (
            "GET",
            format!("/v2/models/{name}/versions/1/ready"),
            Value::Null,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_odd_names_are_refused_everywhere_and_never_reach_the_file_system() {
    // The registry sits beside a valid model that must stay out of reach.
    let top = tempfile::tempdir().unwrap();
    let reg = top.path().join("registry");
    std::fs::create_dir_all(&reg).unwrap();
    add_model(&reg, "iris", "iris", "");
    add_model(top.path(), "iris", "outside", "");
    let s = start(&reg, ControlMode::Explicit, &["iris"]).await;

    for name in bad_names() {
        let mut endpoints = predict_endpoints(&name);
        endpoints.extend([
            ("POST", format!("/admin/models/{name}/load"), Value::Null),
            ("POST", format!("/admin/models/{name}/unload"), Value::Null),
            (
                "POST",
                format!("/admin/models/{name}/promote"),
                json!({"version": 1}),
            ),
            (
                "POST",
                format!("/v2/repository/models/{name}/load"),
                Value::Null,
            ),
            (
                "POST",
                format!("/v2/repository/models/{name}/unload"),
                Value::Null,
            ),
        ]);
        for (method, path, body) in endpoints {
            let (status, text) = call(&s, method, &path, &body).await;
            assert_eq!(status, 400, "{method} {path}: {text}");
            assert!(text.contains("model name"), "{method} {path}: {text}");
            // The echoed name is escaped: no control or bidi character reaches a log or a terminal.
            assert!(
                text.is_ascii() && !text.contains("\\u0000\"") && !text.contains('\u{202e}'),
                "{text}"
            );
        }
    }
    // Each rule is named.
    let (_, text) = call(&s, "GET", "/v2/models/..%2F..%2Fetc", &Value::Null).await;
    assert!(text.contains("'/'"), "{text}");
    let (_, text) = call(&s, "GET", "/v2/models/.hidden", &Value::Null).await;
    assert!(text.contains("must not start with '.'"), "{text}");
    let (_, text) = call(
        &s,
        "GET",
        &format!("/v2/models/{}", "m".repeat(200)),
        &Value::Null,
    )
    .await;
    assert!(text.contains("200 bytes") && text.contains("128"), "{text}");

    let mut c = grpc(&s).await;
    for name in [
        "../../etc",
        "..",
        "/etc/passwd",
        ".hidden",
        "a\0b",
        "iris\u{202e}",
        "a\\b",
    ] {
        let e = c
            .model_infer(pb::ModelInferRequest {
                model_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {}", e.message());
        assert!(e.message().contains("model name"), "{}", e.message());
        let e = c
            .model_metadata(pb::ModelMetadataRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {}", e.message());
        let e = c
            .model_ready(pb::ModelReadyRequest {
                name: name.into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {}", e.message());
        let e = c
            .repository_model_load(pb::RepositoryModelLoadRequest {
                model_name: name.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{name:?}: {}", e.message());
    }

    // Nothing outside the registry was loaded or written, and the valid model still serves.
    let (_, models) = s.get("/admin/models").await;
    let rows = models["models"].as_array().unwrap();
    assert!(
        rows.iter().all(|r| r["model"] == "iris"),
        "only iris is known: {models}"
    );
    assert!(!top.path().join("outside/routing.toml").exists());
    assert!(!top.path().join("outside/.routing.lock").exists());
    assert_eq!(s.post_json("/v2/models/iris/infer", &iris()).await.0, 200);

    // The CLI refuses before sending anything (nothing listens on port 1).
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let out = tokio::task::spawn_blocking(move || {
        ["load", "unload", "promote"].map(|cmd| {
            let mut c = std::process::Command::new(bin);
            c.args([cmd, "../outside"]);
            if cmd == "promote" {
                c.arg("1");
            }
            c.args(["--server", "http://127.0.0.1:1"]).output().unwrap()
        })
    })
    .await
    .unwrap();
    for o in out {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success());
        assert!(
            err.contains("invalid value '../outside'") && err.contains("'/'"),
            "{err}"
        );
        assert!(!err.contains("cannot reach"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_registry_skips_folders_with_unsafe_names() {
    let reg = tempfile::tempdir().unwrap();
    add_model(reg.path(), "iris", "iris", "");
    add_model(reg.path(), "iris", "bad name", "");
    add_model(reg.path(), "iris", "iris\u{202e}x", "");
    let s = start(reg.path(), ControlMode::None, &[]).await;
    let (_, models) = s.get("/admin/models").await;
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["model"].as_str())
        .collect();
    assert_eq!(names, vec!["iris"], "{models}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_never_reveal_the_registry_path_and_promote_keeps_the_file_mode() {
    let reg = tempfile::tempdir().unwrap();
    let root = reg.path().to_path_buf();
    add_model(&root, "iris", "iris", "");
    // A version whose model file cannot be read, a model whose config cannot be read, and a model
    // file that is not ONNX.
    add_model(&root, "iris", "unreadable", "");
    std::fs::remove_file(root.join("unreadable/1/model.onnx")).unwrap();
    std::fs::create_dir(root.join("unreadable/1/model.onnx")).unwrap();
    add_model(&root, "iris", "no_config", "");
    std::fs::create_dir(root.join("no_config/config.toml")).unwrap();
    add_model(&root, "iris", "garbage", "");
    std::fs::write(root.join("garbage/1/model.onnx"), b"not onnx").unwrap();
    std::fs::remove_file(root.join("garbage/1/metadata.json")).ok();
    let s = start(&root, ControlMode::Explicit, &["*"]).await;

    let abs = root.to_string_lossy().to_string();
    let mut seen = String::new();
    for model in ["unreadable", "no_config", "garbage", "missing"] {
        let mut endpoints = predict_endpoints(model);
        endpoints.push(("POST", format!("/admin/models/{model}/load"), Value::Null));
        for (method, path, body) in endpoints {
            let (status, text) = call(&s, method, &path, &body).await;
            assert!(status >= 400, "{method} {path}: {status} {text}");
            assert!(
                !text.contains(&abs),
                "{method} {path} reveals {abs}: {text}"
            );
            seen.push_str(&text);
        }
    }
    // The messages still say which file is the problem, relative to the registry.
    assert!(seen.contains("unreadable/1/model.onnx"), "{seen}");
    assert!(seen.contains("no_config/config.toml"), "{seen}");

    // A promote replaces routing.toml but keeps its permissions.
    use std::os::unix::fs::PermissionsExt;
    let routing = root.join("iris/routing.toml");
    std::fs::write(&routing, "").unwrap();
    std::fs::set_permissions(&routing, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (status, text) = call(
        &s,
        "POST",
        "/admin/models/iris/promote",
        &json!({"version": 1}),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        std::fs::read_to_string(&routing)
            .unwrap()
            .contains("pinned_version = 1")
    );
    let mode = std::fs::metadata(&routing).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640, "mode {mode:o}");
}

//! Shared test harness: a real server (in this process) on ephemeral ports, serving a temporary
//! copy of models chosen from `models/` and `tests/fixtures/models/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard::cli::ServeArgs;
use switchyard::server::Server;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A temporary registry holding copies of the named models (looked up in `models/`, then in
/// `tests/fixtures/models/`).
pub fn registry(models: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in models {
        let default = repo_root().join("models").join(m);
        let fixture = repo_root().join("tests/fixtures/models").join(m);
        let src = if default.is_dir() { default } else { fixture };
        assert!(
            src.is_dir(),
            "no model {m} in models/ or tests/fixtures/models/"
        );
        copy_dir(&src, &dir.path().join(m));
    }
    dir
}

/// The venv with the pinned Python test requirements (tests/python/requirements.txt) in
/// `target/tmp/python-venv`, created or refreshed when that file changed. `SWITCHYARD_PYTHON`
/// picks another interpreter. Tests of one binary share it (the lock makes one of them build it).
pub fn python_venv() -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let run = |cmd: &mut std::process::Command| {
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        assert!(status.success(), "{cmd:?} failed with {status}");
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-venv");
    let requirements = repo_root().join("tests/python/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).expect("tests/python/requirements.txt");
    let stamp = dir.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return dir;
    }
    let python = std::env::var("SWITCHYARD_PYTHON").unwrap_or_else(|_| "python3".into());
    let _ = std::fs::remove_dir_all(&dir);
    run(std::process::Command::new(&python)
        .args(["-m", "venv"])
        .arg(&dir));
    run(std::process::Command::new(dir.join("bin/python"))
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements));
    std::fs::write(&stamp, wanted).unwrap();
    dir
}

/// Copies model `src` into `reg` as `name`, with `config` as its config.toml (when not empty).
pub fn add_model(reg: &Path, src: &str, name: &str, config: &str) {
    let default = repo_root().join("models").join(src);
    let fixture = repo_root().join("tests/fixtures/models").join(src);
    let from = if default.is_dir() { default } else { fixture };
    copy_dir(&from, &reg.join(name));
    if !config.is_empty() {
        std::fs::write(reg.join(name).join("config.toml"), config).unwrap();
    }
}

/// Starts a server over `reg` (kept alive by the server) and waits until it is ready.
pub async fn serve_registry(reg: tempfile::TempDir) -> TestServer {
    let mut s = TestServer::start_with(args(reg.path())).await;
    s.keep_registry(reg);
    s.wait_ready().await;
    s
}

/// Sum of a counter's samples whose labels include all of `labels` (e.g. `model="x"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

pub struct TestServer {
    pub server: Option<Server>,
    pub base: String,
    pub client: reqwest::Client,
    _registry: Option<tempfile::TempDir>,
}

/// Settings for a test server: ephemeral ports on loopback, two instances.
pub fn args(repo: &Path) -> ServeArgs {
    let mut a = ServeArgs::with_repository(repo);
    a.host = "127.0.0.1".into();
    a.http_port = 0;
    a.grpc_port = 0;
    a.instances = 2;
    a
}

impl TestServer {
    /// Starts a server over a copy of `models` and waits until it is ready.
    pub async fn start(models: &[&str]) -> Self {
        let reg = registry(models);
        let a = args(reg.path());
        let mut s = Self::start_with(a).await;
        s._registry = Some(reg);
        s.wait_ready().await;
        s
    }

    /// Starts a server over a copy of `models` with adjusted settings, and waits until it is ready.
    pub async fn start_configured(models: &[&str], configure: impl FnOnce(&mut ServeArgs)) -> Self {
        let reg = registry(models);
        let mut a = args(reg.path());
        configure(&mut a);
        let mut s = Self::start_with(a).await;
        s._registry = Some(reg);
        s.wait_ready().await;
        s
    }

    /// Starts a server with explicit settings; does not wait for readiness.
    pub async fn start_with(args: ServeArgs) -> Self {
        let server = Server::start(args).await.expect("server starts");
        let base = format!("http://{}", server.http_addr);
        Self {
            server: Some(server),
            base,
            client: reqwest::Client::new(),
            _registry: None,
        }
    }

    pub fn keep_registry(&mut self, dir: tempfile::TempDir) {
        self._registry = Some(dir);
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self
                .client
                .get(self.url("/v2/health/ready"))
                .send()
                .await
                .map(|r| r.status() == 200)
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "server not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the initial load has finished, ready or not (for registries with broken models).
    pub async fn wait_loaded(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let server = self.server.as_ref().unwrap();
        while !server.service.models().initial_load_done() {
            assert!(
                Instant::now() < deadline,
                "initial load not finished after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        post(&self.client, &self.url(path), body).await
    }

    pub async fn text(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// POSTs a JSON body (from any task: takes its own client) and returns the status and JSON answer.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = client
        .post(url)
        .body(serde_json::to_vec(body).unwrap())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.shutdown();
        }
    }
}

/// A batch of `rows` breast-cancer-like rows: 30 features, deterministic.
pub fn breast_cancer_rows(rows: usize) -> Vec<f32> {
    (0..rows * 30)
        .map(|i| ((i * 7919) % 1000) as f32 / 37.0)
        .collect()
}

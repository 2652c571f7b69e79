//! TLS on both listeners with real clients: curl (server and mutual TLS), our CLI over https, a
//! rustls client watching the certificate rotate, and plain-text clients failing fast. Test
//! certificates are made here with rcgen. (tritonclient over TLS: tests/python/test_tls.py.)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::CertificateDer;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self { dir, ca }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a certificate for `cn` and writes `<name>.pem` and `<name>.key`; returns its DER.
    fn issue(&self, name: &str, cn: &str, client: bool) -> CertificateDer<'static> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert.der().clone()
    }
}

fn curl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn have_curl() -> bool {
    let ok = Command::new("curl").arg("--version").output().is_ok();
    if !ok {
        eprintln!("curl not found: skipping the curl checks (Debian: apt-get install curl)");
    }
    ok
}

async fn tls_server(pki: &Pki, client_ca: bool) -> TestServer {
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let reg = common::registry(&["iris"]);
    let mut a = common::args(reg.path());
    a.tls_cert = Some(cert);
    a.tls_key = Some(key);
    a.tls_client_ca = client_ca.then_some(ca);
    let mut s = TestServer::start_with(a).await;
    s.keep_registry(reg);
    s.base = format!("https://{}", s.server.as_ref().unwrap().http_addr);
    s
}

/// `switchyard models` against `server` with extra flags; panics with its stderr if it fails.
async fn cli_models(server: String, extra: Vec<String>) -> String {
    let out = blocking(move || {
        Command::new(BIN)
            .args(["models", "--server", &server])
            .args(extra)
            .env_remove("SWITCHYARD_TOKEN")
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// The certificate a TLS server at `addr` presents, trusting `ca`.
async fn served_certificate(addr: std::net::SocketAddr, ca: &Path) -> CertificateDer<'static> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_and_cli_over_tls_and_the_certificate_rotates() {
    let pki = Pki::new();
    let first = pki.issue("server", "first", false);
    let s = tls_server(&pki, false).await;
    let addr = s.server.as_ref().unwrap().http_addr;
    let ca = pki.path("ca.pem");
    let url = format!("https://localhost:{}/v2/health/ready", addr.port());
    let deadline = Instant::now() + Duration::from_secs(60);
    if have_curl() {
        // Ready over TLS, trusting the test CA.
        loop {
            let (code, out, err) = {
                let (ca, url) = (ca.display().to_string(), url.clone());
                blocking(move || curl(&["--cacert", &ca, &url])).await
            };
            if code == 0 && out.contains("\"ready\":true") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not ready over TLS: {code} {out} {err}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Without the CA the certificate is not trusted.
        let (code, _, _) = {
            let url = url.clone();
            blocking(move || curl(&[&url])).await
        };
        assert_ne!(code, 0);
        // A plain-text client gets a clean, fast failure (not curl's time-out, 28).
        let plain = format!("http://127.0.0.1:{}/v2/health/live", addr.port());
        let (code, out, err) = blocking(move || curl(&[&plain])).await;
        assert!(
            code != 0 && code != 28,
            "plain text on a TLS port: {code} {out} {err}"
        );
    }

    // The operator CLI over https.
    let server = format!("https://127.0.0.1:{}", addr.port());
    let table = cli_models(server, vec!["--ca-cert".into(), ca.display().to_string()]).await;
    assert!(table.contains("iris"));

    // Rotation: new files in place; new connections get the new certificate, no restart.
    assert_eq!(served_certificate(addr, &ca).await, first);
    let second = pki.issue("server", "second", false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served_certificate(addr, &ca).await != second {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A broken rotation (a key that does not match) keeps the last good certificate.
    std::fs::write(
        pki.path("server.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(served_certificate(addr, &ca).await, second);

    // gRPC on the TLS port: a plain-text client fails fast instead of hanging.
    let grpc = s.server.as_ref().unwrap().grpc_addr;
    let attempt = tokio::time::timeout(Duration::from_secs(20), async move {
        match switchyard::grpc::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{grpc}"),
        )
        .await
        {
            Err(e) => Err(e.to_string()),
            Ok(mut c) => c
                .server_live(switchyard::grpc::pb::ServerLiveRequest {})
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    })
    .await;
    assert!(
        matches!(attempt, Ok(Err(_))),
        "plain-text gRPC against TLS: {attempt:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_requires_a_client_certificate() {
    if !have_curl() {
        return;
    }
    let pki = Pki::new();
    pki.issue("server", "server", false);
    pki.issue("client", "operator", true);
    let s = tls_server(&pki, true).await;
    let port = s.server.as_ref().unwrap().http_addr.port();
    let url = format!("https://localhost:{port}/v2/health/live");
    let (ca, cert, key) = (
        pki.path("ca.pem").display().to_string(),
        pki.path("client.pem").display().to_string(),
        pki.path("client.key").display().to_string(),
    );
    let (code, out, err) = {
        let (ca, cert, key, url) = (ca.clone(), cert.clone(), key.clone(), url.clone());
        blocking(move || curl(&["--cacert", &ca, "--cert", &cert, "--key", &key, &url])).await
    };
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("\"live\":true"));
    let (code, _, err) = {
        let (ca, url) = (ca.clone(), url.clone());
        blocking(move || curl(&["--cacert", &ca, &url])).await
    };
    assert!(
        code != 0 && code != 28,
        "no client certificate: {code} {err}"
    );
    // The CLI presents its certificate too.
    let server = format!("https://127.0.0.1:{port}");
    let flags = [
        "--ca-cert",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];
    cli_models(server, flags.iter().map(|f| f.to_string()).collect()).await;
}

//! TLS for both listeners (rustls with the `ring` provider: no OpenSSL): a PEM certificate chain
//! and key, optionally a client CA for mutual TLS. The files are watched and the configuration is
//! rebuilt when any of them changes, so certificates rotate without a restart; a change that does
//! not make a valid configuration (a cert written before its key, a key that does not match) is
//! logged and the previous configuration keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::shutdown;

/// The files named by `--tls-cert`, `--tls-key` and `--tls-client-ca`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS {what} '{path}': {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the TLS {what} '{path}' is not valid PEM: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the TLS {what} '{path}' holds no PEM certificate")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Config(#[source] rustls::Error),
    #[error("no system CA certificates were found to verify the server; give a CA file")]
    NoSystemRoots,
    #[error("the client CA '{path}' cannot verify clients: {source}")]
    ClientCa {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

/// Which listener a configuration is for: they differ only in the ALPN protocols offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// REST: HTTP/1.1.
    Http1,
    /// gRPC: HTTP/2 only.
    H2,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Self::Http1 => vec![b"http/1.1".to_vec()],
            Self::H2 => vec![b"h2".to_vec()],
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates of a file, at least one.
pub fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn private_key(what: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(what, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|source| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds one server configuration from the files as they are now.
pub fn build(files: &TlsFiles, alpn: Alpn) -> Result<ServerConfig, TlsError> {
    let chain = certificates("certificate", &files.cert)?;
    let key = private_key("key", &files.key)?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("client CA", ca)? {
                roots.add(cert).map_err(TlsError::Config)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientCa {
                    path: ca.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}

/// The settings of a client of a TLS server (the operator CLI, the load generator): it trusts the
/// PEM `ca` (else the system's roots) and presents `identity` (certificate chain, key) when the
/// server asks for one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
    alpn: Alpn,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in certificates("CA certificate", path)? {
                roots.add(cert).map_err(TlsError::Config)?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(TlsError::NoSystemRoots);
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                certificates("client certificate", cert)?,
                private_key("client key", key)?,
            )
            .map_err(TlsError::Config)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.protocols();
    Ok(config)
}

type Stamps = Vec<Option<crate::auth::FileStamp>>;

/// The live TLS configuration of one listener, rebuilt when its files change.
pub struct Tls {
    files: TlsFiles,
    alpn: Alpn,
    config: ArcSwap<ServerConfig>,
    stamps: Mutex<Stamps>,
}

impl Tls {
    pub fn load(files: TlsFiles, alpn: Alpn) -> Result<Self, TlsError> {
        let stamps = Self::stamps_of(&files);
        let config = build(&files, alpn)?;
        Ok(Self {
            files,
            alpn,
            config: ArcSwap::from_pointee(config),
            stamps: Mutex::new(stamps),
        })
    }

    fn stamps_of(files: &TlsFiles) -> Stamps {
        let stamp = |p: &Path| crate::auth::stamp_of(p);
        let mut out = vec![stamp(&files.cert), stamp(&files.key)];
        if let Some(ca) = &files.client_ca {
            out.push(stamp(ca));
        }
        out
    }

    /// The configuration new connections use.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Rebuilds the configuration if a file changed. `Err` keeps the previous configuration.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = Self::stamps_of(&self.files);
        let mut last = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if now == *last {
            return Ok(false);
        }
        // Recorded either way: a broken state is reported once, and retried when a file changes
        // again (the second half of a cert + key rotation).
        *last = now;
        let config = build(&self.files, self.alpn)?;
        self.config.store(Arc::new(config));
        Ok(true)
    }

    /// Checks the files every `every` until `stop`.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: shutdown::Signal) {
        stop.every(every, || {
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %self.files.cert.display(), alpn = ?self.alpn, "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "TLS files changed but do not load; the previous certificate keeps serving"),
            }
            std::future::ready(())
        })
        .await;
    }
}

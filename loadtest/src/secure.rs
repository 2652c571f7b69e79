//! The bearer token and TLS settings shared by every target: built once, before any request,
//! so that a request only clones a ready header (auth on vs off must cost the client nothing
//! measurable) and a bad token or CA file fails the run up front with a clear message.

use std::path::Path;
use std::sync::Arc;

use hyper::header::HeaderValue;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, ClientTlsConfig};

use crate::cli::Args;

#[derive(Clone, Default)]
pub struct Security {
    /// `Bearer <token>` for the REST `Authorization` header.
    pub header: Option<HeaderValue>,
    /// The same for the gRPC `authorization` metadata key.
    pub metadata: Option<AsciiMetadataValue>,
    /// Verifies https:// servers; ALPN http/1.1. `None` when no target is https://.
    pub rest_tls: Option<tokio_rustls::TlsConnector>,
    /// The --ca-cert PEM for grpcs:// (tonic builds its own rustls client); `None`: system roots.
    pub grpc_ca: Option<Vec<u8>>,
}

impl Security {
    pub fn from_args(args: &Args) -> Result<Self, String> {
        let token = token(args.token.as_deref(), args.token_file.as_deref())?;
        let (header, metadata) = match token {
            Some(t) => {
                let mut header = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                    "the token holds characters not allowed in an HTTP header".to_string()
                })?;
                header.set_sensitive(true);
                let metadata = format!("Bearer {t}").parse::<AsciiMetadataValue>().map_err(|_| {
                    "the token holds characters not allowed in gRPC metadata (printable ASCII only)"
                        .to_string()
                })?;
                (Some(header), Some(metadata))
            }
            None => (None, None),
        };
        let any_tls = args.targets.iter().any(|t| t.tls);
        let ca = match (&args.ca_cert, any_tls) {
            (Some(path), true) => Some(read_ca(path)?),
            _ => None,
        };
        let rest_tls = if any_tls {
            Some(rest_connector(
                ca.as_ref().map(|(certs, _)| certs.as_slice()),
            )?)
        } else {
            None
        };
        Ok(Self {
            header,
            metadata,
            rest_tls,
            grpc_ca: ca.map(|(_, pem)| pem),
        })
    }

    /// tonic's TLS settings for a grpcs:// target named `host`.
    pub fn grpc_tls(&self, host: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().domain_name(host);
        match &self.grpc_ca {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        }
    }
}

/// The token: the first line of --token-file that is not empty or a `#` comment (the format of
/// the server's token files), else --token (or SWITCHYARD_TOKEN). The file wins because it is
/// named on the command line while the variable may be left over in the environment.
fn token(given: Option<&str>, file: Option<&Path>) -> Result<Option<String>, String> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file '{}': {e}", path.display()))?;
        return text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|t| Some(t.to_string()))
            .ok_or_else(|| format!("--token-file '{}' holds no token", path.display()));
    }
    match given.map(str::trim) {
        Some("") => Err("--token (or SWITCHYARD_TOKEN) is empty".into()),
        Some(t) => Ok(Some(t.to_string())),
        None => Ok(None),
    }
}

/// The certificates of a PEM file, and the file itself (for tonic).
fn read_ca(path: &Path) -> Result<(Vec<CertificateDer<'static>>, Vec<u8>), String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read --ca-cert '{}': {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--ca-cert '{}': {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--ca-cert '{}' holds no PEM certificate",
            path.display()
        ));
    }
    Ok((certs, pem))
}

fn rest_connector(
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(certs) => {
            for cert in certs {
                roots
                    .add(cert.clone())
                    .map_err(|e| format!("--ca-cert: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "no system CA certificates found to verify https:// targets; give --ca-cert"
                        .into(),
                );
            }
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS settings: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_from_flag_or_file() {
        assert_eq!(token(None, None).unwrap(), None);
        assert_eq!(
            token(Some(" abc \n"), None).unwrap().as_deref(),
            Some("abc")
        );
        assert!(token(Some("  "), None).unwrap_err().contains("empty"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "# load tests\n\n  s3cret  \nother\n").unwrap();
        assert_eq!(token(None, Some(&file)).unwrap().as_deref(), Some("s3cret"));
        assert_eq!(
            token(Some("from-env"), Some(&file)).unwrap().as_deref(),
            Some("s3cret")
        );
        std::fs::write(&file, "# nothing here\n").unwrap();
        assert!(
            token(None, Some(&file))
                .unwrap_err()
                .contains("holds no token")
        );
        let missing = dir.path().join("missing");
        assert!(
            token(None, Some(&missing))
                .unwrap_err()
                .contains("cannot read --token-file")
        );
    }

    #[test]
    fn ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let e = read_ca(&file).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }
}

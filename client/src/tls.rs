//! The client's mutual-TLS configuration for QUIC (rustls with the *ring* provider).
//!
//! A dynakv client trusts only the cluster CA (`ca.pem`) and presents a client
//! certificate issued by it (`dynakv-node cert client`); nodes refuse connections without
//! one. Clients know nodes only by address, so they connect with the server name
//! [`dynakv_common::wire::NODE_SERVER_NAME`], which every node certificate carries.
//!
//! Only TLS 1.3 is offered, with exactly the ALPN protocol given, and the rustls
//! configuration is built with an explicit *ring* provider (no process-wide default is
//! needed). QUIC transport settings come from [`dynakv_common::net::transport_config`].

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// What went wrong loading the TLS files or building the configuration. `origin` names
/// where the bytes came from: a file path, or a label given to
/// [`client_config_from_pem`].
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {cause}")]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// A file does not hold what it should.
    #[error("{origin} is not a valid {what}: {detail}")]
    BadPem {
        origin: String,
        what: &'static str,
        detail: String,
    },
    /// The certificate and the private key do not belong together (or the key is unusable).
    #[error("the private key in {key} does not belong to the certificate in {cert}: {cause}")]
    KeyMismatch {
        cert: String,
        key: String,
        cause: rustls::Error,
    },
    /// rustls refused to build the configuration.
    #[error("cannot build the TLS client configuration: {cause}")]
    Config { cause: rustls::Error },
    /// The rustls configuration is not usable for QUIC.
    #[error("the TLS client configuration is not usable for QUIC: {cause}")]
    Quic { cause: NoInitialCipherSuite },
}

/// Builds the client configuration from PEM files: the cluster CA certificate, the client
/// certificate and its private key. Errors name the offending file.
pub fn client_config(
    ca_pem: &Path,
    cert_pem: &Path,
    key_pem: &Path,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let ca = read(ca_pem, "cluster CA certificate (--ca)")?;
    let cert = read(cert_pem, "client certificate (--cert)")?;
    let key = read(key_pem, "client private key (--key)")?;
    build(
        Pem::new(&ca, ca_pem.display().to_string()),
        Pem::new(&cert, cert_pem.display().to_string()),
        Pem::new(&key, key_pem.display().to_string()),
        alpn,
    )
}

/// Like [`client_config`], from PEM contents already in memory.
pub fn client_config_from_pem(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    build(
        Pem::new(ca, "the CA certificate".to_string()),
        Pem::new(cert, "the client certificate".to_string()),
        Pem::new(key, "the client key".to_string()),
        alpn,
    )
}

/// PEM bytes and where they came from (for error messages).
struct Pem<'a> {
    bytes: &'a [u8],
    origin: String,
}

impl<'a> Pem<'a> {
    fn new(bytes: &'a [u8], origin: String) -> Self {
        Pem { bytes, origin }
    }

    fn bad(&self, what: &'static str, detail: impl ToString) -> TlsError {
        TlsError::BadPem {
            origin: self.origin.clone(),
            what,
            detail: detail.to_string(),
        }
    }

    fn certs(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let mut reader = self.bytes;
        let certs = rustls_pemfile::certs(&mut reader)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.bad("PEM certificate", e))?;
        if certs.is_empty() {
            return Err(self.bad("PEM certificate", "no CERTIFICATE block found"));
        }
        Ok(certs)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        let mut reader = self.bytes;
        match rustls_pemfile::private_key(&mut reader) {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(self.bad("PEM private key", "no PRIVATE KEY block found")),
            Err(e) => Err(self.bad("PEM private key", e)),
        }
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

fn build(
    ca: Pem<'_>,
    cert: Pem<'_>,
    key: Pem<'_>,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in ca.certs()? {
        roots.add(der).map_err(|e| ca.bad("CA certificate", e))?;
    }
    let chain = cert.certs()?;
    let key_der = key.key()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|cause| TlsError::Config { cause })?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|cause| TlsError::KeyMismatch {
            cert: cert.origin.clone(),
            key: key.origin.clone(),
            cause,
        })?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|cause| TlsError::Quic { cause })?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(dynakv_common::net::transport_config()));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_named() {
        let err = client_config(
            Path::new("/nonexistent/dynakv/ca.pem"),
            Path::new("/nonexistent/dynakv/client.pem"),
            Path::new("/nonexistent/dynakv/client.key.pem"),
            b"dynakv/1",
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("the cluster CA certificate (--ca) /nonexistent/dynakv/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn garbage_is_rejected() {
        let err = client_config_from_pem(b"not pem", b"", b"", b"dynakv/1").unwrap_err();
        assert!(matches!(err, TlsError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("CA certificate"), "{err}");
    }
}

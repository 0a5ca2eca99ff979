//! Mutual-TLS configuration of a node's QUIC endpoint (rustls with the *ring* provider).
//!
//! A node has one certificate (see [`crate::certs`]) and uses it both ways:
//!
//! - as a server ([`NodeTls::server_config`]), it requires every client — a dynakv client
//!   or a peer node — to present a certificate issued by the cluster CA, and verifies it;
//! - as a client of its peers ([`NodeTls::client_config`]), it trusts only the cluster CA
//!   and presents its node certificate. The caller connects with the peer's node id as
//!   server name, so the peer's certificate must carry that id: one node cannot pose as
//!   another.
//!
//! Only TLS 1.3 is offered, and only the ALPN protocol the caller passes, so a node and a
//! peer that speak different protocol versions fail the handshake instead of misreading
//! each other. Every rustls configuration is built with an explicit *ring* provider, so
//! it does not depend on (or conflict with) a process-wide default provider: quinn
//! itself never consults the default, so nothing needs to be installed.
//!
//! QUIC transport settings (both directions): up to 4096 concurrent bidirectional
//! streams (one per request), no unidirectional streams, a keep-alive every second and a
//! 5 s idle timeout, so a dead peer is noticed quickly.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use dynakv_common::net::transport_config;

/// What went wrong loading the TLS files or building a configuration.
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
    #[error("{path} is not a valid {what}: {detail}")]
    BadFile {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    /// The certificate and the private key do not belong together.
    #[error("the private key in {key} does not belong to the certificate in {cert}: {cause}")]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        cause: rustls::Error,
    },
    /// rustls refused to build a configuration.
    #[error("cannot build the TLS {side} configuration: {cause}")]
    Config {
        side: &'static str,
        cause: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA.
    #[error("cannot verify client certificates with the CA in {ca}: {cause}")]
    Verifier {
        ca: PathBuf,
        cause: rustls::server::VerifierBuilderError,
    },
    /// The node's own certificate does not verify under the cluster CA (issued by another
    /// CA, expired, or not for client authentication): its peers would refuse it.
    #[error("the certificate in {cert} is not valid under the cluster CA in {ca}: {cause} (issued by another CA, expired, or not for client authentication? During a CA rotation, list both CAs in the CA file)")]
    NotIssuedByCa {
        cert: PathBuf,
        ca: PathBuf,
        cause: rustls::Error,
    },
    /// The rustls configuration is not usable for QUIC.
    #[error("the TLS {side} configuration is not usable for QUIC: {cause}")]
    Quic {
        side: &'static str,
        cause: NoInitialCipherSuite,
    },
}

/// A node's TLS material: the cluster CA, its certificate chain and its private key.
#[derive(Debug)]
pub struct NodeTls {
    ca_path: PathBuf,
    provider: Arc<CryptoProvider>,
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl NodeTls {
    /// Loads the CA certificate, the node certificate (chain) and its private key, all
    /// PEM, and checks that they are usable: the CA parses as a trust anchor and the key
    /// belongs to the certificate. Errors name the offending file.
    pub fn load(ca_pem: &Path, cert_pem: &Path, key_pem: &Path) -> Result<NodeTls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = load_roots(ca_pem)?;
        let chain = load_certs(cert_pem, "node certificate")?;
        let key = load_key(key_pem)?;
        rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(
            |cause| TlsError::KeyMismatch {
                cert: cert_pem.to_path_buf(),
                key: key_pem.to_path_buf(),
                cause,
            },
        )?;
        let tls = NodeTls {
            ca_path: ca_pem.to_path_buf(),
            provider,
            roots: Arc::new(roots),
            chain,
            key,
        };
        tls.check_own_certificate(cert_pem)?;
        Ok(tls)
    }

    /// Checks the node's certificate as its peers will when it dials them (as a client
    /// certificate of the cluster CA), so a node given a certificate from another CA
    /// fails at start with a clear error instead of running and being refused by every
    /// peer.
    fn check_own_certificate(&self, cert_pem: &Path) -> Result<(), TlsError> {
        let verifier = self.client_verifier()?;
        // `load_certs` refuses a file without a certificate, so the chain has one.
        let (end_entity, intermediates) = self
            .chain
            .split_first()
            .ok_or_else(|| bad(cert_pem, "certificate", "no certificate in the file"))?;
        verifier
            .verify_client_cert(
                end_entity,
                intermediates,
                rustls::pki_types::UnixTime::now(),
            )
            .map_err(|cause| TlsError::NotIssuedByCa {
                cert: cert_pem.to_path_buf(),
                ca: self.ca_path.clone(),
                cause,
            })?;
        Ok(())
    }

    /// How this node checks a client certificate (a peer's or a client's): issued by the
    /// cluster CA. Also what [`NodeTls::check_own_certificate`] holds its own to.
    fn client_verifier(
        &self,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            self.provider.clone(),
        )
        .build()
        .map_err(|cause| TlsError::Verifier {
            ca: self.ca_path.clone(),
            cause,
        })
    }

    /// The configuration of the node's QUIC server: TLS 1.3, ALPN `alpn`, and a client
    /// certificate issued by the cluster CA is required and verified.
    pub fn server_config(&self, alpn: &[u8]) -> Result<quinn::ServerConfig, TlsError> {
        let verifier = self.client_verifier()?;
        let config_err = |cause| TlsError::Config {
            side: "server",
            cause,
        };
        let mut tls = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(config_err)?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic = QuicServerConfig::try_from(tls).map_err(|cause| TlsError::Quic {
            side: "server",
            cause,
        })?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }

    /// The configuration for connecting to peers: TLS 1.3, ALPN `alpn`, only the cluster
    /// CA is trusted, and the node certificate is presented as client certificate.
    /// Connect with the peer's node id as server name.
    pub fn client_config(&self, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
        let config_err = |cause| TlsError::Config {
            side: "client",
            cause,
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_err)?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(config_err)?;
        tls.alpn_protocols = vec![alpn.to_vec()];
        let quic = QuicClientConfig::try_from(tls).map_err(|cause| TlsError::Quic {
            side: "client",
            cause,
        })?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(Arc::new(transport_config()));
        Ok(config)
    }
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|cause| TlsError::Read {
        what,
        path: path.to_path_buf(),
        cause,
    })
}

fn bad(path: &Path, what: &'static str, detail: impl ToString) -> TlsError {
    TlsError::BadFile {
        path: path.to_path_buf(),
        what,
        detail: detail.to_string(),
    }
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(path, "PEM certificate file", e))?;
    if certs.is_empty() {
        return Err(bad(
            path,
            "PEM certificate file",
            "no CERTIFICATE block found",
        ));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "cluster CA certificate")? {
        roots
            .add(cert)
            .map_err(|e| bad(path, "CA certificate", e))?;
    }
    Ok(roots)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path, "node private key")?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Ok(None) => Err(bad(
            path,
            "PEM private key file",
            "no PRIVATE KEY block found",
        )),
        Err(e) => Err(bad(path, "PEM private key file", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::time::timeout;

    const ALPN: &[u8] = b"dynakv-test/1";
    const LIMIT: Duration = Duration::from_secs(10);

    fn node_tls(dir: &Path, id: &str) -> NodeTls {
        let d = dir.join(id);
        NodeTls::load(
            &d.join("ca.pem"),
            &d.join("node.pem"),
            &d.join("node.key.pem"),
        )
        .unwrap()
    }

    fn client_tls(dir: &Path, ca_dir: &Path) -> quinn::ClientConfig {
        let c = dir.join("client");
        dynakv_client::tls::client_config(
            &ca_dir.join("ca.pem"),
            &c.join("client.pem"),
            &c.join("client.key.pem"),
            ALPN,
        )
        .unwrap()
    }

    /// A server that echoes every bidirectional stream.
    fn echo_server(tls: &NodeTls) -> (quinn::Endpoint, SocketAddr) {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let endpoint = quinn::Endpoint::server(tls.server_config(ALPN).unwrap(), addr).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let ep = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                        tokio::spawn(async move {
                            if let Ok(data) = recv.read_to_end(1 << 16).await {
                                let _ = send.write_all(&data).await;
                                let _ = send.finish();
                                let _ = send.stopped().await;
                            }
                        });
                    }
                });
            }
        });
        (endpoint, addr)
    }

    /// Connects and echoes one message; any failure (or a timeout) is an `Err`.
    async fn round_trip(
        config: quinn::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<(), String> {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let result = timeout(LIMIT, async {
            let conn = endpoint
                .connect_with(config, addr, server_name)
                .map_err(|e| format!("connect: {e}"))?
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
            send.write_all(b"hello dynakv")
                .await
                .map_err(|e| format!("write: {e}"))?;
            send.finish().map_err(|e| format!("finish: {e}"))?;
            let echoed = recv
                .read_to_end(1024)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if echoed != b"hello dynakv" {
                return Err(format!("echoed {echoed:?}"));
            }
            conn.close(0u32.into(), b"done");
            Ok(())
        })
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()));
        endpoint.close(0u32.into(), b"done");
        result
    }

    struct Setup {
        dir: tempfile::TempDir,
        other: tempfile::TempDir,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let ids = vec!["n1".to_string(), "n2".to_string()];
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        certs::ensure_dev_certs(dir.path(), &ids, &hosts).unwrap();
        certs::ensure_dev_certs(other.path(), &ids, &hosts).unwrap();
        Setup { dir, other }
    }

    #[tokio::test]
    async fn a_client_of_the_cluster_ca_connects_and_echoes() {
        let s = setup();
        let (server, addr) = echo_server(&node_tls(s.dir.path(), "n1"));
        let client = client_tls(s.dir.path(), &s.dir.path().join("client"));
        round_trip(client.clone(), addr, certs::CLIENT_SERVER_NAME)
            .await
            .unwrap();
        // The node's own id and its IP address are names of the node, too.
        round_trip(client.clone(), addr, "n1").await.unwrap();
        round_trip(client, addr, "127.0.0.1").await.unwrap();
        server.close(0u32.into(), b"");
    }

    #[tokio::test]
    async fn a_client_certificate_from_another_ca_is_refused() {
        let s = setup();
        let (server, addr) = echo_server(&node_tls(s.dir.path(), "n1"));
        // Trusts the real CA, but holds a certificate of another CA.
        let rogue = client_tls(s.other.path(), &s.dir.path().join("ca"));
        let result = round_trip(rogue, addr, certs::CLIENT_SERVER_NAME).await;
        let err = result.expect_err("a foreign client certificate was accepted");
        assert_ne!(err, "timed out", "refused by the server, not by a timeout");
        // A node of another cluster does not even accept this node (it trusts another CA).
        let rogue_node = node_tls(s.other.path(), "n2").client_config(ALPN).unwrap();
        assert!(round_trip(rogue_node, addr, "n1").await.is_err());
        // And a client that trusts only another CA refuses the node.
        let stranger = client_tls(s.other.path(), &s.other.path().join("ca"));
        assert!(round_trip(stranger, addr, certs::CLIENT_SERVER_NAME)
            .await
            .is_err());
        server.close(0u32.into(), b"");
    }

    #[tokio::test]
    async fn peers_are_checked_by_node_id() {
        let s = setup();
        let (server, addr) = echo_server(&node_tls(s.dir.path(), "n1"));
        let peer = node_tls(s.dir.path(), "n2").client_config(ALPN).unwrap();
        round_trip(peer.clone(), addr, "n1").await.unwrap();
        let wrong = round_trip(peer.clone(), addr, "n2").await;
        assert!(wrong.is_err(), "n1 was accepted as n2");
        assert!(round_trip(peer, addr, "n3").await.is_err());
        server.close(0u32.into(), b"");
    }

    #[tokio::test]
    async fn a_different_alpn_fails_the_handshake() {
        let s = setup();
        let (server, addr) = echo_server(&node_tls(s.dir.path(), "n1"));
        let peer = node_tls(s.dir.path(), "n2")
            .client_config(b"dynakv-test/2")
            .unwrap();
        assert!(round_trip(peer, addr, "n1").await.is_err());
        server.close(0u32.into(), b"");
    }

    #[test]
    fn load_errors_name_the_file() {
        let s = setup();
        let d = s.dir.path().join("n1");
        let missing = d.join("nope.pem");
        let err = NodeTls::load(&d.join("ca.pem"), &missing, &d.join("node.key.pem")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("the node certificate"), "{err}");
        assert!(err.to_string().contains("nope.pem"), "{err}");

        // A key file given as certificate: no certificate in it.
        let err = NodeTls::load(
            &d.join("ca.pem"),
            &d.join("node.key.pem"),
            &d.join("node.key.pem"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::BadFile { .. }), "{err}");
        assert!(err.to_string().contains("node.key.pem"), "{err}");

        // A certificate given as key.
        let err =
            NodeTls::load(&d.join("ca.pem"), &d.join("node.pem"), &d.join("node.pem")).unwrap_err();
        assert!(matches!(err, TlsError::BadFile { .. }), "{err}");

        // Another node's key.
        let other_key = s.dir.path().join("n2").join("node.key.pem");
        let err = NodeTls::load(&d.join("ca.pem"), &d.join("node.pem"), &other_key).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");

        // A certificate (and its key) from another cluster's CA.
        let foreign = s.other.path().join("n1");
        let err = NodeTls::load(
            &d.join("ca.pem"),
            &foreign.join("node.pem"),
            &foreign.join("node.key.pem"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::NotIssuedByCa { .. }), "{err}");
        assert!(err.to_string().contains("another CA"), "{err}");
        // The cluster's CA and another in one file (a CA rotation): the node starts.
        let both = s.dir.path().join("both-cas.pem");
        let mut pem = fs::read(d.join("ca.pem")).unwrap();
        pem.extend(fs::read(s.other.path().join("n1").join("ca.pem")).unwrap());
        fs::write(&both, pem).unwrap();
        NodeTls::load(
            &both,
            &foreign.join("node.pem"),
            &foreign.join("node.key.pem"),
        )
        .unwrap();
    }
}

//! The cluster certificate authority and the certificates it issues.
//!
//! Every dynakv connection is mutual TLS under one cluster CA (see [`crate::tls`]). This
//! module creates that CA and signs certificates with it, using rcgen with the *ring*
//! backend. All keys are ECDSA P-256; private keys are written with mode `0600` on unix.
//!
//! Files (all PEM):
//!
//! - CA directory ([`init_ca`]): `ca.pem` (the CA certificate, public: every node and
//!   client needs a copy) and `ca.key.pem` (the CA key: keep it secret, nodes do not
//!   need it).
//! - Node directory ([`issue_node_cert`]): `node.pem`, `node.key.pem` and a copy of
//!   `ca.pem`. The certificate's subject alternative names are the node id, the shared
//!   name [`CLIENT_SERVER_NAME`] (so a client that only knows an address can check that it
//!   reached *some* node of this cluster) and each host given (IP addresses as IP SANs,
//!   anything else as DNS names). Peers connect to a node using its id as TLS server
//!   name, so one node cannot pose as another. It is valid for server and client
//!   authentication: a node is a server to clients and peers, and a client of its peers.
//! - Client directory ([`issue_client_cert`]): `client.pem`, `client.key.pem` and a copy
//!   of `ca.pem`; client authentication only.
//!
//! Certificates are valid for about ten years. Issuing re-reads the CA from `ca.pem` and
//! `ca.key.pem`: the issuer is rebuilt from the CA key and the CA profile [`init_ca`]
//! uses, and every freshly signed certificate is verified against `ca.pem` before it is
//! written, so a key that does not belong to the CA certificate (or a CA made by another
//! tool) is reported instead of producing certificates nobody accepts.
//!
//! [`ensure_dev_certs`] sets up everything a local development cluster needs, once.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dynakv_common::wire::ADMIN_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, UnixTime};

/// The DNS name every node certificate carries besides the node's own id. Clients, which
/// know only addresses, use it as TLS server name.
pub const CLIENT_SERVER_NAME: &str = dynakv_common::wire::NODE_SERVER_NAME;

/// File name of the CA certificate (in the CA directory and copied next to every issued
/// certificate).
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key.
pub const CA_KEY_FILE: &str = "ca.key.pem";
/// File name of a node certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// File name of a node private key.
pub const NODE_KEY_FILE: &str = "node.key.pem";
/// File name of a client certificate.
pub const CLIENT_CERT_FILE: &str = "client.pem";
/// File name of a client private key.
pub const CLIENT_KEY_FILE: &str = "client.key.pem";

/// The client name [`ensure_dev_certs`] issues a certificate for.
pub const DEV_CLIENT_NAME: &str = "dev-client";

/// Common name of every dynakv cluster CA. The CA's identity is its key, not its name.
const CA_COMMON_NAME: &str = "dynakv cluster CA";
const CA_ORGANIZATION: &str = "dynakv";
/// Issued certificates are valid from a day ago (clock skew) for about ten years.
const BACKDATE: Duration = Duration::from_secs(24 * 3600);
const VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Where the files of one issued certificate live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The cluster CA certificate (a copy of the CA's `ca.pem`).
    pub ca: PathBuf,
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl CertFiles {
    /// The files [`issue_node_cert`] writes into `dir`.
    pub fn node(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(NODE_CERT_FILE),
            key: dir.join(NODE_KEY_FILE),
        }
    }

    /// The files [`issue_client_cert`] writes into `dir`.
    pub fn client(dir: &Path) -> CertFiles {
        CertFiles {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(CLIENT_CERT_FILE),
            key: dir.join(CLIENT_KEY_FILE),
        }
    }
}

/// The files of a cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA certificate, `ca.pem`.
    pub cert: PathBuf,
    /// The CA private key, `ca.key.pem`.
    pub key: PathBuf,
}

impl CaFiles {
    /// The CA files in `dir`.
    pub fn in_dir(dir: &Path) -> CaFiles {
        CaFiles {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        }
    }
}

/// What went wrong creating the CA or issuing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// `init_ca` found an existing CA.
    #[error(
        "{path} already exists: refusing to overwrite an existing cluster CA \
         (certificates issued by it would stop working); use another directory or remove it first"
    )]
    CaExists { path: PathBuf },
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: io::Error },
    /// A file or directory could not be written.
    #[error("cannot write {path}: {cause}")]
    Write { path: PathBuf, cause: io::Error },
    /// A PEM file does not hold what it should.
    #[error("{path} is not a valid {what}: {detail}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    /// The CA key does not belong to the CA certificate, or the CA was not made by dynakv.
    #[error(
        "the CA in {ca_cert} and {ca_key} cannot issue certificates that verify against it \
         ({detail}); was the key replaced, or the CA created by another tool? \
         Create the CA with `dynakv-node ca init`"
    )]
    CaMismatch {
        ca_cert: PathBuf,
        ca_key: PathBuf,
        detail: String,
    },
    /// A name given for a certificate is not usable.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    /// rcgen failed to generate a key or sign a certificate.
    #[error("cannot {action}: {cause}")]
    Generate {
        action: &'static str,
        cause: rcgen::Error,
    },
}

/// Creates a new cluster CA in `dir` (created if missing): `dir/ca.pem` and
/// `dir/ca.key.pem` (mode `0600`). Refuses if either file already exists.
pub fn init_ca(dir: &Path) -> Result<(), CertError> {
    let files = CaFiles::in_dir(dir);
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(CertError::CaExists { path: path.clone() });
        }
    }
    create_dir(dir)?;
    let key = KeyPair::generate().map_err(|cause| CertError::Generate {
        action: "generate the CA key",
        cause,
    })?;
    let mut params = ca_params();
    set_validity(&mut params);
    let cert = params
        .self_signed(&key)
        .map_err(|cause| CertError::Generate {
            action: "self-sign the CA certificate",
            cause,
        })?;
    // Key first: a CA certificate without its key would block a retry.
    write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&files.cert, cert.pem().as_bytes(), false)?;
    Ok(())
}

/// Issues a node certificate with the CA in `ca_dir` and writes `out_dir/node.pem`,
/// `out_dir/node.key.pem` (mode `0600`) and `out_dir/ca.pem`, replacing existing files.
///
/// SANs: DNS `node_id`, DNS [`CLIENT_SERVER_NAME`], and each of `hosts` (an IP address
/// becomes an IP SAN, anything else a DNS SAN). `node_id` must be usable as a DNS name,
/// because peers use it as TLS server name.
pub fn issue_node_cert(
    ca_dir: &Path,
    out_dir: &Path,
    node_id: &str,
    hosts: &[String],
) -> Result<(), CertError> {
    check_dns_name("node id", node_id)?;
    let mut sans: Vec<SanType> = Vec::new();
    let mut push = |san: SanType| {
        if !sans.contains(&san) {
            sans.push(san);
        }
    };
    push(dns_san("node id", node_id)?);
    push(dns_san("node name", CLIENT_SERVER_NAME)?);
    for host in hosts {
        let host = host.trim();
        match host.parse::<IpAddr>() {
            Ok(ip) => push(SanType::IpAddress(ip)),
            Err(_) => {
                check_dns_name("host", host)?;
                push(dns_san("host", host)?);
            }
        }
    }
    let mut params = leaf_params(node_id);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    issue(ca_dir, params, &CertFiles::node(out_dir))
}

/// Issues a client certificate (common name `name`, client authentication only) with the
/// CA in `ca_dir` and writes `out_dir/client.pem`, `out_dir/client.key.pem` (mode `0600`)
/// and `out_dir/ca.pem`, replacing existing files. An `admin` certificate also carries
/// the name [`ADMIN_NAME`], which nodes require for admin requests (anti-entropy
/// control, replica debugging, fault injection).
pub fn issue_client_cert(
    ca_dir: &Path,
    out_dir: &Path,
    name: &str,
    admin: bool,
) -> Result<(), CertError> {
    if name.trim().is_empty() {
        return Err(CertError::InvalidName {
            what: "client name",
            value: name.to_string(),
            reason: "it must not be empty",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(CertError::InvalidName {
            what: "client name",
            value: name.to_string(),
            reason: "it must not contain control characters",
        });
    }
    let mut params = leaf_params(name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if admin {
        params.subject_alt_names = vec![dns_san("admin name", ADMIN_NAME)?];
    }
    issue(ca_dir, params, &CertFiles::client(out_dir))
}

/// Sets up the certificates of a local development cluster under `dir`, creating only
/// what is missing: the CA in `dir/ca/`, a node certificate for each id in
/// `dir/<id>/` (SANs include `hosts`), and a client certificate named
/// [`DEV_CLIENT_NAME`] in `dir/client/` (an admin certificate). Calling it again changes nothing.
pub fn ensure_dev_certs(
    dir: &Path,
    node_ids: &[String],
    hosts: &[String],
) -> Result<(), CertError> {
    let ca_dir = dir.join("ca");
    if !CaFiles::in_dir(&ca_dir).cert.exists() {
        init_ca(&ca_dir)?;
    }
    for id in node_ids {
        let out = dir.join(id);
        if !complete(&CertFiles::node(&out)) {
            issue_node_cert(&ca_dir, &out, id, hosts)?;
        }
    }
    let out = dir.join("client");
    if !complete(&CertFiles::client(&out)) {
        // The operator of a dev cluster is its admin.
        issue_client_cert(&ca_dir, &out, DEV_CLIENT_NAME, true)?;
    }
    Ok(())
}

fn complete(files: &CertFiles) -> bool {
    files.ca.exists() && files.cert.exists() && files.key.exists()
}

/// The profile of a dynakv CA. [`issue`] rebuilds the issuer from it, so it must not
/// change (the subject name has to match the one in existing `ca.pem` files).
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Parameters of an end-entity certificate with common name `cn`.
fn leaf_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, CA_ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    params
}

/// Valid from a day ago (clock skew) for about ten years.
fn set_validity(params: &mut CertificateParams) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = params.not_before + BACKDATE + VALIDITY;
}

/// Signs `params` with a fresh key using the CA in `ca_dir`, verifies the result against
/// the CA certificate and writes the three files.
fn issue(ca_dir: &Path, params: CertificateParams, files: &CertFiles) -> Result<(), CertError> {
    let ca = CaFiles::in_dir(ca_dir);
    let ca_pem = read_to_string(&ca.cert)?;
    let ca_der = parse_single_cert(&ca.cert, &ca_pem)?;
    let ca_key_pem = read_to_string(&ca.key)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| CertError::BadPem {
        path: ca.key.clone(),
        what: "PEM private key",
        detail: e.to_string(),
    })?;
    let issuer = Issuer::new(ca_params(), ca_key);

    let key = KeyPair::generate().map_err(|cause| CertError::Generate {
        action: "generate a key",
        cause,
    })?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|cause| CertError::Generate {
            action: "sign the certificate",
            cause,
        })?;
    verify_issued(&ca, ca_der, cert.der().clone())?;

    create_dir_for(&files.key)?;
    write_file(&files.key, key.serialize_pem().as_bytes(), true)?;
    write_file(&files.cert, cert.pem().as_bytes(), false)?;
    write_file(&files.ca, ca_pem.as_bytes(), false)?;
    Ok(())
}

/// Checks that `cert` chains to the CA certificate `ca_der` (every issued certificate
/// carries the client-auth usage, so a client-certificate verifier checks them all).
fn verify_issued(
    ca: &CaFiles,
    ca_der: CertificateDer<'static>,
    cert: CertificateDer<'static>,
) -> Result<(), CertError> {
    let mismatch = |detail: String| CertError::CaMismatch {
        ca_cert: ca.cert.clone(),
        ca_key: ca.key.clone(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).map_err(|e| CertError::BadPem {
        path: ca.cert.clone(),
        what: "CA certificate",
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| mismatch(e.to_string()))?;
    verifier
        .verify_client_cert(&cert, &[], UnixTime::now())
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(())
}

fn parse_single_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CertError> {
    let bad = |detail: String| CertError::BadPem {
        path: path.to_path_buf(),
        what: "PEM certificate",
        detail,
    };
    let mut reader = pem.as_bytes();
    let first = rustls_pemfile::certs(&mut reader).next();
    match first {
        Some(Ok(der)) => Ok(der),
        Some(Err(e)) => Err(bad(e.to_string())),
        None => Err(bad("no CERTIFICATE block found".to_string())),
    }
}

/// Node ids and host names end up as DNS SANs and TLS server names.
fn check_dns_name(what: &'static str, value: &str) -> Result<(), CertError> {
    let invalid = |reason| CertError::InvalidName {
        what,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(invalid("it must not be empty"));
    }
    if value.parse::<IpAddr>().is_ok() {
        return Err(invalid("it must be a name, not an IP address"));
    }
    if rustls::pki_types::DnsName::try_from(value).is_err() {
        return Err(invalid(
            "it must be a valid DNS name: letters, digits, '-' and '.', labels of at most 63 characters",
        ));
    }
    Ok(())
}

fn dns_san(what: &'static str, value: &str) -> Result<SanType, CertError> {
    let name = rcgen::string::Ia5String::try_from(value).map_err(|_| CertError::InvalidName {
        what,
        value: value.to_string(),
        reason: "it must be ASCII",
    })?;
    Ok(SanType::DnsName(name))
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|cause| CertError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|cause| CertError::Write {
        path: dir.to_path_buf(),
        cause,
    })
}

fn create_dir_for(file: &Path) -> Result<(), CertError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => create_dir(dir),
        _ => Ok(()),
    }
}

/// Writes `contents` to a temporary file next to `path` (mode `0600` if `secret`), then
/// renames it over `path`, so a reader never sees a half-written file.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    use std::io::Write;
    let err = |cause| CertError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let result = (|| {
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        if secret {
            // The mode applies only to new files; a stale temporary file keeps its own.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_ca_creates_the_files_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let files = CaFiles::in_dir(&ca);
        assert!(read_to_string(&files.cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        assert!(read_to_string(&files.key).unwrap().contains("PRIVATE KEY"));
        #[cfg(unix)]
        assert_eq!(mode(&files.key), 0o600);
        let before = fs::read(&files.key).unwrap();
        let err = init_ca(&ca).unwrap_err();
        assert!(matches!(err, CertError::CaExists { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(fs::read(&files.key).unwrap(), before);
    }

    #[test]
    fn issues_node_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let node = dir.path().join("n1");
        issue_node_cert(
            &ca,
            &node,
            "n1",
            &strings(&["127.0.0.1", "::1", "db1.example"]),
        )
        .unwrap();
        let files = CertFiles::node(&node);
        assert_eq!(
            fs::read(&files.ca).unwrap(),
            fs::read(ca.join(CA_CERT_FILE)).unwrap()
        );
        assert!(read_to_string(&files.cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        #[cfg(unix)]
        assert_eq!(mode(&files.key), 0o600);
        let client = dir.path().join("client");
        issue_client_cert(&ca, &client, "alice", false).unwrap();
        let files = CertFiles::client(&client);
        assert!(files.ca.exists() && files.cert.exists() && files.key.exists());
        #[cfg(unix)]
        assert_eq!(mode(&files.key), 0o600);
        // Issuing into the CA directory itself keeps ca.pem intact.
        issue_client_cert(&ca, &ca, "bob", true).unwrap();
        issue_node_cert(&ca, &node, "n1", &[]).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let out = dir.path().join("out");
        for id in ["", "has space", "10.0.0.1", "ümlaut", "under_score!"] {
            let err = issue_node_cert(&ca, &out, id, &[]).unwrap_err();
            assert!(
                matches!(err, CertError::InvalidName { .. }),
                "{id:?}: {err}"
            );
        }
        let err = issue_node_cert(&ca, &out, "n1", &strings(&["bad host"])).unwrap_err();
        assert!(
            matches!(err, CertError::InvalidName { what: "host", .. }),
            "{err}"
        );
        let err = issue_client_cert(&ca, &out, " ", false).unwrap_err();
        assert!(matches!(err, CertError::InvalidName { .. }), "{err}");
        assert!(!out.exists(), "nothing is written for a refused name");
    }

    #[test]
    fn a_missing_or_mismatched_ca_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let err = issue_node_cert(&dir.path().join("nope"), &out, "n1", &[]).unwrap_err();
        assert!(matches!(err, CertError::Read { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");

        let a = dir.path().join("a");
        let b = dir.path().join("b");
        init_ca(&a).unwrap();
        init_ca(&b).unwrap();
        fs::copy(b.join(CA_KEY_FILE), a.join(CA_KEY_FILE)).unwrap();
        let err = issue_node_cert(&a, &out, "n1", &[]).unwrap_err();
        assert!(matches!(err, CertError::CaMismatch { .. }), "{err}");

        fs::write(a.join(CA_KEY_FILE), "garbage").unwrap();
        let err = issue_client_cert(&a, &out, "c", false).unwrap_err();
        assert!(matches!(err, CertError::BadPem { .. }), "{err}");
        assert!(err.to_string().contains("ca.key.pem"), "{err}");
        assert!(!out.exists());
    }

    #[test]
    fn ensure_dev_certs_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let ids = strings(&["n1", "n2", "n3"]);
        let hosts = strings(&["127.0.0.1"]);
        ensure_dev_certs(dir.path(), &ids, &hosts).unwrap();
        let paths: Vec<PathBuf> = ids
            .iter()
            .map(|id| dir.path().join(id).join(NODE_CERT_FILE))
            .chain([
                dir.path().join("ca").join(CA_CERT_FILE),
                dir.path().join("client").join(CLIENT_CERT_FILE),
            ])
            .collect();
        let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        ensure_dev_certs(dir.path(), &ids, &hosts).unwrap();
        let after: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap()).collect();
        assert_eq!(before, after);
        // A new node is added under the same CA.
        let more = strings(&["n1", "n2", "n3", "n4"]);
        ensure_dev_certs(dir.path(), &more, &hosts).unwrap();
        assert!(dir.path().join("n4").join(NODE_KEY_FILE).exists());
        assert_eq!(fs::read(&paths[0]).unwrap(), before[0]);
    }
}

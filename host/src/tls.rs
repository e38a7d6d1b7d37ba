//! TLS for the client front end and between nodes: the node's certificate, client certificates,
//! and the development CA a first start writes when it is given none.
//!
//! Request path: every client connection's QUIC handshake uses the [`quinn::ServerConfig`]
//! built here; nothing reaches `api` before it completes. A client may present a certificate
//! the cluster CA signed: its subject's common name is the principal the connection speaks for
//! ([`client_principal`]). The ZooKeeper front end's TLS port (`zk`) uses the same
//! certificates over TCP ([`tcp_server_config`], [`certificate_principal`]). Peers
//! (`raft::peer`) use mutual TLS: each end presents a node certificate the cluster CA signed,
//! which names its node id as the URI `urn:cairn:node:<id>` among its subject alternative
//! names and allows server authentication; a client certificate (client authentication only,
//! no node id) is refused there ([`peer_node_id`]).
//!
//! A first start writes, beside the development CA and the node certificate, the certificate
//! of the cluster's first administrator (`admin.pem`, `admin-key.pem`, common name `admin`).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate files a node serves with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA that signed the node certificate: what clients trust.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate or key is not usable: {0}")]
    Config(String),
}

impl TlsFiles {
    /// The files under a data dir's `tls/` folder.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
        }
    }

    fn ca_key(&self) -> PathBuf {
        self.ca.with_file_name("ca-key.pem")
    }
}

/// The files of the CA key beside a CA certificate.
pub fn ca_key_file(ca: &Path) -> PathBuf {
    ca.with_file_name("ca-key.pem")
}

/// Makes sure `dir` holds a node certificate for node `node_id`: generates a development CA
/// (unless one is there) and a node certificate for `names` (DNS names or IP addresses) signed
/// by it, and with a new CA the first administrator's client certificate. Returns the files and
/// whether anything was generated.
pub fn ensure_dev_certificates(
    dir: &Path,
    names: &[String],
    node_id: u64,
) -> Result<(TlsFiles, bool), TlsError> {
    let files = TlsFiles::in_dir(dir);
    if files.cert.exists() && files.key.exists() && files.ca.exists() {
        return Ok((files, false));
    }
    fs::create_dir_all(dir)
        .map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    if files.ca.exists() && files.ca_key().exists() {
        // Keep the CA clients already trust; issue only the node certificate.
        let key = KeyPair::from_pem(&read_text(&files.ca_key())?)?;
        let issuer = Issuer::from_ca_cert_pem(&read_text(&files.ca)?, key)?;
        write_node_certificate(&files, names, node_id, &issuer)?;
        return Ok((files, true));
    }
    let (ca_params, ca_key) = new_ca()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write_private(&files.ca_key(), &ca_key.serialize_pem())?;
    write_file(&files.ca, &ca_cert.pem())?;
    let issuer = Issuer::new(ca_params, ca_key);
    write_node_certificate(&files, names, node_id, &issuer)?;
    write_client_certificate(dir, cairn_wire::access::BOOTSTRAP_ADMIN, &issuer)?;
    Ok((files, true))
}

/// The URI a node certificate names its node by.
fn node_uri(node_id: u64) -> String {
    format!("urn:cairn:node:{node_id}")
}

fn write_node_certificate(
    files: &TlsFiles,
    names: &[String],
    node_id: u64,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), TlsError> {
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(DnType::CommonName, format!("Cairn node {node_id}"));
    let uri = node_uri(node_id)
        .try_into()
        .map_err(|e: rcgen::Error| TlsError::Config(format!("node URI: {e}")))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_private(&files.key, &key.serialize_pem())?;
    write_file(&files.cert, &cert.pem())
}

/// Writes a client certificate for principal `name` (its common name), for client
/// authentication only, as `<dir>/<name>.pem` and `<dir>/<name>-key.pem` (owner-only).
/// Returns the two files.
fn write_client_certificate(
    dir: &Path,
    name: &str,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(PathBuf, PathBuf), TlsError> {
    cairn_wire::access::validate_principal_name(name).map_err(TlsError::Config)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    let (cert_file, key_file) =
        (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
    write_private(&key_file, &key.serialize_pem())?;
    write_file(&cert_file, &cert.pem())?;
    Ok((cert_file, key_file))
}

/// Issues a client certificate for principal `name` from the CA whose certificate is `ca`
/// (its key beside it, `ca-key.pem`), into `out`. Returns the certificate and key files.
pub fn issue_client_certificate(
    ca: &Path,
    name: &str,
    out: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let key = KeyPair::from_pem(&read_text(&ca_key_file(ca))?)?;
    let issuer = Issuer::from_ca_cert_pem(&read_text(ca)?, key)?;
    fs::create_dir_all(out)
        .map_err(|source| TlsError::Write { path: out.to_path_buf(), source })?;
    write_client_certificate(out, name, &issuer)
}

/// How long a node waits for another node to finish writing the shared development CA.
pub const DEV_CA_WAIT_MS: u64 = 30_000;

/// Certificates for a member of a development cluster: the CA and the first administrator's
/// certificate live in `shared` (written by the first node to get there; the others wait for
/// it), and this node's certificate for `names`, issued by it, in `node_dir`. Clients and
/// peers trust `shared/ca.pem`; the CA's key stays in `shared` alone.
pub fn ensure_cluster_dev_certificates(
    shared: &Path,
    node_dir: &Path,
    names: &[String],
    node_id: u64,
) -> Result<(TlsFiles, bool), TlsError> {
    let ca = TlsFiles::in_dir(shared);
    let node = TlsFiles { ca: ca.ca.clone(), ..TlsFiles::in_dir(node_dir) };
    if node.cert.exists() && node.key.exists() && ca.ca.exists() {
        return Ok((node, false));
    }
    for dir in [shared, node_dir] {
        fs::create_dir_all(dir)
            .map_err(|source| TlsError::Write { path: dir.to_path_buf(), source })?;
    }
    // Whoever makes the lock directory first writes the CA; it stays as the mark that one did.
    let lock = shared.join(".ca-written-by-a-node");
    if fs::create_dir(&lock).is_ok() && !ca.ca.exists() {
        let (ca_params, ca_key) = new_ca()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        // Key first, then the certificate by rename: a reader that sees ca.pem sees both.
        write_private(&ca.ca_key(), &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca_params.clone(), KeyPair::from_pem(&ca_key.serialize_pem())?);
        write_client_certificate(shared, cairn_wire::access::BOOTSTRAP_ADMIN, &issuer)?;
        let partial = ca.ca.with_extension("partial");
        write_file(&partial, &ca_cert.pem())?;
        fs::rename(&partial, &ca.ca)
            .map_err(|source| TlsError::Write { path: ca.ca.clone(), source })?;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(DEV_CA_WAIT_MS);
    while !ca.ca.exists() {
        if std::time::Instant::now() > deadline {
            return Err(TlsError::Read {
                path: ca.ca.clone(),
                reason: format!(
                    "no CA after {DEV_CA_WAIT_MS} ms (remove {} to retry)",
                    lock.display()
                ),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let key = KeyPair::from_pem(&read_text(&ca.ca_key())?)?;
    let ca_pem = read_text(&ca.ca)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
    write_node_certificate(&node, names, node_id, &issuer)?;
    // A copy of the CA certificate (public) beside the node's, as a single node keeps it.
    write_file(&TlsFiles::in_dir(node_dir).ca, &ca_pem)?;
    Ok((node, true))
}

fn new_ca() -> Result<(CertificateParams, KeyPair), TlsError> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "Cairn development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok((ca_params, KeyPair::generate()?))
}

/// The node's certificate chain and key.
fn identity(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read { path: files.cert.clone(), reason: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| TlsError::Read { path: files.key.clone(), reason: e.to_string() })?;
    Ok((certs, key))
}

/// The CA certificates in `files.ca`, as trust roots.
fn roots(files: &TlsFiles) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&files.ca)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Read { path: files.ca.clone(), reason: e.to_string() })?;
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::Config(format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Read { path: files.ca.clone(), reason: "no certificate".into() });
    }
    Ok(Arc::new(roots))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn quic_server(
    mut tls: rustls::ServerConfig,
    alpn: &[u8],
) -> Result<quinn::ServerConfig, TlsError> {
    tls.alpn_protocols = vec![alpn.to_vec()];
    // No session resumption: Cairn's clients and peers keep their connections, and every
    // ticket sent is work in each handshake and state in the cache.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}

/// The QUIC server configuration for the client front end: a client may present a certificate
/// the cluster CA (`files.ca`) signed, or none (then it is anonymous until it authenticates).
pub fn server_config(files: &TlsFiles, alpn: &[u8]) -> Result<quinn::ServerConfig, TlsError> {
    quic_server(client_facing(files, &[&rustls::version::TLS13])?, alpn)
}

/// The TLS-over-TCP configuration of the ZooKeeper front end's secure port (ZooKeeper's
/// `secureClientPort`), with the same certificates as the QUIC port's. TLS 1.3 and 1.2, which
/// ZooKeeper's Java clients before Java 11 speak.
pub fn tcp_server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    Ok(Arc::new(client_facing(files, &versions)?))
}

/// A server configuration clients reach: the node's certificate, and a client may present
/// one the cluster CA signed, or none.
fn client_facing(
    files: &TlsFiles,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, TlsError> {
    let (certs, key) = identity(files)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(files)?, provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// The leaf certificate a QUIC peer presented, if it presented one (the handshake verified it).
fn presented(connection: &quinn::Connection) -> Option<CertificateDer<'static>> {
    let chain = connection.peer_identity()?.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    chain.into_iter().next()
}

/// Who a client connection speaks for: the common name of the certificate it presented
/// (`Ok(None)` when it presented none), or why that name cannot be a principal.
pub fn client_principal(connection: &quinn::Connection) -> Result<Option<String>, String> {
    presented(connection).map(|leaf| certificate_principal(&leaf)).transpose()
}

/// The principal a client certificate (DER, verified by the handshake) names: its common name.
pub fn certificate_principal(leaf: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or("the client certificate has no common name")?
        .to_string();
    cairn_wire::access::validate_principal_name(&name)
        .map_err(|why| format!("the client certificate's common name: {why}"))?;
    Ok(name)
}

/// The node id a peer connection's certificate names, if it is a node certificate: one that
/// allows server authentication and names exactly one node (`urn:cairn:node:<id>`).
pub fn peer_node_id(connection: &quinn::Connection) -> Result<u64, String> {
    let leaf = presented(connection).ok_or("no certificate")?;
    node_id_of_der(&leaf)
}

/// The node id a node certificate (DER) names.
fn node_id_of_der(der: &[u8]) -> Result<u64, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    let server_auth =
        cert.extended_key_usage().ok().flatten().is_some_and(|usage| usage.value.server_auth);
    if !server_auth {
        return Err("not a node certificate (it does not allow server authentication)".into());
    }
    let mut ids = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::URI(uri) => {
                        uri.strip_prefix("urn:cairn:node:").map(str::parse::<u64>)
                    }
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    match (ids.pop(), ids.is_empty()) {
        (Some(Ok(id)), true) => Ok(id),
        (None, _) => Err("the certificate names no node (urn:cairn:node:<id>)".into()),
        _ => Err("the certificate names more than one node, or a bad id".into()),
    }
}

/// The node id this node's own certificate names.
pub fn own_node_id(files: &TlsFiles) -> Result<u64, TlsError> {
    let (certs, _) = identity(files)?;
    let leaf = certs.first().ok_or_else(|| TlsError::Read {
        path: files.cert.clone(),
        reason: "no certificate".into(),
    })?;
    node_id_of_der(leaf).map_err(TlsError::Config)
}

/// The QUIC server configuration for peers: a client must present a certificate from the
/// cluster CA (`files.ca`).
pub fn peer_server_config(files: &TlsFiles, alpn: &[u8]) -> Result<quinn::ServerConfig, TlsError> {
    let (certs, key) = identity(files)?;
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(files)?, provider())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    quic_server(tls, alpn)
}

/// The QUIC client configuration for reaching peers: trusts only the cluster CA and presents
/// this node's certificate.
pub fn peer_client_config(files: &TlsFiles, alpn: &[u8]) -> Result<quinn::ClientConfig, TlsError> {
    let (certs, key) = identity(files)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(files)?)
        .with_client_auth_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

fn read_text(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path)
        .map_err(|e| TlsError::Read { path: path.to_path_buf(), reason: e.to_string() })
}

fn write_file(path: &Path, text: &str) -> Result<(), TlsError> {
    fs::write(path, text).map_err(|source| TlsError::Write { path: path.to_path_buf(), source })
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let wrap = |source| TlsError::Write { path: path.to_path_buf(), source };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(wrap)?;
    file.write_all(text.as_bytes()).map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_reuses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (files, generated) = ensure_dev_certificates(dir.path(), &names, 7).expect("generates");
        assert!(generated);
        assert_eq!(own_node_id(&files).expect("names its node"), 7);
        let admin = dir.path().join("admin.pem");
        assert!(admin.exists(), "the first administrator's certificate is written");
        assert!(node_id_of_der(&pem_der(&admin)).is_err(), "a client certificate is no node's");
        let ca = fs::read(&files.ca).expect("ca written");
        let (_, generated) = ensure_dev_certificates(dir.path(), &names, 7).expect("reuses");
        assert!(!generated);
        assert_eq!(fs::read(&files.ca).expect("ca kept"), ca);
        server_config(&files, b"test").expect("usable");

        // A lost node certificate is issued again by the same CA.
        fs::remove_file(&files.cert).expect("remove");
        let (_, generated) = ensure_dev_certificates(dir.path(), &names, 7).expect("reissues");
        assert!(generated);
        assert_eq!(fs::read(&files.ca).expect("ca kept"), ca);
        server_config(&files, b"test").expect("usable");

        // A client certificate issued later by the same CA names its principal, and only it.
        let out = dir.path().join("alice");
        let (cert, _key) = issue_client_certificate(&files.ca, "alice", &out).expect("issued");
        assert!(node_id_of_der(&pem_der(&cert)).is_err());
        assert!(issue_client_certificate(&files.ca, "no spaces", &out).is_err());
    }

    fn pem_der(path: &Path) -> Vec<u8> {
        CertificateDer::from_pem_file(path).expect("a certificate").to_vec()
    }
}

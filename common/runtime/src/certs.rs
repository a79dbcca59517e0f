//! Certificates: the cluster CA, node and client identities, and their PEM files.
//!
//! Every process in a decree cluster proves who it is with a certificate signed by the cluster
//! CA (DESIGN.md §8). This module makes those certificates with rcgen and reads them back:
//!
//! - [`ClusterCa::generate`] makes an ephemeral CA in memory (tests, the demo);
//! - [`ClusterCa::issue_node`] / [`ClusterCa::issue_client`] make an [`Identity`];
//! - [`write_dir`] writes a CA and identities as PEM files, [`load_identity`] reads one back.
//!
//! # How a certificate names its owner
//!
//! A node certificate has subject CN `node-<id>` and the subject alternative names `localhost`,
//! `127.0.0.1`, `node-<id>` and any extra host names. Peers dial a node with the server name
//! `node-<id>`, so TLS itself checks that the process answering is the node we meant. A client
//! certificate has CN and DNS name `client-<name>`. [`peer_of_certificate`] reads the owner back
//! from the DNS names; the transport uses it to learn who is on the other end of a connection.
//!
//! # Files
//!
//! `ca.pem`, `ca.key`, `node-<id>.pem`, `node-<id>.key`, `client-<name>.pem`,
//! `client-<name>.key`. Keys are PKCS#8 PEM written with mode 0600.

use std::fmt;
use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use decree_types::NodeId;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File name of the CA certificate in a certificate directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key in a certificate directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// Who a certificate belongs to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Peer {
    /// A cluster node (participant or coordinator process).
    Node(NodeId),
    /// A client (an application using the client library, or the `decree` CLI).
    Client(String),
}

impl Peer {
    /// The file stem and certificate name of this peer: `node-<id>` or `client-<name>`.
    pub fn name(&self) -> String {
        match self {
            Peer::Node(id) => node_name(*id),
            Peer::Client(name) => format!("client-{name}"),
        }
    }

    /// The node id, if this peer is a node.
    pub fn node_id(&self) -> Option<NodeId> {
        match self {
            Peer::Node(id) => Some(*id),
            Peer::Client(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// The certificate name of a node, `node-<id>`: its CN, a DNS SAN, and the TLS server name peers
/// dial it with.
pub fn node_name(id: NodeId) -> String {
    format!("node-{}", id.0)
}

/// Errors making, writing or reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused to build a certificate.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A client name that cannot be a DNS label.
    #[error("invalid client name {name:?}: use 1-50 characters from a-z, 0-9 and '-'")]
    InvalidClientName {
        /// The name given.
        name: String,
    },
    /// `write_dir` found an existing CA and was not told to overwrite it.
    #[error("{path} already exists; refusing to overwrite the cluster CA (use --force)")]
    CaExists {
        /// The existing CA certificate.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file held no usable certificate or key.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate does not name a decree node or client.
    #[error("certificate does not name a decree node or client")]
    UnknownOwner,
}

/// A process's TLS identity: its certificate, its private key, and the CA it trusts.
pub struct Identity {
    /// Who this identity belongs to.
    pub peer: Peer,
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key, PKCS#8 DER.
    pub key: PrivateKeyDer<'static>,
    /// The cluster CA certificate this process trusts, DER.
    pub ca_cert: CertificateDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            peer: self.peer.clone(),
            cert: self.cert.clone(),
            key: self.key.clone_key(),
            ca_cert: self.ca_cert.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key is deliberately left out of debug output.
        f.debug_struct("Identity").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// An identity as PEM text, ready to be written to files.
#[derive(Clone)]
pub struct PemIdentity {
    /// Who this identity belongs to.
    pub peer: Peer,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl fmt::Debug for PemIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemIdentity").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// The cluster certificate authority: signs every node and client certificate.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    cert_pem: String,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a fresh CA (ECDSA P-256) that lives in memory.
    pub fn generate() -> Result<ClusterCa, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "decree cluster CA");
        params.distinguished_name.push(DnType::OrganizationName, "decree");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let cert = cert.der().clone();
        Ok(ClusterCa { issuer: Issuer::new(params, key), cert, cert_pem })
    }

    /// The CA certificate, DER.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PKCS#8 PEM. Whoever holds it can mint cluster identities.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a node certificate for `id`, valid as a TLS server and client. `extra_hosts` are
    /// added as subject alternative names (IP addresses or DNS names).
    pub fn issue_node_pem(
        &self,
        id: NodeId,
        extra_hosts: &[String],
    ) -> Result<PemIdentity, CertError> {
        let name = node_name(id);
        let mut sans = vec!["localhost".to_string(), name.clone()];
        sans.extend(extra_hosts.iter().cloned());
        let mut params = CertificateParams::new(sans)?;
        params.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(Peer::Node(id), &name, params)
    }

    /// Issues a client certificate named `client-<name>`, valid as a TLS client only.
    pub fn issue_client_pem(&self, name: &str) -> Result<PemIdentity, CertError> {
        if !valid_client_name(name) {
            return Err(CertError::InvalidClientName { name: name.to_string() });
        }
        let peer = Peer::Client(name.to_string());
        let full = peer.name();
        let mut params = CertificateParams::new(vec![full.clone()])?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(peer, &full, params)
    }

    /// [`ClusterCa::issue_node_pem`], decoded into an [`Identity`] for the transport.
    pub fn issue_node(&self, id: NodeId) -> Result<Identity, CertError> {
        self.identity(self.issue_node_pem(id, &[])?)
    }

    /// [`ClusterCa::issue_client_pem`], decoded into an [`Identity`] for the transport.
    pub fn issue_client(&self, name: &str) -> Result<Identity, CertError> {
        self.identity(self.issue_client_pem(name)?)
    }

    fn issue(
        &self,
        peer: Peer,
        common_name: &str,
        mut params: CertificateParams,
    ) -> Result<PemIdentity, CertError> {
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, "decree");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(PemIdentity { peer, cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    fn identity(&self, pem: PemIdentity) -> Result<Identity, CertError> {
        identity_from_pem(pem, self.cert.clone(), Path::new("<memory>"))
    }
}

/// Reads the owner of a certificate from its DNS subject alternative names (`node-<id>` or
/// `client-<name>`). Total: any input gives a value or an error.
pub fn peer_of_certificate(cert: &CertificateDer<'_>) -> Result<Peer, CertError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|_| CertError::UnknownOwner)?;
    for name in parsed.valid_dns_names() {
        if let Some(digits) = name.strip_prefix("node-") {
            // Only canonical decimal (no sign, no leading zeros) maps to a NodeId, so one node
            // has exactly one name.
            if let Ok(id) = digits.parse::<u64>() {
                if id.to_string() == digits {
                    return Ok(Peer::Node(NodeId(id)));
                }
            }
        } else if let Some(client) = name.strip_prefix("client-") {
            if valid_client_name(client) {
                return Ok(Peer::Client(client.to_string()));
            }
        }
    }
    Err(CertError::UnknownOwner)
}

/// What [`write_dir`] wrote.
#[derive(Clone, Debug, Default)]
pub struct WrittenFiles {
    /// Every file written, in order.
    pub paths: Vec<PathBuf>,
}

/// Generates a CA, one certificate per node and per client, and writes them to `dir` (created if
/// missing). Refuses to overwrite an existing `ca.pem` unless `force`.
pub fn write_dir(
    dir: &Path,
    nodes: &[NodeId],
    clients: &[String],
    extra_hosts: &[String],
    force: bool,
) -> Result<WrittenFiles, CertError> {
    let ca_path = dir.join(CA_CERT_FILE);
    if ca_path.exists() && !force {
        return Err(CertError::CaExists { path: ca_path });
    }
    // Validate every name before writing anything, so a bad name leaves no half-written dir.
    for client in clients {
        if !valid_client_name(client) {
            return Err(CertError::InvalidClientName { name: client.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| CertError::Io { path: dir.to_path_buf(), source })?;
    let ca = ClusterCa::generate()?;
    let mut written = WrittenFiles::default();
    write_file(&ca_path, ca.cert_pem().as_bytes(), false, &mut written)?;
    write_file(&dir.join(CA_KEY_FILE), ca.key_pem().as_bytes(), true, &mut written)?;
    let mut identities = Vec::new();
    for &id in nodes {
        identities.push(ca.issue_node_pem(id, extra_hosts)?);
    }
    for client in clients {
        identities.push(ca.issue_client_pem(client)?);
    }
    for identity in identities {
        let stem = identity.peer.name();
        write_file(
            &dir.join(format!("{stem}.pem")),
            identity.cert_pem.as_bytes(),
            false,
            &mut written,
        )?;
        write_file(
            &dir.join(format!("{stem}.key")),
            identity.key_pem.as_bytes(),
            true,
            &mut written,
        )?;
    }
    Ok(written)
}

/// Reads the identity of `peer` (`<name>.pem`, `<name>.key`) and the CA (`ca.pem`) from `dir`.
pub fn load_identity(dir: &Path, peer: &Peer) -> Result<Identity, CertError> {
    let stem = peer.name();
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    let ca_path = dir.join(CA_CERT_FILE);
    let cert_pem = read_file(&cert_path)?;
    let key_pem = read_file(&key_path)?;
    let ca_cert = CertificateDer::from_pem_slice(read_file(&ca_path)?.as_bytes())
        .map_err(|e| CertError::Pem { path: ca_path.clone(), reason: e.to_string() })?;
    let identity = identity_from_pem(
        PemIdentity { peer: peer.clone(), cert_pem, key_pem },
        ca_cert,
        &cert_path,
    )?;
    let owner = peer_of_certificate(&identity.cert)?;
    if &owner != peer {
        return Err(CertError::Pem {
            path: cert_path,
            reason: format!("certificate belongs to {owner}, not {peer}"),
        });
    }
    Ok(identity)
}

/// Reads only the CA certificate of a certificate directory.
pub fn load_ca_cert(dir: &Path) -> Result<CertificateDer<'static>, CertError> {
    let path = dir.join(CA_CERT_FILE);
    CertificateDer::from_pem_slice(read_file(&path)?.as_bytes())
        .map_err(|e| CertError::Pem { path, reason: e.to_string() })
}

fn identity_from_pem(
    pem: PemIdentity,
    ca_cert: CertificateDer<'static>,
    path: &Path,
) -> Result<Identity, CertError> {
    let cert = CertificateDer::from_pem_slice(pem.cert_pem.as_bytes())
        .map_err(|e| CertError::Pem { path: path.to_path_buf(), reason: e.to_string() })?;
    let key = PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes())
        .map_err(|e| CertError::Pem { path: path.with_extension("key"), reason: e.to_string() })?;
    Ok(Identity { peer: pem.peer, cert, key, ca_cert })
}

/// A client name must make `client-<name>` a valid DNS label.
fn valid_client_name(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn read_file(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io { path: path.to_path_buf(), source })
}

fn write_file(
    path: &Path,
    contents: &[u8],
    secret: bool,
    written: &mut WrittenFiles,
) -> Result<(), CertError> {
    let io = |source| CertError::Io { path: path.to_path_buf(), source };
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(io)?;
    // `mode` applies only when the file is created; tighten an existing key file too.
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    written.paths.push(path.to_path_buf());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificate_names_its_node() {
        let ca = ClusterCa::generate().unwrap();
        let id = ca.issue_node(NodeId(42)).unwrap();
        assert_eq!(peer_of_certificate(&id.cert).unwrap(), Peer::Node(NodeId(42)));
        let client = ca.issue_client("admin").unwrap();
        assert_eq!(peer_of_certificate(&client.cert).unwrap(), Peer::Client("admin".into()));
    }

    #[test]
    fn garbage_certificate_has_no_owner() {
        let der = CertificateDer::from(vec![0x30, 0x03, 1, 2, 3]);
        assert!(matches!(peer_of_certificate(&der), Err(CertError::UnknownOwner)));
    }

    #[test]
    fn client_names_are_checked() {
        let ca = ClusterCa::generate().unwrap();
        for bad in ["", "Admin", "a b", "-x", "x-", "é"] {
            assert!(
                matches!(ca.issue_client_pem(bad), Err(CertError::InvalidClientName { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn write_then_load_and_refuse_overwrite() {
        let dir = std::env::temp_dir().join(format!("decree-certs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let written =
            write_dir(&dir, &[NodeId(1), NodeId(2)], &["admin".into()], &[], false).unwrap();
        assert_eq!(written.paths.len(), 8);
        let node = load_identity(&dir, &Peer::Node(NodeId(2))).unwrap();
        assert_eq!(node.peer, Peer::Node(NodeId(2)));
        load_identity(&dir, &Peer::Client("admin".into())).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("node-1.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = fs::metadata(dir.join("ca.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_dir(&dir, &[NodeId(1)], &[], &[], false),
            Err(CertError::CaExists { .. })
        ));
        write_dir(&dir, &[NodeId(1)], &[], &[], true).unwrap();
        // A certificate file that names someone else is refused.
        fs::copy(dir.join("node-1.pem"), dir.join("node-2.pem")).unwrap();
        assert!(matches!(load_identity(&dir, &Peer::Node(NodeId(2))), Err(CertError::Pem { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! TLS configuration: mutual TLS 1.3 against the cluster CA, ALPN `decree/1`.
//!
//! Both ends of every connection present a certificate signed by the cluster CA, and both
//! verify the other's against that CA only ([`rustls::server::WebPkiClientVerifier`] on the
//! server side, a root store holding just the CA on the client side). A certificate from any
//! other CA fails the handshake; nothing reaches the application. The ring crypto provider is
//! used explicitly, so the process-wide default provider does not matter.

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

use crate::certs::Identity;

/// The ALPN protocol id every decree endpoint speaks and requires.
pub const ALPN: &[u8] = b"decree/1";

/// A TLS configuration could not be built from an identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client verifier could not be built (e.g. an empty root store).
    #[error("client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// quinn refused the rustls configuration (no TLS 1.3 suite usable for QUIC).
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// A rustls server config that requires a client certificate signed by the identity's CA.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(identity)?);
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider)).build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A rustls client config that trusts only the identity's CA and presents the identity's
/// certificate.
pub fn client_config(identity: &Identity) -> Result<rustls::ClientConfig, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(identity)?)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// [`server_config`] wrapped for quinn.
pub fn quic_server_config(identity: &Identity) -> Result<QuicServerConfig, TlsConfigError> {
    QuicServerConfig::try_from(server_config(identity)?)
        .map_err(|e| TlsConfigError::Quic(e.to_string()))
}

/// [`client_config`] wrapped for quinn.
pub fn quic_client_config(identity: &Identity) -> Result<QuicClientConfig, TlsConfigError> {
    QuicClientConfig::try_from(client_config(identity)?)
        .map_err(|e| TlsConfigError::Quic(e.to_string()))
}

fn root_store(identity: &Identity) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca_cert.clone())?;
    Ok(roots)
}

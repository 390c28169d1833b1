//! TLS material of a node: the API's rustls server configuration (TLS 1.2+ with AEAD suites
//! only, TLS 1.3 preferred, HTTP/2 and HTTP/1.1) and certificate expiry for monitoring.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::crypto::ring as ring_provider;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).with_context(|| format!("reading private key from {}", path.display()))
}

/// The API's TLS configuration. ring's suites are all AEAD (AES-GCM, ChaCha20-Poly1305), and
/// only TLS 1.3 and 1.2 are enabled, TLS 1.3 first.
pub fn api_server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(ring_provider::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .context("the API certificate and key do not match")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate's notAfter as unix seconds, for the expiry alert.
pub fn not_after(cert: &Path) -> anyhow::Result<i64> {
    let certs = load_certs(cert)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(certs[0].as_ref()).map_err(|e| anyhow!("{e}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

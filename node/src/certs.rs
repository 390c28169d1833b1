//! `dermagate certs init`: a cluster CA and per-node certificates for local use (rcgen). Each
//! node certificate serves both the API and mutual-TLS Raft, and carries the name
//! `node-<id>.dermagate` that peers verify. Production deployments bring their own PEM files.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

pub struct CertPaths {
    pub ca_cert: PathBuf,
    pub node_cert: Vec<PathBuf>,
    pub node_key: Vec<PathBuf>,
}

pub fn ca_cert_path(dir: &Path) -> PathBuf {
    dir.join("ca.pem")
}
pub fn node_cert_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.pem"))
}
pub fn node_key_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}.key"))
}

/// Writes a file readable by its owner only (keys, passwords, the KEK).
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

fn ca_params(name: &str) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "dermagate");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

fn node_params(id: u64, days: i64, ip: Option<IpAddr>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(vec![format!("node-{id}.dermagate"), "localhost".to_string()])?;
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    params.subject_alt_names.push(SanType::IpAddress("::1".parse()?));
    if let Some(ip) = ip.filter(|ip| !ip.is_unspecified() && *ip != IpAddr::from([127, 0, 0, 1])) {
        params.subject_alt_names.push(SanType::IpAddress(ip));
    }
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("node-{id}.dermagate"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    // Strict validators (sslyze, some browsers) build the chain by key identifier.
    params.use_authority_key_identifier_extension = true;
    let (y, m, d) = ymd(chrono::Utc::now() - chrono::Duration::days(1));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(chrono::Utc::now() + chrono::Duration::days(days.max(1)));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(params)
}

fn ymd(t: chrono::DateTime<chrono::Utc>) -> (i32, u8, u8) {
    use chrono::Datelike;
    (t.year(), t.month() as u8, t.day() as u8)
}

/// Creates a CA named `ca_name` and certificates for nodes 1..=nodes in `out`.
pub fn init(out: &Path, nodes: u64, ca_name: &str, days: i64) -> anyhow::Result<CertPaths> {
    init_with_ips(out, nodes, ca_name, days, |_| None)
}

/// Like [`init`]; node `id`'s certificate also names the address `ip_of(id)`.
pub fn init_with_ips(
    out: &Path,
    nodes: u64,
    ca_name: &str,
    days: i64,
    ip_of: impl Fn(u64) -> Option<IpAddr>,
) -> anyhow::Result<CertPaths> {
    anyhow::ensure!((1..=99).contains(&nodes), "--nodes must be between 1 and 99");
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let ca_key = KeyPair::generate()?;
    // The CA key is kept (owner-only) so operators can issue a certificate for a node added later.
    write_private(&out.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    let ca = CertifiedIssuer::self_signed(ca_params(ca_name)?, ca_key)?;
    fs::write(ca_cert_path(out), ca.pem())?;
    let mut paths = CertPaths { ca_cert: ca_cert_path(out), node_cert: Vec::new(), node_key: Vec::new() };
    for id in 1..=nodes {
        let key = KeyPair::generate()?;
        let cert = node_params(id, days, ip_of(id))?.signed_by(&key, &ca)?;
        fs::write(node_cert_path(out, id), cert.pem())?;
        write_private(&node_key_path(out, id), key.serialize_pem().as_bytes())?;
        paths.node_cert.push(node_cert_path(out, id));
        paths.node_key.push(node_key_path(out, id));
    }
    Ok(paths)
}

/// Issues a certificate for one more node from the CA in `dir` (its `ca.pem` and `ca.key`),
/// as needed before adding a node to a running cluster.
pub fn issue(dir: &Path, id: u64, days: i64) -> anyhow::Result<PathBuf> {
    issue_with_ip(dir, id, days, None)
}

/// Like [`issue`]; the certificate also names `ip`.
pub fn issue_with_ip(dir: &Path, id: u64, days: i64, ip: Option<IpAddr>) -> anyhow::Result<PathBuf> {
    anyhow::ensure!(id >= 1, "--node-id must be positive");
    let ca_pem =
        fs::read_to_string(ca_cert_path(dir)).with_context(|| format!("reading {}", ca_cert_path(dir).display()))?;
    let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.join("ca.key")).context("reading ca.key")?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let cert = node_params(id, days, ip)?.signed_by(&key, &issuer)?;
    fs::write(node_cert_path(dir, id), cert.pem())?;
    write_private(&node_key_path(dir, id), key.serialize_pem().as_bytes())?;
    Ok(node_cert_path(dir, id))
}

/// Issues a server certificate for `name` (plus localhost and loopback addresses) from the CA in
/// `dir`; returns (certificate PEM, private key PEM).
pub fn issue_pem(dir: &Path, name: &str, days: i64) -> anyhow::Result<(String, String)> {
    let ca_pem =
        fs::read_to_string(ca_cert_path(dir)).with_context(|| format!("reading {}", ca_cert_path(dir).display()))?;
    let ca_key = KeyPair::from_pem(&fs::read_to_string(dir.join("ca.key")).context("reading ca.key")?)?;
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let mut params = CertificateParams::new(vec![name.to_string(), "localhost".to_string()])?;
    params.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse()?));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let (y, m, d) = ymd(chrono::Utc::now() - chrono::Duration::days(1));
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = ymd(chrono::Utc::now() + chrono::Duration::days(days.max(1)));
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

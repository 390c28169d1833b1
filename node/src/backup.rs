//! `dermagate backup` and `dermagate restore`. A backup leaves the cluster already encrypted to
//! the operator's age recipients (`[backup] recipients`), so the file written here is exactly
//! what the node sent: never plaintext, on the wire or on disk. A restore decrypts it with the
//! operator's age identity and loads it into a new cluster through Raft. `dermagate backup-key`
//! makes an identity and prints its recipient.

use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use anyhow::{anyhow, bail, Context};

use crate::cluster_file::ClusterFile;
use crate::{certs, local};

async fn admin_token(file: &ClusterFile, client: &reqwest::Client) -> anyhow::Result<(String, String)> {
    let body = serde_json::json!({ "username": file.admin.username, "password": file.admin_password()? });
    let url = file.lb_url.clone().unwrap_or_else(|| file.nodes[0].api_url.clone());
    let resp = client.post(format!("{url}/v1/auth/login")).json(&body).send().await?;
    if !resp.status().is_success() {
        bail!("signing in as {} failed: {}", file.admin.username, resp.status());
    }
    let v: serde_json::Value = resp.json().await?;
    let token = v["access_token"].as_str().ok_or_else(|| anyhow!("no access token"))?.to_string();
    Ok((url, token))
}

/// A new age identity in `out` (mode 0600); returns its recipient (`age1...`).
pub fn new_identity(out: &Path) -> anyhow::Result<String> {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let text = format!("# created by dermagate\n# public key: {recipient}\n{}\n", identity.to_string().expose_secret());
    certs::write_private(out, text.as_bytes())?;
    Ok(recipient)
}

fn read_identity(path: &Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| anyhow!("{}: no age identity", path.display()))?;
    age::x25519::Identity::from_str(line).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Decrypts an age-encrypted backup with the operator's identity.
pub fn decrypt(identity_file: &Path, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    let identity = read_identity(identity_file)?;
    let decryptor = age::Decryptor::new(sealed).map_err(|e| anyhow!("not an age-encrypted dermagate backup: {e}"))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(&identity as &dyn age::Identity))
        .map_err(|_| anyhow!("the backup cannot be opened with this identity (wrong key or damaged file)"))?;
    let mut plain = Vec::new();
    reader.read_to_end(&mut plain).context("the backup is damaged")?;
    Ok(plain)
}

/// Exports the cluster of `dir` (its cluster.json) into `out`, as the node encrypted it.
pub async fn backup(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let file = ClusterFile::read(dir)?;
    let client = file.http_client()?;
    let (url, token) = admin_token(&file, &client).await?;
    let resp = client.get(format!("{url}/v1/cluster/backup")).bearer_auth(&token).send().await?;
    if !resp.status().is_success() {
        bail!("backup refused: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let index =
        resp.headers().get("x-dermagate-applied-index").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string();
    let data = resp.bytes().await?;
    certs::write_private(out, &data)?;
    println!("backup of {} bytes at applied index {index} written to {} (age-encrypted)", data.len(), out.display());
    Ok(())
}

/// Starts a new local cluster in `dir` and restores the backup into it.
pub async fn restore(backup_file: &Path, identity_file: &Path, dir: &Path, nodes: u64) -> anyhow::Result<()> {
    let sealed = std::fs::read(backup_file).with_context(|| format!("reading {}", backup_file.display()))?;
    let data = decrypt(identity_file, &sealed)?;
    if dir.join("cluster.json").exists() {
        bail!("{} already holds a cluster; restore into a new directory", dir.display());
    }
    local::up(dir, nodes, false, None).await?;
    let file = ClusterFile::read(dir)?;
    let client = file.http_client()?;
    let (url, token) = admin_token(&file, &client).await?;
    let resp = client.post(format!("{url}/v1/cluster/restore")).bearer_auth(&token).body(data).send().await?;
    if !resp.status().is_success() {
        bail!("restore refused: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let v: serde_json::Value = resp.json().await?;
    println!(
        "restored {} records and {} images into the cluster in {}",
        v["restoredRecords"],
        v["restoredBlobs"],
        dir.display()
    );
    println!("the users, passwords and client keys of the backup apply from now on");
    Ok(())
}

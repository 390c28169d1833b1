//! `dermagate backup` and `dermagate restore`: a consistent export of the replicated state of a
//! running cluster, sealed with AES-256-GCM under a key-encryption key file before it is written
//! (a backup holds personal data, so it is never plaintext on disk), and the restore of such a
//! file into a new cluster through Raft.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use anyhow::{anyhow, bail, Context};
use rand::RngCore;

use crate::cluster_file::ClusterFile;
use crate::{certs, local};

const MAGIC: &[u8; 8] = b"DGBACK01";
const AAD: &[u8] = b"dermagate-backup-v1";

fn cipher(kek_file: &Path) -> anyhow::Result<Aes256Gcm> {
    let text = std::fs::read_to_string(kek_file).with_context(|| format!("reading {}", kek_file.display()))?;
    let key =
        hex::decode(text.trim()).map_err(|_| anyhow!("{}: expected 64 hexadecimal characters", kek_file.display()))?;
    Aes256Gcm::new_from_slice(&key).map_err(|_| anyhow!("{}: expected a 32-byte key", kek_file.display()))
}

fn seal(kek_file: &Path, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let ct = cipher(kek_file)?
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: AAD })
        .map_err(|_| anyhow!("sealing the backup failed"))?;
    Ok([MAGIC.as_slice(), &nonce, &ct].concat())
}

fn open(kek_file: &Path, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    let body = sealed.strip_prefix(MAGIC.as_slice()).ok_or_else(|| anyhow!("not a dermagate backup file"))?;
    if body.len() < 12 {
        bail!("the backup file is truncated");
    }
    cipher(kek_file)?
        .decrypt(Nonce::from_slice(&body[..12]), Payload { msg: &body[12..], aad: AAD })
        .map_err(|_| anyhow!("the backup cannot be opened with this key (wrong key or damaged file)"))
}

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

/// Exports the cluster of `dir` (its cluster.json) into `out`, sealed under `kek_file`.
pub async fn backup(dir: &Path, out: &Path, kek_file: &Path) -> anyhow::Result<()> {
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
    certs::write_private(out, &seal(kek_file, &data)?)?;
    println!("backup of {} bytes at applied index {index} written to {} (sealed)", data.len(), out.display());
    Ok(())
}

/// Starts a new local cluster in `dir` and restores the backup into it.
pub async fn restore(backup_file: &Path, kek_file: &Path, dir: &Path, nodes: u64) -> anyhow::Result<()> {
    let data =
        open(kek_file, &std::fs::read(backup_file).with_context(|| format!("reading {}", backup_file.display()))?)?;
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
    println!("restored {} records into the cluster in {}", v["restored_records"], dir.display());
    println!("the users, passwords and client keys of the backup apply from now on");
    Ok(())
}

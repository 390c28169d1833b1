//! `cluster.json`: what `dermagate local up` started and how to reach it. Other tools and tests
//! read this file, so its field names are a contract.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub ca_cert: PathBuf,
    pub nodes: Vec<NodeEntry>,
    pub admin: AdminEntry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_url: Option<String>,
    /// The HAProxy process in front of the nodes (`local up --lb`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_pid: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeEntry {
    pub id: u64,
    pub api_url: String,
    pub raft_addr: String,
    pub metrics_url: String,
    pub pid: u32,
    pub data_dir: PathBuf,
    pub log_file: PathBuf,
    /// The node's configuration file, to restart it with `dermagate serve --config`.
    pub config: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminEntry {
    pub username: String,
    pub password_file: PathBuf,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

impl ClusterFile {
    pub fn read(dir: &Path) -> anyhow::Result<ClusterFile> {
        let p = path(dir);
        let text = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", p.display()))
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let p = path(dir);
        let tmp = p.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    pub fn admin_password(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.admin.password_file)?.trim().to_string())
    }

    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca_cert)?)?;
        Ok(reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(std::time::Duration::from_secs(10))
            .build()?)
    }
}

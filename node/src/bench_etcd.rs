//! The peer of `dermagate bench writes`: a 3-member etcd 3.4 cluster on loopback, run the way
//! production etcd runs (TLS on client and peer URLs, client certificates required on both, from
//! the same local CA as the dermagate cluster), so that replicated-write figures are compared
//! side by side in one run, on one machine, with one load generator.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine;

use crate::certs;

/// Running etcd members; dropped, they are stopped and their data removed.
pub(crate) struct EtcdCluster {
    _dir: tempfile::TempDir,
    children: Vec<Child>,
    pub client_urls: Vec<String>,
    pub client: reqwest::Client,
}

impl EtcdCluster {
    /// Starts `members` etcd members with certificates issued by the CA in `ca_dir` (its
    /// `ca.pem` and `ca.key`) and waits until every member answers `/health`.
    pub async fn start(ca_dir: &Path, members: u64) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("dermagate-bench-etcd.").tempdir()?;
        let pki = dir.path().join("pki");
        copy_ca(ca_dir, &pki)?;
        for id in 1..=members {
            certs::issue(&pki, id, 2)?;
        }
        let client_ports = free_ports(members as usize)?;
        let peer_ports = free_ports(members as usize)?;
        let initial_cluster = (1..=members)
            .map(|id| format!("m{id}=https://127.0.0.1:{}", peer_ports[id as usize - 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = EtcdCluster {
            children: Vec::new(),
            client_urls: client_ports.iter().map(|p| format!("https://127.0.0.1:{p}")).collect(),
            client: etcd_client(&pki)?,
            _dir: dir,
        };
        for id in 1..=members {
            let i = id as usize - 1;
            let child = spawn_member(cluster._dir.path(), &pki, id, client_ports[i], peer_ports[i], &initial_cluster)?;
            cluster.children.push(child);
        }
        cluster.wait_healthy(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let mut healthy = 0;
            for url in &self.client_urls {
                let ok = match self.client.get(format!("{url}/health")).send().await {
                    Ok(r) => r.json::<serde_json::Value>().await.is_ok_and(|v| v["health"] == "true"),
                    Err(_) => false,
                };
                healthy += usize::from(ok);
            }
            if healthy == self.client_urls.len() {
                return Ok(());
            }
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!("an etcd member exited during start-up ({status}); is etcd-server installed?");
                }
            }
            if Instant::now() > deadline {
                bail!("etcd did not become healthy within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            crate::process::terminate(child.id());
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
    }
}

/// One put through etcd's JSON gateway: a 32-byte key and a 256-byte value, base64 as the
/// gateway wants them.
pub(crate) async fn put_once(client: &reqwest::Client, url: &str, n: u64) -> Result<(), String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = format!("bench/{n:026}");
    let value = format!("{n:0>256}");
    let body = serde_json::json!({ "key": b64.encode(key), "value": b64.encode(value) });
    client
        .post(format!("{url}/v3/kv/put"))
        .json(&body)
        .send()
        .await
        .map_err(|e| crate::bench::failure_kind(&e))
        .and_then(|r| if r.status() == reqwest::StatusCode::OK { Ok(()) } else { Err(r.status().as_u16().to_string()) })
}

/// Whether the `etcd` binary (Debian `etcd-server`) is installed.
pub(crate) fn available() -> bool {
    Command::new("etcd").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

fn copy_ca(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    std::fs::copy(certs::ca_cert_path(from), certs::ca_cert_path(to)).context("copying the CA certificate")?;
    let key = std::fs::read(from.join("ca.key")).context("reading the CA key")?;
    certs::write_private(&to.join("ca.key"), &key)
}

/// The load generator's client: trusts only the local CA and presents a certificate from it,
/// because the members require client certificates.
fn etcd_client(pki: &Path) -> anyhow::Result<reqwest::Client> {
    let client_id = 99;
    certs::issue(pki, client_id, 2)?;
    let mut pem = std::fs::read(certs::node_cert_path(pki, client_id))?;
    pem.extend(std::fs::read(certs::node_key_path(pki, client_id))?);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(certs::ca_cert_path(pki))?)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(reqwest::Identity::from_pem(&pem)?)
        .http1_only()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(10))
        .build()?)
}

fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    // Held together so that the n ports differ; released just before etcd binds them.
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

fn spawn_member(
    dir: &Path,
    pki: &Path,
    id: u64,
    client_port: u16,
    peer_port: u16,
    initial_cluster: &str,
) -> anyhow::Result<Child> {
    let path = |p: PathBuf| p.to_string_lossy().into_owned();
    let (cert, key, ca) =
        (path(certs::node_cert_path(pki, id)), path(certs::node_key_path(pki, id)), path(certs::ca_cert_path(pki)));
    let client_url = format!("https://127.0.0.1:{client_port}");
    let peer_url = format!("https://127.0.0.1:{peer_port}");
    let log = std::fs::File::create(dir.join(format!("m{id}.log")))?;
    Command::new("etcd")
        .args(["--name", &format!("m{id}")])
        .args(["--data-dir", &path(dir.join(format!("m{id}.etcd")))])
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", initial_cluster, "--initial-cluster-state", "new"])
        .args(["--initial-cluster-token", "dermagate-bench"])
        .args(["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &ca, "--client-cert-auth"])
        .args(["--peer-cert-file", &cert, "--peer-key-file", &key, "--peer-trusted-ca-file", &ca])
        .arg("--peer-client-cert-auth")
        .args(["--logger", "zap", "--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")
}

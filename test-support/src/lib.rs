//! The one test-cluster helper every integration test shares: real `dermagate` node processes
//! on loopback, started with `dermagate local up`, with real TLS and real RocksDB, plus the
//! operations tests need (kill, stop, restart, pause, add a node) and HTTP helpers.

pub mod app;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Cluster tests share the machine's two cores; running them one at a time keeps timings sane.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

/// Logs a test phase, so a failing test's output reads as a story.
pub fn phase(name: &str) {
    eprintln!("\n=== phase: {name} ===");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterFile {
    pub ca_cert: PathBuf,
    pub nodes: Vec<NodeEntry>,
    pub admin: AdminEntry,
    #[serde(default)]
    pub lb_url: Option<String>,
    #[serde(default)]
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
    pub config: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdminEntry {
    pub username: String,
    pub password_file: PathBuf,
}

/// The `dermagate` binary under test: `DERMAGATE_BIN`, or the one built next to the test.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("DERMAGATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // A binary of the workspace (target/<profile>/dermagate-chaos) sits next to it; a test
    // binary (target/<profile>/deps/<test>) one level below.
    let dir = exe.parent().expect("target dir");
    let sibling = dir.join("dermagate");
    if sibling.is_file() {
        return sibling;
    }
    dir.parent().map(|p| p.join("dermagate")).expect("target dir")
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub file: ClusterFile,
    pub client: reqwest::Client,
    /// Nodes restarted by this helper are its children, so their exit status can be read.
    children: Vec<(u64, Child)>,
    env: Vec<(String, String)>,
}

/// How [`TestCluster::start_opts`] starts a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    pub nodes: u64,
    /// Extra `DERMAGATE_*` settings for every node.
    pub env: Vec<(String, String)>,
    /// HAProxy in front (`local up --lb`); see `file.lb_url`.
    pub lb: bool,
    /// One loopback address per node from this base (`local up --addr-base`), so faults can
    /// target the link between two nodes.
    pub addr_base: Option<std::net::Ipv4Addr>,
}

impl TestCluster {
    /// Starts a cluster of `nodes` with extra `DERMAGATE_*` settings for every node.
    pub async fn start(nodes: u64, env: &[(&str, &str)]) -> anyhow::Result<TestCluster> {
        TestCluster::start_opts(ClusterOptions { nodes, env: owned(env), ..Default::default() }).await
    }

    /// Like [`TestCluster::start`], with HAProxy in front (`local up --lb`); see `file.lb_url`.
    pub async fn start_with_lb(nodes: u64, env: &[(&str, &str)]) -> anyhow::Result<TestCluster> {
        TestCluster::start_opts(ClusterOptions { nodes, env: owned(env), lb: true, ..Default::default() }).await
    }

    pub async fn start_opts(opts: ClusterOptions) -> anyhow::Result<TestCluster> {
        let ClusterOptions { nodes, env, lb, addr_base } = opts;
        let dir = tempfile::Builder::new().prefix("dermagate-test-").tempdir()?;
        let started = Instant::now();
        let mut args = vec!["local".to_string(), "up".into(), "--nodes".into(), nodes.to_string()];
        if lb {
            args.push("--lb".into());
        }
        if let Some(base) = addr_base {
            args.push("--addr-base".into());
            args.push(base.to_string());
        }
        let out = Command::new(binary())
            .args(&args)
            .arg("--dir")
            .arg(dir.path())
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .output()
            .context("running dermagate local up")?;
        let file: Option<ClusterFile> =
            std::fs::read(dir.path().join("cluster.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if !out.status.success() {
            if let Some(f) = &file {
                kill_all(f.nodes.iter().map(|n| n.pid));
            }
            bail!(
                "local up failed: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let file = file.context("cluster.json missing after local up")?;
        eprintln!("cluster of {nodes} up in {:?} at {}", started.elapsed(), dir.path().display());
        let client = http_client(&file.ca_cert)?;
        Ok(TestCluster { dir, file, client, children: Vec::new(), env })
    }

    /// Takes charge of a cluster another command started in `dir` (its cluster.json).
    pub fn adopt(dir: tempfile::TempDir) -> anyhow::Result<TestCluster> {
        let file: ClusterFile = serde_json::from_slice(&std::fs::read(dir.path().join("cluster.json"))?)?;
        let client = http_client(&file.ca_cert)?;
        Ok(TestCluster { dir, file, client, children: Vec::new(), env: Vec::new() })
    }

    /// The address node `id` listens on and connects out from.
    pub fn ip(&self, id: u64) -> std::net::IpAddr {
        let url = &self.node(id).api_url;
        let host = url.trim_start_matches("https://").rsplit_once(':').map_or(url.as_str(), |(h, _)| h);
        host.trim_matches(['[', ']']).parse().expect("node api_url holds an IP address")
    }

    /// The log file of node `id`.
    pub fn log(&self, id: u64) -> &Path {
        &self.node(id).log_file
    }

    pub fn node(&self, id: u64) -> &NodeEntry {
        self.file.nodes.iter().find(|n| n.id == id).expect("node id in cluster")
    }

    pub fn ids(&self) -> Vec<u64> {
        self.file.nodes.iter().map(|n| n.id).collect()
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}{}", self.node(id).api_url, path)
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(&self.file.admin.password_file).expect("admin password file").trim().to_string()
    }

    /// Signs in as the bootstrap administrator on node `id` and returns the access token.
    pub async fn admin_token(&self, id: u64) -> anyhow::Result<String> {
        self.login(id, &self.file.admin.username, &self.admin_password()).await
    }

    pub async fn login(&self, id: u64, username: &str, password: &str) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(self.url(id, "/v1/auth/login"))
            .json(&json!({ "username": username, "password": password }))
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("login on node {id} failed: {status} {body}");
        }
        body["access_token"].as_str().map(String::from).ok_or_else(|| anyhow!("no access_token: {body}"))
    }

    /// The node's own view from `/livez` (no credentials needed).
    pub async fn health(&self, id: u64) -> Option<Value> {
        let r = self.client.get(self.url(id, "/livez")).timeout(Duration::from_secs(2)).send().await.ok()?;
        r.json().await.ok()
    }

    pub async fn is_ready(&self, id: u64) -> bool {
        self.client
            .get(self.url(id, "/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// The leader as seen by the given nodes, once they agree on one (polls until `timeout`).
    pub async fn leader_among(&self, ids: &[u64], timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for id in ids {
                if let Some(h) = self.health(*id).await {
                    seen.push(h["leaderId"].as_u64());
                }
            }
            if let Some(Some(l)) = seen.first() {
                if seen.len() == ids.len() && seen.iter().all(|s| *s == Some(*l)) && ids.contains(l) {
                    return Ok(*l);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader among {ids:?} within {timeout:?}: {seen:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn leader(&self) -> anyhow::Result<u64> {
        self.leader_among(&self.ids(), Duration::from_secs(20)).await
    }

    pub async fn wait_ready(&self, id: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.is_ready(id).await {
            if Instant::now() > deadline {
                bail!("node {id} not ready within {timeout:?}; log: {}", self.node(id).log_file.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub fn pid(&self, id: u64) -> u32 {
        self.node(id).pid
    }

    fn signal(&self, id: u64, sig: Signal) {
        let _ = signal::kill(Pid::from_raw(self.pid(id) as i32), sig);
    }

    pub fn kill(&mut self, id: u64) {
        self.signal(id, Signal::SIGKILL);
        self.reap(id, Duration::from_secs(10));
    }

    pub fn pause(&self, id: u64) {
        self.signal(id, Signal::SIGSTOP);
    }

    pub fn resume(&self, id: u64) {
        self.signal(id, Signal::SIGCONT);
    }

    /// SIGTERM and wait for the process to end; returns its exit status when it is our child.
    pub fn stop(&mut self, id: u64) -> Option<ExitStatus> {
        self.signal(id, Signal::SIGTERM);
        self.reap(id, Duration::from_secs(30))
    }

    fn reap(&mut self, id: u64, timeout: Duration) -> Option<ExitStatus> {
        let pid = self.pid(id);
        if let Some(pos) = self.children.iter().position(|(n, c)| *n == id && c.id() == pid) {
            let (_, mut child) = self.children.remove(pos);
            let deadline = Instant::now() + timeout;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status);
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    return child.wait().ok();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let deadline = Instant::now() + timeout;
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Starts node `id` again on its data directory, as a child of the test.
    pub fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        let node = self.node(id).clone();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log_file)?;
        let child = Command::new(binary())
            .arg("serve")
            .arg("--config")
            .arg(&node.config)
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        self.children.push((id, child));
        self.file.nodes.iter_mut().find(|n| n.id == id).expect("node").pid = pid;
        Ok(())
    }

    /// Writes a config for a new node `id` (certificate issued from the cluster CA) and starts it.
    /// It joins nothing by itself: add it with `POST /v1/cluster/nodes`.
    pub fn spawn_new_node(&mut self, id: u64) -> anyhow::Result<NodeEntry> {
        let root = self.dir.path().to_path_buf();
        let certs = root.join("certs");
        let out = Command::new(binary())
            .args(["certs", "issue", "--node-id", &id.to_string(), "--dir"])
            .arg(&certs)
            .output()?;
        if !out.status.success() {
            bail!("certs issue failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let node_dir = root.join(format!("node{id}"));
        std::fs::create_dir_all(node_dir.join("data"))?;
        let kek = Command::new(binary()).args(["kek", "--out"]).arg(node_dir.join("kek.key")).output()?;
        if !kek.status.success() {
            bail!("kek generation failed");
        }
        let ports: Vec<u16> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").map(|l| l.local_addr().map(|a| a.port())))
            .collect::<Result<Result<_, _>, _>>()??;
        // The public URL is the cluster's (the token issuer): the same on every node.
        let first = std::fs::read_to_string(&self.file.nodes[0].config)?;
        let public_url = first
            .lines()
            .find_map(|l| l.strip_prefix("public_url = \"")?.strip_suffix('"').map(String::from))
            .context("public_url of node 1")?;
        let config = format!(
            "version = 1\nnode_id = {id}\ndata_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{a}\"\npublic_url = \"{public_url}\"\nadvertise_url = \"https://127.0.0.1:{a}\"\n\
             [raft]\nlisten = \"127.0.0.1:{r}\"\nadvertise = \"127.0.0.1:{r}\"\n[tls]\nca_file = \"{ca}\"\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n\
             [storage]\nkek_file = \"{kek}\"\n[metrics]\nlisten = \"127.0.0.1:{m}\"\n",
            data = node_dir.join("data").display(),
            a = ports[0],
            r = ports[1],
            m = ports[2],
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("node{id}.pem")).display(),
            key = certs.join(format!("node{id}.key")).display(),
            kek = node_dir.join("kek.key").display(),
        );
        let config_path = node_dir.join("node.toml");
        std::fs::write(&config_path, config)?;
        let entry = NodeEntry {
            id,
            api_url: format!("https://127.0.0.1:{}", ports[0]),
            raft_addr: format!("127.0.0.1:{}", ports[1]),
            metrics_url: format!("http://127.0.0.1:{}/metrics", ports[2]),
            pid: 0,
            data_dir: node_dir.join("data"),
            log_file: root.join("logs").join(format!("node{id}.log")),
            config: config_path,
        };
        self.file.nodes.push(entry.clone());
        self.restart(id)?;
        Ok(entry)
    }

    /// Forgets a node that was removed from the cluster (after stopping it).
    pub fn forget(&mut self, id: u64) {
        self.file.nodes.retain(|n| n.id != id);
    }

    pub async fn get(&self, id: u64, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.client.get(self.url(id, path)).bearer_auth(token).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn post(&self, id: u64, path: &str, token: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let r = self.client.post(self.url(id, path)).bearer_auth(token).json(body).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn delete(&self, id: u64, path: &str, token: &str) -> anyhow::Result<(u16, Value)> {
        let r = self.client.delete(self.url(id, path)).bearer_auth(token).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Creates an organisation through node `id`; returns the HTTP status and its id if created.
    pub async fn create_org(&self, id: u64, token: &str, name: &str) -> anyhow::Result<(u16, Option<String>)> {
        let body = json!({ "name": name, "attestation": { "contractReference": format!("contract-{name}"), "attestedBy": "test" } });
        let (status, v) = self.post(id, "/v1/organizations", token, &body).await?;
        Ok((status, v["id"].as_str().map(String::from)))
    }

    /// Polls until `GET path` on node `id` answers 200, or fails after `timeout`.
    pub async fn wait_found(&self, id: u64, path: &str, token: &str, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.get(id, path, token).await {
                Ok((200, v)) => return Ok(v),
                other => {
                    if Instant::now() > deadline {
                        bail!("GET {path} on node {id} not found within {timeout:?}: {other:?}");
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A value of a metric (first series whose line starts with `prefix`) on node `id`.
    pub async fn metric(&self, id: u64, prefix: &str) -> Option<f64> {
        let text = self.client.get(&self.node(id).metrics_url).send().await.ok()?.text().await.ok()?;
        text.lines().filter(|l| l.starts_with(prefix)).find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        kill_all(self.file.nodes.iter().map(|n| n.pid).chain(self.file.lb_pid));
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn kill_all(pids: impl Iterator<Item = u32>) {
    for pid in pids {
        // Resume first, in case a test left a node paused; then kill it.
        let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        let _ = signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next());
    !stat.is_empty() && state != Some("Z")
}

pub fn http_client(ca: &Path) -> anyhow::Result<reqwest::Client> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca)?)?;
    Ok(reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(15))
        .build()?)
}

fn owned(env: &[(&str, &str)]) -> Vec<(String, String)> {
    env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Unique names for test data.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

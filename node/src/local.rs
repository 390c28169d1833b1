//! `dermagate local up|down`: a cluster of real node processes on loopback with HTTPS, mTLS Raft
//! and encrypted storage, for trying the product and for tests. Starting again on the same
//! directory resumes the same cluster with its data.

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use dermagate_storage::Kek;
use rand::distr::{Alphanumeric, SampleString};

use crate::certs;
use crate::cluster_file::{AdminEntry, ClusterFile, NodeEntry};
use crate::{lb, process};

pub const ADMIN_USERNAME: &str = "admin";

/// Where one node listens: its own address (loopback by default) and three free ports on it.
struct Ports {
    ip: IpAddr,
    api: u16,
    raft: u16,
    metrics: u16,
}

/// The address of node `id`: `base` plus `id - 1` in the last octet, or 127.0.0.1 without a base.
/// Giving every node its own loopback address lets a firewall rule (the chaos suite's) cut the
/// link between two nodes exactly, since each node also connects out from its own address.
pub fn node_ip(base: Option<Ipv4Addr>, id: u64) -> anyhow::Result<IpAddr> {
    let Some(base) = base else { return Ok(IpAddr::from([127, 0, 0, 1])) };
    let [a, b, c, d] = base.octets();
    let last = u64::from(d) + id - 1;
    anyhow::ensure!(last <= 254, "--addr-base {base} leaves no address for node {id}");
    Ok(IpAddr::from([a, b, c, last as u8]))
}

/// Free ports on each node's address, all reserved at once so they differ from each other.
fn free_ports(ips: &[IpAddr]) -> anyhow::Result<Vec<Ports>> {
    let mut held = Vec::new();
    let mut out = Vec::new();
    for ip in ips {
        let listeners: Vec<TcpListener> =
            (0..3).map(|_| TcpListener::bind((*ip, 0))).collect::<Result<_, _>>().with_context(|| {
                format!("cannot bind {ip}: on Linux every 127.0.0.0/8 address is local; elsewhere add it to lo")
            })?;
        let p: Vec<u16> = listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<_, _>>()?;
        out.push(Ports { ip: *ip, api: p[0], raft: p[1], metrics: p[2] });
        held.extend(listeners);
    }
    Ok(out)
}

/// `host:port` with brackets around IPv6 hosts.
fn host_port(ip: IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(ip, port).to_string()
}

fn node_dir(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("node{id}"))
}

fn config_path(dir: &Path, id: u64) -> PathBuf {
    node_dir(dir, id).join("node.toml")
}

/// The operator's age identity of a local cluster: backups are encrypted to it.
pub const BACKUP_IDENTITY: &str = "backup-identity.txt";
/// The ports reserved for the load balancer (API and statistics), written once.
const LB_PORTS: &str = "lb-ports";

fn node_config(dir: &Path, id: u64, ports: &[Ports], members: &str, recipient: &str) -> String {
    let p = &ports[(id - 1) as usize];
    let nd = node_dir(dir, id);
    let certs = dir.join("certs");
    let bootstrap = if id == 1 {
        format!(
            "bootstrap = true\n{members}\n[cluster.bootstrap_admin]\nusername = \"{ADMIN_USERNAME}\"\npassword_file = \"{}\"\n",
            dir.join("admin-password").display()
        )
    } else {
        "bootstrap = false\n".to_string()
    };
    format!(
        r#"# dermagate node {id}, written by `dermagate local up`.
version = 1
node_id = {id}
data_dir = "{data}"

[api]
listen = "{api}"
# The cluster's public URL: the load balancer's with --lb, else node 1's (set at each `up`).
public_url = "https://{api}"
advertise_url = "https://{api}"

[raft]
listen = "{raft}"
advertise = "{raft}"

[tls]
ca_file = "{ca}"
cert_file = "{cert}"
key_file = "{key}"

[storage]
kek_file = "{kek}"

[metrics]
listen = "{metrics}"

[backup]
# The operator's age identity is {identity} (made by `local up`).
recipients = ["{recipient}"]

[cluster]
{bootstrap}"#,
        identity = dir.join(BACKUP_IDENTITY).display(),
        data = nd.join("data").display(),
        api = host_port(p.ip, p.api),
        raft = host_port(p.ip, p.raft),
        metrics = host_port(p.ip, p.metrics),
        ca = certs::ca_cert_path(&certs).display(),
        cert = certs::node_cert_path(&certs, id).display(),
        key = certs::node_key_path(&certs, id).display(),
        kek = nd.join("kek.key").display(),
    )
}

fn members_toml(ports: &[Ports]) -> String {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[[cluster.initial_members]]\nid = {}\nraft_addr = \"{}\"\napi_url = \"https://{}\"\n",
                i + 1,
                host_port(p.ip, p.raft),
                host_port(p.ip, p.api)
            )
        })
        .collect()
}

/// Writes certificates, keys, the admin password and one config per node (first start only).
fn prepare(dir: &Path, nodes: u64, addr_base: Option<Ipv4Addr>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ips: Vec<IpAddr> = (1..=nodes).map(|id| node_ip(addr_base, id)).collect::<anyhow::Result<_>>()?;
    certs::init_with_ips(&dir.join("certs"), nodes, "dermagate local cluster CA", 365, |id| {
        ips.get((id - 1) as usize).copied()
    })?;
    let password = Alphanumeric.sample_string(&mut rand::rng(), 24);
    certs::write_private(&dir.join("admin-password"), password.as_bytes())?;
    let ports = free_ports(&ips)?;
    let lb = free_ports(&[IpAddr::from([127, 0, 0, 1])])?;
    std::fs::write(dir.join(LB_PORTS), format!("{} {}\n", lb[0].api, lb[0].metrics))?;
    let recipient = crate::backup::new_identity(&dir.join(BACKUP_IDENTITY))?;
    let members = members_toml(&ports);
    for id in 1..=nodes {
        let nd = node_dir(dir, id);
        std::fs::create_dir_all(nd.join("data"))?;
        certs::write_private(&nd.join("kek.key"), Kek::generate_hex().as_bytes())?;
        std::fs::write(config_path(dir, id), node_config(dir, id, &ports, &members, &recipient))?;
    }
    Ok(())
}

/// The load balancer's (API, statistics) ports of the cluster in `dir`.
fn lb_ports(dir: &Path) -> anyhow::Result<(u16, u16)> {
    let text = std::fs::read_to_string(dir.join(LB_PORTS)).context("reading the reserved load-balancer ports")?;
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    match (it.next(), it.next()) {
        (Some(Ok(api)), Some(Ok(stats))) => Ok((api, stats)),
        _ => bail!("{} is malformed", dir.join(LB_PORTS).display()),
    }
}

/// Points every node's `api.public_url` at `url` (the same on every node: it is the issuer).
fn set_public_url(dir: &Path, count: u64, url: &str) -> anyhow::Result<()> {
    for id in 1..=count {
        let path = config_path(dir, id);
        let text = std::fs::read_to_string(&path)?;
        let rewritten: Vec<String> = text
            .lines()
            .map(|l| if l.starts_with("public_url = ") { format!("public_url = \"{url}\"") } else { l.to_string() })
            .collect();
        std::fs::write(&path, rewritten.join("\n") + "\n")?;
    }
    Ok(())
}

fn entry_for(dir: &Path, id: u64, pid: u32) -> anyhow::Result<NodeEntry> {
    let cfg = crate::config::NodeConfig::load(&config_path(dir, id)).map_err(|e| anyhow!("{e}"))?;
    Ok(NodeEntry {
        id,
        api_url: cfg.api.advertise_url.clone().unwrap_or_else(|| cfg.api.public_url.clone()),
        raft_addr: cfg.raft.advertise.clone(),
        metrics_url: cfg.metrics.listen.map(|a| format!("http://{a}/metrics")).unwrap_or_default(),
        pid,
        data_dir: cfg.data_dir.clone(),
        log_file: log_path(dir, id),
        config: config_path(dir, id),
    })
}

pub fn log_path(dir: &Path, id: u64) -> PathBuf {
    dir.join("logs").join(format!("node{id}.log"))
}

/// Starts `dermagate serve` for node `id` in its own process group, logging to its log file.
pub fn spawn_node(dir: &Path, id: u64) -> anyhow::Result<u32> {
    std::fs::create_dir_all(dir.join("logs"))?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path(dir, id))?;
    let exe = std::env::current_exe().context("locating the dermagate binary")?;
    let child = process::detached(
        Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(config_path(dir, id))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .spawn()
    .with_context(|| format!("starting node {id}"))?;
    Ok(child.id())
}

fn node_count(dir: &Path) -> u64 {
    (1..).take_while(|id| config_path(dir, *id).is_file()).count() as u64
}

pub async fn up(dir: &Path, nodes: u64, with_lb: bool, addr_base: Option<Ipv4Addr>) -> anyhow::Result<()> {
    let with_lb_asked = with_lb;
    if !(1..=9).contains(&nodes) {
        bail!("--nodes must be between 1 and 9");
    }
    let dir = std::path::absolute(dir)?;
    if let Ok(existing) = ClusterFile::read(&dir) {
        if existing.nodes.iter().any(|n| process::is_alive(n.pid)) {
            bail!(
                "a cluster is already running in {} (run `dermagate local down --dir {}` first)",
                dir.display(),
                dir.display()
            );
        }
    }
    let count = if config_path(&dir, 1).is_file() {
        println!("resuming the cluster in {}", dir.display());
        node_count(&dir)
    } else {
        prepare(&dir, nodes, addr_base)?;
        nodes
    };
    let with_lb = with_lb && lb::haproxy_installed();
    let lb_url = match lb_ports(&dir) {
        Ok((port, _)) if with_lb => Some(format!("https://127.0.0.1:{port}")),
        _ => None,
    };
    let node1 = crate::config::NodeConfig::load(&config_path(&dir, 1)).map_err(|e| anyhow!("{e}"))?;
    let own = node1.api.advertise_url.clone().unwrap_or_else(|| node1.api.public_url.clone());
    set_public_url(&dir, count, lb_url.as_deref().unwrap_or(&own))?;
    let mut entries = Vec::new();
    for id in 1..=count {
        let pid = spawn_node(&dir, id)?;
        entries.push(entry_for(&dir, id, pid)?);
    }
    let mut file = ClusterFile {
        ca_cert: certs::ca_cert_path(&dir.join("certs")),
        nodes: entries,
        admin: AdminEntry { username: ADMIN_USERNAME.into(), password_file: dir.join("admin-password") },
        lb_url: None,
        lb_pid: None,
    };
    file.write(&dir)?;
    wait_until_serving(&file, Duration::from_secs(90)).await?;
    if lb_url.is_some() {
        start_balancer(&dir, &mut file).await?;
    } else if with_lb_asked {
        eprintln!("warning: haproxy is not installed; the cluster runs without a load balancer");
    }
    print_summary(&dir, &file);
    Ok(())
}

async fn start_balancer(dir: &Path, file: &mut ClusterFile) -> anyhow::Result<()> {
    let (port, stats) = lb_ports(dir)?;
    let balancer = lb::start(dir, file, port, stats)?;
    file.lb_url = Some(balancer.url.clone());
    file.lb_pid = Some(balancer.pid);
    file.write(dir)?;
    let client = file.http_client()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = client.get(format!("{}/readyz", balancer.url)).send().await.is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline || !process::is_alive(balancer.pid) {
            bail!("haproxy did not become ready; see {}", dir.join("logs/haproxy.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every node is ready and the bootstrap administrator can sign in.
pub async fn wait_until_serving(file: &ClusterFile, timeout: Duration) -> anyhow::Result<()> {
    let client = file.http_client()?;
    let deadline = Instant::now() + timeout;
    for node in &file.nodes {
        loop {
            let ready =
                client.get(format!("{}/readyz", node.api_url)).send().await.is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if !process::is_alive(node.pid) {
                bail!("node {} exited during start-up; see {}", node.id, node.log_file.display());
            }
            if Instant::now() > deadline {
                bail!("node {} not ready after {:?}; see {}", node.id, timeout, node.log_file.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let body = serde_json::json!({ "username": file.admin.username, "password": file.admin_password()? });
    loop {
        let url = format!("{}/v1/auth/login", file.nodes[0].api_url);
        if client.post(url).json(&body).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the bootstrap administrator cannot sign in after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_summary(dir: &Path, file: &ClusterFile) {
    println!("dermagate local cluster is up ({} nodes):", file.nodes.len());
    for n in &file.nodes {
        println!("  node {}  api {}  raft {}  metrics {}  pid {}", n.id, n.api_url, n.raft_addr, n.metrics_url, n.pid);
    }
    if let Some(lb) = &file.lb_url {
        println!("  load balancer (HAProxy) {lb}  pid {}", file.lb_pid.unwrap_or(0));
    }
    let api = file.lb_url.as_ref().unwrap_or(&file.nodes[0].api_url);
    let ca = file.ca_cert.display();
    println!("\ncluster file: {}", crate::cluster_file::path(dir).display());
    println!("admin user:   {} (password in {})", file.admin.username, file.admin.password_file.display());
    println!("\nTry it:");
    println!("  curl --cacert {ca} {api}/readyz");
    println!(
        "  TOKEN=$(curl -s --cacert {ca} {api}/v1/auth/login -H 'Content-Type: application/json' \\\n      -d \"{{\\\"username\\\":\\\"admin\\\",\\\"password\\\":\\\"$(cat {})\\\"}}\" | sed 's/.*\"access_token\":\"\\([^\"]*\\)\".*/\\1/')",
        file.admin.password_file.display()
    );
    println!("  curl --cacert {ca} -H \"Authorization: Bearer $TOKEN\" {api}/v1/cluster");
    println!("\nStop it with: dermagate local down --dir {}", dir.display());
}

pub async fn down(dir: &Path) -> anyhow::Result<()> {
    let file = ClusterFile::read(dir)?;
    let balancer = file.lb_pid.filter(|p| lb::is_haproxy(*p));
    let pids: Vec<u32> =
        file.nodes.iter().map(|n| n.pid).filter(|p| process::is_dermagate(*p)).chain(balancer).collect();
    for pid in &pids {
        process::terminate(*pid);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|p| process::is_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for pid in pids.iter().filter(|p| process::is_alive(**p)) {
        eprintln!("node pid {pid} did not stop in time; killing it");
        process::kill(*pid);
    }
    let nodes = pids.len() - usize::from(balancer.is_some());
    println!("stopped {nodes} node(s) in {} (data kept; `local up` resumes it)", dir.display());
    Ok(())
}

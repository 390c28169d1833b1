//! The HAProxy load balancer of a local cluster (`dermagate local up --lb`): renders the
//! template of `deploy/haproxy/` (embedded in the binary) for the cluster's nodes, issues the
//! balancer's certificate from the cluster CA, and runs `haproxy` when it is installed.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::cluster_file::ClusterFile;
use crate::{certs, process};

const TEMPLATE: &str = include_str!("../../deploy/haproxy/haproxy.cfg.tmpl");
const HEADER_END: &str = "# ---- end of header ----\n";

pub struct Balancer {
    pub url: String,
    pub pid: u32,
}

pub fn haproxy_installed() -> bool {
    Command::new("haproxy").arg("-v").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Fills the template's placeholders; every one must be used and none left over.
pub fn render(
    lb_bind: &str,
    lb_cert_pem: &Path,
    ca_cert: &Path,
    stats_bind: &str,
    file: &ClusterFile,
) -> anyhow::Result<String> {
    let body = TEMPLATE.split_once(HEADER_END).map_or(TEMPLATE, |(_, body)| body);
    let servers: String = file
        .nodes
        .iter()
        .map(|n| {
            let host_port = n.api_url.trim_start_matches("https://");
            format!("    server node{} {} verifyhost node-{}.dermagate\n", n.id, host_port, n.id)
        })
        .collect();
    let rendered = body
        .replace("{{LB_BIND}}", lb_bind)
        .replace("{{LB_CERT_PEM}}", &lb_cert_pem.display().to_string())
        .replace("{{CA_CERT}}", &ca_cert.display().to_string())
        .replace("{{STATS_BIND}}", stats_bind)
        .replace("{{SERVERS}}", servers.trim_end());
    if rendered.contains("{{") {
        bail!("the HAProxy template has an unfilled placeholder");
    }
    Ok(rendered)
}

/// Starts HAProxy in front of the cluster described by `file`; returns its URL and pid.
pub fn start(dir: &Path, file: &ClusterFile, lb_port: u16, stats_port: u16) -> anyhow::Result<Balancer> {
    let certs_dir = dir.join("certs");
    let lb_pem = certs_dir.join("lb.pem");
    if !lb_pem.is_file() {
        let (cert, key) = certs::issue_pem(&certs_dir, "lb.dermagate", 365)?;
        certs::write_private(&lb_pem, format!("{cert}{key}").as_bytes())?;
    }
    let config = dir.join("haproxy.cfg");
    let text =
        render(&format!("127.0.0.1:{lb_port}"), &lb_pem, &file.ca_cert, &format!("127.0.0.1:{stats_port}"), file)?;
    std::fs::write(&config, text)?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("logs").join("haproxy.log"))?;
    let child = process::detached(
        Command::new("haproxy")
            .args(["-W", "-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )
    .spawn()
    .context("starting haproxy")?;
    Ok(Balancer { url: format!("https://127.0.0.1:{lb_port}"), pid: child.id() })
}

pub fn is_haproxy(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("haproxy"))
        .unwrap_or(false)
}

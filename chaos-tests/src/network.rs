//! Network faults between nodes with nftables, in a table of the suite's own. Every node has its
//! own loopback address and connects out from it (`local up --addr-base`), so a rule on
//! (source address, destination address) cuts exactly one direction of one link; port rules
//! would not, because outgoing connections come from ephemeral ports.
//!
//! The table is created when a [`Firewall`] is made and deleted when it is dropped (also while a
//! panic unwinds); [`Firewall::remove_stale`] deletes one a killed run left behind, and the
//! runner deletes it on Ctrl-C before exiting.

use std::net::IpAddr;
use std::process::Command;

use anyhow::{bail, Context};

/// The suite's own nftables table (family `inet`).
pub const TABLE: &str = "dermagate_chaos";

pub struct Firewall {
    rules: Vec<String>,
}

impl Firewall {
    /// Creates the table with an empty output chain (loopback packets all pass `output`).
    pub fn new() -> anyhow::Result<Firewall> {
        Firewall::remove_stale();
        nft(&format!(
            "add table inet {TABLE}\nadd chain inet {TABLE} faults {{ type filter hook output priority 0; policy accept; }}"
        ))
        .context("creating the chaos nftables table (needs root and nftables)")?;
        Ok(Firewall { rules: Vec::new() })
    }

    /// Deletes the table if a previous run left it (nothing happens when there is none).
    pub fn remove_stale() {
        let _ = Command::new("nft").args(["delete", "table", "inet", TABLE]).output();
    }

    /// Drops every packet from `from` to `to` (one direction of one link).
    pub fn drop_direction(&mut self, from: IpAddr, to: IpAddr) -> anyhow::Result<()> {
        self.add(format!("ip saddr {from} ip daddr {to} drop"))
    }

    /// Cuts a link both ways.
    pub fn cut(&mut self, a: IpAddr, b: IpAddr) -> anyhow::Result<()> {
        self.drop_direction(a, b)?;
        self.drop_direction(b, a)
    }

    /// Separates `group` from `rest` entirely.
    pub fn partition(&mut self, group: &[IpAddr], rest: &[IpAddr]) -> anyhow::Result<()> {
        for a in group {
            for b in rest {
                self.cut(*a, *b)?;
            }
        }
        Ok(())
    }

    /// Drops `percent` % of the packets from `from` to `to`, at random.
    pub fn lose(&mut self, from: IpAddr, to: IpAddr, percent: u32) -> anyhow::Result<()> {
        anyhow::ensure!(percent <= 100, "loss above 100%");
        self.add(format!("ip saddr {from} ip daddr {to} numgen random mod 100 < {percent} drop"))
    }

    /// Removes every fault (the table stays, empty).
    pub fn heal(&mut self) -> anyhow::Result<()> {
        if !self.rules.is_empty() {
            nft(&format!("flush chain inet {TABLE} faults"))?;
            self.rules.clear();
        }
        Ok(())
    }

    /// The rules in force, as nftables prints them (for the report and debugging).
    pub fn rules(&self) -> &[String] {
        &self.rules
    }

    fn add(&mut self, rule: String) -> anyhow::Result<()> {
        nft(&format!("add rule inet {TABLE} faults {rule}"))?;
        self.rules.push(rule);
        Ok(())
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        Firewall::remove_stale();
    }
}

/// Runs an nftables script (`nft -f -`).
fn nft(script: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (is nftables installed?)")?;
    child.stdin.take().context("nft stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft failed: {}\nscript:\n{script}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

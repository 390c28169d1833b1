//! `dermagate-chaos`: runs one chaos profile against real nodes and writes its report. Exits 1
//! when the verdict is "fail" (a safety property broken, a fault not healed, an election where
//! none should be). Needs root (nftables, tmpfs) and HAProxy. Ctrl-C removes the firewall table,
//! stops the nodes and unmounts the small disk before exiting.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use dermagate_chaos_tests::network::Firewall;
use dermagate_chaos_tests::runner::{run, Profile, RunOptions};

#[derive(Parser)]
#[command(name = "dermagate-chaos", about = "fault injection against a real dermagate cluster")]
struct Args {
    /// ci (one fault of each class, ~5 min), soak (random schedule with a leader kill every
    /// 15 s, 30 min), kills (a leader kill every 15 s).
    #[arg(long, default_value = "ci")]
    profile: String,
    /// Seed of every random choice; printed first, so a failing schedule replays exactly.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest the fault schedule may run, in seconds (default: the profile's).
    #[arg(long)]
    duration_s: Option<u64>,
    /// Where `<UTC time>/report.json`, `report.md` and `availability.png` go.
    #[arg(long, default_value = "chaos-report")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let profile = Profile::parse(&args.profile)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let duration = args.duration_s.map(Duration::from_secs).unwrap_or_else(|| profile.default_duration());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let outcome = rt.block_on(async {
        tokio::select! {
            report = run(RunOptions { profile, seed, duration, out: args.out }) => Some(report),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    Firewall::remove_stale();
    let Some(report) = outcome else {
        eprintln!("interrupted; firewall rules removed, nodes stopped (seed {seed})");
        std::process::exit(130);
    };
    let report = report.with_context(|| format!("chaos run failed to complete (seed {seed})"))?;
    let mut safety = serde_json::to_value(&report.safety).unwrap_or_default();
    if let Some(s) = safety.as_object_mut() {
        s.remove("findings");
    }
    eprintln!("verdict: {} (seed {seed}); safety: {safety}", report.verdict);
    if report.verdict != "pass" {
        eprintln!("reasons: {:?}\nreplay with: make chaos PROFILE={} SEED={seed}", report.reasons, report.profile);
        std::process::exit(1);
    }
    Ok(())
}

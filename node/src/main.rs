//! The `dermagate` binary: one executable for serving a node, creating certificates, running a
//! local cluster and benchmarking it. `anyhow` lives here, at the edge, and nowhere below.

mod audit;
mod backup;
mod bench;
mod bench_analyses;
mod bench_auth;
mod bench_etcd;
mod blob_s3;
mod certs;
mod cluster_file;
mod config;
mod lb;
mod local;
mod process;
mod serve;
mod telemetry;
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// sysexits EX_USAGE / EX_CONFIG-like code for bad configuration or command lines.
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "dermagate", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DERMAGATE_GIT_SHA"), ")"), about = "Clustered, secure REST front of an AI medical device for dermatology")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one node.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Certificates for local clusters.
    Certs {
        #[command(subcommand)]
        command: CertsCmd,
    },
    /// A local cluster of real node processes on loopback.
    Local {
        #[command(subcommand)]
        command: LocalCmd,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Export the replicated state of a running local cluster, as the node encrypted it to the
    /// operator's age recipients.
    Backup {
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Make an age identity for backups (mode 0600) and print its recipient for `[backup]
    /// recipients`.
    BackupKey {
        #[arg(long)]
        out: PathBuf,
    },
    /// Start a new local cluster in DIR from a backup.
    Restore {
        #[arg(long)]
        backup: PathBuf,
        /// The age identity the backup was encrypted to.
        #[arg(long)]
        identity: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
    },
    /// Generate a key-encryption key file (64 hex characters, mode 0600).
    Kek {
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the OpenAPI document of the API (what `/openapi.json` serves; committed as
    /// `docs/openapi.json`).
    Openapi,
    /// The audit trail of a node's data directory.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check every organisation's hash chain; exit 1 naming the first broken record. The node
    /// must be stopped (or verify a copy of its data directory).
    Verify {
        /// The node's configuration (its data_dir and storage.kek_file).
        #[arg(long, conflicts_with_all = ["data_dir", "kek_file"])]
        config: Option<PathBuf>,
        #[arg(long, requires = "kek_file")]
        data_dir: Option<PathBuf>,
        #[arg(long, requires = "data_dir")]
        kek_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Create a cluster CA and per-node certificates (node-<id>.dermagate, localhost, 127.0.0.1).
    Init {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        #[arg(long, default_value = "dermagate cluster CA")]
        ca_name: String,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Issue a certificate for one more node from an existing CA directory (ca.pem, ca.key).
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        node_id: u64,
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
}

#[derive(Subcommand)]
enum LocalCmd {
    /// Start (or resume) a local cluster and write DIR/cluster.json.
    Up {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Also start HAProxy in front of the nodes (when installed) and record `lb_url`.
        #[arg(long)]
        lb: bool,
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
        /// Give node N its own loopback address BASE + N - 1 (e.g. 127.0.0.11, .12, .13) for
        /// its API, Raft and metrics, and make it connect out from it; default: 127.0.0.1.
        #[arg(long, value_name = "BASE")]
        addr_base: Option<std::net::Ipv4Addr>,
    },
    /// Stop the local cluster in DIR (its data is kept).
    Down {
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Replicated writes at several client counts, then the failover window.
    Writes {
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 5)]
        failover_trials: usize,
        /// Send every write to this node (default: spread over all nodes).
        #[arg(long)]
        node: Option<u64>,
        /// Skip the side-by-side run against a 3-member etcd cluster.
        #[arg(long)]
        no_etcd: bool,
    },
    /// One analysis broken into stages, throughput at 1/4/16 clients, served/raw ratio, 2x overload.
    Analyses {
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Cost of authentication per request, and /v1/me against /livez throughput over HTTPS.
    Auth {
        #[arg(long, default_value = ".local-cluster")]
        dir: PathBuf,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // One crypto provider for the whole process, before anything builds a TLS configuration.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Cmd::Serve { config } => serve_main(&config),
        other => {
            telemetry::init_tracing("warn", false);
            match run_tool(other) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve_main(path: &std::path::Path) -> ExitCode {
    let config = match config::NodeConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    telemetry::init_tracing(&config.log.level, config.log.json);
    // The model is part of the configuration: one whose manifest and graph disagree stops the
    // node here, before any port is bound or any data opened.
    let engine = match serve::engine(&config) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("error: invalid configuration: inference.model_dir: {e:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let metrics_listener = match config.metrics.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot bind metrics.listen {addr}: {e}"))?,
            ),
            None => None,
        };
        let handle = telemetry::install_recorder()?;
        telemetry::register_event_series();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        if let Some(listener) = metrics_listener {
            telemetry::log_bound("metrics", listener.local_addr()?);
            let mut rx = stop_rx.clone();
            tokio::spawn(telemetry::serve_metrics(listener, handle, async move {
                let _ = rx.changed().await;
            }));
        }
        let result = serve::run(config, engine, shutdown_signal()).await;
        let _ = stop_tx.send(true);
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "node failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "signal received"),
        _ = tokio::signal::ctrl_c() => tracing::info!(signal = "SIGINT", "signal received"),
    }
}

fn run_tool(cmd: Cmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cmd {
        Cmd::Serve { .. } => unreachable!("handled by serve_main"),
        Cmd::Certs { command: CertsCmd::Init { out, nodes, ca_name, days } } => {
            let paths = certs::init(&out, nodes, &ca_name, days)?;
            println!(
                "wrote CA {} and {} node certificate(s) in {}",
                paths.ca_cert.display(),
                paths.node_cert.len(),
                out.display()
            );
            Ok(())
        }
        Cmd::Certs { command: CertsCmd::Issue { dir, node_id, days } } => {
            let path = certs::issue(&dir, node_id, days)?;
            println!("wrote {}", path.display());
            Ok(())
        }
        Cmd::Backup { dir, out } => rt.block_on(backup::backup(&dir, &out)),
        Cmd::BackupKey { out } => {
            println!("{}", backup::new_identity(&out)?);
            Ok(())
        }
        Cmd::Restore { backup, identity, dir, nodes } => rt.block_on(backup::restore(&backup, &identity, &dir, nodes)),
        Cmd::Audit { command: AuditCmd::Verify { config, data_dir, kek_file } } => {
            let (data_dir, kek_file) = match (config, data_dir, kek_file) {
                (Some(path), _, _) => {
                    let c = config::NodeConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
                    (c.data_dir, c.storage.kek_file)
                }
                (None, Some(d), Some(k)) => (d, k),
                _ => anyhow::bail!("give --config, or --data-dir and --kek-file"),
            };
            if !audit::verify(&data_dir, &kek_file)? {
                anyhow::bail!("the audit trail was tampered with (see above)");
            }
            Ok(())
        }
        Cmd::Openapi => {
            println!("{}", dermagate_api::openapi::json());
            Ok(())
        }
        Cmd::Kek { out } => {
            certs::write_private(&out, dermagate_storage::Kek::generate_hex().as_bytes())?;
            println!("wrote key-encryption key {}", out.display());
            Ok(())
        }
        Cmd::Local { command: LocalCmd::Up { nodes, dir, lb, addr_base } } => {
            rt.block_on(local::up(&dir, nodes, lb, addr_base))
        }
        Cmd::Local { command: LocalCmd::Down { dir } } => rt.block_on(local::down(&dir)),
        Cmd::Bench { command: BenchCmd::Writes { dir, clients, seconds, failover_trials, node, no_etcd } } => {
            rt.block_on(bench::writes(&dir, &clients, seconds, failover_trials, node, !no_etcd))
        }
        Cmd::Bench { command: BenchCmd::Auth { dir, seconds } } => rt.block_on(bench_auth::auth(&dir, seconds)),
        Cmd::Bench { command: BenchCmd::Analyses { dir, seconds } } => {
            rt.block_on(bench_analyses::analyses(&dir, seconds))
        }
    }
}

//! `traild`: the Trail server. With no arguments it serves on its embedded
//! defaults (data in `./trail-data`, gRPC on 127.0.0.1:50051, metrics on
//! 127.0.0.1:9464). Precedence:
//! flags, then environment variables, then the config file, then defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;
use trail_server::config::{Config, DurabilityMode, LogFormat};

/// Appends allocate events on the gRPC threads and free them on the log's
/// writer thread; glibc's allocator spends much of the writer's time on that
/// pattern (profiled: about a fifth of it), mimalloc very little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "traild", version, about = "Trail audit-trail server")]
struct Args {
    /// A TOML config file; keys it leaves out keep their defaults.
    #[arg(long, env = "TRAIL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the logs live.
    #[arg(long, env = "TRAIL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (port 0 picks a free port; the address is printed).
    #[arg(long, env = "TRAIL_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Prometheus `/metrics` listen address (port 0 picks a free port; the
    /// address is printed after the gRPC one); `off` turns metrics off.
    #[arg(long, env = "TRAIL_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_metrics_listen)]
    metrics_listen: Option<MetricsListen>,
    /// When appends are acknowledged relative to fsync.
    #[arg(long, env = "TRAIL_DURABILITY", value_enum)]
    durability: Option<DurabilityMode>,
    /// Allow listening beyond loopback without TLS or tokens.
    #[arg(long)]
    insecure: bool,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

/// `--metrics-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug)]
struct MetricsListen(Option<SocketAddr>);

fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    trail_server::config::parse_metrics_listen(text).map(MetricsListen)
}

fn config_from(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(data_dir) = &args.data_dir {
        config.data_dir.clone_from(data_dir);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(MetricsListen(metrics_listen)) = args.metrics_listen {
        config.metrics_listen = metrics_listen;
    }
    if let Some(durability) = args.durability {
        config.log.durability = durability;
    }
    if args.insecure {
        config.insecure = true;
    }
    Ok(config)
}

fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(&config.logging.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => tracing::info!("SIGINT received"),
                    _ = terminate.recv() => tracing::info!("SIGTERM received"),
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match main_with(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("traild: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// How long an idle thread of the runtime's blocking pool waits for work
/// before it exits (tokio's default: 10 s).
const BLOCKING_THREAD_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(600);

fn main_with(args: &Args) -> anyhow::Result<()> {
    let config = config_from(args)?;
    if args.print_config {
        print!("{}", config.to_toml()?);
        return Ok(());
    }
    config.validate()?;
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // An exiting thread unmaps its signal stack; with the derived
        // stores in the idle class a profile caught such exits stalled for
        // 133-717 ms in the middle of a load (DECISIONS.md #44). So idle
        // blocking-pool threads stay for ten minutes instead of tokio's
        // ten seconds.
        .thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(trail_server::run(config, shutdown_signal()))?;
    Ok(())
}

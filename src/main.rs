//! `streamgate`: one binary for every StreamGate component. Each subcommand parses its
//! flags and hands over to the library that owns the component.

mod ctl;
mod dev;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use streamgate_edge::config::LoadError;
use streamgate_edge::{Edge, EdgeConfig, Shutdown};

/// sysexits EX_USAGE: the configuration is invalid.
const EX_USAGE: u8 = 64;
/// sysexits EX_UNAVAILABLE: etcd refused our credentials (certificate, password, role).
const EX_UNAVAILABLE: u8 = 69;

/// Asks etcd once whether it accepts `cfg`'s credentials (members that do not answer are
/// fine: the component starts and retries). A refusal exits 69 with etcd's reason.
fn check_etcd_access(
    cfg: &streamgate_control::store::etcd::EtcdConfig,
    who: &str,
) -> Result<(), ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        })?;
    match rt.block_on(streamgate_control::store::etcd::EtcdStore::connect_with(
        cfg,
    )) {
        Ok(_) => Ok(()),
        Err(e @ streamgate_control::store::StoreError::Denied(_)) => {
            eprintln!(
                "error: etcd refused the {who}'s access ({e}); check the CA, client certificate, username and password in its etcd settings, and the user's etcd role (docs/DEPLOY.md)"
            );
            Err(ExitCode::from(EX_UNAVAILABLE))
        }
        Err(e) => {
            eprintln!("error: etcd: {e}");
            Err(ExitCode::FAILURE)
        }
    }
}

#[derive(Parser)]
#[command(
    name = "streamgate",
    version,
    about = "Access-controlled HLS/DASH edge"
)]
struct Cli {
    /// Log lines as `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "STREAMGATE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Everything in one process on local storage, with a demo asset.
    Dev(dev::DevArgs),
    /// The edge: serves and caches HLS/DASH from origin storage.
    Edge {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration, list every error, and exit (64 when invalid).
        #[arg(long)]
        check_config: bool,
    },
    /// The control plane: the gRPC API over etcd (or the embedded store).
    Control {
        /// TOML configuration file (the `[control]` table).
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration, list every error, and exit (64 when invalid).
        #[arg(long)]
        check_config: bool,
    },
    /// The transcode farm: the tus ingest (port 8090) and/or workers, per `[transcode]`.
    Transcode {
        /// TOML configuration file (the `[transcode]` and `[origin]` tables).
        #[arg(long, short)]
        config: PathBuf,
        /// Validate the configuration, list every error, and exit (64 when invalid).
        #[arg(long)]
        check_config: bool,
    },
    /// The operator CLI: policies, assets, keys, purges, audit and edges over the control
    /// plane's gRPC API; token minting and policy checks locally.
    Ctl(ctl::CtlArgs),
    /// Load tools: virtual viewers, protocol benchmarks and plots.
    #[command(subcommand)]
    Load(LoadCmd),
}

#[derive(Subcommand)]
enum LoadCmd {
    /// Many concurrent GETs of one URL over HTTP/1.1, HTTP/2 or HTTP/3; latency percentiles.
    Proto(streamgate_load::ProtoArgs),
    /// Virtual viewers that behave like players (HLS/DASH, ABR, buffer, stalls), with QoE
    /// figures and JSON/HTML reports.
    Play(Box<streamgate_load::play::PlayArgs>),
    /// A percentile plot (SVG) from JSON reports of `load proto`.
    Plot(streamgate_load::PlotArgs),
    /// Time until every edge enforces a policy change made through the control plane.
    Propagation(streamgate_load::propagation::PropagationArgs),
}

/// Runs a load tool on a two-thread runtime.
fn block_on(f: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.cmd {
        Cmd::Dev(args) => dev::run(args),
        Cmd::Edge {
            config,
            check_config,
        } => {
            let cfg = match EdgeConfig::load(&config) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            if check_config {
                println!("{}: ok", config.display());
                return ExitCode::SUCCESS;
            }
            run_edge(cfg)
        }
        Cmd::Control {
            config,
            check_config,
        } => run_control(&config, check_config),
        Cmd::Transcode {
            config,
            check_config,
        } => run_transcode(&config, check_config),
        Cmd::Ctl(args) => ctl::run(args),
        Cmd::Load(cmd) => {
            let res = match cmd {
                LoadCmd::Proto(args) => streamgate_load::run_cli(args),
                LoadCmd::Play(args) => streamgate_load::play::run_cli(*args),
                LoadCmd::Plot(args) => streamgate_load::plot_cli(args),
                LoadCmd::Propagation(args) => block_on(streamgate_load::propagation::run(args)),
            };
            match res {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn config_error(e: &LoadError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        LoadError::Read { .. } => ExitCode::FAILURE,
        _ => ExitCode::from(EX_USAGE),
    }
}

fn run_edge(cfg: EdgeConfig) -> ExitCode {
    if let Some(etcd) = &cfg.gate.etcd
        && let Err(code) = check_etcd_access(etcd, "edge")
    {
        return code;
    }
    let edge = match Edge::build(cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match edge.run(&Shutdown::new()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_control(path: &std::path::Path, check_only: bool) -> ExitCode {
    use streamgate_control::config::{ControlConfig, LoadError as ControlLoadError};
    let cfg = match ControlConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                ControlLoadError::Read(..) => ExitCode::FAILURE,
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(listen = %cfg.listen, "control plane starting");
    let res = rt.block_on(streamgate_control::run(cfg, async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_denied() => {
            eprintln!(
                "error: {e}; check the CA, client certificate, username and password in [control.etcd], and the user's etcd role (docs/DEPLOY.md)"
            );
            ExitCode::from(EX_UNAVAILABLE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_transcode(path: &std::path::Path, check_only: bool) -> ExitCode {
    use streamgate_transcode::service::{LoadError as TranscodeLoadError, TranscodeConfig};
    let cfg = match TranscodeConfig::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return match e {
                TranscodeLoadError::Read(..) => ExitCode::FAILURE,
                _ => ExitCode::from(EX_USAGE),
            };
        }
    };
    if check_only {
        println!("{}: ok", path.display());
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(streamgate_transcode::service::run(cfg, async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How log lines are written: `text` for people (colour only on a terminal), `json` for
/// machines (one object per line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("STREAMGATE_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,pingora_core=warn,streamgate_transcode=warn")
        });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

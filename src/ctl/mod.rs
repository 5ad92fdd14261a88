//! `streamgate ctl`: the operator CLI. Policies, assets, keys, purges, the audit log, edge
//! status, QoE analytics and jobs go through the control plane's gRPC API (`--endpoint`, `--token`),
//! uploads through the tus ingest; minting tokens and checking a policy file are local.
//!
//! One module per resource (`policy`, `asset`, `key`, `ops` for purge, audit, edges and analytics,
//! `job`, `upload`), sharing `client` (connection, errors, printing). A command line is
//! first split into a [`Local`] or a [`Remote`] command, so each kind runs without the
//! other's set-up.
//!
//! Exit codes: 0 done; 1 the control plane refused (conflict, not found, invalid, denied);
//! 64 bad local input (unreadable or invalid file, bad flag); 69 the endpoint is unreachable.

mod asset;
mod client;
mod diff;
mod job;
mod key;
mod local;
mod ops;
mod policy;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use asset::AssetCmd;
use key::KeyCmd;
pub(crate) use local::TokenCmd;
use ops::PurgeArgs;
use policy::{PolicyCmd, PolicyRemote};

/// `streamgate ctl` with its global flags.
#[derive(Args)]
pub(crate) struct CtlArgs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: CtlCmd,
}

/// Where the control plane is and who we are.
#[derive(Args, Clone)]
pub(crate) struct Global {
    /// The control plane's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "STREAMGATE_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// Admin bearer token.
    #[arg(long, global = true, env = "STREAMGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the admin bearer token (first line).
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Human)]
    output: Output,
    /// The CA that signed the control plane's certificate (for an https:// endpoint).
    #[arg(long, global = true, env = "STREAMGATE_CA")]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), when the control plane requires mTLS.
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Aligned columns and one-line confirmations.
    Human,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
pub(crate) enum CtlCmd {
    /// Tokens (local: signs with a key you hold).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Policies.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Assets and their policy binding.
    #[command(subcommand)]
    Asset(AssetCmd),
    /// Token verification keys.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Drop cached objects on every edge.
    Purge(PurgeArgs),
    /// The audit log of every change, oldest first.
    Audit {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        /// At most this many entries (up to 1000).
        #[arg(long, default_value_t = 100)]
        limit: i32,
    },
    /// Which edges run which revision.
    Edges,
    /// QoE from the players' CMCD, summed over the edges: the top assets, or one.
    Analytics {
        /// One asset only.
        #[arg(long)]
        asset: Option<String>,
        /// At most this many assets, by sessions started (up to 1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Transcode jobs: list, get, watch, cancel, submit.
    #[command(subcommand)]
    Job(job::JobCmd),
    /// Upload a video over tus to the ingest (resumable); prints its job.
    Upload(upload::UploadArgs),
    /// Who the admin token is: its name, role, asset prefixes and the calls it may make.
    Whoami,
}

/// sysexits: bad local input, and the service unreachable.
pub(crate) const EX_USAGE: u8 = 64;
pub(crate) const EX_UNAVAILABLE: u8 = 69;

/// A command that needs nothing but local files.
enum Local {
    Mint(local::MintArgs),
    CheckPolicy { file: PathBuf, chains: Vec<String> },
}

/// A command that talks to a server: the control plane, or the ingest for uploads.
enum Remote {
    Policy(PolicyRemote),
    Asset(AssetCmd),
    Key(KeyCmd),
    Purge(PurgeArgs),
    Audit { after: i64, limit: i32 },
    Edges,
    Analytics { asset: Option<String>, limit: u32 },
    Job(job::JobCmd),
    Upload(upload::UploadArgs),
    Whoami,
}

/// A command line, split by what it needs.
enum Command {
    Local(Local),
    Remote(Remote),
}

impl CtlCmd {
    fn split(self) -> Command {
        let remote = match self {
            Self::Token(TokenCmd::Mint(a)) => return Command::Local(Local::Mint(a)),
            Self::Policy(PolicyCmd::Check { file, chains }) => {
                return Command::Local(Local::CheckPolicy { file, chains });
            }
            Self::Policy(PolicyCmd::Remote(p)) => Remote::Policy(p),
            Self::Asset(a) => Remote::Asset(a),
            Self::Key(k) => Remote::Key(k),
            Self::Purge(p) => Remote::Purge(p),
            Self::Audit { after, limit } => Remote::Audit { after, limit },
            Self::Edges => Remote::Edges,
            Self::Analytics { asset, limit } => Remote::Analytics { asset, limit },
            Self::Job(j) => Remote::Job(j),
            Self::Upload(u) => Remote::Upload(u),
            Self::Whoami => Remote::Whoami,
        };
        Command::Remote(remote)
    }
}

pub(crate) fn run(args: CtlArgs) -> ExitCode {
    let remote = match args.cmd.split() {
        Command::Local(Local::Mint(a)) => return local::mint(a),
        Command::Local(Local::CheckPolicy { file, chains }) => {
            return local::check_policy(&file, &chains);
        }
        Command::Remote(r) => r,
    };
    if let Remote::Upload(a) = remote {
        return upload::run(&args.global, a);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(remote.run(&args.global)) {
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

impl Remote {
    async fn run(self, g: &Global) -> client::Result<ExitCode> {
        let out = g.output;
        // Local input (a JWK entry) is read and checked before connecting.
        let key_input = match &self {
            Self::Key(KeyCmd::Add(src)) => Some(key::jwk(src)?),
            Self::Key(KeyCmd::Rotate { new, .. }) => Some(key::jwk(new)?),
            _ => None,
        };
        match self {
            Self::Policy(p) => return policy::run(g, p).await,
            Self::Job(j) => return job::run(g, j).await,
            Self::Upload(_) => unreachable!("uploads run on their own runtime"),
            Self::Asset(a) => asset::run(&mut client::connect(g).await?, out, a).await?,
            Self::Key(k) => key::run(&mut client::connect(g).await?, out, k, key_input).await?,
            Self::Purge(p) => ops::purge(&mut client::connect(g).await?, out, p).await?,
            Self::Audit { after, limit } => {
                ops::audit(&mut client::connect(g).await?, out, after, limit).await?
            }
            Self::Edges => ops::edges(&mut client::connect(g).await?, out).await?,
            Self::Whoami => ops::whoami(&mut client::connect(g).await?, out).await?,
            Self::Analytics { asset, limit } => {
                ops::analytics(&mut client::connect(g).await?, out, asset, limit).await?
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

//! `streamgate ctl`: the operator CLI. Policies, assets, keys, purges, the audit log and
//! edge status go through the control plane's gRPC API (`--endpoint`, `--token`); minting
//! tokens and checking a policy file are local.
//!
//! Exit codes: 0 done; 1 the control plane refused (conflict, not found, invalid, denied);
//! 64 bad local input (unreadable or invalid file, bad flag); 69 the endpoint is unreachable.

mod diff;
mod job;
mod local;
mod remote;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

pub(crate) use local::TokenCmd;

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
    /// Transcode jobs: list, get, watch, cancel, submit.
    #[command(subcommand)]
    Job(job::JobCmd),
    /// Upload a video over tus to the ingest (resumable); prints its job.
    Upload(upload::UploadArgs),
}

#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Validate a policy document locally; list every error with its field path.
    Check {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The chain registry (CAIP-2 ids, comma-separated): `nft` conditions must name
        /// one of these chains.
        #[arg(long, value_delimiter = ',')]
        chains: Vec<String>,
    },
    /// Create or update a policy from a file.
    Apply {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// The version you last saw (0: create). Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Show one policy.
    Get {
        /// Policy id.
        id: String,
    },
    /// List policies.
    List,
    /// Show how a file differs from the stored policy (exit 1 when it does).
    Diff {
        /// The policy file (YAML or JSON).
        #[arg(short = 'f', long)]
        file: PathBuf,
    },
    /// Delete a policy (refused while assets are bound to it).
    Delete {
        /// Policy id.
        id: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AssetCmd {
    /// Register an asset, optionally bound to a policy.
    Register {
        /// Asset id (the first path segment under /v/).
        id: String,
        /// The policy that gates it.
        #[arg(long)]
        policy: Option<String>,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show one asset.
    Get {
        /// Asset id.
        id: String,
    },
    /// List assets.
    List,
    /// Bind an asset to a policy ("" unbinds).
    Bind {
        /// Asset id.
        id: String,
        /// Policy id.
        policy: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Delete an asset.
    Delete {
        /// Asset id.
        id: String,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyCmd {
    /// Add a public key (JWK entry; HS256 by secret_ref only).
    Add(JwkSource),
    /// List keys.
    List,
    /// Retire a key: tokens it signed stay valid for the overlap.
    Retire {
        /// Key id.
        kid: String,
        /// How long tokens signed with it stay valid, e.g. 24h (up to 90 days).
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Duration,
        /// The version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
    /// Add a new key and retire an old one, in one transaction.
    Rotate {
        #[command(flatten)]
        new: JwkSource,
        /// The key being replaced.
        #[arg(long)]
        old: String,
        /// How long tokens signed with the old key stay valid.
        #[arg(long, value_parser = humantime::parse_duration)]
        overlap: Duration,
        /// The old key's version you last saw. Default: the current one, read first.
        #[arg(long)]
        expected_version: Option<i64>,
    },
}

/// A JWK entry from a file or the command line.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct JwkSource {
    /// A file holding the JWK entry (JSON).
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// The JWK entry itself (JSON).
    #[arg(long)]
    jwk: Option<String>,
}

/// What to purge.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct PurgeArgs {
    /// Every object of this asset.
    #[arg(long)]
    asset: Option<String>,
    /// Every object whose key starts with this, e.g. demo/video/720p/.
    #[arg(long)]
    prefix: Option<String>,
}

/// sysexits: bad local input, and the service unreachable.
pub(crate) const EX_USAGE: u8 = 64;
pub(crate) const EX_UNAVAILABLE: u8 = 69;

pub(crate) fn run(args: CtlArgs) -> ExitCode {
    match args.cmd {
        CtlCmd::Token(TokenCmd::Mint(a)) => local::mint(a),
        CtlCmd::Policy(PolicyCmd::Check { file, chains }) => local::check_policy(&file, &chains),
        CtlCmd::Upload(a) => upload::run(&args.global, a),
        cmd => {
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
            let result = match cmd {
                CtlCmd::Job(j) => rt.block_on(job::run(&args.global, j)),
                cmd => rt.block_on(remote::run(&args.global, cmd)),
            };
            match result {
                Ok(code) => code,
                Err(e) => e.report(),
            }
        }
    }
}

//! `streamgate dev`: the demo asset, a self-signed certificate, the control plane (on the
//! embedded store, or etcd with `--etcd`) and an edge watching that store, in one process.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use clap::Args;
use streamgate_control::dev::DevState;
use streamgate_control::metrics::{ControlMetrics, MeteredStore};
use streamgate_control::store::Store;
use streamgate_control::store::embedded::EmbeddedStore;
use streamgate_control::store::etcd::{EtcdConfig, EtcdStore};
use streamgate_edge::config::{CorsConfig, EdgeConfig, GateConfig, PlayerConfig};
use streamgate_edge::{Edge, Shutdown};
use streamgate_origin::OriginConfig;
use streamgate_transcode::LadderConfig;

/// The demo asset's id.
const DEMO: &str = "demo";
/// Length of the generated demo video.
const DEMO_SECONDS: u32 = 10;

#[derive(Args)]
pub(crate) struct DevArgs {
    /// Where origin objects, certificates and scratch files live.
    #[arg(long, env = "STREAMGATE_DATA_DIR", default_value = "streamgate-data")]
    data_dir: PathBuf,
    /// Address to bind every listener on. Loopback by default: dev mode has no access control.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    bind: IpAddr,
    /// Plain HTTP port of the edge.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// TLS port of the edge.
    #[arg(long, default_value_t = 8443)]
    tls_port: u16,
    /// Admin port of the edge.
    #[arg(long, default_value_t = 9100)]
    admin_port: u16,
    /// Port of the control plane's gRPC API (for `streamgate ctl`).
    #[arg(long, default_value_t = 50051)]
    control_port: u16,
    /// Admin port of the control plane (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, default_value_t = 9101)]
    control_admin_port: u16,
    /// Admin port of the farm (the worker and ingest: `/metrics`, `/healthz`).
    #[arg(long, default_value_t = 9102)]
    farm_admin_port: u16,
    /// Port of the tus ingest (`streamgate ctl upload`, tus clients).
    #[arg(long, default_value_t = 8090)]
    ingest_port: u16,
    /// Keep state in this etcd (e.g. `http://127.0.0.1:2379`) instead of the embedded store.
    #[arg(long)]
    etcd: Option<String>,
    /// A local EVM node's JSON-RPC URL (chain eip155:31337, e.g. `http://127.0.0.1:8545`
    /// from `scripts/dev-chain.sh`): `nft` policies on that chain and ERC-1271 sign-in.
    #[arg(long)]
    chain_rpc: Option<String>,
}

/// The control plane's side of dev: its runtime, the store, and the seeded state.
struct Control {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn Store>,
    state: DevState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Opens the store, seeds it, and serves the gRPC API on `listen` and its admin port on
/// `admin_listen` in the background.
fn start_control(
    args: &DevArgs,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> anyhow::Result<Control> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("control")
        .enable_all()
        .build()?;
    let store: Arc<dyn Store> = match &args.etcd {
        // Connecting does not wait for etcd: started during an outage, the edge serves its
        // last-known-good file and the store is seeded once a member answers.
        Some(url) => Arc::new(
            rt.block_on(EtcdStore::connect_with(&EtcdConfig::new(vec![url.clone()])))
                .map_err(|e| anyhow::anyhow!("etcd {url}: {e}"))?,
        ),
        None => Arc::new(EmbeddedStore::open(&args.data_dir.join("state/store.log"))?),
    };
    let state = streamgate_control::dev::local_state(&args.data_dir, DEMO, SystemTime::now())?;
    let seeded = {
        let (store, dir) = (Arc::clone(&store), args.data_dir.clone());
        rt.spawn(async move {
            let mut warned = false;
            loop {
                match streamgate_control::dev::seed_store(&*store, &dir, DEMO).await {
                    Ok(()) => {
                        if warned {
                            eprintln!("dev: the store answers again; demo state seeded");
                        }
                        return Ok(());
                    }
                    Err(streamgate_control::dev::DevError::Store(e)) if !matches!(e, streamgate_control::store::StoreError::Denied(_)) => {
                        if !warned {
                            eprintln!("dev: the store is unreachable ({e}); the edge serves its last-known-good state, and the demo state is seeded once the store answers");
                            warned = true;
                        }
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
    };
    // With the embedded store (or etcd that answers) seeding is quick: wait for it, so
    // the printed URLs work at once; otherwise go on and let it finish in the background.
    if let Ok(Ok(r)) =
        rt.block_on(async { tokio::time::timeout(std::time::Duration::from_secs(3), seeded).await })
    {
        r?;
    }
    // The control plane's own work goes through the metered store; the edge, ingest and
    // worker of this process use the store directly, so 9101 counts what a separate
    // control plane would.
    let metrics = Arc::new(ControlMetrics::new());
    let metered: Arc<dyn Store> =
        Arc::new(MeteredStore::new(Arc::clone(&store), Arc::clone(&metrics)));
    rt.spawn(streamgate_control::background::run(
        Arc::clone(&metered),
        streamgate_control::background::Background {
            instance: "dev".to_owned(),
            ttl: std::time::Duration::from_secs(10),
            edge_prune_after: std::time::Duration::from_secs(600),
            metrics: Arc::clone(&metrics),
        },
        std::future::pending(),
    ));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let admin_listener = rt
        .block_on(tokio::net::TcpListener::bind(admin_listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {admin_listen}: {e}"))?;
    rt.spawn(streamgate_control::admin::serve(
        admin_listener,
        streamgate_control::admin::Admin {
            metrics: Arc::clone(&metrics),
            store: Arc::clone(&store),
        },
        std::future::pending::<()>(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let auth = streamgate_control::api::AdminAuth::new(vec![state.admin_token.clone()]);
    rt.spawn(streamgate_control::api::serve_with(
        listener,
        metered,
        auth,
        None,
        Vec::new(),
        metrics,
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Control {
        rt,
        store,
        state,
        stop: Some(stop),
    })
}

/// Serves the tus ingest on `listen` in the control plane's runtime, staging uploads in
/// the dev origin and creating jobs in the dev store. Any browser origin may upload (CORS),
/// as any may play.
fn start_ingest(control: &Control, origin_root: &Path, listen: SocketAddr) -> anyhow::Result<()> {
    use streamgate_transcode::ingest::{Ingest, IngestConfig};
    let cfg = IngestConfig {
        listen,
        cors_allow_origins: vec!["*".to_owned()],
        ..IngestConfig::default()
    };
    let staging = streamgate_origin::Staging::from_config(
        &OriginConfig::Fs {
            root: origin_root.to_owned(),
        },
        cfg.s3_part_size,
    )?;
    let listener = control
        .rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    let ingest = Ingest::new(
        Arc::clone(&control.store),
        staging,
        streamgate_control::auth::AdminTokens::new(&[control.state.admin_token.as_str()]),
        cfg,
    );
    control
        .rt
        .spawn(ingest.run(listener, std::future::pending::<()>()));
    Ok(())
}

/// Runs one farm worker in the control plane's runtime: it takes the jobs the ingest (or
/// `ctl job submit`) creates in the dev store and publishes into the dev origin. Its
/// metrics are served on the farm admin port `admin_listen`.
fn start_worker(
    control: &Control,
    data_dir: &Path,
    origin_root: &Path,
    admin_listen: SocketAddr,
) -> anyhow::Result<()> {
    use streamgate_transcode::farm;
    let origin = streamgate_origin::Origin::from_config(&OriginConfig::Fs {
        root: origin_root.to_owned(),
    })?;
    let mut cfg = farm::WorkerConfig::new(data_dir.join("farm"));
    cfg.name = "dev".to_owned();
    let metrics = Arc::new(farm::FarmMetrics::new());
    let admin_listener = control
        .rt
        .block_on(tokio::net::TcpListener::bind(admin_listen))
        .map_err(|e| anyhow::anyhow!("cannot listen on {admin_listen}: {e}"))?;
    control.rt.spawn(farm::admin::serve(
        admin_listener,
        Arc::clone(&metrics),
        std::future::pending::<()>(),
    ));
    control.rt.spawn(farm::run(
        Arc::clone(&control.store),
        origin,
        cfg,
        metrics,
        std::future::pending::<()>(),
    ));
    Ok(())
}

pub(crate) fn run(args: DevArgs) -> ExitCode {
    let origin_root = args.data_dir.join("origin");
    if let Err(e) = ensure_demo(&args.data_dir, &origin_root) {
        eprintln!("error: making the demo asset: {e}");
        eprintln!("hint: run ./scripts/setup.sh to install ffmpeg");
        return ExitCode::FAILURE;
    }
    let tls = match streamgate_edge::dev_certificate(&args.data_dir.join("tls")) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cert_path = tls.cert.clone();
    let control_listen = SocketAddr::new(args.bind, args.control_port);
    let control_admin_listen = SocketAddr::new(args.bind, args.control_admin_port);
    let farm_admin_listen = SocketAddr::new(args.bind, args.farm_admin_port);
    let mut control = match start_control(&args, control_listen, control_admin_listen) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: starting the control plane: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ingest_listen = SocketAddr::new(args.bind, args.ingest_port);
    if let Err(e) = start_ingest(&control, &origin_root, ingest_listen) {
        eprintln!("error: starting the ingest: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = start_worker(&control, &args.data_dir, &origin_root, farm_admin_listen) {
        eprintln!("error: starting the farm worker: {e}");
        return ExitCode::FAILURE;
    }
    let state = &control.state;
    let cfg = EdgeConfig {
        http_listen: SocketAddr::new(args.bind, args.http_port),
        tls_listen: SocketAddr::new(args.bind, args.tls_port),
        admin_listen: SocketAddr::new(args.bind, args.admin_port),
        tls: Some(tls),
        threads: 2,
        cors: CorsConfig {
            allow_origins: vec!["*".to_owned()],
            ..CorsConfig::default()
        },
        origin: OriginConfig::Fs { root: origin_root },
        player: PlayerConfig {
            libraries: player_libraries(),
        },
        gate: GateConfig {
            // The edge watches the control plane's store; this is its last-known-good copy.
            snapshot: Some(args.data_dir.join("edge-snapshot.json")),
            edge_id: Some("dev".to_owned()),
            ..GateConfig::default()
        },
        ..EdgeConfig::default()
    };
    let cfg = match wallet_sign_in(&args, cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: wallet sign-in key: {e}");
            return ExitCode::FAILURE;
        }
    };
    let edge = match Edge::build_with_store(cfg, Some(Arc::clone(&control.store))) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let host = url_host(args.bind);
    let http = format!("http://{host}:{}", args.http_port);
    let https = format!("https://{host}:{}", args.tls_port);
    let token = &state.viewer_token;
    let player_src = format!("/v/{DEMO}/master.m3u8?token={token}");
    println!();
    println!("StreamGate dev is running. The demo asset is gated: its policy needs a token from");
    println!(
        "the dev issuer (valid until {}). Play it, HLS then DASH:",
        humantime::format_rfc3339_seconds(state.expires)
    );
    println!("{http}/v/{DEMO}/master.m3u8?token={token}");
    println!("{http}/v/{DEMO}/manifest.mpd?token={token}");
    match player_libraries() {
        Some(_) => println!("Player page (hls.js and dash.js, served by this edge):"),
        None => println!(
            "Player page (hls.js and dash.js are not installed: run ./scripts/setup-player.sh):"
        ),
    }
    println!("{http}/player?src={}", url_encode(&player_src));
    println!(
        "TLS on TCP (HTTP/1.1, h2) and HTTP/3 on UDP, same port (self-signed certificate {}):",
        cert_path.display()
    );
    println!("{https}/v/{DEMO}/master.m3u8?token={token}");
    println!("Without the token the edge answers 401: curl -i {http}/v/{DEMO}/master.m3u8");
    println!(
        "Control plane (gRPC) on {control_listen}, state in {}. Manage it with:",
        match &args.etcd {
            Some(url) => url.clone(),
            None => args.data_dir.join("state/store.log").display().to_string(),
        }
    );
    println!(
        "STREAMGATE_ENDPOINT=http://{host}:{} STREAMGATE_TOKEN=$(cat {}) streamgate ctl policy list",
        args.control_port,
        state.admin_token_file.display()
    );
    println!(
        "Upload your own video (tus on {ingest_listen}; docs/INGEST.md):\nSTREAMGATE_TOKEN=$(cat {}) streamgate ctl upload talk.mp4 --asset talk --ingest http://{host}:{}",
        state.admin_token_file.display(),
        args.ingest_port
    );
    println!(
        "Or transcode a file copied into {}/in/: streamgate ctl policy apply -f policies/examples/public.yaml, then\nstreamgate ctl job submit in/talk.mp4 --asset talk --policy public --wait (follow jobs: streamgate ctl job list; docs/FARM.md)",
        origin_root_display(&args.data_dir)
    );
    println!(
        "Wallet sign-in: POST {http}/auth/challenge {{\"address\",\"chain\"}}, sign the message, POST {http}/auth/verify (docs/WALLET.md)"
    );
    if let Some(url) = &args.chain_rpc {
        println!("NFT gating: chain eip155:31337 at {url} (docs/WEB3.md)");
    }
    println!(
        "Admin ports (/metrics, /healthz; /readyz on the edge and control plane; docs/METRICS.md):"
    );
    println!("  edge:          http://{host}:{}/metrics", args.admin_port);
    println!(
        "  control plane: http://{host}:{}/metrics",
        args.control_admin_port
    );
    println!(
        "  farm:          http://{host}:{}/metrics",
        args.farm_admin_port
    );
    println!("Press Ctrl-C to stop.");
    println!();
    let result = edge.run(&Shutdown::new());
    if let Some(stop) = control.stop.take() {
        let _ = stop.send(());
    }
    control
        .rt
        .shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Turns on wallet sign-in for dev: a session key under `keys/` (made once), the edge's
/// own address as the sign-in domain, and the Ethereum mainnet, a local EVM node's chain
/// (31337) and Solana devnet.
/// Where `scripts/setup-player.sh` installed hls.js and dash.js
/// (`$STREAMGATE_PLAYER_DIR`, else `~/.cache/streamgate-player`), if it did.
fn player_libraries() -> Option<PathBuf> {
    let dir = std::env::var_os("STREAMGATE_PLAYER_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/streamgate-player"))
        })?;
    let installed =
        dir.join("node_modules/hls.js").is_dir() && dir.join("node_modules/dashjs").is_dir();
    installed.then_some(dir)
}

fn wallet_sign_in(args: &DevArgs, mut cfg: EdgeConfig) -> std::io::Result<EdgeConfig> {
    let key = args.data_dir.join("keys/wallet-session.der");
    if !key.exists() {
        let pkcs8 =
            ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|_| std::io::Error::other("no system randomness"))?;
        std::fs::create_dir_all(args.data_dir.join("keys"))?;
        std::fs::write(&key, pkcs8.as_ref())?;
    }
    let host = url_host(args.bind);
    let domain = format!("{host}:{}", args.http_port);
    cfg.auth = Some(streamgate_edge::config::AuthConfig {
        session_key: key,
        session_kid: "wallet-session".into(),
        uri: format!("http://{domain}"),
        domain,
        chains: ["eip155:1", "eip155:31337", "solana:devnet"]
            .iter()
            .map(|c| streamgate_policy::address::ChainId::parse(c).expect("valid chain ids"))
            .collect(),
        statement: "Sign in to StreamGate dev.".into(),
        nonce_ttl: std::time::Duration::from_secs(300),
        session_ttl: std::time::Duration::from_secs(3600),
    });
    if let Some(url) = &args.chain_rpc {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(std::io::Error::other(format!(
                "--chain-rpc {url:?}: an http:// or https:// URL, e.g. http://127.0.0.1:8545"
            )));
        }
        let mut chain = streamgate_web3::ChainConfig::new(
            streamgate_policy::address::ChainId::parse("eip155:31337").expect("a valid chain id"),
        );
        chain.endpoints = vec![streamgate_web3::config::EndpointConfig {
            name: "local".into(),
            url: streamgate_web3::config::Secret(url.clone()),
            priority: 0,
            weight: 1,
        }];
        // A local node mines on demand: revoke as soon as a Transfer is in a block.
        chain.confirmations = 0;
        chain.poll_interval = std::time::Duration::from_millis(500);
        cfg.chains = vec![chain];
    }
    Ok(cfg)
}

/// How clients reach `bind`: loopback for the unspecified address, brackets for IPv6.
fn url_host(bind: IpAddr) -> String {
    match bind {
        IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(a) if a.is_unspecified() => "127.0.0.1".to_owned(),
        IpAddr::V6(a) => format!("[{a}]"),
        a => a.to_string(),
    }
}

/// Makes the demo asset under `origin_root/demo` unless it is already there.
fn ensure_demo(data_dir: &Path, origin_root: &Path) -> anyhow::Result<()> {
    let out = origin_root.join(DEMO);
    if out.join("master.m3u8").exists() && out.join("manifest.mpd").exists() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let work = data_dir.join("work");
    std::fs::create_dir_all(&work)?;
    std::fs::create_dir_all(origin_root)?;
    let source = work.join("demo-source.mp4");
    let cfg = LadderConfig::default();
    let t0 = Instant::now();
    eprintln!("making the demo asset ({DEMO_SECONDS} s test pattern with a tone) ...");
    rt.block_on(streamgate_transcode::make_test_pattern(
        &source,
        DEMO_SECONDS,
        &cfg,
    ))?;
    eprintln!("transcoding it into an ABR ladder (CMAF, HLS + DASH) ...");
    let mut last = -10i64;
    let report = rt.block_on(streamgate_transcode::transcode_with_progress(
        &source,
        &out,
        &cfg,
        |p| {
            // One line per 10 %, so the output stays readable in logs and terminals alike.
            let pct = p.fraction().map_or(0, |f| (f * 100.0) as i64);
            if pct / 10 > last / 10 || p.finished {
                last = pct;
                eprintln!(
                    "  transcoding: {pct:3}% ({:.1} s encoded)",
                    p.encoded.as_secs_f64()
                );
            }
        },
    ))?;
    eprintln!(
        "demo asset ready in {:.1} s: {} renditions",
        t0.elapsed().as_secs_f64(),
        report.renditions.len()
    );
    Ok(())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn origin_root_display(data_dir: &Path) -> String {
    data_dir.join("origin").display().to_string()
}

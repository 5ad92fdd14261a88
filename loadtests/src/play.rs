//! `streamgate load play`: virtual viewers against a master playlist or MPD.
//!
//! Arrivals follow an open model (viewers per second, Poisson or constant, with a ramp) or
//! a closed one (N concurrent). Each viewer is a [`Viewer`] state machine in a tokio task:
//! the task asks it what to fetch, fetches over [`client`], hands back the answer and sleeps
//! until its next timeout. Every latency counts from when the player needed the object
//! (its `needed_at`), not from when the request went out, so a server that stalls shows up
//! in the percentiles (coordinated omission corrected). [`report`] writes the JSON and the
//! HTML.

pub(crate) mod client;
pub(crate) mod creds;
pub mod report;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::player::abr::AbrConfig;
use crate::player::cmcd::{self, CmcdMode, CmcdSession, ObjectType};
use crate::player::{
    Event, Kind, Media, Outcome, Request, Response, SessionLength, Viewer, ViewerConfig,
};
use crate::proto::Proto;
use client::{Conns, Endpoint, Link};
pub use report::PlayReport;

/// How new viewers arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrivals {
    /// Exponential gaps (a Poisson process).
    Poisson,
    /// Even gaps.
    Constant,
}

/// Where the token goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenIn {
    /// `?token=` on every URL that has none.
    Query,
    /// `Authorization: Bearer`.
    Header,
}

/// `streamgate load play`: virtual viewers that behave like players.
#[derive(Debug, Clone, clap::Args)]
pub struct PlayArgs {
    /// The master playlist (HLS) or MPD (DASH), e.g. http://127.0.0.1:8080/v/demo/master.m3u8
    pub url: String,
    /// Closed model: this many viewers at once (a leaving viewer is replaced).
    #[arg(long, conflicts_with = "rate")]
    pub viewers: Option<u64>,
    /// Open model: new viewers per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Open model: Poisson or constant arrivals.
    #[arg(long, value_enum, default_value_t = Arrivals::Poisson)]
    pub arrivals: Arrivals,
    /// Time to reach the full rate or number of viewers, e.g. 10s.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub ramp: Duration,
    /// How long viewers keep arriving, e.g. 60s.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// After `--duration`, how long viewers still watching may finish before they are cut.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// Protocol: h1, h2 or h3 (h3 needs https).
    #[arg(long, value_enum, default_value_t = Proto::H1)]
    pub protocol: Proto,
    /// Session length: `end` (the content's), `90s`, `30s..2m` (uniform), `exp:90s`.
    #[arg(long, default_value = "end", value_parser = SessionLength::parse)]
    pub session: SessionLength,
    /// Chance that a session seeks once (VOD): at a uniform point of the session, to a
    /// uniform point of the content.
    #[arg(long, default_value_t = 0.0)]
    pub seek_probability: f64,
    /// Buffer level the players fill to, seconds.
    #[arg(long, default_value_t = 30.0)]
    pub target_buffer: f64,
    /// Buffer needed to start (and to resume after a stall), seconds.
    #[arg(long, default_value_t = 2.0)]
    pub startup_buffer: f64,
    /// ABR safety factor: the fraction of the throughput estimate a rendition may use.
    #[arg(long, default_value_t = 0.8)]
    pub abr_safety: f64,
    /// Throughput estimate before the first segment, kbit/s.
    #[arg(long, default_value_t = 1000)]
    pub abr_start_kbps: u64,
    /// Emulate each viewer's link at this rate, kbit/s (paced reads: real back-pressure).
    #[arg(long)]
    pub link_kbps: Option<u64>,
    /// A fixed token for every viewer.
    #[arg(long, conflicts_with_all = ["mint_key", "wallet"])]
    pub token: Option<String>,
    /// Mint a token per viewer with this private key (PKCS#8 Ed25519 or P-256, PEM or DER).
    #[arg(long, conflicts_with = "wallet")]
    pub mint_key: Option<PathBuf>,
    /// Key id of `--mint-key`.
    #[arg(long, default_value = "dev-1")]
    pub mint_kid: String,
    /// Issuer of minted tokens.
    #[arg(long, default_value = "streamgate-dev")]
    pub mint_issuer: String,
    /// Audience of minted tokens.
    #[arg(long, default_value = "streamgate")]
    pub mint_audience: String,
    /// Scope of minted tokens (`sg_scope`), comma-separated asset ids.
    #[arg(long, value_delimiter = ',')]
    pub mint_scope: Vec<String>,
    /// Lifetime of minted tokens.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub token_ttl: Duration,
    /// Sign in per viewer with a new EVM wallet (POST /auth/challenge, /auth/verify).
    #[arg(long)]
    pub wallet: bool,
    /// The chain wallets sign in on.
    #[arg(long, default_value = "eip155:1")]
    pub wallet_chain: String,
    /// Where tokens travel.
    #[arg(long, value_enum, default_value_t = TokenIn::Query)]
    pub token_in: TokenIn,
    /// CMCD (CTA-5004): off, query or header.
    #[arg(long, value_enum, default_value_t = CmcdMode::Off)]
    pub cmcd: CmcdMode,
    /// TLS server name (SNI).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the HTML report (inline SVG plots) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Write every request as a JSON line here (viewer, kind, path, times).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Raise `--viewers` step by step until QoE breaks; report the last level that held.
    #[arg(long, requires = "viewers")]
    pub find_capacity: bool,
    /// Capacity search: multiply the viewers by this each step.
    #[arg(long, default_value_t = 1.5)]
    pub capacity_step: f64,
    /// Capacity search: stop at this many viewers.
    #[arg(long, default_value_t = 100_000)]
    pub max_viewers: u64,
    /// Capacity search: the late-segment ratio that breaks QoE.
    #[arg(long, default_value_t = 0.01)]
    pub max_late_ratio: f64,
    /// Capacity search: the rebuffer ratio that breaks QoE.
    #[arg(long, default_value_t = 0.005)]
    pub max_rebuffer_ratio: f64,
    /// Worker threads of the generator.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Seed of arrivals and session lengths.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

type Hist = Histogram<u64>;

fn hist() -> Hist {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// What the run counts, shared by the viewer tasks.
pub(crate) struct Stats {
    pub(crate) ttfb: [Hist; 4],
    pub(crate) ttlb: [Hist; 4],
    pub(crate) startup: Hist,
    pub(crate) lag: Hist,
    pub(crate) requests: BTreeMap<String, u64>,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) started: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) stalls: u64,
    pub(crate) seeks: u64,
    pub(crate) seek_wait_s: f64,
    pub(crate) stalled_s: f64,
    pub(crate) watched_s: f64,
    pub(crate) segments: u64,
    pub(crate) late: u64,
    pub(crate) bit_seconds: f64,
    pub(crate) video_seconds: f64,
    pub(crate) renditions: BTreeMap<u64, u64>,
    pub(crate) failures: Vec<serde_json::Value>,
    pub(crate) cmcd: CmcdSent,
}

/// What the viewers told the server in CMCD, on the requests the server let through (the
/// figures an edge's QoE aggregates must match).
#[derive(Debug, Default)]
pub(crate) struct CmcdSent {
    /// Requests that carried CMCD.
    pub(crate) requests: u64,
    /// Of them, with `bs`.
    pub(crate) starved: u64,
    /// Viewers whose first manifest carried their `sid`.
    pub(crate) sessions: std::collections::HashSet<u64>,
    /// `br` of video (or muxed) segments: how many and their sum, kbps.
    pub(crate) video_br: (u64, u64),
    /// Requests with `mtp`.
    pub(crate) mtp: u64,
}

impl Stats {
    fn new() -> Self {
        Self {
            ttfb: std::array::from_fn(|_| hist()),
            ttlb: std::array::from_fn(|_| hist()),
            startup: hist(),
            lag: hist(),
            requests: BTreeMap::new(),
            errors: BTreeMap::new(),
            started: 0,
            completed: 0,
            failed: 0,
            stalls: 0,
            seeks: 0,
            seek_wait_s: 0.0,
            stalled_s: 0.0,
            watched_s: 0.0,
            segments: 0,
            late: 0,
            bit_seconds: 0.0,
            video_seconds: 0.0,
            renditions: BTreeMap::new(),
            failures: Vec::new(),
            cmcd: CmcdSent::default(),
        }
    }
}

/// Live counters for the progress line and the time series.
#[derive(Default)]
pub(crate) struct Live {
    pub(crate) active: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) segments: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) stalls: AtomicU64,
}

/// Credentials of the run.
enum Creds {
    None,
    Fixed(String),
    Mint(Box<creds::Minter>),
    Wallet {
        http: reqwest::Client,
        base: String,
        chain: String,
    },
}

struct Ctx {
    url: String,
    epoch: Instant,
    cfg: ViewerConfig,
    ep: Arc<Endpoint>,
    creds: Creds,
    token_in: TokenIn,
    cmcd: CmcdMode,
    link_kbps: Option<u64>,
    stats: Mutex<Stats>,
    live: Live,
    trace: Option<Mutex<std::io::BufWriter<std::fs::File>>>,
    cid: String,
    cut: tokio::sync::watch::Receiver<bool>,
    timeline: Mutex<Vec<report::Point>>,
}

impl Ctx {
    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.epoch).as_secs_f64()
    }
    fn instant(&self, s: f64) -> Instant {
        self.epoch + Duration::from_secs_f64(s.max(0.0))
    }
}

/// One run's settings, as parsed from [`PlayArgs`].
fn viewer_config(a: &PlayArgs) -> ViewerConfig {
    ViewerConfig {
        startup_threshold: a.startup_buffer,
        rebuffer_threshold: a.startup_buffer,
        target_buffer: a.target_buffer,
        session: a.session,
        abr: AbrConfig {
            safety: a.abr_safety,
            default_estimate: a.abr_start_kbps as f64 * 1000.0,
            ..AbrConfig::default()
        },
        seek_probability: a.seek_probability,
        ..ViewerConfig::default()
    }
}

fn check(a: &PlayArgs) -> anyhow::Result<http::Uri> {
    let uri: http::Uri = a
        .url
        .parse()
        .map_err(|e| anyhow::anyhow!("URL {:?}: {e}", a.url))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        anyhow::bail!("URL {:?}: the scheme must be http or https", a.url);
    }
    match (a.viewers, a.rate) {
        (None, None) => anyhow::bail!("give --viewers N (closed model) or --rate R (open model)"),
        (Some(0), _) => anyhow::bail!("--viewers must be at least 1"),
        (_, Some(r)) if !(r.is_finite() && r > 0.0) => {
            anyhow::bail!("--rate must be a positive number of viewers per second")
        }
        _ => {}
    }
    if !(a.target_buffer.is_finite() && a.target_buffer > 0.0) {
        anyhow::bail!("--target-buffer must be positive");
    }
    if !(a.startup_buffer.is_finite() && a.startup_buffer >= 0.0) {
        anyhow::bail!("--startup-buffer must be zero or positive");
    }
    if !(a.abr_safety > 0.0 && a.abr_safety <= 1.0) {
        anyhow::bail!("--abr-safety must be in (0, 1]");
    }
    if !(0.0..=1.0).contains(&a.seek_probability) {
        anyhow::bail!("--seek-probability must be in [0, 1]");
    }
    if a.link_kbps == Some(0) {
        anyhow::bail!("--link-kbps must be positive");
    }
    if a.find_capacity && a.capacity_step <= 1.0 {
        anyhow::bail!("--capacity-step must be above 1");
    }
    if a.threads == 0 {
        anyhow::bail!("--threads must be at least 1");
    }
    Ok(uri)
}

/// Runs [`PlayArgs`] on its own runtime: one run, or a capacity search.
pub fn run_cli(args: PlayArgs) -> anyhow::Result<()> {
    let uri = check(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?;
    let report = if args.find_capacity {
        rt.block_on(find_capacity(&args, &uri))?
    } else {
        rt.block_on(run(&args, &uri))?
    };
    println!("{}", report.summary());
    if let Some(p) = &args.report {
        std::fs::write(p, serde_json::to_vec_pretty(&report.json())?)?;
    }
    if let Some(p) = &args.html {
        std::fs::write(p, report.html())?;
    }
    Ok(())
}

/// Raises the closed model's viewers by `--capacity-step` until the late-segment or
/// rebuffer ratio passes its limit (or the generator cannot keep up), and reports the last
/// level that held, with every step.
async fn find_capacity(args: &PlayArgs, uri: &http::Uri) -> anyhow::Result<PlayReport> {
    let mut n = args.viewers.unwrap_or(1).max(1);
    let mut held: Option<PlayReport> = None;
    let mut steps = Vec::new();
    loop {
        let mut a = args.clone();
        a.viewers = Some(n);
        let r = run(&a, uri).await?;
        let late = r.late_ratio();
        let rebuffer = r.rebuffer_ratio();
        let ok =
            late <= args.max_late_ratio && rebuffer <= args.max_rebuffer_ratio && r.failed() == 0;
        eprintln!(
            "capacity: {n} viewers: late {:.2} %, rebuffer {:.3} %, failed {}, generator {} -> {}",
            late * 100.0,
            rebuffer * 100.0,
            r.failed(),
            if r.valid() { "valid" } else { "INVALID" },
            if ok { "held" } else { "broke" }
        );
        steps.push(serde_json::json!({
            "viewers": n, "late_segment_ratio": late, "rebuffer_ratio": rebuffer,
            "failed": r.failed(), "valid": r.valid(), "held": ok,
        }));
        if !r.valid() {
            let mut out = held.unwrap_or(r);
            out.capacity = Some(report::Capacity {
                viewers: out.capacity_level(),
                limited_by: "generator".into(),
                steps,
            });
            return Ok(out);
        }
        if !ok || n >= args.max_viewers {
            let limited_by = if ok { "max_viewers" } else { "qoe" };
            let mut out = if ok { r } else { held.unwrap_or(r) };
            let level = if ok || out.capacity_level() < n {
                out.capacity_level()
            } else {
                0
            };
            out.capacity = Some(report::Capacity {
                viewers: level,
                limited_by: limited_by.into(),
                steps,
            });
            return Ok(out);
        }
        held = Some(r);
        n = ((n as f64 * args.capacity_step).ceil() as u64)
            .max(n + 1)
            .min(args.max_viewers);
    }
}

fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |v: nix::sys::time::TimeVal| v.tv_sec() as f64 + v.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// One run.
pub async fn run(args: &PlayArgs, uri: &http::Uri) -> anyhow::Result<PlayReport> {
    let ep = Arc::new(
        Endpoint::new(uri, args.protocol, args.server_name.as_deref())
            .map_err(|e| anyhow::anyhow!("{}: {e}", args.url))?,
    );
    let creds = if let Some(t) = &args.token {
        Creds::Fixed(t.clone())
    } else if let Some(k) = &args.mint_key {
        Creds::Mint(Box::new(
            creds::Minter::load(
                k,
                &args.mint_kid,
                &args.mint_issuer,
                &args.mint_audience,
                args.mint_scope.clone(),
                args.token_ttl,
            )
            .map_err(|e| anyhow::anyhow!("--mint-key: {e}"))?,
        ))
    } else if args.wallet {
        let base = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        Creds::Wallet {
            http: reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .build()?,
            base,
            chain: args.wallet_chain.clone(),
        }
    } else {
        Creds::None
    };
    let trace = match &args.trace {
        Some(p) => Some(Mutex::new(std::io::BufWriter::new(std::fs::File::create(
            p,
        )?))),
        None => None,
    };
    let (cut_tx, cut) = tokio::sync::watch::channel(false);
    let cid = uri.path().to_owned();
    let ctx = Arc::new(Ctx {
        url: args.url.clone(),
        epoch: Instant::now(),
        cfg: viewer_config(args),
        ep,
        creds,
        token_in: args.token_in,
        cmcd: args.cmcd,
        link_kbps: args.link_kbps,
        stats: Mutex::new(Stats::new()),
        live: Live::default(),
        trace,
        cid,
        cut,
        timeline: Mutex::new(Vec::new()),
    });
    let cpu0 = cpu_seconds();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
        - ctx.epoch.elapsed().as_secs_f64() * 1000.0;
    let progress = {
        let ctx = Arc::clone(&ctx);
        let quiet = args.quiet;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = [0u64; 5];
            loop {
                tick.tick().await;
                let l = &ctx.live;
                let now = [
                    l.requests.load(Ordering::Relaxed),
                    l.bytes.load(Ordering::Relaxed),
                    l.segments.load(Ordering::Relaxed),
                    l.late.load(Ordering::Relaxed),
                    l.stalls.load(Ordering::Relaxed),
                ];
                let d: Vec<u64> = now.iter().zip(last).map(|(a, b)| a - b).collect();
                last = now;
                let p = report::Point {
                    t: ctx.epoch.elapsed().as_secs_f64(),
                    active: l.active.load(Ordering::Relaxed),
                    rps: d[0] as f64,
                    mbps: d[1] as f64 / 1e6,
                    late_pct: if d[2] > 0 {
                        d[3] as f64 * 100.0 / d[2] as f64
                    } else {
                        0.0
                    },
                    stalls: d[4],
                };
                if !quiet {
                    eprintln!(
                        "  {:5.0} s: {} viewers, {:.0} req/s, {:.1} MB/s, late {:.1} %, stalls {} (total {})",
                        p.t, p.active, p.rps, p.mbps, p.late_pct, p.stalls, now[4]
                    );
                }
                ctx.timeline.lock().expect("not poisoned").push(p);
            }
        })
    };
    let mut viewers = tokio::task::JoinSet::new();
    let mut rng = crate::player::Rng::new(args.seed);
    let end = args.duration.as_secs_f64();
    let ramp = args.ramp.as_secs_f64();
    let mut n = 0u64;
    if let Some(rate) = args.rate {
        // Open model: arrivals at their scheduled times, whatever the server does.
        let mut t = 0.0;
        loop {
            let r = if ramp > 0.0 {
                (rate * (t / ramp).min(1.0)).max(rate * 0.02)
            } else {
                rate
            };
            t += match args.arrivals {
                Arrivals::Poisson => rng.exponential(1.0 / r),
                Arrivals::Constant => 1.0 / r,
            };
            if t >= end {
                break;
            }
            tokio::time::sleep_until(ctx.instant(t).into()).await;
            let (ctx, seed) = (Arc::clone(&ctx), rng.next_u64());
            viewers.spawn(viewer_task(ctx, n, t, seed));
            n += 1;
        }
    } else {
        // Closed model: N slots, each replacing its viewer when it leaves.
        let total = args.viewers.unwrap_or(1);
        for k in 0..total {
            let start = if total > 1 {
                ramp * k as f64 / (total - 1) as f64
            } else {
                0.0
            };
            let (ctx, seed) = (Arc::clone(&ctx), rng.next_u64());
            let first = k * 1_000_000;
            viewers.spawn(async move {
                let mut t = start;
                let mut i = 0;
                let mut seed = seed;
                while t < end && !*ctx.cut.borrow() {
                    tokio::time::sleep_until(ctx.instant(t).into()).await;
                    viewer_task(Arc::clone(&ctx), first + i, t, seed).await;
                    i += 1;
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    t = ctx.secs(Instant::now());
                }
            });
        }
        tokio::time::sleep_until(ctx.instant(end).into()).await;
    }
    // Arrivals are over: let the viewers finish, up to the drain time, then cut the rest
    // (they stop and count what they watched).
    let drained = tokio::time::timeout(args.drain, async {
        while viewers.join_next().await.is_some() {}
    })
    .await;
    let mut cut = 0;
    if drained.is_err() {
        cut = ctx.live.active.load(Ordering::Relaxed);
        let _ = cut_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            while viewers.join_next().await.is_some() {}
        })
        .await;
        viewers.abort_all();
    }
    let wall = ctx.epoch.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / wall / args.threads as f64;
    progress.abort();
    let timeline = std::mem::take(&mut *ctx.timeline.lock().expect("not poisoned"));
    if let Some(t) = &ctx.trace {
        t.lock().expect("not poisoned").flush()?;
    }
    let stats = std::mem::replace(&mut *ctx.stats.lock().expect("not poisoned"), Stats::new());
    Ok(PlayReport::new(
        args,
        stats,
        cut,
        wall,
        cpu,
        timeline,
        started_unix_ms,
    ))
}

/// Counts a viewer as active while it lives; a cut viewer (aborted) still leaves the count.
struct Active<'a>(&'a Live);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

fn add_token(url: &str, token: &str) -> String {
    if url.contains("token=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}token={token}")
}

fn add_query(url: &str, k: &str, v: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{k}={v}")
}

/// The path of a URL without its query (no tokens in traces).
fn path_only(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split(['?', '#']).next().unwrap_or(path)
}

/// The edge's JSON `reason`, else `http_<status>`.
fn reason_of(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("http_{status}"))
}

struct Done {
    id: u64,
    resp: Response,
    at: Instant,
}

async fn viewer_task(ctx: Arc<Ctx>, n: u64, arrival: f64, seed: u64) {
    ctx.live.active.fetch_add(1, Ordering::Relaxed);
    let _active = Active(&ctx.live);
    ctx.stats.lock().expect("not poisoned").started += 1;
    let token = match &ctx.creds {
        Creds::None => Ok(None),
        Creds::Fixed(t) => Ok(Some(t.clone())),
        Creds::Mint(m) => m.mint(n).map(Some),
        Creds::Wallet { http, base, chain } => {
            creds::wallet_sign_in(http, base, chain).await.map(Some)
        }
    };
    let token = match token {
        Ok(t) => t,
        Err(reason) => {
            let mut s = ctx.stats.lock().expect("not poisoned");
            s.failed += 1;
            *s.errors.entry(reason.clone()).or_default() += 1;
            if s.failures.len() < 20 {
                s.failures
                    .push(serde_json::json!({"viewer": n, "kind": "auth", "reason": reason}));
            }
            return;
        }
    };
    let session = CmcdSession {
        sid: format!("{:016x}-{n}", seed),
        cid: ctx.cid.clone(),
    };
    let conns = Arc::new(Conns::new(Arc::clone(&ctx.ep)));
    let link = ctx.link_kbps.map(|k| Arc::new(Link::new(k)));
    let mut v = Viewer::new(ctx.cfg.clone(), ctx.url.clone(), arrival, seed);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let mut fetches = tokio::task::JoinSet::new();
    let mut cut = ctx.cut.clone();
    loop {
        let now = ctx.secs(Instant::now());
        while let Some(req) = v.poll_request(now) {
            let (ctx2, conns, link, tx) = (
                Arc::clone(&ctx),
                Arc::clone(&conns),
                link.clone(),
                tx.clone(),
            );
            let (token, session) = (token.clone(), session.clone());
            fetches.spawn(async move {
                let id = req.id;
                let resp = fetch(&ctx2, n, &conns, link.as_deref(), req, token, &session).await;
                let _ = tx.send(Done {
                    id,
                    resp,
                    at: Instant::now(),
                });
            });
        }
        while let Some(e) = v.poll_event() {
            on_event(&ctx, n, &v, e);
        }
        if v.is_done() {
            break;
        }
        let wake = v.poll_timeout().map(|t| ctx.instant(t));
        tokio::select! {
            Some(d) = rx.recv() => {
                let t = ctx.secs(d.at);
                v.on_response(d.id, t.max(now), d.resp);
            }
            () = async {
                match wake {
                    Some(w) => tokio::time::sleep_until(w.into()).await,
                    None => std::future::pending().await,
                }
            } => {
                let late = Instant::now().saturating_duration_since(wake.expect("woken by it"));
                let _ = ctx.stats.lock().expect("not poisoned").lag.record(late.as_micros().max(1) as u64);
                v.handle_timeout(ctx.secs(Instant::now()));
            }
            _ = cut.changed() => break,
        }
    }
    fetches.abort_all();
    let st = v.stats();
    let mut s = ctx.stats.lock().expect("not poisoned");
    s.watched_s += st.watched;
    s.stalled_s += st.stalled;
    s.seek_wait_s += st.seek_wait;
}

fn on_event(ctx: &Ctx, n: u64, v: &Viewer, e: Event) {
    let mut s = ctx.stats.lock().expect("not poisoned");
    match e {
        Event::Started { startup } => {
            let _ = s.startup.record((startup * 1e6).max(1.0) as u64);
        }
        Event::StallStarted => {
            s.stalls += 1;
            ctx.live.stalls.fetch_add(1, Ordering::Relaxed);
        }
        Event::StallEnded { .. } | Event::Switched { .. } => {}
        Event::Seeked { .. } => s.seeks += 1,
        Event::SegmentDone {
            media,
            late,
            bandwidth,
            duration,
        } => {
            s.segments += 1;
            ctx.live.segments.fetch_add(1, Ordering::Relaxed);
            if late {
                s.late += 1;
                ctx.live.late.fetch_add(1, Ordering::Relaxed);
            }
            if media == Media::Video {
                s.bit_seconds += bandwidth as f64 * duration;
                s.video_seconds += duration;
                *s.renditions.entry(bandwidth / 1000).or_default() += 1;
            }
        }
        Event::Finished(Outcome::Completed) => s.completed += 1,
        Event::Finished(Outcome::Failed {
            kind,
            status,
            reason,
        }) => {
            s.failed += 1;
            *s.errors.entry(reason.clone()).or_default() += 1;
            if s.failures.len() < 20 {
                s.failures.push(serde_json::json!({
                    "viewer": n, "kind": kind.name(), "status": status, "reason": reason,
                    "watched_s": v.stats().watched,
                }));
            }
        }
    }
}

/// Fetches one object for a viewer, following redirects, and records its latencies from
/// the time the player needed it.
async fn fetch(
    ctx: &Ctx,
    n: u64,
    conns: &Conns,
    link: Option<&Link>,
    req: Request,
    token: Option<String>,
    session: &CmcdSession,
) -> Response {
    let sent = Instant::now();
    let needed = ctx.instant(req.needed_at);
    let mut url = req.res.url.clone();
    let mut headers: Vec<(String, String)> = Vec::new();
    if let Some(t) = &token {
        match ctx.token_in {
            TokenIn::Query => url = add_token(&url, t),
            TokenIn::Header => headers.push(("authorization".into(), format!("Bearer {t}"))),
        }
    }
    if let Some(r) = req.res.range {
        headers.push(("range".into(), r.header()));
    }
    match ctx.cmcd {
        CmcdMode::Off => {}
        CmcdMode::Query => {
            url = add_query(
                &url,
                "CMCD",
                &cmcd::percent_encode(&cmcd::query_value(&req.cmcd, session)),
            );
        }
        CmcdMode::Header => {
            for (k, v) in cmcd::headers(&req.cmcd, session) {
                headers.push((k.to_owned(), v));
            }
        }
    }
    let keep_body = matches!(req.kind, Kind::Master | Kind::Playlist);
    let mut result = Err(String::new());
    let mut final_url = req.res.url.clone();
    for _ in 0..5 {
        let uri: http::Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                result = Err(format!("bad_url: {e}"));
                break;
            }
        };
        result = conns.get(&uri, &headers, keep_body, link).await;
        match &result {
            Ok(g) if (300..400).contains(&g.status) && g.location.is_some() => {
                let loc = g.location.clone().expect("checked");
                match crate::player::resolve(&url, &loc) {
                    // The viewers' connections go to the one endpoint they were started
                    // against: a redirect elsewhere fails clearly instead of being sent to
                    // the wrong server.
                    Ok(next) if authority(&next) != authority(&req.res.url) => {
                        result = Err(format!(
                            "cross_host_redirect: {} is not followed (only redirects within {} are)",
                            authority(&next).unwrap_or_default(),
                            authority(&req.res.url).unwrap_or_default()
                        ));
                        break;
                    }
                    Ok(next) => {
                        url = next.clone();
                        final_url = next;
                    }
                    Err(e) => {
                        result = Err(format!("bad_redirect: {e}"));
                        break;
                    }
                }
            }
            _ => break,
        }
    }
    let done = Instant::now();
    let ms = |t: Instant| t.saturating_duration_since(needed).as_secs_f64() * 1000.0;
    let (status_key, resp, bytes, first) = match result {
        Ok(g) if (200..300).contains(&g.status) => {
            let body = keep_body.then(|| String::from_utf8_lossy(&g.body).into_owned());
            (
                g.status.to_string(),
                Response::Ok {
                    final_url,
                    body,
                    bytes: g.bytes,
                    sent_at: ctx.secs(sent),
                },
                g.bytes,
                g.first_byte,
            )
        }
        Ok(g) => (
            g.status.to_string(),
            Response::Failed {
                status: Some(g.status),
                reason: reason_of(g.status, &g.body),
                retryable: g.status >= 500 || g.status == 429,
            },
            g.bytes,
            g.first_byte,
        ),
        Err(e) => (
            "transport_error".to_owned(),
            Response::Failed {
                status: None,
                reason: format!("transport: {e}"),
                retryable: true,
            },
            0,
            done,
        ),
    };
    ctx.live.requests.fetch_add(1, Ordering::Relaxed);
    ctx.live.bytes.fetch_add(bytes, Ordering::Relaxed);
    {
        let mut s = ctx.stats.lock().expect("not poisoned");
        *s.requests.entry(status_key.clone()).or_default() += 1;
        // Through the gate: answered, and not refused by it (or before it).
        let passed = status_key
            .parse::<u16>()
            .is_ok_and(|c| !matches!(c, 400 | 401 | 403 | 429));
        if ctx.cmcd != CmcdMode::Off && passed {
            let c = &req.cmcd;
            s.cmcd.requests += 1;
            s.cmcd.starved += u64::from(c.bs);
            s.cmcd.mtp += u64::from(c.mtp.is_some());
            if req.kind == Kind::Master {
                s.cmcd.sessions.insert(n);
            }
            if let (Kind::Segment, Some(br), Some(ObjectType::Video | ObjectType::Muxed)) =
                (req.kind, c.br, c.ot)
            {
                s.cmcd.video_br.0 += 1;
                s.cmcd.video_br.1 += br;
            }
        }
        if matches!(resp, Response::Ok { .. }) {
            let k = req.kind as usize;
            let _ = s.ttfb[k].record((ms(first) * 1000.0).max(1.0) as u64);
            let _ = s.ttlb[k].record((ms(done) * 1000.0).max(1.0) as u64);
        }
    }
    if let Some(t) = &ctx.trace {
        let line = serde_json::json!({
            "viewer": n, "kind": req.kind.name(), "media": req.media, "path": path_only(&req.res.url),
            "range": req.res.range.map(|r| r.header()), "attempt": req.attempt, "status": status_key,
            "needed_ms": req.needed_at * 1000.0, "sent_ms": ctx.secs(sent) * 1000.0,
            "ttfb_ms": ms(first), "ttlb_ms": ms(done), "bytes": bytes,
        });
        let mut w = t.lock().expect("not poisoned");
        let _ = writeln!(w, "{line}");
    }
    resp
}

/// The `host[:port]` of an absolute URL (scheme included, so http and https differ).
fn authority(url: &str) -> Option<String> {
    let u: http::Uri = url.parse().ok()?;
    Some(format!(
        "{}://{}",
        u.scheme_str()?,
        u.authority()?.as_str().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_endpoint() {
        assert_eq!(
            authority("http://Edge:8080/v/a.m3u8"),
            authority("http://edge:8080/other")
        );
        assert_ne!(
            authority("http://edge:8080/v"),
            authority("http://other:8080/v")
        );
        assert_ne!(authority("http://edge/v"), authority("https://edge/v"));
        assert_eq!(authority("/relative"), None);
    }

    #[test]
    fn urls_get_tokens_and_lose_them_in_traces() {
        assert_eq!(add_token("http://e/a.m3u8", "T"), "http://e/a.m3u8?token=T");
        assert_eq!(
            add_token("http://e/a.m3u8?x=1", "T"),
            "http://e/a.m3u8?x=1&token=T"
        );
        assert_eq!(
            add_token("http://e/a.m3u8?token=U", "T"),
            "http://e/a.m3u8?token=U"
        );
        assert_eq!(path_only("https://e:1/v/d/a.m4s?token=T"), "/v/d/a.m4s");
        assert_eq!(
            reason_of(403, br#"{"error":"x","reason":"token_expired"}"#),
            "token_expired"
        );
        assert_eq!(reason_of(502, b"<html>"), "http_502");
    }
}

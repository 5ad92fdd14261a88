//! A policy's abuse limits (`limits:`): request rates per client network, token subject and
//! wallet, for playlists and segments. The edge enforces them ([`crate::Policy::limits`]);
//! what a policy leaves unset falls back to the edge's `[edge.rate_limit]`.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::parse::{Ctx, join, object, unknown_keys};

/// The highest rate a limit may name, in requests per second (the edge's buckets count in
/// steps of 100 µs).
pub const MAX_RATE: f64 = 10_000.0;
/// The largest burst a limit may name.
pub const MAX_BURST: u32 = 1_000_000;

/// A token bucket: `per_second` requests per second on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateRule {
    /// Sustained rate, in requests per second (above 0, at most [`MAX_RATE`]).
    pub per_second: f64,
    /// Requests allowed at once from a full bucket (1 to [`MAX_BURST`]).
    pub burst: u32,
}

/// One limit of a policy: unset (the edge's applies), off, or a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum RateSetting {
    /// Not set here: the edge's configuration decides.
    #[default]
    Inherit,
    /// No limit, whatever the edge's configuration says.
    Off,
    /// This bucket.
    Limit(RateRule),
}

impl RateSetting {
    /// This setting, or `fallback` where it is unset.
    pub fn or(self, fallback: Self) -> Self {
        match self {
            Self::Inherit => fallback,
            s => s,
        }
    }

    /// The bucket in force, if any.
    pub fn rule(self) -> Option<RateRule> {
        match self {
            Self::Limit(r) => Some(r),
            Self::Inherit | Self::Off => None,
        }
    }
}

/// The limits of one request class, per key space.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateClass {
    /// Per client network (the address cut to the edge's configured prefix).
    pub per_ip: RateSetting,
    /// Per token subject (`sub`).
    pub per_subject: RateSetting,
    /// Per signed-in wallet (`sg_wallet`).
    pub per_wallet: RateSetting,
}

impl RateClass {
    /// Whether nothing is set.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }

    /// Each setting of `self`, or `fallback`'s where it is unset.
    pub fn or(self, fallback: &Self) -> Self {
        Self {
            per_ip: self.per_ip.or(fallback.per_ip),
            per_subject: self.per_subject.or(fallback.per_subject),
            per_wallet: self.per_wallet.or(fallback.per_wallet),
        }
    }
}

/// A policy's rate limits by request class.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateLimits {
    /// Master and media playlists, MPDs.
    pub playlist: RateClass,
    /// Segments, init segments and every other object.
    pub segment: RateClass,
}

/// Whose playback sessions a stream cap counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamsPer {
    /// The token's `sub` (for wallet sessions: the CAIP-10 account).
    #[default]
    Subject,
    /// The signed-in wallet's address, whatever chain it signed in on.
    Wallet,
}

/// What a new session over the cap does (`on_stream_limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverCap {
    /// It is refused (403 `stream_limit`); sessions playing go on.
    #[default]
    Refuse,
    /// The principal's oldest session at the edge the new one reaches is ended (its next
    /// request gets 403 `stream_ended`) and the new one admitted; with no session there to
    /// end (they all play at other edges), the new one is refused.
    EndOldest,
}

/// The largest stream cap a policy may set.
pub const MAX_STREAMS: u32 = 10_000;

/// Token-sharing detection (`sharing:`): one principal seen from more client networks, or
/// in more playback sessions, than a viewer plausibly has within `window` is flagged; with
/// `deny_for`, it is then refused (`token_shared`) for that long, fleet-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharing {
    /// How far back networks and sessions are remembered.
    pub window: Duration,
    /// Flag above this many distinct client networks in the window.
    pub max_networks: Option<u32>,
    /// Flag above this many distinct playback sessions in the window.
    pub max_sessions: Option<u32>,
    /// Refuse a flagged principal for this long (`None`: flag only).
    pub deny_for: Option<Duration>,
    /// Whose networks and sessions are counted.
    pub per: StreamsPer,
}

/// The most networks or sessions a sharing threshold may name (each is remembered per
/// principal until the threshold is crossed).
pub const MAX_SHARING: u32 = 1000;

/// A policy's abuse limits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Limits {
    /// Request rates.
    pub rate: RateLimits,
    /// At most this many concurrent playback sessions per [`Limits::streams_per`],
    /// fleet-wide (`max_streams`).
    pub max_streams: Option<u32>,
    /// Whose sessions `max_streams` counts.
    pub streams_per: StreamsPer,
    /// What a new session over `max_streams` does.
    pub on_stream_limit: OverCap,
    /// Token-sharing detection.
    pub sharing: Option<Sharing>,
}

impl Limits {
    /// Whether the policy sets no limit at all.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

const CLASSES: &[&str] = &["playlist", "segment"];
const SPACES: &[&str] = &["per_ip", "per_subject", "per_wallet"];

/// Reads a `limits:` mapping.
pub(crate) fn limits(cx: &mut Ctx, path: &str, v: &Value) -> Limits {
    let Some(m) = object(cx, path, v) else {
        return Limits::default();
    };
    unknown_keys(
        cx,
        path,
        m,
        &[
            "rate",
            "max_streams",
            "streams_per",
            "on_stream_limit",
            "sharing",
        ],
    );
    let mut out = Limits::default();
    if let Some(v) = m.get("max_streams") {
        match v.as_u64() {
            Some(n) if (1..=u64::from(MAX_STREAMS)).contains(&n) => {
                out.max_streams = Some(n as u32);
            }
            _ => cx.err(
                &join(path, "max_streams"),
                format!("must be a whole number from 1 to {MAX_STREAMS}"),
            ),
        }
    }
    match m.get("streams_per").map(Value::as_str) {
        None | Some(Some("subject")) => {}
        Some(Some("wallet")) => out.streams_per = StreamsPer::Wallet,
        Some(_) => cx.err(
            &join(path, "streams_per"),
            "expected \"subject\" or \"wallet\"",
        ),
    }
    if m.contains_key("streams_per") && out.max_streams.is_none() {
        cx.err(&join(path, "streams_per"), "needs max_streams");
    }
    match m.get("on_stream_limit").map(Value::as_str) {
        None | Some(Some("refuse")) => {}
        Some(Some("end_oldest")) => out.on_stream_limit = OverCap::EndOldest,
        Some(_) => cx.err(
            &join(path, "on_stream_limit"),
            "expected \"refuse\" or \"end_oldest\"",
        ),
    }
    if m.contains_key("on_stream_limit") && out.max_streams.is_none() {
        cx.err(&join(path, "on_stream_limit"), "needs max_streams");
    }
    if let Some(v) = m.get("sharing") {
        out.sharing = sharing(cx, &join(path, "sharing"), v);
    }
    if let Some(r) = m.get("rate") {
        let p = join(path, "rate");
        if let Some(r) = object(cx, &p, r) {
            unknown_keys(cx, &p, r, CLASSES);
            if let Some(c) = r.get("playlist") {
                out.rate.playlist = rate_class(cx, &join(&p, "playlist"), c);
            }
            if let Some(c) = r.get("segment") {
                out.rate.segment = rate_class(cx, &join(&p, "segment"), c);
            }
        }
    }
    out
}

/// A duration such as `90s`, `10m` or `1h 30m`, from `lo` to `hi`.
fn duration_in(
    cx: &mut Ctx,
    path: &str,
    v: &Value,
    lo: Duration,
    hi: Duration,
) -> Option<Duration> {
    let hint = || {
        format!(
            "expected a duration from {} to {} such as \"10m\"",
            humantime::format_duration(lo),
            humantime::format_duration(hi)
        )
    };
    match v.as_str().map(humantime::parse_duration) {
        Some(Ok(d)) if d >= lo && d <= hi => Some(d),
        _ => {
            cx.err(path, hint());
            None
        }
    }
}

/// Reads `sharing: {window, max_networks, max_sessions, deny_for, per}`.
fn sharing(cx: &mut Ctx, path: &str, v: &Value) -> Option<Sharing> {
    let m = object(cx, path, v)?;
    unknown_keys(
        cx,
        path,
        m,
        &["window", "max_networks", "max_sessions", "deny_for", "per"],
    );
    let secs = Duration::from_secs;
    // Every field is read, so every error is reported; any error drops the whole mapping.
    let window = match m.get("window") {
        None => Some(secs(600)),
        Some(w) => duration_in(cx, &join(path, "window"), w, secs(1), secs(86_400)),
    };
    let count = |cx: &mut Ctx, k: &str| -> Result<Option<u32>, ()> {
        match m.get(k) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=u64::from(MAX_SHARING)).contains(&n) => Ok(Some(n as u32)),
                _ => {
                    cx.err(
                        &join(path, k),
                        format!("must be a whole number from 1 to {MAX_SHARING}"),
                    );
                    Err(())
                }
            },
        }
    };
    let (max_networks, max_sessions) = (count(cx, "max_networks"), count(cx, "max_sessions"));
    if matches!((max_networks, max_sessions), (Ok(None), Ok(None))) {
        cx.err(path, "needs max_networks, max_sessions or both");
    }
    let deny_for = match m.get("deny_for") {
        None => Ok(None),
        Some(d) => duration_in(cx, &join(path, "deny_for"), d, secs(1), secs(7 * 86_400))
            .map(Some)
            .ok_or(()),
    };
    let per = match m.get("per").map(Value::as_str) {
        None | Some(Some("subject")) => Some(StreamsPer::Subject),
        Some(Some("wallet")) => Some(StreamsPer::Wallet),
        Some(_) => {
            cx.err(&join(path, "per"), "expected \"subject\" or \"wallet\"");
            None
        }
    };
    let (Some(window), Ok(max_networks), Ok(max_sessions), Ok(deny_for), Some(per)) =
        (window, max_networks, max_sessions, deny_for, per)
    else {
        return None;
    };
    if max_networks.is_none() && max_sessions.is_none() {
        return None;
    }
    Some(Sharing {
        window,
        max_networks,
        max_sessions,
        deny_for,
        per,
    })
}

/// Reads `{per_ip, per_subject, per_wallet}`, each `off` or `{rate, burst}`.
pub(crate) fn rate_class(cx: &mut Ctx, path: &str, v: &Value) -> RateClass {
    let Some(m) = object(cx, path, v) else {
        return RateClass::default();
    };
    unknown_keys(cx, path, m, SPACES);
    let get = |cx: &mut Ctx, k: &str| {
        m.get(k).map_or(RateSetting::Inherit, |v| {
            rate_setting(cx, &join(path, k), v)
        })
    };
    RateClass {
        per_ip: get(cx, "per_ip"),
        per_subject: get(cx, "per_subject"),
        per_wallet: get(cx, "per_wallet"),
    }
}

fn rate_setting(cx: &mut Ctx, path: &str, v: &Value) -> RateSetting {
    match v {
        Value::String(s) if s == "off" => return RateSetting::Off,
        Value::Bool(false) => return RateSetting::Off,
        Value::Object(_) => {}
        _ => {
            cx.err(path, "expected \"off\" or a mapping {rate, burst}");
            return RateSetting::Inherit;
        }
    }
    let m = object(cx, path, v).expect("checked above");
    unknown_keys(cx, path, m, &["rate", "burst"]);
    let rate = match m.get("rate").and_then(Value::as_f64) {
        Some(r) if r > 0.0 && r <= MAX_RATE => Some(r),
        Some(_) => {
            cx.err(
                &join(path, "rate"),
                format!("must be above 0 and at most {MAX_RATE} requests per second"),
            );
            None
        }
        None => {
            cx.err(
                &join(path, "rate"),
                "required: requests per second (a number)",
            );
            None
        }
    };
    let burst = match m.get("burst") {
        None => rate.map(|r| r.ceil().max(1.0) as u32),
        Some(b) => match b.as_u64() {
            Some(b) if (1..=u64::from(MAX_BURST)).contains(&b) => Some(b as u32),
            _ => {
                cx.err(
                    &join(path, "burst"),
                    format!("must be a whole number from 1 to {MAX_BURST}"),
                );
                None
            }
        },
    };
    match (rate, burst) {
        (Some(per_second), Some(burst)) => RateSetting::Limit(RateRule { per_second, burst }),
        _ => RateSetting::Inherit,
    }
}

/// The canonical form of `l` (None when nothing is set).
pub(crate) fn limits_value(l: &Limits) -> Option<Value> {
    if l.is_unset() {
        return None;
    }
    let mut rate = Map::new();
    for (name, c) in [("playlist", &l.rate.playlist), ("segment", &l.rate.segment)] {
        if !c.is_unset() {
            rate.insert(name.into(), rate_class_value(c));
        }
    }
    let mut m = Map::new();
    if !rate.is_empty() {
        m.insert("rate".into(), Value::Object(rate));
    }
    if let Some(n) = l.max_streams {
        m.insert("max_streams".into(), n.into());
        if l.streams_per == StreamsPer::Wallet {
            m.insert("streams_per".into(), "wallet".into());
        }
        if l.on_stream_limit == OverCap::EndOldest {
            m.insert("on_stream_limit".into(), "end_oldest".into());
        }
    }
    if let Some(sh) = &l.sharing {
        let d = |d: Duration| Value::from(humantime::format_duration(d).to_string());
        let mut v = Map::new();
        v.insert("window".into(), d(sh.window));
        if let Some(n) = sh.max_networks {
            v.insert("max_networks".into(), n.into());
        }
        if let Some(n) = sh.max_sessions {
            v.insert("max_sessions".into(), n.into());
        }
        if let Some(t) = sh.deny_for {
            v.insert("deny_for".into(), d(t));
        }
        if sh.per == StreamsPer::Wallet {
            v.insert("per".into(), "wallet".into());
        }
        m.insert("sharing".into(), Value::Object(v));
    }
    Some(Value::Object(m))
}

fn rate_class_value(c: &RateClass) -> Value {
    let mut m = Map::new();
    for (k, s) in [
        ("per_ip", c.per_ip),
        ("per_subject", c.per_subject),
        ("per_wallet", c.per_wallet),
    ] {
        match s {
            RateSetting::Inherit => {}
            RateSetting::Off => {
                m.insert(k.into(), "off".into());
            }
            RateSetting::Limit(r) => {
                let mut b = Map::new();
                b.insert("rate".into(), r.per_second.into());
                b.insert("burst".into(), r.burst.into());
                m.insert(k.into(), Value::Object(b));
            }
        }
    }
    Value::Object(m)
}

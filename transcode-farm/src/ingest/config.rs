//! `[transcode.ingest]`: the tus server's typed configuration. Every default is here.

use std::net::SocketAddr;
use std::time::Duration;

use streamgate_config::{Errors, Fields, byte_size, duration, socket_addr, string, strings};

/// The tus ingest's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// Where the tus server listens (default `0.0.0.0:8090`).
    pub listen: SocketAddr,
    /// The largest `Upload-Length` accepted (`Tus-Max-Size`; default 20 GiB).
    pub max_size: u64,
    /// An unfinished upload expires this long after its last PATCH (default 24 h).
    pub expire_after: Duration,
    /// On a filesystem origin, a long PATCH is made durable (`fdatasync` and a record
    /// write) every this many bytes (default 64 MiB); on S3, every part is.
    pub checkpoint_every: u64,
    /// Whether filesystem checkpoints `fdatasync` (default true). Off, offsets survive a
    /// crash of the process but not one of the machine.
    pub fsync: bool,
    /// S3 part size (default 8 MiB, at least 5 MiB); raised for uploads that would need
    /// more than 10 000 parts.
    pub s3_part_size: u64,
    /// Browser origins allowed to upload (CORS); `["*"]` allows any. Empty: no CORS.
    pub cors_allow_origins: Vec<String>,
    /// The ladder presets an upload may name (default `["default"]`).
    pub ladders: Vec<String>,
    /// The ladder of an upload that names none (default `"default"`).
    pub default_ladder: String,
    /// How long a request waits for another one on the same upload to let go (default 5 s).
    pub lock_wait: Duration,
    /// A PATCH body that sends nothing for this long is ended, keeping what arrived
    /// (default 60 s).
    pub idle_timeout: Duration,
    /// How often expired uploads are looked for and removed (default 60 s).
    pub sweep_interval: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8090)),
            max_size: 20 << 30,
            expire_after: Duration::from_secs(24 * 3600),
            checkpoint_every: 64 << 20,
            fsync: true,
            s3_part_size: 8 << 20,
            cors_allow_origins: Vec::new(),
            ladders: vec!["default".to_owned()],
            default_ladder: "default".to_owned(),
            lock_wait: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

fn is_ladder_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl IngestConfig {
    /// Reads `[transcode.ingest]` from `t`, recording every problem.
    pub fn read(t: &mut Fields<'_>, errs: &mut Errors) -> Self {
        let d = Self::default();
        let path = t.path().to_owned();
        let at = |k: &str| format!("{path}.{k}");
        let cfg = Self {
            listen: t.get(errs, "listen", d.listen, socket_addr),
            max_size: t.get(errs, "max_size", d.max_size, byte_size),
            expire_after: t.get(errs, "expire_after", d.expire_after, duration),
            checkpoint_every: t.get(errs, "checkpoint_every", d.checkpoint_every, byte_size),
            fsync: t.get(errs, "fsync", d.fsync, streamgate_config::boolean),
            s3_part_size: t.get(errs, "s3_part_size", d.s3_part_size, byte_size),
            cors_allow_origins: t.get(errs, "cors_allow_origins", d.cors_allow_origins, strings),
            ladders: t.get(errs, "ladders", d.ladders, strings),
            default_ladder: t.get(errs, "default_ladder", d.default_ladder, string),
            lock_wait: t.get(errs, "lock_wait", d.lock_wait, duration),
            idle_timeout: t.get(errs, "idle_timeout", d.idle_timeout, duration),
            sweep_interval: t.get(errs, "sweep_interval", d.sweep_interval, duration),
        };
        if cfg.max_size == 0 {
            errs.push(at("max_size"), "must be more than 0");
        }
        if cfg.expire_after < Duration::from_secs(1) {
            errs.push(at("expire_after"), "must be at least 1s");
        }
        if cfg.checkpoint_every < 1 << 20 {
            errs.push(at("checkpoint_every"), "must be at least 1MiB");
        }
        if !(streamgate_origin::staging::MIN_PART..=streamgate_origin::staging::MAX_PART)
            .contains(&cfg.s3_part_size)
        {
            errs.push(
                at("s3_part_size"),
                "must be from 5MiB to 5GiB (S3's part limits)",
            );
        }
        for (i, o) in cfg.cors_allow_origins.iter().enumerate() {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && !o.contains(char::is_whitespace));
            if !ok {
                errs.push(
                    format!("{path}.cors_allow_origins[{i}]"),
                    format!("{o:?} is not \"*\" or an origin like \"https://app.example\""),
                );
            }
        }
        if cfg.ladders.is_empty() {
            errs.push(at("ladders"), "needs at least one ladder preset name");
        }
        for (i, l) in cfg.ladders.iter().enumerate() {
            if !is_ladder_name(l) {
                errs.push(
                    format!("{path}.ladders[{i}]"),
                    format!("{l:?}: 1 to 64 characters of a-z, 0-9, '-', '_', '.'"),
                );
            }
        }
        if !cfg.ladders.contains(&cfg.default_ladder) {
            errs.push(
                at("default_ladder"),
                format!("{:?} is not in ladders", cfg.default_ladder),
            );
        }
        for (k, v) in [
            ("lock_wait", cfg.lock_wait),
            ("idle_timeout", cfg.idle_timeout),
            ("sweep_interval", cfg.sweep_interval),
        ] {
            if v.is_zero() {
                errs.push(at(k), "must be more than 0s");
            }
        }
        cfg
    }
}

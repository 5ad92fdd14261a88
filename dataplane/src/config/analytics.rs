//! `[edge.analytics]`: QoE aggregates from the CMCD players send (docs/ANALYTICS.md).

use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// QoE-analytics settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsConfig {
    /// Whether CMCD is read and aggregated at all.
    pub enabled: bool,
    /// Assets with their own label at most; the rest are counted under `_other`.
    pub max_assets: usize,
    /// Playback sessions followed at once for startup times (a fixed table: the oldest
    /// go first beyond it).
    pub session_slots: usize,
    /// A session without a request for this long is forgotten (a later request starts
    /// a new one).
    pub idle_timeout: Duration,
    /// The longest startup recorded: a first segment later than this after the first
    /// manifest is not a startup.
    pub startup_timeout: Duration,
    /// How often this edge's aggregates are published to `analytics/<edge-id>` (when
    /// they changed).
    pub publish_interval: Duration,
    /// The lease of that key: a dead edge's figures vanish within it.
    pub lease_ttl: Duration,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_assets: 1000,
            session_slots: 1 << 18,
            idle_timeout: Duration::from_secs(300),
            startup_timeout: Duration::from_secs(60),
            publish_interval: Duration::from_secs(10),
            lease_ttl: Duration::from_secs(30),
        }
    }
}

impl AnalyticsConfig {
    /// Reads `[edge.analytics]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut k = e.table(errs, "analytics");
        let d = Self::default();
        let path = k.path().to_owned();
        let cfg = Self {
            enabled: k.get(errs, "enabled", d.enabled, boolean),
            max_assets: k.get(errs, "max_assets", d.max_assets as u64, int_in(1, 100_000)) as usize,
            session_slots: k.get(
                errs,
                "session_slots",
                d.session_slots as u64,
                int_in(8, 1 << 28),
            ) as usize,
            idle_timeout: k.get(errs, "idle_timeout", d.idle_timeout, duration),
            startup_timeout: k.get(errs, "startup_timeout", d.startup_timeout, duration),
            publish_interval: k.get(errs, "publish_interval", d.publish_interval, duration),
            lease_ttl: k.get(errs, "lease_ttl", d.lease_ttl, duration),
        };
        let within = |errs: &mut Errors, name: &str, v: Duration, lo: Duration, hi: Duration| {
            if v < lo || v > hi {
                errs.push(
                    format!("{path}.{name}"),
                    format!(
                        "must be from {} to {}",
                        humantime::format_duration(lo),
                        humantime::format_duration(hi)
                    ),
                );
            }
        };
        let s = Duration::from_secs;
        within(errs, "idle_timeout", cfg.idle_timeout, s(1), s(86_400));
        within(
            errs,
            "startup_timeout",
            cfg.startup_timeout,
            s(1),
            cfg.idle_timeout.max(s(1)),
        );
        within(
            errs,
            "publish_interval",
            cfg.publish_interval,
            Duration::from_millis(100),
            s(600),
        );
        if cfg.lease_ttl < s(2) || cfg.lease_ttl.subsec_nanos() != 0 {
            errs.push(
                format!("{path}.lease_ttl"),
                "must be whole seconds, at least 2s",
            );
        }
        k.finish(errs);
        cfg
    }
}

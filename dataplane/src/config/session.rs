//! `[edge.sessions]`: playback sessions and the concurrent-stream caps of policies.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// Playback-session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// A session without a request for this long has ended.
    pub idle_timeout: Duration,
    /// How often this edge's session counts are published (when they changed).
    pub publish_interval: Duration,
    /// The lease of this edge's `streams/<edge-id>` key: a dead edge's sessions are
    /// released within it.
    pub lease_ttl: Duration,
    /// Sessions tracked at most (the oldest go first beyond it).
    pub max_tracked: u64,
    /// Leading bits of an IPv4 address that make one client network for a session.
    pub ipv4_prefix: u8,
    /// The same for IPv6.
    pub ipv6_prefix: u8,
    /// The fleet's secret for signing session ids (at least 32 bytes). Without it each
    /// edge makes its own at start, and its ids are valid at that edge only.
    pub secret_file: Option<PathBuf>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(45),
            publish_interval: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(10),
            max_tracked: 1_000_000,
            ipv4_prefix: 24,
            ipv6_prefix: 48,
            secret_file: None,
        }
    }
}

impl SessionConfig {
    /// Reads `[edge.sessions]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut k = e.table(errs, "sessions");
        let d = Self::default();
        let path = k.path().to_owned();
        let (ipv4_prefix, ipv6_prefix) =
            super::limit::read_prefixes(&mut k, errs, (d.ipv4_prefix, d.ipv6_prefix));
        let cfg = Self {
            idle_timeout: k.get(errs, "idle_timeout", d.idle_timeout, duration),
            publish_interval: k.get(errs, "publish_interval", d.publish_interval, duration),
            lease_ttl: k.get(errs, "lease_ttl", d.lease_ttl, duration),
            max_tracked: k.get(errs, "max_tracked", d.max_tracked, int_in(1, 1 << 32)),
            ipv4_prefix,
            ipv6_prefix,
            secret_file: k.opt(errs, "secret_file", reader::path),
        };
        if cfg.idle_timeout < Duration::from_secs(1) || cfg.idle_timeout > Duration::from_secs(3600)
        {
            errs.push(format!("{path}.idle_timeout"), "must be from 1s to 1h");
        }
        if cfg.publish_interval < Duration::from_millis(50)
            || cfg.publish_interval > Duration::from_secs(60)
        {
            errs.push(
                format!("{path}.publish_interval"),
                "must be from 50ms to 60s",
            );
        }
        if cfg.lease_ttl < Duration::from_secs(2) || cfg.lease_ttl.subsec_nanos() != 0 {
            errs.push(
                format!("{path}.lease_ttl"),
                "must be whole seconds, at least 2s",
            );
        }
        k.finish(errs);
        cfg
    }

    /// The signing secret: the file's bytes, or fresh random ones without a file.
    pub fn secret(&self) -> Result<Vec<u8>, String> {
        match &self.secret_file {
            None => {
                use ring::rand::SecureRandom;
                let mut b = vec![0u8; 32];
                ring::rand::SystemRandom::new()
                    .fill(&mut b)
                    .map_err(|_| "no system randomness".to_owned())?;
                Ok(b)
            }
            Some(p) => {
                let b = std::fs::read(p).map_err(|e| {
                    format!("cannot read edge.sessions.secret_file {}: {e}", p.display())
                })?;
                if b.len() < 32 {
                    return Err(format!(
                        "edge.sessions.secret_file {} holds {} bytes; at least 32 are needed",
                        p.display(),
                        b.len()
                    ));
                }
                Ok(b)
            }
        }
    }
}

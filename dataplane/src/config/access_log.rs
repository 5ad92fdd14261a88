//! `[edge.access_log]`: one JSON line per request, optional.

use std::path::PathBuf;

use super::reader::{self, Errors, Fields};

/// Where and how the access log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    /// The file lines are appended to; `"-"` is standard output. Unset: no access log.
    pub path: Option<PathBuf>,
    /// Leading bits of a client's IPv4 address that are logged (the rest are zeroed): 32
    /// logs it whole, 24 its /24, 0 nothing of it.
    pub ipv4_prefix: u8,
    /// The same for IPv6.
    pub ipv6_prefix: u8,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            path: None,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
        }
    }
}

impl AccessLogConfig {
    /// Reads `[edge.access_log]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut k = e.table(errs, "access_log");
        let d = Self::default();
        let cfg = Self {
            path: k.opt(errs, "path", path),
            ipv4_prefix: k.get(errs, "ipv4_prefix", u64::from(d.ipv4_prefix), int_in(0, 32)) as u8,
            ipv6_prefix: k.get(
                errs,
                "ipv6_prefix",
                u64::from(d.ipv6_prefix),
                int_in(0, 128),
            ) as u8,
        };
        k.finish(errs);
        cfg
    }
}

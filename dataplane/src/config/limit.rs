//! `[edge.rate_limit]`: token buckets per client network, token subject and wallet, for
//! playlists, segments and sign-in. A policy's `limits.rate` overrides them for its assets.

use streamgate_policy::limits::RateClass;

use super::reader::{self, Errors, Fields};

/// The edge's rate limits; every limit is off unless set.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    /// Playlists and MPDs.
    pub playlist: RateClass,
    /// Segments, init segments and every other object.
    pub segment: RateClass,
    /// `/auth/challenge` and `/auth/verify` (per client network only).
    pub sign_in: RateClass,
    /// Buckets in the table (its memory is 8 bytes each, fixed at start).
    pub table_slots: u64,
    /// Leading bits of an IPv4 address that make one client network.
    pub ipv4_prefix: u8,
    /// Leading bits of an IPv6 address that make one client network.
    pub ipv6_prefix: u8,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            playlist: RateClass::default(),
            segment: RateClass::default(),
            sign_in: RateClass::default(),
            table_slots: 1 << 18,
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }
}

impl RateLimitConfig {
    /// Whether any limit is set here (policies may still set their own).
    pub fn any(&self) -> bool {
        !(self.playlist.is_unset() && self.segment.is_unset() && self.sign_in.is_unset())
    }

    /// Reads `[edge.rate_limit]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut r = e.table(errs, "rate_limit");
        let d = Self::default();
        let path = r.path().to_owned();
        let class = |r: &mut Fields<'_>, errs: &mut Errors, key: &'static str| {
            let raw = r.opt(errs, key, |v| Ok(v.clone()))?;
            let json = serde_json::to_value(&raw).ok()?;
            match streamgate_policy::parse_rate_class(&format!("{path}.{key}"), &json) {
                Ok(c) => Some(c),
                Err(es) => {
                    for e in es.0 {
                        errs.push(e.path, e.message);
                    }
                    None
                }
            }
        };
        let playlist = class(&mut r, errs, "playlist").unwrap_or_default();
        let segment = class(&mut r, errs, "segment").unwrap_or_default();
        let sign_in = class(&mut r, errs, "sign_in").unwrap_or_default();
        if !sign_in.per_subject.eq(&Default::default())
            || !sign_in.per_wallet.eq(&Default::default())
        {
            errs.push(
                format!("{path}.sign_in"),
                "sign-in is limited per_ip only (it comes before any token)",
            );
        }
        let (ipv4_prefix, ipv6_prefix) =
            read_prefixes(&mut r, errs, (d.ipv4_prefix, d.ipv6_prefix));
        let cfg = Self {
            playlist,
            segment,
            sign_in,
            table_slots: r.get(errs, "table_slots", d.table_slots, int_in(64, 1 << 28)),
            ipv4_prefix,
            ipv6_prefix,
        };
        r.finish(errs);
        cfg
    }
}

/// `ipv4_prefix` and `ipv6_prefix` of a table: the leading bits of an address that make one
/// client network (8 to 32, 16 to 128), or `defaults`.
pub(super) fn read_prefixes(k: &mut Fields<'_>, errs: &mut Errors, defaults: (u8, u8)) -> (u8, u8) {
    use reader::int_in;
    let v4 = k.get(errs, "ipv4_prefix", u64::from(defaults.0), int_in(8, 32));
    let v6 = k.get(errs, "ipv6_prefix", u64::from(defaults.1), int_in(16, 128));
    (v4 as u8, v6 as u8)
}

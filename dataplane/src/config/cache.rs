//! `[edge.cache]`: the in-memory cache's budget and lifetimes.

use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// Cache sizes and lifetimes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Byte budget of the in-memory cache (bodies and keys).
    pub max_bytes: u64,
    /// Objects larger than this stream from origin without being cached (`x-cache: BYPASS`).
    pub max_object_bytes: u64,
    /// Freshness of playlists and MPDs.
    pub manifest_ttl: Duration,
    /// Freshness of segments and init segments.
    pub segment_ttl: Duration,
    /// How long past freshness an object may still be served when the origin fails.
    pub stale_if_error: Duration,
    /// How long an origin 404 is remembered (zero: not at all). A purge forgets it at once.
    pub not_found_ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_bytes: 512 << 20,
            max_object_bytes: 64 << 20,
            manifest_ttl: Duration::from_secs(2),
            segment_ttl: Duration::from_secs(24 * 3600),
            stale_if_error: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(5),
        }
    }
}

impl CacheConfig {
    /// Reads `[edge.cache]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut k = e.table(errs, "cache");
        let d = Self::default();
        let cache = Self {
            max_bytes: k.get(errs, "max_bytes", d.max_bytes, byte_size),
            max_object_bytes: k.get(errs, "max_object_bytes", d.max_object_bytes, byte_size),
            manifest_ttl: k.get(errs, "manifest_ttl", d.manifest_ttl, duration),
            segment_ttl: k.get(errs, "segment_ttl", d.segment_ttl, duration),
            stale_if_error: k.get(errs, "stale_if_error", d.stale_if_error, duration),
            not_found_ttl: k.get(errs, "not_found_ttl", d.not_found_ttl, duration),
        };
        if cache.not_found_ttl > Duration::from_secs(3600) {
            errs.push("edge.cache.not_found_ttl", "must be at most 1h");
        }
        if cache.max_object_bytes > cache.max_bytes {
            errs.push(
                "edge.cache.max_object_bytes",
                "must not exceed edge.cache.max_bytes",
            );
        }
        if cache.max_object_bytes > u64::from(u32::MAX) {
            errs.push("edge.cache.max_object_bytes", "must be below 4GiB");
        }
        k.finish(errs);
        cache
    }
}

//! `[edge.gate]`: access control, and where its state comes from.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// Access control settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// A policy snapshot file (JSON: policies, assets, keys). Without one the edge is open
    /// and every asset is public.
    pub snapshot: Option<PathBuf>,
    /// Clock skew allowed on token `exp` and `nbf`.
    pub leeway: Duration,
    /// Verified tokens remembered (each until it expires).
    pub token_cache_entries: u64,
    /// How often the snapshot file is checked for changes (file mode).
    pub reload_interval: Duration,
    /// The etcd cluster to watch (endpoints, TLS, credentials: `etcd = [URLs]` or an
    /// `[edge.gate.etcd]` table, see [`streamgate_store::etcd::EtcdConfig`]). With it the
    /// edge follows the control plane's state, and `snapshot` is its last-known-good file:
    /// written after every applied revision and loaded at start when etcd cannot be reached.
    pub etcd: Option<streamgate_store::etcd::EtcdConfig>,
    /// This edge's name in `/streamgate/v1/edges/` (default: `<hostname>-<http port>`).
    pub edge_id: Option<String>,
    /// How long a starting edge waits for etcd before it falls back to the snapshot file.
    pub initial_sync_timeout: Duration,
    /// What a request for an asset the snapshot does not know gets.
    pub unknown_asset: UnknownAsset,
}

/// The answer to a request for an asset the edge does not know (guarded edges only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownAsset {
    /// Answer as a gated asset would, so asset ids cannot be enumerated: 401 without a
    /// credential, 403 with the token's reason for an invalid one, and 404 only for a
    /// valid credential (`conceal`, the default).
    #[default]
    Conceal,
    /// 404 `unknown_asset` whatever the request carries (`not_found`).
    NotFound,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            snapshot: None,
            leeway: Duration::from_secs(30),
            token_cache_entries: 100_000,
            reload_interval: Duration::from_secs(2),
            etcd: None,
            edge_id: None,
            initial_sync_timeout: Duration::from_secs(3),
            unknown_asset: UnknownAsset::Conceal,
        }
    }
}

impl GateConfig {
    /// Reads `[edge.gate]` from `e`, recording every problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Self {
        use reader::*;
        let mut g = e.table(errs, "gate");
        let d = Self::default();
        let gate = Self {
            snapshot: g.opt(errs, "snapshot", path),
            leeway: g.get(errs, "leeway", d.leeway, duration),
            token_cache_entries: g.get(
                errs,
                "token_cache_entries",
                d.token_cache_entries,
                int_in(1, 100_000_000),
            ),
            reload_interval: g.get(errs, "reload_interval", d.reload_interval, duration),
            etcd: None,
            edge_id: g.opt(errs, "edge_id", string),
            initial_sync_timeout: g.get(
                errs,
                "initial_sync_timeout",
                d.initial_sync_timeout,
                duration,
            ),
            unknown_asset: match g.opt(errs, "unknown_asset", string).as_deref() {
                None | Some("conceal") => UnknownAsset::Conceal,
                Some("not_found") => UnknownAsset::NotFound,
                Some(other) => {
                    errs.push(
                        "edge.gate.unknown_asset",
                        format!("{other:?} is not one of \"conceal\", \"not_found\""),
                    );
                    UnknownAsset::Conceal
                }
            },
        };
        let mut gate = gate;
        if let Some(v) = g.opt(errs, "etcd", |v| Ok(v.clone())) {
            let env = |k: &str| std::env::var(k).ok();
            gate.etcd = streamgate_store::etcd::EtcdConfig::read("edge.gate.etcd", &v, &env, errs);
        }
        if let Some(id) = &gate.edge_id
            && (id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)))
        {
            errs.push(
                "edge.gate.edge_id",
                "1-128 characters: letters, digits, '-', '_', '.', ':'",
            );
        }
        g.finish(errs);
        gate
    }
}

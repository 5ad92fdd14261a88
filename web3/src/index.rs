//! The revocation indexer: for each EVM chain, polls `eth_getLogs` for the Transfer,
//! TransferSingle and TransferBatch logs of the contracts live policies name, once they are
//! `confirmations` blocks deep, and evicts the cached answers of the wallets involved
//! ([`crate::Chain::moved`]). Where it got to is saved in a cursor file, so a restarted edge
//! resumes from there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streamgate_policy::address::Namespace;

use crate::rpc::RpcError;
use crate::{Chain, Chains, evm};

/// One poller per EVM chain; [`Indexer::run`] runs them until shutdown.
#[derive(Debug)]
pub struct Indexer {
    /// The chains.
    pub chains: Arc<Chains>,
    /// Where the last applied block of each chain is saved (JSON), if anywhere.
    pub cursor_file: Option<PathBuf>,
}

fn load_cursors(path: Option<&PathBuf>) -> BTreeMap<String, u64> {
    path.and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_cursor(path: &PathBuf, chain: &str, block: u64) {
    // One file for every chain: read, update, write atomically.
    let mut all = load_cursors(Some(path));
    all.insert(chain.to_owned(), block);
    let tmp = path.with_extension("tmp");
    let res = serde_json::to_vec_pretty(&all)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!(file = %path.display(), error = %e, "cannot save the chain index cursor");
    }
}

/// One poll: applies the movements of the blocks after `cursor` that are deep enough.
/// Returns the new cursor.
pub async fn poll_once(chain: &Chain, cursor: Option<u64>) -> Result<Option<u64>, RpcError> {
    let contracts = chain.live_contracts();
    let head = evm::block_number(&chain.rpc).await?;
    let safe = head.saturating_sub(chain.cfg.confirmations);
    let Some(last) = cursor else {
        // First poll: answers cached from now on reflect the chain as of `head`, so only
        // movements after the blocks already deep enough can make them stale.
        return Ok(Some(safe));
    };
    if contracts.is_empty() {
        // Nothing to follow: skip ahead (answers about a contract a new policy names are
        // looked up after it appears).
        return Ok(Some(safe.max(last)));
    }
    if safe <= last {
        return Ok(Some(last));
    }
    let mut from = last + 1;
    let mut span = chain.cfg.max_log_range;
    while from <= safe {
        let to = safe.min(from + span - 1);
        let moves = match evm::movements(&chain.rpc, &contracts, from, to).await {
            Ok(m) => m,
            // Providers cap block ranges and result counts; they say so with a JSON-RPC
            // error code (see RpcError::is_range_limit): halve the range and go on.
            Err(e) if span > 1 && e.is_range_limit() => {
                span = (span / 2).max(1);
                tracing::debug!(chain = %chain.cfg.id, span, error = %e, "eth_getLogs range refused; halving");
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut evicted = 0;
        for m in &moves {
            evicted += chain.moved(m.contract, m.from, m.to);
        }
        if !moves.is_empty() {
            tracing::info!(
                chain = %chain.cfg.id, from, to, movements = moves.len(), evicted,
                "token movements applied"
            );
        }
        chain.index_block.set(to as i64);
        from = to + 1;
    }
    Ok(Some(safe))
}

impl Indexer {
    /// Polls every EVM chain until `shutdown` turns true.
    pub async fn run(&self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tasks = Vec::new();
        let saved = load_cursors(self.cursor_file.as_ref());
        for chain in self.chains.all() {
            if chain.cfg.id.namespace != Namespace::Eip155 {
                continue;
            }
            let chain = Arc::clone(chain);
            let id = chain.cfg.id.to_string();
            let mut cursor = saved.get(&id).copied();
            let file = self.cursor_file.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(chain.cfg.poll_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failures = 0u32;
                loop {
                    tick.tick().await;
                    match poll_once(&chain, cursor).await {
                        Ok(next) => {
                            if failures > 0 {
                                tracing::info!(chain = %id, "Transfer log polling recovered");
                            }
                            failures = 0;
                            if next != cursor
                                && let (Some(f), Some(b)) = (&file, next)
                            {
                                save_cursor(f, &id, b);
                            }
                            cursor = next;
                        }
                        Err(e) => {
                            failures += 1;
                            if failures == 1 || failures.is_power_of_two() {
                                tracing::warn!(chain = %id, error = %e, failures,
                                    "Transfer log polling failed; cached answers live until their TTL");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
            }));
        }
        let _ = shutdown.wait_for(|stop| *stop).await;
        for t in tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_of_several_chains_share_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("edge-snapshot.json.chains.json");
        assert!(load_cursors(Some(&file)).is_empty(), "no file yet");
        save_cursor(&file, "eip155:1", 100);
        save_cursor(&file, "eip155:137", 7);
        save_cursor(&file, "eip155:1", 101);
        let all = load_cursors(Some(&file));
        assert_eq!(all.get("eip155:1"), Some(&101));
        assert_eq!(all.get("eip155:137"), Some(&7));
        // A damaged file starts over (from the chain head) instead of failing.
        std::fs::write(&file, b"{not json").unwrap();
        assert!(load_cursors(Some(&file)).is_empty());
    }
}

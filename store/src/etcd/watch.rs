//! Watches that survive the loss of the member they run on.
//!
//! A watch runs on one member. When its stream breaks, ends, or goes silent (a frozen
//! member: no answer to a progress request within the keep-alive timeout), it is opened
//! again on the next member from the last revision delivered, so the reader sees one
//! unbroken stream. Only a compaction past that revision, a refusal of our credentials, or
//! no member answering for the retry timeout end it with an error.

use std::sync::Arc;

use etcd_client::{EventType, WatchOptions, WatchRequestSender, WatchResponseStream};
use futures::StreamExt;
use tokio::time::Instant;

use super::pool::{Fault, Pool};
use crate::{Batch, Event, StoreError};

/// A watch open on one member.
struct Open {
    member: usize,
    sender: WatchRequestSender,
    stream: WatchResponseStream,
    /// When the member last said anything on this watch.
    heard: Instant,
    /// An unanswered progress request, sent then.
    probe: Option<Instant>,
}

/// The state of one failover watch.
pub(super) struct Watcher {
    pool: Arc<Pool>,
    prefix: String,
    /// Everything up to this revision has been delivered.
    after: i64,
    open: Option<Open>,
    done: bool,
}

fn event(e: &etcd_client::Event) -> Option<Event> {
    let kv = e.kv()?;
    let key = String::from_utf8_lossy(kv.key()).into_owned();
    Some(match e.event_type() {
        EventType::Put => Event::Put {
            key,
            value: kv.value().to_vec(),
            version: kv.mod_revision(),
        },
        EventType::Delete => Event::Delete {
            key,
            version: kv.mod_revision(),
        },
    })
}

impl Watcher {
    pub(super) fn new(pool: Arc<Pool>, prefix: &str, after: i64) -> Self {
        Self {
            pool,
            prefix: prefix.to_owned(),
            after,
            open: None,
            done: false,
        }
    }

    /// Opens the watch on the first member that accepts it; gives up after the retry
    /// timeout, or at once when our credentials are refused.
    pub(super) async fn open(&mut self) -> Result<(), StoreError> {
        let cfg = &self.pool.cfg;
        let start = Instant::now();
        let mut errors = Vec::new();
        let mut round = 0u32;
        loop {
            for i in self.pool.order(Instant::now()) {
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(self.after + 1)
                    .with_progress_notify();
                let attempt = async {
                    let mut c = self.pool.client_of(i).await?;
                    c.watch(self.prefix.as_str(), Some(opts))
                        .await
                        .map_err(super::pool::classify)
                };
                let fault = match tokio::time::timeout(cfg.request_timeout, attempt).await {
                    Ok(Ok(w)) => {
                        let (sender, stream) = w.split();
                        let now = Instant::now();
                        if round > 0 || !errors.is_empty() {
                            tracing::info!(endpoint = self.pool.endpoint(i), after = self.after,
                                waited = ?start.elapsed(), "etcd watch resumed on another member");
                        }
                        self.open = Some(Open {
                            member: i,
                            sender,
                            stream,
                            heard: now,
                            probe: None,
                        });
                        return Ok(());
                    }
                    Ok(Err(f)) => f,
                    Err(_) => Fault::Lost("no answer to the watch".into()),
                };
                let endpoint = self.pool.endpoint(i).to_owned();
                match fault {
                    Fault::Denied(m) => {
                        self.pool.forget(i);
                        return Err(StoreError::Denied(format!("{endpoint}: {m}")));
                    }
                    Fault::Final(e) => errors.push(format!("{endpoint}: {e}")),
                    Fault::NotSent(m) | Fault::Lost(m) => errors.push(format!("{endpoint}: {m}")),
                }
                self.pool.failed(i);
                if start.elapsed() >= cfg.retry_timeout {
                    let last: Vec<String> = errors.iter().rev().take(3).cloned().collect();
                    return Err(StoreError::Unavailable(format!(
                        "etcd unreachable: no member accepted a watch within {:.1?} ({})",
                        start.elapsed(),
                        last.join("; ")
                    )));
                }
            }
            round = round.saturating_add(1);
            let pause = std::time::Duration::from_millis(50).saturating_mul(1 << round.min(4));
            tokio::time::sleep(pause).await;
        }
    }

    /// Leaves the current member (it broke or went silent) for the next.
    fn abandon(&mut self, why: &str) {
        if let Some(o) = self.open.take() {
            tracing::warn!(
                endpoint = self.pool.endpoint(o.member),
                why,
                after = self.after,
                "etcd watch broke; resuming on another member"
            );
            self.pool.failed(o.member);
        }
    }

    /// The next batch, failing over as needed.
    pub(super) async fn next(&mut self) -> Option<Result<Batch, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if self.open.is_none()
                && let Err(e) = self.open().await
            {
                self.done = true;
                return Some(Err(e));
            }
            let (interval, timeout) = (
                self.pool.cfg.keepalive_interval,
                self.pool.cfg.keepalive_timeout,
            );
            let o = self.open.as_mut()?;
            let wake = match o.probe {
                Some(sent) => sent + timeout,
                None => o.heard + interval,
            };
            let msg = tokio::select! {
                m = o.stream.next() => m,
                _ = tokio::time::sleep_until(wake) => {
                    if o.probe.is_some() {
                        self.abandon("no answer to a progress request (frozen or cut off)");
                        continue;
                    }
                    o.probe = Some(Instant::now());
                    if o.sender.request_progress().await.is_err() {
                        self.abandon("the watch stream closed");
                    }
                    continue;
                }
            };
            let r = match msg {
                Some(Ok(r)) => r,
                Some(Err(e)) => {
                    let why = e.to_string();
                    if let Fault::Denied(m) = super::pool::classify(e) {
                        self.done = true;
                        return Some(Err(StoreError::Denied(m)));
                    }
                    self.abandon(&why);
                    continue;
                }
                None => {
                    self.abandon("the stream ended");
                    continue;
                }
            };
            o.heard = Instant::now();
            o.probe = None;
            if r.compact_revision() > 0 {
                self.done = true;
                return Some(Err(StoreError::Compacted {
                    requested: self.after,
                    compacted: r.compact_revision(),
                }));
            }
            if r.canceled() {
                let reason = r.cancel_reason().to_owned();
                if reason.contains("permission denied") {
                    self.done = true;
                    return Some(Err(StoreError::Denied(reason)));
                }
                self.abandon(&format!("cancelled by the member: {reason}"));
                continue;
            }
            if r.created() {
                continue;
            }
            let member = o.member;
            self.pool.answered(member);
            let events: Vec<Event> = r.events().iter().filter_map(event).collect();
            // A progress notice vouches for everything up to its header revision; a batch
            // of events only for what it carries.
            let revision = match events.last() {
                Some(e) => e.version(),
                None => r.header().map_or(self.after, |h| h.revision()),
            }
            .max(self.after);
            if events.is_empty() && revision == self.after {
                continue;
            }
            self.after = revision;
            return Some(Ok(Batch { revision, events }));
        }
    }
}

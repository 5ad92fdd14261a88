//! `PolicyService.Watch`: the current policies (when asked from revision 0), then every
//! change, from the store's own watch.
//!
//! A spawned task forwards store batches into a bounded channel. It stops as soon as the
//! client goes away, even while no policy changes (it waits on the channel closing as well
//! as on the store), so an abandoned watch does not hold a store watch open.

use std::sync::Arc;

use futures::StreamExt;
use streamgate_proto::control::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{policy_key, status};
use crate::auth::Actor;
use crate::store::{Event, Store, StoreError};

/// The stream type of `Watch`.
pub type PolicyEvents = ReceiverStream<Result<pb::PolicyEvent, Status>>;

/// The event for one change; `revision` is the change's own revision, except in the initial
/// state, where every event carries the revision of the listing.
fn event(prefix: &str, e: Event, revision: i64) -> pb::PolicyEvent {
    match e {
        Event::Put {
            key,
            value,
            version,
        } => pb::PolicyEvent {
            kind: pb::policy_event::Kind::Put as i32,
            policy: Some(super::to_pb(key[prefix.len()..].to_owned(), value, version)),
            revision,
        },
        Event::Delete { key, .. } => pb::PolicyEvent {
            kind: pb::policy_event::Kind::Delete as i32,
            // Only the id: the document is gone.
            policy: Some(pb::Policy {
                id: key[prefix.len()..].to_owned(),
                ..pb::Policy::default()
            }),
            revision,
        },
    }
}

fn compacted(e: StoreError) -> Status {
    match e {
        StoreError::Compacted {
            requested,
            compacted,
        } => Status::out_of_range(format!(
            "revision {requested} is compacted (history starts after {compacted}); watch from 0"
        )),
        other => status(other),
    }
}

/// Whether `who` may see the policy of `key` (a tenant sees only its prefixes' policies).
fn visible(who: &Actor, prefix: &str, key: &str) -> bool {
    who.may_touch(&key[prefix.len()..])
}

/// Starts the stream of policy events after `from` (0: the current state first), of the
/// policies `who` may see.
pub(crate) async fn policy_events(
    store: Arc<dyn Store>,
    from: i64,
    who: Actor,
) -> Result<PolicyEvents, Status> {
    if from < 0 {
        return Err(Status::invalid_argument(
            "from_revision: 0 (the current state, then changes) or a store revision",
        ));
    }
    let prefix = policy_key("");
    let (tx, rx) = mpsc::channel(64);
    let mut initial = Vec::new();
    let after = if from == 0 {
        let (items, rev) = store.list(&prefix).await.map_err(status)?;
        for (key, v) in items {
            if !visible(&who, &prefix, &key) {
                continue;
            }
            let put = Event::Put {
                key,
                value: v.value,
                version: v.version,
            };
            // At the listing's revision: a client that resumes from the last revision it
            // saw then misses nothing and replays nothing.
            initial.push(event(&prefix, put, rev));
        }
        rev
    } else {
        from
    };
    // Fail the call itself when the history is gone, rather than an empty stream (etcd
    // reports it on the stream instead; that becomes the stream's one error).
    let mut changes = store.watch(&prefix, after).await.map_err(compacted)?;
    tokio::spawn(async move {
        for e in initial {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        loop {
            let item = tokio::select! {
                () = tx.closed() => return,
                item = changes.next() => item,
            };
            match item {
                Some(Ok(batch)) => {
                    for e in batch.events {
                        if !visible(&who, &prefix, e.key()) {
                            continue;
                        }
                        let revision = e.version();
                        if tx.send(Ok(event(&prefix, e, revision))).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(compacted(e))).await;
                    return;
                }
                None => {
                    // A watch has no natural end: tell the client to resume.
                    let end =
                        Status::unavailable("the store watch ended; resume from the last revision");
                    let _ = tx.send(Err(end)).await;
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

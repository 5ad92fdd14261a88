//! `PolicyService.Watch`: the current policies (when asked from revision 0), then every
//! change, from the store's own watch. The stream ends when the client goes away.

use std::sync::Arc;

use futures::StreamExt;
use streamgate_proto::control::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{policy_key, status};
use crate::store::{Event, Store, StoreError};

/// The stream type of `Watch`.
pub type PolicyEvents = ReceiverStream<Result<pb::PolicyEvent, Status>>;

fn event(prefix: &str, e: Event) -> pb::PolicyEvent {
    match e {
        Event::Put {
            key,
            value,
            version,
        } => pb::PolicyEvent {
            kind: pb::policy_event::Kind::Put as i32,
            policy: Some(super::to_pb(key[prefix.len()..].to_owned(), value, version)),
            revision: version,
        },
        Event::Delete { key, version } => pb::PolicyEvent {
            kind: pb::policy_event::Kind::Delete as i32,
            policy: Some(pb::Policy {
                id: key[prefix.len()..].to_owned(),
                ..pb::Policy::default()
            }),
            revision: version,
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

/// Starts the stream of policy events after `from` (0: the current state first).
pub(crate) async fn policy_events(
    store: Arc<dyn Store>,
    from: i64,
) -> Result<PolicyEvents, Status> {
    let prefix = policy_key("");
    let (tx, rx) = mpsc::channel(64);
    let mut initial = Vec::new();
    let after = if from <= 0 {
        let (items, rev) = store.list(&prefix).await.map_err(status)?;
        for (key, v) in items {
            initial.push(event(
                &prefix,
                Event::Put {
                    key,
                    value: v.value,
                    version: v.version,
                },
            ));
        }
        rev
    } else {
        from
    };
    // Fail the call itself when the history is gone, rather than an empty stream.
    let mut changes = store.watch(&prefix, after).await.map_err(compacted)?;
    tokio::spawn(async move {
        for e in initial {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        while let Some(item) = changes.next().await {
            match item {
                Ok(batch) => {
                    for e in batch.events {
                        if tx.send(Ok(event(&prefix, e))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(compacted(e))).await;
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(rx))
}

//! The etcd store: conditional writes are etcd transactions comparing `mod_revision`;
//! watches are etcd watches with progress notices, resumed by revision.

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use super::{Batch, Event, Guard, LeaseId, Op, Store, StoreError, Versioned, WatchStream};

/// A store on an etcd cluster.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// etcd answers `NOT_FOUND` ("requested lease not found") for a put or renewal under a
/// lease it no longer has.
fn lease_error(e: etcd_client::Error, lease: LeaseId) -> StoreError {
    match &e {
        etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::NotFound => {
            StoreError::LeaseExpired(lease)
        }
        _ => unavailable(e),
    }
}

/// HTTP/2 pings find a dead or frozen etcd within about 5 s, so watches fail over instead
/// of hanging; connecting gives up after 3 s per endpoint.
fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
        .with_keep_alive_while_idle(true)
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, Some(options()))
            .await
            .map_err(unavailable)?;
        Ok(Self { client })
    }

    /// The underlying client (tests use it to compact).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    fn guard(g: &Guard) -> Compare {
        if g.expected == 0 {
            // An absent key has version 0.
            Compare::version(g.key.as_str(), CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(g.key.as_str(), CompareOp::Equal, g.expected)
        }
    }
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

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(key, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| Versioned {
            value: kv.value().to_vec(),
            version: kv.mod_revision(),
        }))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        let resp = self
            .client
            .clone()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let rev = resp.header().map_or(0, |h| h.revision());
        let items = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    Versioned {
                        value: kv.value().to_vec(),
                        version: kv.mod_revision(),
                    },
                )
            })
            .collect();
        Ok((items, rev))
    }

    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        let lease = ops.iter().find_map(|op| match op {
            Op::Put { lease, .. } => *lease,
            Op::Delete { .. } => None,
        });
        let ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { key, value, lease } => {
                    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
                }
                Op::Delete { key } => TxnOp::delete(key, None),
            })
            .collect();
        let txn = Txn::new()
            .when(guards.iter().map(Self::guard).collect::<Vec<_>>())
            .and_then(ops)
            .or_else(
                guards
                    .iter()
                    .map(|g| TxnOp::get(g.key.as_str(), None))
                    .collect::<Vec<_>>(),
            );
        let resp = self
            .client
            .clone()
            .txn(txn)
            .await
            .map_err(|e| match lease {
                Some(l) => lease_error(e, l),
                None => unavailable(e),
            })?;
        if resp.succeeded() {
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        // The else branch read every guarded key, in order; name the first that moved.
        let currents = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |kv| kv.mod_revision()),
            _ => 0,
        });
        for (g, current) in guards.iter().zip(currents) {
            if current != g.expected {
                return Err(StoreError::Conflict {
                    key: g.key.clone(),
                    expected: g.expected,
                    current,
                });
            }
        }
        // A guard failed between the compare and the read; report the first one.
        let g = guards.first().cloned().unwrap_or(Guard {
            key: String::new(),
            expected: 0,
        });
        Err(StoreError::Conflict {
            key: g.key,
            expected: g.expected,
            current: -1,
        })
    }

    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let resp = self
            .client
            .clone()
            .lease_grant(secs, None)
            .await
            .map_err(unavailable)?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        // Opening the keep-alive stream sends one renewal and reads its answer.
        match self.client.clone().lease_keep_alive(lease).await {
            Ok(_) => Ok(()),
            // A TTL of zero is how etcd says "not found"; the client reports it as a
            // keep-alive error, as it does a broken stream, so ask the lease itself.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => {
                match self.client.clone().lease_time_to_live(lease, None).await {
                    Ok(r) if r.ttl() <= 0 => Err(StoreError::LeaseExpired(lease)),
                    Ok(_) => Err(StoreError::Unavailable("lease keep-alive failed".into())),
                    Err(e) => Err(lease_error(e, lease)),
                }
            }
            Err(e) => Err(lease_error(e, lease)),
        }
    }

    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError> {
        match self.client.clone().lease_revoke(lease).await {
            Ok(_) => Ok(()),
            Err(e) => match lease_error(e, lease) {
                StoreError::LeaseExpired(_) => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(after + 1)
            .with_progress_notify();
        let stream = self
            .client
            .clone()
            .watch(prefix, Some(opts))
            .await
            .map_err(unavailable)?;
        // A compacted start revision is reported by the stream's first item, after the
        // creation notice.
        let batches = futures::stream::unfold(Some((stream, after)), |state| async move {
            let (mut stream, after) = state?;
            let mut msg = stream.message().await;
            // A creation notice carries the current revision, not progress; skip it.
            while matches!(&msg, Ok(Some(r)) if r.created() && !r.canceled()) {
                msg = stream.message().await;
            }
            let item = match msg {
                Ok(Some(r)) if r.compact_revision() > 0 || r.canceled() => {
                    Err(StoreError::Compacted {
                        requested: after,
                        compacted: r.compact_revision(),
                    })
                }
                Ok(Some(r)) => {
                    let events: Vec<Event> = r.events().iter().filter_map(event).collect();
                    // A progress notice vouches for everything up to its header revision;
                    // a batch of events only for what it carries.
                    let revision = match events.last() {
                        Some(e) => e.version(),
                        None => r.header().map_or(after, |h| h.revision()),
                    }
                    .max(after);
                    Ok(Batch { revision, events })
                }
                Ok(None) => Err(StoreError::Unavailable("watch stream ended".into())),
                Err(e) => Err(unavailable(e)),
            };
            match item {
                Ok(b) => {
                    let rev = b.revision;
                    Some((Ok(b), Some((stream, rev))))
                }
                // An error ends the stream after it is delivered.
                Err(e) => Some((Err(e), None)),
            }
        });
        Ok(batches.boxed())
    }
}

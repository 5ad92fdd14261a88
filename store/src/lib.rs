//! StreamGate's state: a versioned key-value store under `/streamgate/v1/`.
//!
//! Every value carries the store revision that last wrote it (its version). Writes are
//! conditional on the version the caller last saw, so two concurrent updates from the same
//! base cannot both succeed: the loser gets [`StoreError::Conflict`] (gRPC
//! `FAILED_PRECONDITION`). Version 0 means "must not exist yet". Several writes can commit
//! together in one [`Store::txn`] (a change and its audit entry, a key rotation).
//!
//! [`Store::watch`] streams changes after a revision, so a reader that listed the prefix at
//! revision `r` and watches from `r` misses nothing. When the store no longer holds that
//! history (etcd compaction, or the embedded store's bounded history) the watch fails with
//! [`StoreError::Compacted`] and the reader lists again.
//!
//! Leases ([`Store::grant`]) bind keys to a holder's liveness: a key put under a lease
//! vanishes (a delete event) when the lease expires or is revoked. [`KeptLease`] keeps one
//! alive in the background and says when it may be lost. Edge records, used sign-in
//! nonces, elections and the farm's task claims are leased.
//!
//! [`etcd::EtcdStore`] is the production store; [`embedded::EmbeddedStore`] is the one
//! `dev` uses, persisted to a log file so it survives restarts. The control plane writes
//! through this crate and edges watch through it, without either linking the other.
#![forbid(unsafe_code)]

mod audit;
pub mod election;
pub mod embedded;
pub mod etcd;
mod lease;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::pin::Pin;

use std::time::Duration;

use async_trait::async_trait;
use futures::Stream;

pub use audit::audit_op;
pub use lease::KeptLease;

/// The prefix every key lives under.
pub const PREFIX: &str = "/streamgate/v1/";

/// Where edges publish their QoE aggregates (`<ANALYTICS_PREFIX><edge-id>`): outside
/// [`PREFIX`], which every edge watches, so a fleet's figures are not sent to each edge.
pub const ANALYTICS_PREFIX: &str = "/streamgate/analytics/v1/";

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes (JSON documents).
    pub value: Vec<u8>,
    /// The store revision of the last write.
    pub version: i64,
}

/// A lease id. Keys written under a lease are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`, bound to `lease` if given (a put without one detaches the key
    /// from any lease it had, as in etcd).
    Put {
        /// The key.
        key: String,
        /// The new bytes.
        value: Vec<u8>,
        /// The lease the key lives under.
        lease: Option<LeaseId>,
    },
    /// Remove `key` (absent is fine).
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// A put that outlives its writer.
    pub fn put(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: None,
        }
    }

    /// A put that vanishes with `lease`.
    pub fn put_leased(key: impl Into<String>, value: impl Into<Vec<u8>>, lease: LeaseId) -> Self {
        Self::Put {
            key: key.into(),
            value: value.into(),
            lease: Some(lease),
        }
    }

    /// A delete (absent is fine).
    pub fn delete(key: impl Into<String>) -> Self {
        Self::Delete { key: key.into() }
    }

    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }
}

/// A condition of a transaction: `key` is at version `expected` (0: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The key.
    pub key: String,
    /// Its version as the caller last saw it.
    pub expected: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `key` was written; `version` is the revision of the write.
    Put {
        /// The key.
        key: String,
        /// The new bytes.
        value: Vec<u8>,
        /// The revision of the write.
        version: i64,
    },
    /// `key` was deleted at revision `version`.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        version: i64,
    },
}

impl Event {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Self::Put { key, .. } | Self::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn version(&self) -> i64 {
        match self {
            Self::Put { version, .. } | Self::Delete { version, .. } => *version,
        }
    }
}

/// The changes of one or more revisions, in order. `revision` is the store revision the
/// reader has seen everything up to (a batch may be empty: a progress notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Everything up to here has been delivered.
    pub revision: i64,
    /// The changes, oldest first.
    pub events: Vec<Event>,
}

/// A stream of change batches; it ends or yields an error when the watch breaks.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Batch, StoreError>> + Send>>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key's version is not the one the caller expected.
    #[error("version conflict on {key}: expected {expected}, current {current}")]
    Conflict {
        /// The guarded key.
        key: String,
        /// What the caller sent.
        expected: i64,
        /// What the store has (0: absent).
        current: i64,
    },
    /// The history needed to resume a watch is gone; list again and watch from there.
    #[error("revision {requested} is compacted (history starts after {compacted})")]
    Compacted {
        /// The revision the watch asked to resume after.
        requested: i64,
        /// The store's compaction point.
        compacted: i64,
    },
    /// The lease does not exist any more (expired or revoked); keys bound to it are gone.
    #[error("lease {0:x} expired or was revoked")]
    LeaseExpired(LeaseId),
    /// The store could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused our credentials, certificate or permissions (etcd TLS or auth);
    /// retrying does not help, the configuration or the etcd roles must change.
    #[error("store refused access: {0}")]
    Denied(String),
    /// The embedded store's log could not be read or written.
    #[error("store log {path}: {message}")]
    Log {
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
}

/// A versioned key-value store.
#[async_trait]
pub trait Store: Send + Sync {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError>;
    /// Reads every key under `prefix`, in key order, with the store revision of the read.
    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError>;
    /// Applies `ops` atomically if every guard holds; returns the revision of the commit.
    /// A failed guard is a [`StoreError::Conflict`] naming the first such key.
    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError>;
    /// Streams every change under `prefix` after revision `after`.
    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError>;

    /// Grants a lease of `ttl` (whole seconds, at least one). It expires unless kept alive.
    async fn grant(&self, ttl: Duration) -> Result<LeaseId, StoreError>;
    /// Renews `lease` for its full TTL; [`StoreError::LeaseExpired`] when it is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError>;
    /// Revokes `lease` and deletes its keys (an unknown lease is fine).
    async fn revoke(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Writes `key` if its version is `expected` (0: absent). Returns the new version.
    async fn put(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StoreError> {
        let guard = Guard {
            key: key.to_owned(),
            expected,
        };
        self.txn(&[guard], vec![Op::put(key, value)]).await
    }

    /// Deletes `key` if its version is `expected`. Returns the revision of the delete.
    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StoreError> {
        let guard = Guard {
            key: key.to_owned(),
            expected,
        };
        self.txn(
            &[guard],
            vec![Op::Delete {
                key: key.to_owned(),
            }],
        )
        .await
    }
}

#[cfg(test)]
mod tests;

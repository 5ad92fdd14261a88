//! Control-plane state: a versioned key-value store under `/streamgate/v1/`.
//!
//! Every value carries the store revision that last wrote it (its version). Writes are
//! conditional on the version the caller last saw, so two concurrent updates from the same
//! base cannot both succeed: the loser gets [`StoreError::Conflict`] (gRPC
//! `FAILED_PRECONDITION`). Version 0 means "must not exist yet". [`etcd::EtcdStore`] is
//! the production store; [`embedded::EmbeddedStore`] is the one `dev` uses, persisted to a
//! log file so it survives restarts.

pub mod embedded;
pub mod etcd;

use async_trait::async_trait;

/// The prefix every key lives under.
pub const PREFIX: &str = "/streamgate/v1/";

/// A value and the revision that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The stored bytes (JSON documents).
    pub value: Vec<u8>,
    /// The store revision of the last write.
    pub version: i64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key's version is not the one the caller expected.
    #[error("version conflict: expected {expected}, current {current}")]
    Conflict {
        /// What the caller sent.
        expected: i64,
        /// What the store has (0: absent).
        current: i64,
    },
    /// The store could not be reached or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
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
    /// Writes `key` if its version is `expected` (0: absent). Returns the new version.
    async fn put(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64, StoreError>;
    /// Deletes `key` if its version is `expected`. Returns the revision of the delete.
    async fn delete(&self, key: &str, expected: i64) -> Result<i64, StoreError>;
}

#[cfg(test)]
pub(crate) mod tests;

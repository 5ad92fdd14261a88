//! Origin storage: where StreamGate's video objects live.
//!
//! The edge reads objects from it on a cache miss, and the transcode farm writes
//! renditions into it. One type, [`Origin`], covers the three kinds of storage:
//! a local directory (the default), an S3-compatible bucket, and an upstream
//! HTTP server pulled with pooled connections, as a CDN edge pulls its origin.
//! Keys are [`ObjectKey`]s, which can only hold a safe relative path. [`Staging`] is
//! the area where partial uploads live until the farm reads them.
#![forbid(unsafe_code)]

mod config;
mod key;
mod read;
pub mod staging;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path as StorePath;
use object_store::{GetOptions, ObjectStore, PutPayload};

pub use config::{HttpOrigin, OriginConfig, S3Origin};
pub use key::{KeyError, MAX_KEY_LEN, ObjectKey, validate as validate_key};
pub use read::read_origin;
pub use staging::{StageState, StageWriter, Staging, StagingError};

/// Which kind of storage an [`Origin`] reads; also the `origin` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OriginKind {
    /// A local directory.
    Fs,
    /// An S3-compatible bucket.
    S3,
    /// An upstream HTTP server.
    Http,
}

impl OriginKind {
    /// The lower-case name used in configuration and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fs => "fs",
            Self::S3 => "s3",
            Self::Http => "http",
        }
    }
}

/// Failure to build an [`Origin`] from its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The filesystem root could not be created or opened.
    #[error("origin root {path}: {source}")]
    Root {
        /// The configured root.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The object store client rejected the configuration.
    #[error("origin {kind}: {source}")]
    Store {
        /// The origin kind.
        kind: &'static str,
        /// What the store client said.
        source: object_store::Error,
    },
}

/// Failure to read or write one object.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// The object does not exist.
    #[error("object not found")]
    NotFound,
    /// The origin did not answer within the configured timeout.
    #[error("origin timed out after {0:?}")]
    Timeout(Duration),
    /// The origin could not be reached or answered with an error.
    #[error("origin unavailable: {0}")]
    Unavailable(String),
    /// A local I/O error while writing.
    #[error("origin i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl OriginError {
    fn from_store(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => Self::NotFound,
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// An object being read: its size, known before the body, and the body as a stream of chunks.
pub struct OriginObject {
    /// Total size in bytes.
    pub size: u64,
    /// The body; chunks arrive as the origin delivers them.
    pub body: BoxStream<'static, Result<Bytes, OriginError>>,
}

impl OriginObject {
    /// Collects the whole body into one buffer.
    pub async fn collect(mut self) -> Result<Bytes, OriginError> {
        let cap = usize::try_from(self.size)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        let first = match self.body.next().await {
            None => return Ok(Bytes::new()),
            Some(chunk) => chunk?,
        };
        if first.len() as u64 == self.size {
            // The common case for files: one chunk, no copy.
            return Ok(first);
        }
        let mut buf = bytes::BytesMut::with_capacity(cap);
        buf.extend_from_slice(&first);
        while let Some(chunk) = self.body.next().await {
            buf.extend_from_slice(&chunk?);
        }
        Ok(buf.freeze())
    }
}

/// Origin storage: reads for the edge, writes for the transcode farm.
#[derive(Clone)]
pub struct Origin {
    store: Arc<dyn ObjectStore>,
    kind: OriginKind,
    prefix: Option<StorePath>,
    /// The directory of a filesystem origin, whose emptied folders a purge removes.
    fs_root: Option<std::path::PathBuf>,
    timeout: Duration,
}

impl std::fmt::Debug for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Origin")
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Origin {
    /// Builds the origin described by `cfg`. A filesystem root is created if absent.
    pub fn from_config(cfg: &OriginConfig) -> Result<Self, BuildError> {
        config::build(cfg)
    }

    /// The kind of storage behind this origin.
    pub fn kind(&self) -> OriginKind {
        self.kind
    }

    fn path(&self, key: &ObjectKey) -> StorePath {
        // ObjectKey already holds a validated relative path, so `from` cannot misparse it.
        let rel = StorePath::from(key.as_str());
        match &self.prefix {
            Some(p) => p.parts().chain(rel.parts()).collect(),
            None => rel,
        }
    }

    /// Starts reading `key`. The size is known when this returns; the body streams.
    pub async fn get(&self, key: &ObjectKey) -> Result<OriginObject, OriginError> {
        let path = self.path(key);
        let fut = self.store.get_opts(&path, GetOptions::default());
        let res = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| OriginError::Timeout(self.timeout))?
            .map_err(OriginError::from_store)?;
        let size = res.meta.size;
        let body = res
            .into_stream()
            .map(|r| r.map_err(OriginError::from_store))
            .boxed();
        Ok(OriginObject { size, body })
    }

    /// Reads the whole of `key` into memory.
    pub async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes, OriginError> {
        self.get(key).await?.collect().await
    }

    /// Writes `bytes` at `key`, replacing any previous object.
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<(), OriginError> {
        let path = self.path(key);
        self.store
            .put(&path, PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
            .map_err(OriginError::from_store)
    }

    /// Copies `from` to `to` inside the storage (a server-side copy on S3, a hard link
    /// or copy on a filesystem), replacing any object at `to`.
    pub async fn copy(&self, from: &ObjectKey, to: &ObjectKey) -> Result<(), OriginError> {
        self.store
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(OriginError::from_store)
    }

    /// Deletes `key`; an absent key is fine.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), OriginError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(OriginError::from_store(e)),
        }
    }

    /// Every key under the folder `prefix` (not including `prefix/` itself), in no
    /// particular order.
    pub async fn list(&self, prefix: &ObjectKey) -> Result<Vec<ObjectKey>, OriginError> {
        let base = self.path(prefix);
        let skip = self.prefix.as_ref().map_or(0, |p| p.parts().count());
        let mut out = Vec::new();
        let mut items = self.store.list(Some(&base));
        while let Some(meta) = items.next().await {
            let meta = meta.map_err(OriginError::from_store)?;
            let rel: Vec<String> = meta
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_owned())
                .collect();
            if let Ok(k) = ObjectKey::new(&rel.join("/")) {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Deletes every object under the folder `prefix`; returns how many there were.
    pub async fn delete_prefix(&self, prefix: &ObjectKey) -> Result<usize, OriginError> {
        let keys = self.list(prefix).await?;
        for k in &keys {
            self.delete(k).await?;
        }
        // Object stores have no folders; a directory tree left empty is removed too.
        if let Some(root) = &self.fs_root {
            let dir = root.join(prefix.as_str());
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(OriginError::Io(e)),
            }
        }
        Ok(keys.len())
    }

    /// Whether `key` exists.
    pub async fn exists(&self, key: &ObjectKey) -> Result<bool, OriginError> {
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(OriginError::from_store(e)),
        }
    }
}

#[cfg(test)]
mod tests;

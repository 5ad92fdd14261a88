//! The staging area: where partial uploads live in origin storage until they are complete
//! and a farm worker reads them.
//!
//! An upload `<id>` is staged at `STAGING/uploads/<id>/data`. No asset id can be
//! `STAGING` (asset ids are lower case), so a guarded edge never serves staged bytes.
//!
//! - **Filesystem**: one file, written in place at the offset and `fdatasync`ed at every
//!   checkpoint. A writer first cuts the file back to the offset the caller recorded, so
//!   bytes written after the last checkpoint (a crash, a rolled-back PATCH whose checksum
//!   did not match) are dropped rather than trusted.
//! - **S3**: a multipart upload on the data key. Parts of at least `part_size` (5 MiB or
//!   more, as S3 requires of every part but the last) are sent as they fill, from memory;
//!   nothing touches local disk. Bytes that do not fill a part when a PATCH ends are kept
//!   as their own object, `tail-<n>`, and read back into the next part by the next PATCH
//!   (as tusd's `.part` object, but without tusd's disk buffer). A tail is never
//!   overwritten: each commit writes a new name and the old one is deleted only after the
//!   caller has recorded the new state ([`Committed::obsolete`]), so a crash between the
//!   two leaves a state that still points at bytes that exist.
//!
//! The caller keeps the [`StageState`] durable (the ingest stores it in the upload record)
//! and passes it back; this module keeps no state of its own between writers.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::{BuildError, KeyError, ObjectKey, OriginConfig, OriginKind};

/// Where staged uploads live, as an object key prefix.
pub const STAGING_PREFIX: &str = "STAGING/uploads";
/// S3's smallest part size (every part but the last).
pub const MIN_PART: u64 = 5 << 20;
/// S3's largest part size.
pub const MAX_PART: u64 = 5 << 30;
/// S3's largest number of parts in one upload.
pub const MAX_PARTS: u64 = 10_000;

/// How far a staged upload has got, in a form the caller stores and hands back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StageState {
    /// One file; its length up to the recorded offset is the data.
    Fs,
    /// An S3 multipart upload and an optional tail object.
    S3 {
        /// The multipart upload id.
        upload_id: String,
        /// The size parts are sent at (the last may be smaller).
        part_size: u64,
        /// The parts uploaded, in order (part `i` has index `i`).
        parts: Vec<Part>,
        /// Bytes after the last part, kept as their own object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<Tail>,
        /// The number the next tail object gets.
        #[serde(default)]
        next_tail: u64,
        /// Whether the multipart upload was completed into the data object.
        #[serde(default)]
        completed: bool,
    },
}

impl StageState {
    /// The bytes this state accounts for on S3 (parts and tail); `None` on the filesystem,
    /// where the caller's recorded offset is the measure.
    pub fn s3_stored(&self) -> Option<u64> {
        match self {
            Self::Fs => None,
            Self::S3 { parts, tail, .. } => Some(
                parts.iter().map(|p| p.size).sum::<u64>() + tail.as_ref().map_or(0, |t| t.size),
            ),
        }
    }
}

/// One uploaded S3 part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The ETag S3 returned for it.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Bytes after the last S3 part, kept as an object next to the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tail {
    /// The object's name inside the upload's staging folder (`tail-<n>`).
    pub name: String,
    /// Its size.
    pub size: u64,
}

/// Why a staging operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StagingError {
    /// The origin is an HTTP upstream, which cannot be written.
    #[error("uploads need a filesystem or S3 origin; an HTTP origin is read-only")]
    ReadOnly,
    /// A local file operation failed.
    #[error("staging file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: io::Error,
    },
    /// The object store failed.
    #[error("staging store: {0}")]
    Store(String),
    /// The recorded state belongs to another kind of storage than this one.
    #[error("the upload was staged on another kind of storage ({0})")]
    WrongBackend(&'static str),
    /// Fewer bytes are staged than the recorded offset says: the staging area lost data.
    #[error("staged data holds {found} bytes, fewer than the {expected} recorded")]
    Short {
        /// Bytes found.
        found: u64,
        /// Bytes recorded.
        expected: u64,
    },
    /// The upload would need parts larger than S3 allows.
    #[error("{0} bytes would need S3 parts over 5 GiB")]
    TooLarge(u64),
    /// The upload id does not make a valid key.
    #[error("upload id: {0}")]
    Key(#[from] KeyError),
}

fn store_err(e: object_store::Error) -> StagingError {
    StagingError::Store(e.to_string())
}

fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> StagingError + '_ {
    move |source| StagingError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The staging area of one origin.
#[derive(Clone)]
pub struct Staging {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Fs {
        root: PathBuf,
        fsync: bool,
    },
    S3 {
        store: Arc<AmazonS3>,
        prefix: Option<StorePath>,
        part_size: u64,
    },
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

/// Resolves when a checkpoint is durable.
pub type Durable = std::pin::Pin<Box<dyn Future<Output = Result<(), StagingError>> + Send>>;

/// What a writer made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The offset the state accounts for.
    pub offset: u64,
    /// The state to record.
    pub state: StageState,
    /// Tail objects the new state no longer needs: delete them with [`Staging::discard`]
    /// once the state is recorded.
    pub obsolete: Vec<String>,
}

impl Staging {
    /// The staging area of the origin `cfg`. On S3, parts are sent at `part_size` (raised
    /// to S3's 5 MiB minimum).
    pub fn from_config(cfg: &OriginConfig, part_size: u64) -> Result<Self, StagingError> {
        match cfg {
            OriginConfig::Fs { root } => {
                std::fs::create_dir_all(root).map_err(io_err(root))?;
                Ok(Self {
                    backend: Backend::Fs {
                        root: root.clone(),
                        fsync: true,
                    },
                })
            }
            OriginConfig::S3(s3) => {
                // Writes are retried more than the edge's reads: an upload has no stale copy.
                let retry = RetryConfig {
                    max_retries: 4,
                    ..RetryConfig::default()
                };
                let store = crate::config::s3_builder(s3, retry)
                    .build()
                    .map_err(|source| BuildError::Store { kind: "s3", source })
                    .map_err(|e| StagingError::Store(e.to_string()))?;
                Ok(Self {
                    backend: Backend::S3 {
                        store: Arc::new(store),
                        prefix: s3.prefix.as_deref().map(StorePath::from),
                        part_size: part_size.clamp(MIN_PART, MAX_PART),
                    },
                })
            }
            OriginConfig::Http(_) => Err(StagingError::ReadOnly),
        }
    }

    /// Whether filesystem checkpoints `fdatasync` (the default). Without it offsets still
    /// survive a crash of the process (the bytes are in the page cache before the record
    /// is written), but not one of the machine.
    pub fn with_fsync(mut self, on: bool) -> Self {
        if let Backend::Fs { fsync, .. } = &mut self.backend {
            *fsync = on;
        }
        self
    }

    /// The kind of storage.
    pub fn kind(&self) -> OriginKind {
        match self.backend {
            Backend::Fs { .. } => OriginKind::Fs,
            Backend::S3 { .. } => OriginKind::S3,
        }
    }

    /// The origin key of upload `id`'s data (complete once the upload is).
    pub fn data_key(id: &str) -> Result<ObjectKey, KeyError> {
        ObjectKey::new(&format!("{STAGING_PREFIX}/{id}/data"))
    }

    fn dir_key(id: &str) -> Result<ObjectKey, KeyError> {
        ObjectKey::new(&format!("{STAGING_PREFIX}/{id}"))
    }

    fn fs_file(root: &std::path::Path, id: &str) -> Result<PathBuf, StagingError> {
        Ok(root.join(Self::data_key(id)?.as_str()))
    }

    fn s3_path(prefix: &Option<StorePath>, key: &ObjectKey) -> StorePath {
        let rel = StorePath::from(key.as_str());
        match prefix {
            Some(p) => p.parts().chain(rel.parts()).collect(),
            None => rel,
        }
    }

    /// Starts staging upload `id` of `size` bytes.
    pub async fn create(&self, id: &str, size: u64) -> Result<StageState, StagingError> {
        match &self.backend {
            Backend::Fs { root, .. } => {
                let path = Self::fs_file(root, id)?;
                tokio::task::spawn_blocking(move || -> Result<(), StagingError> {
                    let dir = path.parent().expect("the data file has a folder");
                    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                    let f = std::fs::File::create(&path).map_err(io_err(&path))?;
                    f.sync_all().map_err(io_err(&path))?;
                    // The new name must survive a crash too.
                    std::fs::File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(io_err(dir))
                })
                .await
                .map_err(|e| StagingError::Store(e.to_string()))??;
                Ok(StageState::Fs)
            }
            Backend::S3 {
                store,
                prefix,
                part_size,
            } => {
                // Parts grow for large uploads so that 10 000 of them still hold it.
                let need = size.div_ceil(MAX_PARTS).next_multiple_of(1 << 20);
                let part_size = (*part_size).max(need);
                if part_size > MAX_PART {
                    return Err(StagingError::TooLarge(size));
                }
                let path = Self::s3_path(prefix, &Self::data_key(id)?);
                let upload_id = store.create_multipart(&path).await.map_err(store_err)?;
                Ok(StageState::S3 {
                    upload_id,
                    part_size,
                    parts: Vec::new(),
                    tail: None,
                    next_tail: 0,
                    completed: false,
                })
            }
        }
    }

    /// A writer that appends to upload `id` from `offset`, the offset recorded with
    /// `state`. Bytes staged past `offset` (after the last checkpoint) are dropped.
    pub async fn writer(
        &self,
        id: &str,
        state: &StageState,
        offset: u64,
    ) -> Result<StageWriter, StagingError> {
        match (&self.backend, state) {
            (Backend::Fs { root, fsync }, StageState::Fs) => {
                let path = Self::fs_file(root, id)?;
                let p = path.clone();
                let file = tokio::task::spawn_blocking(move || -> Result<_, StagingError> {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .map_err(io_err(&p))?;
                    let len = f.metadata().map_err(io_err(&p))?.len();
                    if len < offset {
                        return Err(StagingError::Short {
                            found: len,
                            expected: offset,
                        });
                    }
                    if len > offset {
                        f.set_len(offset).map_err(io_err(&p))?;
                    }
                    Ok(f)
                })
                .await
                .map_err(|e| StagingError::Store(e.to_string()))??;
                let (tx, rx) = mpsc::channel(FS_QUEUE);
                let task = tokio::task::spawn_blocking(move || fs_writer(file, offset, rx));
                Ok(StageWriter {
                    written: offset,
                    start: offset,
                    inner: Inner::Fs {
                        tx,
                        task,
                        path,
                        synced: offset,
                        fsync: *fsync,
                        batch: bytes::BytesMut::new(),
                    },
                })
            }
            (
                Backend::S3 { store, prefix, .. },
                StageState::S3 {
                    upload_id,
                    part_size,
                    parts,
                    tail,
                    next_tail,
                    completed: false,
                },
            ) => {
                let stored = state.s3_stored().unwrap_or(0);
                if stored < offset {
                    return Err(StagingError::Short {
                        found: stored,
                        expected: offset,
                    });
                }
                let dir = Self::dir_key(id)?;
                let mut buf = Vec::new();
                let mut buf_len = 0;
                if let Some(t) = tail {
                    let key = ObjectKey::join(dir.as_str(), &t.name)?;
                    let bytes = store
                        .get(&Self::s3_path(prefix, &key))
                        .await
                        .map_err(store_err)?
                        .bytes()
                        .await
                        .map_err(store_err)?;
                    if (bytes.len() as u64) != t.size {
                        return Err(StagingError::Short {
                            found: bytes.len() as u64,
                            expected: t.size,
                        });
                    }
                    buf_len = t.size;
                    buf.push(bytes);
                }
                Ok(StageWriter {
                    written: stored,
                    start: stored,
                    inner: Inner::S3(Box::new(S3Writer {
                        store: Arc::clone(store),
                        prefix: prefix.clone(),
                        path: Self::s3_path(prefix, &Self::data_key(id)?),
                        dir,
                        upload_id: upload_id.clone(),
                        part_size: *part_size,
                        parts: parts.clone(),
                        tail: tail.clone(),
                        next_tail: *next_tail,
                        buf,
                        buf_len,
                        obsolete: Vec::new(),
                        parts_at_checkpoint: parts.len(),
                    })),
                })
            }
            (
                _,
                StageState::S3 {
                    completed: true, ..
                },
            ) => Err(StagingError::Store("the upload is already complete".into())),
            (Backend::Fs { .. }, _) => Err(StagingError::WrongBackend("s3")),
            (Backend::S3 { .. }, _) => Err(StagingError::WrongBackend("fs")),
        }
    }

    /// Deletes tail objects of upload `id` that a recorded state no longer names.
    pub async fn discard(&self, id: &str, names: &[String]) -> Result<(), StagingError> {
        let Backend::S3 { store, prefix, .. } = &self.backend else {
            return Ok(());
        };
        let dir = Self::dir_key(id)?;
        for name in names {
            let key = ObjectKey::join(dir.as_str(), name)?;
            match store.delete(&Self::s3_path(prefix, &key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(store_err(e)),
            }
        }
        Ok(())
    }

    /// Removes everything staged for upload `id`: the data, any tail, and an unfinished
    /// multipart upload.
    pub async fn remove(&self, id: &str, state: &StageState) -> Result<(), StagingError> {
        match &self.backend {
            Backend::Fs { root, .. } => {
                let dir = root.join(Self::dir_key(id)?.as_str());
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_err(&dir)(e)),
                }
            }
            Backend::S3 { store, prefix, .. } => {
                if let StageState::S3 {
                    upload_id,
                    completed: false,
                    ..
                } = state
                {
                    let path = Self::s3_path(prefix, &Self::data_key(id)?);
                    match store.abort_multipart(&path, upload_id).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(e)),
                    }
                }
                let dir = Self::s3_path(prefix, &Self::dir_key(id)?);
                let mut list = store.list(Some(&dir));
                let mut paths = Vec::new();
                while let Some(meta) = list.next().await {
                    paths.push(meta.map_err(store_err)?.location);
                }
                for p in paths {
                    match store.delete(&p).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(store_err(e)),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Writes queued to the file writer thread before `write` waits.
const FS_QUEUE: usize = 16;
/// Network reads are often a few KiB; they are gathered into writes of this size, so a
/// gigabyte costs thousands of system calls and thread wake-ups, not hundreds of thousands.
const FS_BATCH: usize = 256 << 10;

async fn send_write(
    tx: &mpsc::Sender<FsCmd>,
    path: &std::path::Path,
    b: Bytes,
) -> Result<(), StagingError> {
    tx.send(FsCmd::Write(b))
        .await
        .map_err(|_| StagingError::Io {
            path: path.display().to_string(),
            source: io::Error::other("the writer thread stopped"),
        })
}

enum FsCmd {
    Write(Bytes),
    Sync(oneshot::Sender<io::Result<()>>),
    /// Answers, once every earlier write is done, with a handle to `fdatasync` on.
    Barrier(oneshot::Sender<io::Result<std::fs::File>>),
    Truncate(u64, oneshot::Sender<io::Result<()>>),
}

/// The blocking side of a filesystem writer: positioned writes, `fdatasync` on request.
/// A write error is kept and reported by the next `Sync`, so the async side never waits
/// on a write.
fn fs_writer(file: std::fs::File, mut pos: u64, mut rx: mpsc::Receiver<FsCmd>) {
    use std::os::unix::fs::FileExt;
    let mut failed: Option<io::Error> = None;
    let take = |failed: &mut Option<io::Error>| match failed.take() {
        Some(e) => {
            let again = io::Error::new(e.kind(), e.to_string());
            *failed = Some(e);
            Err(again)
        }
        None => Ok(()),
    };
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            FsCmd::Write(b) => {
                if failed.is_none() {
                    match file.write_all_at(&b, pos) {
                        Ok(()) => pos += b.len() as u64,
                        Err(e) => failed = Some(e),
                    }
                }
            }
            FsCmd::Sync(reply) => {
                let r = take(&mut failed).and_then(|()| file.sync_data());
                let _ = reply.send(r);
            }
            FsCmd::Barrier(reply) => {
                let r = take(&mut failed).and_then(|()| file.try_clone());
                let _ = reply.send(r);
            }
            FsCmd::Truncate(len, reply) => {
                let r = file.set_len(len).and_then(|()| file.sync_data());
                let _ = reply.send(r);
            }
        }
    }
}

/// Appends to one staged upload. Made by [`Staging::writer`]; ends with
/// [`StageWriter::commit`] (keep what was written) or [`StageWriter::rollback`] (drop it).
pub struct StageWriter {
    written: u64,
    start: u64,
    inner: Inner,
}

enum Inner {
    Fs {
        tx: mpsc::Sender<FsCmd>,
        task: tokio::task::JoinHandle<()>,
        path: PathBuf,
        synced: u64,
        fsync: bool,
        /// Small chunks gathered into one positioned write of up to [`FS_BATCH`].
        batch: bytes::BytesMut,
    },
    S3(Box<S3Writer>),
}

struct S3Writer {
    store: Arc<AmazonS3>,
    prefix: Option<StorePath>,
    path: StorePath,
    dir: ObjectKey,
    upload_id: String,
    part_size: u64,
    parts: Vec<Part>,
    tail: Option<Tail>,
    next_tail: u64,
    buf: Vec<Bytes>,
    buf_len: u64,
    obsolete: Vec<String>,
    parts_at_checkpoint: usize,
}

impl S3Writer {
    fn state(&self, completed: bool) -> StageState {
        StageState::S3 {
            upload_id: self.upload_id.clone(),
            part_size: self.part_size,
            parts: self.parts.clone(),
            tail: self.tail.clone(),
            next_tail: self.next_tail,
            completed,
        }
    }

    /// Sends the whole buffer as the next part; the tail it started with is then obsolete.
    async fn send_part(&mut self) -> Result<(), StagingError> {
        let idx = self.parts.len();
        let size = self.buf_len;
        let payload: PutPayload = std::mem::take(&mut self.buf).into_iter().collect();
        let PartId { content_id } = self
            .store
            .put_part(&self.path, &self.upload_id, idx, payload)
            .await
            .map_err(store_err)?;
        self.parts.push(Part {
            etag: content_id,
            size,
        });
        self.buf_len = 0;
        if let Some(t) = self.tail.take() {
            self.obsolete.push(t.name);
        }
        Ok(())
    }
}

impl StageWriter {
    /// Bytes staged so far, counted from the start of the upload.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Where this writer started.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Appends `chunk`. On S3 a full part is sent before this returns.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StagingError> {
        let len = chunk.len() as u64;
        match &mut self.inner {
            Inner::Fs {
                tx, path, batch, ..
            } => {
                if batch.is_empty() && chunk.len() >= FS_BATCH {
                    send_write(tx, path, chunk).await?;
                } else {
                    batch.extend_from_slice(&chunk);
                    if batch.len() >= FS_BATCH {
                        send_write(tx, path, batch.split().freeze()).await?;
                    }
                }
            }
            Inner::S3(w) => {
                w.buf.push(chunk);
                w.buf_len += len;
                if w.buf_len >= w.part_size {
                    w.send_part().await?;
                }
            }
        }
        self.written += len;
        Ok(())
    }

    /// Whether [`StageWriter::checkpoint`] would now make everything written durable: on
    /// the filesystem once `fs_every` bytes are unsynced, on S3 right after a part was sent.
    pub fn checkpoint_due(&self, fs_every: u64) -> bool {
        match &self.inner {
            Inner::Fs { synced, .. } => self.written - *synced >= fs_every,
            Inner::S3(w) => w.buf_len == 0 && w.parts.len() > w.parts_at_checkpoint,
        }
    }

    /// Starts making everything written so far durable, without waiting for it: on the
    /// filesystem the returned future resolves once an `fdatasync` (on its own thread, so
    /// writing goes on) covers it; on S3 at once, but only when nothing is buffered (right
    /// after a part), otherwise `None`. Record the [`Committed`] state once it resolves.
    pub async fn checkpoint(&mut self) -> Result<Option<(Committed, Durable)>, StagingError> {
        match &mut self.inner {
            Inner::Fs {
                tx,
                path,
                synced,
                fsync,
                batch,
                ..
            } => {
                if !batch.is_empty() {
                    send_write(tx, path, batch.split().freeze()).await?;
                }
                let (reply, answer) = oneshot::channel();
                let p = path.clone();
                let stopped = move |p: &std::path::Path| StagingError::Io {
                    path: p.display().to_string(),
                    source: io::Error::other("the writer thread stopped"),
                };
                tx.send(FsCmd::Barrier(reply))
                    .await
                    .map_err(|_| stopped(path))?;
                *synced = self.written;
                let fsync = *fsync;
                let durable = Box::pin(async move {
                    let f = answer.await.map_err(|_| stopped(&p))?.map_err(io_err(&p))?;
                    if fsync {
                        let q = p.clone();
                        tokio::task::spawn_blocking(move || f.sync_data())
                            .await
                            .map_err(|e| StagingError::Store(e.to_string()))?
                            .map_err(io_err(&q))?;
                    }
                    Ok(())
                });
                Ok(Some((
                    Committed {
                        offset: self.written,
                        state: StageState::Fs,
                        obsolete: Vec::new(),
                    },
                    durable,
                )))
            }
            Inner::S3(w) => {
                if w.buf_len != 0 {
                    return Ok(None);
                }
                w.parts_at_checkpoint = w.parts.len();
                Ok(Some((
                    Committed {
                        offset: self.written,
                        state: w.state(false),
                        obsolete: Vec::new(),
                    },
                    Box::pin(std::future::ready(Ok(()))),
                )))
            }
        }
    }

    /// Makes everything written durable and ends the writer. With `last`, the upload is
    /// complete: on S3 the remaining bytes are the last part and the multipart upload is
    /// completed into the data object.
    pub async fn commit(self, last: bool) -> Result<Committed, StagingError> {
        let written = self.written;
        match self.inner {
            Inner::Fs {
                tx,
                task,
                path,
                fsync,
                mut batch,
                ..
            } => {
                if !batch.is_empty() {
                    send_write(&tx, &path, batch.split().freeze()).await?;
                }
                if fsync {
                    fs_call(&tx, &path, FsCmd::Sync).await?;
                } else {
                    let (reply, answer) = oneshot::channel();
                    let _ = tx.send(FsCmd::Barrier(reply)).await;
                    let _ = answer.await;
                }
                drop(tx);
                let _ = task.await;
                Ok(Committed {
                    offset: written,
                    state: StageState::Fs,
                    obsolete: Vec::new(),
                })
            }
            Inner::S3(mut w) => {
                if last {
                    if w.buf_len > 0 || w.parts.is_empty() {
                        w.send_part().await?;
                    }
                    let ids = w
                        .parts
                        .iter()
                        .map(|p| PartId {
                            content_id: p.etag.clone(),
                        })
                        .collect();
                    w.store
                        .complete_multipart(&w.path, &w.upload_id, ids)
                        .await
                        .map_err(store_err)?;
                    if let Some(t) = w.tail.take() {
                        w.obsolete.push(t.name);
                    }
                    return Ok(Committed {
                        offset: written,
                        state: w.state(true),
                        obsolete: std::mem::take(&mut w.obsolete),
                    });
                }
                let stored_before = w.parts.iter().map(|p| p.size).sum::<u64>()
                    + w.tail.as_ref().map_or(0, |t| t.size);
                if w.buf_len >= MIN_PART {
                    w.send_part().await?;
                } else if written > stored_before {
                    // The bytes after the last part, as a new tail object.
                    let name = format!("tail-{}", w.next_tail);
                    let key = ObjectKey::join(w.dir.as_str(), &name)?;
                    let payload: PutPayload = w.buf.iter().cloned().collect();
                    w.store
                        .put(&Staging::s3_path(&w.prefix, &key), payload)
                        .await
                        .map_err(store_err)?;
                    w.next_tail += 1;
                    if let Some(old) = w.tail.replace(Tail {
                        name,
                        size: w.buf_len,
                    }) {
                        w.obsolete.push(old.name);
                    }
                }
                Ok(Committed {
                    offset: written,
                    state: w.state(false),
                    obsolete: std::mem::take(&mut w.obsolete),
                })
            }
        }
    }

    /// Drops what this writer wrote since its start (used when a PATCH's checksum does not
    /// match, which is never checkpointed before it is verified).
    pub async fn rollback(self) -> Result<(), StagingError> {
        match self.inner {
            Inner::Fs { tx, task, path, .. } => {
                let start = self.start;
                fs_call(&tx, &path, |r| FsCmd::Truncate(start, r)).await?;
                drop(tx);
                let _ = task.await;
                Ok(())
            }
            // Parts sent are not in any recorded state: later parts with the same numbers
            // replace them, and completion lists only recorded parts.
            Inner::S3(_) => Ok(()),
        }
    }
}

async fn fs_call(
    tx: &mpsc::Sender<FsCmd>,
    path: &std::path::Path,
    cmd: impl FnOnce(oneshot::Sender<io::Result<()>>) -> FsCmd,
) -> Result<(), StagingError> {
    let (reply, answer) = oneshot::channel();
    let stopped = || StagingError::Io {
        path: path.display().to_string(),
        source: io::Error::other("the writer thread stopped"),
    };
    tx.send(cmd(reply)).await.map_err(|_| stopped())?;
    answer.await.map_err(|_| stopped())?.map_err(io_err(path))
}

#[cfg(test)]
mod tests;

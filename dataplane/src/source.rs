//! Where the gate's state comes from, between the listeners (which start these sources)
//! and the pipeline (whose gate they install snapshots into): the state store, watched
//! from the revision last applied ([`watch`]), or a snapshot file re-read when it changes
//! ([`file`]). Both install immutable [`crate::gate::Snapshot`]s; neither knows about
//! listeners.

pub(crate) mod file;
pub(crate) mod watch;

/// A document an edge keeps under one leased key of the store (its session counts, its
/// QoE aggregates), published by the state watcher's publisher tasks.
pub(crate) trait Publish: Send + Sync + 'static {
    /// The document, if it changed since the last call.
    fn changes(&self) -> Option<serde_json::Value>;
    /// The document as it is now (written again under a new lease).
    fn document(&self) -> serde_json::Value;
    /// Housekeeping before each publication (expiring idle entries).
    fn tick(&self) {}
}

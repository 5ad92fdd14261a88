//! Where the gate's state comes from, between the listeners (which start these sources)
//! and the pipeline (whose gate they install snapshots into): the state store, watched
//! from the revision last applied ([`watch`]), or a snapshot file re-read when it changes
//! ([`file`]). Both install immutable [`crate::gate::Snapshot`]s; neither knows about
//! listeners.

pub(crate) mod file;
pub(crate) mod watch;

#![no_main]
//! The state an edge enforces arrives as JSON from the store (or a snapshot file): any
//! bytes must build a snapshot or be refused, never panic; a document the strict reader
//! accepts, the store reader accepts with no problems; an asset the store reader keeps is
//! one path segment, and its policy, if the snapshot has it, is one it built.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::internals::Snapshot;

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let strict = Snapshot::from_value(doc.clone(), 16).is_ok();
    match Snapshot::from_store(doc, 16) {
        Ok((s, problems)) => {
            if strict {
                assert!(problems.is_empty(), "{problems:?}");
            }
            for id in s.assets.keys() {
                assert!(!id.is_empty() && !id.contains('/'), "{id:?}");
            }
            for p in s.policies.keys() {
                assert!(!p.is_empty());
            }
        }
        Err(_) => assert!(!strict),
    }
});

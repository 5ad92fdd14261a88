//! The CMAF box reader must never panic, whatever the bytes: it reads
//! segment files from disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_transcode::cmaf::{InitSegment, parse_init, parse_segment};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the split between an init and a media segment, so
    // one input exercises both readers and segments parsed against a real
    // (fuzzed) init.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = rest.len() * usize::from(split) / 255;
    let (init_bytes, segment_bytes) = rest.split_at(at.min(rest.len()));
    let init = match parse_init(init_bytes) {
        Ok(init) => init,
        Err(_) => {
            let _ = parse_init(rest);
            return;
        }
    };
    let _ = parse_segment(segment_bytes, &init);
    let _ = parse_segment(rest, &init);
    // Also against an init that trusts trex defaults, to reach those paths.
    let defaults = InitSegment {
        default_sample_duration: 1024,
        ..init
    };
    let _ = parse_segment(segment_bytes, &defaults);
});

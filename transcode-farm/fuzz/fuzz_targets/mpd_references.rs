//! The MPD reader used by output verification must never panic on any text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_transcode::verify::mpd_references;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = mpd_references(text);
    }
});

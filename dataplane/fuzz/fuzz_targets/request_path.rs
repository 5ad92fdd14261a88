#![no_main]
//! Request paths come straight from the network: routing must never panic, and an accepted
//! object key must never hold a traversal segment, an empty segment or a control character.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::request::{Route, route};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(Route::Object { asset, key }) = route(path) {
        assert!(key.starts_with(asset.as_ref()));
        assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
        assert!(!key.bytes().any(|b| b < 0x20 || b == b'\\'));
    }
});

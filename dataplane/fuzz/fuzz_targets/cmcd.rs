#![no_main]
//! CMCD comes from players (query and headers) and session counts from other edges (the
//! store): parsing must never panic, session ids stay within their bound, and every
//! parsed key is a CMCD key.
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use streamgate_edge::cmcd::{MAX_SID, pairs, session_id};
use streamgate_edge::session::parse_counts;

fuzz_target!(|data: &[u8]| {
    let _ = parse_counts(data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ps) = pairs(s) {
        for (k, _) in ps {
            assert!(!k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        }
    }
    let query = format!("CMCD={}", s);
    if let Some(sid) = session_id(Some(&query), &HeaderMap::new()) {
        assert!(!sid.is_empty() && sid.len() <= MAX_SID);
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = s.parse() {
        h.insert("cmcd-session", v);
        if let Some(sid) = session_id(None, &h) {
            assert!(!sid.is_empty() && sid.len() <= MAX_SID);
        }
    }
});

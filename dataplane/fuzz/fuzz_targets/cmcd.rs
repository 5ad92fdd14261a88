#![no_main]
//! CMCD comes from players (query and headers) and session counts and denials from other edges
//! (the store): parsing must never panic, the QoE reader gives a record or an error, session ids stay within their bound, and every
//! parsed key is a CMCD key.
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use streamgate_edge::cmcd::{MAX_SID, pairs, read, session_id};
use streamgate_edge::session::parse_counts;
use streamgate_edge::sharing::parse_denial;

fuzz_target!(|data: &[u8]| {
    let _ = parse_counts(data);
    let _ = parse_denial("/streamgate/v1/denials/00000000000000ab", data);
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ps) = pairs(s) {
        for (k, _) in ps {
            assert!(!k.is_empty() && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
        }
    }
    let query = format!("CMCD={}", s);
    // The QoE reader: a record or a clear error, and numbers that are numbers.
    if let Ok(Some(d)) = read(Some(&query), &HeaderMap::new()) {
        assert!(d.br.is_none_or(|b| b.is_finite() && b >= 0.0));
        assert!(d.mtp.is_none_or(|b| b.is_finite() && b >= 0.0));
    }
    if let Some(sid) = session_id(Some(&query), &HeaderMap::new()) {
        assert!(!sid.is_empty() && sid.len() <= MAX_SID);
    }
    let mut h = HeaderMap::new();
    if let Ok(v) = s.parse() {
        h.insert("cmcd-session", v);
        let mut all = h.clone();
        for name in ["cmcd-request", "cmcd-object", "cmcd-status"] {
            all.insert(name, s.parse().expect("parsed above"));
        }
        let _ = read(None, &all);
        if let Some(sid) = session_id(None, &h) {
            assert!(!sid.is_empty() && sid.len() <= MAX_SID);
        }
    }
});

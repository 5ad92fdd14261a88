#![no_main]
//! CMCD comes from players (query and headers), and session counts and denials from other
//! edges (the store): parsing must never panic, the CMCD reader gives a record or an error
//! with finite, non-negative numbers, and every parsed key is a CMCD key.
use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use streamgate_edge::cmcd::{pairs, read};
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
    if let Ok(Some(d)) = read(Some(&query), &HeaderMap::new()) {
        assert!(d.br.is_none_or(|b| b.is_finite() && b >= 0.0));
        assert!(d.mtp.is_none_or(|b| b.is_finite() && b >= 0.0));
    }
    if let Ok(v) = s.parse::<http::HeaderValue>() {
        let mut h = HeaderMap::new();
        h.insert("cmcd-session", v.clone());
        let _ = read(None, &h);
        for name in ["cmcd-request", "cmcd-object", "cmcd-status"] {
            h.insert(name, v.clone());
        }
        let _ = read(None, &h);
    }
});

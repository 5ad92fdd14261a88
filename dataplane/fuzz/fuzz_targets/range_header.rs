#![no_main]
//! `Range` and `If-None-Match` headers come from clients: parsing must never panic, and a
//! partial range must always lie inside the object.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::request::{RangeOutcome, if_none_match, parse_range};

fuzz_target!(|input: (u32, &[u8])| {
    let (len, header) = input;
    if let RangeOutcome::Partial { start, end } = parse_range(header, u64::from(len)) {
        assert!(start <= end && end < u64::from(len));
    }
    let _ = if_none_match(header, b"\"abc\"");
});

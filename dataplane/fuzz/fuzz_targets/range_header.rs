#![no_main]
//! `Range` and `If-None-Match` headers come from clients: parsing must never panic, and a
//! partial range must always lie inside the object, and the ranges of a multi-range
//! answer never overlap.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::request::{MultiRange, RangeOutcome, if_none_match, parse_range, parse_ranges};

fuzz_target!(|input: (u32, &[u8])| {
    let (len, header) = input;
    if let RangeOutcome::Partial { start, end } = parse_range(header, u64::from(len)) {
        assert!(start <= end && end < u64::from(len));
    }
    if let MultiRange::Ranges(rs) = parse_ranges(header, u64::from(len)) {
        for (i, &(a, b)) in rs.iter().enumerate() {
            assert!(a <= b && b < u64::from(len));
            assert!(rs[i + 1..].iter().all(|&(c, d)| b < c || d < a));
        }
    }
    let _ = if_none_match(header, b"\"abc\"");
});

//! The tus header parsers take bytes from any client: they must never panic, and what
//! they accept must mean what it says (metadata re-encodes to the same pairs, integers
//! print back as the digits sent without leading zeros).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamgate_transcode::ingest::headers::{
    check_resumable, encode_metadata, is_offset_stream, parse_checksum, parse_metadata, parse_u64,
};
use streamgate_transcode::ingest::record::validate_metadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = parse_u64(data) {
        let digits = std::str::from_utf8(data).unwrap().trim_start_matches('0');
        assert_eq!(n.to_string().trim_start_matches('0'), digits);
    }
    if let Ok(c) = parse_checksum(data) {
        assert_eq!(c.digest.len(), c.algorithm.digest_len());
    }
    if let Ok(pairs) = parse_metadata(data) {
        let enc = encode_metadata(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        assert_eq!(parse_metadata(enc.as_bytes()).unwrap(), pairs);
    }
    let _ = check_resumable(Some(data));
    let _ = is_offset_stream(Some(data));
    let _ = validate_metadata(data, &["default".to_owned()], "default");
});

#![no_main]
//! What JSON-RPC providers answer is outside input: `eth_getLogs` results and Multicall3
//! `aggregate3` return data must decode or be refused, never panic. Decoded movements are
//! 20-byte addresses of logs that were not removed, and an aggregate3 answer has exactly
//! one result per call.
use libfuzzer_sys::fuzz_target;
use streamgate_web3::evm::{decode_aggregate3, decode_logs};

fuzz_target!(|data: &[u8]| {
    let (calls, rest) = match data.split_first() {
        Some((n, rest)) => (usize::from(*n % 8), rest),
        None => return,
    };
    if let Ok(results) = decode_aggregate3(rest, calls) {
        assert_eq!(results.len(), calls);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest)
        && let Ok(moves) = decode_logs(&v)
    {
        let logs = v.as_array().map_or(0, Vec::len);
        assert!(moves.len() <= logs);
    }
});

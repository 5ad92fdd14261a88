#![no_main]
//! Solana account data and token ids come from RPC providers and policy authors: the
//! decoders must never panic, and a decoded token account must describe its own bytes.
use libfuzzer_sys::fuzz_target;
use streamgate_web3::solana::{decode_metadata, decode_token_account};

fuzz_target!(|data: &[u8]| {
    if let Some(t) = decode_token_account(data) {
        assert_eq!(&t.mint[..], &data[..32]);
        assert_eq!(&t.owner[..], &data[32..64]);
    }
    if let Some(m) = decode_metadata(data) {
        assert_eq!(&m.mint[..], &data[33..65]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let v = serde_json::Value::String(text.to_owned());
        if let Ok(id) = streamgate_policy::parse_token_id(&v) {
            // Whatever parses reads back to the same number.
            let again = streamgate_policy::token_id_text(&id);
            assert_eq!(
                streamgate_policy::parse_token_id(&serde_json::Value::String(again)),
                Ok(id)
            );
        }
    }
});

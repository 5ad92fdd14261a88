#![no_main]
//! Tokens come from anyone: verification must never panic and never accept a token that
//! was not signed by the one key (a fuzzer cannot forge an Ed25519 signature).
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use streamgate_edge::gate::jwt::{KeySet, VerifyingKey, verify};
use streamgate_policy::KeyDoc;

fuzz_target!(|data: &[u8]| {
    let doc = KeyDoc::from_value(&serde_json::json!({
        "kid": "k", "alg": "EdDSA", "crv": "Ed25519",
        "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    }))
    .expect("valid key");
    let mut keys = KeySet::new();
    keys.insert("k".into(), VerifyingKey::new(&doc).expect("key"));
    if let Ok(token) = std::str::from_utf8(data) {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert!(verify(token, &keys, None, now, Duration::from_secs(30)).is_err());
    }
});

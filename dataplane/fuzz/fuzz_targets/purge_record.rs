#![no_main]
//! Purge records come from the store: any bytes give a prefix or a refusal, never a panic,
//! and a prefix is never empty nor absolute (so a purge cannot empty the whole cache by
//! accident), and an asset purge covers exactly that asset's folder.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::internals::purge_prefix;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = purge_prefix(data) {
        assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
            && let Some(a) = v.get("asset").and_then(|a| a.as_str())
        {
            assert_eq!(p, format!("{a}/"));
        }
    }
});

#![no_main]
//! Config files are operator input: any bytes must give a config or a list of errors, never a panic.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::EdgeConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = EdgeConfig::from_toml_str(text, Vec::new(), "fuzz.toml");
    }
});

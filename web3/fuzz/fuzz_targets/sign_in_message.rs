#![no_main]
//! Sign-in messages come from anyone: parsing must never panic, and whatever parses must
//! write back to the exact text it came from (so the signed bytes are the checked bytes).
use libfuzzer_sys::fuzz_target;
use streamgate_web3::siwe::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(m) = Message::parse(text)
    {
        assert_eq!(m.to_text(), text);
    }
});

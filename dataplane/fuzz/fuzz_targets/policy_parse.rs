#![no_main]
//! Policies are operator input: any bytes give a policy or a list of errors, never a panic,
//! and a policy that parses survives its canonical round trip.
use libfuzzer_sys::fuzz_target;
use streamgate_policy::Policy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(p) = Policy::parse(text)
    {
        assert_eq!(Policy::from_value(&p.to_value()).expect("canonical form parses"), p);
    }
});

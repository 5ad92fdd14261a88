#![no_main]
//! Manifests come from origin storage, which operators do not fully control: rewriting must
//! never panic, must keep HLS line structure, and must never add the token to an absolute URI.
use libfuzzer_sys::fuzz_target;
use streamgate_edge::rewrite::{rewrite_hls, rewrite_mpd};

const P: &str = "token=t0k3n";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let out = rewrite_hls(text, P);
        assert_eq!(out.matches('\n').count(), text.matches('\n').count());
        // A line that names another host keeps its bytes: the token never leaks there.
        for (inp, outp) in text.lines().zip(out.lines()) {
            if inp.starts_with("https://") || inp.starts_with("http://") || inp.starts_with("//") {
                assert_eq!(inp.trim_end_matches('\r'), outp.trim_end_matches('\r'));
            }
        }
    }
    let _ = rewrite_mpd(data, P);
});

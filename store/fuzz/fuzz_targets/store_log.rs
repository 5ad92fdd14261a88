#![no_main]
//! The embedded store replays its log at every start; a log is the store's own, but a disk
//! or an operator can damage it. Any bytes must replay or be refused with an error, never
//! panic; a torn last line is left out, so a prefix of whole lines replays the same.
use libfuzzer_sys::fuzz_target;
use streamgate_store::embedded::check_log;

fuzz_target!(|data: &[u8]| {
    let whole = match check_log(data) {
        Ok(w) => w,
        Err(_) => return,
    };
    // Dropping a torn tail changes nothing.
    if let Some(end) = data.iter().rposition(|b| *b == b'\n')
        && end + 1 < data.len()
    {
        assert_eq!(check_log(&data[..=end]).ok(), Some(whole));
    }
});

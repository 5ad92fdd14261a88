//! In-place retiming of a media segment: the stitcher of segment-parallel encoding.
//!
//! Each task of a job encodes a run of segments on its own, so its first fragment starts
//! at decode time 0 and sequence number 1. [`shift_segment`] moves a segment to its place
//! in the whole timeline: every `tfdt` and the `sidx` earliest presentation time grow by
//! `delta` ticks, and `mfhd` gets the global sequence number. Sizes never change (fields
//! are rewritten where they are), so `trun` data offsets and `sidx` references stay right.

use super::{CmafError, FourCc};

/// A box found while walking: its type and where its body lies in the buffer.
struct Span {
    kind: FourCc,
    body: std::ops::Range<usize>,
}

/// The boxes laid end to end in `data[range]`, with absolute offsets.
fn spans(data: &[u8], range: std::ops::Range<usize>) -> Result<Vec<Span>, CmafError> {
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let head = data
            .get(pos..range.end)
            .ok_or(CmafError::Truncated("box header"))?;
        let h = super::header(head)?;
        let (kind, header) = (FourCc(h.kind), h.header_len);
        let size = h.size.unwrap_or(head.len() as u64);
        let size = usize::try_from(size).map_err(|_| CmafError::Truncated("top-level"))?;
        if size > head.len() {
            return Err(CmafError::Truncated("top-level"));
        }
        out.push(Span {
            kind,
            body: pos + header..pos + size,
        });
        pos += size;
    }
    Ok(out)
}

fn read_u32(data: &[u8], at: usize, what: &'static str) -> Result<u32, CmafError> {
    let b = data.get(at..at + 4).ok_or(CmafError::Truncated(what))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn read_u64(data: &[u8], at: usize, what: &'static str) -> Result<u64, CmafError> {
    let b = data.get(at..at + 8).ok_or(CmafError::Truncated(what))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Ok(u64::from_be_bytes(a))
}

fn write(data: &mut [u8], at: usize, bytes: &[u8], what: &'static str) -> Result<(), CmafError> {
    data.get_mut(at..at + bytes.len())
        .ok_or(CmafError::Truncated(what))?
        .copy_from_slice(bytes);
    Ok(())
}

/// Adds `delta` to a version-0 (32-bit) or version-1 (64-bit) time field at `at`.
fn shift_time(
    data: &mut [u8],
    at: usize,
    version: u8,
    delta: u64,
    what: &'static str,
) -> Result<(), CmafError> {
    if version == 1 {
        let t = read_u64(data, at, what)?
            .checked_add(delta)
            .ok_or(CmafError::Overflow)?;
        write(data, at, &t.to_be_bytes(), what)
    } else {
        let t = u64::from(read_u32(data, at, what)?)
            .checked_add(delta)
            .ok_or(CmafError::Overflow)?;
        // A 32-bit field cannot grow without moving every offset after it.
        let t = u32::try_from(t).map_err(|_| CmafError::Overflow)?;
        write(data, at, &t.to_be_bytes(), what)
    }
}

/// Moves the media segment in `data` by `delta` ticks of its track's timescale and gives
/// its first `mfhd` the sequence number `sequence`. Returns how many `tfdt` boxes moved.
pub fn shift_segment(data: &mut [u8], delta: u64, sequence: u32) -> Result<usize, CmafError> {
    let mut moved = 0;
    let mut sequenced = false;
    for top in spans(data, 0..data.len())? {
        match &top.kind.0 {
            b"sidx" => {
                let b = top.body.start;
                let version = *data.get(b).ok_or(CmafError::Truncated("sidx"))?;
                // version/flags, reference_ID, timescale, then earliest_presentation_time.
                shift_time(data, b + 12, version, delta, "sidx")?;
            }
            b"moof" => {
                for child in spans(data, top.body.clone())? {
                    match &child.kind.0 {
                        b"mfhd" if !sequenced => {
                            write(data, child.body.start + 4, &sequence.to_be_bytes(), "mfhd")?;
                            sequenced = true;
                        }
                        b"traf" => {
                            for t in spans(data, child.body.clone())? {
                                if &t.kind.0 == b"tfdt" {
                                    let b = t.body.start;
                                    let version =
                                        *data.get(b).ok_or(CmafError::Truncated("tfdt"))?;
                                    shift_time(data, b + 4, version, delta, "tfdt")?;
                                    moved += 1;
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if moved == 0 {
        return Err(CmafError::Missing("tfdt"));
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(body);
        v
    }

    /// styp, sidx (v0 or v1), moof(mfhd, traf(tfhd, tfdt v0/v1)), mdat.
    fn segment(tfdt: u64, tfdt_v1: bool, sidx_v1: bool) -> Vec<u8> {
        let mut sidx = vec![u8::from(sidx_v1), 0, 0, 0];
        sidx.extend_from_slice(&1u32.to_be_bytes());
        sidx.extend_from_slice(&15360u32.to_be_bytes());
        if sidx_v1 {
            sidx.extend_from_slice(&tfdt.to_be_bytes());
            sidx.extend_from_slice(&0u64.to_be_bytes());
        } else {
            sidx.extend_from_slice(&(tfdt as u32).to_be_bytes());
            sidx.extend_from_slice(&0u32.to_be_bytes());
        }
        sidx.extend_from_slice(&[0, 0, 0, 0]);
        let mut tfdt_body = vec![u8::from(tfdt_v1), 0, 0, 0];
        if tfdt_v1 {
            tfdt_body.extend_from_slice(&tfdt.to_be_bytes());
        } else {
            tfdt_body.extend_from_slice(&(tfdt as u32).to_be_bytes());
        }
        let traf = [
            boxed(b"tfhd", &[0, 2, 0, 0, 0, 0, 0, 1]),
            boxed(b"tfdt", &tfdt_body),
        ]
        .concat();
        let moof = [
            boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]),
            boxed(b"traf", &traf),
        ]
        .concat();
        [
            boxed(b"styp", b"msdh\0\0\0\0msdhmsix"),
            boxed(b"sidx", &sidx),
            boxed(b"moof", &moof),
            boxed(b"mdat", &[1, 2, 3]),
        ]
        .concat()
    }

    #[test]
    fn shifts_tfdt_sidx_and_sequence_in_place() {
        let mut s = segment(49_152, true, false);
        let before = s.len();
        assert_eq!(shift_segment(&mut s, 1_000_000, 7).unwrap(), 1);
        assert_eq!(s, {
            let mut want = segment(1_049_152, true, false);
            // mfhd sequence number sits 4 bytes into its body.
            let at = want.windows(4).position(|w| w == b"mfhd").unwrap() + 8;
            want[at..at + 4].copy_from_slice(&7u32.to_be_bytes());
            want
        });
        assert_eq!(s.len(), before);
    }

    #[test]
    fn a_32_bit_field_that_would_overflow_is_an_error() {
        let mut s = segment(10, false, false);
        assert_eq!(
            shift_segment(&mut s, u64::from(u32::MAX), 1),
            Err(CmafError::Overflow)
        );
        let mut s = segment(10, true, true);
        assert!(shift_segment(&mut s, u64::from(u32::MAX), 1).is_ok());
    }

    #[test]
    fn garbage_is_refused() {
        assert!(shift_segment(&mut [], 1, 1).is_err());
        assert!(shift_segment(&mut [0, 0, 0, 9, b'm', b'o', b'o', b'f'], 1, 1).is_err());
        let mut s = segment(0, true, true);
        s.truncate(s.len() - 2);
        assert!(shift_segment(&mut s, 1, 1).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_never_resizes(mut data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256), delta in 0u64..1 << 40) {
            let len = data.len();
            let _ = shift_segment(&mut data, delta, 3);
            proptest::prop_assert_eq!(data.len(), len);
        }

        #[test]
        fn shifting_adds_exactly_delta(start in 0u64..1 << 40, delta in 0u64..1 << 40) {
            let mut s = segment(start, true, true);
            shift_segment(&mut s, delta, 2).unwrap();
            proptest::prop_assert_eq!(s, {
                let mut w = segment(start + delta, true, true);
                let at = w.windows(4).position(|w| w == b"mfhd").unwrap() + 8;
                w[at..at + 4].copy_from_slice(&2u32.to_be_bytes());
                w
            });
        }
    }
}

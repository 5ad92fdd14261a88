//! ISO-BMFF (MP4) box headers: the one reader that the probe's file check, the CMAF
//! parser and the segment retimer share. Pure: bytes in, a header or why not out.

/// A box header: the box's type, how long the header is, and the box's total size
/// (`None`: it runs to the end of its container, size field 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: [u8; 4],
    pub(crate) header_len: usize,
    pub(crate) size: Option<u64>,
}

/// Why bytes are not a box header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer bytes than the header needs (8, or 16 with a 64-bit size).
    Short,
    /// A size smaller than the header itself.
    TooSmall {
        /// The box type.
        kind: [u8; 4],
        /// The size it claims.
        size: u64,
    },
}

/// Reads the header at the start of `head`.
pub(crate) fn header(head: &[u8]) -> Result<Header, HeaderError> {
    let word = |at: usize| -> Result<[u8; 4], HeaderError> {
        head.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or(HeaderError::Short)
    };
    let size32 = u32::from_be_bytes(word(0)?);
    let kind = word(4)?;
    let (size, header_len) = match size32 {
        0 => (None, 8),
        1 => {
            let large: [u8; 8] = head
                .get(8..16)
                .and_then(|b| b.try_into().ok())
                .ok_or(HeaderError::Short)?;
            (Some(u64::from_be_bytes(large)), 16)
        }
        n => (Some(u64::from(n)), 8),
    };
    if let Some(s) = size
        && s < header_len as u64
    {
        return Err(HeaderError::TooSmall { kind, size: s });
    }
    Ok(Header {
        kind,
        header_len,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers() {
        assert_eq!(
            header(b"\0\0\0\x20ftypisom"),
            Ok(Header {
                kind: *b"ftyp",
                header_len: 8,
                size: Some(32)
            })
        );
        let large = header(b"\0\0\0\x01mdat\0\0\0\x01\0\0\0\0").unwrap();
        assert_eq!((large.size, large.header_len), (Some(1 << 32), 16));
        assert_eq!(header(b"\0\0\0\0mdat").unwrap().size, None);
        assert_eq!(
            header(b"\0\0\0\x04ftyp"),
            Err(HeaderError::TooSmall {
                kind: *b"ftyp",
                size: 4
            })
        );
        assert_eq!(header(b"\0\0\0\x01mdat\0\0"), Err(HeaderError::Short));
        assert_eq!(header(b"\0\0"), Err(HeaderError::Short));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_header_or_a_reason(b in proptest::collection::vec(proptest::num::u8::ANY, 0..24)) {
            if let Ok(h) = header(&b) {
                proptest::prop_assert!(h.header_len <= b.len());
                proptest::prop_assert!(h.size.is_none_or(|s| s >= h.header_len as u64));
            }
        }
    }
}

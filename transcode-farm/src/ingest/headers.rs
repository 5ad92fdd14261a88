//! Parsers for the tus 1.0.0 request headers. They take the raw header bytes from outside,
//! allocate only for what they return, and never panic (`fuzz/fuzz_targets/tus_headers.rs`).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// The protocol version spoken (`Tus-Resumable`, `Tus-Version`).
pub const TUS_VERSION: &str = "1.0.0";
/// The extensions announced in `Tus-Extension`.
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The checksum algorithms announced in `Tus-Checksum-Algorithm`.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256,crc32c";
/// The media type of a PATCH body (and of a creation-with-upload body).
pub const OFFSET_STREAM: &str = "application/offset+octet-stream";
/// The most `Upload-Metadata` pairs accepted.
pub const MAX_METADATA_PAIRS: usize = 32;
/// The longest `Upload-Metadata` header accepted, in bytes.
pub const MAX_METADATA_BYTES: usize = 4096;

/// A header that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The header is required and absent.
    #[error("missing")]
    Missing,
    /// Not a non-negative decimal integer (at most 19 digits).
    #[error("not a non-negative integer")]
    NotAnInteger,
    /// `Tus-Resumable` names a version this server does not speak.
    #[error("unsupported version (this server speaks 1.0.0)")]
    Version,
}

/// Parses a tus integer header (`Upload-Length`, `Upload-Offset`, `Content-Length`):
/// ASCII digits only, no sign, no spaces, at most 19 digits (so it fits an `i64` too).
pub fn parse_u64(v: &[u8]) -> Result<u64, HeaderError> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HeaderError::NotAnInteger);
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Checks `Tus-Resumable`, which every request but `OPTIONS` must carry as `1.0.0`.
pub fn check_resumable(v: Option<&[u8]>) -> Result<(), HeaderError> {
    match v {
        None => Err(HeaderError::Missing),
        Some(v) if v.trim_ascii() == TUS_VERSION.as_bytes() => Ok(()),
        Some(_) => Err(HeaderError::Version),
    }
}

/// Whether `Content-Type` is `application/offset+octet-stream` (any case, parameters
/// allowed).
pub fn is_offset_stream(v: Option<&[u8]>) -> bool {
    let Some(v) = v else { return false };
    let media = v.split(|&b| b == b';').next().unwrap_or_default();
    media
        .trim_ascii()
        .eq_ignore_ascii_case(OFFSET_STREAM.as_bytes())
}

/// A checksum algorithm of the checksum extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// SHA-1, which the tus specification requires servers to support.
    Sha1,
    /// SHA-256.
    Sha256,
    /// CRC-32C (Castagnoli), 4 bytes big-endian as in RFC 3720 and cloud storage APIs.
    Crc32c,
}

impl Algorithm {
    /// The name in `Upload-Checksum`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Crc32c => "crc32c",
        }
    }

    /// The digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha256 => 32,
            Self::Crc32c => 4,
        }
    }
}

/// An `Upload-Checksum` header: the algorithm and the expected digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The digest the client computed over the PATCH body.
    pub digest: Vec<u8>,
}

/// An `Upload-Checksum` header that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChecksumError {
    /// Not `<algorithm> <base64 digest>`.
    #[error("expected \"<algorithm> <base64 digest>\"")]
    Syntax,
    /// An algorithm this server does not support (tus: 400).
    #[error("unsupported checksum algorithm {0:?} (supported: sha1, sha256, crc32c)")]
    Unsupported(String),
    /// The digest is not base64, or not as long as the algorithm's.
    #[error("the {0} digest is not base64 of the right length")]
    Digest(&'static str),
}

/// Parses `Upload-Checksum: <algorithm> <base64>`.
pub fn parse_checksum(v: &[u8]) -> Result<Checksum, ChecksumError> {
    let v = v.trim_ascii();
    let sp = v
        .iter()
        .position(|&b| b == b' ')
        .ok_or(ChecksumError::Syntax)?;
    let (name, rest) = (&v[..sp], v[sp + 1..].trim_ascii());
    let algorithm = match name {
        b"sha1" => Algorithm::Sha1,
        b"sha256" => Algorithm::Sha256,
        b"crc32c" => Algorithm::Crc32c,
        other => {
            return Err(ChecksumError::Unsupported(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    };
    if rest.is_empty() || rest.contains(&b' ') {
        return Err(ChecksumError::Syntax);
    }
    let digest = decode_b64(rest).ok_or(ChecksumError::Digest(algorithm.as_str()))?;
    if digest.len() != algorithm.digest_len() {
        return Err(ChecksumError::Digest(algorithm.as_str()));
    }
    Ok(Checksum { algorithm, digest })
}

fn decode_b64(v: &[u8]) -> Option<Vec<u8>> {
    // Clients differ on padding; both forms mean the same bytes.
    STANDARD
        .decode(v)
        .or_else(|_| STANDARD_NO_PAD.decode(v))
        .ok()
}

/// `Upload-Metadata` that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// Longer than [`MAX_METADATA_BYTES`].
    #[error("longer than 4096 bytes")]
    TooLong,
    /// More than [`MAX_METADATA_PAIRS`] pairs.
    #[error("more than 32 pairs")]
    TooMany,
    /// A pair with an empty key, or a key with a character outside printable ASCII.
    #[error("pair {0}: the key must be 1 or more printable ASCII characters")]
    Key(usize),
    /// A value that is not base64.
    #[error("the value of {0:?} is not base64")]
    Value(String),
    /// The same key twice.
    #[error("the key {0:?} appears twice")]
    Duplicate(String),
    /// A pair with more than a key and a value.
    #[error("pair {0}: expected \"key base64value\"")]
    Syntax(usize),
}

/// Parses `Upload-Metadata`: comma-separated `key base64value` pairs (a key alone has an
/// empty value); keys are unique, printable ASCII without spaces or commas.
pub fn parse_metadata(v: &[u8]) -> Result<Vec<(String, Vec<u8>)>, MetadataError> {
    if v.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLong);
    }
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    if v.trim_ascii().is_empty() {
        return Ok(out);
    }
    for (i, pair) in v.split(|&b| b == b',').enumerate() {
        if out.len() == MAX_METADATA_PAIRS {
            return Err(MetadataError::TooMany);
        }
        let pair = pair.trim_ascii();
        let mut parts = pair.split(|&b| b == b' ').filter(|p| !p.is_empty());
        let key = parts.next().ok_or(MetadataError::Key(i))?;
        let value = parts.next();
        if parts.next().is_some() {
            return Err(MetadataError::Syntax(i));
        }
        if !key.iter().all(|b| b.is_ascii_graphic()) {
            return Err(MetadataError::Key(i));
        }
        // Printable ASCII, checked above.
        let key = String::from_utf8_lossy(key).into_owned();
        let value = match value {
            None => Vec::new(),
            Some(b) => decode_b64(b).ok_or_else(|| MetadataError::Value(key.clone()))?,
        };
        if out.iter().any(|(k, _)| *k == key) {
            return Err(MetadataError::Duplicate(key));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// Encodes pairs as `Upload-Metadata` (the inverse of [`parse_metadata`]).
pub fn encode_metadata<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        if !v.is_empty() {
            out.push(' ');
            out.push_str(&STANDARD.encode(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn integers_are_strict() {
        assert_eq!(parse_u64(b"0"), Ok(0));
        assert_eq!(parse_u64(b"1073741824"), Ok(1 << 30));
        assert_eq!(parse_u64(b"9223372036854775807"), Ok(i64::MAX as u64));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b" 1",
            b"1 ",
            b"0x10",
            b"1e3",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_u64(bad), Err(HeaderError::NotAnInteger), "{bad:?}");
        }
    }

    #[test]
    fn version_and_content_type() {
        assert_eq!(check_resumable(Some(b"1.0.0")), Ok(()));
        assert_eq!(check_resumable(None), Err(HeaderError::Missing));
        assert_eq!(check_resumable(Some(b"0.2.2")), Err(HeaderError::Version));
        assert!(is_offset_stream(Some(b"application/offset+octet-stream")));
        assert!(is_offset_stream(Some(
            b"Application/Offset+Octet-Stream; x=1"
        )));
        assert!(!is_offset_stream(Some(b"application/octet-stream")));
        assert!(!is_offset_stream(None));
    }

    #[test]
    fn checksums() {
        let c = parse_checksum(b"sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=").unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha1);
        assert_eq!(c.digest.len(), 20);
        assert_eq!(
            parse_checksum(b"crc32c AAAAAA==").unwrap().digest,
            vec![0, 0, 0, 0]
        );
        assert_eq!(
            parse_checksum(b"md5 1B2M2Y8AsgTpgAmY7PhCfg=="),
            Err(ChecksumError::Unsupported("md5".into()))
        );
        assert_eq!(
            parse_checksum(b"sha1 AAAA"),
            Err(ChecksumError::Digest("sha1"))
        );
        assert_eq!(parse_checksum(b"sha1"), Err(ChecksumError::Syntax));
        assert_eq!(
            parse_checksum(b"sha256 !!!"),
            Err(ChecksumError::Digest("sha256"))
        );
    }

    #[test]
    fn metadata() {
        let m = parse_metadata(
            b"filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, asset ZGVtbw",
        )
        .unwrap();
        assert_eq!(
            m,
            vec![
                ("filename".to_owned(), b"world_domination_plan.pdf".to_vec()),
                ("is_confidential".to_owned(), Vec::new()),
                ("asset".to_owned(), b"demo".to_vec()),
            ]
        );
        assert_eq!(parse_metadata(b""), Ok(vec![]));
        assert_eq!(
            parse_metadata(b"a YQ==,a YQ=="),
            Err(MetadataError::Duplicate("a".into()))
        );
        assert_eq!(
            parse_metadata(b"a !!"),
            Err(MetadataError::Value("a".into()))
        );
        assert_eq!(parse_metadata(b"a YQ== x"), Err(MetadataError::Syntax(0)));
        assert_eq!(parse_metadata(b"a YQ==,,b"), Err(MetadataError::Key(1)));
        assert_eq!(
            parse_metadata(&vec![b'a'; 5000]),
            Err(MetadataError::TooLong)
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}")).collect();
        assert_eq!(
            parse_metadata(many.join(",").as_bytes()),
            Err(MetadataError::TooMany)
        );
    }

    proptest! {
        #[test]
        fn metadata_round_trips(pairs in proptest::collection::btree_map("[!-+--~]{1,12}", proptest::collection::vec(any::<u8>(), 0..40), 0..10)) {
            let enc = encode_metadata(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
            let back = parse_metadata(enc.as_bytes()).unwrap();
            let want: Vec<(String, Vec<u8>)> = pairs.into_iter().collect();
            prop_assert_eq!(back, want);
        }

        #[test]
        fn integers_round_trip(n in 0u64..=i64::MAX as u64) {
            prop_assert_eq!(parse_u64(n.to_string().as_bytes()), Ok(n));
        }

        #[test]
        fn parsers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_u64(&b);
            let _ = parse_checksum(&b);
            let _ = parse_metadata(&b);
            let _ = check_resumable(Some(&b));
            let _ = is_offset_stream(Some(&b));
        }
    }
}

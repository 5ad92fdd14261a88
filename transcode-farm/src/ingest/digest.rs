//! Digests over upload bytes: the per-PATCH checksums of the checksum extension, and the
//! source's SHA-256 that names its job, which must survive a restart of the ingest.
//!
//! The source hash is a SHA-256 whose state can be stored: the eight chaining words, the
//! length, and the bytes of the unfinished block. It is saved in the upload record with
//! each durable offset, so a resumed upload, on any ingest process and on S3 (whose
//! unfinished multipart parts cannot be read back), continues hashing where it stopped
//! without re-reading anything. The compression function is the `sha2` crate's (SHA-NI
//! where the CPU has it); the padding here is FIPS 180-4 §5.1.1, checked against `ring`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

use super::headers::Algorithm;

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Blocks compressed per call: copying input into aligned blocks costs one memcpy and lets
/// the SHA-NI path run over many blocks at once.
const BATCH: usize = 64;

/// A SHA-256 computation that can be saved ([`Sha256::state`]) and resumed.
#[derive(Clone)]
pub struct Sha256 {
    h: [u32; 8],
    len: u64,
    buf: [u8; 64],
    buf_len: usize,
    blocks: Box<[GenericArray<u8, U64>; BATCH]>,
}

/// The saved form of a [`Sha256`], as stored in the upload record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256State {
    /// The chaining value, 64 hex digits.
    pub h: String,
    /// Bytes hashed so far.
    pub len: u64,
    /// The bytes of the unfinished block (`len % 64` of them), base64.
    pub tail: String,
}

/// A stored hash state that does not hold together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stored SHA-256 state is malformed")]
pub struct BadState;

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A hash of nothing yet.
    pub fn new() -> Self {
        Self {
            h: IV,
            len: 0,
            buf: [0; 64],
            buf_len: 0,
            blocks: Box::new([GenericArray::default(); BATCH]),
        }
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hashes `data`.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.buf_len > 0 {
            let take = (64 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 64 {
                return;
            }
            self.blocks[0].copy_from_slice(&self.buf);
            sha2::compress256(&mut self.h, &self.blocks[..1]);
            self.buf_len = 0;
        }
        while data.len() >= 64 {
            let n = (data.len() / 64).min(BATCH);
            for (block, src) in self.blocks[..n].iter_mut().zip(data.chunks_exact(64)) {
                block.copy_from_slice(src);
            }
            sha2::compress256(&mut self.h, &self.blocks[..n]);
            data = &data[n * 64..];
        }
        self.buf[..data.len()].copy_from_slice(data);
        self.buf_len = data.len();
    }

    /// The digest of everything hashed (the computation itself goes on unchanged).
    pub fn finish(&self) -> [u8; 32] {
        let mut h = self.h;
        let mut last = [0u8; 128];
        last[..self.buf_len].copy_from_slice(&self.buf[..self.buf_len]);
        last[self.buf_len] = 0x80;
        let blocks = if self.buf_len < 56 { 1 } else { 2 };
        let end = blocks * 64;
        last[end - 8..end].copy_from_slice(&(self.len.wrapping_mul(8)).to_be_bytes());
        let mut arr = [GenericArray::<u8, U64>::default(); 2];
        for (a, src) in arr.iter_mut().zip(last.chunks_exact(64)) {
            a.copy_from_slice(src);
        }
        sha2::compress256(&mut h, &arr[..blocks]);
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(h) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// The state to store.
    pub fn state(&self) -> Sha256State {
        let mut h = String::with_capacity(64);
        for w in self.h {
            h.push_str(&format!("{w:08x}"));
        }
        Sha256State {
            h,
            len: self.len,
            tail: STANDARD.encode(&self.buf[..self.buf_len]),
        }
    }

    /// Resumes from a stored state.
    pub fn from_state(s: &Sha256State) -> Result<Self, BadState> {
        if s.h.len() != 64 || !s.h.is_ascii() {
            return Err(BadState);
        }
        let mut h = [0u32; 8];
        for (i, w) in h.iter_mut().enumerate() {
            *w = u32::from_str_radix(&s.h[i * 8..i * 8 + 8], 16).map_err(|_| BadState)?;
        }
        let tail = STANDARD.decode(&s.tail).map_err(|_| BadState)?;
        if tail.len() as u64 != s.len % 64 {
            return Err(BadState);
        }
        let mut out = Self::new();
        out.h = h;
        out.len = s.len;
        out.buf[..tail.len()].copy_from_slice(&tail);
        out.buf_len = tail.len();
        Ok(out)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The running checksum of one PATCH body.
pub enum Hasher {
    /// SHA-1 or SHA-256 (ring).
    Ring(Box<ring::digest::Context>),
    /// CRC-32C.
    Crc32c(u32),
}

impl Hasher {
    /// A new checksum of `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha1 => Self::Ring(Box::new(ring::digest::Context::new(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            ))),
            Algorithm::Sha256 => {
                Self::Ring(Box::new(ring::digest::Context::new(&ring::digest::SHA256)))
            }
            Algorithm::Crc32c => Self::Crc32c(0),
        }
    }

    /// Adds `data`.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Ring(c) => c.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
        }
    }

    /// The digest, as the client sends it (CRC-32C big-endian).
    pub fn finish(self) -> Vec<u8> {
        match self {
            Self::Ring(c) => c.finish().as_ref().to_vec(),
            Self::Crc32c(c) => c.to_be_bytes().to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring256(b: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
        out
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex(&Sha256::new().finish()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut s = Sha256::new();
        s.update(b"abc");
        assert_eq!(
            hex(&s.finish()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut c = Hasher::new(Algorithm::Crc32c);
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xe306_9283u32.to_be_bytes().to_vec());
        let mut c = Hasher::new(Algorithm::Sha1);
        c.update(b"abc");
        assert_eq!(hex(&c.finish()), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }

    #[test]
    fn malformed_states_are_refused() {
        let good = Sha256::new().state();
        for bad in [
            Sha256State {
                h: "zz".repeat(32),
                ..good.clone()
            },
            Sha256State {
                len: 3,
                ..good.clone()
            },
            Sha256State {
                tail: "!".into(),
                ..good.clone()
            },
            Sha256State {
                h: "é".repeat(32),
                ..good.clone()
            },
        ] {
            assert!(Sha256::from_state(&bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Any split of the input, with the state saved and restored (as through JSON) at
        /// every split, gives ring's digest.
        #[test]
        fn resumed_hash_matches_ring(data in proptest::collection::vec(any::<u8>(), 0..9000), cuts in proptest::collection::vec(0usize..9000, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut s = Sha256::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([data.len()]) {
                s.update(&data[at..c]);
                at = c;
                let json = serde_json::to_string(&s.state()).unwrap();
                s = Sha256::from_state(&serde_json::from_str(&json).unwrap()).unwrap();
            }
            prop_assert_eq!(s.len(), data.len() as u64);
            prop_assert_eq!(s.finish(), ring256(&data));
        }
    }
}

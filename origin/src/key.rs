//! Object keys: the only way to name an object, so an unsafe path cannot reach storage.

use std::fmt;

/// The longest key accepted, in bytes. Longer request paths get 400 at the edge.
pub const MAX_KEY_LEN: usize = 1024;

/// Why a string is not a valid object key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("empty path")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("path longer than 1024 bytes")]
    TooLong,
    /// A segment is `..` or `.`.
    #[error("path traversal")]
    Traversal,
    /// The key has an empty segment (`//`, or a leading or trailing `/`).
    #[error("empty path segment")]
    EmptySegment,
    /// The key holds NUL, a control character or a backslash.
    #[error("forbidden character in path")]
    ForbiddenChar,
}

/// A validated, relative object key such as `demo/video/720p/seg-00001.m4s`.
///
/// Segments are non-empty, never `.` or `..`, and hold no NUL, control characters or
/// backslashes, so a key can never escape the origin's root.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    /// Validates `s` as a key.
    pub fn new(s: &str) -> Result<Self, KeyError> {
        validate(s)?;
        Ok(Self(s.into()))
    }

    /// Joins a prefix and a relative path, validating the result.
    pub fn join(prefix: &str, rest: &str) -> Result<Self, KeyError> {
        let mut s = String::with_capacity(prefix.len() + 1 + rest.len());
        s.push_str(prefix);
        s.push('/');
        s.push_str(rest);
        validate(&s)?;
        Ok(Self(s.into_boxed_str()))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks that `s` would be a valid [`ObjectKey`], without allocating.
pub fn validate(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if s.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if s.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return Err(KeyError::ForbiddenChar);
    }
    for seg in s.split('/') {
        match seg {
            "" => return Err(KeyError::EmptySegment),
            "." | ".." => return Err(KeyError::Traversal),
            _ => {}
        }
    }
    Ok(())
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for ObjectKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

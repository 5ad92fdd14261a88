//! Admin authentication: the named admin tokens that the control API, the tus ingest and
//! the other admin surfaces accept, and who presented one (the [`Actor`] the audit log
//! names).
//!
//! Tokens are kept as SHA-256 digests and a presented token is digested before it is
//! compared, so every comparison is over 32 bytes whatever was sent: neither the content
//! nor the length of a configured token shows in the timing. Every configured token is
//! compared, without an early exit. The `Bearer` scheme is matched case-insensitively
//! (RFC 6750 §2.1 and RFC 9110 §11.1).

use std::sync::Arc;

/// Who made a request: the name of the admin token it presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

/// Tokens shorter than this are ignored (a guessable admin token is worse than none).
pub const MIN_TOKEN_LEN: usize = 16;

/// Splits an admin token line into (actor name, token): `name:token` names the operator
/// when the name is 1 to 64 of `A-Z a-z 0-9 - _ . @` (otherwise the whole line is the
/// token); a bare token is named `token-<first 8 hex digits of its SHA-256>`, so the audit
/// log tells tokens apart without holding them.
pub fn split_token_line(line: &str) -> (String, &str) {
    if let Some((name, token)) = line.split_once(':')
        && !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
    {
        return (name.to_owned(), token);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, line.as_bytes());
    let hex: String = digest.as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (format!("token-{hex}"), line)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// The token of an `Authorization` header value: `Bearer <token>`, the scheme in any case,
/// with the spaces RFC 9110 allows after it.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches(' ');
    (!token.is_empty()).then_some(token)
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("admin token required: authorization: Bearer <token>")]
    Missing,
    /// A token that is not one of the configured ones.
    #[error("admin token not accepted")]
    Rejected,
}

/// The configured admin tokens, by digest, with their actors.
#[derive(Clone, Default)]
pub struct AdminTokens {
    tokens: Arc<Vec<([u8; 32], Actor)>>,
}

impl std::fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminTokens")
            .field("count", &self.tokens.len())
            .finish()
    }
}

impl AdminTokens {
    /// Accepts any of `lines` (`token` or `name:token`; tokens shorter than
    /// [`MIN_TOKEN_LEN`] bytes are ignored).
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Self {
        let tokens = lines
            .iter()
            .map(|l| split_token_line(l.as_ref()))
            .filter(|(_, t)| t.len() >= MIN_TOKEN_LEN)
            .map(|(name, t)| (sha256(t.as_bytes()), Actor(name)))
            .collect();
        Self {
            tokens: Arc::new(tokens),
        }
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is configured (nothing is let in).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The actor of `presented`, comparing in constant time against every token.
    pub fn check(&self, presented: &str) -> Option<&Actor> {
        let d = sha256(presented.as_bytes());
        let mut found = None;
        for (t, actor) in self.tokens.iter() {
            let diff = t.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(actor);
            }
        }
        found
    }

    /// The actor of an `Authorization` header value (`None`: no header).
    pub fn authorize(&self, header: Option<&str>) -> Result<&Actor, AuthError> {
        let token = header.and_then(bearer).ok_or(AuthError::Missing)?;
        self.check(token).ok_or(AuthError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "alice:0123456789abcdef0123";

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let t = AdminTokens::new(&[ALICE]);
        for h in [
            "Bearer 0123456789abcdef0123",
            "bearer 0123456789abcdef0123",
            "BEARER  0123456789abcdef0123",
            "BeArEr 0123456789abcdef0123 ",
        ] {
            assert_eq!(t.authorize(Some(h)).unwrap().0, "alice", "{h:?}");
        }
        assert_eq!(t.authorize(None), Err(AuthError::Missing));
        assert_eq!(
            t.authorize(Some("Basic 0123456789abcdef0123")),
            Err(AuthError::Missing)
        );
        assert_eq!(t.authorize(Some("Bearer")), Err(AuthError::Missing));
        assert_eq!(t.authorize(Some("Bearer ")), Err(AuthError::Missing));
    }

    #[test]
    fn only_configured_tokens_pass() {
        let t = AdminTokens::new(&[ALICE, "short:tooshort", "0123456789abcdef9999"]);
        assert_eq!(t.len(), 2, "the short token is ignored");
        assert!(t.check("0123456789abcdef0123").is_some());
        assert!(t.check("0123456789abcdef012").is_none(), "a prefix");
        assert!(t.check("0123456789abcdef01234").is_none(), "an extension");
        assert!(t.check("tooshort").is_none());
        assert_eq!(
            t.check("0123456789abcdef9999").unwrap().0,
            split_token_line("0123456789abcdef9999").0
        );
    }

    /// The comparison runs over digests: a configured token's length cannot be probed,
    /// because every check compares 32 bytes against every token.
    #[test]
    fn comparisons_are_over_fixed_length_digests() {
        let t = AdminTokens::new(&[ALICE]);
        assert!(t.tokens.iter().all(|(d, _)| d.len() == 32));
        for probe in ["", "x", &"y".repeat(4096)] {
            assert!(t.check(probe).is_none());
        }
    }
}

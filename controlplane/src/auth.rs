//! Admin authentication and authorisation: the named admin tokens that the control API, the
//! tus ingest and the other admin surfaces accept, who presented one (the [`Actor`] the
//! audit log names), what that token may do (its [`Role`]) and which assets it may touch
//! (its tenant prefixes).
//!
//! Tokens are kept as SHA-256 digests and a presented token is digested before it is
//! compared, so every comparison is over 32 bytes whatever was sent: neither the content
//! nor the length of a configured token shows in the timing. Every configured token is
//! compared, without an early exit. The `Bearer` scheme is matched case-insensitively
//! (RFC 6750 §2.1 and RFC 9110 §11.1).
//!
//! A token line is `token` or `name:token`, optionally followed by attributes separated by
//! spaces: `role=viewer|operator|admin` (default `admin`, what every token could do before
//! roles existed) and `assets=acme-,acme.` (asset-id prefixes: a tenant; default all).

use std::sync::Arc;

/// What a token may do. Ordered: each role can do what the ones before it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads: policies, assets, keys, audit, edges, analytics, jobs.
    Viewer,
    /// Viewer, plus changes to policies and assets, purges, uploads and jobs.
    Operator,
    /// Operator, plus the verification keys that decide which tokens the edges accept.
    Admin,
}

impl Role {
    /// The name used in token lines, `ctl whoami` and the docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "operator" => Some(Self::Operator),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Who made a request: the name of the admin token it presented, its role and, for a
/// tenant's token, the asset-id prefixes it is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name (the audit log's `actor`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Asset-id prefixes it is limited to; empty: every asset (not a tenant).
    pub assets: Arc<[String]>,
}

impl Actor {
    /// A token with every right and no tenant limit (an embedded caller, tests).
    pub fn admin(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            role: Role::Admin,
            assets: Arc::from([]),
        }
    }

    /// Whether the token is limited to some assets (a tenant's).
    pub fn is_tenant(&self) -> bool {
        !self.assets.is_empty()
    }

    /// Whether the token may see and touch the asset (or policy, or job source) `id`:
    /// always for a fleet token, and for a tenant's when `id` starts with one of its
    /// prefixes.
    pub fn may_touch(&self, id: &str) -> bool {
        self.assets.is_empty() || self.assets.iter().any(|p| id.starts_with(p.as_str()))
    }
}

/// Tokens shorter than this are refused (a guessable admin token is worse than none).
pub const MIN_TOKEN_LEN: usize = 16;

/// One parsed token line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenLine<'a> {
    /// The actor name.
    pub name: String,
    /// The token.
    pub token: &'a str,
    /// Its role.
    pub role: Role,
    /// Its asset-id prefixes (empty: all).
    pub assets: Vec<String>,
}

/// Whether `p` can prefix an asset id (asset ids are 1 to 128 of `a-z 0-9 . _ -`).
fn is_asset_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 128
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Parses a token line: `token` or `name:token`, then optional `role=…` and `assets=…`
/// attributes. Errors say what is wrong without repeating the token.
pub fn parse_token_line(line: &str) -> Result<TokenLine<'_>, String> {
    let mut fields = line.split_ascii_whitespace();
    let first = fields.next().ok_or("an empty line")?;
    let (name, token) = split_token_line(first);
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "token {name:?}: tokens must be at least {MIN_TOKEN_LEN} characters"
        ));
    }
    let mut role = None;
    let mut assets = None;
    for f in fields {
        match f.split_once('=') {
            Some(("role", r)) if role.is_none() => {
                role = Some(Role::parse(r).ok_or_else(|| {
                    format!("token {name:?}: role={r}: expected viewer, operator or admin")
                })?);
            }
            Some(("assets", a)) if assets.is_none() => {
                let list: Vec<String> = a.split(',').map(str::to_owned).collect();
                if let Some(bad) = list.iter().find(|p| !is_asset_prefix(p)) {
                    return Err(format!(
                        "token {name:?}: assets={a}: {bad:?} is not an asset-id prefix (1 to 128 of a-z, 0-9, '.', '_', '-'; asset ids have no '/', so use acme- or acme.)"
                    ));
                }
                assets = Some(list);
            }
            Some(("role" | "assets", _)) => {
                return Err(format!("token {name:?}: {f}: given twice"));
            }
            _ => {
                return Err(format!(
                    "token {name:?}: {f:?}: expected role=viewer|operator|admin or assets=prefix,prefix"
                ));
            }
        }
    }
    Ok(TokenLine {
        name,
        token,
        role: role.unwrap_or(Role::Admin),
        assets: assets.unwrap_or_default(),
    })
}

/// The token lines of a token file's text: one per non-empty line, `#` comments skipped.
/// Every line is checked; the error names the first bad line by number.
pub fn token_lines(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        parse_token_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(line.to_owned());
    }
    if out.is_empty() {
        return Err("holds no token (`token` or `name:token` lines)".into());
    }
    Ok(out)
}

/// Splits the first field of an admin token line into (actor name, token): `name:token`
/// names the operator when the name is 1 to 64 of `A-Z a-z 0-9 - _ . @` (otherwise the
/// whole field is the token); a bare token is named `token-<first 8 hex digits of its
/// SHA-256>`, so the audit log tells tokens apart without holding them.
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
    /// Accepts any of `lines` (see [`parse_token_line`]); lines that do not parse, such as
    /// tokens shorter than [`MIN_TOKEN_LEN`] bytes, are ignored (configuration loading
    /// refuses them first, with [`token_lines`]).
    pub fn new<S: AsRef<str>>(lines: &[S]) -> Self {
        let tokens = lines
            .iter()
            .filter_map(|l| parse_token_line(l.as_ref()).ok())
            .map(|t| {
                (
                    sha256(t.token.as_bytes()),
                    Actor {
                        name: t.name,
                        role: t.role,
                        assets: t.assets.into(),
                    },
                )
            })
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
            assert_eq!(t.authorize(Some(h)).unwrap().name, "alice", "{h:?}");
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
            t.check("0123456789abcdef9999").unwrap().name,
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

    #[test]
    fn roles_and_tenants_come_from_the_line() {
        let t = AdminTokens::new(&[
            "ro:0123456789abcdef0001 role=viewer",
            "ops:0123456789abcdef0002  role=operator assets=acme-,acme.",
            "0123456789abcdef0003",
        ]);
        let ro = t.check("0123456789abcdef0001").unwrap();
        assert_eq!((ro.role, ro.is_tenant()), (Role::Viewer, false));
        let ops = t.check("0123456789abcdef0002").unwrap();
        assert_eq!(ops.role, Role::Operator);
        assert!(ops.may_touch("acme-1") && ops.may_touch("acme.x"));
        assert!(!ops.may_touch("globex-1") && !ops.may_touch("acm"));
        let full = t.check("0123456789abcdef0003").unwrap();
        assert_eq!(full.role, Role::Admin, "no role= keeps the old full access");
        assert!(full.may_touch("anything"));
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number_and_without_the_token() {
        for (text, want) in [
            (
                "a:0123456789abcdef0001 role=root",
                "line 1: token \"a\": role=root",
            ),
            ("\n# c\na:0123456789abcdef0001 assets=Acme/", "line 3:"),
            ("a:0123456789abcdef0001 assets=", "not an asset-id prefix"),
            (
                "a:0123456789abcdef0001 role=viewer role=admin",
                "given twice",
            ),
            ("a:0123456789abcdef0001 colour=red", "expected role="),
            ("a:short", "at least 16"),
            ("# only a comment", "holds no token"),
        ] {
            let e = token_lines(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("0123456789abcdef0001"), "the token leaks: {e}");
        }
        assert_eq!(
            token_lines("# admins\n a:0123456789abcdef0001 role=viewer \n").unwrap(),
            ["a:0123456789abcdef0001 role=viewer"]
        );
    }
}

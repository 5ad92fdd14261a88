//! `[edge.auth]`: wallet sign-in, off unless a session key is set.

use std::path::PathBuf;
use std::time::Duration;

use super::reader::{self, Errors, Fields};

/// Wallet sign-in settings (`[edge.auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// PKCS#8 Ed25519 private key (PEM) that signs session tokens; every edge of a
    /// deployment holds the same one, so any edge accepts any edge's session.
    pub session_key: PathBuf,
    /// The `kid` of session tokens.
    pub session_kid: String,
    /// The host[:port] named in sign-in messages; a message for another domain is refused.
    pub domain: String,
    /// The URI named in sign-in messages.
    pub uri: String,
    /// The chains wallets may sign in on.
    pub chains: Vec<streamgate_policy::address::ChainId>,
    /// The statement shown in the wallet.
    pub statement: String,
    /// How long a challenge's nonce is valid.
    pub nonce_ttl: Duration,
    /// How long a session token is valid.
    pub session_ttl: Duration,
}

impl AuthConfig {
    /// Reads `[edge.auth]` from `e` (`None` without a `session_key`), recording every
    /// problem in `errs`.
    pub(super) fn read(e: &mut Fields<'_>, errs: &mut Errors) -> Option<Self> {
        use reader::*;
        let mut a = e.table(errs, "auth");
        let auth = match a.opt(errs, "session_key", path) {
            None => None,
            Some(session_key) => {
                let domain = a.opt(errs, "domain", string).unwrap_or_else(|| {
                    errs.push(
                        "edge.auth.domain",
                        "required with session_key: the host[:port] viewers sign in to",
                    );
                    String::new()
                });
                let uri = a
                    .opt(errs, "uri", string)
                    .unwrap_or_else(|| format!("https://{domain}"));
                let chains = a.get(errs, "chains", vec!["eip155:1".to_owned()], strings);
                let mut parsed = Vec::new();
                for (i, c) in chains.iter().enumerate() {
                    match streamgate_policy::address::ChainId::parse(c) {
                        Ok(c) => parsed.push(c),
                        Err(m) => errs.push(format!("edge.auth.chains[{i}]"), m),
                    }
                }
                Some(Self {
                    session_key,
                    session_kid: a.get(errs, "session_kid", "wallet-session".to_owned(), string),
                    domain,
                    uri,
                    chains: parsed,
                    statement: a.get(
                        errs,
                        "statement",
                        "Sign in to watch with this wallet.".to_owned(),
                        string,
                    ),
                    nonce_ttl: a.get(errs, "nonce_ttl", Duration::from_secs(300), duration),
                    session_ttl: a.get(errs, "session_ttl", Duration::from_secs(3600), duration),
                })
            }
        };
        a.finish(errs);
        auth
    }
}

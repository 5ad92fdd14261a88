//! Sign-in messages: EIP-4361 ("Sign-In with Ethereum") for EVM chains, and the same text
//! shape for Solana ("... with your Solana account"). Pure: text in, fields out, with every
//! line checked; [`Message::to_text`] writes the exact form [`Message::parse`] reads.

/// A sign-in message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The RFC 3986 authority asking for the sign-in (`watch.example.com`).
    pub domain: String,
    /// `Ethereum` or `Solana`.
    pub account_kind: &'static str,
    /// The address as written in the message.
    pub address: String,
    /// The human-readable statement (no newlines).
    pub statement: Option<String>,
    /// The URI the sign-in is for.
    pub uri: String,
    /// Always `1`.
    pub version: String,
    /// The chain reference: the decimal EVM chain id, or the Solana cluster.
    pub chain_id: String,
    /// At least 8 alphanumeric characters.
    pub nonce: String,
    /// RFC 3339.
    pub issued_at: String,
    /// RFC 3339, optional.
    pub expiration_time: Option<String>,
    /// RFC 3339, optional.
    pub not_before: Option<String>,
    /// Optional.
    pub request_id: Option<String>,
    /// Optional list of URIs.
    pub resources: Vec<String>,
}

/// The longest message accepted.
pub const MAX_MESSAGE_BYTES: usize = 4096;

const SUFFIX_ETH: &str = " wants you to sign in with your Ethereum account:";
const SUFFIX_SOL: &str = " wants you to sign in with your Solana account:";

impl Message {
    /// The message text, as a wallet shows and signs it.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}{}\n{}\n",
            self.domain,
            if self.account_kind == "Solana" {
                SUFFIX_SOL
            } else {
                SUFFIX_ETH
            },
            self.address
        );
        s.push('\n');
        if let Some(st) = &self.statement {
            s.push_str(st);
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&format!("URI: {}\n", self.uri));
        s.push_str(&format!("Version: {}\n", self.version));
        s.push_str(&format!("Chain ID: {}\n", self.chain_id));
        s.push_str(&format!("Nonce: {}\n", self.nonce));
        s.push_str(&format!("Issued At: {}", self.issued_at));
        if let Some(t) = &self.expiration_time {
            s.push_str(&format!("\nExpiration Time: {t}"));
        }
        if let Some(t) = &self.not_before {
            s.push_str(&format!("\nNot Before: {t}"));
        }
        if let Some(r) = &self.request_id {
            s.push_str(&format!("\nRequest ID: {r}"));
        }
        if !self.resources.is_empty() {
            s.push_str("\nResources:");
            for r in &self.resources {
                s.push_str(&format!("\n- {r}"));
            }
        }
        s
    }

    /// Parses a message strictly: every line in its place, nothing unknown.
    pub fn parse(text: &str) -> Result<Self, MessageError> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(MessageError::TooLong);
        }
        if text.contains('\r') {
            return Err(MessageError::CarriageReturn);
        }
        let mut lines = text.split('\n').peekable();
        let first = lines.next().ok_or(MessageError::FirstLine)?;
        let (domain, account_kind) = if let Some(d) = first.strip_suffix(SUFFIX_ETH) {
            (d, "Ethereum")
        } else if let Some(d) = first.strip_suffix(SUFFIX_SOL) {
            (d, "Solana")
        } else {
            return Err(MessageError::FirstLine);
        };
        if domain.is_empty()
            || !domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        {
            return Err(MessageError::Domain(domain.to_owned()));
        }
        let address = lines
            .next()
            .ok_or(MessageError::Missing("address"))?
            .to_owned();
        if lines.next() != Some("") {
            return Err(MessageError::NoEmptyLineAfter("the address"));
        }
        // Either "statement\n\n" or just "\n" before the URI line.
        let statement = match lines.peek() {
            Some(&"") => {
                lines.next();
                None
            }
            Some(l) if !l.starts_with("URI: ") => {
                let st = (*l).to_owned();
                lines.next();
                if lines.next() != Some("") {
                    return Err(MessageError::NoEmptyLineAfter("the statement"));
                }
                Some(st)
            }
            _ => return Err(MessageError::NoEmptyLineAfter("the address")),
        };
        let mut field = |name: &'static str| -> Result<String, MessageError> {
            let l = lines.next().ok_or(MessageError::Missing(name))?;
            l.strip_prefix(name)
                .and_then(|r| r.strip_prefix(": "))
                .map(str::to_owned)
                .ok_or_else(|| MessageError::Expected {
                    field: name,
                    found: l.chars().take(80).collect(),
                })
        };
        let uri = field("URI")?;
        let version = field("Version")?;
        let chain_id = field("Chain ID")?;
        let nonce = field("Nonce")?;
        let issued_at = field("Issued At")?;
        let mut m = Self {
            domain: domain.to_owned(),
            account_kind,
            address,
            statement,
            uri,
            version,
            chain_id,
            nonce,
            issued_at,
            expiration_time: None,
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        let mut optional = |prefix: &str, slot: &mut Option<String>| {
            if let Some(v) = lines.peek().and_then(|l| l.strip_prefix(prefix)) {
                *slot = Some(v.to_owned());
                lines.next();
            }
        };
        optional("Expiration Time: ", &mut m.expiration_time);
        optional("Not Before: ", &mut m.not_before);
        optional("Request ID: ", &mut m.request_id);
        if lines.peek() == Some(&"Resources:") {
            lines.next();
            while let Some(r) = lines.peek().and_then(|l| l.strip_prefix("- ")) {
                m.resources.push(r.to_owned());
                lines.next();
            }
            if m.resources.is_empty() {
                return Err(MessageError::EmptyResources);
            }
        }
        if let Some(extra) = lines.next() {
            return Err(MessageError::Unexpected(extra.chars().take(80).collect()));
        }
        if m.version != "1" {
            return Err(MessageError::Version(m.version));
        }
        if m.nonce.len() < 8
            || m.nonce.len() > 128
            || !m.nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(MessageError::Nonce);
        }
        for (name, t) in [
            ("Issued At", Some(&m.issued_at)),
            ("Expiration Time", m.expiration_time.as_ref()),
            ("Not Before", m.not_before.as_ref()),
        ] {
            if let Some(t) = t
                && humantime::parse_rfc3339_weak(t).is_err()
            {
                return Err(MessageError::Time {
                    field: name,
                    value: t.chars().take(40).collect(),
                });
            }
        }
        Ok(m)
    }
}

/// Why a sign-in message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Over [`MAX_MESSAGE_BYTES`].
    #[error("longer than {MAX_MESSAGE_BYTES} bytes")]
    TooLong,
    /// A `\r` anywhere.
    #[error("lines end with \\n only")]
    CarriageReturn,
    /// The first line is not the sign-in request.
    #[error(
        "the first line must be '<domain> wants you to sign in with your Ethereum (or Solana) account:'"
    )]
    FirstLine,
    /// The domain is not an authority.
    #[error("domain {0:?} is not a host[:port]")]
    Domain(String),
    /// A required line is missing.
    #[error("missing {0} line")]
    Missing(&'static str),
    /// A line holds another field than the one due.
    #[error("expected a {field} line, found {found:?}")]
    Expected {
        /// The field due.
        field: &'static str,
        /// What was there (cut to 80 characters).
        found: String,
    },
    /// The empty line after the address or the statement is missing.
    #[error("an empty line must follow {0}")]
    NoEmptyLineAfter(&'static str),
    /// `Resources:` with no resource.
    #[error("Resources: lists at least one '- <uri>' line")]
    EmptyResources,
    /// A line after the last field.
    #[error("unexpected line {0:?}")]
    Unexpected(String),
    /// A version other than 1.
    #[error("Version {0:?}: only 1 is defined")]
    Version(String),
    /// The nonce's length or characters.
    #[error("Nonce: 8 to 128 letters and digits")]
    Nonce,
    /// A time that is not RFC 3339.
    #[error("{field} {value:?} is not an RFC 3339 time")]
    Time {
        /// The field.
        field: &'static str,
        /// Its value (cut to 40 characters).
        value: String,
    },
}

/// Parses an RFC 3339 time from a validated message.
pub fn time(t: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339_weak(t).unwrap_or(std::time::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            domain: "watch.example.com".into(),
            account_kind: "Ethereum",
            address: "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed".into(),
            statement: Some("Sign in to watch.".into()),
            uri: "https://watch.example.com".into(),
            version: "1".into(),
            chain_id: "1".into(),
            nonce: "abcdef0123456789".into(),
            issued_at: "2026-11-22T10:00:00Z".into(),
            expiration_time: Some("2026-11-22T10:05:00Z".into()),
            not_before: None,
            request_id: None,
            resources: vec![],
        }
    }

    #[test]
    fn round_trips_the_eip4361_text() {
        let m = sample();
        let text = m.to_text();
        assert_eq!(
            text,
            "watch.example.com wants you to sign in with your Ethereum account:\n\
             0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\n\nSign in to watch.\n\n\
             URI: https://watch.example.com\nVersion: 1\nChain ID: 1\n\
             Nonce: abcdef0123456789\nIssued At: 2026-11-22T10:00:00Z\n\
             Expiration Time: 2026-11-22T10:05:00Z"
        );
        assert_eq!(Message::parse(&text).unwrap(), m);
        let mut bare = sample();
        bare.statement = None;
        bare.expiration_time = None;
        bare.resources = vec!["ipfs://x".into(), "https://a/b".into()];
        assert_eq!(Message::parse(&bare.to_text()).unwrap(), bare);
    }

    #[test]
    fn refuses_malformed_messages() {
        let good = sample().to_text();
        for (bad, why) in [
            (
                good.replace("Ethereum account", "Bitcoin account"),
                "first line",
            ),
            (good.replace("Version: 1", "Version: 2"), "Version"),
            (good.replace("abcdef0123456789", "short"), "Nonce"),
            (
                good.replace("abcdef0123456789", "abc-def-0123456789"),
                "Nonce",
            ),
            (
                good.replace("2026-11-22T10:00:00Z", "yesterday"),
                "Issued At",
            ),
            (format!("{good}\nSurprise: 1"), "unexpected"),
            (good.replace('\n', "\r\n"), "\\n"),
            (good.replace("URI: ", "Uri: "), "URI"),
            ("x".repeat(5000), "longer"),
            (format!("{good}\nResources:"), "Resources"),
        ] {
            let e = Message::parse(&bad).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }
}

//! Wallet addresses and chain ids: EIP-55 checksummed EVM addresses, base58 Solana public
//! keys, CAIP-2 chain ids (`eip155:1`, `solana:mainnet`) and CAIP-10 accounts
//! (`eip155:1:0xAb...`). Pure parsing; no network.

use tiny_keccak::{Hasher, Keccak};

/// Keccak-256, as Ethereum uses it.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut k = Keccak::v256();
    k.update(data);
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    out
}

/// The EIP-55 checksummed form of a 20-byte address.
pub fn eip55(addr: &[u8; 20]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = [0u8; 40];
    for (i, b) in addr.iter().enumerate() {
        hex[2 * i] = HEX[usize::from(b >> 4)];
        hex[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    let hash = keccak256(&hex);
    let mut out = String::with_capacity(42);
    out.push_str("0x");
    for (i, &c) in hex.iter().enumerate() {
        let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0xf;
        out.push(char::from(if c.is_ascii_alphabetic() && nibble >= 8 {
            c.to_ascii_uppercase()
        } else {
            c
        }));
    }
    out
}

/// Why an address, chain id or account did not parse. The text it names is cut to 100
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// Not `0x` and 40 hex digits.
    #[error("{0:?}: an EVM address is 0x and 40 hex digits")]
    EvmFormat(String),
    /// Mixed case that is not the EIP-55 checksum.
    #[error("{got:?}: wrong EIP-55 checksum (expected {want})")]
    Checksum {
        /// The text.
        got: String,
        /// The checksummed form.
        want: String,
    },
    /// Not base58.
    #[error("{0:?}: not base58")]
    Base58(String),
    /// A Solana key of another length.
    #[error("{text:?}: a Solana public key is 32 bytes, not {len}")]
    SolanaLength {
        /// The text.
        text: String,
        /// Its decoded length.
        len: usize,
    },
    /// No `namespace:reference`.
    #[error("{0:?}: a CAIP-2 chain id looks like eip155:1 or solana:mainnet")]
    Caip2(String),
    /// An eip155 reference that is not a decimal chain id.
    #[error("{0:?}: an eip155 reference is a decimal chain id")]
    EvmChain(String),
    /// A solana reference that is not a cluster name.
    #[error("{0:?}: a solana reference is a cluster name")]
    SolanaCluster(String),
    /// Another namespace.
    #[error("{0:?}: unknown chain namespace (eip155 or solana)")]
    Namespace(String),
}

fn cut(s: &str) -> String {
    s.chars().take(100).collect()
}

/// Parses `0x` + 40 hex digits. Mixed case must be a correct EIP-55 checksum; all-lower or
/// all-upper carries no checksum and is accepted.
pub fn parse_evm(s: &str) -> Result<[u8; 20], AddressError> {
    let hex = s
        .strip_prefix("0x")
        .filter(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| AddressError::EvmFormat(cut(s)))?;
    let mut out = [0u8; 20];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| AddressError::EvmFormat(cut(s)))?;
    }
    let has_lower = hex.bytes().any(|b| b.is_ascii_lowercase());
    let has_upper = hex.bytes().any(|b| b.is_ascii_uppercase());
    if has_lower && has_upper && eip55(&out) != s {
        return Err(AddressError::Checksum {
            got: cut(s),
            want: eip55(&out),
        });
    }
    Ok(out)
}

/// Parses a base58 Solana public key (32 bytes).
pub fn parse_solana(s: &str) -> Result<[u8; 32], AddressError> {
    let bytes = bs58::decode(s)
        .into_vec()
        .map_err(|_| AddressError::Base58(cut(s)))?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| AddressError::SolanaLength {
            text: cut(s),
            len: b.len(),
        })
}

/// A chain namespace this edge knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// EVM chains, `eip155:<chain id>`.
    Eip155,
    /// Solana, `solana:<cluster>`.
    Solana,
}

/// A CAIP-2 chain id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainId {
    /// The namespace.
    pub namespace: Namespace,
    /// The reference: a decimal chain id for EVM, a cluster name or genesis prefix for Solana.
    pub reference: String,
}

impl ChainId {
    /// Parses `eip155:137` or `solana:mainnet`.
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (ns, reference) = s
            .split_once(':')
            .ok_or_else(|| AddressError::Caip2(cut(s)))?;
        let namespace = match ns {
            "eip155" => {
                if reference.is_empty()
                    || reference.len() > 18
                    || !reference.bytes().all(|b| b.is_ascii_digit())
                    || reference.starts_with('0')
                {
                    return Err(AddressError::EvmChain(cut(s)));
                }
                Namespace::Eip155
            }
            "solana" => {
                if reference.is_empty()
                    || reference.len() > 32
                    || !reference
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    return Err(AddressError::SolanaCluster(cut(s)));
                }
                Namespace::Solana
            }
            _ => return Err(AddressError::Namespace(cut(s))),
        };
        Ok(Self {
            namespace,
            reference: reference.to_owned(),
        })
    }

    /// The EVM chain id, for `eip155` chains.
    pub fn evm_id(&self) -> Option<u64> {
        (self.namespace == Namespace::Eip155)
            .then(|| self.reference.parse().ok())
            .flatten()
    }
}

impl std::fmt::Display for ChainId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = match self.namespace {
            Namespace::Eip155 => "eip155",
            Namespace::Solana => "solana",
        };
        write!(f, "{ns}:{}", self.reference)
    }
}

/// A wallet: an address on a namespace, in canonical form (EIP-55 for EVM, base58 for
/// Solana), and optionally the chain it signed in on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Account {
    /// The chain, when known (a CAIP-10 account names it; a bare address does not).
    pub chain: Option<ChainId>,
    /// The namespace.
    pub namespace: Namespace,
    /// The canonical address text.
    pub address: String,
    /// The address as 32 bytes: an EVM address right-aligned (as in an ABI word), a Solana
    /// public key as is.
    pub raw: [u8; 32],
}

impl Account {
    /// Parses a CAIP-10 account (`eip155:1:0xAb...`, `solana:mainnet:7xK...`) or a bare
    /// address (`0x...` is EVM, anything else base58 Solana).
    pub fn parse(s: &str) -> Result<Self, AddressError> {
        let (chain, addr) = match s.rsplit_once(':') {
            Some((chain, addr)) => (Some(ChainId::parse(chain)?), addr),
            None => (None, s),
        };
        let namespace = match &chain {
            Some(c) => c.namespace,
            None if addr.starts_with("0x") => Namespace::Eip155,
            None => Namespace::Solana,
        };
        let (address, raw) = match namespace {
            Namespace::Eip155 => {
                let a = parse_evm(addr)?;
                let mut raw = [0u8; 32];
                raw[12..].copy_from_slice(&a);
                // Mixed case passed the checksum, so it is already canonical.
                let mixed = addr.bytes().any(|b| b.is_ascii_lowercase())
                    && addr[2..].bytes().any(|b| b.is_ascii_uppercase());
                (if mixed { addr.to_owned() } else { eip55(&a) }, raw)
            }
            Namespace::Solana => (addr.to_owned(), parse_solana(addr)?),
        };
        Ok(Self {
            chain,
            namespace,
            address,
            raw,
        })
    }

    /// Whether `self` (a policy entry) names `other` (a signed-in wallet): same namespace
    /// and address, and the same chain when the entry names one.
    pub fn covers(&self, other: &Self) -> bool {
        self.namespace == other.namespace
            && self.address == other.address
            && self
                .chain
                .as_ref()
                .is_none_or(|c| other.chain.as_ref() == Some(c))
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.chain {
            Some(c) => write!(f, "{c}:{}", self.address),
            None => f.write_str(&self.address),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_vectors() {
        // The test vectors of EIP-55.
        for s in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            assert_eq!(eip55(&parse_evm(s).unwrap()), s);
        }
        assert!(parse_evm("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_ok());
        let bad = parse_evm("0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap_err();
        assert!(matches!(bad, AddressError::Checksum { .. }), "{bad}");
        assert!(parse_evm("0x1234").is_err());
        assert!(parse_evm("5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").is_err());
    }

    #[test]
    fn keccak_of_empty() {
        let h = keccak256(b"");
        assert_eq!(
            h.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn chains_and_accounts() {
        assert_eq!(ChainId::parse("eip155:137").unwrap().evm_id(), Some(137));
        assert!(ChainId::parse("eip155:0x89").is_err());
        assert!(ChainId::parse("cosmos:hub").is_err());
        assert!(ChainId::parse("solana:mainnet").is_ok());
        let a = Account::parse("eip155:1:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").unwrap();
        assert_eq!(a.address, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed");
        assert_eq!(
            a.to_string(),
            "eip155:1:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
        );
        let bare = Account::parse("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed").unwrap();
        assert!(
            bare.covers(&a)
                && !a.covers(
                    &Account::parse("eip155:137:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed")
                        .unwrap()
                )
        );
        let sol = Account::parse("solana:mainnet:11111111111111111111111111111111").unwrap();
        assert_eq!(sol.namespace, Namespace::Solana);
        assert!(Account::parse("solana:mainnet:0OIl").is_err());
        assert!(Account::parse("abc").is_err());
    }
}

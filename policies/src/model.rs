//! The compiled policy model. Values here are valid by construction: [`crate::Policy::parse`]
//! is the only way to make one from outside input.

use std::time::SystemTime;

use ipnet::IpNet;

/// A policy id: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyId(pub(crate) String);

impl PolicyId {
    /// Validates `s` as a policy id.
    pub fn new(s: &str) -> Result<Self, &'static str> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !s.chars().all(ok_char) {
            return Err("may hold only a-z, 0-9, '-', '_' and '.'");
        }
        if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err("must start with a letter or digit");
        }
        Ok(Self(s.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PolicyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to do when something the decision needs (a chain RPC, a key source) is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Refuse with 503 (the default: no gated byte leaves without an allow decision).
    #[default]
    Closed,
    /// Allow, and count it.
    Open,
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Its id.
    pub id: PolicyId,
    /// Free text for operators.
    pub description: String,
    /// Behaviour when a dependency of the decision is unreachable.
    pub on_unavailable: FailMode,
    /// The rule to evaluate.
    pub rule: Rule,
    /// Abuse limits for the assets bound to it (`limits:`); unset ones are the edge's.
    pub limits: crate::limits::Limits,
}

/// A rule: conditions composed with `any_of`, `all_of` and `not`.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// True when any sub-rule is.
    AnyOf(Vec<Self>),
    /// True when every sub-rule is.
    AllOf(Vec<Self>),
    /// True when the sub-rule is false.
    Not(Box<Self>),
    /// A leaf condition.
    Cond(Condition),
}

/// A leaf condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Always true.
    Public,
    /// A valid token with these properties.
    Jwt(JwtCondition),
    /// The request time is inside the window.
    Time(TimeWindow),
    /// The client address is allowed and not denied.
    Ip(IpCondition),
    /// The `Origin` (or, without it, the `Referer`) is allowed.
    Origin(OriginCondition),
    /// A wallet signed in (a session token from `/auth/verify`) and is allowed.
    Wallet(WalletCondition),
    /// The signed-in wallet holds an NFT (checked on chain by the edge).
    Nft(NftCondition),
}

/// A token standard an `nft` condition can test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftStandard {
    /// ERC-721 on an EVM chain: any token of the contract, or one of the listed ids.
    Erc721,
    /// ERC-1155 on an EVM chain: a balance of at least `min_balance` of one listed id.
    Erc1155,
    /// A Metaplex NFT on Solana: a mint of a verified collection, or one named mint.
    Metaplex,
}

impl NftStandard {
    /// The name in policy documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Erc721 => "erc721",
            Self::Erc1155 => "erc1155",
            Self::Metaplex => "metaplex",
        }
    }
}

/// What an `nft` condition points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NftTarget {
    /// An ERC-721 or ERC-1155 contract (20 bytes).
    Contract([u8; 20]),
    /// A Metaplex verified collection (its collection mint, 32 bytes).
    Collection([u8; 32]),
    /// One Metaplex mint (32 bytes).
    Mint([u8; 32]),
}

/// A token id: a 256-bit unsigned integer, big-endian.
pub type TokenId = [u8; 32];

/// Requirements on the signed-in wallet's NFTs. The wallet comes from a session token of
/// `issuer`, as for [`WalletCondition`]; its namespace must be the chain's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NftCondition {
    /// The chain (CAIP-2).
    pub chain: crate::address::ChainId,
    /// The standard.
    pub standard: NftStandard,
    /// The contract, collection or mint.
    pub target: NftTarget,
    /// ERC-721: if non-empty, the wallet must own `min_balance` of these ids (else any
    /// token of the contract counts). ERC-1155: the ids, one of which must reach the
    /// balance. Empty for Metaplex.
    pub token_ids: Vec<TokenId>,
    /// The least number of tokens (1 unless the policy says otherwise).
    pub min_balance: u64,
    /// The session tokens' issuer.
    pub issuer: String,
}

/// What the edge knows of a wallet's holding, for [`crate::Facts::nft`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    /// The wallet meets the condition.
    Yes,
    /// It does not.
    No,
    /// No chain endpoint could answer.
    Unavailable,
    /// Not known yet: the edge must look it up and ask again.
    Pending,
}

/// Answers `nft` conditions for the evaluator (the edge's ownership cache). It must not do
/// I/O: what it does not know it reports as [`Holding::Pending`].
pub trait NftOracle: std::fmt::Debug {
    /// Whether `owner` meets `cond`.
    fn holds(&self, cond: &NftCondition, owner: &crate::address::Account) -> Holding;
}

/// The issuer of the edges' wallet session tokens, unless a policy names another.
pub const WALLET_ISSUER: &str = "streamgate-wallet";

/// Requirements on a signed-in wallet: the token's `sg_wallet` claim (a CAIP-10 account)
/// from a session token of `issuer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletCondition {
    /// The session tokens' issuer.
    pub issuer: String,
    /// If non-empty, the wallet must be one of these (CAIP-10, or a bare address for any
    /// chain of its namespace).
    pub allow: Vec<crate::address::Account>,
    /// The wallet must be none of these.
    pub deny: Vec<crate::address::Account>,
}

/// Verified token claims (already checked for signature, `exp` and `nbf`).
pub type Claims = serde_json::Map<String, serde_json::Value>;

/// Requirements on a verified token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JwtCondition {
    /// Required `iss`.
    pub issuer: Option<String>,
    /// Required `aud` (the token's `aud` may be a string or a list holding it).
    pub audience: Option<String>,
    /// Claims that must be present with these values; a list claim must contain the value.
    pub required_claims: Claims,
    /// The claim that scopes the token to assets or path prefixes; `None` disables scoping.
    pub scope_claim: Option<String>,
}

/// A time window, either end optional.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TimeWindow {
    /// Not before this instant.
    pub not_before: Option<SystemTime>,
    /// Not after this instant.
    pub not_after: Option<SystemTime>,
}

/// Address allow and deny lists.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpCondition {
    /// If non-empty, the client must be inside one of these.
    pub allow: Vec<IpNet>,
    /// The client must be inside none of these.
    pub deny: Vec<IpNet>,
}

/// Allowed page origins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginCondition {
    /// Origins such as `https://player.example.com`; a Referer matches by prefix `origin/`.
    pub allow: Vec<String>,
}

//! Metaplex ownership on Solana, over the JSON-RPC API: the wallet's SPL Token accounts
//! (`getTokenAccountsByOwner`), then, for a collection, the Metaplex metadata accounts of
//! the mints it holds (`getMultipleAccounts` on their program-derived addresses), whose
//! `collection` must be verified and be the policy's.
//!
//! Account data is decoded here from the documented layouts: the SPL Token account (165
//! bytes, packed) and the Metaplex `Metadata` account (Borsh). Tokens of the Token-2022
//! program are not considered.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use curve25519_dalek::edwards::CompressedEdwardsY;
use serde_json::{Value, json};
use streamgate_policy::{Holding, NftCondition, NftTarget};

use crate::rpc::{Malformed, Rpc, RpcError};

/// The SPL Token program.
pub const TOKEN_PROGRAM: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";
/// The Metaplex Token Metadata program.
pub const METADATA_PROGRAM: &str = "metaqbxxUerdq28cj1RbAWkYQm3ybzjb6a8bt518x1s";
/// The most token accounts of one wallet considered for a collection check.
pub const MAX_CANDIDATES: usize = 500;
/// `getMultipleAccounts` takes at most 100 keys.
const MULTIPLE_ACCOUNTS: usize = 100;
/// The size of an SPL Token account.
pub const TOKEN_ACCOUNT_LEN: usize = 165;

fn key(s: &str) -> [u8; 32] {
    bs58::decode(s)
        .into_vec()
        .ok()
        .and_then(|v| v.try_into().ok())
        .expect("a valid program id")
}

fn b58(b: &[u8]) -> String {
    bs58::encode(b).into_string()
}

/// An SPL Token account's mint, owner and amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenAccount {
    /// The mint.
    pub mint: [u8; 32],
    /// The wallet that owns the tokens.
    pub owner: [u8; 32],
    /// How many (in base units).
    pub amount: u64,
}

/// Decodes a packed SPL Token account; `None` if it is not an initialized one.
pub fn decode_token_account(data: &[u8]) -> Option<TokenAccount> {
    if data.len() != TOKEN_ACCOUNT_LEN {
        return None;
    }
    // mint 0..32, owner 32..64, amount 64..72, delegate 72..108, state 108 (0 uninit).
    if data[108] == 0 || data[108] > 2 {
        return None;
    }
    Some(TokenAccount {
        mint: data[..32].try_into().ok()?,
        owner: data[32..64].try_into().ok()?,
        amount: u64::from_le_bytes(data[64..72].try_into().ok()?),
    })
}

/// The parts of a Metaplex `Metadata` account a collection check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metadata {
    /// The mint it describes.
    pub mint: [u8; 32],
    /// Its collection: (verified, collection mint).
    pub collection: Option<(bool, [u8; 32])>,
}

struct Borsh<'a>(&'a [u8]);

impl Borsh<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn key(&mut self) -> Option<[u8; 32]> {
        self.take(32).map(|b| b.try_into().expect("32 bytes"))
    }
    fn string(&mut self) -> Option<()> {
        let n = self.u32()? as usize;
        self.take(n).map(|_| ())
    }
    fn option(&mut self) -> Option<bool> {
        match self.u8()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }
}

/// Decodes a Metaplex `Metadata` account (Borsh) up to its collection.
pub fn decode_metadata(data: &[u8]) -> Option<Metadata> {
    let mut r = Borsh(data);
    // Key::MetadataV1 is 4.
    if r.u8()? != 4 {
        return None;
    }
    r.key()?; // update authority
    let mint = r.key()?;
    r.string()?; // name
    r.string()?; // symbol
    r.string()?; // uri
    r.take(2)?; // seller fee basis points
    if r.option()? {
        let n = r.u32()? as usize;
        r.take(n.checked_mul(34)?)?; // creators: address, verified, share
    }
    r.take(2)?; // primary sale happened, is mutable
    if r.option()? {
        r.u8()?; // edition nonce
    }
    if r.option()? {
        r.u8()?; // token standard
    }
    let collection = if r.option()? {
        let verified = r.option()?;
        Some((verified, r.key()?))
    } else {
        None
    };
    Some(Metadata { mint, collection })
}

/// The Metaplex metadata address of `mint`: the program-derived address of
/// `["metadata", program, mint]` under the metadata program.
pub fn metadata_address(mint: &[u8; 32]) -> [u8; 32] {
    let program = key(METADATA_PROGRAM);
    for bump in (0..=255u8).rev() {
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        h.update(b"metadata");
        h.update(&program);
        h.update(mint);
        h.update(&[bump]);
        h.update(&program);
        h.update(b"ProgramDerivedAddress");
        let d: [u8; 32] = h.finish().as_ref().try_into().expect("32 bytes");
        // A PDA is off the ed25519 curve, so no private key can sign for it.
        if CompressedEdwardsY(d).decompress().is_none() {
            return d;
        }
    }
    unreachable!("some bump gives an off-curve address")
}

fn account_data(v: &Value, program: &str) -> Option<Vec<u8>> {
    if v.get("owner").and_then(Value::as_str) != Some(program) {
        return None;
    }
    let d = v.get("data")?.as_array()?;
    if d.get(1).and_then(Value::as_str) != Some("base64") {
        return None;
    }
    STANDARD.decode(d.first()?.as_str()?).ok()
}

fn unavailable(e: RpcError) -> Result<Holding, RpcError> {
    match e {
        // The chain refusing the question (a bad parameter) is not an outage.
        RpcError::Rejected { .. } => Ok(Holding::No),
        e => Err(e),
    }
}

/// The wallet's token accounts holding at least one token, `filter` being
/// `{"mint": ..}` or `{"programId": ..}`.
async fn token_accounts(
    rpc: &Rpc,
    owner: &[u8; 32],
    filter: Value,
) -> Result<Result<Vec<TokenAccount>, Holding>, RpcError> {
    let params = json!([b58(owner), filter, {"encoding": "base64", "commitment": "confirmed"}]);
    let v = match rpc.call("getTokenAccountsByOwner", params).await {
        Ok(v) => v,
        Err(e) => return unavailable(e).map(Err),
    };
    let list = v
        .get("value")
        .and_then(Value::as_array)
        .ok_or(Malformed::Shape("no value list").of("getTokenAccountsByOwner"))?;
    Ok(Ok(list
        .iter()
        .filter_map(|a| account_data(a.get("account")?, TOKEN_PROGRAM))
        .filter_map(|d| decode_token_account(&d))
        .filter(|t| t.owner == *owner && t.amount >= 1)
        .collect()))
}

/// Whether `owner` meets one Metaplex condition.
async fn holds(rpc: &Rpc, cond: &NftCondition, owner: &[u8; 32]) -> Result<Holding, RpcError> {
    match cond.target {
        NftTarget::Mint(mint) => Ok(
            match token_accounts(rpc, owner, json!({"mint": b58(&mint)})).await? {
                Ok(accounts) if accounts.iter().any(|t| t.mint == mint) => Holding::Yes,
                Ok(_) => Holding::No,
                Err(h) => h,
            },
        ),
        NftTarget::Collection(collection) => {
            let accounts =
                match token_accounts(rpc, owner, json!({"programId": TOKEN_PROGRAM})).await? {
                    Ok(a) => a,
                    Err(h) => return Ok(h),
                };
            let mut mints: Vec<[u8; 32]> = accounts.iter().map(|t| t.mint).collect();
            mints.sort_unstable();
            mints.dedup();
            if mints.len() > MAX_CANDIDATES {
                tracing::warn!(
                    wallet = %b58(owner), tokens = mints.len(),
                    "wallet holds more token mints than a collection check reads; the first {MAX_CANDIDATES} count"
                );
                mints.truncate(MAX_CANDIDATES);
            }
            for chunk in mints.chunks(MULTIPLE_ACCOUNTS) {
                let addrs: Vec<String> = chunk.iter().map(|m| b58(&metadata_address(m))).collect();
                let params = json!([addrs, {"encoding": "base64", "commitment": "confirmed"}]);
                let v = match rpc.call("getMultipleAccounts", params).await {
                    Ok(v) => v,
                    Err(e) => return unavailable(e),
                };
                let list = v
                    .get("value")
                    .and_then(Value::as_array)
                    .ok_or(Malformed::Shape("no value list").of("getMultipleAccounts"))?;
                let found = list.iter().zip(chunk).any(|(a, mint)| {
                    account_data(a, METADATA_PROGRAM)
                        .and_then(|d| decode_metadata(&d))
                        .is_some_and(|m| {
                            m.mint == *mint && m.collection == Some((true, collection))
                        })
                });
                if found {
                    return Ok(Holding::Yes);
                }
            }
            Ok(Holding::No)
        }
        NftTarget::Contract(_) => Ok(Holding::No),
    }
}

/// Answers Metaplex conditions for one owner (each with its own calls).
pub(crate) async fn holdings(rpc: &Rpc, conds: &[&NftCondition], owner: [u8; 32]) -> Vec<Holding> {
    let mut out = Vec::with_capacity(conds.len());
    for c in conds {
        out.push(match holds(rpc, c, &owner).await {
            Ok(h) => h,
            Err(why) => {
                tracing::debug!(error = %why, "Solana ownership lookup failed");
                Holding::Unavailable
            }
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_address_matches_a_known_pda() {
        // The metadata account of the wrapped-SOL mint, as any Solana explorer lists it.
        let mint = key("So11111111111111111111111111111111111111112");
        assert_eq!(
            b58(&metadata_address(&mint)),
            "6dM4TqWyWJsbx7obrdLcviBkTafD5E8av61zfU6jq57X"
        );
    }

    #[test]
    fn truncated_accounts_do_not_decode() {
        assert_eq!(decode_token_account(&[0; 164]), None);
        let mut acc = [0u8; TOKEN_ACCOUNT_LEN];
        assert_eq!(decode_token_account(&acc), None, "uninitialized");
        acc[108] = 1;
        acc[64] = 1;
        assert_eq!(decode_token_account(&acc).map(|t| t.amount), Some(1));
        assert_eq!(decode_metadata(&[4; 10]), None);
        assert_eq!(decode_metadata(&[]), None);
    }
}

//! The `nft` condition: a chain, a standard, a contract, collection or mint, token ids and
//! a minimum balance, each checked with its path; and token ids as JSON numbers, decimal
//! text or `0x` hex below 2^256.

use serde_json::Value;

use super::{Ctx, join, object, session_issuer, string, unknown_keys};
use crate::model::*;

/// The most ERC-721 ids or ERC-1155 ids one condition may list.
pub const MAX_TOKEN_IDS: usize = 64;

/// A token id as decimal text.
pub fn token_id_text(id: &TokenId) -> String {
    // Repeated division of the big-endian number by 10.
    let mut n = *id;
    let mut digits = Vec::new();
    loop {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
        if n.iter().all(|&b| b == 0) {
            break;
        }
    }
    digits.reverse();
    String::from_utf8(digits).expect("ASCII digits")
}

/// Parses a token id: a non-negative integer, as a JSON number, decimal text or `0x` hex,
/// below 2^256.
pub fn parse_token_id(v: &Value) -> Result<TokenId, String> {
    let text = match v {
        Value::Number(n) => n.as_u64().map(|n| n.to_string()).ok_or_else(|| {
            format!("{n} is not a non-negative integer (write big ids as strings)")
        })?,
        Value::String(s) => s.clone(),
        _ => return Err("a token id is an integer or a string of digits".into()),
    };
    let mut out = [0u8; 32];
    if let Some(hex) = text.strip_prefix("0x") {
        if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?}: 0x and 1 to 64 hex digits"));
        }
        let padded = format!("{hex:0>64}");
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&padded[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        return Ok(out);
    }
    if text.is_empty() || text.len() > 78 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{text:?} is not a token id (decimal digits or 0x hex)"
        ));
    }
    for d in text.bytes() {
        // out = out * 10 + d, failing on overflow past 2^256.
        let mut carry = u32::from(d - b'0');
        for b in out.iter_mut().rev() {
            let cur = u32::from(*b) * 10 + carry;
            *b = cur as u8;
            carry = cur >> 8;
        }
        if carry != 0 {
            return Err(format!("{text:?} does not fit in 256 bits"));
        }
    }
    Ok(out)
}

pub(super) fn nft(cx: &mut Ctx, path: &str, v: &Value) -> Option<NftCondition> {
    let m = object(cx, path, v)?;
    unknown_keys(
        cx,
        path,
        m,
        &[
            "chain",
            "standard",
            "contract",
            "collection",
            "mint",
            "token_ids",
            "min_balance",
            "issuer",
        ],
    );
    let chain = match m.get("chain") {
        None => {
            cx.err(
                &join(path, "chain"),
                "required (a CAIP-2 id such as eip155:1)",
            );
            None
        }
        Some(v) => string(cx, &join(path, "chain"), v).and_then(|s| {
            crate::address::ChainId::parse(&s)
                .map_err(|e| cx.err(&join(path, "chain"), e.to_string()))
                .ok()
        }),
    };
    let standard = match m.get("standard").map(|v| (v, v.as_str())) {
        None => {
            cx.err(
                &join(path, "standard"),
                "required: erc721, erc1155 or metaplex",
            );
            None
        }
        Some((_, Some("erc721"))) => Some(NftStandard::Erc721),
        Some((_, Some("erc1155"))) => Some(NftStandard::Erc1155),
        Some((_, Some("metaplex"))) => Some(NftStandard::Metaplex),
        Some((v, _)) => {
            cx.err(
                &join(path, "standard"),
                format!("{v} is not one of erc721, erc1155, metaplex"),
            );
            None
        }
    };
    use crate::address::Namespace;
    if let (Some(c), Some(s)) = (&chain, standard) {
        let want = if s == NftStandard::Metaplex {
            Namespace::Solana
        } else {
            Namespace::Eip155
        };
        if c.namespace != want {
            cx.err(
                &join(path, "chain"),
                format!(
                    "{} tokens live on {} chains, not {c}",
                    s.as_str(),
                    if want == Namespace::Solana {
                        "solana"
                    } else {
                        "eip155"
                    }
                ),
            );
        }
    }
    let present: Vec<&str> = ["contract", "collection", "mint"]
        .into_iter()
        .filter(|k| m.contains_key(*k))
        .collect();
    let target = match (standard, present.as_slice()) {
        (Some(NftStandard::Erc721 | NftStandard::Erc1155), ["contract"]) => {
            let p = join(path, "contract");
            string(cx, &p, &m["contract"]).and_then(|s| {
                crate::address::parse_evm(&s)
                    .map(NftTarget::Contract)
                    .map_err(|e| cx.err(&p, e.to_string()))
                    .ok()
            })
        }
        (Some(NftStandard::Metaplex), [k @ ("collection" | "mint")]) => {
            let p = join(path, k);
            string(cx, &p, &m[*k]).and_then(|s| {
                crate::address::parse_solana(&s)
                    .map(|b| {
                        if *k == "mint" {
                            NftTarget::Mint(b)
                        } else {
                            NftTarget::Collection(b)
                        }
                    })
                    .map_err(|e| cx.err(&p, e.to_string()))
                    .ok()
            })
        }
        (Some(NftStandard::Metaplex), _) => {
            cx.err(
                path,
                "a metaplex condition names exactly one of collection, mint",
            );
            None
        }
        (Some(_), _) => {
            cx.err(
                path,
                "an erc721 or erc1155 condition names its contract (and only that)",
            );
            None
        }
        (None, _) => None,
    };
    let mut token_ids = Vec::new();
    if let Some(v) = m.get("token_ids") {
        let p = join(path, "token_ids");
        match v {
            Value::Array(items) if items.len() <= MAX_TOKEN_IDS => {
                for (i, item) in items.iter().enumerate() {
                    match parse_token_id(item) {
                        Ok(id) if !token_ids.contains(&id) => token_ids.push(id),
                        Ok(_) => cx.err(&format!("{p}[{i}]"), "listed twice"),
                        Err(e) => cx.err(&format!("{p}[{i}]"), e),
                    }
                }
            }
            Value::Array(_) => cx.err(&p, format!("at most {MAX_TOKEN_IDS} ids")),
            _ => cx.err(&p, "expected a list of token ids"),
        }
        if standard == Some(NftStandard::Metaplex) {
            cx.err(
                &p,
                "metaplex conditions take no token ids (name a mint instead)",
            );
        }
    }
    if standard == Some(NftStandard::Erc1155) && token_ids.is_empty() {
        cx.err(
            &join(path, "token_ids"),
            "erc1155 needs at least one token id",
        );
    }
    let min_balance = match m.get("min_balance") {
        None => 1,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => {
                cx.err(&join(path, "min_balance"), "an integer of at least 1");
                1
            }
        },
    };
    if standard == Some(NftStandard::Metaplex) && min_balance != 1 {
        cx.err(
            &join(path, "min_balance"),
            "a metaplex NFT has a supply of 1",
        );
    }
    if standard == Some(NftStandard::Erc721)
        && !token_ids.is_empty()
        && min_balance > token_ids.len() as u64
    {
        cx.err(
            &join(path, "min_balance"),
            format!("asks for {min_balance} of {} listed ids", token_ids.len()),
        );
    }
    let issuer = session_issuer(cx, path, m);
    Some(NftCondition {
        chain: chain?,
        standard: standard?,
        target: target?,
        token_ids,
        min_balance,
        issuer,
    })
}

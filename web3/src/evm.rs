//! EVM reads: ERC-721 and ERC-1155 ownership (batched through Multicall3 when one decision
//! needs several reads), ERC-1271 signature checks, and the Transfer logs that revoke.
//! ABI encoding and decoding are alloy's (`alloy-sol-types`); the transport is [`Rpc`].

use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolCall, SolEvent, sol};
use serde_json::{Value, json};
use streamgate_policy::{Holding, NftCondition, NftStandard, NftTarget};

use crate::rpc::{Malformed, Rpc, RpcError};

sol! {
    interface IERC721 {
        function balanceOf(address owner) external view returns (uint256);
        function ownerOf(uint256 tokenId) external view returns (address);
        event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);
    }

    interface IERC1155 {
        function balanceOf(address account, uint256 id) external view returns (uint256);
        event TransferSingle(address indexed operator, address indexed from, address indexed to, uint256 id, uint256 value);
        event TransferBatch(address indexed operator, address indexed from, address indexed to, uint256[] ids, uint256[] values);
    }

    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4);
    }

    interface IMulticall3 {
        struct Call3 { address target; bool allowFailure; bytes callData; }
        struct Result { bool success; bytes returnData; }
        function aggregate3(Call3[] calls) external payable returns (Result[] returnData);
    }
}

/// ERC-1271's magic value: `isValidSignature`'s selector.
const MAGIC_1271: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// One `eth_call` a condition needs: the contract and the calldata.
#[derive(Debug, Clone)]
struct Read {
    to: Address,
    data: Vec<u8>,
}

/// The answer of one read: its return data, or a revert (the chain's "no").
type ReadResult = Result<Vec<u8>, ()>;

/// The reads that decide `cond` for `owner`.
fn reads(cond: &NftCondition, owner: Address) -> Vec<Read> {
    let NftTarget::Contract(c) = cond.target else {
        return Vec::new();
    };
    let to = Address::from(c);
    match (cond.standard, cond.token_ids.is_empty()) {
        (NftStandard::Erc721, true) => vec![Read {
            to,
            data: IERC721::balanceOfCall { owner }.abi_encode(),
        }],
        (NftStandard::Erc721, false) => cond
            .token_ids
            .iter()
            .map(|id| Read {
                to,
                data: IERC721::ownerOfCall {
                    tokenId: U256::from_be_bytes(*id),
                }
                .abi_encode(),
            })
            .collect(),
        (NftStandard::Erc1155, _) => cond
            .token_ids
            .iter()
            .map(|id| Read {
                to,
                data: IERC1155::balanceOfCall {
                    account: owner,
                    id: U256::from_be_bytes(*id),
                }
                .abi_encode(),
            })
            .collect(),
        (NftStandard::Metaplex, _) => Vec::new(),
    }
}

/// The verdict from the reads' answers. A revert or undecodable data counts as not held:
/// `ownerOf` reverts for a token that does not exist, and a contract that does not
/// implement the call holds nothing for anyone.
fn verdict(cond: &NftCondition, owner: Address, answers: &[ReadResult]) -> Holding {
    let min = U256::from(cond.min_balance);
    let held = match (cond.standard, cond.token_ids.is_empty()) {
        (NftStandard::Erc721, true) => answers.first().is_some_and(|a| {
            a.as_ref()
                .ok()
                .and_then(|d| IERC721::balanceOfCall::abi_decode_returns(d).ok())
                .is_some_and(|b| b >= min)
        }),
        (NftStandard::Erc721, false) => {
            let owned = answers
                .iter()
                .filter(|a| {
                    a.as_ref()
                        .ok()
                        .and_then(|d| IERC721::ownerOfCall::abi_decode_returns(d).ok())
                        == Some(owner)
                })
                .count();
            owned as u64 >= cond.min_balance
        }
        (NftStandard::Erc1155, _) => answers.iter().any(|a| {
            a.as_ref()
                .ok()
                .and_then(|d| IERC1155::balanceOfCall::abi_decode_returns(d).ok())
                .is_some_and(|b| b >= min)
        }),
        (NftStandard::Metaplex, _) => false,
    };
    if held { Holding::Yes } else { Holding::No }
}

fn hex(b: &[u8]) -> String {
    alloy_primitives::hex::encode_prefixed(b)
}

fn unhex(v: &Value) -> Result<Vec<u8>, Malformed> {
    let s = v.as_str().ok_or(Malformed::Hex)?;
    alloy_primitives::hex::decode(s).map_err(|_| Malformed::Hex)
}

/// One `eth_call` at the latest block: its return data, or `Err(())` for a revert.
async fn eth_call(rpc: &Rpc, read: &Read) -> Result<ReadResult, RpcError> {
    let params = json!([{"to": read.to.to_string(), "data": hex(&read.data)}, "latest"]);
    match rpc.call("eth_call", params).await {
        Ok(v) => unhex(&v).map(Ok).map_err(|m| m.of("eth_call")),
        Err(RpcError::Rejected { .. }) => Ok(Err(())),
        Err(e) => Err(e),
    }
}

/// Answers several (condition, owner) questions with as few calls as possible: one
/// `eth_call` when they need one read, else one Multicall3 `aggregate3` with every read.
/// `Err` means no endpoint answered: every question is then [`Holding::Unavailable`].
pub(crate) async fn holdings(
    rpc: &Rpc,
    multicall3: [u8; 20],
    questions: &[(&NftCondition, [u8; 20])],
) -> Vec<Holding> {
    let per: Vec<Vec<Read>> = questions
        .iter()
        .map(|(c, o)| reads(c, Address::from(*o)))
        .collect();
    let all: Vec<&Read> = per.iter().flatten().collect();
    let answers: Result<Vec<ReadResult>, RpcError> = match all.as_slice() {
        [] => Ok(Vec::new()),
        [one] => eth_call(rpc, one).await.map(|a| vec![a]),
        many => aggregate3(rpc, multicall3, many).await,
    };
    let answers = match answers {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(chain = %rpc.chain(), error = %e, "ownership lookup failed");
            return vec![Holding::Unavailable; questions.len()];
        }
    };
    let mut at = 0;
    questions
        .iter()
        .zip(&per)
        .map(|((c, o), r)| {
            let mine = &answers[at..at + r.len()];
            at += r.len();
            verdict(c, Address::from(*o), mine)
        })
        .collect()
}

async fn aggregate3(
    rpc: &Rpc,
    multicall3: [u8; 20],
    reads: &[&Read],
) -> Result<Vec<ReadResult>, RpcError> {
    let call = IMulticall3::aggregate3Call {
        calls: reads
            .iter()
            .map(|r| IMulticall3::Call3 {
                target: r.to,
                allowFailure: true,
                callData: Bytes::from(r.data.clone()),
            })
            .collect(),
    };
    let read = Read {
        to: Address::from(multicall3),
        data: call.abi_encode(),
    };
    match eth_call(rpc, &read).await? {
        Ok(data) => decode_aggregate3(&data, reads.len()).map_err(|m| m.of("eth_call")),
        // aggregate3 with allowFailure never reverts; a revert means no Multicall3 there.
        Err(()) => Err(Malformed::MulticallReverted.of("eth_call")),
    }
}

/// Decodes `aggregate3`'s return data for `calls` calls: each call's return data, or
/// `Err(())` where that call failed. Pure; fuzzed.
pub fn decode_aggregate3(data: &[u8], calls: usize) -> Result<Vec<Result<Vec<u8>, ()>>, Malformed> {
    let results = IMulticall3::aggregate3Call::abi_decode_returns(data)
        .map_err(|_| Malformed::Abi("aggregate3 results"))?;
    if results.len() != calls {
        return Err(Malformed::Count {
            want: calls,
            got: results.len(),
        });
    }
    Ok(results
        .into_iter()
        .map(|r| {
            if r.success {
                Ok(r.returnData.to_vec())
            } else {
                Err(())
            }
        })
        .collect())
}

/// ERC-1271: whether the contract at `wallet` accepts `signature` over `hash`. `Ok(false)`
/// for a contract that says no, reverts or is not a contract; `Err` when no endpoint answered.
pub async fn is_valid_signature(
    rpc: &Rpc,
    wallet: [u8; 20],
    hash: [u8; 32],
    signature: &[u8],
) -> Result<bool, RpcError> {
    let read = Read {
        to: Address::from(wallet),
        data: IERC1271::isValidSignatureCall {
            hash: B256::from(hash),
            signature: Bytes::copy_from_slice(signature),
        }
        .abi_encode(),
    };
    Ok(match eth_call(rpc, &read).await? {
        Ok(data) => IERC1271::isValidSignatureCall::abi_decode_returns(&data)
            .is_ok_and(|magic| magic.0 == MAGIC_1271),
        Err(()) => false,
    })
}

/// The latest block number.
pub async fn block_number(rpc: &Rpc) -> Result<u64, RpcError> {
    let v = rpc.call("eth_blockNumber", json!([])).await?;
    quantity(&v).map_err(|m| m.of("eth_blockNumber"))
}

fn quantity(v: &Value) -> Result<u64, Malformed> {
    let s = v.as_str().ok_or(Malformed::Quantity)?;
    let digits = s.strip_prefix("0x").ok_or(Malformed::Quantity)?;
    u64::from_str_radix(digits, 16).map_err(|_| Malformed::Quantity)
}

/// A token movement: `from` and `to` of a Transfer, TransferSingle or TransferBatch log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Movement {
    /// The contract that emitted it.
    pub contract: [u8; 20],
    /// The previous holder (zero for a mint).
    pub from: [u8; 20],
    /// The new holder (zero for a burn).
    pub to: [u8; 20],
    /// The block it is in.
    pub block: u64,
}

/// The token movements of `contracts` in blocks `from..=to`.
pub async fn movements(
    rpc: &Rpc,
    contracts: &[[u8; 20]],
    from: u64,
    to: u64,
) -> Result<Vec<Movement>, RpcError> {
    let topics = [
        IERC721::Transfer::SIGNATURE_HASH,
        IERC1155::TransferSingle::SIGNATURE_HASH,
        IERC1155::TransferBatch::SIGNATURE_HASH,
    ];
    let params = json!([{
        "fromBlock": format!("{from:#x}"),
        "toBlock": format!("{to:#x}"),
        "address": contracts.iter().map(|c| Address::from(*c).to_string()).collect::<Vec<_>>(),
        "topics": [topics.iter().map(|t| t.to_string()).collect::<Vec<_>>()],
    }]);
    let v = rpc.call("eth_getLogs", params).await?;
    decode_logs(&v).map_err(|m| m.of("eth_getLogs"))
}

/// The token movements in an `eth_getLogs` answer (Transfer, TransferSingle and
/// TransferBatch; removed logs and logs of other events are skipped). Pure; fuzzed.
pub fn decode_logs(v: &Value) -> Result<Vec<Movement>, Malformed> {
    let logs = v
        .as_array()
        .ok_or(Malformed::Shape("eth_getLogs did not return a list"))?;
    let mut out = Vec::with_capacity(logs.len());
    for log in logs {
        if log.get("removed").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let contract = unhex(&log["address"])?;
        let topics: Vec<Vec<u8>> = log["topics"]
            .as_array()
            .ok_or(Malformed::Shape("a log without topics"))?
            .iter()
            .map(unhex)
            .collect::<Result<_, _>>()?;
        let word_addr = |w: &Vec<u8>| -> Option<[u8; 20]> {
            (w.len() == 32).then(|| w[12..].try_into().expect("20 bytes"))
        };
        let Some(sig) = topics.first() else { continue };
        // Transfer: from, to in topics 1 and 2. TransferSingle/Batch: operator first.
        let (f, t) = if sig.as_slice() == IERC721::Transfer::SIGNATURE_HASH.as_slice() {
            (topics.get(1), topics.get(2))
        } else {
            (topics.get(2), topics.get(3))
        };
        let (Some(from), Some(to)) = (f.and_then(word_addr), t.and_then(word_addr)) else {
            continue;
        };
        let Ok(contract) = <[u8; 20]>::try_from(contract.as_slice()) else {
            continue;
        };
        out.push(Movement {
            contract,
            from,
            to,
            block: log
                .get("blockNumber")
                .map(quantity)
                .transpose()?
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

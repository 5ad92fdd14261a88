//! The local EVM chain fixture that the Web3-gating tests (issue 5) stand on, checked end to
//! end with nothing mocked: a real `hardhat node`, contracts compiled from source by solc-js
//! and deployed with ethers (`tests/chain/fixture.mjs`), signatures from Python's
//! eth-account, and every read made here with raw JSON-RPC and hand-encoded ABI, the way
//! the edge will talk to a chain.

use std::time::Instant;

use serde_json::{Value, json};

mod common;

use common::chain::{Chain, Deployment, start_chain, start_chain_in};
use common::run_client;

const OWNER_OF: [u8; 4] = [0x63, 0x52, 0x21, 0x1e]; // ownerOf(uint256)
const BALANCE_OF_721: [u8; 4] = [0x70, 0xa0, 0x82, 0x31]; // balanceOf(address)
const BALANCE_OF_1155: [u8; 4] = [0x00, 0xfd, 0xd5, 0x8e]; // balanceOf(address,uint256)
const AGGREGATE3: [u8; 4] = [0x82, 0xad, 0x56, 0xcb]; // aggregate3((address,bool,bytes)[])
const GET_BLOCK_NUMBER: [u8; 4] = [0x42, 0xcb, 0xb1, 0x5c]; // getBlockNumber()
const IS_VALID_SIGNATURE: [u8; 4] = [0x16, 0x26, 0xba, 0x7e]; // isValidSignature(bytes32,bytes)
const OWNER: [u8; 4] = [0x8d, 0xa5, 0xcb, 0x5b]; // owner()
/// The revert selector of OpenZeppelin's ERC721NonexistentToken(uint256).
const NONEXISTENT_TOKEN: &str = "7e273289";
/// ERC-1271's magic value, which is also the selector of isValidSignature.
const MAGIC_1271: [u8; 4] = IS_VALID_SIGNATURE;
/// keccak256("Transfer(address,address,uint256)")
const TRANSFER: &str = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef";
/// keccak256("TransferSingle(address,address,address,uint256,uint256)")
const TRANSFER_SINGLE: &str = "0xc3d58168c5ae7397731d063d5bbf3d657854427343f4c083240f7aacaa2d0f62";

fn unhex(s: &str) -> Vec<u8> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    assert!(s.len().is_multiple_of(2), "odd hex: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("0x");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

fn word(n: u64) -> [u8; 32] {
    let mut w = [0; 32];
    w[24..].copy_from_slice(&n.to_be_bytes());
    w
}

fn word_addr(addr: &str) -> [u8; 32] {
    let a = unhex(addr);
    assert_eq!(a.len(), 20, "not an address: {addr}");
    let mut w = [0; 32];
    w[12..].copy_from_slice(&a);
    w
}

/// A 32-byte word that must hold a small unsigned integer.
fn read_u64(b: &[u8], at: usize) -> u64 {
    let w = &b[at..at + 32];
    assert!(
        w[..24].iter().all(|&x| x == 0),
        "not a small uint: {}",
        hex(w)
    );
    u64::from_be_bytes(w[24..].try_into().unwrap())
}

fn read_usize(b: &[u8], at: usize) -> usize {
    usize::try_from(read_u64(b, at)).unwrap()
}

/// A 32-byte word that must hold an address; returned lowercase.
fn read_addr(b: &[u8], at: usize) -> String {
    let w = &b[at..at + 32];
    assert!(
        w[..12].iter().all(|&x| x == 0),
        "not an address: {}",
        hex(w)
    );
    hex(&w[12..])
}

fn lower(addr: &str) -> String {
    addr.to_ascii_lowercase()
}

fn call_data(selector: [u8; 4], words: &[[u8; 32]]) -> Vec<u8> {
    let mut out = selector.to_vec();
    for w in words {
        out.extend_from_slice(w);
    }
    out
}

/// `bytes` in ABI tail form: length word, then the data padded to a whole word.
fn abi_bytes(data: &[u8]) -> Vec<u8> {
    let mut out = word(data.len() as u64).to_vec();
    out.extend_from_slice(data);
    out.resize(32 + data.len().div_ceil(32) * 32, 0);
    out
}

/// aggregate3((address target, bool allowFailure, bytes callData)[]) call data.
fn aggregate3(calls: &[(&str, bool, Vec<u8>)]) -> Vec<u8> {
    let tails: Vec<Vec<u8>> = calls
        .iter()
        .map(|(target, allow_failure, data)| {
            let mut t = word_addr(target).to_vec();
            t.extend_from_slice(&word(u64::from(*allow_failure)));
            t.extend_from_slice(&word(0x60)); // the bytes start after the three head words
            t.extend_from_slice(&abi_bytes(data));
            t
        })
        .collect();
    let mut out = AGGREGATE3.to_vec();
    out.extend_from_slice(&word(0x20)); // offset of the array
    out.extend_from_slice(&word(calls.len() as u64));
    // Offsets of each tuple, relative to the first word after the length.
    let mut offset = 32 * calls.len();
    for t in &tails {
        out.extend_from_slice(&word(offset as u64));
        offset += t.len();
    }
    for t in tails {
        out.extend_from_slice(&t);
    }
    out
}

/// Decodes aggregate3's `(bool success, bytes returnData)[]`.
fn decode_aggregate3(ret: &[u8]) -> Vec<(bool, Vec<u8>)> {
    let array = read_usize(ret, 0);
    let n = read_usize(ret, array);
    let base = array + 32;
    (0..n)
        .map(|i| {
            let tuple = base + read_usize(ret, base + 32 * i);
            let success = match read_u64(ret, tuple) {
                0 => false,
                1 => true,
                other => panic!("bad bool {other}"),
            };
            let bytes = tuple + read_usize(ret, tuple + 32);
            let len = read_usize(ret, bytes);
            (success, ret[bytes + 32..bytes + 32 + len].to_vec())
        })
        .collect()
}

async fn eth_call(chain: &Chain, to: &str, data: &[u8]) -> Vec<u8> {
    let r = chain
        .rpc("eth_call", json!([{"to": to, "data": hex(data)}, "latest"]))
        .await;
    unhex(r.as_str().unwrap())
}

async fn owner_of(chain: &Chain, d: &Deployment, id: u64) -> String {
    read_addr(
        &eth_call(chain, &d.erc721, &call_data(OWNER_OF, &[word(id)])).await,
        0,
    )
}

async fn balance_1155(chain: &Chain, d: &Deployment, who: &str, id: u64) -> u64 {
    let data = call_data(BALANCE_OF_1155, &[word_addr(who), word(id)]);
    read_u64(&eth_call(chain, &d.erc1155, &data).await, 0)
}

async fn block_number(chain: &Chain) -> u64 {
    let v = chain.rpc("eth_blockNumber", json!([])).await;
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// The `{"tx", "block"}` a fixture command printed, checked against the node's receipt.
async fn mined(chain: &Chain, out: &Value) -> u64 {
    let tx = out["tx"].as_str().unwrap();
    let block = out["block"].as_u64().unwrap();
    let receipt = chain.rpc("eth_getTransactionReceipt", json!([tx])).await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    assert_eq!(receipt["blockNumber"], format!("{block:#x}"), "{receipt}");
    block
}

async fn logs(chain: &Chain, address: &str, from: u64, to: u64, topics: Value) -> Vec<Value> {
    let filter = json!({
        "address": address,
        "fromBlock": format!("{from:#x}"),
        "toBlock": format!("{to:#x}"),
        "topics": topics,
    });
    let v = chain.rpc("eth_getLogs", json!([filter])).await;
    v.as_array().unwrap().clone()
}

async fn started_and_deployed() -> (Chain, Deployment) {
    let chain = start_chain().await;
    assert_eq!(chain.chain_id, 31337);
    let t0 = Instant::now();
    let d = chain.deploy().await;
    eprintln!(
        "chain started in {:?}, contracts deployed in {:?}",
        chain.started_in,
        t0.elapsed()
    );
    assert_eq!(d.chain_id, 31337);
    assert_eq!(d.accounts.len(), 10);
    let contracts = [&d.erc721, &d.erc1155, &d.wallet1271, &d.multicall3];
    for (i, c) in contracts.iter().enumerate() {
        let code = chain.rpc("eth_getCode", json!([c, "latest"])).await;
        assert!(code.as_str().unwrap().len() > 2, "no code at {c}");
        assert!(!contracts[..i].contains(c), "two contracts at {c}");
    }
    (chain, d)
}

#[tokio::test(flavor = "multi_thread")]
async fn nfts_mint_move_and_log_over_raw_json_rpc() {
    let t_test = Instant::now();
    let (chain, d) = started_and_deployed().await;
    let [a0, _, a2, a3] = [0, 1, 2, 3].map(|i| d.accounts[i].clone());
    let (erc721, erc1155) = (d.erc721.as_str(), d.erc1155.as_str());

    // ERC-721: a token that does not exist yet reverts with OpenZeppelin's custom error.
    let err = chain
        .try_rpc(
            "eth_call",
            json!([{"to": erc721, "data": hex(&call_data(OWNER_OF, &[word(7)]))}, "latest"]),
        )
        .await
        .unwrap_err();
    assert!(err.contains(NONEXISTENT_TOKEN), "{err}");

    let out = chain
        .fixture(
            "mint721",
            &["--contract", erc721, "--to", &a2.address, "--id", "7"],
        )
        .await;
    let mint_block = mined(&chain, &out).await;
    assert_eq!(owner_of(&chain, &d, 7).await, lower(&a2.address));
    let bal = eth_call(
        &chain,
        erc721,
        &call_data(BALANCE_OF_721, &[word_addr(&a2.address)]),
    )
    .await;
    assert_eq!(read_u64(&bal, 0), 1);

    // Only the deployer mints; the fixture names the contract's custom error.
    let bad = common::chain::fixture_output(&[
        "mint721",
        "--rpc",
        &chain.url,
        "--contract",
        erc721,
        "--to",
        &a2.address,
        "--id",
        "8",
        "--from-key",
        &a2.private_key,
    ])
    .await;
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("NotMinter("), "{stderr}");

    let out = chain
        .fixture(
            "transfer721",
            &[
                "--contract",
                erc721,
                "--from-key",
                &a2.private_key,
                "--to",
                &a3.address,
                "--id",
                "7",
            ],
        )
        .await;
    let transfer_block = mined(&chain, &out).await;
    assert!(transfer_block > mint_block);
    assert_eq!(owner_of(&chain, &d, 7).await, lower(&a3.address));

    // The Transfer log, as the revocation indexer will poll it: by block range and topic.
    let found = logs(
        &chain,
        erc721,
        transfer_block,
        transfer_block,
        json!([TRANSFER]),
    )
    .await;
    assert_eq!(found.len(), 1, "{found:?}");
    let log = &found[0];
    assert_eq!(log["transactionHash"], out["tx"]);
    assert_eq!(log["topics"][1], hex(&word_addr(&a2.address)));
    assert_eq!(log["topics"][2], hex(&word_addr(&a3.address)));
    assert_eq!(log["topics"][3], hex(&word(7)));
    // Filtering on `from` = account #2 over the whole chain finds the transfer, not the mint.
    let latest = block_number(&chain).await;
    let from_a2 = logs(
        &chain,
        erc721,
        0,
        latest,
        json!([TRANSFER, hex(&word_addr(&a2.address))]),
    )
    .await;
    assert_eq!(from_a2.len(), 1, "{from_a2:?}");
    assert_eq!(from_a2[0]["blockNumber"], format!("{transfer_block:#x}"));
    let all = logs(&chain, erc721, 0, latest, json!([TRANSFER])).await;
    assert_eq!(all.len(), 2, "mint and transfer: {all:?}");
    assert_eq!(
        all[0]["topics"][1],
        hex(&[0; 32]),
        "a mint comes from the zero address"
    );

    // ERC-1155: a balance threshold of 3 of token 1.
    let threshold = 3;
    assert_eq!(balance_1155(&chain, &d, &a2.address, 1).await, 0);
    for (amount, want) in [("2", 2), ("1", 3)] {
        let out = chain
            .fixture(
                "mint1155",
                &[
                    "--contract",
                    erc1155,
                    "--to",
                    &a2.address,
                    "--id",
                    "1",
                    "--amount",
                    amount,
                ],
            )
            .await;
        mined(&chain, &out).await;
        let have = balance_1155(&chain, &d, &a2.address, 1).await;
        assert_eq!(have, want);
        assert_eq!(have >= threshold, want == 3);
    }
    let out = chain
        .fixture(
            "transfer1155",
            &[
                "--contract",
                erc1155,
                "--from-key",
                &a2.private_key,
                "--to",
                &a3.address,
                "--id",
                "1",
                "--amount",
                "1",
            ],
        )
        .await;
    let b = mined(&chain, &out).await;
    assert_eq!(balance_1155(&chain, &d, &a2.address, 1).await, 2);
    assert_eq!(balance_1155(&chain, &d, &a3.address, 1).await, 1);
    let found = logs(&chain, erc1155, b, b, json!([TRANSFER_SINGLE])).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0]["topics"][1],
        hex(&word_addr(&a2.address)),
        "operator"
    );
    assert_eq!(found[0]["topics"][2], hex(&word_addr(&a2.address)), "from");
    assert_eq!(found[0]["topics"][3], hex(&word_addr(&a3.address)), "to");
    let mut data = word(1).to_vec();
    data.extend_from_slice(&word(1));
    assert_eq!(found[0]["data"], hex(&data), "id 1, value 1");

    // Multicall3: ownerOf and balanceOf in one eth_call, plus a call allowed to fail.
    let batch = aggregate3(&[
        (erc721, false, call_data(OWNER_OF, &[word(7)])),
        (
            erc1155,
            false,
            call_data(BALANCE_OF_1155, &[word_addr(&a2.address), word(1)]),
        ),
        (erc721, true, call_data(OWNER_OF, &[word(999)])),
        (&d.multicall3, false, GET_BLOCK_NUMBER.to_vec()),
    ]);
    let results = decode_aggregate3(&eth_call(&chain, &d.multicall3, &batch).await);
    assert_eq!(results.len(), 4);
    assert!(results[0].0);
    assert_eq!(read_addr(&results[0].1, 0), lower(&a3.address));
    assert!(results[1].0);
    assert_eq!(read_u64(&results[1].1, 0), 2);
    assert!(!results[2].0, "ownerOf(999) must fail");
    assert_eq!(
        hex(&results[2].1),
        format!("0x{NONEXISTENT_TOKEN}{}", &hex(&word(999))[2..])
    );
    assert!(results[3].0);
    // An eth_call runs in the context of the block it names: "latest", or an older one (as
    // a check that waits for confirmations will ask), where that block's state applies.
    let latest = block_number(&chain).await;
    assert_eq!(read_u64(&results[3].1, 0), latest);
    let at = |n: u64| json!([{"to": d.multicall3, "data": hex(&batch)}, format!("{n:#x}")]);
    let old = chain.rpc("eth_call", at(transfer_block - 1)).await;
    let old = decode_aggregate3(&unhex(old.as_str().unwrap()));
    assert_eq!(read_u64(&old[3].1, 0), transfer_block - 1);
    assert_eq!(
        read_addr(&old[0].1, 0),
        lower(&a2.address),
        "before the transfer"
    );
    assert_eq!(read_u64(&old[1].1, 0), 0, "before any ERC-1155 mint");
    // Without allowFailure, one failing call reverts the whole batch.
    let strict = aggregate3(&[
        (erc721, false, call_data(OWNER_OF, &[word(7)])),
        (erc721, false, call_data(OWNER_OF, &[word(999)])),
    ]);
    let err = chain
        .try_rpc(
            "eth_call",
            json!([{"to": d.multicall3, "data": hex(&strict)}, "latest"]),
        )
        .await
        .unwrap_err();
    assert!(err.contains("Multicall3: call failed"), "{err}");

    // Blocks move on demand (confirmations), and the fixture's `block` agrees with the node.
    let before = chain.fixture("block", &[]).await["block"].as_u64().unwrap();
    assert_eq!(before, block_number(&chain).await);
    let after = chain.fixture("mine", &["--blocks", "5"]).await["block"]
        .as_u64()
        .unwrap();
    assert_eq!(after, before + 5);
    assert_eq!(block_number(&chain).await, after);
    // Account #0 paid the gas of everything it deployed and minted, out of 10000 ETH.
    let bal0 = chain
        .rpc("eth_getBalance", json!([a0.address, "latest"]))
        .await;
    assert_ne!(bal0, "0x21e19e0c9bab2400000", "account #0 spent no gas");

    // The node goes away with its handle.
    let url = chain.url.clone();
    drop(chain);
    let gone = reqwest::Client::new()
        .post(&url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
        .send()
        .await;
    assert!(gone.is_err(), "the node still answers after drop");
    eprintln!("whole test took {:?}", t_test.elapsed());
}

async fn is_valid_signature(chain: &Chain, wallet: &str, hash: &str, sig: &str) -> Vec<u8> {
    let mut data = IS_VALID_SIGNATURE.to_vec();
    let h = unhex(hash);
    assert_eq!(h.len(), 32);
    data.extend_from_slice(&h);
    data.extend_from_slice(&word(0x40));
    data.extend_from_slice(&abi_bytes(&unhex(sig)));
    let ret = eth_call(chain, wallet, &data).await;
    assert_eq!(ret.len(), 32, "bytes4 comes back as one word");
    assert!(ret[4..].iter().all(|&x| x == 0), "bytes4 is left-aligned");
    ret[..4].to_vec()
}

fn sign(job: Value) -> (String, String, String) {
    let v = run_client("eth_account", "eth_sign.py", &job);
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    (s("signature"), s("hash"), s("address"))
}

#[tokio::test(flavor = "multi_thread")]
async fn erc1271_wallet_accepts_only_its_owners_signatures() {
    let (chain, d) = started_and_deployed().await;
    let (owner, other) = (&d.accounts[1], &d.accounts[2]);
    let wallet = d.wallet1271.as_str();
    let ret = eth_call(&chain, wallet, &OWNER).await;
    assert_eq!(read_addr(&ret, 0), lower(&owner.address));

    let message = format!(
        "127.0.0.1:8080 wants you to sign in with your Ethereum account:\n{wallet}\n\n\
         URI: http://127.0.0.1:8080\nVersion: 1\nChain ID: {}\nNonce: 8d1f2a3b4c5d6e7f\n\
         Issued At: 2026-01-01T00:00:00Z",
        d.chain_id
    );
    // personal_sign by the owner: valid for the EIP-191 digest the verifier computes.
    let (sig, hash, signer) =
        sign(json!({"op": "personal_sign", "key": owner.private_key, "message": message}));
    // eth-account derives the same EIP-55 address from the key that the fixture printed.
    assert_eq!(signer, owner.address);
    assert_eq!(unhex(&sig).len(), 65);
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &sig).await,
        MAGIC_1271
    );

    // The same message signed by another key is refused, as is the owner's signature
    // presented for another message's digest.
    let (bad_sig, bad_hash, bad_signer) =
        sign(json!({"op": "personal_sign", "key": other.private_key, "message": message}));
    assert_eq!(bad_signer, other.address);
    assert_eq!(bad_hash, hash, "the digest depends on the message only");
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &bad_sig).await,
        [0xff; 4]
    );
    let (_, other_hash, _) =
        sign(json!({"op": "personal_sign", "key": owner.private_key, "message": "something else"}));
    assert_ne!(other_hash, hash);
    assert_eq!(
        is_valid_signature(&chain, wallet, &other_hash, &sig).await,
        [0xff; 4]
    );

    // A raw signature over a digest, and an EIP-712 signature over its typed-data digest.
    let digest = hex(&[0x5a; 32]);
    let (sig, hash, _) = sign(json!({"op": "sign_hash", "key": owner.private_key, "hash": digest}));
    assert_eq!(hash, digest);
    assert_eq!(
        is_valid_signature(&chain, wallet, &digest, &sig).await,
        MAGIC_1271
    );
    let typed = json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "SignIn": [
                {"name": "wallet", "type": "address"},
                {"name": "nonce", "type": "string"},
            ],
        },
        "primaryType": "SignIn",
        "domain": {"name": "StreamGate", "version": "1", "chainId": d.chain_id, "verifyingContract": wallet},
        "message": {"wallet": wallet, "nonce": "8d1f2a3b4c5d6e7f"},
    });
    let (sig, hash, _) =
        sign(json!({"op": "typed_data", "key": owner.private_key, "typed_data": typed}));
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &sig).await,
        MAGIC_1271
    );
    let (bad_sig, _, _) =
        sign(json!({"op": "typed_data", "key": other.private_key, "typed_data": typed}));
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &bad_sig).await,
        [0xff; 4]
    );

    // Malformed signatures are answered, not reverted.
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &sig[..sig.len() - 2]).await,
        [0xff; 4]
    );
    assert_eq!(
        is_valid_signature(&chain, wallet, &hash, &hex(&[0; 65])).await,
        [0xff; 4]
    );
}

#[tokio::test]
#[should_panic(expected = "run ./scripts/setup.sh")]
async fn start_chain_without_setup_fails_loudly() {
    let empty = tempfile::tempdir().unwrap();
    start_chain_in(empty.path()).await;
}

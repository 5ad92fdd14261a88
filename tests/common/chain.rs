//! The local EVM chain for the Web3-gating tests: a real `hardhat node` from the Node
//! cache that `scripts/setup-chain.sh` fills, and `tests/chain/fixture.mjs` (ethers v6 and
//! solc-js) to deploy the contracts compiled from `tests/chain/contracts` and to mint and
//! move tokens. Missing tooling fails the test with a message naming `scripts/setup.sh`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Proc, free_port};

/// How long a cold `hardhat node` may take to answer `eth_chainId` (it takes about 2 s).
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/setup-chain.sh` installs the fixture's Node packages.
pub fn node_dir() -> PathBuf {
    std::env::var_os("STREAMGATE_NODE_DIR").map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-node"),
        PathBuf::from,
    )
}

/// Panics with the fix when node is missing or the cached packages do not match the
/// committed lock file and hardhat config (setup copies both next to `node_modules`).
fn check_tooling(dir: &Path) {
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(node, "node is not installed: run ./scripts/setup.sh");
    let same = |name: &str| {
        let want = std::fs::read(repo().join("tests/chain").join(name)).unwrap();
        std::fs::read(dir.join(name)).is_ok_and(|have| have == want)
    };
    assert!(
        dir.join(".streamgate-stamp").is_file()
            && dir
                .join("node_modules/hardhat/internal/cli/cli.js")
                .is_file()
            && same("package-lock.json")
            && same("hardhat.config.cjs"),
        "the chain fixture's Node packages in {} are missing or out of date: run ./scripts/setup.sh",
        dir.display()
    );
}

/// A running `hardhat node` on a free loopback port; killed when dropped.
pub struct Chain {
    /// The JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub url: String,
    /// What the node answered to `eth_chainId` (31337).
    pub chain_id: u64,
    /// The node's stdout and stderr (it logs every RPC method), quoted when something fails.
    pub log: PathBuf,
    /// How long the node took from spawn to its first `eth_chainId` answer.
    pub started_in: Duration,
    http: reqwest::Client,
    proc: Proc,
    _tmp: tempfile::TempDir,
}

/// Starts a chain with the packages from [`node_dir`].
pub async fn start_chain() -> Chain {
    start_chain_in(&node_dir()).await
}

/// Starts a chain with the packages installed in `dir`.
pub async fn start_chain_in(dir: &Path) -> Chain {
    check_tooling(dir);
    let http = reqwest::Client::new();
    // The port is free when picked but may be taken before the node binds it: try again.
    for _ in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("hardhat.log");
        let out = std::fs::File::create(&log).unwrap();
        let port = free_port();
        let t0 = Instant::now();
        let child = std::process::Command::new("node")
            .arg(dir.join("node_modules/hardhat/internal/cli/cli.js"))
            .args([
                "node",
                "--hostname",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .current_dir(dir)
            .env("HARDHAT_DISABLE_TELEMETRY_PROMPT", "true")
            .env("DO_NOT_TRACK", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawn node");
        let mut proc = Proc(child);
        let url = format!("http://127.0.0.1:{port}");
        loop {
            if let Some(status) = proc.0.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("EADDRINUSE") {
                    break;
                }
                panic!("hardhat node exited with {status} before answering:\n{text}");
            }
            if let Ok(v) = call(&http, &url, "eth_chainId", json!([])).await {
                let chain_id =
                    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
                return Chain {
                    url,
                    chain_id,
                    log,
                    started_in: t0.elapsed(),
                    http,
                    proc,
                    _tmp: tmp,
                };
            }
            assert!(
                t0.elapsed() < START_TIMEOUT,
                "hardhat node did not answer eth_chainId within {START_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("hardhat node found its port taken three times");
}

/// One JSON-RPC call: the `result`, or the error object (or transport error) as text.
async fn call(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> Result<Value, String> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    match v.get("result") {
        Some(r) if v.get("error").is_none() => Ok(r.clone()),
        _ => Err(v.to_string()),
    }
}

impl Chain {
    /// A JSON-RPC call that must succeed; returns its `result`.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        match call(&self.http, &self.url, method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method} failed: {e}"),
        }
    }

    /// A JSON-RPC call that may fail (a reverting `eth_call`, say).
    pub async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        call(&self.http, &self.url, method, params).await
    }

    /// Runs `fixture.mjs CMD --rpc URL ARGS...` and parses the JSON it prints.
    pub async fn fixture(&self, cmd: &str, args: &[&str]) -> Value {
        let mut all = vec![cmd, "--rpc", &self.url];
        all.extend_from_slice(args);
        fixture(&all).await
    }

    /// Deploys the four test contracts from account #0.
    pub async fn deploy(&self) -> Deployment {
        Deployment::from_json(&self.fixture("deploy", &[]).await)
    }

    /// The node's log so far, for assertion messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Runs `node tests/chain/fixture.mjs ARGS...` and parses the one JSON document it prints.
pub async fn fixture(args: &[&str]) -> Value {
    let out = fixture_output(args).await;
    assert!(
        out.status.success(),
        "fixture.mjs {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "fixture.mjs {} printed no JSON ({e}): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `fixture.mjs` and returns its raw output, for tests of its failures.
pub async fn fixture_output(args: &[&str]) -> std::process::Output {
    tokio::process::Command::new("node")
        .arg(repo().join("tests/chain/fixture.mjs"))
        .args(args)
        .env("STREAMGATE_NODE_DIR", node_dir())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("node is not installed: run ./scripts/setup.sh")
}

/// One of the node's funded accounts (hardhat's well-known mnemonic).
#[derive(Clone, Debug)]
pub struct Account {
    /// EIP-55 checksummed.
    pub address: String,
    /// 0x-hex secp256k1 key.
    pub private_key: String,
}

/// What `fixture.mjs deploy` printed.
#[derive(Clone, Debug)]
pub struct Deployment {
    pub chain_id: u64,
    pub erc721: String,
    pub erc1155: String,
    /// An ERC-1271 wallet owned by `accounts[1]`.
    pub wallet1271: String,
    pub multicall3: String,
    /// Ten accounts; `accounts[0]` deployed everything and is the only minter.
    pub accounts: Vec<Account>,
}

impl Deployment {
    fn from_json(v: &Value) -> Self {
        let s = |v: &Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string: {v}"))
                .to_owned()
        };
        let c = &v["contracts"];
        Self {
            chain_id: v["chain_id"].as_u64().unwrap(),
            erc721: s(&c["erc721"]),
            erc1155: s(&c["erc1155"]),
            wallet1271: s(&c["wallet1271"]),
            multicall3: s(&c["multicall3"]),
            accounts: v["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| Account {
                    address: s(&a["address"]),
                    private_key: s(&a["private_key"]),
                })
                .collect(),
        }
    }
}

#!/usr/bin/env node
// The local EVM chain fixture for StreamGate's Web3-gating tests: compiles the contracts in
// ./contracts with solc-js (the compiler bundled in the `solc` npm package, nothing is
// downloaded), deploys them to a running `hardhat node`, and mints and moves tokens with
// ethers v6. Every command prints one JSON document on stdout; errors go to stderr, exit 1.
//
//   compile
//   deploy       --rpc URL
//   mint721      --rpc URL --contract A --to ADDR --id N [--from-key K]
//   transfer721  --rpc URL --contract A --from-key K --to ADDR --id N
//   mint1155     --rpc URL --contract A --to ADDR --id N --amount M [--from-key K]
//   transfer1155 --rpc URL --contract A --from-key K --to ADDR --id N --amount M
//   batch1155    --rpc URL --contract A --from-key K --to ADDR --ids N,N --amounts M,M
//   mine         --rpc URL --blocks N
//   block        --rpc URL
//
// The Node packages come from the cache that scripts/setup-chain.sh fills:
// $STREAMGATE_NODE_DIR (default ~/.cache/streamgate-node).

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const CONTRACTS = join(HERE, "contracts");
const BUILD = join(HERE, "build");
const NODE_DIR = process.env.STREAMGATE_NODE_DIR || join(homedir(), ".cache", "streamgate-node");
const MNEMONIC = "test test test test test test test test test test test junk";
const ACCOUNTS = 10;
// Bytecode that runs on every chain from Cancun on, whatever hardfork the node runs.
const SOLC_SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

class UsageError extends Error {}

let nodeRequire;
let ethers;

// Loaded in main(), so that missing packages are reported like any other error.
function loadPackages() {
  const modules = join(NODE_DIR, "node_modules");
  if (!existsSync(join(modules, "ethers")) || !existsSync(join(modules, "solc"))) {
    throw new UsageError(`the chain fixture's Node packages are missing from ${modules}: run ./scripts/setup.sh`);
  }
  nodeRequire = createRequire(join(NODE_DIR, "package.json"));
  ({ ethers } = nodeRequire("ethers"));
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith("--") || i + 1 >= argv.length) throw new UsageError(`expected --name value, got ${argv.slice(i).join(" ")}`);
    opts[k.slice(2)] = argv[i + 1];
  }
  return opts;
}

function need(opts, name) {
  if (opts[name] === undefined) throw new UsageError(`--${name} is required`);
  return opts[name];
}

function address(opts, name) {
  const v = need(opts, name);
  if (!ethers.isAddress(v)) throw new UsageError(`--${name}: not an address: ${v}`);
  return ethers.getAddress(v);
}

function uint(opts, name) {
  const v = need(opts, name);
  if (!/^(0x[0-9a-fA-F]+|[0-9]+)$/.test(v)) throw new UsageError(`--${name}: not an unsigned integer: ${v}`);
  return BigInt(v);
}

// --- compile -------------------------------------------------------------------------------

function sources() {
  const out = {};
  for (const f of readdirSync(CONTRACTS).filter((f) => f.endsWith(".sol")).sort()) {
    out[f] = { content: readFileSync(join(CONTRACTS, f), "utf8") };
  }
  return out;
}

// The cache key covers everything the bytecode depends on: our sources, the compiler,
// OpenZeppelin's version and the settings.
function buildKey(srcs) {
  const h = createHash("sha256");
  const pkg = (name) => JSON.parse(readFileSync(nodeRequire.resolve(`${name}/package.json`), "utf8")).version;
  h.update(JSON.stringify({ solc: pkg("solc"), oz: pkg("@openzeppelin/contracts"), settings: SOLC_SETTINGS }));
  for (const [f, { content }] of Object.entries(srcs)) h.update(`\0${f}\0${content}`);
  return h.digest("hex").slice(0, 16);
}

let lastArtifacts;

function compile() {
  lastArtifacts = compileCached();
  return lastArtifacts;
}

function compileCached() {
  const srcs = sources();
  const key = buildKey(srcs);
  const path = join(BUILD, `contracts-${key}.json`);
  if (existsSync(path)) return { ...JSON.parse(readFileSync(path, "utf8")), cached: true, path };

  const solc = nodeRequire("solc");
  const modules = join(NODE_DIR, "node_modules");
  const findImports = (p) => {
    const file = join(modules, p);
    if (!p.startsWith("@openzeppelin/") || !existsSync(file)) return { error: `import not found: ${p}` };
    return { contents: readFileSync(file, "utf8") };
  };
  const input = { language: "Solidity", sources: srcs, settings: SOLC_SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
  for (const w of (output.errors || []).filter((e) => e.severity !== "error")) process.stderr.write(w.formattedMessage);
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  if (errors.length > 0) throw new Error(`solc failed:\n${errors.map((e) => e.formattedMessage).join("\n")}`);

  const contracts = {};
  for (const [file, byName] of Object.entries(output.contracts)) {
    if (!srcs[file]) continue; // OpenZeppelin's own units
    for (const [name, c] of Object.entries(byName)) {
      contracts[name] = { abi: c.abi, bytecode: `0x${c.evm.bytecode.object}`, deployed: `0x${c.evm.deployedBytecode.object}` };
    }
  }
  const artifact = { key, solc: solc.version(), contracts };
  mkdirSync(BUILD, { recursive: true });
  // Written whole then renamed, so tests that compile concurrently never read half a file.
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(artifact));
  renameSync(tmp, path);
  // Outputs of older sources are never read again.
  for (const f of readdirSync(BUILD)) {
    if (/^contracts-[0-9a-f]+\.json$/.test(f) && f !== `contracts-${key}.json`) rmSync(join(BUILD, f), { force: true });
  }
  return { ...artifact, cached: false, path };
}

// --- chain ---------------------------------------------------------------------------------

// Fails fast when nothing listens (ethers' provider would retry forever), and learns the
// chain id so that the provider never probes the network again.
async function connect(opts) {
  const url = need(opts, "rpc");
  let res;
  try {
    res = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "eth_chainId", params: [] }),
      signal: AbortSignal.timeout(10_000),
    });
  } catch (e) {
    throw new Error(`no JSON-RPC server at ${url}: ${e.cause?.message ?? e.message}`);
  }
  const body = await res.json();
  if (!body.result) throw new Error(`eth_chainId at ${url} failed: ${JSON.stringify(body)}`);
  const chainId = BigInt(body.result);
  const provider = new ethers.JsonRpcProvider(url, chainId, { staticNetwork: ethers.Network.from(chainId), batchMaxCount: 1 });
  return { provider, chainId };
}

function accounts() {
  const out = [];
  for (let i = 0; i < ACCOUNTS; i++) {
    const w = ethers.HDNodeWallet.fromPhrase(MNEMONIC, undefined, `m/44'/60'/0'/0/${i}`);
    out.push({ address: w.address, private_key: w.privateKey });
  }
  return out;
}

function signer(provider, opts, name, fallback) {
  const key = opts[name] ?? fallback;
  if (key === undefined) throw new UsageError(`--${name} is required`);
  try {
    return new ethers.Wallet(key, provider);
  } catch {
    throw new UsageError(`--${name}: not a private key`);
  }
}

// Automine puts every transaction in a block before eth_sendRawTransaction returns, so the
// receipt is there at once; polling briefly covers a node started with interval mining.
async function mined(provider, tx) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await provider.getTransactionReceipt(tx.hash);
    if (r) {
      if (r.status !== 1) throw new Error(`transaction ${tx.hash} reverted in block ${r.blockNumber}`);
      return r;
    }
    if (Date.now() > deadline) throw new Error(`transaction ${tx.hash} not mined after 30 s`);
    await new Promise((ok) => setTimeout(ok, 25));
  }
}

async function send(provider, txPromise) {
  const tx = await txPromise;
  const r = await mined(provider, tx);
  return { tx: tx.hash, block: r.blockNumber };
}

function contract(artifacts, name, opts, runner) {
  return new ethers.Contract(address(opts, "contract"), artifacts.contracts[name].abi, runner);
}

async function deploy(opts) {
  const artifacts = compile();
  const { provider, chainId } = await connect(opts);
  const accts = accounts();
  const onNode = (await provider.send("eth_accounts", [])).map((a) => ethers.getAddress(a));
  for (let i = 0; i < ACCOUNTS; i++) {
    if (onNode[i] !== accts[i].address) {
      throw new Error(`account #${i} of the node is ${onNode[i]}, not ${accts[i].address}: is it a hardhat node with the default mnemonic?`);
    }
  }
  const deployer = new ethers.NonceManager(new ethers.Wallet(accts[0].private_key, provider));
  const out = {};
  const plan = [
    ["erc721", "TestERC721", []],
    ["erc1155", "TestERC1155", []],
    ["wallet1271", "Wallet1271", [accts[1].address]],
    ["multicall3", "Multicall3", []],
  ];
  for (const [key, name, args] of plan) {
    const c = artifacts.contracts[name];
    const factory = new ethers.ContractFactory(c.abi, c.bytecode, deployer);
    const deployed = await factory.deploy(...args);
    const r = await mined(provider, deployed.deploymentTransaction());
    out[key] = ethers.getAddress(r.contractAddress);
  }
  return { chain_id: Number(chainId), contracts: out, accounts: accts };
}

async function mint721(opts) {
  const artifacts = compile();
  const { provider } = await connect(opts);
  const from = signer(provider, opts, "from-key", accounts()[0].private_key);
  const c = contract(artifacts, "TestERC721", opts, from);
  return send(provider, c.mint(address(opts, "to"), uint(opts, "id")));
}

async function transfer721(opts) {
  const artifacts = compile();
  const { provider } = await connect(opts);
  const from = signer(provider, opts, "from-key");
  const c = contract(artifacts, "TestERC721", opts, from);
  return send(provider, c["safeTransferFrom(address,address,uint256)"](from.address, address(opts, "to"), uint(opts, "id")));
}

async function mint1155(opts) {
  const artifacts = compile();
  const { provider } = await connect(opts);
  const from = signer(provider, opts, "from-key", accounts()[0].private_key);
  const c = contract(artifacts, "TestERC1155", opts, from);
  return send(provider, c.mint(address(opts, "to"), uint(opts, "id"), uint(opts, "amount")));
}

async function transfer1155(opts) {
  const artifacts = compile();
  const { provider } = await connect(opts);
  const from = signer(provider, opts, "from-key");
  const c = contract(artifacts, "TestERC1155", opts, from);
  return send(provider, c.safeTransferFrom(from.address, address(opts, "to"), uint(opts, "id"), uint(opts, "amount"), "0x"));
}

// safeBatchTransferFrom: one TransferBatch log for several ids.
async function batch1155(opts) {
  const artifacts = compile();
  const { provider } = await connect(opts);
  const from = signer(provider, opts, "from-key");
  const c = contract(artifacts, "TestERC1155", opts, from);
  const list = (name) => need(opts, name).split(",").map((v) => uint({ [name]: v }, name));
  const ids = list("ids");
  const amounts = list("amounts");
  if (ids.length !== amounts.length) throw new UsageError("--ids and --amounts must be as long");
  return send(provider, c.safeBatchTransferFrom(from.address, address(opts, "to"), ids, amounts, "0x"));
}

async function mine(opts) {
  const { provider } = await connect(opts);
  const blocks = uint(opts, "blocks");
  if (blocks < 1n) throw new UsageError("--blocks must be at least 1");
  await provider.send("hardhat_mine", [ethers.toQuantity(blocks)]);
  return { block: await provider.getBlockNumber() };
}

async function block(opts) {
  const { provider } = await connect(opts);
  return { block: await provider.getBlockNumber() };
}

const COMMANDS = {
  compile: async () => {
    const a = compile();
    return { key: a.key, solc: a.solc, cached: a.cached, path: a.path, contracts: Object.keys(a.contracts).sort() };
  },
  deploy,
  mint721,
  transfer721,
  mint1155,
  transfer1155,
  batch1155,
  mine,
  block,
};

async function main() {
  const [cmd, ...rest] = process.argv.slice(2);
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`usage: fixture.mjs ${Object.keys(COMMANDS).join("|")} [--name value ...]`);
  loadPackages();
  const out = await run(parseArgs(rest));
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// Names a custom-error revert (NotMinter, ERC721InsufficientApproval, ...) from the ABIs.
function describe(e) {
  if (e instanceof UsageError) return e.message;
  const msg = e.shortMessage ?? e.message;
  if (typeof e.data !== "string" || !e.data.startsWith("0x") || !ethers) return msg;
  for (const c of Object.values(lastArtifacts?.contracts ?? {})) {
    let err = null;
    try {
      err = new ethers.Interface(c.abi).parseError(e.data);
    } catch {
      // Data that starts like this error but does not decode: try the next ABI.
    }
    if (err) return `execution reverted: ${err.name}(${err.args.map(String).join(", ")})`;
  }
  return msg;
}

main().catch((e) => {
  process.stderr.write(`fixture.mjs: ${describe(e)}\n`);
  if (!(e instanceof UsageError) && process.env.FIXTURE_DEBUG) process.stderr.write(`${e.stack}\n`);
  process.exit(1);
});

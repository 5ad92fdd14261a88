//! StreamGate's Web3 side: who holds what, and who signed in.
//!
//! The edge's gate asks two things of chains: whether a signed-in wallet holds an NFT
//! (`nft` policy conditions), and whether a contract wallet accepts a sign-in signature
//! (ERC-1271). This crate answers both, behind the evaluator's [`streamgate_policy::NftOracle`]
//! seam, and parses and checks the sign-in messages themselves:
//!
//! - [`config`]: the chain registry (`[edge.chains."<CAIP-2 id>"]`), read with every error
//!   and its path.
//! - [`rpc`]: a JSON-RPC client over a chain's endpoints (priority, weight, circuit
//!   breakers, hedging, failover), whose errors are typed and classified by JSON-RPC code.
//! - [`Chains`] (in `ownership`): the ownership cache with coalesced lookups, answered by
//!   [`evm`] (ERC-721/1155 through Multicall3) and [`solana`] (Metaplex), and revoked by
//!   the Transfer-log [`index`]er.
//! - [`siwe`]: EIP-4361 sign-in messages (and the Solana shape); [`wallet`]: EIP-191,
//!   EIP-712 and ed25519 signature checks.
//!
//! Nothing here knows HTTP: the edge keeps the sign-in endpoints and the gate.
#![forbid(unsafe_code)]

pub mod config;
pub mod evm;
pub mod index;
mod ownership;
pub mod rpc;
pub mod siwe;
pub mod solana;
pub mod wallet;

pub use config::ChainConfig;
pub use ownership::{Answers, Chain, Chains, Key, Oracle};
pub use rpc::{Rpc, RpcError};

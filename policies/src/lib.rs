//! StreamGate's policy language.
//!
//! A policy says who may watch the assets bound to it. Operators write it as YAML or JSON
//! (`streamgate ctl policy apply -f`); [`Policy::parse`] validates it and reports every
//! problem with its field path; the edge evaluates the compiled [`Policy`] on every request
//! with [`Policy::evaluate`], a pure function: request [`Facts`] in, a [`Decision`] with a
//! machine-readable [`Reason`] out. Nothing here does I/O or reads the clock.
#![forbid(unsafe_code)]

pub mod address;
mod eval;
mod key;
pub mod limits;
mod model;
mod parse;

pub use eval::{Decision, Facts, Reason, TokenFacts, session_wallet};
pub use key::{Alg, KeyDoc, KeyMaterial};
pub use model::{
    Claims, Condition, FailMode, Holding, IpCondition, JwtCondition, NftCondition, NftOracle,
    NftStandard, NftTarget, OriginCondition, Policy, PolicyId, Rule, TimeWindow, TokenId,
    WALLET_ISSUER, WalletCondition,
};
pub use parse::{
    MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_TOKEN_IDS, PolicyError, PolicyErrors, parse_rate_class,
    parse_token_id, token_id_text,
};

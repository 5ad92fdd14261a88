//! Wallet sign-in at the edge: `POST /auth/challenge` and `POST /auth/verify`.
//!
//! 1. Challenge: `{"address", "chain"}` → a sign-in message (EIP-4361 for `eip155:*`, the
//!    same shape for `solana:*`) with a nonce, and its expiry.
//! 2. The wallet signs the message: EIP-191 `personal_sign` (secp256k1) on EVM chains, or
//!    the same fields as EIP-712 typed data (`typed_data` in the challenge, then
//!    `"signature_type": "eip712"`), or ed25519 `signMessage` on Solana.
//! 3. Verify: `{"message", "signature"}` → a session token: a short-lived EdDSA JWT whose
//!    subject and `sg_wallet` claim are the CAIP-10 account, signed with the session key
//!    that every edge holds, so any edge accepts it. Policies test it with `wallet`.
//!
//! Nonces are stateless: `issued-at ‖ random ‖ HMAC(key, issued-at ‖ random ‖ account)`,
//! so any edge can check them without shared state. Each is accepted once across the
//! fleet: the first verify records it at `nonces/<nonce>` in the state store with a
//! create-if-absent transaction under a lease that outlives the nonce ([`ledger`]), one
//! write per sign-in; a second verify anywhere finds it and is refused. An edge without a
//! state store (a snapshot file, or an open edge) remembers used nonces itself. The HMAC
//! key is derived from the session key.

mod ledger;
pub(crate) mod session;

pub(crate) use session::session_token;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};
use streamgate_policy::address::{Account, ChainId, Namespace};
use streamgate_policy::{KeyDoc, WALLET_ISSUER};

use streamgate_web3::{Chains, siwe, wallet};

use crate::config::AuthConfig;
use crate::error::{ClientError, EdgeError, Internal, Refusal};
use crate::gate::jwt::VerifyingKey;
use crate::request::SignIn;

/// Request bodies larger than this are refused (413).
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;

/// Allowed clock skew on a message's `Issued At`.
const SKEW: Duration = Duration::from_secs(60);

/// The sign-in service of one edge.
pub struct Auth {
    cfg: AuthConfig,
    key: Ed25519KeyPair,
    nonce_key: ring::hmac::Key,
    used: moka::sync::Cache<String, ()>,
    ledger: ledger::Ledger,
    chains: Option<Arc<Chains>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("domain", &self.cfg.domain)
            .finish_non_exhaustive()
    }
}

/// Why sign-in could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("edge.auth.session_key {path}: {message}")]
pub struct AuthSetupError {
    path: String,
    message: String,
}

/// A malformed sign-in request (400), with its reason and a sentence for people.
fn bad(reason: &'static str, msg: impl std::fmt::Display) -> EdgeError {
    EdgeError::Client(ClientError::SignIn(reason, msg.to_string()))
}

/// A well-formed sign-in that is refused (401).
fn denied(reason: &'static str, msg: impl std::fmt::Display) -> EdgeError {
    EdgeError::Gate(Refusal::SignIn(reason, msg.to_string()))
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

impl Auth {
    /// Loads the session key (PKCS#8 Ed25519, PEM or DER) named by `cfg`.
    pub fn new(cfg: AuthConfig) -> Result<Self, AuthSetupError> {
        let fail = |message: String| AuthSetupError {
            path: cfg.session_key.display().to_string(),
            message,
        };
        let bytes = std::fs::read(&cfg.session_key).map_err(|e| fail(e.to_string()))?;
        let der = match rustls_pemfile::private_key(&mut bytes.as_slice()) {
            Ok(Some(k)) => k.secret_der().to_vec(),
            _ => bytes,
        };
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| fail("not a PKCS#8 Ed25519 private key".into()))?;
        let nonce_key = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            ring::digest::digest(
                &ring::digest::SHA256,
                &[b"streamgate wallet nonce\0".as_slice(), &der].concat(),
            )
            .as_ref(),
        );
        let used = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(cfg.nonce_ttl + SKEW)
            .build();
        let ledger = ledger::Ledger::new(cfg.nonce_ttl + SKEW);
        Ok(Self {
            cfg,
            key,
            nonce_key,
            used,
            ledger,
            chains: None,
        })
    }

    /// Records used nonces in `store` from now on, so each is usable once across every
    /// edge that shares it (the edge's watcher hands over its store when it connects).
    pub fn use_store(&self, store: Arc<dyn streamgate_store::Store>) {
        self.ledger.set_store(store);
    }

    /// Checks ERC-1271 contract-wallet signatures on the chains these clients reach.
    pub fn set_chains(&mut self, chains: Arc<Chains>) {
        self.chains = Some(chains);
    }

    /// The key that verifies session tokens, with its `kid`, for the gate.
    pub fn verifying_key(&self) -> (String, VerifyingKey) {
        let x = URL_SAFE_NO_PAD.encode(self.key.public_key().as_ref());
        let doc = KeyDoc::from_value(&json!({
            "kid": self.cfg.session_kid, "alg": "EdDSA", "crv": "Ed25519", "x": x,
            "issuer": WALLET_ISSUER,
        }))
        .expect("a generated Ed25519 key entry is valid");
        let key = VerifyingKey::new(&doc).expect("no secret to resolve");
        (self.cfg.session_kid.clone(), key)
    }

    /// Answers `POST /auth/challenge` or `POST /auth/verify` with the JSON document to send.
    pub(crate) async fn serve(
        &self,
        endpoint: SignIn,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Value, EdgeError> {
        match endpoint {
            SignIn::Challenge => self.challenge(body, now),
            SignIn::Verify => self.verify(body, now).await,
        }
    }

    fn chain(&self, chain: &str) -> Result<ChainId, EdgeError> {
        let c = ChainId::parse(chain).map_err(|e| bad("bad_chain", e))?;
        if !self.cfg.chains.iter().any(|a| a == &c) {
            return Err(bad(
                "unsupported_chain",
                format!("{chain} is not one of this edge's chains"),
            ));
        }
        Ok(c)
    }

    fn nonce_mac(&self, head: &[u8; 16], account: &str) -> [u8; 16] {
        let tag = ring::hmac::sign(
            &self.nonce_key,
            &[head.as_slice(), account.as_bytes()].concat(),
        );
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        out
    }

    fn make_nonce(&self, account: &str, now: SystemTime) -> String {
        let mut head = [0u8; 16];
        head[..8].copy_from_slice(&unix(now).to_be_bytes());
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut head[8..]);
        let mac = self.nonce_mac(&head, account);
        head.iter()
            .chain(mac.iter())
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Checks that `nonce` was made by an edge with this key for `account`, recently.
    fn check_nonce(&self, nonce: &str, account: &str, now: SystemTime) -> Result<(), EdgeError> {
        let raw: Option<Vec<u8>> = (nonce.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(&nonce[2 * i..2 * i + 2], 16).ok())
                    .collect()
            })
            .flatten();
        let raw =
            raw.ok_or_else(|| denied("bad_nonce", "the nonce was not issued by this service"))?;
        let head: [u8; 16] = raw[..16].try_into().expect("16 bytes");
        let mac = self.nonce_mac(&head, account);
        // Compared without an early exit, so timing says nothing about the tag.
        let diff = mac
            .iter()
            .zip(&raw[16..])
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff != 0 {
            return Err(denied(
                "bad_nonce",
                "the nonce was not issued by this service for this account",
            ));
        }
        let issued = UNIX_EPOCH
            + Duration::from_secs(u64::from_be_bytes(head[..8].try_into().expect("8 bytes")));
        if now > issued + self.cfg.nonce_ttl || issued > now + SKEW {
            return Err(denied(
                "nonce_expired",
                "the nonce has expired; ask for a new challenge",
            ));
        }
        Ok(())
    }

    fn challenge(&self, body: &[u8], now: SystemTime) -> Result<Value, EdgeError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| bad("malformed_request", format!("not JSON: {e}")))?;
        let (Some(address), Some(chain)) = (req["address"].as_str(), req["chain"].as_str()) else {
            return Err(bad(
                "malformed_request",
                "needs \"address\" and \"chain\" strings",
            ));
        };
        let chain = self.chain(chain)?;
        let account =
            Account::parse(&format!("{chain}:{address}")).map_err(|e| bad("bad_address", e))?;
        let nonce = self.make_nonce(&account.to_string(), now);
        let expires = now + self.cfg.nonce_ttl;
        let message = siwe::Message {
            domain: self.cfg.domain.clone(),
            account_kind: match chain.namespace {
                Namespace::Eip155 => "Ethereum",
                Namespace::Solana => "Solana",
            },
            address: account.address.clone(),
            statement: Some(self.cfg.statement.clone()),
            uri: self.cfg.uri.clone(),
            version: "1".into(),
            chain_id: chain.reference.clone(),
            nonce: nonce.clone(),
            issued_at: rfc3339(now),
            expiration_time: Some(rfc3339(expires)),
            not_before: None,
            request_id: None,
            resources: Vec::new(),
        };
        let mut out =
            json!({"message": message.to_text(), "nonce": nonce, "expires_at": rfc3339(expires)});
        if let (Some(chain_id), Ok(wallet)) = (
            chain.evm_id(),
            streamgate_policy::address::parse_evm(&account.address),
        ) {
            // The same sign-in as EIP-712 typed data, for wallets that sign that instead.
            out["typed_data"] = wallet::TypedSignIn {
                chain_id,
                message: &message,
                wallet,
            }
            .to_json();
        }
        Ok(out)
    }

    async fn verify(&self, body: &[u8], now: SystemTime) -> Result<Value, EdgeError> {
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| bad("malformed_request", format!("not JSON: {e}")))?;
        let (Some(text), Some(signature)) = (req["message"].as_str(), req["signature"].as_str())
        else {
            return Err(bad(
                "malformed_request",
                "needs \"message\" and \"signature\" strings",
            ));
        };
        let m = siwe::Message::parse(text).map_err(|e| bad("malformed_message", e))?;
        let ns = if m.account_kind == "Solana" {
            "solana"
        } else {
            "eip155"
        };
        let chain = self.chain(&format!("{ns}:{}", m.chain_id))?;
        let account =
            Account::parse(&format!("{chain}:{}", m.address)).map_err(|e| bad("bad_address", e))?;
        if m.address != account.address {
            return Err(bad(
                "bad_address",
                "the address must be in its canonical (EIP-55) form",
            ));
        }
        if m.domain != self.cfg.domain {
            return Err(denied(
                "wrong_domain",
                format!(
                    "the message is for {:?}, this is {:?}",
                    m.domain, self.cfg.domain
                ),
            ));
        }
        if m.uri != self.cfg.uri {
            return Err(denied(
                "wrong_uri",
                format!("the message is for {:?}", m.uri),
            ));
        }
        if siwe::time(&m.issued_at) > now + SKEW {
            return Err(denied("not_yet_valid", "Issued At is in the future"));
        }
        if let Some(t) = &m.expiration_time
            && siwe::time(t) <= now
        {
            return Err(denied("message_expired", "the message has expired"));
        }
        if let Some(t) = &m.not_before
            && siwe::time(t) > now + SKEW
        {
            return Err(denied("not_yet_valid", "Not Before is in the future"));
        }
        self.check_nonce(&m.nonce, &account.to_string(), now)?;
        let typed = match req["signature_type"].as_str() {
            None | Some("personal_sign") => false,
            Some("eip712") => true,
            Some(other) => {
                return Err(bad(
                    "malformed_request",
                    format!("signature_type {other:?}: personal_sign or eip712"),
                ));
            }
        };
        let ok = match chain.namespace {
            Namespace::Eip155 => {
                let wallet = streamgate_policy::address::parse_evm(&account.address)
                    .map_err(|e| bad("bad_address", e))?;
                let digest = if typed {
                    wallet::TypedSignIn {
                        chain_id: chain.evm_id().unwrap_or(0),
                        message: &m,
                        wallet,
                    }
                    .digest()
                } else {
                    wallet::personal_sign_hash(text.as_bytes())
                };
                self.evm_signature_ok(&chain, wallet, &account.address, digest, signature)
                    .await?
            }
            Namespace::Solana => {
                wallet::solana_verify(&account.address, text.as_bytes(), signature)
                    .map_err(|e| bad("malformed_signature", e))?
            }
        };
        if !ok {
            return Err(denied(
                "bad_signature",
                "the signature is not the account's",
            ));
        }
        // Single use: the first verify wins, on this edge and then across the fleet.
        let mut fresh = false;
        self.used.entry(m.nonce.clone()).or_insert_with(|| {
            fresh = true;
        });
        if !fresh {
            return Err(denied("nonce_replayed", "this sign-in was already used"));
        }
        match self.ledger.record(&m.nonce).await {
            Ok(true) => {}
            Ok(false) => return Err(denied("nonce_replayed", "this sign-in was already used")),
            Err(e) => {
                // Unrecorded, the nonce could be replayed elsewhere: refuse, and let the
                // viewer retry once the store is back.
                self.used.invalidate(&m.nonce);
                tracing::warn!(error = %e, "cannot record a sign-in nonce");
                return Err(EdgeError::Internal(Internal::StateUnavailable));
            }
        }
        let expires = now + self.cfg.session_ttl;
        let token = session_token(
            &self.key,
            &self.cfg.session_kid,
            &account.to_string(),
            now,
            expires,
        );
        Ok(json!({"token": token, "expires_at": rfc3339(expires), "account": account.to_string()}))
    }

    /// An EOA's signature recovers to the address. Otherwise, where this edge reaches the
    /// chain, the address may be a contract wallet: ERC-1271 `isValidSignature(digest,
    /// signature)` through `eth_call` decides (any signature length up to the limit).
    async fn evm_signature_ok(
        &self,
        chain: &ChainId,
        wallet: [u8; 20],
        address: &str,
        digest: [u8; 32],
        signature: &str,
    ) -> Result<bool, EdgeError> {
        let recovered = wallet::evm_signer_of_digest(&digest, signature);
        if recovered.as_deref() == Ok(address) {
            return Ok(true);
        }
        let Some(rpc) = self
            .chains
            .as_ref()
            .and_then(|c| c.get(chain))
            .map(|c| &c.rpc)
        else {
            return match recovered {
                Ok(_) => Ok(false),
                Err(e) => Err(bad("malformed_signature", e)),
            };
        };
        let raw = wallet::signature_bytes(signature).map_err(|e| bad("malformed_signature", e))?;
        streamgate_web3::evm::is_valid_signature(rpc, wallet, digest, &raw)
            .await
            .map_err(|why| {
                tracing::warn!(chain = %chain, error = %why, "ERC-1271 check failed: no RPC endpoint answered");
                EdgeError::Chain
            })
    }
}

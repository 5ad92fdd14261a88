//! Signature checks for wallet sign-in: EIP-191 `personal_sign` recovered with secp256k1
//! (`k256`), and Solana's ed25519 `signMessage` (`ring`).

use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
use streamgate_policy::address::{eip55, keccak256, parse_solana};

/// The EIP-191 hash a wallet signs for `personal_sign(message)`.
pub fn personal_sign_hash(message: &[u8]) -> [u8; 32] {
    let prefix = format!("\x19Ethereum Signed Message:\n{}", message.len());
    keccak256(&[prefix.as_bytes(), message].concat())
}

/// The EIP-55 address of the key that made `signature` (`0x` + 130 hex digits: r ‖ s ‖ v,
/// v 27/28 or 0/1) over `personal_sign(message)`.
pub fn evm_personal_sign_signer(message: &[u8], signature: &str) -> Result<String, SignatureError> {
    evm_signer_of_digest(&personal_sign_hash(message), signature)
}

/// The longest signature accepted (ERC-1271 wallets such as multisigs sign with several
/// keys): 2 KiB.
pub const MAX_SIGNATURE_BYTES: usize = 2048;

/// Why a signature could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Not `0x` and an even number of hex digits.
    #[error("an EVM signature is 0x and an even number of hex digits")]
    NotHex,
    /// Over [`MAX_SIGNATURE_BYTES`].
    #[error("the signature is {0} bytes; at most {MAX_SIGNATURE_BYTES} are accepted")]
    TooLong(usize),
    /// An EOA signature that is not 65 bytes.
    #[error("an EVM signature is 0x and 130 hex digits (r, s, v)")]
    NotRsv,
    /// `v` other than 27, 28, 0 or 1.
    #[error("recovery id v={0} is not 27, 28, 0 or 1")]
    RecoveryId(u8),
    /// r or s is zero or out of range.
    #[error("bad r or s")]
    Scalar,
    /// A high-s (malleable) signature (EIP-2).
    #[error("the signature's s is in the upper half (EIP-2)")]
    HighS,
    /// No public key recovers from it.
    #[error("no key recovers from this signature")]
    NoKey,
    /// A Solana signature that is not base58.
    #[error("the signature is not base58")]
    NotBase58,
    /// A Solana signature that is not 64 bytes.
    #[error("an ed25519 signature is 64 bytes, not {0}")]
    Ed25519Length(usize),
    /// The address the signature is checked against is malformed.
    #[error(transparent)]
    Address(#[from] streamgate_policy::address::AddressError),
}

fn hex_bytes(hex: &str) -> Option<Vec<u8>> {
    if hex.is_empty() || !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// Decodes a `0x`-hex signature of any length up to [`MAX_SIGNATURE_BYTES`].
pub fn signature_bytes(signature: &str) -> Result<Vec<u8>, SignatureError> {
    let hex = signature.strip_prefix("0x").ok_or(SignatureError::NotHex)?;
    if hex.len() > 2 * MAX_SIGNATURE_BYTES {
        return Err(SignatureError::TooLong(hex.len() / 2));
    }
    hex_bytes(hex).ok_or(SignatureError::NotHex)
}

/// Parses `0x` + 130 hex digits into r ‖ s and a recovery id (v 27/28 or 0/1).
fn rsv(signature: &str) -> Result<(Signature, RecoveryId), SignatureError> {
    let raw = signature
        .strip_prefix("0x")
        .filter(|h| h.len() == 130)
        .and_then(hex_bytes)
        .ok_or(SignatureError::NotRsv)?;
    let v = match raw[64] {
        27 | 28 => raw[64] - 27,
        0 | 1 => raw[64],
        other => return Err(SignatureError::RecoveryId(other)),
    };
    let sig = Signature::from_slice(&raw[..64]).map_err(|_| SignatureError::Scalar)?;
    // A high-s signature is malleable; wallets produce low-s ones (EIP-2).
    if sig.normalize_s().is_some() {
        return Err(SignatureError::HighS);
    }
    Ok((
        sig,
        RecoveryId::from_byte(v).ok_or(SignatureError::RecoveryId(v))?,
    ))
}

/// The EIP-55 address of the key that signed the 32-byte `digest`.
pub fn evm_signer_of_digest(digest: &[u8; 32], signature: &str) -> Result<String, SignatureError> {
    let (sig, recid) = rsv(signature)?;
    let key = VerifyingKey::recover_from_prehash(digest, &sig, recid)
        .map_err(|_| SignatureError::NoKey)?;
    let point = key.to_encoded_point(false);
    let hash = keccak256(&point.as_bytes()[1..]);
    let addr: [u8; 20] = hash[12..].try_into().expect("20 bytes");
    Ok(eip55(&addr))
}

/// The EIP-712 sign-in: the fields of a sign-in message as typed data, so wallets that
/// prefer `eth_signTypedData_v4` show them as fields. Domain `{name: "StreamGate",
/// version: "1", chainId}`; primary type `SignIn(string domain,address wallet,string uri,
/// string version,string nonce,string issuedAt,string expirationTime)`.
pub struct TypedSignIn<'a> {
    /// The EVM chain id.
    pub chain_id: u64,
    /// The fields, from the sign-in message.
    pub message: &'a crate::siwe::Message,
    /// The wallet address (20 bytes).
    pub wallet: [u8; 20],
}

const DOMAIN_TYPE: &str = "EIP712Domain(string name,string version,uint256 chainId)";
const SIGN_IN_TYPE: &str = "SignIn(string domain,address wallet,string uri,string version,string nonce,string issuedAt,string expirationTime)";

impl TypedSignIn<'_> {
    /// The digest a wallet signs: keccak256(0x19 0x01 ‖ domainSeparator ‖ hashStruct).
    pub fn digest(&self) -> [u8; 32] {
        let mut chain = [0u8; 32];
        chain[24..].copy_from_slice(&self.chain_id.to_be_bytes());
        let domain = keccak256(
            &[
                keccak256(DOMAIN_TYPE.as_bytes()),
                keccak256(b"StreamGate"),
                keccak256(b"1"),
                chain,
            ]
            .concat(),
        );
        let m = self.message;
        let mut wallet = [0u8; 32];
        wallet[12..].copy_from_slice(&self.wallet);
        let s = |t: &str| keccak256(t.as_bytes());
        let hash_struct = keccak256(
            &[
                keccak256(SIGN_IN_TYPE.as_bytes()),
                s(&m.domain),
                wallet,
                s(&m.uri),
                s(&m.version),
                s(&m.nonce),
                s(&m.issued_at),
                s(m.expiration_time.as_deref().unwrap_or("")),
            ]
            .concat(),
        );
        keccak256(&[&[0x19u8, 0x01][..], &domain, &hash_struct].concat())
    }

    /// The typed data as `eth_signTypedData_v4` takes it.
    pub fn to_json(&self) -> serde_json::Value {
        let m = self.message;
        serde_json::json!({
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                ],
                "SignIn": [
                    {"name": "domain", "type": "string"},
                    {"name": "wallet", "type": "address"},
                    {"name": "uri", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "nonce", "type": "string"},
                    {"name": "issuedAt", "type": "string"},
                    {"name": "expirationTime", "type": "string"},
                ],
            },
            "primaryType": "SignIn",
            "domain": {"name": "StreamGate", "version": "1", "chainId": self.chain_id},
            "message": {
                "domain": m.domain, "wallet": eip55(&self.wallet), "uri": m.uri,
                "version": m.version, "nonce": m.nonce, "issuedAt": m.issued_at,
                "expirationTime": m.expiration_time.as_deref().unwrap_or(""),
            },
        })
    }
}

/// Whether `signature` (base58, 64 bytes) is `address`'s ed25519 signature of `message`.
pub fn solana_verify(
    address: &str,
    message: &[u8],
    signature: &str,
) -> Result<bool, SignatureError> {
    let key = parse_solana(address)?;
    let sig = bs58::decode(signature)
        .into_vec()
        .map_err(|_| SignatureError::NotBase58)?;
    if sig.len() != 64 {
        return Err(SignatureError::Ed25519Length(sig.len()));
    }
    Ok(
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key)
            .verify(message, &sig)
            .is_ok(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_signer() {
        // A signature made with k256 from a fixed private key, checked against the key's
        // address computed independently of the recovery path.
        use k256::ecdsa::SigningKey;
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let msg = b"hello streamgate";
        let (sig, recid) = sk
            .sign_prehash_recoverable(&personal_sign_hash(msg))
            .unwrap();
        let mut raw = sig.to_bytes().to_vec();
        raw.push(recid.to_byte() + 27);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let point = sk.verifying_key().to_encoded_point(false);
        let want = eip55(&keccak256(&point.as_bytes()[1..])[12..].try_into().unwrap());
        assert_eq!(
            evm_personal_sign_signer(msg, &format!("0x{hex}")).unwrap(),
            want
        );
        // Another message recovers another address; garbage is an error, not a match.
        assert_ne!(
            evm_personal_sign_signer(b"other", &format!("0x{hex}")).unwrap(),
            want
        );
        assert!(evm_personal_sign_signer(msg, "0x1234").is_err());
        assert!(evm_personal_sign_signer(msg, &format!("0x{}", "00".repeat(65))).is_err());
    }

    #[test]
    fn solana_signatures_are_checked() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let kp = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let addr = bs58::encode(kp.public_key().as_ref()).into_string();
        let sig = bs58::encode(kp.sign(b"msg").as_ref()).into_string();
        assert!(solana_verify(&addr, b"msg", &sig).unwrap());
        assert!(!solana_verify(&addr, b"other", &sig).unwrap());
        assert!(solana_verify(&addr, b"msg", "abc").is_err());
    }
}

//! The local `ctl` commands: minting tokens with a key the operator holds, and checking a
//! policy file. They need no control plane.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

#[derive(Subcommand)]
pub(crate) enum TokenCmd {
    /// Sign a viewer token with a PKCS#8 private key (Ed25519, ECDSA P-256 or RSA).
    Mint(MintArgs),
}

#[derive(Args)]
pub(crate) struct MintArgs {
    /// PEM or DER PKCS#8 private key.
    #[arg(long)]
    key: PathBuf,
    /// Key id the edges know the public key by.
    #[arg(long)]
    kid: String,
    /// `sub` claim.
    #[arg(long, default_value = "viewer")]
    sub: String,
    /// `iss` claim.
    #[arg(long)]
    iss: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    aud: Option<String>,
    /// Asset ids or key prefixes the token opens (`sg_scope`); repeatable.
    #[arg(long = "scope")]
    scopes: Vec<String>,
    /// Lifetime, e.g. 1h.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Extra claim `name=value` (value parsed as JSON when it can be); repeatable.
    #[arg(long = "claim")]
    claims: Vec<String>,
    /// Print the public JWK entry for the snapshot instead of a token.
    #[arg(long)]
    public_jwk: bool,
}

pub(crate) fn mint(a: MintArgs) -> ExitCode {
    let key = match streamgate_control::token::SigningKey::load(&a.key, &a.kid) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if a.public_jwk {
        println!("{}", key.public_jwk(a.iss.as_deref()));
        return ExitCode::SUCCESS;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = Map::new();
    claims.insert("sub".into(), a.sub.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), (now + a.ttl.as_secs()).into());
    if let Some(i) = a.iss {
        claims.insert("iss".into(), i.into());
    }
    if let Some(x) = a.aud {
        claims.insert("aud".into(), x.into());
    }
    if !a.scopes.is_empty() {
        claims.insert("sg_scope".into(), json!(a.scopes));
    }
    for c in &a.claims {
        let Some((k, v)) = c.split_once('=') else {
            eprintln!("error: --claim {c:?} is not name=value");
            return ExitCode::from(64);
        };
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        claims.insert(k.to_owned(), v);
    }
    match key.mint(&claims) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn check_policy(file: &std::path::Path, chains: &[String]) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut known = Vec::new();
    for c in chains {
        match streamgate_policy::address::ChainId::parse(c) {
            Ok(c) => known.push(c),
            Err(e) => {
                eprintln!("error: --chains: {e}");
                return ExitCode::from(64);
            }
        }
    }
    let parsed = streamgate_policy::Policy::parse(&text).and_then(|p| {
        let errs = if known.is_empty() {
            Vec::new()
        } else {
            p.check_chains(&known)
        };
        if errs.is_empty() {
            Ok(p)
        } else {
            Err(streamgate_policy::PolicyErrors(errs))
        }
    });
    match parsed {
        Ok(p) => {
            println!("{}: ok (policy {:?})", file.display(), p.id.as_str());
            ExitCode::SUCCESS
        }
        Err(errs) => {
            eprintln!("{}: {} error(s):", file.display(), errs.0.len());
            for e in &errs.0 {
                eprintln!("  {e}");
            }
            ExitCode::from(64)
        }
    }
}

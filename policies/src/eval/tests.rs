use super::*;
use std::time::Duration;

fn policy(yaml: &str) -> Policy {
    Policy::parse(yaml).unwrap()
}

fn claims(v: Value) -> Claims {
    v.as_object().unwrap().clone()
}

fn facts<'a>(key: &'a str, token: TokenFacts<'a>) -> Facts<'a> {
    Facts {
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        key,
        client_ip: Some("10.1.2.3".parse().unwrap()),
        origin: None,
        referer: None,
        token,
        nft: None,
        wallet: None,
    }
}

const SUBS: &str = r#"
id: subs
rule:
  jwt:
    issuer: https://auth.example.com
    audience: streamgate
    required_claims: { plan: [premium, family] }
"#;

#[test]
fn jwt_conditions() {
    let p = policy(SUBS);
    let good = claims(serde_json::json!({
        "iss": "https://auth.example.com", "aud": ["x", "streamgate"], "plan": "premium",
        "sg_scope": ["demo"]
    }));
    assert_eq!(
        p.evaluate(&facts("demo/master.m3u8", TokenFacts::Valid(&good))),
        Decision::Allow
    );
    assert_eq!(
        p.evaluate(&facts("other/master.m3u8", TokenFacts::Valid(&good))),
        Decision::Deny {
            reason: Reason::ScopeMismatch
        }
    );
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Absent)),
        Decision::Deny {
            reason: Reason::NoCredential
        }
    );
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Invalid(Reason::TokenExpired))),
        Decision::Deny {
            reason: Reason::TokenExpired
        }
    );
    let mut c = good.clone();
    c.insert("iss".into(), "https://evil".into());
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Valid(&c))),
        Decision::Deny {
            reason: Reason::WrongIssuer
        }
    );
    let mut c = good.clone();
    c.insert("aud".into(), "other".into());
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Valid(&c))),
        Decision::Deny {
            reason: Reason::WrongAudience
        }
    );
    let mut c = good.clone();
    c.insert("plan".into(), "free".into());
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Valid(&c))),
        Decision::Deny {
            reason: Reason::ClaimMismatch
        }
    );
    let mut c = good;
    c.remove("sg_scope");
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Valid(&c))),
        Decision::Deny {
            reason: Reason::ScopeMismatch
        }
    );
}

#[test]
fn scopes() {
    assert!(scope_matches("demo", "demo/master.m3u8"));
    assert!(scope_matches("demo/video/", "demo/video/720p/seg.m4s"));
    assert!(scope_matches("demo/video", "demo/video/720p/seg.m4s"));
    assert!(scope_matches("*", "anything/x"));
    assert!(!scope_matches("demo", "demo2/master.m3u8"));
    assert!(!scope_matches("demo/video", "demo/videos/x"));
    assert!(!scope_matches("", "demo/x"));
    assert!(!scope_matches("demo/master.m3u8", "demo/master.m3u8"));
}

#[test]
fn composition_ip_time_origin() {
    let p = policy(
        r#"
id: x
rule:
  any_of:
    - all_of:
        - ip: { allow: [10.0.0.0/8], deny: [10.1.0.0/16] }
        - time: { not_after: "2030-01-01T00:00:00Z" }
    - origin: { allow: ["https://player.example.com"] }
    - jwt: {}
"#,
    );
    // Denied subnet, no origin, no token: the credential reason wins, so 401.
    let f = facts("a/b", TokenFacts::Absent);
    assert_eq!(
        p.evaluate(&f),
        Decision::Deny {
            reason: Reason::NoCredential
        }
    );
    let mut f = facts("a/b", TokenFacts::Absent);
    f.client_ip = Some("10.2.0.1".parse().unwrap());
    assert_eq!(p.evaluate(&f), Decision::Allow);
    f.client_ip = Some("::ffff:10.2.0.1".parse().unwrap());
    assert_eq!(
        p.evaluate(&f),
        Decision::Allow,
        "IPv4-mapped addresses match IPv4 nets"
    );
    f.now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
    assert_ne!(p.evaluate(&f), Decision::Allow, "after not_after");
    f.referer = Some("https://player.example.com/watch?v=1");
    assert_eq!(p.evaluate(&f), Decision::Allow);
    f.referer = Some("https://player.example.com.evil.net/");
    assert_ne!(p.evaluate(&f), Decision::Allow);
    let c = Claims::new();
    // `jwt: {}` scopes by sg_scope by default, so an unscoped token is refused.
    assert_eq!(
        p.evaluate(&facts("a/b", TokenFacts::Valid(&c))),
        Decision::Deny {
            reason: Reason::ScopeMismatch
        }
    );
}

#[test]
fn not_and_public() {
    let p = policy("id: x\nrule:\n  not: { ip: { allow: [10.0.0.0/8] } }\n");
    assert_eq!(
        p.evaluate(&facts("a/b", TokenFacts::Absent)),
        Decision::Deny {
            reason: Reason::NegatedRuleMatched
        }
    );
    assert!(!p.uses_token());
    assert!(policy(SUBS).uses_token());
    let open = policy("id: x\nrule: {public: true}");
    assert_eq!(
        open.evaluate(&facts("a/b", TokenFacts::Absent)),
        Decision::Allow
    );
}

#[test]
fn only_unconditional_policies_may_be_shared_by_downstream_caches() {
    let p = |doc: &str| Policy::parse(doc).unwrap();
    assert!(p("id: a\nrule: {public: true}\n").always_allows());
    assert!(
        p("id: a\nrule: {any_of: [{public: true}, {ip: {allow: [10.0.0.0/8]}}]}\n").always_allows()
    );
    assert!(
        !p("id: a\nrule: {all_of: [{public: true}, {ip: {allow: [10.0.0.0/8]}}]}\n")
            .always_allows()
    );
    assert!(!p("id: a\nrule: {jwt: {audience: x}}\n").always_allows());
    assert!(!p("id: a\nrule: {not: {ip: {deny: [10.0.0.0/8]}}}\n").always_allows());
}

#[test]
fn wallet_condition_checks_the_session_wallet() {
    let p = policy(
        "id: holders\nrule:\n  wallet:\n    allow: [\"0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\", \"solana:mainnet:11111111111111111111111111111111\"]\n    deny: [\"eip155:137:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\"]\n",
    );
    let session =
        |wallet: &str, iss: &str| claims(serde_json::json!({"iss": iss, "sg_wallet": wallet}));
    let decide = |c: &Claims| p.evaluate(&facts("a/x", TokenFacts::Valid(c)));
    let ok = session(
        "eip155:1:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
        WALLET_ISSUER,
    );
    assert_eq!(decide(&ok), Decision::Allow);
    let denied = session(
        "eip155:137:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        WALLET_ISSUER,
    );
    assert!(matches!(
        decide(&denied),
        Decision::Deny {
            reason: Reason::WalletNotAllowed
        }
    ));
    let other = session(
        "eip155:1:0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        WALLET_ISSUER,
    );
    assert!(matches!(
        decide(&other),
        Decision::Deny {
            reason: Reason::WalletNotAllowed,
            ..
        }
    ));
    let sol = session(
        "solana:mainnet:11111111111111111111111111111111",
        WALLET_ISSUER,
    );
    assert_eq!(decide(&sol), Decision::Allow);
    // A token from another issuer, or without a wallet, is not a wallet session.
    let forged = session(
        "eip155:1:0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "someone-else",
    );
    assert!(matches!(
        decide(&forged),
        Decision::Deny {
            reason: Reason::WalletRequired,
            ..
        }
    ));
    let plain = claims(serde_json::json!({"iss": WALLET_ISSUER}));
    assert!(matches!(
        decide(&plain),
        Decision::Deny {
            reason: Reason::WalletRequired,
            ..
        }
    ));
    assert!(matches!(
        p.evaluate(&facts("a/x", TokenFacts::Absent)),
        Decision::Deny { .. }
    ));
    assert!(p.uses_token());
}

#[test]
fn wallet_addresses_are_validated_with_paths() {
    let errs = Policy::parse(
        "id: w\nrule:\n  wallet:\n    allow: [\"0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed\", \"eip155:01:0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed\", \"solana:mainnet:not-base58-0OIl\"]\n    bogus: 1\n",
    )
    .unwrap_err();
    let text: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    for p in [
        "rule.wallet.allow[0]",
        "rule.wallet.allow[1]",
        "rule.wallet.allow[2]",
        "rule.wallet.bogus",
    ] {
        assert!(all.contains(p), "{p} missing in {all}");
    }
    assert!(all.contains("checksum"), "{all}");
}

/// An oracle that answers from a fixed list and records what it was asked.
#[derive(Debug, Default)]
struct Oracle {
    answers: Vec<(NftCondition, String, Holding)>,
    asked: std::cell::RefCell<Vec<String>>,
}

impl NftOracle for Oracle {
    fn holds(&self, cond: &NftCondition, owner: &crate::address::Account) -> Holding {
        self.asked.borrow_mut().push(owner.address.clone());
        self.answers
            .iter()
            .find(|(c, o, _)| c == cond && *o == owner.address)
            .map_or(Holding::Pending, |(_, _, h)| *h)
    }
}

const HOLDERS: &str = r#"
id: holders
on_unavailable: fail_closed
rule:
  any_of:
    - jwt: { issuer: https://auth.example.com }
    - nft:
        chain: eip155:31337
        standard: erc721
        contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3"
"#;

#[test]
fn nft_condition_asks_the_oracle_for_the_session_wallet() {
    let p = policy(HOLDERS);
    let cond = p.nft_conditions()[0].clone();
    let who = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    let session =
        claims(serde_json::json!({"iss": WALLET_ISSUER, "sg_wallet": format!("eip155:1:{who}")}));
    let with = |o: &Oracle| {
        let mut f = facts("demo/x", TokenFacts::Valid(&session));
        let o: &dyn NftOracle = o;
        f.nft = Some(o);
        p.evaluate(&f)
    };
    // Unknown holding: the edge must look it up.
    let mut o = Oracle::default();
    assert_eq!(with(&o), Decision::Pending);
    assert_eq!(*o.asked.borrow(), vec![who.to_owned()]);
    o.answers.push((cond.clone(), who.into(), Holding::Yes));
    assert_eq!(with(&o), Decision::Allow);
    o.answers[0].2 = Holding::No;
    assert_eq!(
        with(&o),
        Decision::Deny {
            reason: Reason::NftNotHeld
        }
    );
    o.answers[0].2 = Holding::Unavailable;
    assert_eq!(
        with(&o),
        Decision::Unavailable {
            reason: Reason::DependencyUnavailable
        }
    );
    // Fail open allows when every endpoint is down, and only then.
    let open = policy(&HOLDERS.replace("fail_closed", "fail_open"));
    let mut f = facts("demo/x", TokenFacts::Valid(&session));
    f.nft = Some(&o);
    assert_eq!(open.evaluate(&f), Decision::Allow);
    o.answers[0].2 = Holding::No;
    let mut f = facts("demo/x", TokenFacts::Valid(&session));
    f.nft = Some(&o);
    assert_eq!(
        open.evaluate(&f),
        Decision::Deny {
            reason: Reason::NftNotHeld
        }
    );
    // No oracle at all: unavailable, not allowed.
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Valid(&session))),
        Decision::Unavailable {
            reason: Reason::DependencyUnavailable
        }
    );
}

#[test]
fn nft_condition_short_circuits_and_needs_a_wallet() {
    let p = policy(HOLDERS);
    let o = Oracle::default();
    // A valid JWT from the other branch allows without asking the oracle.
    let jwt = claims(serde_json::json!({"iss": "https://auth.example.com", "sg_scope": "*"}));
    let mut f = facts("demo/x", TokenFacts::Valid(&jwt));
    f.nft = Some(&o);
    assert_eq!(p.evaluate(&f), Decision::Allow);
    assert!(o.asked.borrow().is_empty());
    // A token that is not a wallet session: wallet_required (the credential reason wins).
    let other = claims(
        serde_json::json!({"iss": "someone-else", "sg_wallet": "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}),
    );
    let mut f = facts("demo/x", TokenFacts::Valid(&other));
    f.nft = Some(&o);
    assert_eq!(
        p.evaluate(&f),
        Decision::Deny {
            reason: Reason::WrongIssuer
        }
    );
    assert!(o.asked.borrow().is_empty());
    // A Solana wallet cannot hold an EVM token: refused without a lookup.
    let sol = claims(
        serde_json::json!({"iss": WALLET_ISSUER, "sg_wallet": "solana:devnet:11111111111111111111111111111111"}),
    );
    let mut f = facts("demo/x", TokenFacts::Valid(&sol));
    f.nft = Some(&o);
    assert!(matches!(p.evaluate(&f), Decision::Deny { .. }));
    assert!(o.asked.borrow().is_empty());
    // No credential: 401.
    assert_eq!(
        p.evaluate(&facts("demo/x", TokenFacts::Absent)),
        Decision::Deny {
            reason: Reason::NoCredential
        }
    );
    // Pending outranks a false branch inside all_of only when nothing is false.
    let both = policy(
        "id: both\nrule:\n  all_of:\n    - ip: { allow: [192.0.2.0/24] }\n    - nft: { chain: eip155:1, standard: erc1155, contract: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\", token_ids: [7], min_balance: 3 }\n",
    );
    let session = claims(
        serde_json::json!({"iss": WALLET_ISSUER, "sg_wallet": "eip155:1:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"}),
    );
    let mut f = facts("demo/x", TokenFacts::Valid(&session));
    f.nft = Some(&o);
    assert_eq!(
        both.evaluate(&f),
        Decision::Deny {
            reason: Reason::IpNotAllowed
        }
    );
    f.client_ip = Some("192.0.2.9".parse().unwrap());
    assert_eq!(both.evaluate(&f), Decision::Pending);
    // not(nft) stays pending too.
    let not = policy(
        "id: n\nrule:\n  not:\n    nft: { chain: eip155:1, standard: erc721, contract: \"0x5FbDB2315678afecb367f032d93F642f64180aa3\" }\n",
    );
    assert_eq!(not.evaluate(&f), Decision::Pending);
}

/// A wallet session (anyone can sign in with any wallet) is not an operator token: a
/// `jwt` condition without the session issuer refuses it, whatever else it asks; one that
/// names the session issuer accepts it; `wallet` conditions accept it.
#[test]
fn wallet_sessions_satisfy_jwt_conditions_only_when_named() {
    let who = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266";
    let session = claims(serde_json::json!({
        "iss": WALLET_ISSUER, "sub": format!("eip155:1:{who}"), "aud": "streamgate",
        "sg_wallet": format!("eip155:1:{who}")
    }));
    let bare = policy("id: any-token\nrule:\n  jwt: {scope_claim: null}\n");
    let aud = policy("id: aud\nrule:\n  jwt: {audience: streamgate, scope_claim: null}\n");
    let named = policy("id: named\nrule:\n  jwt: {issuer: streamgate-wallet, scope_claim: null}\n");
    let wallets = policy("id: w\nrule:\n  wallet: {}\n");
    let denied = Decision::Deny {
        reason: Reason::WrongIssuer,
    };
    for p in [&bare, &aud] {
        assert_eq!(
            p.evaluate(&facts("demo/x", TokenFacts::Session(&session))),
            denied,
            "{}",
            p.id
        );
        // The same claims signed with one of the deployment's keys pass.
        assert_eq!(
            p.evaluate(&facts("demo/x", TokenFacts::Valid(&session))),
            Decision::Allow
        );
    }
    assert_eq!(
        named.evaluate(&facts("demo/x", TokenFacts::Session(&session))),
        Decision::Allow
    );
    assert_eq!(
        wallets.evaluate(&facts("demo/x", TokenFacts::Session(&session))),
        Decision::Allow
    );
    // In an `any_of` with a wallet branch, the session still gets in through that branch.
    let either =
        policy("id: e\nrule:\n  any_of:\n    - jwt: {scope_claim: null}\n    - wallet: {}\n");
    assert_eq!(
        either.evaluate(&facts("demo/x", TokenFacts::Session(&session))),
        Decision::Allow
    );
}

use super::*;

fn errors(text: &str) -> Vec<(String, String)> {
    Policy::parse(text)
        .expect_err("expected errors")
        .0
        .into_iter()
        .map(|e| (e.path, e.message))
        .collect()
}

#[test]
fn every_example_validates_and_round_trips() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let p = Policy::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // The canonical form parses back to the same policy.
        let again = Policy::from_value(&p.to_value()).unwrap();
        assert_eq!(p, again, "{}", path.display());
        n += 1;
    }
    assert!(n >= 4, "examples missing");
}

#[test]
fn all_errors_are_reported_with_paths() {
    let errs = errors(
        r#"
id: "Bad Id"
bogus: 1
on_unavailable: maybe
rule:
  any_of:
    - jwt: { audience: 7, nope: x }
    - ip: { allow: [10.0.0.0/33, "1.2.3.4"] }
    - time: { not_before: yesterday }
    - origin: { allow: ["https://ok.example", "ftp://x", "https://x/path"] }
    - frobnicate: {}
    - not: { public: false }
"#,
    );
    let paths: Vec<&str> = errs.iter().map(|(p, _)| p.as_str()).collect();
    for want in [
        "id",
        "bogus",
        "on_unavailable",
        "rule.any_of[0].jwt.audience",
        "rule.any_of[0].jwt.nope",
        "rule.any_of[1].ip.allow[0]",
        "rule.any_of[2].time.not_before",
        "rule.any_of[3].origin.allow[1]",
        "rule.any_of[3].origin.allow[2]",
        "rule.any_of[4].frobnicate",
        "rule.any_of[5].not.public",
    ] {
        assert!(paths.contains(&want), "missing {want} in {errs:#?}");
    }
    assert!(
        !paths.contains(&"rule.any_of[1].ip.allow[1]"),
        "a bare address is valid"
    );
}

#[test]
fn structural_errors() {
    assert_eq!(errors("rule: {public: true}")[0].0, "id");
    assert_eq!(errors("id: x")[0].0, "rule");
    assert!(
        errors("id: x\nrule: {public: true, jwt: {}}")[0]
            .1
            .contains("exactly one")
    );
    assert!(
        errors("id: x\nrule: {any_of: []}")[0]
            .1
            .contains("at least one")
    );
    assert!(errors("[1, 2")[0].1.contains("not valid YAML"));
    let deep = format!(
        "id: x\nrule: {}{{public: true}}{}",
        "{not: ".repeat(20),
        "}".repeat(20)
    );
    assert!(errors(&deep).iter().any(|(_, m)| m.contains("deeper")));
    assert!(
        errors(&"a".repeat(MAX_DOCUMENT_BYTES + 1))[0]
            .1
            .contains("larger")
    );
}

proptest::proptest! {
    #[test]
    fn parse_never_panics(s in "\\PC{0,400}") {
        let _ = Policy::parse(&s);
    }
}

#[test]
fn nft_conditions_parse_and_round_trip() {
    let yaml = r#"
id: holders
rule:
  any_of:
    - nft:
        chain: eip155:137
        standard: erc721
        contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3"
        token_ids: [1, "115792089237316195423570985008687907853269984665640564039457584007913129639935", "0xff"]
        min_balance: 2
    - nft: { chain: eip155:1, standard: erc1155, contract: "0x5FbDB2315678afecb367f032d93F642f64180aa3", token_ids: [7], min_balance: 3 }
    - nft: { chain: solana:mainnet, standard: metaplex, collection: "J1S9H3QjnRtBbbuD4HjPV6RpRhwuk4zKbxsnCHuTgh9w" }
    - nft: { chain: solana:devnet, standard: metaplex, mint: "11111111111111111111111111111111" }
"#;
    let p = Policy::parse(yaml).unwrap();
    let n = p.nft_conditions();
    assert_eq!(n.len(), 4);
    assert_eq!(n[0].standard, NftStandard::Erc721);
    assert_eq!(n[0].token_ids.len(), 3);
    assert_eq!(n[0].token_ids[2][31], 0xff);
    assert_eq!(n[0].token_ids[1], [0xff; 32]);
    assert_eq!(n[0].min_balance, 2);
    assert_eq!(n[1].min_balance, 3);
    assert!(matches!(n[2].target, NftTarget::Collection(_)));
    assert_eq!(n[3].target, NftTarget::Mint([0; 32]));
    // The canonical form checksums the contract and writes ids in decimal.
    let v = p.to_value();
    let text = v.to_string();
    assert!(
        text.contains("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        "{text}"
    );
    assert!(text.contains("\"255\""), "{text}");
    assert_eq!(Policy::from_value(&v).unwrap(), p);
    assert!(p.uses_token());
}

#[test]
fn nft_condition_errors_name_their_fields() {
    let yaml = r#"
id: bad
rule:
  any_of:
    - nft: { chain: eip155:1, standard: erc721, contract: "0x5FbDB2315678afecb367f032d93F642f64180aA3" }
    - nft: { chain: solana:mainnet, standard: erc1155, contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3" }
    - nft: { chain: eip155:1, standard: erc1155, contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3" }
    - nft: { chain: solana:mainnet, standard: metaplex, collection: "0OIl" }
    - nft: { chain: "eip155:01", standard: erc20, contract: x }
    - nft: { chain: eip155:1, standard: erc721, contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3", token_ids: [-1, "1e3", "115792089237316195423570985008687907853269984665640564039457584007913129639936"], min_balance: 0 }
    - nft: { chain: eip155:1, standard: erc721, contract: "0x5fbdb2315678afecb367f032d93f642f64180aa3", mint: "11111111111111111111111111111111" }
"#;
    let errs = Policy::parse(yaml).unwrap_err().to_string();
    for want in [
        "rule.any_of[0].nft.contract",
        "EIP-55",
        "rule.any_of[1].nft.chain",
        "rule.any_of[2].nft.token_ids",
        "rule.any_of[3].nft.collection",
        "rule.any_of[4].nft.chain",
        "rule.any_of[4].nft.standard",
        "rule.any_of[5].nft.token_ids[0]",
        "rule.any_of[5].nft.token_ids[1]",
        "rule.any_of[5].nft.token_ids[2]",
        "256 bits",
        "rule.any_of[5].nft.min_balance",
        "rule.any_of[6].nft: an erc721",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
}

proptest::proptest! {
    #[test]
    fn token_ids_round_trip_through_decimal(bytes in proptest::array::uniform32(0u8..)) {
        let text = token_id_text(&bytes);
        proptest::prop_assert_eq!(parse_token_id(&Value::String(text)).unwrap(), bytes);
    }
}

#[test]
fn limits_parse_inherit_and_round_trip() {
    use crate::limits::{RateRule, RateSetting};
    let yaml = r#"
id: capped
rule: { jwt: { issuer: dev } }
limits:
  rate:
    segment:
      per_subject: { rate: 20, burst: 60 }
      per_ip: off
    playlist:
      per_wallet: { rate: 0.5 }
"#;
    let p = Policy::parse(yaml).unwrap();
    let seg = p.limits.rate.segment;
    assert_eq!(
        seg.per_subject,
        RateSetting::Limit(RateRule {
            per_second: 20.0,
            burst: 60
        })
    );
    assert_eq!(seg.per_ip, RateSetting::Off);
    assert_eq!(seg.per_wallet, RateSetting::Inherit);
    // A burst left out is the rate, at least 1.
    assert_eq!(
        p.limits.rate.playlist.per_wallet,
        RateSetting::Limit(RateRule {
            per_second: 0.5,
            burst: 1
        })
    );
    let again = Policy::from_value(&p.to_value()).unwrap();
    assert_eq!(again, p);
    assert_eq!(p.limits.max_streams, None);
    let capped = Policy::parse(
        "id: c\nrule: { public: true }\nlimits: { max_streams: 2, streams_per: wallet }\n",
    )
    .unwrap();
    assert_eq!(capped.limits.max_streams, Some(2));
    assert_eq!(capped.limits.streams_per, crate::limits::StreamsPer::Wallet);
    assert_eq!(Policy::from_value(&capped.to_value()).unwrap(), capped);
    assert_eq!(
        capped.limits.on_stream_limit,
        crate::limits::OverCap::Refuse
    );
    let ending = Policy::parse(
        "id: e\nrule: { public: true }\nlimits: { max_streams: 1, on_stream_limit: end_oldest }\n",
    )
    .unwrap();
    assert_eq!(
        ending.limits.on_stream_limit,
        crate::limits::OverCap::EndOldest
    );
    assert_eq!(Policy::from_value(&ending.to_value()).unwrap(), ending);
    let bad = Policy::parse("id: e\nrule: { public: true }\nlimits: { on_stream_limit: kick }\n")
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("limits.on_stream_limit: expected \"refuse\" or \"end_oldest\"")
            && bad.contains("limits.on_stream_limit: needs max_streams"),
        "{bad}"
    );
    // Unset settings fall back to the edge's; set ones (off included) win.
    let edge = crate::limits::RateClass {
        per_ip: RateSetting::Limit(RateRule {
            per_second: 1.0,
            burst: 1,
        }),
        per_wallet: RateSetting::Limit(RateRule {
            per_second: 2.0,
            burst: 2,
        }),
        ..Default::default()
    };
    let eff = seg.or(&edge);
    assert_eq!(eff.per_ip, RateSetting::Off);
    assert_eq!(eff.per_wallet, edge.per_wallet);
    // No limits: nothing in the canonical form.
    let plain = Policy::parse("id: p\nrule: { public: true }\n").unwrap();
    assert!(plain.to_value().get("limits").is_none());
}

#[test]
fn sharing_thresholds_parse_and_round_trip() {
    use crate::limits::{Sharing, StreamsPer};
    use std::time::Duration;
    let p = Policy::parse(
        "id: s\nrule: { public: true }\nlimits:\n  sharing: { window: 5m, max_networks: 4, max_sessions: 6, deny_for: 30m }\n",
    )
    .unwrap();
    assert_eq!(
        p.limits.sharing,
        Some(Sharing {
            window: Duration::from_secs(300),
            max_networks: Some(4),
            max_sessions: Some(6),
            deny_for: Some(Duration::from_secs(1800)),
            per: StreamsPer::Subject,
        })
    );
    assert_eq!(Policy::from_value(&p.to_value()).unwrap(), p);
    // The window defaults to 10 minutes; flag only without deny_for.
    let flag = Policy::parse(
        "id: s\nrule: { public: true }\nlimits: { sharing: { max_sessions: 3, per: wallet } }\n",
    )
    .unwrap();
    let sh = flag.limits.sharing.unwrap();
    assert_eq!(
        (sh.window, sh.deny_for, sh.per),
        (Duration::from_secs(600), None, StreamsPer::Wallet)
    );
    assert_eq!(Policy::from_value(&flag.to_value()).unwrap(), flag);
    let bad = r#"
id: bad
rule: { public: true }
limits:
  sharing: { window: forever, max_networks: 0, deny_for: 30d, per: house, color: red }
"#;
    let errs = Policy::parse(bad).unwrap_err().to_string();
    for want in [
        "limits.sharing.color: unknown field",
        "limits.sharing.window: expected a duration from 1s to 1day",
        "limits.sharing.max_networks: must be a whole number from 1 to 1000",
        "limits.sharing.deny_for: expected a duration from 1s to 7days",
        "limits.sharing.per: expected \"subject\" or \"wallet\"",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    let none =
        Policy::parse("id: n\nrule: { public: true }\nlimits: { sharing: { window: 1m } }\n")
            .unwrap_err()
            .to_string();
    assert!(
        none.contains("limits.sharing: needs max_networks, max_sessions or both"),
        "{none}"
    );
}

#[test]
fn limit_errors_name_their_fields() {
    let yaml = r#"
id: bad
rule: { public: true }
limits:
  burst: 3
  max_streams: 0
  streams_per: household
  rate:
    video: {}
    segment:
      per_ip: { rate: 0 }
      per_subject: { rate: 20000, burst: 0 }
      per_wallet: 5
      per_asn: off
"#;
    let errs = Policy::parse(yaml).unwrap_err().to_string();
    for want in [
        "limits.burst: unknown field",
        "limits.max_streams: must be a whole number from 1 to 10000",
        "limits.streams_per: expected \"subject\" or \"wallet\"",
        "limits.rate.video: unknown field",
        "limits.rate.segment.per_ip.rate: must be above 0",
        "limits.rate.segment.per_subject.rate: must be above 0 and at most 10000",
        "limits.rate.segment.per_subject.burst: must be a whole number",
        "limits.rate.segment.per_wallet: expected \"off\" or a mapping",
        "limits.rate.segment.per_asn: unknown field",
    ] {
        assert!(errs.contains(want), "missing {want:?} in:\n{errs}");
    }
    let one = parse_rate_class(
        "edge.rate_limit.sign_in",
        &serde_json::json!({"per_ip": {"burst": 2}}),
    )
    .unwrap_err()
    .to_string();
    assert!(
        one.contains("edge.rate_limit.sign_in.per_ip.rate: required"),
        "{one}"
    );
}

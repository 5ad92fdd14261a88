use super::*;

fn parse(text: &str) -> Result<EdgeConfig, LoadError> {
    EdgeConfig::from_toml_str(text, Vec::new(), "test.toml")
}

#[test]
fn empty_file_gives_defaults() {
    assert_eq!(parse("").unwrap(), EdgeConfig::default());
}

#[test]
fn every_error_is_reported_with_its_path() {
    let text = r#"
[edge]
http_listen = "nope"
threads = 0
tls_cert = "/c.pem"
bogus = 1
[edge.cache]
max_bytes = "lots"
manifest_ttl = "soon"
[origin]
kind = "ftp"
"#;
    let Err(LoadError::Invalid(ConfigErrors(errs))) = parse(text) else {
        panic!("expected validation errors");
    };
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "edge.http_listen",
        "edge.threads",
        "edge.tls_key",
        "edge.bogus",
        "edge.cache.max_bytes",
        "edge.cache.manifest_ttl",
        "origin.kind",
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
}

#[test]
fn env_overrides_file() {
    let vars = vec![
        (
            "STREAMGATE_EDGE__CACHE__MAX_BYTES".to_owned(),
            "1GiB".to_owned(),
        ),
        ("STREAMGATE_EDGE__THREADS".to_owned(), "3".to_owned()),
        ("STREAMGATE_ORIGIN__KIND".to_owned(), "http".to_owned()),
        (
            "STREAMGATE_ORIGIN__BASE_URL".to_owned(),
            "http://127.0.0.1:1/".to_owned(),
        ),
        ("STREAMGATE_LOG".to_owned(), "debug".to_owned()),
    ];
    let cfg = EdgeConfig::from_toml_str("[edge]\nthreads = 1\n", vars, "t").unwrap();
    assert_eq!(cfg.cache.max_bytes, 1 << 30);
    assert_eq!(cfg.threads, 3);
    assert!(matches!(cfg.origin, OriginConfig::Http(ref h) if h.base_url == "http://127.0.0.1:1/"));
}

#[test]
fn syntax_errors_name_the_file() {
    let err = parse("[edge\n").unwrap_err().to_string();
    assert!(err.contains("test.toml"), "{err}");
}

#[test]
fn byte_sizes() {
    use reader::parse_byte_size as p;
    assert_eq!(p("512MiB"), Some(512 << 20));
    assert_eq!(p("1.5 KB"), Some(1500));
    assert_eq!(p("42"), Some(42));
    assert_eq!(p("12 parsecs"), None);
    assert_eq!(p(""), None);
}

#[test]
fn shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/config/edge.toml");
    let cfg = EdgeConfig::from_toml_str(&std::fs::read_to_string(path).unwrap(), Vec::new(), path)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.cors.allow_origins, ["https://player.example.com"]);
}

#[test]
fn large_udp_payloads_need_gso_off() {
    let err = parse("[edge.http3]\nmax_udp_payload = 6600\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("edge.http3.max_udp_payload"), "{err}");
    assert!(parse("[edge.http3]\nmax_udp_payload = 6550\n").is_ok());
    assert!(parse("[edge.http3]\nmax_udp_payload = 16000\ngso = false\n").is_ok());
}

#[test]
fn chains_are_read_and_checked_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("rpc-url");
    std::fs::write(&secret, "https://eth.example.net/v2/SECRET-KEY\n").unwrap();
    let text = format!(
        r#"
[edge.chains."eip155:1"]
confirmations = 3
hedge_after = "150ms"
endpoints = [
  {{ name = "primary", url_file = "{}", weight = 3 }},
  {{ url = "http://10.0.0.5:8545", priority = 1 }},
]
[edge.chains."solana:mainnet"]
endpoints = [{{ url = "https://api.mainnet-beta.solana.com" }}]
"#,
        secret.display()
    );
    let cfg = parse(&text).unwrap();
    assert_eq!(cfg.chains.len(), 2);
    let eth = cfg
        .chains
        .iter()
        .find(|c| c.id.to_string() == "eip155:1")
        .unwrap();
    assert_eq!(eth.confirmations, 3);
    assert_eq!(eth.hedge_after, Duration::from_millis(150));
    assert_eq!(
        eth.endpoints[0].url.0,
        "https://eth.example.net/v2/SECRET-KEY"
    );
    assert_eq!(eth.endpoints[0].weight, 3);
    assert_eq!(
        eth.endpoints[1].name, "10.0.0.5:8545",
        "named by host and port"
    );
    assert_eq!(eth.endpoints[1].priority, 1);
    // The URL never shows in Debug output (logs).
    assert!(!format!("{cfg:?}").contains("SECRET-KEY"));

    let bad = r#"
[edge.chains."eip155:01"]
endpoints = [{ url = "http://a" }]
[edge.chains."eip155:5"]
timeout = "0s"
multicall3 = "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
endpoints = [
  { url = "ftp://x", bogus = 1 },
  { url = "http://a:1", url_env = "STREAMGATE_TEST_UNSET_VAR" },
  { url_env = "STREAMGATE_TEST_UNSET_VAR" },
]
[edge.chains."solana:devnet"]
multicall3 = "0xcA11bde05977b3631167028862bE2a173976CA11"
"#;
    let Err(LoadError::Invalid(ConfigErrors(errs))) = parse(bad) else {
        panic!("expected validation errors");
    };
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    let all = text.join("\n");
    for want in [
        "edge.chains.\"eip155:01\"",
        "edge.chains.\"eip155:5\".timeout",
        "edge.chains.\"eip155:5\".multicall3",
        "edge.chains.\"eip155:5\".endpoints[0]: the URL is not",
        "edge.chains.\"eip155:5\".endpoints[0].bogus",
        "edge.chains.\"eip155:5\".endpoints[1]: needs exactly one",
        "edge.chains.\"eip155:5\".endpoints[2].url_env",
        "edge.chains.\"solana:devnet\".multicall3",
        "edge.chains.\"solana:devnet\".endpoints",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    assert!(!all.contains("ftp://x"), "URLs are not quoted: {all}");
}

#[test]
fn unknown_asset_mode() {
    let read = |v: &str| {
        EdgeConfig::from_toml_str(
            &format!("[edge.gate]\nunknown_asset = {v}\n"),
            std::iter::empty(),
            "t.toml",
        )
    };
    assert_eq!(
        EdgeConfig::default().gate.unknown_asset,
        UnknownAsset::Conceal
    );
    assert_eq!(
        read("\"not_found\"").unwrap().gate.unknown_asset,
        UnknownAsset::NotFound
    );
    let err = read("\"hide\"").unwrap_err().to_string();
    assert!(err.contains("edge.gate.unknown_asset"), "{err}");
}

#[test]
fn negative_cache_ttl() {
    assert_eq!(
        parse("").unwrap().cache.not_found_ttl,
        Duration::from_secs(5)
    );
    let off = parse("[edge.cache]\nnot_found_ttl = \"0s\"\n").unwrap();
    assert!(off.cache.not_found_ttl.is_zero());
    let err = parse("[edge.cache]\nnot_found_ttl = \"2h\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("edge.cache.not_found_ttl"), "{err}");
}

#[test]
fn rate_limits_are_read_and_checked_with_paths() {
    use streamgate_policy::limits::{RateRule, RateSetting};
    let cfg = parse(
        r#"
[edge.rate_limit]
table_slots = 4096
ipv6_prefix = 56
segment = { per_ip = { rate = 50, burst = 100 }, per_subject = { rate = 10 } }
sign_in = { per_ip = { rate = 0.5, burst = 10 } }
"#,
    )
    .unwrap();
    let r = &cfg.rate_limit;
    assert_eq!(r.table_slots, 4096);
    assert_eq!((r.ipv4_prefix, r.ipv6_prefix), (32, 56));
    assert_eq!(
        r.segment.per_ip,
        RateSetting::Limit(RateRule {
            per_second: 50.0,
            burst: 100
        })
    );
    assert_eq!(r.playlist, Default::default());
    assert!(r.any());
    assert!(!RateLimitConfig::default().any());

    let Err(LoadError::Invalid(ConfigErrors(errs))) = parse(
        r#"
[edge.rate_limit]
table_slots = 3
ipv4_prefix = 40
playlist = { per_ip = { rate = -1 }, per_asn = "off" }
segment = "fast"
sign_in = { per_subject = { rate = 1 } }
bogus = 1
"#,
    ) else {
        panic!("expected validation errors");
    };
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for want in [
        "edge.rate_limit.table_slots",
        "edge.rate_limit.ipv4_prefix",
        "edge.rate_limit.playlist.per_ip.rate: must be above 0",
        "edge.rate_limit.playlist.per_asn: unknown field",
        "edge.rate_limit.segment: expected a mapping",
        "edge.rate_limit.sign_in: sign-in is limited per_ip only",
        "edge.rate_limit.bogus: unknown field",
    ] {
        assert!(
            text.iter().any(|t| t.contains(want)),
            "missing {want} in {text:#?}"
        );
    }
}

#[test]
fn sessions_are_read_and_checked() {
    let cfg = parse(
        "[edge.sessions]\nidle_timeout = \"30s\"\npublish_interval = \"1s\"\nsecret_file = \"/s\"\n",
    )
    .unwrap();
    assert_eq!(cfg.sessions.idle_timeout, Duration::from_secs(30));
    assert_eq!(cfg.sessions.secret_file, Some(PathBuf::from("/s")));
    let Err(LoadError::Invalid(ConfigErrors(errs))) = parse(
        "[edge.sessions]\nidle_timeout = \"0s\"\npublish_interval = \"2m\"\nlease_ttl = \"1500ms\"\nipv4_prefix = 4\nnope = 1\n",
    ) else {
        panic!("expected validation errors");
    };
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    for want in [
        "edge.sessions.idle_timeout: must be from 1s to 1h",
        "edge.sessions.publish_interval: must be from 50ms to 60s",
        "edge.sessions.lease_ttl: must be whole seconds",
        "edge.sessions.ipv4_prefix",
        "edge.sessions.nope: unknown field",
    ] {
        assert!(
            text.iter().any(|t| t.contains(want)),
            "missing {want} in {text:#?}"
        );
    }
    // A secret file that is too short is a clear error at start.
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, b"tiny").unwrap();
    let s = SessionConfig {
        secret_file: Some(short),
        ..SessionConfig::default()
    };
    assert!(s.secret().unwrap_err().contains("at least 32"));
    assert_eq!(SessionConfig::default().secret().unwrap().len(), 32);
}

//! Token gating end to end: a policy snapshot, the real edge, and tokens minted by an
//! independent issuer (PyJWT with `cryptography`, in `tests/clients/jwt_mint.py`).

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use streamgate_edge::EdgeConfig;
use streamgate_edge::config::{GateConfig, UnknownAsset};
use streamgate_origin::OriginConfig;
use support::{TestEdge, noise, run_client, write};

const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aac\",NAME=\"a\",DEFAULT=YES,URI=\"audio/aac/index.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=1000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"aac\"\n\
video/720p/index.m3u8\n";
const MEDIA: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n\
#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:3.2,\nseg-00001.m4s\n#EXTINF:3.2,\nseg-00002.m4s\n#EXT-X-ENDLIST\n";
const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT6.4S">
  <Period><AdaptationSet mimeType="video/mp4">
    <Representation id="720p" bandwidth="1000"><BaseURL>video/720p/</BaseURL>
      <SegmentTemplate timescale="1000" media="seg-$Number%05d$.m4s" initialization="init.mp4" startNumber="1">
        <SegmentTimeline><S t="0" d="3200" r="1"/></SegmentTimeline></SegmentTemplate>
    </Representation></AdaptationSet></Period></MPD>"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Fixture {
    _dir: tempfile::TempDir,
    edge: TestEdge,
    tokens: serde_json::Map<String, Value>,
    snapshot: (std::path::PathBuf, Value),
}

fn fixture() -> Fixture {
    fixture_with(|_, _| {})
}

/// The fixture, with its snapshot and edge config changed by `tweak` before the start.
fn fixture_with(tweak: impl FnOnce(&mut Value, &mut EdgeConfig)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let o = |p: &str| format!("origin/{p}");
    for a in ["demo", "other"] {
        write(
            dir.path(),
            &o(&format!("{a}/master.m3u8")),
            MASTER.as_bytes(),
        );
        write(dir.path(), &o(&format!("{a}/manifest.mpd")), MPD.as_bytes());
        for r in ["video/720p", "audio/aac"] {
            write(
                dir.path(),
                &o(&format!("{a}/{r}/index.m3u8")),
                MEDIA.as_bytes(),
            );
            write(dir.path(), &o(&format!("{a}/{r}/init.mp4")), &noise(500, 1));
            write(
                dir.path(),
                &o(&format!("{a}/{r}/seg-00001.m4s")),
                &noise(4000, 2),
            );
            write(
                dir.path(),
                &o(&format!("{a}/{r}/seg-00002.m4s")),
                &noise(4000, 3),
            );
        }
    }
    write(dir.path(), "origin/open/master.m3u8", MASTER.as_bytes());
    write(dir.path(), "origin/open/seg-00001.m4s", &noise(4000, 4));

    let t = now();
    let good = json!({"iss": "https://auth.test", "aud": "streamgate", "sub": "v1",
                      "exp": t + 600, "sg_scope": ["demo"]});
    let with = |k: &str, v: Value| {
        let mut c = good.clone();
        c[k] = v;
        c
    };
    let mut specs = vec![];
    for (name, kid, alg, claims) in [
        ("rs256", "rsa-1", "RS256", good.clone()),
        ("es256", "ec-1", "ES256", good.clone()),
        ("rs256_v2", "rsa-1", "RS256", with("sub", json!("v2"))),
        ("eddsa", "ed-1", "EdDSA", good.clone()),
        ("hs256", "hs-1", "HS256", good.clone()),
        ("expired", "rsa-1", "RS256", with("exp", json!(t - 3600))),
        ("nbf_future", "rsa-1", "RS256", with("nbf", json!(t + 3600))),
        (
            "wrong_aud",
            "rsa-1",
            "RS256",
            with("aud", json!("someone-else")),
        ),
        (
            "wrong_iss",
            "rsa-1",
            "RS256",
            with("iss", json!("https://evil.test")),
        ),
        ("alg_none", "rsa-1", "none", good.clone()),
        (
            "hs_with_rsa_public",
            "rsa-1",
            "HS256-with-rsa-public",
            good.clone(),
        ),
        ("unknown_kid", "nope-9", "RS256", good.clone()),
        (
            "other_asset",
            "rsa-1",
            "RS256",
            with("sg_scope", json!(["other"])),
        ),
    ] {
        specs.push(json!({"name": name, "kid": kid, "alg": alg, "claims": claims}));
    }
    // A real key's signature over a payload changed afterwards: the bad-signature case.
    specs.push(json!({"name": "bad_signature", "kid": "rsa-1", "alg": "RS256", "claims": good, "tamper": true}));
    let minted = run_client(
        "jwt",
        "jwt_mint.py",
        &json!({"hs_secret_file": dir.path().join("hs.secret"), "tokens": specs}),
    );
    let snapshot = json!({
        "revision": 1,
        "policies": [
            {"id": "viewers", "rule": {"jwt": {"issuer": "https://auth.test", "audience": "streamgate"}}},
            {"id": "open", "rule": {"public": true}}
        ],
        "assets": [
            {"id": "demo", "policy": "viewers"},
            {"id": "other", "policy": "viewers"},
            {"id": "open", "policy": "open"}
        ],
        "keys": minted["keys"],
    });
    let mut snapshot = snapshot;
    let snap_path = dir.path().join("snapshot.json");
    let mut cfg = EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        gate: GateConfig {
            snapshot: Some(snap_path.clone()),
            reload_interval: std::time::Duration::from_millis(100),
            ..GateConfig::default()
        },
        ..EdgeConfig::default()
    };
    tweak(&mut snapshot, &mut cfg);
    std::fs::write(&snap_path, snapshot.to_string()).unwrap();
    let edge = TestEdge::start(cfg);
    Fixture {
        _dir: dir,
        edge,
        tokens: minted["tokens"].as_object().unwrap().clone(),
        snapshot: (snap_path, snapshot),
    }
}

async fn status_and_reason(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    let reason = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|j| j["reason"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, reason)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_matrix() {
    let f = fixture();
    let c = reqwest::Client::new();
    let url = f.edge.url("/v/demo/video/720p/seg-00001.m4s");
    let tok = |n: &str| f.tokens[n].as_str().unwrap().to_owned();

    let (s, why) = status_and_reason(c.get(&url).send().await.unwrap()).await;
    assert_eq!((s, why.as_str()), (401, "no_credential"));

    for (name, reason) in [
        ("expired", "token_expired"),
        ("nbf_future", "token_not_yet_valid"),
        ("wrong_aud", "wrong_audience"),
        ("wrong_iss", "wrong_issuer"),
        ("bad_signature", "bad_signature"),
        ("alg_none", "algorithm_not_allowed"),
        ("hs_with_rsa_public", "algorithm_not_allowed"),
        ("unknown_kid", "unknown_key"),
        ("other_asset", "scope_mismatch"),
    ] {
        let r = c.get(&url).bearer_auth(tok(name)).send().await.unwrap();
        assert_eq!(r.headers()["content-type"], "application/json", "{name}");
        let (s, why) = status_and_reason(r).await;
        assert_eq!((s, why.as_str()), (403, reason), "{name}");
    }
    for alg in ["rs256", "es256", "eddsa", "hs256"] {
        let r = c.get(&url).bearer_auth(tok(alg)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{alg} in the header");
        // What the gate allowed one viewer must not be kept by shared caches downstream.
        let cc = r.headers()["cache-control"].to_str().unwrap();
        assert!(cc.starts_with("private, max-age="), "{cc}");
    }
    let t = tok("rs256");
    let r = c.get(format!("{url}?token={t}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "query");
    let r = c
        .get(&url)
        .header("cookie", format!("a=b; sg_token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "cookie");
    // The scoped token does not open the other asset; to a valid credential, an unknown
    // asset is 404.
    let r = c
        .get(f.edge.url("/v/other/master.m3u8"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .get(f.edge.url("/v/nosuch/master.m3u8"))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Without a valid credential, an unknown asset answers exactly as a gated one does, so
    // asset ids cannot be enumerated: the same status and body, byte for byte.
    for (what, token) in [("none", None), ("forged", Some(tok("bad_signature")))] {
        let get = |path: &str| {
            let r = c.get(f.edge.url(path));
            match &token {
                Some(t) => r.bearer_auth(t),
                None => r,
            }
        };
        let known = get("/v/demo/master.m3u8").send().await.unwrap();
        let unknown = get("/v/nosuch/master.m3u8").send().await.unwrap();
        assert_eq!(known.status(), unknown.status(), "{what}");
        assert_eq!(
            known.headers()["content-type"],
            unknown.headers()["content-type"]
        );
        assert_eq!(
            known.text().await.unwrap(),
            unknown.text().await.unwrap(),
            "{what}"
        );
    }
    let r = c
        .get(f.edge.url("/v/open/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a public asset needs nothing");
    let cc = r.headers()["cache-control"].to_str().unwrap();
    assert!(cc.starts_with("public, max-age="), "{cc}");
    // Decisions are counted by result and reason, and the revision in force is exported.
    let deny =
        |r: &str| format!("streamgate_edge_gate_decisions_total{{reason=\"{r}\",result=\"deny\"}}");
    assert_eq!(f.edge.metric(&deny("token_expired")).await, 1.0);
    assert_eq!(f.edge.metric(&deny("unknown_asset")).await, 1.0);
    let allow = "streamgate_edge_gate_decisions_total{reason=\"\",result=\"allow\"}";
    assert!(f.edge.metric(allow).await >= 7.0);
    assert_eq!(f.edge.metric("streamgate_edge_policy_revision").await, 1.0);

    // Operators who prefer it can have unknown assets answer 404 to everyone.
    let strict = TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: f._dir.path().join("origin"),
        },
        gate: GateConfig {
            snapshot: Some(f.snapshot.0.clone()),
            unknown_asset: UnknownAsset::NotFound,
            ..GateConfig::default()
        },
        ..EdgeConfig::default()
    });
    let (s, why) = status_and_reason(
        c.get(strict.url("/v/nosuch/master.m3u8"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, why.as_str()), (404, "unknown_asset"));
    let r = c
        .get(strict.url("/v/demo/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_cache_never_serves_without_an_allow() {
    let f = fixture();
    let c = reqwest::Client::new();
    let t = f.tokens["eddsa"].as_str().unwrap();
    let url = f.edge.url("/v/demo/video/720p/seg-00002.m4s");
    let warm = c.get(&url).bearer_auth(t).send().await.unwrap();
    assert_eq!(warm.status(), 200);
    let r = c.get(&url).bearer_auth(t).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    let secret = r.bytes().await.unwrap();
    for bad in [
        None,
        Some("garbage"),
        Some(f.tokens["expired"].as_str().unwrap()),
    ] {
        let mut req = c.get(&url);
        if let Some(b) = bad {
            req = req.bearer_auth(b);
        }
        let r = req.send().await.unwrap();
        assert!(
            r.status() == 401 || r.status() == 403,
            "{bad:?}: {}",
            r.status()
        );
        let body = r.bytes().await.unwrap();
        assert!(
            body.len() < 200
                && !body
                    .windows(64)
                    .any(|w| secret.windows(64).next() == Some(w))
        );
        // HEAD and ranges are gated the same way.
        let mut req = c.head(&url);
        if let Some(b) = bad {
            req = req.bearer_auth(b);
        }
        assert!(req.send().await.unwrap().status().is_client_error());
    }
}

/// Every URI in an HLS playlist.
fn hls_uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with('#') && !line.is_empty() {
            out.push(line.to_owned());
        } else if let Some(i) = line.find("URI=\"") {
            let rest = &line[i + 5..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn query_tokens_are_carried_through_rewritten_manifests() {
    let f = fixture();
    let c = reqwest::Client::new();
    let t = f.tokens["es256"].as_str().unwrap();
    let base = f.edge.url("/v/demo/");
    let r = c
        .get(format!("{base}master.m3u8?token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let master = r.text().await.unwrap();
    let mut fetched = 0;
    for uri in hls_uris(&master) {
        assert!(uri.ends_with(&format!("?token={t}")), "{uri}");
        let pl = c.get(format!("{base}{uri}")).send().await.unwrap();
        assert_eq!(pl.status(), 200, "{uri}");
        let dir = uri.rsplit_once('/').unwrap().0.to_owned();
        let text = pl.text().await.unwrap();
        for seg in hls_uris(&text) {
            assert!(seg.ends_with(&format!("?token={t}")), "{seg}");
            // Only the token in the rewritten URI authorises this request.
            let r = c.get(format!("{base}{dir}/{seg}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{dir}/{seg}");
            fetched += 1;
        }
    }
    assert_eq!(fetched, 6, "3 objects in each of 2 renditions");

    let mpd = c
        .get(format!("{base}manifest.mpd?token={t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(mpd.headers()["cache-control"], "private, no-store");
    let mpd = mpd.text().await.unwrap();
    assert!(
        mpd.contains(&format!("<BaseURL>video/720p/?token={t}</BaseURL>")),
        "{mpd}"
    );
    let media = format!("seg-$Number%05d$.m4s?token={t}");
    assert!(mpd.contains(&format!("media=\"{media}\"")), "{mpd}");
    assert!(mpd.contains(&format!("initialization=\"init.mp4?token={t}\"")));
    // Resolve as a DASH player would: BaseURL, then the template with the token.
    for obj in [
        "init.mp4".to_owned(),
        media.replace("$Number%05d$", "00001"),
        media.replace("$Number%05d$", "00002"),
    ] {
        let obj = if obj.contains('?') {
            obj
        } else {
            format!("{obj}?token={t}")
        };
        let r = c
            .get(format!("{base}video/720p/{obj}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{obj}");
    }
    // A header credential leaves manifests as they are: shared, cacheable, no token inside.
    let r = c
        .get(format!("{base}master.m3u8"))
        .bearer_auth(t)
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["cache-control"], "private, no-store");
    assert_eq!(r.text().await.unwrap(), MASTER);
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_changes_apply_without_restart_and_bad_ones_are_refused() {
    let f = fixture();
    let c = reqwest::Client::new();
    let url = f.edge.url("/v/open/master.m3u8");
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let (path, mut doc) = f.snapshot.clone();
    // A broken snapshot is refused; the one in force stays.
    std::fs::write(&path, b"{\"policies\": [{\"id\": \"Bad Id\"}]}").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    // Rebinding the asset to the token policy takes effect within a few reload intervals.
    doc["revision"] = json!(2);
    doc["assets"][2]["policy"] = json!("viewers");
    std::fs::write(&path, doc.to_string()).unwrap();
    let t0 = std::time::Instant::now();
    while c.get(&url).send().await.unwrap().status() != 401 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(5),
            "snapshot not applied"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A version the farm published: the asset record's origin prefix decides where objects
/// are read from, and the cache key follows it, so a republish is never served stale.
#[tokio::test]
async fn published_versions_are_read_from_their_prefix_and_never_served_stale() {
    let f = fixture();
    let root = f.snapshot.0.parent().unwrap().join("origin");
    for v in ["j1", "j2"] {
        write(
            root.parent().unwrap(),
            &format!("origin/open/{v}/master.m3u8"),
            format!("#EXTM3U\n# version {v}\n").as_bytes(),
        );
    }
    let c = reqwest::Client::new();
    let url = f.edge.url("/v/open/master.m3u8");
    let get = || async {
        let r = c.get(&url).send().await.unwrap();
        let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
        (r.status().as_u16(), cache, r.text().await.unwrap())
    };
    // No prefix: the flat objects, as before.
    let (status, _, body) = get().await;
    assert_eq!((status, body.as_str()), (200, MASTER));
    let (path, mut doc) = f.snapshot.clone();
    let mut apply = |rev: i64, prefix: Value| {
        doc["revision"] = json!(rev);
        doc["assets"][2]["origin_prefix"] = prefix;
        std::fs::write(&path, doc.to_string()).unwrap();
    };
    let wait_body = |want: &'static str| {
        let get = &get;
        async move {
            let t0 = std::time::Instant::now();
            loop {
                let (status, cache, body) = get().await;
                if status == 200 && body.contains(want) {
                    return cache;
                }
                assert!(
                    t0.elapsed() < std::time::Duration::from_secs(5),
                    "still {status} {body:?}, waiting for {want}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    };
    apply(2, json!("open/j1"));
    assert_eq!(wait_body("version j1").await, "MISS");
    assert_eq!(get().await.1, "HIT", "the version's object is cached");
    // Republished: the next request reads the new version, not the cached old one.
    apply(3, json!("open/j2"));
    wait_body("version j2").await;
    let missing = c
        .get(f.edge.url("/v/open/video/720p/index.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "only what the version holds is served"
    );
    // A prefix outside the asset's folder: an operator's snapshot file that says so is
    // refused whole, and the version in force stays (the store's snapshot leaves only
    // that asset out; see the snapshot unit tests).
    apply(4, json!("demo"));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(get().await.2.contains("version j2"));
}

/// Rate limits end to end: the edge's per-network bucket on segments, a policy that turns
/// it off for its assets and limits per token subject instead, 429 with `Retry-After` and
/// the contract's body, other clients unaffected, refill on time, and refusals counted
/// against the network too.
#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_answer_429_with_retry_after_and_spare_other_clients() {
    let f = fixture_with(|snap, cfg| {
        snap["policies"].as_array_mut().unwrap().push(json!({
            "id": "capped",
            "rule": {"jwt": {"issuer": "https://auth.test", "audience": "streamgate"}},
            "limits": {"rate": {"segment": {
                "per_ip": "off",
                "per_subject": {"rate": 0.5, "burst": 3}
            }}}
        }));
        snap["assets"][0]["policy"] = json!("capped");
        let class = streamgate_policy::parse_rate_class(
            "segment",
            &json!({"per_ip": {"rate": 1, "burst": 5}}),
        )
        .unwrap();
        cfg.rate_limit.segment = class;
    });
    let from = |last: u8| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, last]))
            .build()
            .unwrap()
    };
    let (a, b, c) = (from(1), from(2), from(3));
    let open_seg = f.edge.url("/v/open/seg-00001.m4s");
    // The edge's bucket: 5 at once, then 429.
    for i in 0..5 {
        let r = a.get(&open_seg).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i} within the burst");
    }
    let r = a.get(&open_seg).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["reason"], "rate_limited");
    assert!(
        body["message"].as_str().unwrap().contains("network"),
        "{body}"
    );
    // Another client keeps getting 200.
    assert_eq!(b.get(&open_seg).send().await.unwrap().status(), 200);
    // After Retry-After the bucket has a token again.
    tokio::time::sleep(std::time::Duration::from_millis(1050)).await;
    assert_eq!(a.get(&open_seg).send().await.unwrap().status(), 200);

    // The capped policy: no per-network limit (the same exhausted network passes), a
    // per-subject bucket of 3 instead, which a token of another subject does not share.
    let tok = |n: &str| f.tokens[n].as_str().unwrap().to_owned();
    let demo_seg = f.edge.url("/v/demo/video/720p/seg-00001.m4s");
    let get = |client: &reqwest::Client, url: &str, token: &str| {
        client.get(url).bearer_auth(token).send()
    };
    for i in 0..3 {
        let r = get(&a, &demo_seg, &tok("rs256")).await.unwrap();
        assert_eq!(r.status(), 200, "subject v1, request {i}");
    }
    // The same subject through another network and another key: still the same bucket.
    let r = get(&b, &demo_seg, &tok("es256")).await.unwrap();
    assert_eq!(r.status(), 429);
    // A token every 2 s, less what the three requests took.
    let wait = r.headers()["retry-after"].to_str().unwrap().to_owned();
    assert!(wait == "2" || wait == "1", "Retry-After {wait}");
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("token"),
        "{body}"
    );
    assert_eq!(
        get(&a, &demo_seg, &tok("rs256_v2")).await.unwrap().status(),
        200
    );
    // Playlists are another class, with no limit here.
    let master = f.edge.url("/v/demo/master.m3u8");
    for _ in 0..10 {
        assert_eq!(get(&a, &master, &tok("rs256")).await.unwrap().status(), 200);
    }

    // Refusals count against the network: a client guessing without a token gets its 401s,
    // then 429 once the edge's bucket is empty.
    let statuses: Vec<u16> = futures_statuses(&c, &demo_seg, 7).await;
    assert_eq!(&statuses[..5], &[401; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[429, 429], "{statuses:?}");

    let limited = |space: &str| {
        format!("streamgate_edge_rate_limited_total{{class=\"segment\",space=\"{space}\"}}")
    };
    assert_eq!(f.edge.metric(&limited("ip")).await, 3.0);
    assert_eq!(f.edge.metric(&limited("subject")).await, 1.0);
}

async fn futures_statuses(c: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.get(url).send().await.unwrap().status().as_u16());
    }
    out
}

/// Stream caps on one edge: players with header tokens are counted by their CMCD `sid`
/// (query or header), or per client network without one; MPDs carry the minted session
/// id escaped for XML; a forged id is no session.
#[tokio::test(flavor = "multi_thread")]
async fn end_oldest_ends_the_oldest_session_for_a_new_one() {
    let f = fixture_with(|snap, _| {
        snap["policies"].as_array_mut().unwrap().push(json!({
            "id": "newest-wins",
            "rule": {"jwt": {"issuer": "https://auth.test", "audience": "streamgate"}},
            "limits": {"max_streams": 1, "on_stream_limit": "end_oldest"}
        }));
        snap["assets"][0]["policy"] = json!("newest-wins");
    });
    let token = f.tokens["rs256"].as_str().unwrap().to_owned();
    let seg = f.edge.url("/v/demo/video/720p/seg-00001.m4s");
    let c = reqwest::Client::new();
    let with_sid = |sid: &str| {
        c.get(&seg)
            .bearer_auth(&token)
            .header("CMCD-Session", format!("sid=\"{sid}\""))
            .send()
    };
    assert_eq!(with_sid("tv").await.unwrap().status(), 200);
    // The viewer starts on another device: the first one's session is ended.
    assert_eq!(with_sid("phone").await.unwrap().status(), 200);
    let r = with_sid("tv").await.unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_ended".into()));
    assert_eq!(with_sid("phone").await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_caps_count_cmcd_sessions_and_networks() {
    let f = fixture_with(|snap, _| {
        snap["policies"].as_array_mut().unwrap().push(json!({
            "id": "one-stream",
            "rule": {"jwt": {"issuer": "https://auth.test", "audience": "streamgate"}},
            "limits": {"max_streams": 1}
        }));
        snap["assets"][0]["policy"] = json!("one-stream");
    });
    let tok = |n: &str| f.tokens[n].as_str().unwrap().to_owned();
    let seg = f.edge.url("/v/demo/video/720p/seg-00001.m4s");
    let c = reqwest::Client::new();
    let with_sid = |sid: &str| {
        c.get(&seg)
            .bearer_auth(tok("rs256"))
            .header("CMCD-Session", format!("sid=\"{sid}\",cid=\"demo\""))
            .send()
    };
    assert_eq!(with_sid("player-1").await.unwrap().status(), 200);
    assert_eq!(with_sid("player-1").await.unwrap().status(), 200);
    let r = with_sid("player-2").await.unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    // The same session id in the query's CMCD is the same session.
    let q = format!("{seg}?CMCD=bl%3D3000%2Csid%3D%22player-1%22");
    let r = c.get(&q).bearer_auth(tok("rs256")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Without CMCD, one session per network: another one for this subject.
    let r = c.get(&seg).bearer_auth(tok("rs256")).send().await.unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    // An HLS master with a query token starts a session for subject v2: every URI of the
    // rewritten playlist carries its id next to the token.
    let v2 = tok("rs256_v2");
    let r = c
        .get(f.edge.url(&format!("/v/demo/master.m3u8?token={v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    let at = body.find("sg_sid=").expect("a session id") + 7;
    let sid = body[at..at + 22].to_owned();
    for uri in hls_uris(&body) {
        assert!(uri.ends_with(&format!("?token={v2}&sg_sid={sid}")), "{uri}");
    }
    // Its media playlist carries the session on to the segments.
    let r = c
        .get(f.edge.url(&format!(
            "/v/demo/video/720p/index.m3u8?token={v2}&sg_sid={sid}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let media = r.text().await.unwrap();
    assert!(
        media.contains(&format!("seg-00001.m4s?token={v2}&sg_sid={sid}")),
        "{media}"
    );
    // Its segments are that session; the same subject without it is another (refused).
    let r = c
        .get(format!("{seg}?token={v2}&sg_sid={sid}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(&seg).bearer_auth(&v2).send().await.unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    // A forged id is no session of v2's.
    let mut forged = sid.clone().into_bytes();
    forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let r = c
        .get(format!("{seg}?token={v2}&sg_sid={forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    // An MPD gets no session id (see the pipeline): a DASH player without CMCD is one
    // session per network, here v2's second one, refused.
    let r = c
        .get(f.edge.url(&format!("/v/demo/manifest.mpd?token={v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    // A new entry manifest is a new session: refused while the first plays.
    let r = c
        .get(f.edge.url(&format!("/v/demo/master.m3u8?token={v2}")))
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_reason(r).await, (403, "stream_limit".into()));
    assert_eq!(
        f.edge
            .metric("streamgate_edge_gate_decisions_total{reason=\"stream_limit\",result=\"deny\"}")
            .await,
        6.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_every_request_and_no_credential() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("access.log");
    let path = log.clone();
    let f = fixture_with(move |_, cfg| {
        cfg.access_log.path = Some(path);
        cfg.access_log.ipv4_prefix = 24;
    });
    let tok = |n: &str| f.tokens[n].as_str().unwrap().to_owned();
    let c = reqwest::Client::new();
    let mut sent = Vec::new();
    // A query token, a bearer token, a forged and an expired one, none, a HEAD, a 404.
    for (name, url, bearer, method) in [
        (
            "query",
            format!("/v/demo/master.m3u8?token={}", tok("rs256")),
            None,
            "GET",
        ),
        (
            "bearer",
            "/v/demo/video/720p/seg-00001.m4s".to_owned(),
            Some(tok("es256")),
            "GET",
        ),
        (
            "forged",
            format!("/v/demo/master.m3u8?token={}", tok("bad_signature")),
            None,
            "GET",
        ),
        (
            "expired",
            "/v/demo/master.m3u8".to_owned(),
            Some(tok("expired")),
            "GET",
        ),
        ("none", "/v/demo/master.m3u8".to_owned(), None, "GET"),
        (
            "head",
            format!("/v/demo/video/720p/init.mp4?token={}", tok("eddsa")),
            None,
            "HEAD",
        ),
        ("missing", "/nowhere?token=abc".to_owned(), None, "GET"),
    ] {
        let mut r = c.request(method.parse().unwrap(), f.edge.url(&url));
        if let Some(b) = &bearer {
            r = r.bearer_auth(b);
        }
        let status = r.send().await.unwrap().status().as_u16();
        sent.push((
            name,
            url.split('?').next().unwrap().to_owned(),
            status,
            method,
        ));
    }
    // The writer flushes within 100 ms of going idle.
    let mut text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= sent.len() {
            break;
        }
    }
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), sent.len(), "{text}");
    for ((name, path, status, method), l) in sent.iter().zip(&lines) {
        assert_eq!(l["path"], *path, "{name}: {l}");
        assert_eq!(l["status"], *status, "{name}: {l}");
        assert_eq!(l["method"], *method, "{name}: {l}");
        assert_eq!(l["client"], "127.0.0.0", "{name}: cut to /24: {l}");
        assert_eq!(l["proto"], "h1");
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        if path.starts_with("/v/demo/") {
            assert_eq!(l["asset"], "demo", "{name}: {l}");
        }
        if *status >= 400 {
            assert!(
                l["reason"].is_string(),
                "{name}: a refusal names its reason: {l}"
            );
        } else {
            assert!(l.get("reason").is_none(), "{name}: {l}");
        }
    }
    assert_eq!(
        lines[1]["cache"]
            .as_str()
            .map(|c| c == "MISS" || c == "HIT"),
        Some(true)
    );
    assert!(lines[1]["bytes"].as_u64().unwrap() > 0);
    // No credential, nor any part of one, anywhere in the log.
    for name in ["rs256", "es256", "bad_signature", "expired", "eddsa"] {
        let t = tok(name);
        for part in t.split('.') {
            assert!(
                !text.contains(part),
                "{name}'s {part:.12} is in the access log"
            );
        }
    }
    assert!(!text.contains("token=") && !text.contains("abc"), "{text}");
}

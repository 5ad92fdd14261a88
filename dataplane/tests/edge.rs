//! End-to-end tests of the edge: the real Pingora server, a real filesystem or HTTP origin,
//! and an independent HTTP client (reqwest).

mod support;

use std::time::Duration;

use bytes::Bytes;

use streamgate_edge::EdgeConfig;
use streamgate_edge::config::{CacheConfig, CorsConfig};
use streamgate_origin::OriginConfig;
use support::{TestEdge, TestOrigin, Trickle, http_origin_cfg, noise, raw_request, write};

fn fs_edge(dir: &std::path::Path) -> TestEdge {
    TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.join("origin"),
        },
        ..EdgeConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn serves_with_content_types_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let seg = noise(1 << 20, 1);
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    write(dir.path(), "origin/demo/manifest.mpd", b"<MPD/>");
    write(dir.path(), "origin/demo/video/720p/init.mp4", b"vinit");
    write(dir.path(), "origin/demo/audio/aac/init.mp4", b"ainit");
    write(dir.path(), "origin/demo/video/720p/seg-00001.m4s", &seg);
    let edge = fs_edge(dir.path());
    let c = reqwest::Client::new();
    for (path, ctype) in [
        ("/v/demo/master.m3u8", "application/vnd.apple.mpegurl"),
        ("/v/demo/manifest.mpd", "application/dash+xml"),
        ("/v/demo/video/720p/init.mp4", "video/mp4"),
        ("/v/demo/audio/aac/init.mp4", "audio/mp4"),
        ("/v/demo/video/720p/seg-00001.m4s", "video/iso.segment"),
    ] {
        let r = c.get(edge.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ctype, "{path}");
        assert_eq!(r.headers()["x-cache"], "MISS", "{path}");
        assert_eq!(r.headers()["accept-ranges"], "bytes");
        assert!(r.headers().contains_key("cache-control"));
        // A miss streams while the origin read is under way; once its body is complete,
        // the object is a hit.
        r.bytes().await.unwrap();
        let r2 = c.get(edge.url(path)).send().await.unwrap();
        assert_eq!(r2.headers()["x-cache"], "HIT", "{path}");
    }
    let body = c
        .get(edge.url("/v/demo/video/720p/seg-00001.m4s"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, seg);
    // Manifests and segments have their own TTLs.
    let m = c.get(edge.url("/v/demo/master.m3u8")).send().await.unwrap();
    let s = c
        .get(edge.url("/v/demo/video/720p/init.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(m.headers()["cache-control"], "public, max-age=2");
    assert_eq!(s.headers()["cache-control"], "public, max-age=86400");
    assert_eq!(
        edge.metric("streamgate_edge_origin_requests_total{origin=\"fs\",result=\"ok\"}")
            .await,
        5.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ranges_head_and_validators() {
    let dir = tempfile::tempdir().unwrap();
    let seg = noise(100_000, 2);
    write(dir.path(), "origin/a/seg.m4s", &seg);
    let edge = fs_edge(dir.path());
    let c = reqwest::Client::new();
    let url = edge.url("/v/a/seg.m4s");
    for (range, lo, hi) in [
        ("bytes=0-0", 0usize, 0usize),
        ("bytes=10-20", 10, 20),
        ("bytes=99990-", 99_990, 99_999),
        ("bytes=-5", 99_995, 99_999),
        ("bytes=50000-999999", 50_000, 99_999),
    ] {
        let r = c.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {lo}-{hi}/100000").as_str()
        );
        assert_eq!(r.bytes().await.unwrap(), seg.slice(lo..=hi), "{range}");
    }
    let r = c
        .get(&url)
        .header("range", "bytes=100000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */100000");
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "range_not_satisfiable");

    let h = c.head(&url).send().await.unwrap();
    assert_eq!(h.status(), 200);
    assert_eq!(h.headers()["content-length"], "100000");
    assert!(h.bytes().await.unwrap().is_empty());

    let etag = c.get(&url).send().await.unwrap().headers()["etag"].clone();
    let r = c
        .get(&url)
        .header("if-none-match", etag.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // If-Range with a stale validator gets the whole object.
    let r = c
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
}

/// Parses a `multipart/byteranges` body with Python's `email` package (an independent
/// MIME parser) and returns each part's `Content-Range` and bytes.
fn python_parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    use std::io::Write;
    let script = r#"
import email.parser, email.policy, json, sys
ct = sys.argv[1]
raw = b"Content-Type: " + ct.encode() + b"\r\nMIME-Version: 1.0\r\n\r\n" + sys.stdin.buffer.read()
msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
assert msg.is_multipart(), "not multipart"
assert not msg.defects, msg.defects
out = [{"range": p["Content-Range"], "type": p.get_content_type(),
        "hex": p.get_payload(decode=True).hex()} for p in msg.iter_parts()]
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script, content_type])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python's email parser refused the body"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["type"], "video/iso.segment");
            let hex = p["hex"].as_str().unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (p["range"].as_str().unwrap().to_owned(), bytes)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_range_requests_get_multipart_byteranges() {
    let dir = tempfile::tempdir().unwrap();
    let seg = noise(100_000, 5);
    write(dir.path(), "origin/a/seg-1.m4s", &seg);
    let edge = fs_edge(dir.path());
    let c = reqwest::Client::new();
    let url = edge.url("/v/a/seg-1.m4s");
    // Multipart answers come from the cache (a miss streams, and a streamed multi-range
    // request gets the whole object, as RFC 9110 allows): warm it first.
    assert_eq!(
        c.get(url.clone())
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        seg
    );
    for (i, range) in [
        "bytes=0-99, 5000-5999, -10",
        "bytes=90000-,0-0",
        // Overlapping ranges are merged: two parts, no byte twice.
        "bytes=10-19,15-29,50-59",
    ]
    .into_iter()
    .enumerate()
    {
        let r = c
            .get(url.clone())
            .header("range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["x-cache"], "HIT");
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
        let body = r.bytes().await.unwrap();
        let parts = python_parts(&ct, &body);
        let want: Vec<(u64, u64)> = match i {
            0 => vec![(0, 99), (5000, 5999), (99_990, 99_999)],
            1 => vec![(90_000, 99_999), (0, 0)],
            _ => vec![(10, 29), (50, 59)],
        };
        assert_eq!(parts.len(), want.len(), "{range}");
        for ((cr, bytes), (a, b)) in parts.iter().zip(want) {
            assert_eq!(cr, &format!("bytes {a}-{b}/100000"));
            assert_eq!(&bytes[..], &seg[a as usize..=b as usize]);
        }
    }
    // Ranges that merge into one are a plain 206; none satisfiable is a 416.
    let r = c
        .get(url.clone())
        .header("range", "bytes=0-9,10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 0-19/100000");
    let r = c
        .get(url.clone())
        .header("range", "bytes=200000-,300000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // A multi-range request with a stale If-Range gets the whole object.
    let r = c
        .get(url)
        .header("range", "bytes=0-1,5-6")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), seg);
}

#[tokio::test(flavor = "multi_thread")]
async fn traversal_never_returns_content() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "secret.txt", b"TOP-SECRET");
    write(dir.path(), "origin/demo/ok.m3u8", b"#EXTM3U");
    let edge = fs_edge(dir.path());
    for path in [
        "/v/demo/../../secret.txt",
        "/v/demo/%2e%2e/%2e%2e/secret.txt",
        "/v/demo/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/v/demo/..%2f..%2fsecret.txt",
        "/v/..%5c..%5csecret.txt",
        "/v/demo/%00",
        "/v/demo//ok.m3u8",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let resp = raw_request(edge.http, raw.as_bytes()).await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
        assert!(!resp.contains("TOP-SECRET"), "{path} leaked");
        assert!(resp.contains("\"error\":\"bad_request\""), "{path}: {resp}");
        assert!(
            !resp.to_ascii_lowercase().contains("x-cache"),
            "{path}: the cache was not consulted"
        );
    }
    let long = format!("/v/demo/{}", "a".repeat(3000));
    let raw = format!("GET {long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        raw_request(edge.http, raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 400")
    );

    let c = reqwest::Client::new();
    let r = c.get(edge.url("/v/demo/missing.m4s")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "not_found");
    assert!(j["reason"].is_string());
    let r = c
        .get(edge.url("/v/nosuchasset/master.m3u8"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c.post(edge.url("/v/demo/ok.m3u8")).send().await.unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_concurrent_misses_make_one_origin_read() {
    let origin = TestOrigin::start().await;
    let seg = noise(2 << 20, 3);
    origin.put("demo/video/720p/seg-00007.m4s", seg.clone());
    // The origin is slow, so every request arrives while the first read is in flight.
    origin.set_delay(Duration::from_millis(300));
    let edge = TestEdge::start(EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(10)),
        ..EdgeConfig::default()
    });
    let url = edge.url("/v/demo/video/720p/seg-00007.m4s");
    // 10 HTTP/2 connections carrying 50 streams each: 500 requests in flight at once.
    let clients: Vec<reqwest::Client> = (0..10)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .build()
                .unwrap()
        })
        .collect();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(500));
    let mut tasks = Vec::new();
    for i in 0..500 {
        let c = clients[i % 10].clone();
        let url = url.clone();
        let b = barrier.clone();
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            r.bytes().await.unwrap()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), seg);
    }
    assert_eq!(origin.reads("demo/video/720p/seg-00007.m4s"), 1);
    assert_eq!(
        edge.metric("streamgate_edge_origin_requests_total{origin=\"http\",result=\"ok\"}")
            .await,
        1.0
    );
}

/// A 2 MiB segment that the origin trickles in 64 KiB chunks every 50 ms (about 1.6 s).
async fn trickling_edge(die_after: Option<usize>) -> (TestOrigin, TestEdge, Bytes) {
    let origin = TestOrigin::start().await;
    let seg = noise(2 << 20, 11);
    origin.put("demo/video/720p/seg-00001.m4s", seg.clone());
    origin.set_trickle(Some(Trickle {
        chunk: 64 << 10,
        every: Duration::from_millis(50),
        die_after,
    }));
    let edge = TestEdge::start(EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(10)),
        ..EdgeConfig::default()
    });
    (origin, edge, seg)
}

#[tokio::test(flavor = "multi_thread")]
async fn misses_stream_to_the_first_requester_and_every_waiter() {
    let (origin, edge, seg) = trickling_edge(None).await;
    let url = edge.url("/v/demo/video/720p/seg-00001.m4s");
    let c = reqwest::Client::new();
    // The first byte reaches the viewer long before the origin has sent the whole body.
    let t0 = std::time::Instant::now();
    let mut r = c.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.content_length(), Some(seg.len() as u64));
    let first = r.chunk().await.unwrap().unwrap();
    let ttfb = t0.elapsed();
    assert!(!first.is_empty());
    // 199 more readers, h2 and h1, joining at once and while the fill is under way.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..199usize {
        let c = if i % 2 == 0 { h2.clone() } else { c.clone() };
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 10) as u64 * 100)).await;
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap()
        }));
    }
    // A range in the middle, asked for while the fill is in flight.
    let part = c
        .get(url.clone())
        .header("range", "bytes=1048576-1048675")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), seg.slice(1048576..1048676));
    let mut body = first.to_vec();
    while let Some(c) = r.chunk().await.unwrap() {
        body.extend_from_slice(&c);
    }
    let total = t0.elapsed();
    assert_eq!(body, seg);
    eprintln!("first byte after {ttfb:?}, whole body after {total:?}");
    assert!(
        ttfb < Duration::from_millis(400) && total > Duration::from_millis(1200),
        "first byte {ttfb:?}, total {total:?}: the edge must not buffer the whole body"
    );
    for t in tasks {
        assert_eq!(t.await.unwrap(), seg);
    }
    // One origin read for all of them, and then the object is a cache hit.
    assert_eq!(origin.reads("demo/video/720p/seg-00001.m4s"), 1);
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(r.headers().contains_key("etag"));
    assert_eq!(r.bytes().await.unwrap(), seg);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_origin_that_dies_mid_body_resets_every_stream_and_caches_nothing() {
    let (origin, edge, seg) = trickling_edge(Some(512 << 10)).await;
    let url = edge.url("/v/demo/video/720p/seg-00001.m4s");
    let c = reqwest::Client::new();
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20usize {
        let c = if i % 2 == 0 { h2.clone() } else { c.clone() };
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 4) as u64 * 60)).await;
            let r = c.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await
        }));
    }
    for t in tasks {
        // Never a short body that looks complete: the transfer fails.
        let got = t.await.unwrap();
        assert!(
            got.is_err(),
            "a broken fill must not end as a complete body: {got:?}"
        );
    }
    assert_eq!(origin.reads("demo/video/720p/seg-00001.m4s"), 1);
    // Nothing was stored: the next request reads the origin again, and gets it whole.
    origin.set_trickle(None);
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.bytes().await.unwrap(), seg);
    assert_eq!(origin.reads("demo/video/720p/seg-00001.m4s"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_objects_reach_the_origin_once_per_negative_ttl() {
    let origin = TestOrigin::start().await;
    origin.set_delay(Duration::from_millis(100));
    let ttl = Duration::from_millis(800);
    let edge = TestEdge::start(EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(5)),
        cache: CacheConfig {
            not_found_ttl: ttl,
            ..CacheConfig::default()
        },
        ..EdgeConfig::default()
    });
    let url = edge.url("/v/demo/video/720p/seg-99999.m4s");
    let c = reqwest::Client::new();
    let burst = |n: usize| {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (c, url) = (c.clone(), url.clone());
                tokio::spawn(async move {
                    let r = c.get(url).send().await.unwrap();
                    let cache = r.headers()["x-cache"].to_str().unwrap().to_owned();
                    let status = r.status();
                    let body: serde_json::Value = r.json().await.unwrap();
                    (status, cache, body)
                })
            })
            .collect();
        async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    // A concurrent burst collapses into one origin read, and every answer is the same 404.
    for (status, _, body) in burst(100).await {
        assert_eq!(status, 404);
        assert_eq!(body["error"], "not_found");
    }
    assert_eq!(origin.reads("demo/video/720p/seg-99999.m4s"), 1);
    // Inside the TTL, later requests are answered from the negative entry.
    for (status, cache, _) in burst(50).await {
        assert_eq!(status, 404);
        assert_eq!(cache, "HIT");
    }
    assert_eq!(origin.reads("demo/video/720p/seg-99999.m4s"), 1);
    // The object appears at the origin: once the TTL has passed, it is served.
    origin.put("demo/video/720p/seg-99999.m4s", noise(1000, 9));
    tokio::time::sleep(ttl + Duration::from_millis(200)).await;
    let r = c.get(url.clone()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(origin.reads("demo/video/720p/seg-99999.m4s"), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn origin_failures_serve_stale_or_clean_errors() {
    let origin = TestOrigin::start().await;
    let seg = noise(50_000, 4);
    origin.put("a/seg-1.m4s", seg.clone());
    origin.put("a/slow.m4s", noise(10, 5));
    let edge = TestEdge::start(EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_millis(500)),
        cache: CacheConfig {
            segment_ttl: Duration::from_millis(300),
            stale_if_error: Duration::from_secs(60),
            ..CacheConfig::default()
        },
        ..EdgeConfig::default()
    });
    let c = reqwest::Client::new();
    let r = c.get(edge.url("/v/a/seg-1.m4s")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");

    // A slow origin: the uncached object times out with a 504 JSON error.
    origin.set_delay(Duration::from_secs(3));
    let r = c.get(edge.url("/v/a/slow.m4s")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "origin_timeout");
    origin.set_delay(Duration::ZERO);

    origin.stop().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Past its TTL, with the origin gone: served stale, byte for byte.
    let r = c.get(edge.url("/v/a/seg-1.m4s")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert_eq!(r.bytes().await.unwrap(), seg);
    // Never cached, origin gone: a clean 502.
    let r = c.get(edge.url("/v/a/other.m4s")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let j: serde_json::Value = r.json().await.unwrap();
    assert_eq!(j["error"], "origin_unavailable");
}

#[tokio::test(flavor = "multi_thread")]
async fn large_objects_bypass_the_cache_and_stream() {
    let origin = TestOrigin::start().await;
    let big = noise(3 << 20, 6);
    origin.put("a/big.mp4", big.clone());
    let edge = TestEdge::start(EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(5)),
        cache: CacheConfig {
            max_object_bytes: 1 << 20,
            ..CacheConfig::default()
        },
        ..EdgeConfig::default()
    });
    let c = reqwest::Client::new();
    let r = c.get(edge.url("/v/a/big.mp4")).send().await.unwrap();
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    assert_eq!(
        r.headers()["content-length"],
        (3usize << 20).to_string().as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), big);
    let r = c
        .get(edge.url("/v/a/big.mp4"))
        .header("range", "bytes=1000000-1000099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), big.slice(1_000_000..1_000_100));
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_tls_h2_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "origin/d/master.m3u8",
        b"#EXTM3U\n#EXT-X-VERSION:7\n",
    );
    let tls = streamgate_edge::dev_certificate(&dir.path().join("tls")).unwrap();
    let edge = TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        tls: Some(tls),
        cors: CorsConfig {
            allow_origins: vec!["https://player.example".into()],
            ..CorsConfig::default()
        },
        ..EdgeConfig::default()
    });
    let c = reqwest::Client::new();
    let r = c
        .get(edge.url("/v/d/master.m3u8"))
        .header("origin", "https://player.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://player.example"
    );
    let r = c
        .get(edge.url("/v/d/master.m3u8"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("access-control-allow-origin"));
    let r = c
        .request(reqwest::Method::OPTIONS, edge.url("/v/d/master.m3u8"))
        .header("origin", "https://player.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "range")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["access-control-allow-headers"], "range");

    // TLS with ALPN h2, same bytes as plain HTTP/1.1.
    let tc = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let plain = c.get(edge.url("/v/d/master.m3u8")).send().await.unwrap();
    assert_eq!(plain.version(), reqwest::Version::HTTP_11);
    let plain = plain.bytes().await.unwrap();
    let r = tc
        .get(format!(
            "https://localhost:{}/v/d/master.m3u8",
            edge.tls.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), plain);
    // h2c with prior knowledge on the plain port.
    let h2c = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c.get(edge.url("/v/d/master.m3u8")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.unwrap(), plain);

    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/nope", 404)] {
        let r = c.get(format!("{}{path}", edge.admin)).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let m = c
        .get(format!("{}/metrics", edge.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "streamgate_edge_requests_total{cache=\"MISS\",proto=\"h1\",status=\"200\"}",
        "streamgate_edge_response_body_bytes_total",
        "streamgate_edge_origin_latency_seconds_bucket",
        "streamgate_edge_cache_bytes",
    ] {
        assert!(m.contains(name), "missing {name}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let origin = TestOrigin::start().await;
    origin.put("a/seg.m4s", noise(1000, 7));
    origin.set_delay(Duration::from_millis(800));
    let mut cfg = EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(5)),
        ..EdgeConfig::default()
    };
    cfg.shutdown_grace = Duration::from_secs(2);
    let edge = TestEdge::start_with_grace(cfg);
    let url = edge.url("/v/a/seg.m4s");
    let inflight = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    // Shut down only once the request is in flight: the edge has asked the origin for it.
    let t0 = std::time::Instant::now();
    while origin.reads("a/seg.m4s") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopper = tokio::task::spawn_blocking(move || drop(edge));
    // The request that was in flight when the shutdown began still completes.
    assert_eq!(inflight.await.unwrap().unwrap(), 200);
    stopper.await.unwrap();
}

/// Requests a client pipelines on one keep-alive connection are all answered, in order,
/// and a request that does not parse gets a 400 with the JSON error body (then the
/// connection closes: what follows it cannot be framed).
#[tokio::test(flavor = "multi_thread")]
async fn pipelined_requests_in_order_and_malformed_ones_get_400() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/a.m3u8", b"#EXTM3U\n#A\n");
    write(dir.path(), "origin/demo/b.m3u8", b"#EXTM3U\n#B\n");
    let edge = fs_edge(dir.path());
    let get = |path: &str, last: bool| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: t\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    let raw = [
        get("/v/demo/a.m3u8", false),
        get("/v/demo/b.m3u8", false),
        get("/v/demo/missing.m3u8", false),
        get("/v/demo/a.m3u8", true),
    ]
    .concat();
    let out = raw_request(edge.http, raw.as_bytes()).await;
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "200", "404", "200"], "{out}");
    let bodies: Vec<usize> = ["#A", "#B", "#A"]
        .iter()
        .map(|b| out.find(b).unwrap_or(usize::MAX))
        .collect();
    assert!(bodies[0] < bodies[1], "responses in request order: {out}");
    assert!(out.rfind("#A") > out.find("#B"), "{out}");

    for bad in [
        "GET /v/demo/a.m3u8 HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        "GET /v/demo/a.m3u8 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "GET /v/demo/a.m3u8 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        "G\x01T / HTTP/1.1\r\nHost: t\r\n\r\n",
    ] {
        let out = raw_request(edge.http, bad.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{bad:?} -> {out}");
        assert!(out.contains("application/json"), "{out}");
        assert!(out.contains(r#""error":"bad_request""#), "{out}");
    }
    // A good request after a pipelined one that is bad: the good one is answered, then
    // the 400, then the connection ends.
    let raw = format!(
        "{}GET / HTTP/1.1\r\nHost: t\r\nBad header\r\n\r\n",
        get("/v/demo/b.m3u8", false)
    );
    let out = raw_request(edge.http, raw.as_bytes()).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("#B") && out.contains("HTTP/1.1 400"), "{out}");
}

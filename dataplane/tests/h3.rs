//! HTTP/3 against an independent client: aioquic (PyPI), driven through
//! `tests/clients/h3_client.py`. Responses over HTTP/3 must match HTTP/1.1 byte for byte.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use streamgate_edge::EdgeConfig;
use streamgate_edge::config::Http3Config;
use streamgate_origin::OriginConfig;
use support::{TestEdge, TestOrigin, http_origin_cfg, noise, run_client, venv_python, write};

struct H3Response {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

struct H3Run {
    alpn: Vec<String>,
    peer_certs: Vec<String>,
    responses: Vec<Result<H3Response, String>>,
}

/// Runs the aioquic client with `job` and parses what it prints.
fn h3(port: u16, requests: Vec<Value>, extra: Value) -> H3Run {
    let mut job = json!({"host": "127.0.0.1", "port": port, "server_name": "localhost",
                         "requests": requests, "timeout": 30});
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    let v = run_client("aioquic", "h3_client.py", &job);
    let b64 = base64::engine::general_purpose::STANDARD;
    H3Run {
        alpn: v["alpn"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap_or("").to_owned())
            .collect(),
        peer_certs: v["peer_cert_sha256"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        responses: v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r.get("error") {
                Some(e) => Err(e.to_string()),
                None => Ok(H3Response {
                    status: r["status"].as_u64().unwrap() as u16,
                    headers: r["headers"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                        .collect(),
                    body: b64.decode(r["body_b64"].as_str().unwrap()).unwrap(),
                }),
            })
            .collect(),
    }
}

fn get(path: &str, headers: &[(&str, &str)]) -> Value {
    json!({"path": path, "headers": headers})
}

fn tls_edge(dir: &std::path::Path, origin: OriginConfig, http3: Http3Config) -> TestEdge {
    let tls = streamgate_edge::dev_certificate(&dir.join("tls")).unwrap();
    TestEdge::start(EdgeConfig {
        origin,
        tls: Some(tls),
        http3,
        ..EdgeConfig::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_responses_match_http1_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let seg = noise(1 << 20, 11);
    write(
        dir.path(),
        "origin/demo/master.m3u8",
        b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nvideo/720p/index.m3u8\n",
    );
    write(
        dir.path(),
        "origin/demo/video/720p/index.m3u8",
        b"#EXTM3U\n#EXTINF:3.2,\nseg-00001.m4s\n#EXT-X-ENDLIST\n",
    );
    write(dir.path(), "origin/demo/video/720p/seg-00001.m4s", &seg);
    let edge = tls_edge(
        dir.path(),
        OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        Http3Config::default(),
    );
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("/v/demo/master.m3u8", vec![]),
        ("/v/demo/video/720p/index.m3u8", vec![]),
        ("/v/demo/video/720p/seg-00001.m4s", vec![]),
        (
            "/v/demo/video/720p/seg-00001.m4s",
            vec![("range", "bytes=1000-1999")],
        ),
        (
            "/v/demo/video/720p/seg-00001.m4s",
            vec![("range", "bytes=-100")],
        ),
        (
            "/v/demo/video/720p/seg-00001.m4s",
            vec![("range", "bytes=2000000-")],
        ),
        ("/v/demo/missing.m4s", vec![]),
        ("/v/demo/a%2f..%2f..%2fetc%2fpasswd", vec![]),
    ];
    // Warm the cache over HTTP/1.1 so both protocols see the same x-cache.
    let c = reqwest::Client::new();
    for (p, _) in &cases {
        c.get(edge.url(p)).send().await.unwrap();
    }
    let run = tokio::task::spawn_blocking({
        let port = edge.tls.port();
        let reqs = cases.iter().map(|(p, h)| get(p, h)).collect();
        move || h3(port, reqs, json!({}))
    })
    .await
    .unwrap();
    assert_eq!(run.alpn, ["h3"], "the client did not negotiate HTTP/3");
    for ((path, headers), got) in cases.iter().zip(run.responses) {
        let got = got.unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut req = c.get(edge.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let want = req.send().await.unwrap();
        assert_eq!(got.status, want.status().as_u16(), "{path} {headers:?}");
        for h in [
            "content-type",
            "content-length",
            "content-range",
            "etag",
            "cache-control",
            "accept-ranges",
            "x-cache",
        ] {
            assert_eq!(
                got.headers.get(h).map(String::as_str),
                want.headers().get(h).map(|v| v.to_str().unwrap()),
                "{path} {headers:?}: header {h}"
            );
        }
        assert_eq!(
            got.body,
            want.bytes().await.unwrap(),
            "{path} {headers:?}: body"
        );
    }

    // Alt-Svc announces HTTP/3 on TLS responses over TCP, for HTTP/2 and HTTP/1.1 alike.
    let want = format!("h3=\":{}\"; ma=86400", edge.tls.port());
    for http1 in [false, true] {
        let mut b = reqwest::Client::builder().danger_accept_invalid_certs(true);
        if http1 {
            b = b.http1_only();
        }
        let r = b
            .build()
            .unwrap()
            .get(format!(
                "https://localhost:{}/v/demo/master.m3u8",
                edge.tls.port()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["alt-svc"], want.as_str(), "http1={http1}");
    }
    // Plain HTTP does not announce it.
    let r = c.get(edge.url("/v/demo/master.m3u8")).send().await.unwrap();
    assert!(!r.headers().contains_key("alt-svc"));
    assert!(
        edge.metric("streamgate_edge_requests_total{cache=\"HIT\",proto=\"h3\",status=\"200\"}")
            .await
            >= 3.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_concurrent_misses_make_one_origin_read() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start().await;
    let seg = noise(512 << 10, 12);
    origin.put("demo/video/seg-00042.m4s", seg.clone());
    origin.set_delay(Duration::from_millis(500));
    let edge = tls_edge(
        dir.path(),
        http_origin_cfg(&origin, Duration::from_secs(10)),
        Http3Config::default(),
    );
    let reqs: Vec<Value> = (0..200)
        .map(|_| get("/v/demo/video/seg-00042.m4s", &[]))
        .collect();
    let port = edge.tls.port();
    let run = tokio::task::spawn_blocking(move || h3(port, reqs, json!({"connections": 4})))
        .await
        .unwrap();
    assert_eq!(run.alpn, ["h3", "h3", "h3", "h3"]);
    for r in run.responses {
        let r = r.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, seg);
    }
    assert_eq!(origin.reads("demo/video/seg-00042.m4s"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_listener_survives_garbage_stalls_and_huge_headers() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    let edge = tls_edge(
        dir.path(),
        OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        Http3Config {
            request_header_timeout: Duration::from_millis(500),
            ..Http3Config::default()
        },
    );
    let port = edge.tls.port();
    // Garbage datagrams of every size, including ones shaped like QUIC long headers.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..2000usize {
        let len = 1 + (i * 37) % 1500;
        let mut d = noise(len, i as u64).to_vec();
        if i % 3 == 0 {
            d[0] = 0xc0 | (d[0] & 0x0f); // long header, "Initial"
        }
        sock.send_to(&d, ("127.0.0.1", port)).unwrap();
    }
    // A client that opens streams and never sends its headers, plus one huge header.
    let huge = "x".repeat(64 << 10);
    let run = tokio::task::spawn_blocking(move || {
        h3(
            port,
            vec![
                get("/v/demo/master.m3u8", &[("x-huge", &huge)]),
                get("/v/demo/master.m3u8", &[]),
            ],
            json!({"stall_streams": 50}),
        )
    })
    .await
    .unwrap();
    assert!(
        !matches!(&run.responses[0], Ok(r) if r.status == 200),
        "a 64 KiB header section was accepted"
    );
    // The listener is still up: a fresh client, and the TCP side, are served.
    let again = tokio::task::spawn_blocking(move || {
        h3(port, vec![get("/v/demo/master.m3u8", &[])], json!({}))
    })
    .await
    .unwrap();
    assert_eq!(again.responses[0].as_ref().unwrap().status, 200);
    let r = reqwest::get(edge.url("/v/demo/master.m3u8")).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// SHA-256 of the leaf certificate the TCP TLS listener presents, read by Python's ssl module.
fn tcp_cert_sha256(port: u16) -> String {
    let code = format!(
        "import ssl,hashlib;pem=ssl.get_server_certificate(('127.0.0.1',{port}));\
         print(hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest())"
    );
    let out = Command::new(venv_python("aioquic"))
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn certificates_reload_without_restart_on_tcp_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "origin/demo/master.m3u8", b"#EXTM3U\n");
    let a = streamgate_edge::dev_certificate(&dir.path().join("a")).unwrap();
    let b = streamgate_edge::dev_certificate(&dir.path().join("b")).unwrap();
    let live = streamgate_edge::config::TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::copy(&a.cert, &live.cert).unwrap();
    std::fs::copy(&a.key, &live.key).unwrap();
    let edge = TestEdge::start(EdgeConfig {
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        tls: Some(live.clone()),
        tls_reload_interval: Duration::from_millis(200),
        ..EdgeConfig::default()
    });
    let port = edge.tls.port();
    let fingerprints = move || {
        let tcp = tcp_cert_sha256(port);
        let quic = h3(port, vec![get("/v/demo/master.m3u8", &[])], json!({}));
        assert_eq!(quic.responses[0].as_ref().unwrap().status, 200);
        (tcp, quic.peer_certs[0].clone())
    };
    let (tcp_a, quic_a) = tokio::task::spawn_blocking(fingerprints).await.unwrap();
    assert_eq!(
        tcp_a, quic_a,
        "TCP and QUIC must present the same certificate"
    );

    // Swap the files in place (new key first, then the certificate), as cert tooling does.
    let swap = |from: &std::path::Path, to: &std::path::Path| {
        let tmp = to.with_extension("tmp");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    };
    // A half-written or broken pair is refused and the current certificate stays.
    std::fs::write(&live.cert, b"-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (tcp_x, _) = tokio::task::spawn_blocking(fingerprints).await.unwrap();
    assert_eq!(
        tcp_x, tcp_a,
        "a broken certificate file replaced a working one"
    );

    swap(&b.key, &live.key);
    swap(&b.cert, &live.cert);
    let t0 = std::time::Instant::now();
    loop {
        let (tcp_b, quic_b) = tokio::task::spawn_blocking(fingerprints).await.unwrap();
        if tcp_b != tcp_a && quic_b != quic_a {
            assert_eq!(tcp_b, quic_b);
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "certificate not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn h3_graceful_shutdown_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let origin = TestOrigin::start().await;
    let seg = noise(200_000, 21);
    origin.put("demo/seg.m4s", seg.clone());
    origin.set_delay(Duration::from_millis(1000));
    let tls = streamgate_edge::dev_certificate(&dir.path().join("tls")).unwrap();
    let mut cfg = EdgeConfig {
        origin: http_origin_cfg(&origin, Duration::from_secs(10)),
        tls: Some(tls),
        ..EdgeConfig::default()
    };
    cfg.shutdown_grace = Duration::from_secs(3);
    let edge = TestEdge::start_with_grace(cfg);
    let port = edge.tls.port();
    // The request is in flight (the origin takes a second) when the shutdown starts.
    let inflight =
        tokio::task::spawn_blocking(move || h3(port, vec![get("/v/demo/seg.m4s", &[])], json!({})));
    // Start the shutdown only once the request has reached the origin (the client's
    // start-up time varies), so it is truly in flight.
    let t0 = std::time::Instant::now();
    while origin.reads("demo/seg.m4s") == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the HTTP/3 request never reached the origin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopper = tokio::task::spawn_blocking(move || drop(edge));
    let run = inflight.await.unwrap();
    let r = run.responses[0]
        .as_ref()
        .expect("the in-flight HTTP/3 request completed");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, seg);
    stopper.await.unwrap();
    // After the shutdown, the port no longer answers QUIC.
    let after = tokio::task::spawn_blocking(move || {
        h3(
            port,
            vec![get("/v/demo/seg.m4s", &[])],
            json!({"timeout": 3}),
        )
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(20), after)
            .await
            .map_or(true, |r| r.is_err())
    );
}

//! The protocol benchmark against the real edge: every protocol negotiates what it asks for,
//! reads whole bodies, and reports ordered percentiles.

use std::net::SocketAddr;
use std::time::Duration;

use streamgate_edge::{Edge, EdgeConfig, Shutdown};
use streamgate_load::{Proto, ProtoBench, run};
use streamgate_origin::OriginConfig;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn h1_h2_h3_against_the_edge() {
    let dir = tempfile::tempdir().unwrap();
    let body = vec![7u8; 65536];
    std::fs::create_dir_all(dir.path().join("origin/a")).unwrap();
    std::fs::write(dir.path().join("origin/a/seg.m4s"), &body).unwrap();
    let tls = streamgate_edge::dev_certificate(&dir.path().join("tls")).unwrap();
    let (http, tls_port, admin) = (free_port(), free_port(), free_port());
    let cfg = EdgeConfig {
        http_listen: SocketAddr::from(([127, 0, 0, 1], http)),
        tls_listen: SocketAddr::from(([127, 0, 0, 1], tls_port)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], admin)),
        tls: Some(tls),
        threads: 2,
        shutdown_grace: Duration::ZERO,
        origin: OriginConfig::Fs {
            root: dir.path().join("origin"),
        },
        ..EdgeConfig::default()
    };
    let edge = Edge::build(cfg).unwrap();
    let shutdown = Shutdown::new();
    let s2 = shutdown.clone();
    let thread = std::thread::spawn(move || edge.run(&s2).unwrap());
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (proto, scheme, port) in [
        (Proto::H1, "https", tls_port),
        (Proto::H2, "https", tls_port),
        (Proto::H3, "https", tls_port),
        (Proto::H2, "http", http),
    ] {
        let bench = ProtoBench {
            url: format!("{scheme}://127.0.0.1:{port}/v/a/seg.m4s")
                .parse()
                .unwrap(),
            proto,
            connections: 2,
            streams: 2,
            duration: Duration::from_millis(800),
            warmup: Duration::from_millis(200),
            insecure: true,
            server_name: Some("localhost".into()),
            headers: vec![],
            progress: false,
            max_udp_payload: 1452,
        };
        let r = run(&bench)
            .await
            .unwrap_or_else(|e| panic!("{proto:?} {scheme}: {e}"));
        assert_eq!(r.errors, 0, "{proto:?}");
        assert!(r.requests > 0, "{proto:?}");
        assert_eq!(
            r.bytes,
            r.requests * body.len() as u64,
            "{proto:?}: whole bodies"
        );
        assert!(
            r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms,
            "{proto:?}: {r:?}"
        );
    }
    // A 404 counts as an error, not as a request served.
    let bench = ProtoBench {
        url: format!("http://127.0.0.1:{http}/v/a/missing.m4s")
            .parse()
            .unwrap(),
        proto: Proto::H1,
        connections: 1,
        streams: 1,
        duration: Duration::from_millis(200),
        warmup: Duration::ZERO,
        insecure: true,
        server_name: None,
        headers: vec![],
        progress: false,
        max_udp_payload: 1452,
    };
    let r = run(&bench).await.unwrap();
    assert!(r.errors > 0 && r.requests == 0);
    shutdown.trigger();
    thread.join().unwrap();
}

//! The S3 origin against a real S3-compatible server: moto's server (from PyPI), which
//! speaks the S3 REST API. `scripts/setup.sh` installs it into the test virtualenv.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamgate_origin::{ObjectKey, Origin, OriginConfig, OriginError, S3Origin};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> std::path::PathBuf {
    let venv = std::env::var_os("STREAMGATE_VENV").map_or_else(
        || std::path::PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/streamgate-venv"),
        std::path::PathBuf::from,
    );
    let bin = venv.join("bin/moto_server");
    assert!(
        bin.exists(),
        "moto_server not found at {}: run ./scripts/setup.sh (it installs the S3 test server)",
        bin.display()
    );
    bin
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(moto_binary())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto_server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto { child, port }
}

#[tokio::test]
async fn s3_origin_reads_and_writes_a_real_bucket() {
    let moto = start_moto();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    // Create the bucket with a plain REST call, as any S3 client would.
    let status = reqwest::Client::new()
        .put(format!("{endpoint}/media"))
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "create bucket: {status}");

    let s3 = |prefix: Option<&str>| {
        Origin::from_config(&OriginConfig::S3(S3Origin {
            bucket: "media".into(),
            prefix: prefix.map(str::to_owned),
            endpoint: Some(endpoint.clone()),
            region: "us-east-1".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            allow_http: true,
            timeout: Duration::from_secs(5),
        }))
        .unwrap()
    };
    let origin = s3(Some("vod"));
    let key = ObjectKey::new("demo/video/720p/seg-00001.m4s").unwrap();
    let body = Bytes::from(
        (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    origin.put(&key, body.clone()).await.unwrap();
    assert!(origin.exists(&key).await.unwrap());
    let obj = origin.get(&key).await.unwrap();
    assert_eq!(obj.size, body.len() as u64);
    assert_eq!(obj.collect().await.unwrap(), body);

    // The prefix is honoured: the object sits under vod/ in the bucket.
    let unprefixed = s3(None);
    let full = ObjectKey::new("vod/demo/video/720p/seg-00001.m4s").unwrap();
    assert_eq!(unprefixed.get_bytes(&full).await.unwrap(), body);
    assert!(!unprefixed.exists(&key).await.unwrap());

    let missing = ObjectKey::new("demo/nope.m4s").unwrap();
    assert!(matches!(
        origin.get(&missing).await,
        Err(OriginError::NotFound)
    ));

    // With the server gone, reads fail as unavailable, not as "not found".
    drop(moto);
    assert!(matches!(
        origin.get(&key).await,
        Err(OriginError::Unavailable(_) | OriginError::Timeout(_))
    ));
}

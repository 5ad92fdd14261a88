//! The production topology, as separate processes: a real etcd, `streamgate control` on it,
//! and two `streamgate edge` processes watching it. An operator configures keys, a token
//! policy and an asset through the gRPC API; tokens come from `streamgate ctl token mint`;
//! both edges enforce every change within a few milliseconds.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, spawn_listening};
use streamgate_proto::control::v1 as pb;
use streamgate_store::testkit::start_etcd;
use tonic::Request;

const TOKEN: &str = "operator-token-0123456789";
const ISSUER: &str = "https://issuer.test";

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

fn mint(dir: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "token", "mint", "--key"])
        .arg(dir.join("signing.pem"))
        .args(["--kid", "k1", "--iss", ISSUER, "--aud", "streamgate"])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Polls until `url` (with `headers`) answers `want`.
async fn until(c: &reqwest::Client, url: &str, token: Option<&str>, want: u16) -> Duration {
    let t0 = Instant::now();
    loop {
        let mut req = c.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let got = req.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
        if got == want {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{url}: {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_configures_and_two_edges_enforce() {
    let etcd = start_etcd();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let grpc = free_port();
    std::fs::write(
        d.join("control.toml"),
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{grpc}\"\nstore = \"etcd\"\netcd_endpoints = [\"{}\"]\nadmin_token_file = \"{}\"\n",
            etcd.endpoint,
            d.join("admin-token").display()
        ),
    )
    .unwrap();
    let _control = spawn_listening(
        &["control", "--config"],
        &d.join("control.toml"),
        grpc,
        "control plane",
    );
    for (p, body) in [
        ("demo/master.m3u8", &b"#EXTM3U\n"[..]),
        ("demo/seg-1.m4s", b"segment bytes"),
        ("other/master.m3u8", b"#EXTM3U\n"),
    ] {
        let path = d.join("origin").join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let mut edges = Vec::new();
    let mut procs = Vec::new();
    for i in 0..2 {
        let (http, admin) = (free_port(), free_port());
        let cfg = d.join(format!("edge-{i}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[edge]\nhttp_listen = \"127.0.0.1:{http}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nthreads = 1\n\
                 [edge.gate]\netcd = [\"{}\"]\nsnapshot = \"{}\"\nedge_id = \"e2e-{i}\"\n\
                 [origin]\nkind = \"fs\"\nroot = \"{}\"\n",
                etcd.endpoint,
                d.join(format!("edge-{i}-lkg.json")).display(),
                d.join("origin").display()
            ),
        )
        .unwrap();
        procs.push(spawn_listening(&["edge", "--config"], &cfg, http, "edge"));
        edges.push(format!("http://127.0.0.1:{http}"));
    }

    // The operator's key: a private key they hold, its public half registered.
    streamgate_control::token::SigningKey::generate_ed25519(&d.join("signing.pem"), "k1").unwrap();
    let jwk = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "token", "mint", "--key"])
        .arg(d.join("signing.pem"))
        .args(["--kid", "k1", "--iss", ISSUER, "--public-jwk"])
        .output()
        .unwrap();
    assert!(jwk.status.success());
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut keys = pb::key_service_client::KeyServiceClient::new(ch.clone());
    let mut policies = pb::policy_service_client::PolicyServiceClient::new(ch.clone());
    let mut assets = pb::asset_service_client::AssetServiceClient::new(ch);
    let key = keys
        .add(authed(pb::AddKeyRequest {
            jwk_json: String::from_utf8(jwk.stdout).unwrap(),
        }))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    policies
        .apply(authed(pb::ApplyPolicyRequest {
            document: format!(
                "id: viewers\non_unavailable: fail_closed\nrule:\n  jwt: {{issuer: \"{ISSUER}\", audience: streamgate}}\n"
            ),
            expected_version: 0,
        }))
        .await
        .unwrap();
    for id in ["demo", "other"] {
        assets
            .register(authed(pb::RegisterAssetRequest {
                asset: Some(pb::Asset {
                    id: id.into(),
                    policy_id: "viewers".into(),
                    description: String::new(),
                    version: 0,
                    ..Default::default()
                }),
            }))
            .await
            .unwrap();
    }

    let c = reqwest::Client::new();
    let token = mint(d, &["--scope", "demo", "--ttl", "10m"]);
    let other = mint(d, &["--scope", "other", "--ttl", "10m"]);
    for e in &edges {
        let demo = format!("{e}/v/demo/master.m3u8");
        // Each edge picks the state up without a restart.
        until(&c, &demo, Some(&token), 200).await;
        assert_eq!(c.get(&demo).send().await.unwrap().status(), 401);
        assert_eq!(
            c.get(&demo)
                .bearer_auth(&other)
                .send()
                .await
                .unwrap()
                .status(),
            403,
            "a token scoped to another asset"
        );
        let q = c.get(format!("{demo}?token={token}")).send().await.unwrap();
        assert_eq!(q.status(), 200);
        assert_eq!(q.headers()["cache-control"], "private, no-store");
        let cookie = c
            .get(format!("{e}/v/demo/seg-1.m4s"))
            .header("cookie", format!("sg_token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(cookie.status(), 200);
        assert_eq!(cookie.bytes().await.unwrap(), "segment bytes");
    }

    // Retiring the key with no overlap revokes its tokens on every edge.
    let t0 = Instant::now();
    keys.retire(authed(pb::RetireKeyRequest {
        kid: "k1".into(),
        overlap_seconds: 0,
        expected_version: key.version,
    }))
    .await
    .unwrap();
    for e in &edges {
        until(&c, &format!("{e}/v/demo/master.m3u8"), Some(&token), 403).await;
    }
    eprintln!(
        "key retirement enforced by both edges {:?} after Retire",
        t0.elapsed()
    );

    // A purge through `ctl` reaches both edges' caches.
    std::fs::write(d.join("open.yaml"), "id: open\nrule: {public: true}\n").unwrap();
    let ctl = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("ctl")
            .args([
                "--endpoint",
                &format!("http://127.0.0.1:{grpc}"),
                "-o",
                "json",
            ])
            .args(args)
            .env("STREAMGATE_TOKEN", TOKEN)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    ctl(&[
        "policy",
        "apply",
        "-f",
        d.join("open.yaml").to_str().unwrap(),
    ]);
    ctl(&["asset", "bind", "demo", "open"]);
    let seg = |e: &str| format!("{e}/v/demo/seg-1.m4s");
    for e in &edges {
        until(&c, &seg(e), None, 200).await;
        let r = c.get(seg(e)).send().await.unwrap();
        assert_eq!(r.headers()["x-cache"], "HIT", "{e}");
    }
    let purge = ctl(&["purge", "--asset", "demo"]);
    assert_eq!(purge["seq"], 1);
    for e in &edges {
        let t0 = Instant::now();
        loop {
            let r = c.get(seg(e)).send().await.unwrap();
            if r.headers()["x-cache"] == "MISS" {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "purge never reached {e}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Both edges report the revision they run.
    let want = purge["revision"].as_i64().unwrap();
    let t0 = Instant::now();
    loop {
        let list = ctl(&["edges"]);
        let edges = list["edges"].as_array().unwrap();
        let ids: Vec<&str> = edges.iter().map(|e| e["id"].as_str().unwrap()).collect();
        if ids == ["e2e-0", "e2e-1"]
            && edges
                .iter()
                .all(|e| e["revision"].as_i64().unwrap() >= want)
        {
            assert!(edges.iter().all(|e| e["stale"] == false), "{list}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(40),
            "edges not reported: {list}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

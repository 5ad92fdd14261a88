//! The tus ingest end to end: the `streamgate transcode` binary on a real etcd, with
//! independent tus clients — **tuspy** (PyPI) and **tus-js-client** (npm, under Node) —
//! uploading through it, interrupted and resumed, across a kill -9 of the server, on a
//! filesystem origin and on S3 (**moto**'s server). Every protocol refusal is checked with
//! raw HTTP requests (reqwest). Peers are installed by `scripts/setup.sh`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Proc, free_port};
use streamgate_store::Store;
use streamgate_store::etcd::EtcdStore;
use streamgate_store::testkit::{Etcd, start_etcd};

const TOKEN: &str = "0123456789abcdef0123";
/// A tenant's operator token, limited to assets `acme-*`, and a viewer's token.
const ACME: &str = "acme-0123456789abcdef";
const VIEWER: &str = "viewer-0123456789abcdef";
const MIB: usize = 1 << 20;

fn home_cache(var: &str, rel: &str) -> PathBuf {
    std::env::var_os(var).map_or_else(
        || PathBuf::from(std::env::var("HOME").unwrap()).join(rel),
        PathBuf::from,
    )
}

fn python() -> PathBuf {
    let py = home_cache("STREAMGATE_VENV", ".cache/streamgate-venv").join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import tusclient"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "tuspy is not installed in {}: run ./scripts/setup.sh",
        py.display()
    );
    py
}

fn node_peers() -> PathBuf {
    let dir = home_cache(
        "STREAMGATE_INGEST_NODE_DIR",
        ".cache/streamgate-ingest-node",
    );
    assert!(
        dir.join("node_modules/tus-js-client").exists(),
        "tus-js-client is not installed in {}: run ./scripts/setup.sh",
        dir.display()
    );
    dir
}

fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/ingest")
        .join(name)
}

/// Deterministic, incompressible-looking bytes.
fn source(dir: &Path, name: &str, len: usize) -> (PathBuf, String) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ len as u64;
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &data).unwrap();
    (path, sha256_hex(&data))
}

fn sha256_hex(b: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

struct Ingest {
    proc: Option<Proc>,
    cfg: PathBuf,
    port: u16,
    origin_root: PathBuf,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl Ingest {
    /// Starts `streamgate transcode` with an ingest on etcd; `origin` is the `[origin]`
    /// table (a filesystem origin in the temp dir when `None`); `extra` goes into
    /// `[transcode.ingest]`.
    async fn start(etcd: &Etcd, origin: Option<&str>, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let tokens = dir.path().join("tokens");
        std::fs::write(
            &tokens,
            format!(
                "alice:{TOKEN}\nacme:{ACME} role=operator assets=acme-\nro:{VIEWER} role=viewer\n"
            ),
        )
        .unwrap();
        let origin_root = dir.path().join("origin");
        let origin = origin.map_or_else(
            || format!("root = {:?}", origin_root.display().to_string()),
            str::to_owned,
        );
        let cfg = dir.path().join("transcode.toml");
        std::fs::write(
            &cfg,
            format!(
                "[transcode]\nstore = \"etcd\"\netcd_endpoints = [{:?}]\nadmin_token_file = {:?}\n\
                 [transcode.ingest]\nlisten = \"127.0.0.1:{port}\"\ncors_allow_origins = [\"*\"]\n\
                 ladders = [\"default\", \"mobile\"]\n{extra}\n[origin]\n{origin}\n",
                etcd.endpoint,
                tokens.display().to_string()
            ),
        )
        .unwrap();
        let store: Arc<dyn Store> = Arc::new(
            EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
                .await
                .unwrap(),
        );
        let mut me = Self {
            proc: None,
            cfg,
            port,
            origin_root,
            store,
            _dir: dir,
        };
        me.spawn();
        me
    }

    fn spawn(&mut self) {
        self.proc = Some(common::spawn_listening(
            &["transcode", "--config"],
            &self.cfg,
            self.port,
            "the ingest",
        ));
    }

    fn kill9(&mut self) {
        let mut p = self.proc.take().expect("running");
        // SIGKILL: no shutdown code runs.
        p.0.kill().unwrap();
        p.0.wait().unwrap();
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/uploads/", self.port)
    }

    fn url(&self, loc: &str) -> String {
        if loc.starts_with("http") {
            loc.to_owned()
        } else {
            format!("http://127.0.0.1:{}{loc}", self.port)
        }
    }

    async fn record(&self, url: &str) -> serde_json::Value {
        let id = url.rsplit('/').next().unwrap();
        let v = self
            .store
            .get(&format!("/streamgate/v1/uploads/{id}"))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no record for {id}"));
        serde_json::from_slice(&v.value).unwrap()
    }

    fn staged(&self, url: &str) -> Vec<u8> {
        let id = url.rsplit('/').next().unwrap();
        std::fs::read(self.origin_root.join(format!("STAGING/uploads/{id}/data"))).unwrap()
    }
}

fn tuspy(args: serde_json::Value) -> serde_json::Value {
    let out = Command::new(python())
        .arg(peer_script("tuspy_upload.py"))
        .arg(args.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.trim()).unwrap_or_else(|_| panic!("tuspy printed {line:?}"))
}

fn tus_js(args: serde_json::Value) -> Vec<serde_json::Value> {
    let out = Command::new("node")
        .arg(peer_script("tus_js_upload.cjs"))
        .arg(args.to_string())
        .env("STREAMGATE_INGEST_NODE_DIR", node_peers())
        .stderr(Stdio::inherit())
        .output()
        .expect("node runs (Node.js >= 20; ./scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("tus-js-client printed {l:?}")))
        .collect()
}

fn event<'a>(events: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event in {events:?}"))
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn tus(rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    rb.header("Tus-Resumable", "1.0.0")
        .header("Authorization", format!("Bearer {TOKEN}"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn head(url: &str) -> reqwest::Response {
    tus(http().head(url)).send().await.unwrap()
}

async fn offset(url: &str) -> u64 {
    let r = head(url).await;
    assert_eq!(r.status(), 200, "HEAD {url}");
    r.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The job the upload made: its document in etcd names the upload and the source digest.
async fn check_job(ing: &Ingest, url: &str, sha: &str, asset: &str) {
    let rec = ing.record(url).await;
    assert_eq!(rec["state"], "complete");
    assert_eq!(rec["sha256"], sha, "the digest computed while streaming");
    let job = rec["job"].as_str().expect("a job id");
    let r = head(url).await;
    assert_eq!(r.headers()["stream-gate-job"], job);
    let v = ing
        .store
        .get(&format!("/streamgate/v1/jobs/{job}"))
        .await
        .unwrap()
        .expect("the job document");
    let doc: serde_json::Value = serde_json::from_slice(&v.value).unwrap();
    assert_eq!(doc["source_sha256"], sha);
    assert_eq!(doc["asset"], asset);
    assert_eq!(doc["state"], "queued");
    assert_eq!(doc["actor"], "alice");
    assert_eq!(doc["source"]["kind"], "upload");
    assert_eq!(doc["source"]["key"], rec["staged_key"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tuspy_interrupted_and_resumed_with_checksums() {
    let etcd = start_etcd();
    let ing = Ingest::start(&etcd, None, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source(dir.path(), "talk.mp4", 5 * MIB + 123);
    let meta = serde_json::json!({"asset": "talk", "filename": "talk.mp4", "ladder": "mobile"});
    // The client stops after 2 MiB (two checksummed chunks), as an interrupted one would.
    let first = tuspy(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "chunk_size": MIB, "stop_at": 2 * MIB, "checksum": true,
    }));
    let url = first["url"].as_str().expect("an upload url").to_owned();
    assert_eq!(offset(&url).await, 2 * MIB as u64);
    // A new client process resumes from the server's offset.
    let done = tuspy(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "chunk_size": MIB, "url": url, "checksum": true,
    }));
    assert_eq!(done["offset"], 5 * MIB + 123, "{done}");
    assert_eq!(sha256_hex(&ing.staged(&url)), sha);
    check_job(&ing, &url, &sha, "talk").await;
    let rec = ing.record(&url).await;
    assert_eq!(rec["ladder"], "mobile");
    assert_eq!(rec["filename"], "talk.mp4");

    // The same bytes again make no new job: the id is the source's, forever.
    let again = tuspy(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "chunk_size": 4 * MIB,
    }));
    let url2 = again["url"].as_str().unwrap();
    assert_ne!(url2, url);
    assert_eq!(ing.record(url2).await["job"], rec["job"]);

    // The audit log names who uploaded what.
    let (audit, _) = ing.store.list("/streamgate/v1/audit/").await.unwrap();
    let entries: Vec<serde_json::Value> = audit
        .iter()
        .map(|(_, v)| serde_json::from_slice(&v.value).unwrap())
        .collect();
    let id = url.rsplit('/').next().unwrap();
    for action in ["upload.create", "upload.complete"] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action && e["target"].as_str().unwrap().contains(id))
            .unwrap_or_else(|| panic!("no {action} entry for {id}: {entries:#?}"));
        assert_eq!(e["actor"], "alice");
        assert!(e["target"].as_str().unwrap().contains("asset=talk"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_aborted_mid_request_resumes() {
    let etcd = start_etcd();
    let ing = Ingest::start(&etcd, None, "checkpoint_every = \"1MiB\"").await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source(dir.path(), "clip.mov", 12 * MIB + 7);
    let meta = serde_json::json!({"asset": "clip", "filename": "clip.mov"});
    // One PATCH for the whole file, fed slowly, aborted by the client halfway through it.
    let first = tus_js(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "slowMs": 15, "abortAt": 6 * MIB,
    }));
    let url = ing.url(event(&first, "aborted")["url"].as_str().unwrap());
    // The server keeps what arrived before the connection dropped (it may take a moment
    // to notice the drop).
    let t0 = Instant::now();
    let mut kept = offset(&url).await;
    while kept < 5 * MIB as u64 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        kept = offset(&url).await;
    }
    assert!(
        kept >= 5 * MIB as u64 && kept < 12 * MIB as u64,
        "kept {kept}"
    );
    let done = tus_js(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "uploadUrl": url,
    }));
    event(&done, "success");
    assert_eq!(sha256_hex(&ing.staged(&url)), sha);
    check_job(&ing, &url, &sha, "clip").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_then_resume() {
    let etcd = start_etcd();
    let mut ing = Ingest::start(&etcd, None, "checkpoint_every = \"1MiB\"").await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source(dir.path(), "long.mp4", 24 * MIB + 5);
    let meta = serde_json::json!({"asset": "long"});
    let args = serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta, "slowMs": 25,
    });
    let mut client = Command::new("node")
        .arg(peer_script("tus_js_upload.cjs"))
        .arg(args.to_string())
        .env("STREAMGATE_INGEST_NODE_DIR", node_peers())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let created: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(created["event"], "created", "{line}");
    let url = ing.url(created["url"].as_str().unwrap());
    // Wait until some of the one long PATCH is durable, then SIGKILL the server mid-body.
    let t0 = Instant::now();
    while offset(&url).await < 4 * MIB as u64 {
        assert!(t0.elapsed() < Duration::from_secs(20), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ing.kill9();
    let _ = client.kill();
    let _ = client.wait();
    ing.spawn();
    let persisted = offset(&url).await;
    assert!(
        persisted >= 4 * MIB as u64 && persisted < 24 * MIB as u64,
        "persisted {persisted}"
    );
    let rec = ing.record(&url).await;
    assert_eq!(rec["offset"], persisted, "HEAD answers the recorded offset");
    assert_eq!(rec["state"], "uploading");
    let done = tus_js(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta, "uploadUrl": url,
    }));
    event(&done, "success");
    assert_eq!(sha256_hex(&ing.staged(&url)), sha);
    check_job(&ing, &url, &sha, "long").await;
}

async fn create(ing: &Ingest, len: u64, meta: &str) -> reqwest::Response {
    tus(http().post(ing.endpoint()))
        .header("Upload-Length", len.to_string())
        .header("Upload-Metadata", meta)
        .send()
        .await
        .unwrap()
}

async fn patch(
    url: &str,
    at: u64,
    body: &'static [u8],
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut rb = tus(http().patch(url))
        .header("Upload-Offset", at.to_string())
        .header("Content-Type", "application/offset+octet-stream");
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    rb.body(body).send().await.unwrap()
}

async fn refused(r: reqwest::Response, status: u16, error: &str) -> serde_json::Value {
    assert_eq!(r.status().as_u16(), status, "{r:?}");
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert!(!body["reason"].as_str().unwrap().is_empty());
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_body() {
    let etcd = start_etcd();
    let ing = Ingest::start(&etcd, None, "max_size = \"1MiB\"\nexpire_after = \"2s\"").await;
    let meta = format!("asset {},filename {}", b64("a1"), b64("a.mp4"));

    // Discovery and CORS preflight need no token.
    let r = http()
        .request(reqwest::Method::OPTIONS, ing.endpoint())
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["tus-version"], "1.0.0");
    assert_eq!(h["tus-max-size"], (1 << 20).to_string());
    assert_eq!(h["tus-checksum-algorithm"], "sha1,sha256,crc32c");
    for ext in [
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
        "checksum",
    ] {
        assert!(
            h["tus-extension"]
                .to_str()
                .unwrap()
                .split(',')
                .any(|e| e == ext),
            "{ext}"
        );
    }
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("Upload-Offset")
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );

    // 412: another protocol version; the server says which it speaks.
    let r = http()
        .post(ing.endpoint())
        .header("Tus-Resumable", "0.2.2")
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["tus-version"], "1.0.0");
    refused(r, 412, "unsupported_version").await;
    // 401 without a token, 403 with a wrong one.
    let r = http()
        .post(ing.endpoint())
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "1")
        .send()
        .await
        .unwrap();
    refused(r, 401, "unauthenticated").await;
    let r = http()
        .post(ing.endpoint())
        .header("Tus-Resumable", "1.0.0")
        .header("Authorization", "Bearer not-the-token-at-all")
        .send()
        .await
        .unwrap();
    refused(r, 403, "access_denied").await;
    // 403 for a viewer's token, and for a tenant's token outside its asset prefixes;
    // both are audited as `denied`. Inside its prefixes the tenant uploads.
    let as_token = |token: &str, rb: reqwest::RequestBuilder| {
        rb.header("Tus-Resumable", "1.0.0")
            .header("Authorization", format!("Bearer {token}"))
            .header("Upload-Length", "10")
    };
    let r = as_token(VIEWER, http().post(ing.endpoint()))
        .header("Upload-Metadata", &meta)
        .send()
        .await
        .unwrap();
    let body = refused(r, 403, "access_denied").await;
    assert!(
        body["reason"].as_str().unwrap().contains("operator role"),
        "{body}"
    );
    let r = as_token(ACME, http().post(ing.endpoint()))
        .header("Upload-Metadata", &meta)
        .send()
        .await
        .unwrap();
    let body = refused(r, 403, "access_denied").await;
    assert!(
        body["reason"].as_str().unwrap().contains("outside"),
        "{body}"
    );
    let r = as_token(ACME, http().post(ing.endpoint()))
        .header("Upload-Metadata", format!("asset {}", b64("acme-1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{r:?}");
    let alices = ing.url(
        create(&ing, 10, &meta).await.headers()["location"]
            .to_str()
            .unwrap(),
    );
    let r = http()
        .head(&alices)
        .header("Tus-Resumable", "1.0.0")
        .header("Authorization", format!("Bearer {ACME}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a tenant cannot read another asset's upload"
    );
    let (audit, _) = ing.store.list("/streamgate/v1/audit/").await.unwrap();
    let denied: Vec<String> = audit
        .iter()
        .map(|(_, v)| serde_json::from_slice::<serde_json::Value>(&v.value).unwrap())
        .filter(|e| e["action"] == "denied")
        .map(|e| {
            format!(
                "{} {}",
                e["actor"].as_str().unwrap(),
                e["target"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(denied.len(), 3, "{denied:?}");
    assert!(
        denied.iter().any(|d| d.starts_with("acme uploads/")),
        "{denied:?}"
    );
    // 413 past Tus-Max-Size.
    refused(create(&ing, (1 << 20) + 1, &meta).await, 413, "too_large").await;
    // Bad metadata, refused at creation with a reason.
    for (m, says) in [
        (format!("filename {}", b64("x")), "asset is required"),
        (format!("asset {}", b64("No Spaces")), "not an asset id"),
        (
            format!("asset {},ladder {}", b64("a"), b64("8k")),
            "not a ladder preset",
        ),
        (
            format!("asset {},policy {}", b64("a"), b64("nosuch")),
            "does not exist",
        ),
        ("asset %%%".to_owned(), "not base64"),
    ] {
        let body = refused(create(&ing, 10, &m).await, 400, "bad_metadata").await;
        assert!(
            body["reason"].as_str().unwrap().contains(says),
            "{m}: {body}"
        );
    }
    let r = tus(http().post(ing.endpoint()))
        .header("Upload-Defer-Length", "1")
        .send()
        .await
        .unwrap();
    refused(r, 400, "bad_request").await;

    let r = create(&ing, 10, &meta).await;
    assert_eq!(r.status(), 201);
    let loc = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("/uploads/"), "{loc}");
    assert!(r.headers().contains_key("upload-expires"));
    let url = ing.url(&loc);
    // 415 without the tus media type.
    let r = tus(http().patch(&url))
        .header("Upload-Offset", "0")
        .header("Content-Type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    refused(r, 415, "unsupported_media_type").await;
    // 460 on a wrong checksum, and the offset did not move.
    let wrong = format!(
        "sha1 {}",
        base64::engine::general_purpose::STANDARD.encode([0u8; 20])
    );
    let r = patch(&url, 0, b"hello", &[("Upload-Checksum", &wrong)]).await;
    refused(r, 460, "checksum_mismatch").await;
    assert_eq!(offset(&url).await, 0);
    let r = patch(
        &url,
        0,
        b"hello",
        &[("Upload-Checksum", "md5 XUFAKrxLKna5cZ2REBfFkg==")],
    )
    .await;
    refused(r, 400, "bad_request").await;
    // A right checksum (sha256 and crc32c) moves it.
    let good = format!(
        "sha256 {}",
        base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, b"hello"))
    );
    let r = patch(&url, 0, b"hello", &[("Upload-Checksum", &good)]).await;
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["upload-offset"], "5");
    // 409 on a wrong offset.
    let body = refused(patch(&url, 0, b"again", &[]).await, 409, "offset_mismatch").await;
    assert!(body["reason"].as_str().unwrap().contains("at 5"), "{body}");
    // 413 past Upload-Length.
    refused(
        patch(&url, 5, b"too many bytes", &[]).await,
        413,
        "too_large",
    )
    .await;
    assert_eq!(offset(&url).await, 5);
    // The rest with crc32c ("world": 0x...) completes it.
    let crc = crc32c_of(b"world");
    let r = patch(
        &url,
        5,
        b"world",
        &[("Upload-Checksum", &format!("crc32c {crc}"))],
    )
    .await;
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    // Done: the job header is there; no more bytes; DELETE is refused (the job owns it).
    let r = head(&url).await;
    assert!(r.headers().contains_key("stream-gate-job"));
    assert!(!r.headers().contains_key("upload-expires"));
    refused(
        tus(http().delete(&url)).send().await.unwrap(),
        409,
        "upload_complete",
    )
    .await;

    // Termination: 204, then 404 (HEAD has no body).
    let r = create(&ing, 10, &meta).await;
    let gone = ing.url(r.headers()["location"].to_str().unwrap());
    assert_eq!(
        tus(http().delete(&gone)).send().await.unwrap().status(),
        204
    );
    assert_eq!(head(&gone).await.status(), 404);
    refused(patch(&gone, 0, b"x", &[]).await, 404, "not_found").await;
    refused(
        tus(http().get(&url)).send().await.unwrap(),
        405,
        "method_not_allowed",
    )
    .await;

    // Expiration: 2 s after its last PATCH an unfinished upload is refused with 410.
    let r = create(&ing, 10, &meta).await;
    let old = ing.url(r.headers()["location"].to_str().unwrap());
    assert_eq!(patch(&old, 0, b"abc", &[]).await.status(), 204);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    refused(patch(&old, 3, b"def", &[]).await, 410, "upload_expired").await;
    assert_eq!(head(&old).await.status(), 410);

    // X-HTTP-Method-Override for clients that cannot send PATCH.
    let r = create(&ing, 3, &meta).await;
    let ov = ing.url(r.headers()["location"].to_str().unwrap());
    let r = tus(http().post(&ov))
        .header("X-HTTP-Method-Override", "PATCH")
        .header("Upload-Offset", "0")
        .header("Content-Type", "application/offset+octet-stream")
        .body("xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers().contains_key("stream-gate-job"));

    // creation-with-upload: the body of the POST is the first bytes.
    let r = tus(http().post(ing.endpoint()))
        .header("Upload-Length", "6")
        .header("Upload-Metadata", &meta)
        .header("Content-Type", "application/offset+octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["upload-offset"], "3");
}

fn crc32c_of(b: &[u8]) -> String {
    // Bitwise CRC-32C (Castagnoli, reflected 0x82F63B78), independent of the server's.
    let mut crc = !0u32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    base64::engine::general_purpose::STANDARD.encode((!crc).to_be_bytes())
}

/// moto's server (killed on drop) and its port.
struct Moto(#[allow(dead_code)] Proc, u16);

fn start_moto() -> Moto {
    let bin = home_cache("STREAMGATE_VENV", ".cache/streamgate-venv").join("bin/moto_server");
    assert!(
        bin.exists(),
        "moto_server is missing: run ./scripts/setup.sh"
    );
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "moto did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Moto(p, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_staging_through_moto() {
    let moto = start_moto();
    let s3 = format!("http://127.0.0.1:{}", moto.1);
    assert!(
        http()
            .put(format!("{s3}/media"))
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let etcd = start_etcd();
    let origin = format!(
        "kind = \"s3\"\nbucket = \"media\"\nprefix = \"vod\"\nendpoint = {s3:?}\nregion = \"us-east-1\"\n\
         access_key_id = \"test\"\nsecret_access_key = \"test\"\nallow_http = true"
    );
    let mut ing = Ingest::start(&etcd, Some(&origin), "s3_part_size = \"5MiB\"").await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source(dir.path(), "s3.mp4", 13 * MIB + 11);
    let meta = serde_json::json!({"asset": "ons3"});
    // 3 MiB chunks are below S3's part minimum: they go to tail objects, then parts.
    let first = tuspy(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "chunk_size": 3 * MIB, "stop_at": 6 * MIB, "checksum": true,
    }));
    let url = first["url"].as_str().unwrap().to_owned();
    assert_eq!(offset(&url).await, 6 * MIB as u64);
    let rec = ing.record(&url).await;
    assert_eq!(rec["stage"]["kind"], "s3");
    assert_eq!(rec["stage"]["parts"].as_array().unwrap().len(), 1, "{rec}");
    let part = rec["stage"]["parts"][0]["size"].as_u64().unwrap();
    assert!(
        part >= 5 * MIB as u64,
        "parts are at least S3's minimum: {rec}"
    );
    assert_eq!(
        part + rec["stage"]["tail"]["size"].as_u64().unwrap(),
        6 * MIB as u64,
        "the part and the tail object hold the offset: {rec}"
    );
    // A wrong checksum on S3: 460, nothing recorded.
    let wrong = format!(
        "sha1 {}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 20])
    );
    let r = patch(
        &url,
        6 * MIB as u64,
        b"nope",
        &[("Upload-Checksum", &wrong)],
    )
    .await;
    refused(r, 460, "checksum_mismatch").await;
    assert_eq!(offset(&url).await, 6 * MIB as u64);
    // The server restarts (kill -9); its S3 state is in the record.
    ing.kill9();
    ing.spawn();
    let done = tuspy(serde_json::json!({
        "endpoint": ing.endpoint(), "token": TOKEN, "file": file, "metadata": meta,
        "chunk_size": 3 * MIB, "url": url, "checksum": true,
    }));
    assert_eq!(done["offset"], 13 * MIB + 11, "{done}");
    let rec = ing.record(&url).await;
    let key = rec["staged_key"].as_str().unwrap();
    let body = http()
        .get(format!("{s3}/media/vod/{key}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        sha256_hex(&body),
        sha,
        "the completed S3 object is the source"
    );
    check_job(&ing, &url, &sha, "ons3").await;
    // No tail objects are left behind.
    let id = url.rsplit('/').next().unwrap();
    let list = http()
        .get(format!(
            "{s3}/media?list-type=2&prefix=vod/STAGING/uploads/{id}/"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(list.matches("<Key>").count(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_upload_resumes_after_an_interruption() {
    let etcd = start_etcd();
    let ing = Ingest::start(&etcd, None, "").await;
    let dir = tempfile::tempdir().unwrap();
    let (file, sha) = source(dir.path(), "mine.mp4", 32 * MIB + 3);
    let ctl = |json: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_streamgate"));
        c.args(["ctl", "upload"])
            .arg(&file)
            .args([
                "--asset",
                "mine",
                "--ladder",
                "mobile",
                "--chunk-size",
                "64KiB",
                "--no-wait",
            ])
            .args(["--ingest", &format!("http://127.0.0.1:{}", ing.port)])
            .env("STREAMGATE_TOKEN", TOKEN)
            .env("XDG_CACHE_HOME", dir.path().join("cache"));
        if json {
            c.args(["-o", "json"]);
        }
        c
    };
    // Interrupted: killed once the server holds some of it.
    let mut first = ctl(false).stderr(Stdio::null()).spawn().unwrap();
    let t0 = Instant::now();
    let url = loop {
        assert!(t0.elapsed() < Duration::from_secs(20), "no upload appeared");
        let (items, _) = ing.store.list("/streamgate/v1/uploads/").await.unwrap();
        if let Some((_, v)) = items.first() {
            let rec: serde_json::Value = serde_json::from_slice(&v.value).unwrap();
            if rec["offset"].as_u64().unwrap() >= MIB as u64 {
                break ing.url(&format!("/uploads/{}", rec["id"].as_str().unwrap()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    first.kill().unwrap();
    first.wait().unwrap();
    let kept = offset(&url).await;
    assert!(
        kept < 32 * MIB as u64,
        "the first run was interrupted ({kept})"
    );
    // The same command again resumes the same upload.
    let out = common::output_ok(&mut ctl(true));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("resuming {url}")), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["upload"], url);
    assert_eq!(sha256_hex(&ing.staged(&url)), sha);
    check_job(&ing, &url, &sha, "mine").await;
    assert_eq!(v["job"], ing.record(&url).await["job"]);
    // A bad asset id is refused by the server with its reason, exit 1.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "upload"])
        .arg(&file)
        .args([
            "--asset",
            "Not Valid",
            "--no-wait",
            "--ingest",
            &format!("http://127.0.0.1:{}", ing.port),
        ])
        .env("STREAMGATE_TOKEN", TOKEN)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an asset id"));
}

#[test]
fn check_config_lists_every_error_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[transcode]\nstore = \"zk\"\n[transcode.ingest]\nmax_size = \"huge\"\nexpire_after = \"soon\"\n[origin]\nkind = \"ftp\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["transcode", "--config"])
        .arg(&cfg)
        .arg("--check-config")
        .env("STREAMGATE_TRANSCODE__INGEST__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for path in [
        "transcode.store",
        "transcode.admin_token_file",
        "transcode.ingest.max_size",
        "transcode.ingest.expire_after",
        "transcode.ingest.listen",
        "origin.kind",
    ] {
        assert!(err.contains(&format!("{path}:")), "{path} missing in {err}");
    }
}

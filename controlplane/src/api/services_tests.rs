//! Audit, purges, Watch, edges, atomic rotation and policy-in-use, over gRPC. Every scenario
//! runs against the embedded store and a real etcd.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde_json::json;
use streamgate_proto::control::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::EtcdStore;
use crate::store::testkit::{Etcd, start_etcd};
use crate::store::{Versioned, WatchStream};

const ALICE: &str = "alice-token-0123456789";
/// A token without a name; its actor is `token-` and the first 8 hex digits of its SHA-256
/// (computed with `sha256sum`).
const BARE: &str = "bare-token-0123456789abcdef";
const BARE_ACTOR: &str = "token-6a709ae3";

fn alice(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    Ok(req)
}

fn bare(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut()
        .insert("authorization", format!("Bearer {BARE}").parse().unwrap());
    Ok(req)
}

type Auth = fn(Request<()>) -> Result<Request<()>, Status>;
type Svc = tonic::service::interceptor::InterceptedService<Channel, Auth>;

#[derive(Clone)]
struct Clients {
    policies: pb::policy_service_client::PolicyServiceClient<Svc>,
    assets: pb::asset_service_client::AssetServiceClient<Svc>,
    keys: pb::key_service_client::KeyServiceClient<Svc>,
    purges: pb::purge_service_client::PurgeServiceClient<Svc>,
    audit: pb::audit_service_client::AuditServiceClient<Svc>,
    edges: pb::edge_service_client::EdgeServiceClient<Svc>,
}

impl Clients {
    fn new(ch: &Channel, a: Auth) -> Self {
        Self {
            policies: pb::policy_service_client::PolicyServiceClient::with_interceptor(
                ch.clone(),
                a,
            ),
            assets: pb::asset_service_client::AssetServiceClient::with_interceptor(ch.clone(), a),
            keys: pb::key_service_client::KeyServiceClient::with_interceptor(ch.clone(), a),
            purges: pb::purge_service_client::PurgeServiceClient::with_interceptor(ch.clone(), a),
            audit: pb::audit_service_client::AuditServiceClient::with_interceptor(ch.clone(), a),
            edges: pb::edge_service_client::EdgeServiceClient::with_interceptor(ch.clone(), a),
        }
    }
}

/// Serves `store` with the tokens of alice and of an unnamed operator; returns alice's
/// clients, the channel, and the server's stop switch.
async fn serve_store(
    store: Arc<dyn Store>,
) -> (Clients, Channel, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        store,
        AdminAuth::new(vec![format!("alice:{ALICE}"), BARE.into()]),
        async {
            let _ = rx.await;
        },
    ));
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (Clients::new(&ch, alice), ch, tx)
}

async fn start(store: Arc<dyn Store>) -> (Clients, tokio::sync::oneshot::Sender<()>) {
    let (c, _, stop) = serve_store(store).await;
    (c, stop)
}

fn embedded(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(&dir.path().join("store.log")).unwrap())
}

async fn etcd_store(etcd: &Etcd) -> EtcdStore {
    EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap()
}

fn policy_doc(id: &str) -> String {
    format!("id: {id}\nrule:\n  jwt: {{audience: streamgate}}\n")
}

async fn apply(c: &mut Clients, id: &str, expected: i64) -> Result<i64, Status> {
    c.policies
        .apply(pb::ApplyPolicyRequest {
            document: policy_doc(id),
            expected_version: expected,
        })
        .await
        .map(|r| r.into_inner().policy.unwrap().version)
}

fn asset(id: &str, policy: &str) -> pb::Asset {
    pb::Asset {
        id: id.into(),
        policy_id: policy.into(),
        description: String::new(),
        version: 0,
        ..Default::default()
    }
}

async fn audit(c: &mut Clients) -> Vec<pb::AuditEntry> {
    c.audit
        .list(pb::ListAuditRequest {
            after_seq: 0,
            limit: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries
}

async fn purge(c: &mut Clients, t: pb::purge_request::Target) -> Result<pb::PurgeResponse, Status> {
    c.purges
        .purge(pb::PurgeRequest { target: Some(t) })
        .await
        .map(Response::into_inner)
}

const ED_JWK: &str = r#"{"kid": "k1", "alg": "EdDSA", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
const ED_JWK2: &str = r#"{"kid": "k2", "alg": "EdDSA", "crv": "Ed25519", "x": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"}"#;

/// The JSON object's field names, sorted.
fn fields(v: &serde_json::Value) -> Vec<&str> {
    let mut f: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    f.sort_unstable();
    f
}

async fn services_contract(store: Arc<dyn Store>) {
    let (mut c, ch, _stop) = serve_store(Arc::clone(&store)).await;

    // Every mutation is audited with its actor and versions.
    let v1 = apply(&mut c, "p1", 0).await.unwrap();
    let v2 = apply(&mut c, "p1", v1).await.unwrap();
    let mut a1 = c
        .assets
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("a1", "p1")),
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();
    let registered = a1.version;
    a1.description = "updated".into();
    let a1 = c
        .assets
        .update(pb::UpdateAssetRequest {
            asset: Some(a1.clone()),
            expected_version: registered,
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();
    let updated = a1.version;
    assert!(updated > registered);

    // Refused or invalid mutations change nothing and audit nothing.
    let before = audit(&mut c).await;
    assert_eq!(before.len(), 4);
    assert_eq!(
        apply(&mut c, "p1", v1).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    let bad = c
        .policies
        .apply(pb::ApplyPolicyRequest {
            document: "id: p1\nrule: {nope: 1}\n".into(),
            expected_version: v2,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    // A policy in use cannot be deleted; the error names the asset.
    let e = c
        .policies
        .delete(pb::DeletePolicyRequest {
            id: "p1".into(),
            expected_version: v2,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("\"p1\"") && e.message().contains("a1"),
        "{}",
        e.message()
    );
    let stale = c
        .assets
        .update(pb::UpdateAssetRequest {
            asset: Some(a1.clone()),
            expected_version: registered,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let missing = c
        .assets
        .bind(pb::BindAssetRequest {
            asset_id: "a1".into(),
            policy_id: "nope".into(),
            expected_version: a1.version,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::FailedPrecondition);
    let e = purge(&mut c, pb::purge_request::Target::Prefix("../x/".into()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        audit(&mut c).await,
        before,
        "refused changes left audit entries"
    );

    // Keys: add, then a rotation from a stale version changes nothing at all.
    let k1 = c
        .keys
        .add(pb::AddKeyRequest {
            jwk_json: ED_JWK.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let before = audit(&mut c).await;
    let stale = c
        .keys
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: ED_JWK2.into(),
            old_kid: "k1".into(),
            overlap_seconds: 3600,
            expected_version: k1.version - 1,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let keys = c
        .keys
        .list(pb::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1, "the new key was added: {keys:?}");
    assert_eq!(keys[0].version, k1.version);
    assert!(keys[0].retire_at.is_empty(), "the old key was retired");
    assert_eq!(
        audit(&mut c).await,
        before,
        "a refused rotation was audited"
    );
    // The new kid taken already: the old key is not retired either.
    let taken = c
        .keys
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: ED_JWK.replace("k1", "k0"),
            old_kid: "k1".into(),
            overlap_seconds: 3600,
            expected_version: k1.version,
        })
        .await;
    taken.unwrap();
    let k1_now = store
        .get(&format!("{PREFIX}keys/k1"))
        .await
        .unwrap()
        .unwrap();
    let before = audit(&mut c).await;
    let clash = c
        .keys
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: ED_JWK.replace("k1", "k0"),
            old_kid: "k1".into(),
            overlap_seconds: 60,
            expected_version: k1_now.version,
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::FailedPrecondition, "k0 exists");
    let k1_after = store.get(&format!("{PREFIX}keys/k1")).await.unwrap();
    assert_eq!(k1_after.as_ref(), Some(&k1_now), "k1 was changed");
    assert_eq!(audit(&mut c).await, before);
    let rotated = c
        .keys
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: ED_JWK2.into(),
            old_kid: "k1".into(),
            overlap_seconds: 3600,
            expected_version: k1_now.version,
        })
        .await
        .unwrap()
        .into_inner();
    let (added, retiring) = (rotated.added.unwrap(), rotated.retiring.unwrap());
    assert_eq!(added.version, retiring.version, "one transaction");
    assert!(!retiring.retire_at.is_empty());
    let retired = c
        .keys
        .retire(pb::RetireKeyRequest {
            kid: "k2".into(),
            overlap_seconds: 60,
            expected_version: added.version,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();

    // Purges: validated (the error names the field), numbered, recorded for edges.
    for (target, field) in [
        (pb::purge_request::Target::AssetId("A B".into()), "asset_id"),
        (pb::purge_request::Target::Prefix("/abs/".into()), "prefix"),
        (
            pb::purge_request::Target::Prefix("a1/../x/".into()),
            "prefix",
        ),
        (pb::purge_request::Target::Prefix("a1".into()), "prefix"),
        (pb::purge_request::Target::Prefix("A1/x/".into()), "prefix"),
        (pb::purge_request::Target::Prefix("a1/\0/".into()), "prefix"),
        (pb::purge_request::Target::Prefix(String::new()), "prefix"),
    ] {
        let e = purge(&mut c, target).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let e = c
        .purges
        .purge(pb::PurgeRequest { target: None })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("target"), "{}", e.message());
    let p1 = purge(&mut c, pb::purge_request::Target::AssetId("a1".into()))
        .await
        .unwrap();
    let p2 = purge(
        &mut c,
        pb::purge_request::Target::Prefix("a1/video/720p/".into()),
    )
    .await
    .unwrap();
    assert_eq!((p1.seq, p2.seq), (1, 2));
    for (seq, p, field, value) in [
        (1, &p1, "asset", "a1"),
        (2, &p2, "prefix", "a1/video/720p/"),
    ] {
        let rec = store
            .get(&format!("{PREFIX}purges/{seq:020}"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rec.version, p.revision);
        let rec: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
        let mut want = vec!["actor", "seq", "time", field];
        want.sort_unstable();
        assert_eq!(fields(&rec), want, "{rec}");
        assert_eq!(rec["seq"], seq);
        assert_eq!(rec[field], value);
        assert_eq!(rec["actor"], "alice");
        humantime::parse_rfc3339(rec["time"].as_str().unwrap()).unwrap();
    }
    let counter = store
        .get(&format!("{PREFIX}counters/purge"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (counter.value.as_slice(), counter.version),
        (&b"2"[..], p2.revision)
    );

    // Unbind, then the policy can go; the unnamed operator deletes it, then the asset.
    let a1 = c
        .assets
        .bind(pb::BindAssetRequest {
            asset_id: "a1".into(),
            policy_id: String::new(),
            expected_version: a1.version,
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();
    let mut b = Clients::new(&ch, bare);
    b.policies
        .delete(pb::DeletePolicyRequest {
            id: "p1".into(),
            expected_version: v2,
        })
        .await
        .unwrap();
    b.assets
        .delete(pb::DeleteAssetRequest {
            id: "a1".into(),
            expected_version: a1.version,
        })
        .await
        .unwrap();

    // The audit log, oldest first, with actor, action, target and versions.
    let log = audit(&mut c).await;
    let got: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", "policy.apply", "policies/p1"),
            ("alice", "policy.apply", "policies/p1"),
            ("alice", "asset.register", "assets/a1"),
            ("alice", "asset.update", "assets/a1"),
            ("alice", "key.add", "keys/k1"),
            ("alice", "key.rotate", "keys/k1"),
            ("alice", "key.rotate", "keys/k1"),
            ("alice", "key.retire", "keys/k2"),
            ("alice", "purge", "asset:a1"),
            ("alice", "purge", "prefix:a1/video/720p/"),
            ("alice", "asset.bind", "assets/a1"),
            (BARE_ACTOR, "policy.delete", "policies/p1"),
            (BARE_ACTOR, "asset.delete", "assets/a1"),
        ]
    );
    let versions: Vec<(i64, i64)> = log.iter().map(|e| (e.old_version, e.new_version)).collect();
    let (_, rev_now) = store.list(PREFIX).await.unwrap();
    assert_eq!(
        versions[..5],
        [
            (0, v1),
            (v1, v2),
            (0, registered),
            (registered, updated),
            (0, k1.version),
        ]
    );
    assert_eq!(
        (log[6].old_version, log[6].new_version),
        (k1_now.version, added.version)
    );
    assert_eq!(
        (log[7].old_version, log[7].new_version),
        (added.version, retired.version)
    );
    assert_eq!(log[8].new_version, p1.revision);
    assert_eq!(log[10].new_version, a1.version);
    // A delete reports the revision of the delete; the last one is the store's revision.
    assert_eq!(log[11].old_version, v2);
    assert_eq!(log[12].old_version, a1.version);
    assert_eq!(log[12].new_version, rev_now);
    assert!(log[11].new_version > log[10].new_version && log[11].new_version < rev_now);
    for e in &log {
        assert_eq!(e.seq, e.new_version);
        let t = humantime::parse_rfc3339(&e.time).unwrap();
        let age = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(age < Duration::from_secs(120), "{}", e.time);
    }
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));

    // As stored: time-ordered keys, the documented fields, and never a token.
    let (raw, _) = store.list(&format!("{PREFIX}audit/")).await.unwrap();
    assert_eq!(raw.len(), log.len());
    for (key, v) in &raw {
        let name = key.strip_prefix(&format!("{PREFIX}audit/")).unwrap();
        let (nanos, salt) = name.split_once('-').unwrap();
        assert!(
            nanos.len() == 20 && nanos.bytes().all(|b| b.is_ascii_digit()),
            "{key}"
        );
        assert!(
            salt.len() == 4 && salt.bytes().all(|b| b.is_ascii_hexdigit()),
            "{key}"
        );
        let text = String::from_utf8(v.value.clone()).unwrap();
        assert!(!text.contains(ALICE) && !text.contains(BARE), "{text}");
        let d: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            fields(&d),
            ["action", "actor", "old_version", "target", "time"]
        );
    }

    // Paging: after a seq, with a limit; 0 is the default; over 1000 is refused.
    let later = c
        .audit
        .list(pb::ListAuditRequest {
            after_seq: log[9].seq,
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(later, log[10..12]);
    let all = c
        .audit
        .list(pb::ListAuditRequest {
            after_seq: 0,
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(all, log);
    let e = c
        .audit
        .list(pb::ListAuditRequest {
            after_seq: 0,
            limit: 1001,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Edges report themselves; the list computes lag and staleness and skips garbage.
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let old =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(600)).to_string();
    let (_, rev) = store.list(PREFIX).await.unwrap();
    for (id, value) in [
        (
            "e1",
            json!({"id": "e1", "revision": rev, "applied_at": now, "started_at": old,
                "version": "0.1.0", "hostname": "h1"})
            .to_string(),
        ),
        (
            "e2",
            json!({"id": "e2", "revision": 1, "applied_at": old}).to_string(),
        ),
        ("junk", "not json".to_owned()),
        ("e3", json!({"id": "e3"}).to_string()),
        ("e4", json!({"id": "other", "revision": 1}).to_string()),
    ] {
        store
            .txn(
                &[],
                vec![Op::put(format!("{PREFIX}edges/{id}"), value.into_bytes())],
            )
            .await
            .unwrap();
    }
    let edges = c
        .edges
        .list(pb::ListEdgesRequest {})
        .await
        .unwrap()
        .into_inner();
    let (_, store_rev) = store.list(PREFIX).await.unwrap();
    assert_eq!(edges.store_revision, store_rev);
    assert_eq!(
        edges
            .edges
            .iter()
            .map(|e| (e.id.as_str(), e.revision, e.lag, e.stale))
            .collect::<Vec<_>>(),
        [
            ("e1", rev, store_rev - rev, false),
            ("e2", 1, store_rev - 1, true)
        ]
    );
    assert_eq!(
        (
            edges.edges[0].hostname.as_str(),
            edges.edges[0].version.as_str()
        ),
        ("h1", "0.1.0")
    );
    assert_eq!(edges.edges[0].started_at, old);
}

#[tokio::test]
async fn services_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    services_contract(embedded(&dir)).await;
}

#[tokio::test]
async fn services_on_etcd() {
    let etcd = start_etcd();
    services_contract(Arc::new(etcd_store(&etcd).await)).await;
}

/// Deleting a policy and binding an asset to it, concurrently, never leaves the asset bound
/// to a missing policy: both cannot commit.
async fn delete_and_bind_race(store: Arc<dyn Store>) {
    let (c, _stop) = start(Arc::clone(&store)).await;
    let mut outcomes = [0usize; 4];
    for i in 0..40 {
        let (p, a) = (format!("race-p{i}"), format!("race-a{i}"));
        let mut c1 = c.clone();
        let pv = apply(&mut c1, &p, 0).await.unwrap();
        // Half the assets start unbound, half bound to another policy: a bind that moves an
        // asset must be caught too.
        let from = if i % 2 == 0 {
            String::new()
        } else {
            format!("race-q{i}")
        };
        if !from.is_empty() {
            apply(&mut c1, &from, 0).await.unwrap();
        }
        let av = c1
            .assets
            .register(pb::RegisterAssetRequest {
                asset: Some(asset(&a, &from)),
            })
            .await
            .unwrap()
            .into_inner()
            .asset
            .unwrap()
            .version;
        let (mut c2, mut c3) = (c.clone(), c.clone());
        let bind = tokio::spawn({
            let (a, p) = (a.clone(), p.clone());
            async move {
                c2.assets
                    .bind(pb::BindAssetRequest {
                        asset_id: a,
                        policy_id: p,
                        expected_version: av,
                    })
                    .await
            }
        });
        let delete = tokio::spawn({
            let p = p.clone();
            async move {
                c3.policies
                    .delete(pb::DeletePolicyRequest {
                        id: p,
                        expected_version: pv,
                    })
                    .await
            }
        });
        let (bind, delete) = (bind.await.unwrap(), delete.await.unwrap());
        for r in [bind.as_ref().err(), delete.as_ref().err()]
            .into_iter()
            .flatten()
        {
            assert_eq!(r.code(), Code::FailedPrecondition, "{r:?}");
        }
        outcomes[usize::from(bind.is_ok()) * 2 + usize::from(delete.is_ok())] += 1;
        assert!(
            !(bind.is_ok() && delete.is_ok()),
            "both the bind and the delete of {p} committed"
        );
        let bound = store
            .get(&format!("{PREFIX}assets/{a}"))
            .await
            .unwrap()
            .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&bound.value).unwrap();
        if let Some(policy) = doc["policy"].as_str() {
            assert!(
                store.get(&policy_key(policy)).await.unwrap().is_some(),
                "{a} is bound to the missing policy {policy}"
            );
        }
        assert_eq!(
            doc["policy"].as_str() == Some(p.as_str()),
            bind.is_ok(),
            "the asset's binding is what the bind call reported"
        );
        assert_eq!(
            store.get(&policy_key(&p)).await.unwrap().is_none(),
            delete.is_ok(),
            "the policy is gone exactly when the delete reported success"
        );
    }
    assert_eq!(outcomes[0] + outcomes[3], 0, "{outcomes:?}");
    eprintln!("race outcomes [neither, delete only, bind only, both]: {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_and_bind_races_never_dangle_embedded() {
    let dir = tempfile::tempdir().unwrap();
    delete_and_bind_race(embedded(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_and_bind_races_never_dangle_on_etcd() {
    let etcd = start_etcd();
    delete_and_bind_race(Arc::new(etcd_store(&etcd).await)).await;
}

async fn purge_numbering_and_pruning(store: Arc<dyn Store>) {
    use pb::purge_service_server::PurgeService;
    let api = PurgeApi::with_keep(Arc::clone(&store), 3);
    for want in 1..=5 {
        let r = api
            .purge(Request::new(pb::PurgeRequest {
                target: Some(pb::purge_request::Target::AssetId("demo".into())),
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.seq, want);
    }
    let seqs = |items: &[(String, Versioned)]| -> Vec<i64> {
        items
            .iter()
            .map(|(k, _)| k.rsplit('/').next().unwrap().parse().unwrap())
            .collect()
    };
    let (items, _) = store.list(&format!("{PREFIX}purges/")).await.unwrap();
    assert_eq!(seqs(&items), [3, 4, 5]);
    // Concurrent purges each get their own number, and pruning still keeps the newest 3.
    let api = Arc::new(api);
    let handles: Vec<_> = (0..5)
        .map(|_| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                api.purge(Request::new(pb::PurgeRequest {
                    target: Some(pb::purge_request::Target::Prefix("demo/v/".into())),
                }))
                .await
                .map(|r| r.into_inner().seq)
            })
        })
        .collect();
    let mut got = Vec::new();
    for h in handles {
        got.push(h.await.unwrap().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, [6, 7, 8, 9, 10]);
    // Each successful attempt listed the records after the last purge committed (any purge
    // in between would have moved the counter it guards), so pruning is exact.
    let (items, _) = store.list(&format!("{PREFIX}purges/")).await.unwrap();
    assert_eq!(seqs(&items), [8, 9, 10]);
    api.purge(Request::new(pb::PurgeRequest {
        target: Some(pb::purge_request::Target::AssetId("demo".into())),
    }))
    .await
    .unwrap();
    let (items, _) = store.list(&format!("{PREFIX}purges/")).await.unwrap();
    assert_eq!(seqs(&items), [9, 10, 11]);
    // Each purge was audited once.
    let (audit, _) = store.list(&format!("{PREFIX}audit/")).await.unwrap();
    assert_eq!(audit.len(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_records_are_numbered_and_pruned_embedded() {
    let dir = tempfile::tempdir().unwrap();
    purge_numbering_and_pruning(embedded(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn purge_records_are_numbered_and_pruned_on_etcd() {
    let etcd = start_etcd();
    purge_numbering_and_pruning(Arc::new(etcd_store(&etcd).await)).await;
}

#[tokio::test]
async fn purge_numbers_continue_after_the_newest_record_if_the_counter_is_lost() {
    use pb::purge_service_server::PurgeService;
    let dir = tempfile::tempdir().unwrap();
    let store = embedded(&dir);
    let api = PurgeApi::new(Arc::clone(&store));
    let req = || {
        Request::new(pb::PurgeRequest {
            target: Some(pb::purge_request::Target::AssetId("demo".into())),
        })
    };
    api.purge(req()).await.unwrap();
    api.purge(req()).await.unwrap();
    let ckey = format!("{PREFIX}counters/purge");
    let cv = store.get(&ckey).await.unwrap().unwrap().version;
    store.delete(&ckey, cv).await.unwrap();
    assert_eq!(api.purge(req()).await.unwrap().into_inner().seq, 3);
    // A counter that is not a number is an internal error, not a silent restart at 1.
    let cv = store.get(&ckey).await.unwrap().unwrap().version;
    store.put(&ckey, b"x".to_vec(), cv).await.unwrap();
    assert_eq!(api.purge(req()).await.unwrap_err().code(), Code::Internal);
}

async fn next(w: &mut tonic::Streaming<pb::PolicyEvent>) -> pb::PolicyEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

/// Watch from 0 (the state at the listing's revision, then changes) and from a revision.
async fn watch_contract(store: Arc<dyn Store>) {
    let (mut c, _stop) = start(Arc::clone(&store)).await;
    let v1 = apply(&mut c, "w1", 0).await.unwrap();
    let v0 = apply(&mut c, "w0", 0).await.unwrap();
    // Something else written after the policies: the listing's revision is past both.
    let listed_at = c
        .assets
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("x", "")),
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap()
        .version;
    let mut w = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let (a, b) = (next(&mut w).await, next(&mut w).await);
    for (e, id, version) in [(&a, "w0", v0), (&b, "w1", v1)] {
        assert_eq!(e.kind, pb::policy_event::Kind::Put as i32);
        let p = e.policy.as_ref().unwrap();
        assert_eq!(
            (p.id.as_str(), p.version, e.revision),
            (id, version, listed_at)
        );
        let doc: serde_json::Value = serde_json::from_str(&p.document_json).unwrap();
        assert_eq!(doc["id"], id);
    }
    let v2 = apply(&mut c, "w2", 0).await.unwrap();
    let e = next(&mut w).await;
    let p = e.policy.unwrap();
    assert_eq!((p.id.as_str(), p.version, e.revision), ("w2", v2, v2));
    // Changes outside policies/ are not policy events.
    c.assets
        .delete(pb::DeleteAssetRequest {
            id: "x".into(),
            expected_version: listed_at,
        })
        .await
        .unwrap();
    c.policies
        .delete(pb::DeletePolicyRequest {
            id: "w1".into(),
            expected_version: v1,
        })
        .await
        .unwrap();
    let d = next(&mut w).await;
    assert_eq!(d.kind, pb::policy_event::Kind::Delete as i32);
    let (_, deleted_at) = store.list(PREFIX).await.unwrap();
    assert_eq!(d.revision, deleted_at);
    assert_eq!(
        d.policy.unwrap(),
        pb::Policy {
            id: "w1".into(),
            ..pb::Policy::default()
        }
    );

    // Resuming from a revision replays exactly what came after it.
    let mut r = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: v0 })
        .await
        .unwrap()
        .into_inner();
    let replay = [next(&mut r).await, next(&mut r).await];
    assert_eq!(
        replay
            .iter()
            .map(|e| (e.kind, e.policy.as_ref().unwrap().id.as_str(), e.revision))
            .collect::<Vec<_>>(),
        [
            (pb::policy_event::Kind::Put as i32, "w2", v2),
            (pb::policy_event::Kind::Delete as i32, "w1", deleted_at)
        ]
    );
    let v3 = apply(&mut c, "w3", 0).await.unwrap();
    assert_eq!(next(&mut r).await.revision, v3);
    assert_eq!(next(&mut w).await.revision, v3);

    let neg = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: -1 })
        .await
        .unwrap_err();
    assert_eq!(neg.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn watch_from_zero_and_from_a_revision_embedded() {
    let dir = tempfile::tempdir().unwrap();
    watch_contract(embedded(&dir)).await;
}

#[tokio::test]
async fn watch_from_zero_and_from_a_revision_on_etcd() {
    let etcd = start_etcd();
    watch_contract(Arc::new(etcd_store(&etcd).await)).await;
}

/// The code a watch from `from` ends with: at the call, or as the stream's first item.
async fn watch_error(c: &mut Clients, from: i64) -> Status {
    match c
        .policies
        .watch(pb::WatchPoliciesRequest {
            from_revision: from,
        })
        .await
    {
        Err(s) => s,
        Ok(s) => tokio::time::timeout(Duration::from_secs(10), s.into_inner().next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err(),
    }
}

#[tokio::test]
async fn watch_after_an_etcd_compaction_is_out_of_range() {
    let etcd = start_etcd();
    let store = etcd_store(&etcd).await;
    let (mut c, _stop) = start(Arc::new(store.clone())).await;
    apply(&mut c, "w1", 0).await.unwrap();
    let v2 = apply(&mut c, "w2", 0).await.unwrap();
    apply(&mut c, "w3", 0).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .compact(
            v2,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    let gone = watch_error(&mut c, 1).await;
    assert_eq!(gone.code(), Code::OutOfRange, "{gone:?}");
    assert!(
        gone.message().contains("watch from 0"),
        "{}",
        gone.message()
    );
    // From the compaction point on, history is there.
    let mut w = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: v2 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut w).await.policy.unwrap().id, "w3");
}

#[tokio::test]
async fn watch_before_an_embedded_restart_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = {
        let store = embedded(&dir);
        store
            .put(&policy_key("w0"), br#"{"id":"w0"}"#.to_vec(), 0)
            .await
            .unwrap();
        store
            .put(&policy_key("w1"), br#"{"id":"w1"}"#.to_vec(), 0)
            .await
            .unwrap()
    };
    assert!(v1 >= 2);
    // The embedded store keeps no history across a restart: that is its compaction.
    let store = embedded(&dir);
    let (mut c, _stop) = start(Arc::clone(&store)).await;
    let gone = watch_error(&mut c, v1 - 1).await;
    assert_eq!(gone.code(), Code::OutOfRange, "{gone:?}");
    let mut w = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: v1 })
        .await
        .unwrap()
        .into_inner();
    let v2 = apply(&mut c, "w2", 0).await.unwrap();
    assert_eq!(next(&mut w).await.revision, v2);
}

/// A store that counts the watch streams still alive.
struct Tracked {
    inner: Arc<dyn Store>,
    open: Arc<AtomicUsize>,
}

/// Held by a watch stream; counts it closed when dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for Tracked {
    async fn get(&self, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<(String, Versioned)>, i64), StoreError> {
        self.inner.list(prefix).await
    }
    async fn txn(&self, guards: &[Guard], ops: Vec<Op>) -> Result<i64, StoreError> {
        self.inner.txn(guards, ops).await
    }
    async fn grant(&self, ttl: Duration) -> Result<streamgate_store::LeaseId, StoreError> {
        self.inner.grant(ttl).await
    }
    async fn keep_alive(&self, lease: streamgate_store::LeaseId) -> Result<(), StoreError> {
        self.inner.keep_alive(lease).await
    }
    async fn revoke(&self, lease: streamgate_store::LeaseId) -> Result<(), StoreError> {
        self.inner.revoke(lease).await
    }
    async fn watch(&self, prefix: &str, after: i64) -> Result<WatchStream, StoreError> {
        let s = self.inner.watch(prefix, after).await?;
        self.open.fetch_add(1, Ordering::SeqCst);
        let open = Open(Arc::clone(&self.open));
        Ok(s.map(move |b| {
            let _alive = &open;
            b
        })
        .boxed())
    }
}

/// A client that goes away ends the server's store watch, even when no policy changes.
async fn watch_ends_when_the_client_leaves(inner: Arc<dyn Store>) {
    let open = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(Tracked {
        inner,
        open: Arc::clone(&open),
    });
    let (mut c, _stop) = start(store).await;
    apply(&mut c, "w1", 0).await.unwrap();
    let mut w = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut w).await.policy.unwrap().id, "w1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        open.load(Ordering::SeqCst),
        1,
        "the watch is open while the client is"
    );
    drop(w);
    let t0 = std::time::Instant::now();
    while open.load(Ordering::SeqCst) != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the store watch outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watch_ends_when_the_client_leaves_embedded() {
    let dir = tempfile::tempdir().unwrap();
    watch_ends_when_the_client_leaves(embedded(&dir)).await;
}

#[tokio::test]
async fn watch_ends_when_the_client_leaves_on_etcd() {
    let etcd = start_etcd();
    watch_ends_when_the_client_leaves(Arc::new(etcd_store(&etcd).await)).await;
}

#[tokio::test]
async fn apply_checks_nft_chains_against_the_registry() {
    use pb::policy_service_server::PolicyService;
    let dir = tempfile::tempdir().unwrap();
    let known = vec![streamgate_policy::address::ChainId::parse("eip155:1").unwrap()];
    let api = PolicyApi::new(embedded(&dir)).with_chains(known);
    let doc = |chain: &str| {
        format!(
            r#"{{"id": "holders", "rule": {{"any_of": [{{"public": true}}, {{"nft": {{"chain": "{chain}", "standard": "erc721", "contract": "0x5FbDB2315678afecb367f032d93F642f64180aa3"}}}}]}}}}"#
        )
    };
    let err = api
        .apply(Request::new(pb::ApplyPolicyRequest {
            document: doc("eip155:137"),
            expected_version: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("rule.any_of[1].nft.chain")
            && err.message().contains("not in the chain registry"),
        "{}",
        err.message()
    );
    api.apply(Request::new(pb::ApplyPolicyRequest {
        document: doc("eip155:1"),
        expected_version: 0,
    }))
    .await
    .unwrap();
}

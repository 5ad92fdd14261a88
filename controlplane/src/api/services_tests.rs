//! Audit, purges, Watch, edges, atomic rotation and policy-in-use, over gRPC, against the
//! embedded store and a real etcd.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use streamgate_proto::control::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::EtcdStore;
use crate::store::testkit::start_etcd;

const ALICE: &str = "alice-token-0123456789";

fn alice(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ALICE}").parse().unwrap());
    Ok(req)
}

type Auth = fn(Request<()>) -> Result<Request<()>, Status>;

struct Clients {
    policies: pb::policy_service_client::PolicyServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    assets: pb::asset_service_client::AssetServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    keys: pb::key_service_client::KeyServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    purges: pb::purge_service_client::PurgeServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    audit: pb::audit_service_client::AuditServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
    edges: pb::edge_service_client::EdgeServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, Auth>,
    >,
}

async fn start(store: Arc<dyn Store>) -> (Clients, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        store,
        AdminAuth::new(vec![format!("alice:{ALICE}")]),
        async {
            let _ = rx.await;
        },
    ));
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let a = alice as Auth;
    let clients = Clients {
        policies: pb::policy_service_client::PolicyServiceClient::with_interceptor(ch.clone(), a),
        assets: pb::asset_service_client::AssetServiceClient::with_interceptor(ch.clone(), a),
        keys: pb::key_service_client::KeyServiceClient::with_interceptor(ch.clone(), a),
        purges: pb::purge_service_client::PurgeServiceClient::with_interceptor(ch.clone(), a),
        audit: pb::audit_service_client::AuditServiceClient::with_interceptor(ch.clone(), a),
        edges: pb::edge_service_client::EdgeServiceClient::with_interceptor(ch, a),
    };
    (clients, tx)
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

const ED_JWK: &str = r#"{"kid": "k1", "alg": "EdDSA", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
const ED_JWK2: &str = r#"{"kid": "k2", "alg": "EdDSA", "crv": "Ed25519", "x": "3p7bfXt9wbTTW2HC7OQ1Nz-DQ8hbeGdNrfx-FG-IK08"}"#;

async fn services_contract(store: Arc<dyn Store>) {
    let (mut c, _stop) = start(Arc::clone(&store)).await;

    // Every mutation is audited with its actor and versions.
    let v1 = apply(&mut c, "p1", 0).await.unwrap();
    let v2 = apply(&mut c, "p1", v1).await.unwrap();
    let before = audit(&mut c).await.len();
    // A stale version or an invalid document changes nothing and audits nothing.
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
    assert_eq!(audit(&mut c).await.len(), before);

    let a1 = c
        .assets
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("a1", "p1")),
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();

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
    assert!(e.message().contains("a1"), "{}", e.message());

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
    assert_eq!(keys.len(), 1, "the new key was not added: {keys:?}");
    assert!(keys[0].retire_at.is_empty(), "the old key was not retired");
    let rotated = c
        .keys
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: ED_JWK2.into(),
            old_kid: "k1".into(),
            overlap_seconds: 3600,
            expected_version: k1.version,
        })
        .await
        .unwrap()
        .into_inner();
    let (added, retiring) = (rotated.added.unwrap(), rotated.retiring.unwrap());
    assert_eq!(added.version, retiring.version, "one transaction");
    assert!(!retiring.retire_at.is_empty());

    // Purges: validated, numbered, recorded for edges.
    for (target, field) in [
        (pb::purge_request::Target::AssetId("A B".into()), "asset_id"),
        (pb::purge_request::Target::Prefix("/abs/".into()), "prefix"),
        (
            pb::purge_request::Target::Prefix("a1/../x/".into()),
            "prefix",
        ),
        (pb::purge_request::Target::Prefix("a1".into()), "prefix"),
        (pb::purge_request::Target::Prefix(String::new()), "prefix"),
    ] {
        let e = c
            .purges
            .purge(pb::PurgeRequest {
                target: Some(target),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with(field), "{}", e.message());
    }
    let p1 = c
        .purges
        .purge(pb::PurgeRequest {
            target: Some(pb::purge_request::Target::AssetId("a1".into())),
        })
        .await
        .unwrap()
        .into_inner();
    let p2 = c
        .purges
        .purge(pb::PurgeRequest {
            target: Some(pb::purge_request::Target::Prefix("a1/video/720p/".into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((p1.seq, p2.seq), (1, 2));
    let rec = store
        .get(&format!("{PREFIX}purges/{:020}", 2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.version, p2.revision);
    let rec: serde_json::Value = serde_json::from_slice(&rec.value).unwrap();
    assert_eq!(rec["prefix"], "a1/video/720p/");
    assert_eq!(rec["actor"], "alice");

    // Unbind, then the policy can go.
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
    c.policies
        .delete(pb::DeletePolicyRequest {
            id: "p1".into(),
            expected_version: v2,
        })
        .await
        .unwrap();

    // The audit log, oldest first, with actor, action, target and versions.
    let log = audit(&mut c).await;
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "policy.apply",
            "policy.apply",
            "asset.register",
            "key.add",
            "key.rotate",
            "purge",
            "purge",
            "asset.bind",
            "policy.delete"
        ]
    );
    assert!(log.iter().all(|e| e.actor == "alice"));
    assert_eq!((log[0].old_version, log[0].new_version), (0, v1));
    assert_eq!((log[1].old_version, log[1].new_version), (v1, v2));
    assert_eq!(log[1].target, "policies/p1");
    assert_eq!(log[7].new_version, a1.version);
    assert!(log.windows(2).all(|w| w[0].seq < w[1].seq));
    let later = c
        .audit
        .list(pb::ListAuditRequest {
            after_seq: log[6].seq,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].action, "asset.bind");

    // Edges report themselves; the list computes lag and staleness and skips garbage.
    let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let old =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(600)).to_string();
    let (_, rev) = store.list(PREFIX).await.unwrap();
    for (id, value) in [
        (
            "e1",
            json!({"id": "e1", "revision": rev, "applied_at": now}).to_string(),
        ),
        (
            "e2",
            json!({"id": "e2", "revision": 1, "applied_at": old}).to_string(),
        ),
        ("junk", "not json".to_owned()),
    ] {
        store
            .txn(
                &[],
                vec![Op::Put {
                    key: format!("{PREFIX}edges/{id}"),
                    value: value.into_bytes(),
                }],
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
    assert_eq!(edges.edges.len(), 2, "{edges:?}");
    let (e1, e2) = (&edges.edges[0], &edges.edges[1]);
    assert_eq!(e1.lag, edges.store_revision - rev);
    assert!(!e1.stale && e2.stale);
    assert_eq!(e2.lag, edges.store_revision - 1);
}

#[tokio::test]
async fn services_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    services_contract(Arc::new(
        EmbeddedStore::open(&dir.path().join("store.log")).unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn services_on_etcd() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    services_contract(Arc::new(store)).await;
}

/// Deleting a policy and binding an asset to it, concurrently, never leaves the asset bound
/// to a missing policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_and_bind_races_never_dangle() {
    let etcd = start_etcd();
    let store: Arc<dyn Store> = Arc::new(
        EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
            .await
            .unwrap(),
    );
    let (c, _stop) = start(Arc::clone(&store)).await;
    let mut outcomes = [0usize; 4];
    for i in 0..30 {
        let (p, a) = (format!("race-p{i}"), format!("race-a{i}"));
        let mut c1 = clone_clients(&c);
        let pv = apply(&mut c1, &p, 0).await.unwrap();
        let av = c1
            .assets
            .register(pb::RegisterAssetRequest {
                asset: Some(asset(&a, "")),
            })
            .await
            .unwrap()
            .into_inner()
            .asset
            .unwrap()
            .version;
        let mut c2 = clone_clients(&c);
        let mut c3 = clone_clients(&c);
        let (bind, delete) = tokio::join!(
            c2.assets.bind(pb::BindAssetRequest {
                asset_id: a.clone(),
                policy_id: p.clone(),
                expected_version: av,
            }),
            c3.policies.delete(pb::DeletePolicyRequest {
                id: p.clone(),
                expected_version: pv,
            })
        );
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
        if doc["policy"] == p.as_str() {
            assert!(store.get(&policy_key(&p)).await.unwrap().is_some());
        }
    }
    eprintln!("race outcomes [neither, delete only, bind only, both]: {outcomes:?}");
}

fn clone_clients(c: &Clients) -> Clients {
    Clients {
        policies: c.policies.clone(),
        assets: c.assets.clone(),
        keys: c.keys.clone(),
        purges: c.purges.clone(),
        audit: c.audit.clone(),
        edges: c.edges.clone(),
    }
}

#[tokio::test]
async fn purge_records_are_pruned_to_the_newest() {
    use pb::purge_service_server::PurgeService;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(&dir.path().join("store.log")).unwrap());
    let api = PurgeApi::with_keep(Arc::clone(&store), 3);
    for _ in 0..5 {
        api.purge(Request::new(pb::PurgeRequest {
            target: Some(pb::purge_request::Target::AssetId("demo".into())),
        }))
        .await
        .unwrap();
    }
    let (items, _) = store.list(&format!("{PREFIX}purges/")).await.unwrap();
    let seqs: Vec<&str> = items
        .iter()
        .map(|(k, _)| k.rsplit('/').next().unwrap().trim_start_matches('0'))
        .collect();
    assert_eq!(seqs, ["3", "4", "5"]);
    // Concurrent purges each get their own number.
    let api = Arc::new(api);
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                api.purge(Request::new(pb::PurgeRequest {
                    target: Some(pb::purge_request::Target::AssetId("demo".into())),
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
    assert_eq!(got, [6, 7, 8, 9, 10, 11]);
}

async fn next(w: &mut tonic::Streaming<pb::PolicyEvent>) -> pb::PolicyEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn watch_streams_policies_and_reports_compaction() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    let (mut c, _stop) = start(Arc::new(store.clone())).await;
    let v1 = apply(&mut c, "w1", 0).await.unwrap();
    let mut w = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut w).await;
    assert_eq!(first.policy.as_ref().unwrap().id, "w1");
    assert_eq!(first.revision, v1);
    let v2 = apply(&mut c, "w2", 0).await.unwrap();
    let e = next(&mut w).await;
    assert_eq!((e.policy.unwrap().id.as_str(), e.revision), ("w2", v2));
    c.policies
        .delete(pb::DeletePolicyRequest {
            id: "w1".into(),
            expected_version: v1,
        })
        .await
        .unwrap();
    let d = next(&mut w).await;
    assert_eq!(d.kind, pb::policy_event::Kind::Delete as i32);
    assert_eq!(d.policy.unwrap().id, "w1");

    // Resuming from a revision replays what came after it.
    let mut r = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: v1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(next(&mut r).await.revision, v2);

    // Compacted history is OUT_OF_RANGE, not a silent gap.
    let (_, rev) = store.list(PREFIX).await.unwrap();
    store
        .client()
        .compact(
            rev,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .unwrap();
    let gone = c
        .policies
        .watch(pb::WatchPoliciesRequest { from_revision: 1 })
        .await;
    let code = match gone {
        Err(s) => s.code(),
        Ok(s) => tokio::time::timeout(Duration::from_secs(10), s.into_inner().next())
            .await
            .unwrap()
            .unwrap()
            .unwrap_err()
            .code(),
    };
    assert_eq!(code, Code::OutOfRange);
}

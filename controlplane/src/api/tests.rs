//! The policy API over gRPC, with a tonic client, against the embedded store and real etcd.

use std::sync::Arc;
use std::time::SystemTime;

use streamgate_proto::control::v1 as pb;
use tonic::Code;
use tonic::transport::Channel;

use super::*;
use crate::store::embedded::EmbeddedStore;
use crate::store::etcd::EtcdStore;
use crate::store::testkit::start_etcd;

const ADMIN: &str = "admin-token-0123456789";

type Client = pb::policy_service_client::PolicyServiceClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        fn(Request<()>) -> Result<Request<()>, Status>,
    >,
>;

fn with_token(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN}").parse().unwrap());
    Ok(req)
}

fn with_lowercase_scheme(mut req: Request<()>) -> Result<Request<()>, Status> {
    req.metadata_mut()
        .insert("authorization", format!("bearer {ADMIN}").parse().unwrap());
    Ok(req)
}

fn without_token(req: Request<()>) -> Result<Request<()>, Status> {
    Ok(req)
}

async fn start(store: Arc<dyn Store>) -> (Channel, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        store,
        AdminAuth::new(vec![ADMIN.into()]),
        async {
            let _ = rx.await;
        },
    ));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, tx)
}

fn client(ch: &Channel, f: fn(Request<()>) -> Result<Request<()>, Status>) -> Client {
    pb::policy_service_client::PolicyServiceClient::with_interceptor(ch.clone(), f)
}

const GOOD: &str = "id: viewers\nrule:\n  jwt: {audience: streamgate}\n";

async fn policy_api_contract(store: Arc<dyn Store>) {
    let (ch, _stop) = start(store).await;
    let mut c = client(&ch, with_token);

    // No admin credential, or a wrong one: UNAUTHENTICATED.
    let anon = client(&ch, without_token)
        .list(pb::ListPoliciesRequest {})
        .await
        .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);
    // The scheme is case-insensitive (RFC 6750): `bearer` works as `Bearer` does.
    client(&ch, with_lowercase_scheme)
        .list(pb::ListPoliciesRequest {})
        .await
        .expect("lowercase bearer scheme accepted");

    // An invalid policy lists every error with its path, and nothing is written.
    let bad = "id: Bad Id\nrule:\n  any_of:\n    - ip: {allow: [nope]}\n    - jwt: {audience: 3}\n";
    let e = c
        .apply(pb::ApplyPolicyRequest {
            document: bad.into(),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    for path in [
        "id:",
        "rule.any_of[0].ip.allow[0]",
        "rule.any_of[1].jwt.audience",
    ] {
        assert!(
            e.message().contains(path),
            "{path} missing: {}",
            e.message()
        );
    }
    assert!(
        c.list(pb::ListPoliciesRequest {})
            .await
            .unwrap()
            .into_inner()
            .policies
            .is_empty()
    );

    let v1 = c
        .apply(pb::ApplyPolicyRequest {
            document: GOOD.into(),
            expected_version: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(v1.id, "viewers");
    assert!(v1.version > 0);
    let doc: serde_json::Value = serde_json::from_str(&v1.document_json).unwrap();
    assert_eq!(doc["rule"]["jwt"]["audience"], "streamgate");

    // Two concurrent applies from the same base version: one wins, one FAILED_PRECONDITION.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let doc2 = GOOD.replace("streamgate", "other");
    let (a, b) = tokio::join!(
        c1.apply(pb::ApplyPolicyRequest {
            document: GOOD.into(),
            expected_version: v1.version
        }),
        c2.apply(pb::ApplyPolicyRequest {
            document: doc2,
            expected_version: v1.version
        })
    );
    let codes = [
        a.as_ref().err().map(|e| e.code()),
        b.as_ref().err().map(|e| e.code()),
    ];
    assert_eq!(codes.iter().filter(|c| c.is_none()).count(), 1, "{codes:?}");
    assert!(codes.contains(&Some(Code::FailedPrecondition)), "{codes:?}");

    let got = c
        .get(pb::GetPolicyRequest {
            id: "viewers".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert!(got.version > v1.version);
    let stale = c
        .delete(pb::DeletePolicyRequest {
            id: "viewers".into(),
            expected_version: v1.version,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    c.delete(pb::DeletePolicyRequest {
        id: "viewers".into(),
        expected_version: got.version,
    })
    .await
    .unwrap();
    let gone = c
        .get(pb::GetPolicyRequest {
            id: "viewers".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // gRPC health answers without credentials.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
}

#[tokio::test]
async fn policy_api_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    policy_api_contract(Arc::new(
        EmbeddedStore::open(&dir.path().join("store.log")).unwrap(),
    ))
    .await;
}

#[tokio::test]
async fn policy_api_on_etcd() {
    let etcd = start_etcd();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    policy_api_contract(Arc::new(store)).await;
}

#[test]
fn admin_tokens_compare_whole_and_name_their_actor() {
    let a = AdminAuth::new(vec![
        ADMIN.into(),
        "short".into(),
        "alice:alice-token-0123456789".into(),
    ]);
    // The first 8 hex digits of SHA-256("admin-token-0123456789"), from `sha256sum`.
    assert_eq!(a.tokens().check(ADMIN).unwrap().name, "token-ca8d40e6");
    assert_eq!(
        a.tokens().check("alice-token-0123456789").unwrap().name,
        "alice"
    );
    assert!(
        a.tokens().check("alice:alice-token-0123456789").is_none(),
        "the name is not part of the token"
    );
    assert!(a.tokens().check(&ADMIN[..10]).is_none());
    assert!(
        a.tokens().check("short").is_none(),
        "tokens under 16 bytes are never accepted"
    );
    assert!(a.tokens().check("").is_none());
}

#[tokio::test]
async fn assets_bind_only_to_existing_policies_with_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let (ch, _stop) = start(store).await;
    let mut p = client(&ch, with_token);
    let mut a = pb::asset_service_client::AssetServiceClient::with_interceptor(
        ch.clone(),
        with_token as fn(_) -> _,
    );
    let anon = pb::asset_service_client::AssetServiceClient::with_interceptor(
        ch.clone(),
        without_token as fn(_) -> _,
    )
    .clone()
    .list(pb::ListAssetsRequest {})
    .await
    .unwrap_err();
    assert_eq!(anon.code(), Code::Unauthenticated);

    let asset = |id: &str, policy: &str| pb::Asset {
        id: id.into(),
        policy_id: policy.into(),
        description: "d".into(),
        version: 0,
        ..Default::default()
    };
    let e = a
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("demo", "viewers")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "no such policy yet");
    let e = a
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("../x", "")),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    p.apply(pb::ApplyPolicyRequest {
        document: GOOD.into(),
        expected_version: 0,
    })
    .await
    .unwrap();
    let reg = a
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("demo", "")),
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();
    assert!(reg.version > 0 && reg.policy_id.is_empty());
    let dup = a
        .register(pb::RegisterAssetRequest {
            asset: Some(asset("demo", "")),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::FailedPrecondition);
    let bound = a
        .bind(pb::BindAssetRequest {
            asset_id: "demo".into(),
            policy_id: "viewers".into(),
            expected_version: reg.version,
        })
        .await
        .unwrap()
        .into_inner()
        .asset
        .unwrap();
    assert_eq!(bound.policy_id, "viewers");
    let stale = a
        .bind(pb::BindAssetRequest {
            asset_id: "demo".into(),
            policy_id: "".into(),
            expected_version: reg.version,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let listed = a
        .list(pb::ListAssetsRequest {})
        .await
        .unwrap()
        .into_inner()
        .assets;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].policy_id, "viewers");
    a.delete(pb::DeleteAssetRequest {
        id: "demo".into(),
        expected_version: bound.version,
    })
    .await
    .unwrap();
    assert_eq!(
        a.get(pb::GetAssetRequest { id: "demo".into() })
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn keys_add_retire_and_rotate_with_overlap() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("s.log")).unwrap());
    let (ch, _stop) = start(store).await;
    let mut k = pb::key_service_client::KeyServiceClient::with_interceptor(
        ch.clone(),
        with_token as fn(_) -> _,
    );
    let x = |b: u8| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([b; 32]);
    let jwk = |kid: &str, b: u8| {
        format!(
            r#"{{"kid":"{kid}","alg":"EdDSA","crv":"Ed25519","x":"{}"}}"#,
            x(b)
        )
    };

    let bad = k
        .add(pb::AddKeyRequest {
            jwk_json: r#"{"kid":"x","alg":"none"}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let secret = k
        .add(pb::AddKeyRequest {
            jwk_json: r#"{"kid":"h","alg":"HS256","k":"c2VjcmV0"}"#.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        secret.code(),
        Code::InvalidArgument,
        "secrets are never accepted by value"
    );

    let k1 = k
        .add(pb::AddKeyRequest {
            jwk_json: jwk("k1", 1),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert!(k1.retire_at.is_empty());
    let dup = k
        .add(pb::AddKeyRequest {
            jwk_json: jwk("k1", 2),
        })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::FailedPrecondition);

    let rot = k
        .rotate(pb::RotateKeyRequest {
            new_jwk_json: jwk("k2", 2),
            old_kid: "k1".into(),
            overlap_seconds: 3600,
            expected_version: k1.version,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rot.added.unwrap().kid, "k2");
    let retiring = rot.retiring.unwrap();
    let at = humantime::parse_rfc3339(&retiring.retire_at).unwrap();
    let left = at.duration_since(SystemTime::now()).unwrap().as_secs();
    assert!((3500..=3600).contains(&left), "overlap {left}s");

    let stale = k
        .retire(pb::RetireKeyRequest {
            kid: "k1".into(),
            overlap_seconds: 0,
            expected_version: k1.version,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    let listed = k
        .list(pb::ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(
        listed.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );
    // What the store holds is a key entry the edge accepts as it is.
    for key in listed {
        let v: serde_json::Value = serde_json::from_str(&key.jwk_json).unwrap();
        streamgate_policy::KeyDoc::from_value(&v).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_during_an_etcd_outage_it_reports_not_serving_until_etcd_answers() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut etcd = start_etcd();
    etcd.stop();
    let mut cfg = streamgate_store::etcd::EtcdConfig::new(vec![etcd.endpoint.clone()]);
    cfg.retry_timeout = std::time::Duration::from_secs(2);
    let store = EtcdStore::connect_with(&cfg)
        .await
        .expect("connecting does not wait for etcd");
    let (ch, _stop) = start(Arc::new(store)).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let status = async |h: &mut tonic_health::pb::health_client::HealthClient<Channel>,
                        svc: &str| {
        h.check(tonic_health::pb::HealthCheckRequest {
            service: svc.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
    };
    assert_eq!(
        status(&mut health, "").await,
        ServingStatus::NotServing as i32
    );
    assert_eq!(
        status(&mut health, "streamgate.control.v1.PolicyService").await,
        ServingStatus::NotServing as i32
    );
    // A mutation is refused with UNAVAILABLE, saying why.
    let mut c = client(&ch, with_token);
    let refused = c
        .apply(pb::ApplyPolicyRequest {
            document: "id: p\nrule: {public: true}\n".into(),
            expected_version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(
        refused.message().contains("etcd unreachable"),
        "{refused:?}"
    );
    // etcd comes up: health follows, and the API works.
    etcd.start();
    let t0 = std::time::Instant::now();
    while status(&mut health, "").await != ServingStatus::Serving as i32 {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "still NOT_SERVING"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.apply(pb::ApplyPolicyRequest {
        document: "id: p\nrule: {public: true}\n".into(),
        expected_version: 0,
    })
    .await
    .unwrap();
}

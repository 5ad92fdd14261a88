//! `streamgate control` as an operator runs it: config checked, the gRPC API served on the
//! embedded store, and applied policies still there after a restart.

use std::process::Command;

use streamgate_proto::control::v1 as pb;
use tonic::Request;

const TOKEN: &str = "operator-token-0123456789";

mod common;

use common::{Proc, free_port, spawn_listening};

fn start(cfg: &std::path::Path, port: u16) -> Proc {
    spawn_listening(&["control", "--config"], cfg, port, "control plane")
}

async fn client(
    port: u16,
) -> pb::policy_service_client::PolicyServiceClient<tonic::transport::Channel> {
    pb::policy_service_client::PolicyServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

fn authed<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn control_plane_serves_and_keeps_policies_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-token"), format!("{TOKEN}\n")).unwrap();
    let port = free_port();
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("admin-token").display()
        ),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["control", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let proc = start(&cfg, port);
    let mut c = client(port).await;
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/policies/examples/subscribers.yaml"
    ))
    .unwrap();
    let applied = c
        .apply(authed(pb::ApplyPolicyRequest {
            document: doc,
            expected_version: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(applied.id, "subscribers");
    let unauth = c.list(pb::ListPoliciesRequest {}).await.unwrap_err();
    assert_eq!(unauth.code(), tonic::Code::Unauthenticated);
    drop(proc);

    let _proc = start(&cfg, port);
    let mut c = client(port).await;
    let got = c
        .get(authed(pb::GetPolicyRequest {
            id: "subscribers".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .policy
        .unwrap();
    assert_eq!(
        got.version, applied.version,
        "the policy survived the restart"
    );
}

#[test]
fn control_check_config_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nlisten = \"x\"\nstore = \"zookeeper\"\nbogus = 1\ntls_cert = \"{}\"\ntls_key = \"/nonexistent.key\"\n",
            dir.path().join("bad.toml").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["control", "--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for p in [
        "control.listen",
        "control.store",
        "control.bogus",
        "control.admin_token_file",
        "control.tls_cert",
        "control.tls_key",
    ] {
        assert!(err.contains(p), "{p} missing:\n{err}");
    }
}

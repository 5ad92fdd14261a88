//! The etcd store against a real etcd serving TLS only, requiring client certificates
//! (`--client-cert-auth`) and with authentication enabled (users and roles made with
//! `etcdctl`, as docs/DEPLOY.md shows): the control plane's user reads and writes, the
//! edge's user reads the prefix and writes only its own record; a wrong password, a
//! stranger's certificate, no certificate, or a server certificate we do not trust are
//! refused at connect with [`StoreError::Denied`].

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;

use super::*;
use crate::testkit::{ServerTls, pki, start_etcd_with};
use crate::{Event, PREFIX};

fn etcdctl(endpoint: &str, pki: &crate::testkit::Pki, user: Option<&str>, args: &[&str]) {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg(format!("--cacert={}", pki.ca.display()))
        .arg(format!("--cert={}", pki.client.0.display()))
        .arg(format!("--key={}", pki.client.1.display()));
    if let Some(u) = user {
        cmd.arg(format!("--user={u}"));
    }
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("etcdctl is not installed ({e}): run ./scripts/setup.sh"));
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(
    endpoint: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    user: Option<(&str, &str)>,
) -> EtcdConfig {
    let mut cfg = EtcdConfig::new(vec![endpoint.to_owned()]);
    cfg.tls = Some(EtcdTls {
        ca: std::fs::read(ca).unwrap(),
        identity: identity.map(|(c, k)| (std::fs::read(c).unwrap(), std::fs::read(k).unwrap())),
        server_name: None,
    });
    cfg.credentials = user.map(|(u, p)| Credentials {
        username: u.into(),
        password: p.into(),
    });
    cfg.retry_timeout = Duration::from_secs(4);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificates_and_roles_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let ours = pki(&dir.path().join("pki"));
    let stranger = pki(&dir.path().join("other"));
    let etcd = start_etcd_with(ServerTls {
        cert: ours.server.0.clone(),
        key: ours.server.1.clone(),
        client_ca: ours.ca.clone(),
    });
    let ep = etcd.endpoint.clone();
    // The roles of docs/DEPLOY.md.
    for args in [
        &["user", "add", "root:root-pass"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "streamgate-control"],
        &[
            "role",
            "grant-permission",
            "streamgate-control",
            "--prefix=true",
            "readwrite",
            PREFIX,
        ],
        &["user", "add", "control:control-pass"],
        &["user", "grant-role", "control", "streamgate-control"],
        &["role", "add", "streamgate-edge"],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "read",
            PREFIX,
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/v1/edges/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/v1/nonces/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/v1/streams/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/v1/denials/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/v1/audit/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-edge",
            "--prefix=true",
            "readwrite",
            "/streamgate/analytics/v1/",
        ],
        &[
            "role",
            "grant-permission",
            "streamgate-control",
            "--prefix=true",
            "read",
            crate::ANALYTICS_PREFIX,
        ],
        &["user", "add", "edge:edge-pass"],
        &["user", "grant-role", "edge", "streamgate-edge"],
        &["auth", "enable"],
    ] {
        etcdctl(&ep, &ours, None, args);
    }
    let client = (ours.client.0.as_path(), ours.client.1.as_path());

    // The control plane's user writes and watches.
    let control = EtcdStore::connect_with(&config(
        &ep,
        &ours.ca,
        Some(client),
        Some(("control", "control-pass")),
    ))
    .await
    .expect("the control user connects");
    let (_, rev) = control.list(PREFIX).await.unwrap();
    let key = format!("{PREFIX}policies/p1");
    control.put(&key, b"{}".to_vec(), 0).await.unwrap();

    // The edge's user reads and watches the prefix, and writes its own record, leased...
    let edge = EtcdStore::connect_with(&config(
        &ep,
        &ours.ca,
        Some(client),
        Some(("edge", "edge-pass")),
    ))
    .await
    .expect("the edge user connects");
    assert!(edge.get(&key).await.unwrap().is_some());
    let mut w = edge.watch(PREFIX, rev).await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(&b.events[0], Event::Put { key: k, .. } if *k == key));
    let lease = edge.grant(Duration::from_secs(5)).await.unwrap();
    edge.txn(
        &[],
        vec![Op::put_leased(
            format!("{PREFIX}edges/e1"),
            b"{}".to_vec(),
            lease,
        )],
    )
    .await
    .expect("an edge writes its own record");
    edge.put(&format!("{PREFIX}nonces/n1"), b"1".to_vec(), 0)
        .await
        .unwrap();
    // Its session counts, sharing denials and their audit entries, and its QoE figures
    // (which the control plane reads).
    for key in [
        format!("{PREFIX}streams/e1"),
        format!("{PREFIX}denials/00000000000000ab"),
        format!("{PREFIX}audit/00000000000000000001-abcd"),
        format!("{}e1", crate::ANALYTICS_PREFIX),
    ] {
        edge.put(&key, b"{}".to_vec(), 0).await.unwrap();
    }
    let (figures, _) = control.list(crate::ANALYTICS_PREFIX).await.unwrap();
    assert_eq!(figures.len(), 1);
    // ...but nothing else.
    match edge
        .put(&format!("{PREFIX}policies/evil"), b"{}".to_vec(), 0)
        .await
    {
        Err(StoreError::Denied(m)) => assert!(m.contains("permission denied"), "{m}"),
        other => panic!("an edge wrote a policy: {other:?}"),
    }
    assert!(
        control
            .get(&format!("{PREFIX}policies/evil"))
            .await
            .unwrap()
            .is_none()
    );

    // Refusals, each at connect, each saying why.
    let refused = async |cfg: EtcdConfig, what: &str, want: &[&str]| match EtcdStore::connect_with(
        &cfg,
    )
    .await
    {
        Err(StoreError::Denied(m)) => {
            let lower = m.to_ascii_lowercase();
            assert!(
                want.iter().any(|w| lower.contains(w)),
                "{what}: the reason {m:?} names none of {want:?}"
            );
            eprintln!("{what}: {m}");
        }
        other => panic!("{what}: {other:?}"),
    };
    refused(
        config(&ep, &ours.ca, Some(client), Some(("control", "wrong"))),
        "wrong password",
        &["authentication failed"],
    )
    .await;
    refused(
        config(&ep, &ours.ca, Some(client), Some(("nobody", "x"))),
        "unknown user",
        &["authentication failed"],
    )
    .await;
    refused(
        config(
            &ep,
            &ours.ca,
            Some((stranger.client.0.as_path(), stranger.client.1.as_path())),
            Some(("control", "control-pass")),
        ),
        "a certificate from another CA",
        &["certificate", "alert"],
    )
    .await;
    refused(
        config(&ep, &ours.ca, None, Some(("control", "control-pass"))),
        "no client certificate",
        &["certificate", "alert"],
    )
    .await;
    refused(
        config(
            &ep,
            &stranger.ca,
            Some(client),
            Some(("control", "control-pass")),
        ),
        "a server certificate we do not trust",
        &["certificate", "unknownissuer"],
    )
    .await;
    // A certificate but no user: etcd takes the certificate's name ("client"), which has
    // no role here.
    refused(
        config(&ep, &ours.ca, Some(client), None),
        "no user",
        &["permission denied", "user name"],
    )
    .await;
}

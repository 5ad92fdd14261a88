//! The role matrix: every RPC of the control API called by each role (admin, operator,
//! viewer) and by tenants' tokens (limited to the asset prefix `acme-`) on their own assets
//! and on another tenant's, against a real `streamgate control`. Each call is allowed or
//! `PERMISSION_DENIED` exactly as docs/CTL.md ("Roles and tenants") documents; refusals
//! are in the audit log; listings keep a tenant to its own assets; `ctl whoami` says who a
//! token is.

use std::process::Command;

use streamgate_proto::control::v1 as pb;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

mod common;

use common::{Proc, free_port, spawn_listening};

/// `(name, token, role and prefixes)` of every token the control plane is given.
const TOKENS: &[(&str, &str, &str)] = &[
    ("root", "root-token-0123456789abcdef", "role=admin"),
    ("ops", "ops-token-0123456789abcdef", "role=operator"),
    ("ro", "ro-token-0123456789abcdef", "role=viewer"),
    (
        "acme",
        "acme-token-0123456789abcdef",
        "role=operator assets=acme-",
    ),
    (
        "acme-ro",
        "acme-ro-token-0123456789abcdef",
        "role=viewer assets=acme-",
    ),
];

/// A caller of the matrix: a token and the tenant whose objects its calls name.
#[derive(Clone, Copy)]
struct Caller {
    token: &'static str,
    /// The prefix of the objects the call names: `acme` or `globex`.
    on: &'static str,
}

/// The columns: admin, operator, viewer, the `acme-` operator on `acme-` objects and on
/// `globex-` objects, the `acme-` viewer on `acme-` objects.
const COLUMNS: [(&str, Caller); 6] = [
    ("admin", caller(0, "acme")),
    ("operator", caller(1, "acme")),
    ("viewer", caller(2, "acme")),
    ("tenant", caller(3, "acme")),
    ("tenant-other", caller(3, "globex")),
    ("tenant-viewer", caller(4, "acme")),
];

const fn caller(i: usize, on: &'static str) -> Caller {
    Caller {
        token: TOKENS[i].1,
        on,
    }
}

/// The documented matrix (docs/CTL.md): `+` allowed, `-` PERMISSION_DENIED, one character
/// per column of [`COLUMNS`].
const MATRIX: &[(&str, &str)] = &[
    ("PolicyService/Apply", "++-+--"),
    ("PolicyService/Get", "++++-+"),
    ("PolicyService/List", "++++++"),
    ("PolicyService/Delete", "++-+--"),
    ("PolicyService/Watch", "++++++"),
    ("AssetService/Register", "++-+--"),
    ("AssetService/Get", "++++-+"),
    ("AssetService/List", "++++++"),
    ("AssetService/Update", "++-+--"),
    ("AssetService/Delete", "++-+--"),
    ("AssetService/Bind", "++-+--"),
    ("KeyService/Add", "+-----"),
    ("KeyService/List", "+++---"),
    ("KeyService/Retire", "+-----"),
    ("KeyService/Rotate", "+-----"),
    ("PurgeService/Purge", "++-+--"),
    ("AuditService/List", "++++++"),
    ("EdgeService/List", "+++---"),
    ("AnalyticsService/Get", "++++-+"),
    ("JobService/Submit", "++-+--"),
    ("JobService/Get", "++++-+"),
    ("JobService/List", "++++++"),
    ("JobService/Cancel", "++-+--"),
    ("JobService/Watch", "++++-+"),
    ("AccessService/WhoAmI", "++++++"),
];

fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn policy_doc(id: &str) -> String {
    format!("id: {id}\nrule:\n  public: true\n")
}

fn ed_jwk(kid: &str) -> String {
    format!(
        r#"{{"kid": "{kid}", "alg": "EdDSA", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}}"#
    )
}

/// The control API's clients over one channel.
struct Api(Channel);

impl Api {
    /// Calls `method` as `c`, naming `c.on`'s objects; `n` makes the names of objects a
    /// call creates or deletes unique to the call. `Ok` is any answer but a refusal (the
    /// object may not exist, or be in a state that refuses the change).
    async fn call(&self, method: &str, c: Caller, n: usize, jobs: &Jobs) -> Result<(), Status> {
        use pb::access_service_client::AccessServiceClient as Access;
        use pb::analytics_service_client::AnalyticsServiceClient as Analytics;
        use pb::asset_service_client::AssetServiceClient as Assets;
        use pb::audit_service_client::AuditServiceClient as Audit;
        use pb::edge_service_client::EdgeServiceClient as Edges;
        use pb::job_service_client::JobServiceClient as JobsC;
        use pb::key_service_client::KeyServiceClient as Keys;
        use pb::policy_service_client::PolicyServiceClient as Policies;
        use pb::purge_service_client::PurgeServiceClient as Purges;
        let ch = self.0.clone();
        let t = c.token;
        let on = c.on;
        let asset = format!("{on}-1");
        let policy = format!("{on}-p");
        let job = if on == "acme" {
            &jobs.acme
        } else {
            &jobs.globex
        };
        let r = match method {
            "PolicyService/Apply" => Policies::new(ch)
                .apply(authed(
                    t,
                    pb::ApplyPolicyRequest {
                        document: policy_doc(&format!("{on}-new-{n}")),
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "PolicyService/Get" => Policies::new(ch)
                .get(authed(t, pb::GetPolicyRequest { id: policy }))
                .await
                .map(drop),
            "PolicyService/List" => Policies::new(ch)
                .list(authed(t, pb::ListPoliciesRequest {}))
                .await
                .map(drop),
            "PolicyService/Delete" => Policies::new(ch)
                .delete(authed(
                    t,
                    pb::DeletePolicyRequest {
                        id: format!("{on}-gone-{n}"),
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "PolicyService/Watch" => Policies::new(ch)
                .watch(authed(t, pb::WatchPoliciesRequest { from_revision: 0 }))
                .await
                .map(drop),
            "AssetService/Register" => Assets::new(ch)
                .register(authed(
                    t,
                    pb::RegisterAssetRequest {
                        asset: Some(pb::Asset {
                            id: format!("{on}-new-{n}"),
                            policy_id: policy,
                            ..Default::default()
                        }),
                    },
                ))
                .await
                .map(drop),
            "AssetService/Get" => Assets::new(ch)
                .get(authed(t, pb::GetAssetRequest { id: asset }))
                .await
                .map(drop),
            "AssetService/List" => Assets::new(ch)
                .list(authed(t, pb::ListAssetsRequest {}))
                .await
                .map(drop),
            "AssetService/Update" => Assets::new(ch)
                .update(authed(
                    t,
                    pb::UpdateAssetRequest {
                        asset: Some(pb::Asset {
                            id: asset,
                            policy_id: policy,
                            description: format!("updated {n}"),
                            ..Default::default()
                        }),
                        // Stale on purpose: a call let through fails on the version.
                        expected_version: 1,
                    },
                ))
                .await
                .map(drop),
            "AssetService/Delete" => Assets::new(ch)
                .delete(authed(
                    t,
                    pb::DeleteAssetRequest {
                        id: format!("{on}-gone-{n}"),
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "AssetService/Bind" => Assets::new(ch)
                .bind(authed(
                    t,
                    pb::BindAssetRequest {
                        asset_id: asset,
                        policy_id: policy,
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "KeyService/Add" => Keys::new(ch)
                .add(authed(
                    t,
                    pb::AddKeyRequest {
                        jwk_json: ed_jwk(&format!("add-{n}")),
                    },
                ))
                .await
                .map(drop),
            "KeyService/List" => Keys::new(ch)
                .list(authed(t, pb::ListKeysRequest {}))
                .await
                .map(drop),
            "KeyService/Retire" => Keys::new(ch)
                .retire(authed(
                    t,
                    pb::RetireKeyRequest {
                        kid: format!("none-{n}"),
                        overlap_seconds: 60,
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "KeyService/Rotate" => Keys::new(ch)
                .rotate(authed(
                    t,
                    pb::RotateKeyRequest {
                        new_jwk_json: ed_jwk(&format!("rot-{n}")),
                        old_kid: format!("none-{n}"),
                        overlap_seconds: 60,
                        expected_version: 0,
                    },
                ))
                .await
                .map(drop),
            "PurgeService/Purge" => Purges::new(ch)
                .purge(authed(
                    t,
                    pb::PurgeRequest {
                        target: Some(pb::purge_request::Target::Prefix(format!("{asset}/video/"))),
                    },
                ))
                .await
                .map(drop),
            "AuditService/List" => Audit::new(ch)
                .list(authed(
                    t,
                    pb::ListAuditRequest {
                        after_seq: 0,
                        limit: 0,
                    },
                ))
                .await
                .map(drop),
            "EdgeService/List" => Edges::new(ch)
                .list(authed(t, pb::ListEdgesRequest {}))
                .await
                .map(drop),
            "AnalyticsService/Get" => Analytics::new(ch)
                .get(authed(t, pb::GetAnalyticsRequest { asset, limit: 0 }))
                .await
                .map(drop),
            "JobService/Submit" => JobsC::new(ch)
                .submit(authed(
                    t,
                    pb::SubmitJobRequest {
                        asset,
                        source: format!("in/{on}-{n}.mp4"),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop),
            "JobService/Get" => JobsC::new(ch)
                .get(authed(t, pb::GetJobRequest { id: job.clone() }))
                .await
                .map(drop),
            "JobService/List" => JobsC::new(ch)
                .list(authed(t, pb::ListJobsRequest::default()))
                .await
                .map(drop),
            "JobService/Cancel" => JobsC::new(ch)
                .cancel(authed(t, pb::CancelJobRequest { id: job.clone() }))
                .await
                .map(drop),
            "JobService/Watch" => JobsC::new(ch)
                .watch(authed(t, pb::WatchJobRequest { id: job.clone() }))
                .await
                .map(drop),
            "AccessService/WhoAmI" => Access::new(ch)
                .who_am_i(authed(t, pb::WhoAmIRequest {}))
                .await
                .map(drop),
            other => panic!("the matrix names {other}, which this test cannot call"),
        };
        match r {
            // The call got past the gate: the object may be missing, or in a state that
            // refuses the change, but the request itself was well formed.
            Err(s)
                if matches!(
                    s.code(),
                    Code::NotFound | Code::FailedPrecondition | Code::AlreadyExists
                ) =>
            {
                Ok(())
            }
            r => r,
        }
    }
}

/// The job of each tenant, submitted by `root` before the matrix runs.
struct Jobs {
    acme: String,
    globex: String,
}

fn start() -> (tempfile::TempDir, Proc, u16) {
    let dir = tempfile::tempdir().unwrap();
    let lines: String = TOKENS
        .iter()
        .map(|(name, tok, attrs)| format!("{name}:{tok} {attrs}\n"))
        .collect();
    std::fs::write(
        dir.path().join("admin-tokens"),
        format!("# the role matrix's tokens\n{lines}"),
    )
    .unwrap();
    let port = free_port();
    let cfg = dir.path().join("control.toml");
    std::fs::write(
        &cfg,
        format!(
            "[control]\nadmin_listen = \"127.0.0.1:0\"\nlisten = \"127.0.0.1:{port}\"\nstore = \"embedded\"\ndata_dir = \"{}\"\nadmin_token_file = \"{}\"\n",
            dir.path().join("state").display(),
            dir.path().join("admin-tokens").display()
        ),
    )
    .unwrap();
    let proc = spawn_listening(&["control", "--config"], &cfg, port, "control plane");
    (dir, proc, port)
}

/// What `root` sets up: each tenant's policy, asset and job.
async fn seed(api: &Api) -> Jobs {
    let root = TOKENS[0].1;
    let ch = api.0.clone();
    let mut jobs = Vec::new();
    for on in ["acme", "globex"] {
        pb::policy_service_client::PolicyServiceClient::new(ch.clone())
            .apply(authed(
                root,
                pb::ApplyPolicyRequest {
                    document: policy_doc(&format!("{on}-p")),
                    expected_version: 0,
                },
            ))
            .await
            .unwrap();
        pb::asset_service_client::AssetServiceClient::new(ch.clone())
            .register(authed(
                root,
                pb::RegisterAssetRequest {
                    asset: Some(pb::Asset {
                        id: format!("{on}-1"),
                        policy_id: format!("{on}-p"),
                        ..Default::default()
                    }),
                },
            ))
            .await
            .unwrap();
        let job = pb::job_service_client::JobServiceClient::new(ch.clone())
            .submit(authed(
                root,
                pb::SubmitJobRequest {
                    asset: format!("{on}-1"),
                    source: format!("in/{on}.mp4"),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        jobs.push(job.id);
    }
    Jobs {
        globex: jobs.pop().unwrap(),
        acme: jobs.pop().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rpc_by_every_role_is_allowed_or_denied_as_documented() {
    let (_dir, _proc, port) = start();
    let api = Api(Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap());
    let jobs = seed(&api).await;

    // The matrix covers exactly the methods WhoAmI lists for the admin.
    let all = pb::access_service_client::AccessServiceClient::new(api.0.clone())
        .who_am_i(authed(TOKENS[0].1, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    let mut listed = all.allowed.clone();
    listed.sort();
    let mut rows: Vec<String> = MATRIX.iter().map(|(m, _)| (*m).to_owned()).collect();
    rows.sort();
    assert_eq!(
        listed, rows,
        "the admin may call every method, and the matrix names each"
    );

    let mut wrong = Vec::new();
    let mut denials = 0;
    for (i, (method, expect)) in MATRIX.iter().enumerate() {
        assert_eq!(expect.len(), COLUMNS.len(), "{method}");
        for (j, ((column, c), want)) in COLUMNS.iter().zip(expect.chars()).enumerate() {
            let got = api.call(method, *c, i * 10 + j, &jobs).await;
            let ok = match (want, &got) {
                ('+', Ok(())) => true,
                ('-', Err(s)) if s.code() == Code::PermissionDenied => {
                    denials += 1;
                    true
                }
                _ => false,
            };
            if !ok {
                wrong.push(format!(
                    "{method} as {column}: expected {want}, got {got:?}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} calls off the matrix:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Every refusal is in the audit log, naming the caller.
    let audit = pb::audit_service_client::AuditServiceClient::new(api.0.clone())
        .list(authed(
            TOKENS[0].1,
            pb::ListAuditRequest {
                after_seq: 0,
                limit: 1000,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .entries;
    let denied: Vec<_> = audit.iter().filter(|e| e.action == "denied").collect();
    assert_eq!(denied.len(), denials, "one audit entry per refusal");
    assert!(
        denied
            .iter()
            .any(|e| e.actor == "acme" && e.target == "AssetService/Get assets/globex-1"),
        "the tenant's refused read is audited with its object: {denied:?}"
    );
    assert!(
        denied
            .iter()
            .any(|e| e.actor == "ro" && e.target == "KeyService/Add"),
        "{denied:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_sees_only_its_own_assets_and_ctl_whoami_says_who() {
    let (_dir, _proc, port) = start();
    let api = Api(Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap());
    seed(&api).await;
    let acme = TOKENS[3].1;
    let ch = api.0.clone();
    let assets: Vec<String> = pb::asset_service_client::AssetServiceClient::new(ch.clone())
        .list(authed(acme, pb::ListAssetsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .assets
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(assets, ["acme-1"]);
    let policies: Vec<String> = pb::policy_service_client::PolicyServiceClient::new(ch.clone())
        .list(authed(acme, pb::ListPoliciesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .policies
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(policies, ["acme-p"]);
    let jobs: Vec<String> = pb::job_service_client::JobServiceClient::new(ch.clone())
        .list(authed(acme, pb::ListJobsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .jobs
        .into_iter()
        .map(|j| j.asset)
        .collect();
    assert_eq!(jobs, ["acme-1"]);
    // The audit log shows the tenant the changes to its own objects, none of globex's.
    let audit = pb::audit_service_client::AuditServiceClient::new(ch.clone())
        .list(authed(acme, pb::ListAuditRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(!audit.is_empty());
    assert!(
        audit
            .iter()
            .all(|e| e.target.contains("acme") && !e.target.contains("globex")),
        "{audit:?}"
    );
    // Binding one's own asset to another tenant's policy is refused too.
    let bind = pb::asset_service_client::AssetServiceClient::new(ch.clone())
        .bind(authed(
            acme,
            pb::BindAssetRequest {
                asset_id: "acme-1".into(),
                policy_id: "globex-p".into(),
                expected_version: 0,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bind.code(), Code::PermissionDenied, "{bind:?}");

    let whoami = |token: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["ctl", "--endpoint", &format!("http://127.0.0.1:{port}")])
            .args(["--token", token, "-o", "json", "whoami"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let me = whoami(acme);
    assert_eq!(me["name"], "acme");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["asset_prefixes"], serde_json::json!(["acme-"]));
    let allowed: Vec<&str> = me["allowed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(allowed.contains(&"AssetService/Register"));
    assert!(
        !allowed.iter().any(|m| m.starts_with("KeyService/")),
        "{allowed:?}"
    );
    let ro = whoami(TOKENS[2].1);
    assert_eq!(ro["role"], "viewer");
    assert_eq!(ro["asset_prefixes"], serde_json::json!([]));

    // An unknown token is UNAUTHENTICATED, not a role.
    let out = Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["ctl", "--endpoint", &format!("http://127.0.0.1:{port}")])
        .args(["--token", "not-a-token-0123456789", "whoami"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

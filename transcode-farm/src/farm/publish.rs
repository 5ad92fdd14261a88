//! Publishing, exactly once: stitch the parts, write every init and media segment under
//! the job's own version prefix (`{asset}/{job}`), the manifests last, then switch the
//! asset record to that prefix (and bind its policy) in one transaction guarded by the
//! publish claim's fencing token; only then purge the version it replaces.
//!
//! Nothing an edge can see changes before that transaction: until the asset record names
//! the new prefix, the edge reads the old one, and every object the new manifests name is
//! written before the record switches. A publisher that dies is replaced by another that
//! redoes the same copies (the same staged parts, the same keys, the same bytes), so a
//! dead publisher leaves nothing half-done that a living one does not complete.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use streamgate_control::api::{audit_op, binding_key, policy_key};
use streamgate_control::job::{self, JobState};
use streamgate_control::store::{Guard, Op, PREFIX, StoreError};
use streamgate_origin::ObjectKey;

use super::queue::{self, Claim, QueueError};
use super::schedule::Failure;
use super::source;
use super::worker::{Ctx, UnitError, part_name};
use crate::cmaf;
use crate::segmented::{self, Part, PartOutput, Prepared};

fn transient(what: impl std::fmt::Display) -> UnitError {
    UnitError::Failed(Failure::Transient, what.to_string())
}

fn key(s: &str) -> Result<ObjectKey, UnitError> {
    ObjectKey::new(s).map_err(|e| UnitError::Failed(Failure::Permanent, format!("key {s:?}: {e}")))
}

pub(super) async fn publish(ctx: &Ctx, claim: &Claim) -> Result<(), UnitError> {
    let doc = queue::update_job(
        &*ctx.store,
        claim,
        |d| {
            if d.state == JobState::Transcoding {
                d.state = JobState::Packaging;
                true
            } else {
                false
            }
        },
        || (Vec::new(), Vec::new()),
    )
    .await?;
    if !matches!(doc.state, JobState::Packaging | JobState::Publishing) {
        return Err(UnitError::Stale);
    }
    let prepared: Prepared = doc
        .farm
        .plan
        .as_ref()
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .ok_or_else(|| {
            UnitError::Failed(Failure::Permanent, "the job's plan is unreadable".into())
        })?;

    // Every part's output and where it was staged.
    let records: BTreeMap<String, _> = job::tasks(&*ctx.store, &claim.job)
        .await
        .map_err(QueueError::from)?
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect();
    let mut parts: BTreeMap<Part, PartOutput> = BTreeMap::new();
    let mut staged_at: BTreeMap<Part, String> = BTreeMap::new();
    for part in prepared.parts() {
        let name = part_name(part);
        let rec = records.get(&name).ok_or(UnitError::Stale)?;
        let (Some(out), Some(staged)) = (&rec.output, &rec.staged) else {
            return Err(UnitError::Stale);
        };
        let out: PartOutput = serde_json::from_value(out.clone()).map_err(|e| {
            UnitError::Failed(
                Failure::Permanent,
                format!("{part}: output unreadable: {e}"),
            )
        })?;
        parts.insert(part, out);
        staged_at.insert(part, staged.clone());
    }
    // One init segment per rendition: the first part that made it.
    let mut inits = BTreeMap::new();
    let mut init_from: BTreeMap<String, String> = BTreeMap::new();
    for (part, out) in &parts {
        for t in &out.tracks {
            if inits.contains_key(&t.dir) {
                continue;
            }
            let k = key(&format!("{}/{}/init.mp4", staged_at[part], t.dir))?;
            let bytes = ctx
                .origin
                .get_bytes(&k)
                .await
                .map_err(|e| transient(format!("reading staged {k}: {e}")))?;
            let init = cmaf::parse_init(&bytes)
                .map_err(|e| UnitError::Failed(Failure::Permanent, format!("staged {k}: {e}")))?;
            inits.insert(t.dir.clone(), (init, bytes.len() as u64));
            init_from.insert(format!("{}/init.mp4", t.dir), staged_at[part].clone());
        }
    }
    let name = source::describe(&doc.source);
    let assembled = segmented::assemble(&prepared, &parts, &inits, Path::new(&name))
        .map_err(|e| UnitError::transcode(e, Path::new(&name), &name))?;

    let prefix = format!("{}/{}", doc.asset, doc.id);
    let p = prefix.clone();
    queue::update_job(
        &*ctx.store,
        claim,
        |d| {
            d.state = JobState::Publishing;
            d.farm.origin_prefix = Some(p.clone());
            true
        },
        || (Vec::new(), Vec::new()),
    )
    .await?;

    // Media first, from where each part staged it.
    for rel in assembled.media.keys() {
        let from = match assembled.made_by.get(rel) {
            Some(part) => &staged_at[part],
            None => init_from
                .get(rel)
                .ok_or_else(|| transient(format!("no staged copy of {rel}")))?,
        };
        let (src, dst) = (
            key(&format!("{from}/{rel}"))?,
            key(&format!("{prefix}/{rel}"))?,
        );
        ctx.origin
            .copy(&src, &dst)
            .await
            .map_err(|e| transient(format!("copying {src} to {dst}: {e}")))?;
    }
    // Manifests last: once one exists, everything it names does.
    for (rel, text) in &assembled.manifests {
        let dst = key(&format!("{prefix}/{rel}"))?;
        ctx.origin
            .put(&dst, text.clone().into_bytes().into())
            .await
            .map_err(|e| transient(format!("writing {dst}: {e}")))?;
    }

    // The switch: asset record (and binding) and the job's end, fenced, in one commit.
    let asset_key = format!("{PREFIX}assets/{}", doc.asset);
    let replaced = loop {
        let old = ctx.store.get(&asset_key).await.map_err(QueueError::from)?;
        let (old_doc, old_version) = match &old {
            Some(v) => (
                serde_json::from_slice::<Value>(&v.value).unwrap_or_default(),
                v.version,
            ),
            None => (Value::Null, 0),
        };
        let policy = doc
            .policy
            .clone()
            .or_else(|| old_doc["policy"].as_str().map(str::to_owned));
        let mut guards = vec![Guard {
            key: asset_key.clone(),
            expected: old_version,
        }];
        let record = json!({
            "id": doc.asset,
            "policy": policy,
            "description": old_doc["description"].as_str().unwrap_or_default(),
            "origin_prefix": prefix,
            "job": doc.id.as_str(),
        });
        let mut ops = vec![Op::put(asset_key.clone(), record.to_string())];
        if let Some(p) = &policy {
            let pv = ctx
                .store
                .get(&policy_key(p))
                .await
                .map_err(QueueError::from)?
                .ok_or_else(|| {
                    UnitError::Failed(
                        Failure::Permanent,
                        format!("there is no policy {p:?} to bind asset {} to; apply it and submit the job again", doc.asset),
                    )
                })?;
            guards.push(Guard {
                key: policy_key(p),
                expected: pv.version,
            });
            ops.push(Op::put(binding_key(p), doc.asset.clone()));
        }
        ops.push(audit_op(
            &doc.actor,
            if old_version == 0 {
                "asset.publish"
            } else {
                "asset.republish"
            },
            &format!("assets/{}", doc.asset),
            old_version,
        ));
        ops.push(Op::delete(claim.key()));
        let result = queue::update_job(
            &*ctx.store,
            claim,
            |d| {
                d.state = JobState::Done;
                d.progress = 1.0;
                d.error = None;
                true
            },
            || (guards.clone(), ops.clone()),
        )
        .await;
        match result {
            Ok(_) => break old_doc["origin_prefix"].as_str().map(str::to_owned),
            // The asset or its policy changed underneath: read them again.
            Err(QueueError::Job(job::JobError::Store(StoreError::Conflict { key, .. })))
                if key != claim.key() =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        }
    };
    ctx.metrics.job_final(JobState::Done);
    tracing::info!(job = %claim.job, asset = %doc.asset, prefix = %prefix, objects = assembled.media.len() + assembled.manifests.len(), "published");

    // After the switch: the replaced version, the staged parts, the task records. On a
    // task of its own, so that the worker stopping this unit (its job is done) cannot cut
    // the cleanup short.
    let (store, origin) = (std::sync::Arc::clone(&ctx.store), ctx.origin.clone());
    let staging = ctx.staging(&claim.job);
    let id = claim.job.clone();
    let asset = doc.asset.clone();
    let cleanup = tokio::spawn(async move {
        if let Some(old) = replaced.filter(|o| *o != prefix && o.starts_with(&format!("{asset}/")))
            && let Ok(k) = ObjectKey::new(&old)
        {
            match origin.delete_prefix(&k).await {
                Ok(n) => tracing::info!(asset, old, objects = n, "purged the replaced version"),
                Err(e) => {
                    tracing::warn!(asset, old, error = %e, "could not purge the replaced version")
                }
            }
        }
        if let Ok(k) = ObjectKey::new(&staging) {
            let _ = origin.delete_prefix(&k).await;
        }
        for name in records.keys() {
            let v = records_version(&*store, &id, name).await;
            let _ = store.delete(&job::task_key(&id, name), v).await;
        }
    });
    let _ = cleanup.await;
    Ok(())
}

async fn records_version(
    store: &dyn streamgate_control::store::Store,
    id: &job::JobId,
    name: &str,
) -> i64 {
    store
        .get(&job::task_key(id, name))
        .await
        .ok()
        .flatten()
        .map_or(0, |v| v.version)
}

//! `[transcode.worker]`: the workers' typed configuration, read with every error and its
//! path. The defaults are written once, in [`WorkerConfig::new`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use streamgate_config::{Errors, Fields, duration, int_in, path, socket_addr, string};

use super::WorkerConfig;
use crate::SegmentDuration;

impl WorkerConfig {
    /// Reads `[transcode.worker]` from `t`; scratch space defaults to `data_dir/farm`.
    pub fn read(t: &mut Fields<'_>, errs: &mut Errors, data_dir: &Path) -> Self {
        let d = Self::new(data_dir.join("farm"));
        let at = |k: &str| format!("{}.{k}", t.path());
        let at_concurrency = at("concurrency");
        let at_preset = at("x264_preset");
        let at_ttl = at("lease_ttl");
        let at_segment = at("segment_duration");
        let at_staging = at("staging_prefix");
        let mut cfg = Self {
            name: t.get(errs, "name", d.name.clone(), string),
            concurrency: t.get(errs, "concurrency", d.concurrency as u64, int_in(1, 256)) as usize,
            lease_ttl: t.get(errs, "lease_ttl", d.lease_ttl, duration),
            retry: super::schedule::Retry {
                max_attempts: t.get(
                    errs,
                    "max_attempts",
                    u64::from(d.retry.max_attempts),
                    int_in(1, 100),
                ) as u32,
                base: t.get(errs, "retry_backoff", d.retry.base, duration),
                cap: t.get(errs, "retry_backoff_max", d.retry.cap, duration),
            },
            segments_per_task: t.get(
                errs,
                "segments_per_task",
                d.segments_per_task,
                int_in(1, 10_000),
            ),
            scratch: t.get(errs, "scratch_dir", PathBuf::from(&d.scratch), path),
            ladder: d.ladder.clone(),
            staging_prefix: t.get(errs, "staging_prefix", d.staging_prefix.clone(), string),
            progress_interval: t.get(errs, "progress_interval", d.progress_interval, duration),
            poll_interval: t.get(errs, "poll_interval", d.poll_interval, duration),
            s3_sources: None,
            admin_listen: Some(t.get(
                errs,
                "admin_listen",
                d.admin_listen.expect("a default admin port"),
                socket_addr,
            )),
        };
        cfg.ladder.x264_preset = t.get(errs, "x264_preset", cfg.ladder.x264_preset.clone(), string);
        cfg.ladder.threads = t
            .opt(errs, "threads", int_in(1, 64))
            .map(|n| n as u32)
            .or(cfg.ladder.threads);
        cfg.ladder.ffmpeg = t.get(errs, "ffmpeg", cfg.ladder.ffmpeg.clone(), path);
        cfg.ladder.ffprobe = t.get(errs, "ffprobe", cfg.ladder.ffprobe.clone(), path);
        if let Some(secs) = t.opt(errs, "segment_duration", duration) {
            match SegmentDuration::try_from(secs.as_secs_f64()) {
                Ok(s) => cfg.ladder.segment_duration = s,
                Err(e) => errs.push(at_segment, e.to_string()),
            }
        }
        if cfg.concurrency == 0 {
            errs.push(at_concurrency, "must be at least 1");
        }
        if cfg.lease_ttl < Duration::from_secs(2) || cfg.lease_ttl > Duration::from_secs(300) {
            errs.push(at_ttl, "must be from 2s to 300s (whole seconds)");
        }
        if streamgate_origin::validate_key(&cfg.staging_prefix).is_err() {
            errs.push(at_staging, "must be a relative object key, e.g. \".farm\"");
        }
        if let Err(e) = cfg.ladder.validate() {
            for p in e.problems {
                let field = if p.field == "x264_preset" {
                    at_preset.clone()
                } else {
                    format!("{}.{}", t.path(), p.field)
                };
                errs.push(field, p.message);
            }
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<WorkerConfig, Vec<String>> {
        let doc: toml::Table = toml::from_str(text).unwrap();
        let mut errs = Errors::default();
        let mut root = Fields::root(&doc);
        let mut t = root.table(&mut errs, "transcode");
        let mut w = t.table(&mut errs, "worker");
        let cfg = WorkerConfig::read(&mut w, &mut errs, Path::new("/data"));
        w.finish(&mut errs);
        t.finish(&mut errs);
        errs.finish(cfg)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn defaults() {
        let cfg = read("[transcode.worker]\n").unwrap();
        assert_eq!(cfg.lease_ttl, Duration::from_secs(10));
        assert_eq!(cfg.retry.max_attempts, 3);
        assert_eq!(cfg.segments_per_task, 5);
        assert_eq!(cfg.scratch, Path::new("/data/farm"));
        assert_eq!(cfg.staging_prefix, ".farm");
        assert_eq!(cfg.admin_listen.unwrap().port(), 9102);
        assert!(cfg.concurrency >= 1);
    }

    #[test]
    fn every_error_with_its_path() {
        let errs = read(
            r#"
            [transcode.worker]
            concurrency = 0
            lease_ttl = "1s"
            x264_preset = "warp"
            segment_duration = "10s"
            staging_prefix = "../x"
            max_attempts = "three"
            bogus = true
            "#,
        )
        .unwrap_err();
        for want in [
            "transcode.worker.concurrency:",
            "transcode.worker.lease_ttl:",
            "transcode.worker.x264_preset:",
            "transcode.worker.segment_duration:",
            "transcode.worker.staging_prefix:",
            "transcode.worker.max_attempts:",
            "transcode.worker.bogus: unknown field",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} not in {errs:#?}"
            );
        }
    }
}

//! The `[transcode]` table (and the shared `[origin]` table) of the config file.

use std::path::{Path, PathBuf};

use streamgate_config::{ConfigErrors, Errors, Fields, string};
use streamgate_control::config::StoreConfig;
use streamgate_origin::OriginConfig;

use crate::ingest::IngestConfig;

/// The farm's workers (`[transcode.worker]`; fields in [`crate::farm::WorkerConfig`]).
pub use crate::farm::WorkerConfig;

/// `streamgate transcode`'s typed configuration.
#[derive(Debug, Clone)]
pub struct TranscodeConfig {
    /// The state store (uploads, jobs).
    pub store: StoreConfig,
    /// Where sources are staged and renditions published (the shared `[origin]` table).
    pub origin: OriginConfig,
    /// Admin token lines (`token` or `name:token`) from `admin_token_file`.
    pub admin_tokens: Vec<String>,
    /// The tus ingest, when `[transcode.ingest]` is present.
    pub ingest: Option<IngestConfig>,
    /// The workers, when `[transcode.worker]` is present.
    pub worker: Option<WorkerConfig>,
}

/// Sections of the shared file that belong to other components.
const OTHER_SECTIONS: &[&str] = &["edge", "control", "load", "dev"];

/// Why the config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    /// The file is not TOML.
    #[error("{0} is not valid TOML: {1}")]
    Syntax(String, String),
    /// Values are invalid.
    #[error("{0}")]
    Invalid(#[from] ConfigErrors),
}

impl TranscodeConfig {
    /// Loads `path` with `STREAMGATE_*` overrides, validating everything (token file too).
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Read(name.clone(), e))?;
        let mut doc: toml::Table =
            toml::from_str(&text).map_err(|e| LoadError::Syntax(name, e.to_string()))?;
        let mut errs = Errors::default();
        streamgate_config::apply_env(&mut doc, std::env::vars(), &mut errs);
        let cfg = Self::from_table(&doc, &mut errs);
        Ok(errs.finish(cfg)?)
    }

    /// Reads typed config from a parsed document, recording every problem.
    pub fn from_table(doc: &toml::Table, errs: &mut Errors) -> Self {
        let present = |key: &str| {
            doc.get("transcode")
                .and_then(toml::Value::as_table)
                .is_some_and(|t| t.contains_key(key))
        };
        let (has_ingest, has_worker) = (present("ingest"), present("worker"));
        let mut root = Fields::root(doc);
        let mut t = root.table(errs, "transcode");
        let kind = t.get(errs, "store", "embedded".to_owned(), string);
        let data_dir = t.get(errs, "data_dir", "data/transcode".to_owned(), string);
        let endpoints = t.opt(errs, "etcd_endpoints", |v| Ok(v.clone()));
        let etcd_table = t.opt(errs, "etcd", |v| Ok(v.clone()));
        let env = |k: &str| std::env::var(k).ok();
        let store = match kind.as_str() {
            "embedded" => StoreConfig::Embedded {
                data_dir: PathBuf::from(&data_dir),
            },
            "etcd" => {
                // The same etcd client settings as [control.etcd] and [edge.gate.etcd]:
                // endpoints, TLS, credentials (streamgate_store::etcd::EtcdConfig).
                let etcd = match (endpoints, etcd_table) {
                    (Some(_), Some(_)) => {
                        errs.push(
                            "transcode.etcd_endpoints",
                            "give the endpoints in [transcode.etcd] or here, not both",
                        );
                        None
                    }
                    (Some(list), None) => streamgate_store::etcd::EtcdConfig::read(
                        "transcode.etcd_endpoints",
                        &list,
                        &env,
                        errs,
                    ),
                    (None, Some(tbl)) => {
                        streamgate_store::etcd::EtcdConfig::read("transcode.etcd", &tbl, &env, errs)
                    }
                    (None, None) => Some(streamgate_store::etcd::EtcdConfig::new(vec![
                        "http://127.0.0.1:2379".to_owned(),
                    ])),
                };
                StoreConfig::Etcd(Box::new(
                    etcd.unwrap_or_else(|| streamgate_store::etcd::EtcdConfig::new(Vec::new())),
                ))
            }
            other => {
                errs.push(
                    "transcode.store",
                    format!("{other:?} is not \"embedded\" or \"etcd\""),
                );
                StoreConfig::Embedded {
                    data_dir: PathBuf::from(&data_dir),
                }
            }
        };
        let mut admin_tokens = Vec::new();
        match t.opt(errs, "admin_token_file", string) {
            None if has_ingest => errs.push(
                "transcode.admin_token_file",
                "required with [transcode.ingest]: a file of admin tokens (`token` or `name:token` lines)",
            ),
            None => {}
            Some(f) => match std::fs::read_to_string(&f) {
                Err(e) => errs.push("transcode.admin_token_file", format!("cannot read {f}: {e}")),
                Ok(text) => match streamgate_control::auth::token_lines(&text) {
                    Ok(lines) => admin_tokens = lines,
                    Err(e) => errs.push("transcode.admin_token_file", format!("{f}: {e}")),
                },
            },
        }
        let mut i = t.table(errs, "ingest");
        let ingest = IngestConfig::read(&mut i, errs);
        i.finish(errs);
        let mut w = t.table(errs, "worker");
        let worker = WorkerConfig::read(&mut w, errs, Path::new(&data_dir));
        w.finish(errs);
        t.finish(errs);
        let mut o = root.table(errs, "origin");
        let origin = streamgate_origin::read_origin(
            &mut o,
            errs,
            OriginConfig::Fs {
                root: PathBuf::from("data/origin"),
            },
        );
        o.finish(errs);
        if has_ingest && matches!(origin, OriginConfig::Http(_)) {
            errs.push(
                "origin.kind",
                "the ingest stages uploads in origin storage: use \"fs\" or \"s3\", not \"http\"",
            );
        }
        for s in OTHER_SECTIONS {
            let _ = root.table(errs, s);
        }
        root.finish(errs);
        Self {
            store,
            origin,
            admin_tokens,
            ingest: has_ingest.then_some(ingest),
            worker: has_worker.then_some(worker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<TranscodeConfig, Vec<String>> {
        let doc: toml::Table = toml::from_str(text).unwrap();
        let mut errs = Errors::default();
        let cfg = TranscodeConfig::from_table(&doc, &mut errs);
        errs.finish(cfg)
            .map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn every_error_with_its_path() {
        let errs = read(
            r#"
            [transcode]
            store = "sqlite"
            bogus = 1
            [transcode.ingest]
            listen = "nowhere"
            max_size = "lots"
            s3_part_size = "1MiB"
            cors_allow_origins = ["example.com"]
            ladders = ["Big"]
            [origin]
            kind = "http"
            base_url = "http://up"
            "#,
        )
        .unwrap_err();
        for want in [
            "transcode.store:",
            "transcode.bogus: unknown field",
            "transcode.admin_token_file: required",
            "transcode.ingest.listen:",
            "transcode.ingest.max_size:",
            "transcode.ingest.s3_part_size:",
            "transcode.ingest.cors_allow_origins[0]:",
            "transcode.ingest.ladders[0]:",
            "transcode.ingest.default_ladder:",
            "origin.kind: the ingest stages uploads",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{want} not in {errs:#?}"
            );
        }
    }

    #[test]
    fn defaults_and_presence() {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "alice:0123456789abcdef0123\n").unwrap();
        let cfg = read(&format!(
            "[transcode]\nadmin_token_file = {:?}\n[transcode.ingest]\n",
            tokens.display().to_string()
        ))
        .unwrap();
        let ingest = cfg.ingest.unwrap();
        assert_eq!(ingest.listen.port(), 8090);
        assert_eq!(ingest, IngestConfig::default());
        assert!(cfg.worker.is_none());
        assert_eq!(cfg.admin_tokens.len(), 1);
        let cfg = read("[transcode.worker]\n").unwrap();
        assert!(cfg.ingest.is_none() && cfg.worker.is_some());
    }
}

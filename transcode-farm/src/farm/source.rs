//! Bringing a job's source to the worker's scratch folder, hashing it on the way.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use streamgate_control::job::{JobDoc, JobSource};
use streamgate_origin::{ObjectKey, Origin, OriginConfig, OriginError, S3Origin};
use tokio::io::AsyncWriteExt;

/// Why a source could not be fetched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The object is not in origin storage (or the URL answers 404).
    #[error("source {0} not found")]
    NotFound(String),
    /// The bytes are not the ones the submitter named.
    #[error(
        "source {source_name} changed: its SHA-256 is {got}, but the job was submitted for {want}; submit it again with the new digest"
    )]
    Mismatch {
        /// The source.
        source_name: String,
        /// The digest submitted.
        want: String,
        /// The digest of the bytes.
        got: String,
    },
    /// A kind of source this worker cannot read.
    #[error("{0}")]
    Unsupported(String),
    /// Storage, network or disk failed (worth another try).
    #[error("fetching source {what}: {message}")]
    Io {
        /// The source.
        what: String,
        /// What failed.
        message: String,
    },
}

impl SourceError {
    /// Whether another try cannot help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Io { .. })
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> SourceError + '_ {
    move |e| SourceError::Io {
        what: what.to_owned(),
        message: e.to_string(),
    }
}

/// Fetches the source of `doc` to `dir/source` unless it is there already (another task
/// of the same job on this worker fetched it), and returns its path and SHA-256 (hex).
pub async fn fetch(
    doc: &JobDoc,
    origin: &Origin,
    s3: Option<&S3Origin>,
    http: &reqwest::Client,
    dir: &Path,
) -> Result<(PathBuf, String), SourceError> {
    let path = dir.join("source");
    let digest_path = dir.join("source.sha256");
    if let (Ok(_), Ok(sha)) = (
        tokio::fs::metadata(&path).await,
        tokio::fs::read_to_string(&digest_path).await,
    ) {
        return Ok((path, sha));
    }
    let name = describe(&doc.source);
    tokio::fs::create_dir_all(dir).await.map_err(io(&name))?;
    let tmp = dir.join(format!("source.partial-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io(&name))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let result = async {
        match &doc.source {
            JobSource::Upload { key, .. } | JobSource::Origin { key } => {
                let key = ObjectKey::new(key).map_err(|e| {
                    SourceError::Unsupported(format!("source key {key:?} is not valid: {e}"))
                })?;
                copy_object(origin, &key, &name, &mut ctx, &mut file).await?;
            }
            JobSource::S3 { url } => {
                let Some(template) = s3 else {
                    return Err(SourceError::Unsupported(format!(
                        "{url}: this worker's origin storage is not S3, so it has no S3 endpoint \
                         or credentials; copy the object into origin storage and submit its key"
                    )));
                };
                let rest = url.strip_prefix("s3://").unwrap_or_default();
                let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                let key = ObjectKey::new(key).map_err(|e| {
                    SourceError::Unsupported(format!("{url}: the key is not valid: {e}"))
                })?;
                // The origin's endpoint and credentials, the URL's bucket, no prefix.
                let bucket_origin = Origin::from_config(&OriginConfig::S3(S3Origin {
                    bucket: bucket.to_owned(),
                    prefix: None,
                    ..template.clone()
                }))
                .map_err(|e| SourceError::Unsupported(format!("{url}: {e}")))?;
                copy_object(&bucket_origin, &key, &name, &mut ctx, &mut file).await?;
            }
            JobSource::Https { url } => {
                let resp = http.get(url).send().await.map_err(|e| SourceError::Io {
                    what: name.clone(),
                    message: e.to_string(),
                })?;
                if resp.status() == reqwest::StatusCode::NOT_FOUND {
                    return Err(SourceError::NotFound(name.clone()));
                }
                if !resp.status().is_success() {
                    return Err(SourceError::Io {
                        what: name.clone(),
                        message: format!("the server answered {}", resp.status()),
                    });
                }
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(|e| SourceError::Io {
                        what: name.clone(),
                        message: e.to_string(),
                    })?;
                    ctx.update(&chunk);
                    file.write_all(&chunk).await.map_err(io(&name))?;
                }
            }
        }
        file.flush().await.map_err(io(&name))?;
        Ok(())
    }
    .await;
    drop(file);
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    let sha: String = ctx
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if !doc.source_sha256.is_empty() && doc.source_sha256 != sha {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(SourceError::Mismatch {
            source_name: name,
            want: doc.source_sha256.clone(),
            got: sha,
        });
    }
    tokio::fs::rename(&tmp, &path).await.map_err(io(&name))?;
    tokio::fs::write(&digest_path, &sha)
        .await
        .map_err(io(&name))?;
    Ok((path, sha))
}

/// The source as people name it.
pub fn describe(source: &JobSource) -> String {
    match source {
        JobSource::Upload { upload, .. } => format!("upload {upload}"),
        JobSource::Origin { key } => key.clone(),
        JobSource::S3 { url } | JobSource::Https { url } => url.clone(),
    }
}

/// Streams `key` of `origin` into `file`, hashing it.
async fn copy_object(
    origin: &Origin,
    key: &ObjectKey,
    name: &str,
    ctx: &mut ring::digest::Context,
    file: &mut tokio::fs::File,
) -> Result<(), SourceError> {
    let obj = origin.get(key).await.map_err(|e| match e {
        OriginError::NotFound => SourceError::NotFound(name.to_owned()),
        other => SourceError::Io {
            what: name.to_owned(),
            message: other.to_string(),
        },
    })?;
    let mut body = obj.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| SourceError::Io {
            what: name.to_owned(),
            message: e.to_string(),
        })?;
        ctx.update(&chunk);
        file.write_all(&chunk).await.map_err(io(name))?;
    }
    Ok(())
}

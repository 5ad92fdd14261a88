//! Typed origin configuration and the construction of each kind of store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use crate::{BuildError, Origin, OriginKind};

/// Where objects live. Built from the `[origin]` table of the config file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OriginConfig {
    /// A local directory; keys are paths below `root`.
    Fs {
        /// The directory that holds `{asset}/{path}`.
        root: PathBuf,
    },
    /// An S3-compatible bucket.
    S3(S3Origin),
    /// An upstream HTTP server: `GET {base_url}/{key}`.
    Http(HttpOrigin),
}

/// An S3-compatible bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct S3Origin {
    /// Bucket name.
    pub bucket: String,
    /// Optional key prefix inside the bucket.
    pub prefix: Option<String>,
    /// Endpoint URL for S3-compatible servers; `None` means AWS.
    pub endpoint: Option<String>,
    /// Region name.
    pub region: String,
    /// Access key id; `None` reads the usual AWS environment.
    pub access_key_id: Option<String>,
    /// Secret access key; never logged.
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint (local test servers).
    pub allow_http: bool,
    /// Time allowed for the response headers of one read.
    pub timeout: Duration,
}

/// An upstream HTTP origin pulled with pooled keep-alive connections.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOrigin {
    /// Base URL; a key is appended to it.
    pub base_url: String,
    /// Time allowed until the response headers arrive; the whole body gets twice as long.
    pub timeout: Duration,
    /// Time allowed to connect.
    pub connect_timeout: Duration,
    /// Idle connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub pool_idle_timeout: Duration,
}

/// Retries belong to the edge's stale-if-error logic, not to the client: one quick retry at most.
fn retry(timeout: Duration) -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        retry_timeout: timeout,
        ..RetryConfig::default()
    }
}

/// The S3 client for `s3`, with `retry`; shared by reads and by the staging area.
pub(crate) fn s3_builder(s3: &S3Origin, retry: RetryConfig) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_allow_http(s3.allow_http)
        .with_retry(retry)
        .with_client_options(ClientOptions::new().with_allow_http(s3.allow_http));
    if let Some(e) = &s3.endpoint {
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    if let Some(k) = &s3.access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(s) = &s3.secret_access_key {
        b = b.with_secret_access_key(s);
    }
    b
}

pub(crate) fn build(cfg: &OriginConfig) -> Result<Origin, BuildError> {
    match cfg {
        OriginConfig::Fs { root } => {
            std::fs::create_dir_all(root).map_err(|source| BuildError::Root {
                path: root.display().to_string(),
                source,
            })?;
            let store = LocalFileSystem::new_with_prefix(root)
                .map_err(|source| BuildError::Store { kind: "fs", source })?;
            Ok(Origin {
                store: Arc::new(store) as Arc<dyn ObjectStore>,
                kind: OriginKind::Fs,
                prefix: None,
                fs_root: Some(root.clone()),
                timeout: Duration::from_secs(30),
            })
        }
        OriginConfig::S3(s3) => {
            let store = s3_builder(s3, retry(s3.timeout))
                .build()
                .map_err(|source| BuildError::Store { kind: "s3", source })?;
            Ok(Origin {
                store: Arc::new(store),
                kind: OriginKind::S3,
                prefix: s3.prefix.as_deref().map(StorePath::from),
                fs_root: None,
                timeout: s3.timeout,
            })
        }
        OriginConfig::Http(h) => {
            let opts = ClientOptions::new()
                .with_allow_http(true)
                // The edge times the headers itself (and answers 504); this bounds the body.
                .with_timeout(h.timeout * 2)
                .with_connect_timeout(h.connect_timeout)
                .with_pool_max_idle_per_host(h.pool_max_idle_per_host)
                .with_pool_idle_timeout(h.pool_idle_timeout);
            let store = HttpBuilder::new()
                .with_url(&h.base_url)
                .with_client_options(opts)
                .with_retry(retry(h.timeout))
                .build()
                .map_err(|source| BuildError::Store {
                    kind: "http",
                    source,
                })?;
            Ok(Origin {
                store: Arc::new(store),
                kind: OriginKind::Http,
                prefix: None,
                fs_root: None,
                timeout: h.timeout,
            })
        }
    }
}

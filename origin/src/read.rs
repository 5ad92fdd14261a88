//! Reading the shared `[origin]` table of the config file into an [`OriginConfig`], with
//! every problem recorded at its field path. The transcode farm reads it here; it is the
//! same table, keys and defaults as the edge's (docs/CONFIG.md, `[origin]`).

use std::time::Duration;

use streamgate_config::{Errors, Fields, boolean, duration, int_in, path, string};

use crate::{HttpOrigin, OriginConfig, S3Origin};

/// Reads the `[origin]` table `o`; an absent `root` of an `fs` origin is `default`'s.
pub fn read_origin(o: &mut Fields<'_>, errs: &mut Errors, default: OriginConfig) -> OriginConfig {
    let kind = o.get(errs, "kind", "fs".to_owned(), string);
    let secs = Duration::from_secs;
    match kind.as_str() {
        "fs" => match (o.opt(errs, "root", path), default) {
            (Some(root), _) => OriginConfig::Fs { root },
            (None, d) => d,
        },
        "http" => {
            let base_url = o.opt(errs, "base_url", string).unwrap_or_default();
            if base_url.is_empty() {
                errs.push("origin.base_url", "required when origin.kind = \"http\"");
            } else if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                errs.push("origin.base_url", "must start with http:// or https://");
            }
            OriginConfig::Http(HttpOrigin {
                base_url,
                timeout: o.get(errs, "timeout", secs(10), duration),
                connect_timeout: o.get(errs, "connect_timeout", secs(2), duration),
                pool_max_idle_per_host: o.get(errs, "pool_max_idle_per_host", 64, int_in(0, 65536))
                    as usize,
                pool_idle_timeout: o.get(errs, "pool_idle_timeout", secs(90), duration),
            })
        }
        "s3" => {
            let bucket = o.opt(errs, "bucket", string).unwrap_or_default();
            if bucket.is_empty() {
                errs.push("origin.bucket", "required when origin.kind = \"s3\"");
            }
            OriginConfig::S3(S3Origin {
                bucket,
                prefix: o.opt(errs, "prefix", string),
                endpoint: o.opt(errs, "endpoint", string),
                region: o.get(errs, "region", "us-east-1".to_owned(), string),
                access_key_id: o.opt(errs, "access_key_id", string),
                secret_access_key: o.opt(errs, "secret_access_key", string),
                allow_http: o.get(errs, "allow_http", false, boolean),
                timeout: o.get(errs, "timeout", secs(10), duration),
            })
        }
        other => {
            errs.push(
                "origin.kind",
                format!("{other:?} is not one of \"fs\", \"http\", \"s3\""),
            );
            default
        }
    }
}

//! Development certificates.

use std::path::Path;

use crate::config::TlsFiles;

/// Why a development certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// Generating the key pair or certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Writing the PEM files failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
}

/// Returns `dir/dev-cert.pem` and `dir/dev-key.pem`, creating a self-signed certificate for
/// `localhost` and `127.0.0.1` the first time.
pub fn dev_certificate(dir: &Path) -> Result<TlsFiles, CertError> {
    let files = TlsFiles {
        cert: dir.join("dev-cert.pem"),
        key: dir.join("dev-key.pem"),
    };
    if files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)?;
    let write = |p: &Path, s: String| {
        std::fs::write(p, s).map_err(|source| CertError::Write {
            path: p.display().to_string(),
            source,
        })
    };
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    write(&files.key, ck.signing_key.serialize_pem())?;
    write(&files.cert, ck.cert.pem())?;
    Ok(files)
}

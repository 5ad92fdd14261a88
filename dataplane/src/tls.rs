//! Certificates: the store both TLS listeners serve from (reloaded in place), and
//! self-signed development certificates.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

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

/// Why a certificate and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LoadCertError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the filesystem said.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(String),
    /// The key file holds no PEM private key.
    #[error("{0} holds no PEM private key")]
    NoKey(String),
    /// The key type is not supported, or does not parse.
    #[error("unusable private key in {path}: {source}")]
    BadKey {
        /// The file.
        path: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
}

/// The edge's certificate, shared by the TCP TLS listener and the QUIC listener, and
/// swapped in place when its files change. Read once per handshake, never per request.
pub(crate) struct CertStore {
    files: TlsFiles,
    current: std::sync::RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

fn mtime(files: &TlsFiles) -> Option<SystemTime> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    m(&files.cert).max(m(&files.key))
}

fn load_pair(files: &TlsFiles) -> Result<CertifiedKey, LoadCertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| LoadCertError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(LoadCertError::NoCertificate(
            files.cert.display().to_string(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| LoadCertError::NoKey(files.key.display().to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|source| {
        LoadCertError::BadKey {
            path: files.key.display().to_string(),
            source,
        }
    })?;
    let ck = CertifiedKey::new(certs, signer);
    if ck.keys_match().is_err() {
        return Err(LoadCertError::Mismatch {
            cert: files.cert.display().to_string(),
            key: files.key.display().to_string(),
        });
    }
    Ok(ck)
}

impl CertStore {
    /// Loads the certificate chain and key in `files`.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>, LoadCertError> {
        let stamp = mtime(&files);
        let ck = load_pair(&files)?;
        Ok(Arc::new(Self {
            files,
            current: std::sync::RwLock::new((Arc::new(ck), stamp)),
        }))
    }

    /// Reloads the files if they changed since the last load (or if `force`). A pair that
    /// fails to load leaves the current certificate in service. Returns whether it swapped.
    pub(crate) fn reload(&self, force: bool) -> Result<bool, LoadCertError> {
        let stamp = mtime(&self.files);
        let known = self.current.read().unwrap_or_else(|p| p.into_inner()).1;
        if !force && stamp == known {
            return Ok(false);
        }
        let ck = load_pair(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (Arc::new(ck), stamp);
        Ok(true)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|p| p.into_inner()).0,
        ))
    }
}

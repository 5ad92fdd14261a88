//! Why a TLS member that accepts TCP does not answer: a handshake of our own.
//!
//! With TLS 1.3 a client finishes its side of the handshake before the server has checked
//! the client's certificate. A server that refuses it then sends an alert and closes, and
//! the gRPC call in flight sees either the alert or just a closed connection, depending on
//! timing. To tell a refusal from an outage at start, the probe repeats the handshake here
//! and waits briefly for what the server says next: an alert (or our own refusal of its
//! certificate) is a refusal of our credentials.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::config::EtcdTls;

/// The host and port of `endpoint` (`https://host:port`).
fn host_port(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.strip_prefix("https://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

fn client_config(tls: &EtcdTls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut tls.ca.as_slice()) {
        let c = c.map_err(|e| e.to_string())?;
        roots.add(c).map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match &tls.identity {
        Some((cert, key)) => {
            let certs: Vec<_> = rustls_pemfile::certs(&mut cert.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| e.to_string())?;
            let key = rustls_pemfile::private_key(&mut key.as_slice())
                .map_err(|e| e.to_string())?
                .ok_or("no private key")?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Handshakes with `endpoint` as the store would; `Some(why)` when TLS refuses (either
/// side), `None` when it looks fine or the member cannot be reached at all.
pub(super) async fn tls_refusal(endpoint: &str, tls: &EtcdTls) -> Option<String> {
    let (host, port) = host_port(endpoint)?;
    let cfg = match client_config(tls) {
        Ok(c) => c,
        Err(e) => return Some(format!("our TLS settings: {e}")),
    };
    let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = rustls::pki_types::ServerName::try_from(name).ok()?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
        let mut s = match connector.connect(server_name, tcp).await {
            Ok(s) => s,
            Err(e) => return Some(format!("TLS handshake: {e}")),
        };
        // A refusal arrives as an alert right after the handshake; an accepted client
        // gets session tickets or nothing.
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut buf)).await {
            Ok(Err(e))
                if e.to_string().contains("alert") || e.to_string().contains("certificate") =>
            {
                Some(format!("TLS: {e}"))
            }
            _ => None,
        }
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

//! The etcd client configuration every component shares: endpoints, TLS (a CA, a client
//! certificate), a username and password, and the timeouts of failover.
//!
//! It is read from one table shape wherever a component talks to etcd (`[control.etcd]`,
//! `[edge.gate.etcd]`, `[transcode.etcd]`); a plain list of URLs is the short form for
//! endpoints with every default. Files are read and checked when the config loads, so
//! `--check-config` reports a missing key file or an empty password file, not the first
//! request. The password is never printed: its `Debug` is redacted.

use std::fmt;
use std::time::Duration;

use streamgate_config::{Errors, Fields, duration, string, strings};

/// How a component reaches etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs of the members (`http://` or, with TLS, `https://`).
    pub endpoints: Vec<String>,
    /// TLS to the members (set when the endpoints are `https://`).
    pub tls: Option<EtcdTls>,
    /// etcd authentication (`etcdctl auth enable`).
    pub credentials: Option<Credentials>,
    /// Giving up on connecting to one member (default 2 s).
    pub dial_timeout: Duration,
    /// Giving up on one attempt of a request at one member (default 2 s); the request is
    /// then tried on another member.
    pub request_timeout: Duration,
    /// Giving up on a request across every member and retry (default 10 s, several
    /// elections).
    pub retry_timeout: Duration,
    /// HTTP/2 pings on each member connection this often (default 1 s)...
    pub keepalive_interval: Duration,
    /// ...and a member that does not answer one within this (default 1 s) counts as dead,
    /// so a frozen member is left within about two seconds.
    pub keepalive_timeout: Duration,
}

impl EtcdConfig {
    /// Endpoints with every default: plaintext, no authentication.
    pub fn new(endpoints: Vec<String>) -> Self {
        Self {
            endpoints,
            tls: None,
            credentials: None,
            dial_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            retry_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(1),
            keepalive_timeout: Duration::from_secs(1),
        }
    }
}

/// PEM contents for TLS to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed the members' certificates (PEM).
    pub ca: Vec<u8>,
    /// The client certificate chain and key (PEM), for members started with
    /// `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The name to check in the members' certificates, when it is not the endpoint's host.
    pub server_name: Option<String>,
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Reads a PEM file for `field`, checking that it holds certificates (or a key).
fn pem(errs: &mut Errors, field: String, path: &str, want_key: bool) -> Vec<u8> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            errs.push(field, format!("cannot read {path}: {e}"));
            return Vec::new();
        }
    };
    let ok = if want_key {
        matches!(
            rustls_pemfile::private_key(&mut bytes.as_slice()),
            Ok(Some(_))
        )
    } else {
        rustls_pemfile::certs(&mut bytes.as_slice()).any(|c| c.is_ok())
    };
    if !ok {
        let what = if want_key {
            "a PEM private key"
        } else {
            "PEM certificates"
        };
        errs.push(field, format!("{path} holds no {what}"));
    }
    bytes
}

/// The first line of `text`, trimmed: how password files and variables are read.
fn secret_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

impl EtcdConfig {
    /// Reads the etcd client config at `path` (e.g. `edge.gate.etcd`) from `value`: a
    /// list of URLs, or a table. `env` looks up environment variables (`password_env`).
    /// Every problem is recorded in `errs`; `None` when the value is neither shape.
    pub fn read(
        path: &str,
        value: &toml::Value,
        env: &dyn Fn(&str) -> Option<String>,
        errs: &mut Errors,
    ) -> Option<Self> {
        let mut cfg = Self::new(Vec::new());
        match value {
            toml::Value::Array(_) => match strings(value) {
                Ok(e) => cfg.endpoints = e,
                Err(m) => errs.push(path, m),
            },
            toml::Value::Table(t) => {
                let mut f = Fields::nested(path.to_owned(), t);
                cfg.read_table(&mut f, env, errs);
                f.finish(errs);
            }
            _ => {
                errs.push(path, "expected a list of URLs or a table with `endpoints`");
                return None;
            }
        }
        cfg.check_endpoints(path, errs);
        Some(cfg)
    }

    fn read_table(
        &mut self,
        f: &mut Fields<'_>,
        env: &dyn Fn(&str) -> Option<String>,
        errs: &mut Errors,
    ) {
        let path = f.path().to_owned();
        let at = |k: &str| format!("{path}.{k}");
        self.endpoints = f.get(errs, "endpoints", Vec::new(), strings);
        let d = Self::new(Vec::new());
        self.dial_timeout = f.get(errs, "dial_timeout", d.dial_timeout, duration);
        self.request_timeout = f.get(errs, "request_timeout", d.request_timeout, duration);
        self.retry_timeout = f.get(errs, "retry_timeout", d.retry_timeout, duration);
        self.keepalive_interval = f.get(errs, "keepalive_interval", d.keepalive_interval, duration);
        self.keepalive_timeout = f.get(errs, "keepalive_timeout", d.keepalive_timeout, duration);
        for (k, v) in [
            ("dial_timeout", self.dial_timeout),
            ("request_timeout", self.request_timeout),
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
        ] {
            if v < Duration::from_millis(100) || v > Duration::from_secs(60) {
                errs.push(at(k), "must be from 100ms to 60s");
            }
        }
        if self.retry_timeout < self.request_timeout
            || self.retry_timeout > Duration::from_secs(600)
        {
            errs.push(
                at("retry_timeout"),
                "must be at least request_timeout and at most 10m",
            );
        }

        let ca = f.opt(errs, "ca_file", string);
        let cert = f.opt(errs, "cert_file", string);
        let key = f.opt(errs, "key_file", string);
        let server_name = f.opt(errs, "server_name", string);
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((
                pem(errs, at("cert_file"), &c, false),
                pem(errs, at("key_file"), &k, true),
            )),
            (None, None) => None,
            _ => {
                errs.push(at("cert_file"), "cert_file and key_file go together");
                None
            }
        };
        self.tls = match ca {
            Some(ca) => Some(EtcdTls {
                ca: pem(errs, at("ca_file"), &ca, false),
                identity,
                server_name,
            }),
            None => {
                if identity.is_some() || server_name.is_some() {
                    errs.push(
                        at("ca_file"),
                        "required with cert_file or server_name: the CA of the members' certificates",
                    );
                }
                None
            }
        };

        let username = f.opt(errs, "username", string);
        let password_file = f.opt(errs, "password_file", string);
        let password_env = f.opt(errs, "password_env", string);
        let password = match (&password_file, &password_env) {
            (Some(_), Some(_)) => {
                errs.push(
                    at("password_file"),
                    "password_file and password_env exclude each other",
                );
                None
            }
            (Some(p), None) => match std::fs::read_to_string(p) {
                Ok(t) if !secret_line(&t).is_empty() => Some(secret_line(&t)),
                Ok(_) => {
                    errs.push(at("password_file"), format!("{p} is empty"));
                    None
                }
                Err(e) => {
                    errs.push(at("password_file"), format!("cannot read {p}: {e}"));
                    None
                }
            },
            (None, Some(var)) => match env(var).map(|v| secret_line(&v)) {
                Some(v) if !v.is_empty() => Some(v),
                _ => {
                    errs.push(
                        at("password_env"),
                        format!("the environment variable {var} is not set or empty"),
                    );
                    None
                }
            },
            (None, None) => None,
        };
        self.credentials = match (username, password) {
            (Some(u), Some(p)) if !u.is_empty() => Some(Credentials {
                username: u,
                password: p,
            }),
            (Some(_), Some(_)) => {
                errs.push(at("username"), "must not be empty");
                None
            }
            (Some(_), None) if password_file.is_none() && password_env.is_none() => {
                errs.push(at("username"), "needs password_file or password_env");
                None
            }
            (None, Some(_)) => {
                errs.push(at("username"), "required with a password");
                None
            }
            _ => None,
        };
    }

    fn check_endpoints(&self, path: &str, errs: &mut Errors) {
        if self.endpoints.is_empty() {
            errs.push(format!("{path}.endpoints"), "needs at least one endpoint");
        }
        let mut https = 0;
        for (i, ep) in self.endpoints.iter().enumerate() {
            let ok = match ep
                .strip_prefix("https://")
                .map(|r| (true, r))
                .or_else(|| ep.strip_prefix("http://").map(|r| (false, r)))
            {
                Some((tls, rest)) if !rest.is_empty() && ep.len() <= 512 => {
                    https += usize::from(tls);
                    rest.parse::<http_authority::Authority>().is_ok()
                }
                _ => false,
            };
            if !ok {
                errs.push(
                    format!("{path}.endpoints[{i}]"),
                    "must be an http:// or https:// URL of a member, e.g. http://127.0.0.1:2379",
                );
            }
        }
        if https > 0 && https < self.endpoints.len() {
            errs.push(
                format!("{path}.endpoints"),
                "mixes http:// and https://; a cluster's members serve one scheme",
            );
        }
        if https > 0 && self.tls.is_none() {
            errs.push(
                format!("{path}.ca_file"),
                "required with https:// endpoints: the CA of the members' certificates",
            );
        }
        if https == 0 && !self.endpoints.is_empty() && self.tls.is_some() {
            errs.push(
                format!("{path}.endpoints"),
                "TLS is configured (ca_file), so the endpoints must be https://",
            );
        }
    }
}

/// The authority part of an endpoint URL (`host:port`), checked without a URL crate.
mod http_authority {
    pub(super) struct Authority;

    impl std::str::FromStr for Authority {
        type Err = ();

        fn from_str(s: &str) -> Result<Self, ()> {
            let s = s.strip_suffix('/').unwrap_or(s);
            let (host, port) = s.rsplit_once(':').ok_or(())?;
            let port: u16 = port.parse().map_err(|_| ())?;
            let host_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
            if port == 0 || !host_ok {
                return Err(());
            }
            Ok(Self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(toml_text: &str, env: &[(&str, &str)]) -> (Option<EtcdConfig>, Vec<String>) {
        let doc: toml::Table = toml::from_str(toml_text).unwrap();
        let mut errs = Errors::default();
        let lookup = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        };
        let cfg = EtcdConfig::read("x.etcd", &doc["etcd"], &lookup, &mut errs);
        let msgs = match errs.finish(()) {
            Ok(()) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        (cfg, msgs)
    }

    #[test]
    fn a_list_is_endpoints_with_defaults() {
        let (cfg, errs) = read(
            r#"etcd = ["http://127.0.0.1:2379", "http://[::1]:2380"]"#,
            &[],
        );
        assert!(errs.is_empty(), "{errs:?}");
        let cfg = cfg.unwrap();
        assert_eq!(cfg.endpoints.len(), 2);
        assert_eq!(cfg.request_timeout, Duration::from_secs(2));
        assert!(cfg.tls.is_none() && cfg.credentials.is_none());
    }

    #[test]
    fn a_table_reads_tls_and_credentials_and_hides_the_password() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["etcd".into()]).unwrap();
        let (ca, crt, key, pw) = (
            dir.path().join("ca.pem"),
            dir.path().join("c.pem"),
            dir.path().join("k.pem"),
            dir.path().join("pw"),
        );
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        std::fs::write(&crt, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(&pw, "s3cret-pass\nignored\n").unwrap();
        let text = format!(
            "[etcd]\nendpoints = [\"https://127.0.0.1:2379\"]\nca_file = {ca:?}\ncert_file = {crt:?}\n\
             key_file = {key:?}\nusername = \"edge\"\npassword_file = {pw:?}\nrequest_timeout = \"500ms\"\n"
        );
        let (cfg, errs) = read(&text, &[]);
        assert!(errs.is_empty(), "{errs:?}");
        let cfg = cfg.unwrap();
        let creds = cfg.credentials.clone().unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("edge", "s3cret-pass")
        );
        assert!(cfg.tls.as_ref().unwrap().identity.is_some());
        assert_eq!(cfg.request_timeout, Duration::from_millis(500));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("s3cret"), "{shown}");

        let env_text =
            "[etcd]\nendpoints = [\"http://e:2379\"]\nusername = \"cp\"\npassword_env = \"PW\"\n";
        let (cfg, errs) = read(env_text, &[("PW", "from-env")]);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(cfg.unwrap().credentials.unwrap().password, "from-env");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = "[etcd]\nendpoints = [\"etcd:2379\", \"https://a:2379\", \"http://b:0\"]\n\
                    cert_file = \"/nonexistent/c.pem\"\nusername = \"u\"\npassword_env = \"MISSING\"\n\
                    request_timeout = \"1ms\"\nretry_timeout = \"1s\"\nbogus = 1\n";
        let (_, errs) = read(text, &[]);
        let all = errs.join("\n");
        for want in [
            "x.etcd.endpoints[0]: must be an http",
            "x.etcd.endpoints[2]: must be an http",
            "x.etcd.cert_file: cert_file and key_file go together",
            "x.etcd.password_env: the environment variable MISSING",
            "x.etcd.request_timeout: must be from",
            "x.etcd.ca_file: required with https://",
            "x.etcd.bogus: unknown field",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        let (_, errs) = read("etcd = 3", &[]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let (_, errs) = read("[etcd]\nendpoints = []\n", &[]);
        assert!(errs[0].contains("needs at least one endpoint"), "{errs:?}");
    }
}

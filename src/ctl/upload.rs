//! `streamgate ctl upload FILE --asset ID`: a tus 1.0.0 client for the ingest.
//!
//! It sends the file in chunks (one PATCH each, with `Upload-Checksum: sha256`), asks the
//! server's offset with HEAD before it starts and after any failure, and resumes: the
//! upload URL is remembered under the user's cache dir, keyed by the file's canonical
//! path, size and mtime and the ingest URL, so running the same command again after an
//! interruption continues where the server stopped. It shows a progress bar on a terminal
//! (plain lines otherwise) and prints the job id.

use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine;
use clap::Args;

use super::{EX_UNAVAILABLE, EX_USAGE, Global, Output};

/// `ctl upload`.
#[derive(Args)]
pub(crate) struct UploadArgs {
    /// The video file.
    file: PathBuf,
    /// The asset id to publish it as.
    #[arg(long)]
    asset: String,
    /// The policy to bind the asset to.
    #[arg(long)]
    policy: Option<String>,
    /// The ladder preset.
    #[arg(long)]
    ladder: Option<String>,
    /// The tus ingest's URL.
    #[arg(
        long,
        env = "STREAMGATE_INGEST",
        default_value = "http://127.0.0.1:8090"
    )]
    ingest: String,
    /// Bytes per PATCH (each is checksummed and durable when answered).
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Start a new upload even if one of this file is remembered.
    #[arg(long)]
    restart: bool,
    /// Print the job and return once the upload is complete, instead of following the job
    /// (through the control plane, `--endpoint`) to `done`.
    #[arg(long)]
    no_wait: bool,
    /// The edge whose playback URLs are printed once the job is done.
    #[arg(long, env = "STREAMGATE_EDGE", default_value = "http://127.0.0.1:8080")]
    edge: String,
}

fn parse_size(s: &str) -> Result<u64, String> {
    match streamgate_config_size(s) {
        Some(n) if (1 << 16..=1 << 32).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: a size from 64KiB to 4GiB, like 8MiB")),
    }
}

fn streamgate_config_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1 << 10,
        "mib" | "m" => 1 << 20,
        "gib" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

enum Fail {
    Local(String),
    Unreachable(String),
    Server(u16, String),
}

impl Fail {
    fn report(self) -> ExitCode {
        match self {
            Self::Local(m) => {
                eprintln!("error: {m}");
                ExitCode::from(EX_USAGE)
            }
            Self::Unreachable(m) => {
                eprintln!("error: ingest unreachable: {m}");
                ExitCode::from(EX_UNAVAILABLE)
            }
            Self::Server(status, m) => {
                eprintln!("error: the ingest answered {status}: {m}");
                if status == 401 || status == 403 {
                    eprintln!(
                        "hint: pass the admin token with --token, --token-file or STREAMGATE_TOKEN"
                    );
                }
                ExitCode::FAILURE
            }
        }
    }
}

/// The reason of a JSON error body, or the status line.
async fn reason(r: reqwest::Response) -> Fail {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            Some(format!(
                "{} ({})",
                v["reason"].as_str()?,
                v["error"].as_str()?
            ))
        })
        .unwrap_or(text);
    Fail::Server(status, msg)
}

fn token(g: &Global) -> Result<String, Fail> {
    match super::client::token(g) {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(Fail::Local(
            "an admin token is needed: --token, --token-file or STREAMGATE_TOKEN".into(),
        )),
        Err(super::client::CtlError::Local(m)) => Err(Fail::Local(m)),
        Err(_) => Err(Fail::Local("the admin token could not be read".into())),
    }
}

/// Where the URL of an unfinished upload of this file to this ingest is remembered.
fn resume_file(file: &Path, size: u64, mtime: u128, ingest: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let key = format!("{}\0{size}\0{mtime}\0{ingest}", file.display());
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let name: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(base.join("streamgate/uploads").join(format!("{name}.json")))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

struct Progress {
    tty: bool,
    size: u64,
    start: Instant,
    first: u64,
    last_decile: u64,
}

impl Progress {
    fn show(&mut self, done: u64) {
        let frac = if self.size == 0 {
            1.0
        } else {
            done as f64 / self.size as f64
        };
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let rate = (done - self.first) as f64 / secs / f64::from(1 << 20);
        if self.tty {
            let width = 30;
            let filled = (frac * width as f64) as usize;
            eprint!(
                "\r[{}{}] {:5.1}% {:>8.1} MiB of {:.1} MiB, {rate:6.1} MiB/s",
                "#".repeat(filled),
                ".".repeat(width - filled),
                frac * 100.0,
                done as f64 / f64::from(1 << 20),
                self.size as f64 / f64::from(1 << 20),
            );
            let _ = std::io::stderr().flush();
        } else {
            let decile = (frac * 10.0) as u64;
            if decile > self.last_decile || done == self.size {
                self.last_decile = decile;
                eprintln!(
                    "uploaded {done} of {} bytes ({:.0}%), {rate:.1} MiB/s",
                    self.size,
                    frac * 100.0
                );
            }
        }
    }
}

pub(crate) fn run(g: &Global, a: UploadArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Fail::Local(e.to_string()).report(),
    };
    let (wait, edge, asset) = (!a.no_wait, a.edge.clone(), a.asset.clone());
    let job = match rt.block_on(upload(g, a)) {
        Ok(job) => job,
        Err(f) => return f.report(),
    };
    if !wait || job.is_empty() {
        return ExitCode::SUCCESS;
    }
    // Follow the job through the control plane to its end, then say where it plays.
    let followed = rt.block_on(async {
        let mut jobs = super::client::connect(g).await?.jobs;
        super::job::watch(&mut jobs, &job, g.output).await
    });
    match followed {
        Ok(code) if code == ExitCode::SUCCESS => {
            if g.output == Output::Human {
                let edge = edge.trim_end_matches('/');
                println!("{edge}/v/{asset}/master.m3u8");
                println!("{edge}/v/{asset}/manifest.mpd");
                println!(
                    "(a gated asset needs ?token=...: `streamgate ctl token mint`, or the token `dev` printed)"
                );
            }
            code
        }
        Ok(code) => code,
        Err(e) => e.report(),
    }
}

/// Uploads (or resumes) the file; returns the job id the ingest answered with.
async fn upload(g: &Global, a: UploadArgs) -> Result<String, Fail> {
    let token = token(g)?;
    let local = |e: std::io::Error| Fail::Local(format!("{}: {e}", a.file.display()));
    let path = std::fs::canonicalize(&a.file).map_err(local)?;
    let meta = std::fs::metadata(&path).map_err(local)?;
    if !meta.is_file() {
        return Err(Fail::Local(format!("{} is not a file", a.file.display())));
    }
    let size = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let ingest = a.ingest.trim_end_matches('/').to_owned();
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Fail::Local(e.to_string()))?;
    let auth = format!("Bearer {token}");
    let tus = |rb: reqwest::RequestBuilder| {
        rb.header("Tus-Resumable", "1.0.0")
            .header("Authorization", &auth)
    };
    let unreachable = |e: reqwest::Error| Fail::Unreachable(format!("{ingest}: {e}"));
    let remembered = resume_file(&path, size, mtime, &ingest);

    // A remembered upload that the server still has: continue it.
    let mut url = None;
    if !a.restart
        && let Some(f) = &remembered
        && let Ok(text) = std::fs::read_to_string(f)
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        && let Some(u) = v["url"].as_str()
    {
        let r = tus(http.head(u)).send().await.map_err(unreachable)?;
        if r.status() == 200 {
            eprintln!("resuming {u}");
            url = Some(u.to_owned());
        } else {
            let _ = std::fs::remove_file(f);
        }
    }
    let url = match url {
        Some(u) => u,
        None => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut m = format!("asset {},filename {}", b64(&a.asset), b64(&name));
            if let Some(p) = &a.policy {
                m.push_str(&format!(",policy {}", b64(p)));
            }
            if let Some(l) = &a.ladder {
                m.push_str(&format!(",ladder {}", b64(l)));
            }
            let r = tus(http.post(format!("{ingest}/uploads/")))
                .header("Upload-Length", size)
                .header("Upload-Metadata", m)
                .send()
                .await
                .map_err(unreachable)?;
            if r.status() != 201 {
                return Err(reason(r).await);
            }
            let loc = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Fail::Server(201, "no Location header".into()))?;
            let u = if loc.starts_with("http") {
                loc.to_owned()
            } else {
                format!("{ingest}{loc}")
            };
            if let Some(f) = &remembered {
                let _ = std::fs::create_dir_all(f.parent().expect("a cache folder"));
                let _ = std::fs::write(f, serde_json::json!({"url": u, "file": path}).to_string());
            }
            u
        }
    };

    let head_offset = || async {
        let r = tus(http.head(&url)).send().await.map_err(unreachable)?;
        if r.status() != 200 {
            return Err(reason(r).await);
        }
        r.headers()
            .get("upload-offset")
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .ok_or_else(|| Fail::Server(200, "HEAD without Upload-Offset".into()))
    };
    let mut offset = head_offset().await?;
    let mut file = std::fs::File::open(&path).map_err(local)?;
    let mut progress = Progress {
        tty: std::io::stderr().is_terminal(),
        size,
        start: Instant::now(),
        first: offset,
        last_decile: 0,
    };
    progress.show(offset);
    let mut job: Option<String>;
    let mut failures = 0u32;
    loop {
        let n = a.chunk_size.min(size - offset);
        let mut buf = vec![0u8; n as usize];
        file.seek(SeekFrom::Start(offset)).map_err(local)?;
        file.read_exact(&mut buf).map_err(local)?;
        let sum = base64::engine::general_purpose::STANDARD
            .encode(ring::digest::digest(&ring::digest::SHA256, &buf));
        let sent = tus(http.patch(&url))
            .header("Upload-Offset", offset)
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", format!("sha256 {sum}"))
            .body(buf)
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 204 => {
                failures = 0;
                offset = r
                    .headers()
                    .get("upload-offset")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(offset + n);
                job = r
                    .headers()
                    .get("stream-gate-job")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                progress.show(offset);
                if offset >= size {
                    break;
                }
            }
            // Another offset on the server (an earlier attempt landed), or a chunk
            // damaged on the way, or a server that restarted: ask where it is and go on.
            Ok(r) if matches!(r.status().as_u16(), 409 | 460 | 423 | 500..=599) && failures < 5 => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                offset = head_offset().await?;
            }
            Ok(r) => return Err(reason(r).await),
            Err(e) if failures < 5 => {
                failures += 1;
                if progress.tty {
                    eprintln!();
                }
                eprintln!("connection failed ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(200 << failures)).await;
                offset = head_offset().await?;
            }
            Err(e) => return Err(unreachable(e)),
        }
    }
    if progress.tty {
        eprintln!();
    }
    if let Some(f) = &remembered {
        let _ = std::fs::remove_file(f);
    }
    let job = job.unwrap_or_default();
    match g.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({"upload": url, "job": job, "asset": a.asset, "size": size})
        ),
        Output::Human => {
            println!(
                "uploaded {} ({size} bytes) as asset {}",
                a.file.display(),
                a.asset
            );
            println!("job {job}");
        }
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_resume_keys() {
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert!(parse_size("1").is_err());
        assert!(parse_size("lots").is_err());
        let a = resume_file(Path::new("/v/a.mp4"), 10, 1, "http://i");
        assert_eq!(a, resume_file(Path::new("/v/a.mp4"), 10, 1, "http://i"));
        assert_ne!(a, resume_file(Path::new("/v/a.mp4"), 11, 1, "http://i"));
        assert_ne!(a, resume_file(Path::new("/v/a.mp4"), 10, 2, "http://i"));
        assert_ne!(a, resume_file(Path::new("/v/a.mp4"), 10, 1, "http://j"));
    }
}

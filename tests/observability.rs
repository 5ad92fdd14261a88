//! The shipped observability files (`deploy/observability/`) against real components:
//! promtool checks and unit-tests the alert rules; then a real Prometheus, run with the
//! shipped `prometheus.yml` pointed at a `streamgate dev` that played the demo, evaluates
//! every PromQL expression of the three dashboards and of `alerts.yaml`. Each must
//! evaluate without error, and every dashboard target whose `refId` starts with `live_`
//! (the convention docs/OPERATIONS.md describes) must return at least one series, so a
//! misspelt metric or label in a live panel fails the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

use common::{Proc, dev_command, free_port, hls_uris, output_ok, resolve, spawn_with_lines};

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One PromQL expression to evaluate, where it came from, and whether it must have data.
struct Query {
    origin: String,
    expr: String,
    live: bool,
}

/// Grafana's variables replaced by what a query over the last minute of every instance uses.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$instance", ".*")
}

/// Every target of every panel (rows' nested panels too), and each `label_values(metric,
/// label)` variable as a live `count by (label) (metric)`.
fn dashboard_queries(file: &Path) -> Vec<Query> {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap())
        .unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    assert_eq!(d["schemaVersion"], 39, "{name}: schemaVersion");
    assert_eq!(
        d["__inputs"][0]["name"], "DS_PROMETHEUS",
        "{name}: the datasource is the DS_PROMETHEUS input"
    );
    let mut out = Vec::new();
    let mut stack: Vec<&serde_json::Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{name}: panel {}",
                p["title"]
            );
            let ref_id = t["refId"].as_str().unwrap();
            out.push(Query {
                origin: format!("{name}: {} ({ref_id})", p["title"].as_str().unwrap()),
                expr: substitute(t["expr"].as_str().unwrap()),
                live: ref_id.starts_with("live_"),
            });
        }
    }
    for v in d["templating"]["list"].as_array().unwrap() {
        let def = v["definition"].as_str().unwrap();
        let args = def
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{name}: variable {def} is not label_values(m, l)"));
        let (metric, label) = args.split_once(',').unwrap();
        out.push(Query {
            origin: format!("{name}: variable {}", v["name"]),
            expr: format!("count by ({}) ({})", label.trim(), metric.trim()),
            live: true,
        });
    }
    out
}

fn alert_queries(file: &Path) -> Vec<Query> {
    let doc: serde_yaml::Value = serde_yaml::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push(Query {
                origin: format!("alerts.yaml: {}", r["alert"].as_str().unwrap()),
                expr: r["expr"].as_str().unwrap().to_owned(),
                live: false,
            });
        }
    }
    out
}

/// The shipped prometheus.yml with `targets` per job, a 1 s interval and alerts.yaml by path.
fn prometheus_config(targets: &[(&str, u16)]) -> String {
    let dir = observability_dir();
    let mut cfg: serde_yaml::Value =
        serde_yaml::from_slice(&std::fs::read(dir.join("prometheus.yml")).unwrap()).unwrap();
    cfg["global"]["scrape_interval"] = "1s".into();
    cfg["global"]["evaluation_interval"] = "1s".into();
    let rules = dir.join("alerts.yaml").to_string_lossy().into_owned();
    cfg["rule_files"] = serde_yaml::Value::Sequence(vec![rules.into()]);
    let jobs = cfg["scrape_configs"].as_sequence_mut().unwrap();
    assert_eq!(jobs.len(), targets.len(), "one scrape job per admin port");
    for job in jobs {
        let name = job["job_name"].as_str().unwrap().to_owned();
        let port = targets
            .iter()
            .find(|(j, _)| *j == name)
            .unwrap_or_else(|| panic!("prometheus.yml has an unexpected job {name}"))
            .1;
        job["static_configs"][0]["targets"] =
            serde_yaml::Value::Sequence(vec![format!("127.0.0.1:{port}").into()]);
    }
    serde_yaml::to_string(&cfg).unwrap()
}

async fn get_json(c: &reqwest::Client, url: &str, query: &[(&str, &str)]) -> serde_json::Value {
    c.get(url)
        .query(query)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Fetches `url` and returns its body, asserting 200.
async fn fetch(c: &reqwest::Client, url: &str) -> String {
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

/// Plays the demo's master, the first media playlist, its init and first three segments,
/// and asks once without a token (401), so request, cache, origin and deny series exist.
async fn play(c: &reqwest::Client, http: u16, token: &str) {
    let master = format!("http://127.0.0.1:{http}/v/demo/master.m3u8?token={token}");
    let text = fetch(c, &master).await;
    let playlist = resolve(&master, &hls_uris(&text)[0]);
    let text = fetch(c, &playlist).await;
    for u in hls_uris(&text).iter().take(4) {
        fetch(c, &resolve(&playlist, u)).await;
    }
    let anon = format!("http://127.0.0.1:{http}/v/demo/master.m3u8");
    let status = c.get(&anon).send().await.unwrap().status();
    assert_eq!(status, 401, "{anon} without a token");
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboards_and_alerts_evaluate_on_a_live_dev() {
    let dir = observability_dir();
    assert!(
        have("promtool"),
        "promtool is not installed: run ./scripts/setup.sh"
    );
    output_ok(
        Command::new("promtool")
            .arg("check")
            .arg("rules")
            .arg(dir.join("alerts.yaml")),
    );
    output_ok(Command::new("promtool").current_dir(&dir).args([
        "test",
        "rules",
        "alerts_test.yaml",
    ]));
    if !have("prometheus") {
        eprintln!(
            "\n*** SKIPPED: `prometheus` is not installed, so the dashboards and alerts were NOT \
             evaluated against live data. Run ./scripts/setup.sh. ***\n"
        );
        return;
    }

    let mut queries = Vec::new();
    for d in ["edge", "control", "farm"] {
        let q = dashboard_queries(&dir.join(format!("dashboards/{d}.json")));
        assert!(
            q.iter().filter(|q| q.live).count() >= 3,
            "{d}.json marks too few live targets"
        );
        queries.extend(q);
    }
    queries.extend(alert_queries(&dir.join("alerts.yaml")));

    let data = tempfile::tempdir().unwrap();
    let (http, tls, admin, control) = (free_port(), free_port(), free_port(), free_port());
    let (_dev, rx) = spawn_with_lines(&mut dev_command(data.path(), [http, tls, admin, control]));
    let token = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("dev printed its player URLs");
        if line.starts_with("http://") && line.contains(".m3u8?token=") {
            break line.split_once("?token=").unwrap().1.to_owned();
        }
    };
    let ports: Vec<(&str, u16)> = common::dev_admin_urls(&rx)
        .into_iter()
        .zip(["streamgate-edge", "streamgate-control", "streamgate-farm"])
        .map(|((_, url), job)| {
            let port = url.strip_suffix("/metrics").unwrap().rsplit(':').next();
            (job, port.unwrap().parse().unwrap())
        })
        .collect();
    common::wait_ready(admin, Duration::from_secs(30)).await;
    let c = reqwest::Client::new();
    play(&c, http, &token).await;
    // A gRPC call, so the control plane's call and latency series exist.
    output_ok(
        Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .args(["ctl", "--endpoint", &format!("http://127.0.0.1:{control}")])
            .arg("--token-file")
            .arg(data.path().join("admin.token"))
            .args(["policy", "list"])
            .env_remove("STREAMGATE_TOKEN"),
    );

    let prom_dir = tempfile::tempdir().unwrap();
    let cfg = prom_dir.path().join("prometheus.yml");
    std::fs::write(&cfg, prometheus_config(&ports)).unwrap();
    let prom_port = free_port();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("prometheus starts");
    let _prom = Proc(prom);
    let api = format!("http://127.0.0.1:{prom_port}/api/v1");

    // Every target up (the API answers once Prometheus listens).
    let targets = format!("{api}/targets");
    common::eventually(Duration::from_secs(30), "all three targets up", || async {
        let Ok(r) = c.get(&targets).send().await else {
            return false;
        };
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        let up = v["data"]["activeTargets"]
            .as_array()
            .map_or(0, |ts| ts.iter().filter(|t| t["health"] == "up").count());
        up == 3
    })
    .await;
    // Traffic while Prometheus scrapes, so rates over the last minute are not zero, then
    // a few scrapes more.
    play(&c, http, &token).await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut failures = Vec::new();
    for q in &queries {
        let v = get_json(&c, &format!("{api}/query"), &[("query", q.expr.as_str())]).await;
        if v["status"] != "success" {
            failures.push(format!("{}: {} failed: {v}", q.origin, q.expr));
        } else if q.live && v["data"]["result"].as_array().is_none_or(Vec::is_empty) {
            failures.push(format!("{}: {} returned no series", q.origin, q.expr));
        }
    }
    let live = queries.iter().filter(|q| q.live).count();
    assert!(
        failures.is_empty(),
        "{} of {} expressions ({live} live) failed:\n{}",
        failures.len(),
        queries.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} expressions evaluated, {live} live ones with data",
        queries.len()
    );
}

//! The report of a `load play` run: the JSON object of "Load reports" in ARCHITECTURE.md,
//! a one-line summary, and a self-contained HTML page with inline SVG plots (latency
//! percentile curves per object kind; active viewers, throughput and late % over time).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};

use super::{Hist, PlayArgs, Stats};
use crate::player::Kind;

/// One second of the run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// Seconds since the start.
    pub t: f64,
    /// Viewers watching.
    pub active: u64,
    /// Requests answered in this second.
    pub rps: f64,
    /// Body megabytes (10^6) in this second.
    pub mbps: f64,
    /// Late segments among those done in this second, percent.
    pub late_pct: f64,
    /// Stalls that started in this second.
    pub stalls: u64,
}

/// What a capacity search found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Capacity {
    /// The most viewers that held the QoE limits (0: not even the first level).
    pub viewers: u64,
    /// What ended the search: `qoe`, `generator` or `max_viewers`.
    pub limited_by: String,
    /// Every level tried.
    pub steps: Vec<Value>,
}

/// The generator is not trusted above this CPU share per thread.
const MAX_CPU: f64 = 0.9;
/// Nor when its timers fire this late at p99, ms.
const MAX_LAG_MS: f64 = 100.0;

/// Percentiles reported for every latency.
const POINTS: [f64; 11] = [
    0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// One run's results.
pub struct PlayReport {
    model: Value,
    url: String,
    protocol: String,
    stats: Stats,
    cut: u64,
    wall: f64,
    cpu: f64,
    timeline: Vec<Point>,
    viewers_target: u64,
    started_unix_ms: f64,
    /// Set by a capacity search.
    pub capacity: Option<Capacity>,
}

fn ms(h: &Hist, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

fn summary_of(h: &Hist) -> Value {
    json!({
        "count": h.len(),
        "p50": ms(h, 0.5), "p90": ms(h, 0.9), "p95": ms(h, 0.95), "p99": ms(h, 0.99),
        "p999": ms(h, 0.999), "max": if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
    })
}

fn distribution(h: &Hist) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    POINTS.iter().map(|&p| (p * 100.0, ms(h, p))).collect()
}

impl PlayReport {
    pub(crate) fn new(
        args: &PlayArgs,
        stats: Stats,
        cut: u64,
        wall: f64,
        cpu: f64,
        timeline: Vec<Point>,
        started_unix_ms: f64,
    ) -> Self {
        let model = match (args.viewers, args.rate) {
            (Some(n), _) => {
                json!({"kind": "closed", "viewers": n, "ramp_s": args.ramp.as_secs_f64(),
                "duration_s": args.duration.as_secs_f64()})
            }
            (_, Some(r)) => json!({"kind": "open", "rate": r, "arrivals": args.arrivals,
                "ramp_s": args.ramp.as_secs_f64(), "duration_s": args.duration.as_secs_f64()}),
            _ => Value::Null,
        };
        Self {
            model,
            url: crate::play::path_only(&args.url).to_owned(),
            protocol: format!("{:?}", args.protocol).to_lowercase(),
            stats,
            cut,
            wall,
            cpu,
            timeline,
            viewers_target: args.viewers.unwrap_or(0),
            started_unix_ms,
            capacity: None,
        }
    }

    /// Late segments over all segments.
    pub fn late_ratio(&self) -> f64 {
        if self.stats.segments == 0 {
            0.0
        } else {
            self.stats.late as f64 / self.stats.segments as f64
        }
    }

    /// Stalled time over watched plus stalled time.
    pub fn rebuffer_ratio(&self) -> f64 {
        let total = self.stats.watched_s + self.stats.stalled_s;
        if total > 0.0 {
            self.stats.stalled_s / total
        } else {
            0.0
        }
    }

    /// Viewers that failed.
    pub fn failed(&self) -> u64 {
        self.stats.failed
    }

    fn lag_p99(&self) -> f64 {
        ms(&self.stats.lag, 0.99)
    }

    /// The generator kept up: its CPU share and timer lag stayed under their limits.
    pub fn valid(&self) -> bool {
        self.cpu < MAX_CPU && self.lag_p99() < MAX_LAG_MS
    }

    pub(crate) fn capacity_level(&self) -> u64 {
        self.viewers_target
    }

    /// The JSON report.
    pub fn json(&self) -> Value {
        let s = &self.stats;
        let mut ttfb = serde_json::Map::new();
        let mut ttlb = serde_json::Map::new();
        let mut dist = serde_json::Map::new();
        for k in Kind::ALL {
            ttfb.insert(k.name().into(), summary_of(&s.ttfb[k as usize]));
            ttlb.insert(k.name().into(), summary_of(&s.ttlb[k as usize]));
            dist.insert(
                k.name().into(),
                json!({"ttfb": distribution(&s.ttfb[k as usize]), "ttlb": distribution(&s.ttlb[k as usize])}),
            );
        }
        let mean = if s.video_seconds > 0.0 {
            s.bit_seconds / s.video_seconds / 1000.0
        } else {
            0.0
        };
        let mut invalid = Vec::new();
        if self.cpu >= MAX_CPU {
            invalid.push(format!(
                "generator CPU {:.0} % per thread",
                self.cpu * 100.0
            ));
        }
        if self.lag_p99() >= MAX_LAG_MS {
            invalid.push(format!(
                "generator timers {:.0} ms late at p99",
                self.lag_p99()
            ));
        }
        let total_bytes: f64 = self.timeline.iter().map(|p| p.mbps).sum();
        let total_requests: u64 = s.requests.values().sum();
        json!({
            "url": self.url,
            "protocol": self.protocol,
            "model": self.model,
            "seconds": self.wall,
            "started_unix_ms": self.started_unix_ms,
            "viewers": {"started": s.started, "completed": s.completed, "failed": s.failed, "cut": self.cut},
            "startup_ms": summary_of(&s.startup),
            "ttfb_ms": ttfb,
            "ttlb_ms": ttlb,
            "rebuffer_ratio": self.rebuffer_ratio(),
            "stalls": s.stalls,
            "stall_s": s.stalled_s,
            "seeks": s.seeks,
            "seek_wait_s": s.seek_wait_s,
            "watch_s": s.watched_s,
            "late_segment_ratio": self.late_ratio(),
            "segments": s.segments,
            "requests": s.requests,
            "requests_per_s": total_requests as f64 / self.wall.max(1e-9),
            "mb_per_s": total_bytes / self.wall.max(1e-9),
            "errors": s.errors,
            "failures": s.failures,
            "bitrate_kbps": {"mean": mean, "segments_by_kbps": s.renditions.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<String, u64>>()},
            "cmcd_sent": {"requests": s.cmcd.requests, "starved": s.cmcd.starved, "sessions": s.cmcd.sessions.len(),
                          "video_br_count": s.cmcd.video_br.0, "video_br_sum_kbps": s.cmcd.video_br.1, "mtp_count": s.cmcd.mtp},
            "generator_cpu": self.cpu,
            "generator_lag_ms": {"p99": self.lag_p99(), "max": if s.lag.is_empty() { 0.0 } else { s.lag.max() as f64 / 1000.0 }},
            "valid": self.valid(),
            "invalid_because": invalid,
            "capacity": self.capacity,
            "distribution_ms": dist,
            "timeline": self.timeline,
        })
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let seg = &s.ttlb[Kind::Segment as usize];
        let mut line = format!(
            "viewers {} started, {} completed, {} failed, {} cut; startup p50 {:.0} ms p95 {:.0} ms; rebuffer {:.3} %, {} stalls; late segments {:.2} %; segment TTLB p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms; generator CPU {:.0} %{}",
            s.started,
            s.completed,
            s.failed,
            self.cut,
            ms(&s.startup, 0.5),
            ms(&s.startup, 0.95),
            self.rebuffer_ratio() * 100.0,
            s.stalls,
            self.late_ratio() * 100.0,
            ms(seg, 0.5),
            ms(seg, 0.99),
            ms(seg, 0.999),
            self.cpu * 100.0,
            if self.valid() {
                ""
            } else {
                " (INVALID: the generator could not keep up)"
            }
        );
        if !s.errors.is_empty() {
            let _ = write!(line, "; errors {:?}", s.errors);
        }
        if let Some(c) = &self.capacity {
            let _ = write!(
                line,
                "; capacity {} viewers (limited by {})",
                c.viewers, c.limited_by
            );
        }
        line
    }

    /// The HTML report: tables and inline SVG, nothing loaded from the network.
    pub fn html(&self) -> String {
        let v = self.json();
        let s = &self.stats;
        let mut h = String::new();
        h.push_str("<!doctype html><html><head><meta charset=\"utf-8\"><title>streamgate load play</title><style>body{font-family:sans-serif;margin:24px;max-width:1500px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}.plots{display:flex;flex-wrap:wrap;gap:12px}</style></head><body>");
        let _ = write!(
            h,
            "<h1>streamgate load play</h1><p>{} over {} &middot; model <code>{}</code> &middot; {:.1} s &middot; generator CPU {:.0} % &middot; {}</p>",
            crate::plot::esc(&self.url),
            self.protocol,
            crate::plot::esc(&self.model.to_string()),
            self.wall,
            self.cpu * 100.0,
            if self.valid() {
                "valid"
            } else {
                "<b>INVALID: the generator could not keep up</b>"
            }
        );
        let _ = write!(
            h,
            "<table><tr><th>viewers started</th><th>completed</th><th>failed</th><th>cut</th><th>startup p50 / p95 / p99 ms</th><th>rebuffer ratio</th><th>stalls</th><th>late segments</th><th>mean bitrate kbps</th></tr><tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} / {:.0} / {:.0}</td><td>{:.3} %</td><td>{}</td><td>{:.2} %</td><td>{:.0}</td></tr></table>",
            s.started,
            s.completed,
            s.failed,
            self.cut,
            ms(&s.startup, 0.5),
            ms(&s.startup, 0.95),
            ms(&s.startup, 0.99),
            self.rebuffer_ratio() * 100.0,
            s.stalls,
            self.late_ratio() * 100.0,
            v["bitrate_kbps"]["mean"].as_f64().unwrap_or(0.0)
        );
        h.push_str("<table><tr><th>kind</th><th>count</th><th>TTFB p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>TTLB p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>");
        for k in Kind::ALL {
            let (a, b) = (&v["ttfb_ms"][k.name()], &v["ttlb_ms"][k.name()]);
            let _ = write!(h, "<tr><td>{}</td><td>{}</td>", k.name(), a["count"]);
            for x in [a, b] {
                for p in ["p50", "p90", "p99", "p999", "max"] {
                    let _ = write!(h, "<td>{:.1}</td>", x[p].as_f64().unwrap_or(0.0));
                }
            }
            h.push_str("</tr>");
        }
        h.push_str(
            "</table><p>Latencies in ms, counted from when the player needed the object.</p>",
        );
        let _ = write!(
            h,
            "<p>Requests by status: <code>{}</code>; errors by reason: <code>{}</code></p>",
            crate::plot::esc(&v["requests"].to_string()),
            crate::plot::esc(&v["errors"].to_string())
        );
        h.push_str("<div class=\"plots\">");
        h.push_str(&self.latency_svg("ttlb", "Time to last byte by percentile"));
        h.push_str(&self.latency_svg("ttfb", "Time to first byte by percentile"));
        h.push_str(&self.timeline_svgs());
        h.push_str("</div></body></html>\n");
        h
    }

    /// The TTFB or TTLB percentile curves of every object kind.
    pub fn latency_svg(&self, which: &str, title: &str) -> String {
        let series: Vec<(String, Vec<(f64, f64)>)> = Kind::ALL
            .iter()
            .map(|k| {
                let h = if which == "ttfb" {
                    &self.stats.ttfb[*k as usize]
                } else {
                    &self.stats.ttlb[*k as usize]
                };
                (k.name().to_owned(), distribution(h))
            })
            .filter(|(_, d)| !d.is_empty())
            .collect();
        crate::plot::percentile_svg_titled(&series, title)
    }

    /// Active viewers, throughput and late % over time, one SVG each.
    pub fn timeline_svgs(&self) -> String {
        let pts = &self.timeline;
        let series = |f: fn(&Point) -> f64| pts.iter().map(|p| (p.t, f(p))).collect::<Vec<_>>();
        let mut out = String::new();
        out.push_str(&crate::plot::timeseries_svg(
            "Active viewers",
            "viewers",
            &[("active".into(), series(|p| p.active as f64))],
        ));
        out.push_str(&crate::plot::timeseries_svg(
            "Throughput",
            "MB/s",
            &[("MB/s".into(), series(|p| p.mbps))],
        ));
        out.push_str(&crate::plot::timeseries_svg(
            "Late segments and stalls",
            "% / count",
            &[
                ("late %".into(), series(|p| p.late_pct)),
                ("stalls".into(), series(|p| p.stalls as f64)),
            ],
        ));
        out
    }
}

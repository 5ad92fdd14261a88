use std::time::Duration;

use super::*;
use crate::source::Publish;
use http::HeaderMap;

fn analytics(max_assets: usize, slots: usize) -> (Analytics, prometheus::Registry) {
    let r = prometheus::Registry::new();
    let cfg = AnalyticsConfig {
        max_assets,
        session_slots: slots,
        ..AnalyticsConfig::default()
    };
    (Analytics::new(&cfg, &r), r)
}

fn q(cmcd: &str) -> String {
    format!(
        "token=t&CMCD={}",
        cmcd.replace('=', "%3D")
            .replace(',', "%2C")
            .replace('"', "%22")
    )
}

fn counter(r: &prometheus::Registry, name: &str, asset: &str) -> u64 {
    for f in r.gather() {
        if f.name() != name {
            continue;
        }
        for m in f.get_metric() {
            if m.get_label().iter().any(|l| l.value() == asset) {
                return match f.get_field_type() {
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count()
                    }
                    _ => m.get_counter().get_value() as u64,
                };
            }
        }
    }
    0
}

#[test]
fn a_session_starts_on_its_first_manifest_and_its_startup_ends_at_the_first_segment() {
    let (a, r) = analytics(10, 1024);
    let h = HeaderMap::new();
    let t0 = Instant::now();
    let sid = r#"sid="viewer-1""#;
    a.record_request(
        "demo",
        ObjectKind::Manifest,
        Some(&q(&format!("ot=m,{sid},su"))),
        &h,
        t0,
    );
    a.record_request(
        "demo",
        ObjectKind::Manifest,
        Some(&q(&format!("ot=m,{sid},su"))),
        &h,
        t0 + Duration::from_millis(100),
    );
    // The init segment is not a media segment.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(&format!("br=800,ot=i,{sid},su"))),
        &h,
        t0 + Duration::from_millis(200),
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(&format!("br=800,mtp=12000,ot=v,{sid},su"))),
        &h,
        t0 + Duration::from_millis(750),
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(&format!("bs,br=2500,mtp=9000,ot=v,{sid}"))),
        &h,
        t0 + Duration::from_secs(4),
    );
    // Audio: neither a bitrate sample nor a startup.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(&format!("br=128,ot=a,{sid}"))),
        &h,
        t0 + Duration::from_secs(5),
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        1
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_cmcd_requests_total", "demo"),
        6
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_starved_requests_total", "demo"),
        1
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_startup_seconds", "demo"),
        1
    );
    assert_eq!(counter(&r, "streamgate_edge_qoe_bitrate_kbps", "demo"), 2);
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_throughput_kbps", "demo"),
        2
    );
    let doc = a.document();
    let d = &doc["assets"]["demo"];
    assert_eq!(d["sessions"], 1);
    assert!(
        (d["startup_s"]["sum"].as_f64().unwrap() - 0.75).abs() < 0.002,
        "{d}"
    );
    assert_eq!(d["bitrate_kbps"]["sum"], 3300.0);
    // `le` and the cumulative counts line up; the last bucket holds every sample.
    let counts = d["bitrate_kbps"]["counts"].as_array().unwrap();
    assert_eq!(counts.len(), BITRATE_BUCKETS.len());
    assert_eq!(counts[3], 1, "800 kbps falls in le=800");
    assert_eq!(*counts.last().unwrap(), 2);
    // Published once; again only after a change.
    assert!(a.changes().is_some());
    assert!(a.changes().is_none());
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(&format!("ot=v,{sid}"))),
        &h,
        t0 + Duration::from_secs(6),
    );
    assert!(a.changes().is_some());
}

#[test]
fn a_player_without_cmcd_on_manifests_starts_on_its_first_starting_segment() {
    let (a, r) = analytics(10, 1024);
    let h = HeaderMap::new();
    let t0 = Instant::now();
    // Starting up (`su`): a session; the later segments are the same one.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="d1",su"#)),
        &h,
        t0,
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="d1",su"#)),
        &h,
        t0,
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="d1""#)),
        &h,
        t0,
    );
    // Playing, first seen here: it started elsewhere.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="roamed""#)),
        &h,
        t0,
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        1
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_startup_seconds", "demo"),
        0,
        "no manifest to time from"
    );
    // dash.js asks for its MPD without CMCD: the session it then starts is timed from it,
    // once.
    a.record_request("demo", ObjectKind::Manifest, Some("token=t"), &h, t0);
    let later = t0 + Duration::from_millis(400);
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="d2",su"#)),
        &h,
        later,
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="d3",su"#)),
        &h,
        later,
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        3
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_startup_seconds", "demo"),
        1,
        "the mark is used once"
    );
    let sum = a.document()["assets"]["demo"]["startup_s"]["sum"]
        .as_f64()
        .unwrap();
    assert!((sum - 0.4).abs() < 0.002, "{sum}");
}

#[test]
fn headers_count_like_the_query_and_junk_is_left_out() {
    let (a, r) = analytics(10, 1024);
    let mut h = HeaderMap::new();
    h.insert("cmcd-session", r#"sid="h-1""#.parse().unwrap());
    h.insert("cmcd-object", "ot=m".parse().unwrap());
    let t0 = Instant::now();
    a.record_request("demo", ObjectKind::Manifest, None, &h, t0);
    h.insert("cmcd-object", "br=1200,ot=v".parse().unwrap());
    a.record_request(
        "demo",
        ObjectKind::Segment,
        None,
        &h,
        t0 + Duration::from_millis(300),
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        1
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_startup_seconds", "demo"),
        1
    );
    // No CMCD: nothing; malformed: counted as such only.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some("token=t"),
        &HeaderMap::new(),
        t0,
    );
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some("CMCD=br%3D%22x"),
        &HeaderMap::new(),
        t0,
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_cmcd_requests_total", "demo"),
        2
    );
    let malformed = r
        .gather()
        .into_iter()
        .find(|f| f.name() == "streamgate_edge_cmcd_malformed_total")
        .unwrap();
    assert_eq!(malformed.get_metric()[0].get_counter().get_value(), 1.0);
}

#[test]
fn assets_beyond_the_cap_share_one_label() {
    let (a, r) = analytics(3, 1024);
    let h = HeaderMap::new();
    let now = Instant::now();
    for i in 0..50 {
        a.record_request(
            &format!("asset-{i}"),
            ObjectKind::Manifest,
            Some(&q(&format!("sid=\"s{i}\""))),
            &h,
            now,
        );
    }
    let labels: std::collections::BTreeSet<String> = r
        .gather()
        .into_iter()
        .filter(|f| f.name() == "streamgate_edge_qoe_cmcd_requests_total")
        .flat_map(|f| f.get_metric().to_vec())
        .map(|m| m.get_label()[0].value().to_owned())
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", OTHER),
        47
    );
    assert_eq!(a.document()["assets"].as_object().unwrap().len(), 4);
}

#[test]
fn idle_sessions_are_forgotten_and_the_table_stays_its_size() {
    let (a, r) = analytics(10, 64);
    let h = HeaderMap::new();
    let t0 = Instant::now();
    let m = q(r#"ot=m,sid="again""#);
    a.record_request("demo", ObjectKind::Manifest, Some(&m), &h, t0);
    a.record_request(
        "demo",
        ObjectKind::Manifest,
        Some(&m),
        &h,
        t0 + Duration::from_secs(299),
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        1
    );
    // Past the idle timeout (5 min) it is a new session.
    a.record_request(
        "demo",
        ObjectKind::Manifest,
        Some(&m),
        &h,
        t0 + Duration::from_secs(700),
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        2
    );
    // A late first segment is no startup.
    a.record_request(
        "demo",
        ObjectKind::Segment,
        Some(&q(r#"ot=v,sid="again""#)),
        &h,
        t0 + Duration::from_secs(790),
    );
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_startup_seconds", "demo"),
        0
    );
    // A flood of sessions larger than the table: every one is counted, none is kept
    // beyond the table.
    for i in 0..10_000 {
        a.record_request(
            "demo",
            ObjectKind::Manifest,
            Some(&q(&format!("sid=\"f{i}\""))),
            &h,
            t0 + Duration::from_secs(800),
        );
    }
    assert_eq!(
        counter(&r, "streamgate_edge_qoe_sessions_started_total", "demo"),
        10_002
    );
    assert_eq!(a.table.sets.slots(), 64);
}

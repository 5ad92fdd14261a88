use std::time::{Duration, Instant, SystemTime};

use streamgate_policy::limits::{Sharing as Rule, StreamsPer};

use super::*;

fn guard(prefix: u8) -> (SharingGuard, prometheus::Registry) {
    let r = prometheus::Registry::new();
    let cfg = SessionConfig {
        ipv4_prefix: prefix,
        ..SessionConfig::default()
    };
    (SharingGuard::new(&cfg, &r), r)
}

fn rule(max_networks: Option<u32>, max_sessions: Option<u32>, deny: Option<u64>) -> Rule {
    Rule {
        window: Duration::from_secs(60),
        max_networks,
        max_sessions,
        deny_for: deny.map(Duration::from_secs),
        per: StreamsPer::Subject,
    }
}

fn from(p: Principal, last: u8, sid: Option<&str>) -> Seen {
    Seen {
        principal: p,
        client: Some(IpAddr::from([127, 0, 0, last])),
        sid: sid.map(crate::session::sid_hash),
    }
}

fn flagged(r: &prometheus::Registry, action: &str) -> u64 {
    r.gather()
        .into_iter()
        .filter(|f| f.name() == "streamgate_edge_sharing_flagged_total")
        .flat_map(|f| f.get_metric().to_vec())
        .find(|m| m.get_label()[0].value() == action)
        .map_or(0, |m| m.get_counter().get_value() as u64)
}

#[test]
fn twenty_networks_flag_once_and_flag_only_refuses_nobody() {
    let (g, r) = guard(32);
    let mut events = g.take_events().unwrap();
    assert!(g.take_events().is_none(), "one reader");
    let rule = rule(Some(10), None, None);
    let t0 = Instant::now();
    for last in 1..=20 {
        let r = g.check(&rule, "p", || "alice".into(), from(1, last, None), t0);
        assert_eq!(r, Ok(()), "flag only: {last}");
    }
    assert_eq!(flagged(&r, "flag"), 1);
    let e = events.try_recv().unwrap();
    assert_eq!(
        (e.principal, e.subject.as_str(), e.networks, e.deny_for),
        (1, "alice", 11, None)
    );
    assert!(events.try_recv().is_err(), "flagged once per window");
    assert!(
        audit_target(&e).contains("\"alice\": 11 networks"),
        "{}",
        audit_target(&e)
    );
    // One network per /24 by default: twenty loopback addresses are one network.
    let (g24, r24) = guard(24);
    for last in 1..=20 {
        g24.check(&rule, "p", String::new, from(1, last, None), t0)
            .unwrap();
    }
    assert_eq!(flagged(&r24, "flag"), 0);
}

#[test]
fn a_denial_refuses_the_principal_from_then_on_and_no_one_else() {
    let (g, r) = guard(32);
    let rule = rule(Some(10), None, Some(30));
    let t0 = Instant::now();
    for last in 1..=10 {
        assert_eq!(
            g.check(&rule, "p", String::new, from(7, last, None), t0),
            Ok(())
        );
    }
    assert_eq!(
        g.check(&rule, "p", String::new, from(7, 11, None), t0),
        Err(Shared)
    );
    // From every network, the first included; another subject plays on.
    assert_eq!(
        g.check(&rule, "p", String::new, from(7, 1, None), t0),
        Err(Shared)
    );
    assert_eq!(
        g.check(&rule, "p", String::new, from(8, 11, None), t0),
        Ok(())
    );
    assert_eq!(flagged(&r, "deny"), 1);
    assert!(g.is_denied(7, t0 + Duration::from_secs(29)));
    assert!(
        !g.is_denied(7, t0 + Duration::from_secs(31)),
        "for deny_for only"
    );
    // Denials from other edges, and lifting them.
    g.deny(9, t0 + Duration::from_secs(60));
    assert_eq!(
        g.check(&rule, "p", String::new, from(9, 1, None), t0),
        Err(Shared)
    );
    g.lift(9);
    assert_eq!(
        g.check(&rule, "p", String::new, from(9, 1, None), t0),
        Ok(())
    );
}

#[test]
fn sessions_count_by_id_and_the_window_forgets() {
    let (g, r) = guard(24);
    let rule = rule(None, Some(3), None);
    let t0 = Instant::now();
    for sid in ["a", "b", "c", "a", "b"] {
        g.check(&rule, "p", String::new, from(1, 1, Some(sid)), t0)
            .unwrap();
    }
    assert_eq!(flagged(&r, "flag"), 0, "three sessions");
    g.check(&rule, "p", String::new, from(1, 1, Some("d")), t0)
        .unwrap();
    assert_eq!(flagged(&r, "flag"), 1, "a fourth");
    // A window later the old sessions are forgotten: three new ones are fine.
    let later = t0 + Duration::from_secs(61);
    for sid in ["x", "y", "z"] {
        g.check(&rule, "p", String::new, from(2, 1, Some(sid)), later)
            .unwrap();
    }
    assert_eq!(flagged(&r, "flag"), 1);
}

#[test]
fn denial_documents_round_trip_and_junk_is_refused() {
    let f = Flagged {
        principal: 0xabc,
        subject: "alice".into(),
        policy: "p".into(),
        networks: 11,
        sessions: 11,
        window: Duration::from_secs(60),
        deny_for: Some(Duration::from_secs(30)),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let doc = denial_document(&f, "e-1", now).unwrap();
    let key = format!("/streamgate/v1/denials/{:016x}", 0xabc);
    let (p, until) = parse_denial(&key, doc.to_string().as_bytes()).unwrap();
    assert_eq!((p, until), (0xabc, now + Duration::from_secs(30)));
    assert!(
        denial_document(
            &Flagged {
                deny_for: None,
                ..f
            },
            "e",
            now
        )
        .is_none()
    );
    assert_eq!(parse_denial("/x/denials/abc", b"{}"), Err(DenialError::Key));
    assert_eq!(
        parse_denial("/x/denials/zzzzzzzzzzzzzzzz", b"{}"),
        Err(DenialError::Key)
    );
    assert!(matches!(
        parse_denial(&key, b"nope"),
        Err(DenialError::Shape(_))
    ));
    assert!(matches!(
        parse_denial(&key, br#"{"until": "tomorrow"}"#),
        Err(DenialError::Shape(_))
    ));
}

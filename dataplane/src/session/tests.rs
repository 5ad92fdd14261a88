use std::net::IpAddr;
use std::time::Duration;

use super::*;

fn sessions(idle: Duration) -> Sessions {
    let cfg = SessionConfig {
        idle_timeout: idle,
        ..SessionConfig::default()
    };
    Sessions::new(&cfg, &[7u8; 32], &prometheus::Registry::new())
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn ids_are_signed_for_their_principal() {
    let s = sessions(Duration::from_secs(30));
    let sid = s.mint(1);
    assert_eq!(sid.len(), 22);
    assert!(s.verify(1, &sid));
    assert!(!s.verify(2, &sid), "another viewer's id");
    let mut forged = sid.clone().into_bytes();
    forged[21] = if forged[21] == b'A' { b'B' } else { b'A' };
    assert!(!s.verify(1, std::str::from_utf8(&forged).unwrap()));
    assert!(!s.verify(1, "short"));
    assert!(!s.verify(1, "!!!!!!!!!!!!!!!!!!!!!!"));
    // Another fleet secret: not valid.
    let other = Sessions::new(
        &SessionConfig::default(),
        &[8u8; 32],
        &prometheus::Registry::new(),
    );
    assert!(!other.verify(1, &sid));
    assert_ne!(s.mint(1), sid, "ids are random");
}

#[test]
fn the_cap_counts_sessions_here_and_elsewhere() {
    let s = sessions(Duration::from_secs(30));
    let (a, b, c) = (s.mint(9), s.mint(9), s.mint(9));
    assert_eq!(
        s.admit(9, Some(sid_hash(&a)), ip("10.0.0.1"), 2, false),
        Ok(())
    );
    // Requests of an admitted session always pass, also over the cap.
    assert_eq!(
        s.admit(9, Some(sid_hash(&a)), ip("10.0.0.1"), 1, false),
        Ok(())
    );
    assert_eq!(
        s.admit(9, Some(sid_hash(&b)), ip("10.0.0.1"), 2, false),
        Ok(())
    );
    assert_eq!(
        s.admit(9, Some(sid_hash(&c)), ip("10.0.0.1"), 2, false),
        Err(Refused::OverCap)
    );
    // Another principal has its own count.
    assert_eq!(s.admit(10, None, ip("10.0.0.1"), 2, false), Ok(()));
    // One id from another network is another session.
    assert_eq!(
        s.admit(9, Some(sid_hash(&a)), ip("10.9.0.1"), 2, false),
        Err(Refused::OverCap)
    );
    assert_eq!(
        s.admit(9, Some(sid_hash(&a)), ip("10.0.0.77"), 2, false),
        Ok(()),
        "same /24"
    );
    let doc = crate::source::Publish::changes(&s).unwrap();
    assert_eq!(doc["sessions"][format!("{:016x}", 9u64)], 2);
    assert!(
        crate::source::Publish::changes(&s).is_none(),
        "no change since"
    );
    // Sessions at other edges count too; their key going away releases them.
    let s2 = sessions(Duration::from_secs(30));
    s2.set_remote("edge-a", Some(doc.to_string().as_bytes()));
    assert_eq!(
        s2.admit(9, None, ip("10.0.0.1"), 2, false),
        Err(Refused::OverCap)
    );
    assert_eq!(s2.admit(9, None, ip("10.0.0.1"), 3, false), Ok(()));
    s2.set_remote("edge-a", None);
    assert_eq!(
        s2.admit(9, Some(sid_hash("x")), ip("10.0.0.1"), 2, false),
        Ok(())
    );
    s2.set_remote("edge-b", Some(b"junk"));
    assert_eq!(
        s2.admit(9, Some(sid_hash("y")), ip("10.0.0.1"), 3, false),
        Ok(()),
        "junk counts nothing"
    );
}

#[test]
fn idle_sessions_end_and_free_their_slot() {
    let s = sessions(Duration::from_millis(300));
    assert_eq!(s.admit(1, Some(sid_hash("a")), None, 1, false), Ok(()));
    assert_eq!(
        s.admit(1, Some(sid_hash("b")), None, 1, false),
        Err(Refused::OverCap)
    );
    // Kept alive by its requests...
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(s.admit(1, Some(sid_hash("a")), None, 1, false), Ok(()));
    }
    // ...and gone once they stop.
    std::thread::sleep(Duration::from_millis(450));
    s.tick();
    assert_eq!(s.admit(1, Some(sid_hash("b")), None, 1, false), Ok(()));
    assert_eq!(s.document()["sessions"][format!("{:016x}", 1u64)], 1);
}

#[test]
fn over_the_cap_the_oldest_session_here_can_be_ended() {
    let s = sessions(Duration::from_secs(30));
    let at = ip("10.0.0.1");
    let (a, b, c) = (
        Some(sid_hash("a")),
        Some(sid_hash("b")),
        Some(sid_hash("c")),
    );
    assert_eq!(s.admit(1, a, at, 2, true), Ok(()));
    assert_eq!(s.admit(1, b, at, 2, true), Ok(()));
    // A third: the oldest (a) is ended, and stays ended; b plays on.
    assert_eq!(s.admit(1, c, at, 2, true), Ok(()));
    assert_eq!(s.admit(1, a, at, 2, true), Err(Refused::Ended));
    assert_eq!(s.admit(1, b, at, 2, true), Ok(()));
    assert_eq!(s.admit(1, c, at, 2, true), Ok(()));
    assert_eq!(s.document()["sessions"][format!("{:016x}", 1u64)], 2);
    // Then b, the oldest now.
    assert_eq!(s.admit(1, Some(sid_hash("d")), at, 2, true), Ok(()));
    assert_eq!(s.admit(1, b, at, 2, true), Err(Refused::Ended));
    assert_eq!(s.ended_count.get(), 2);
    // All of the principal's sessions play elsewhere: nothing here to end, refused.
    let s2 = sessions(Duration::from_secs(30));
    s2.set_remote("e-1", Some(br#"{"v":1,"sessions":{"0000000000000001":2}}"#));
    assert_eq!(s2.admit(1, a, at, 2, true), Err(Refused::OverCap));
}

#[test]
fn published_counts_parse_strictly() {
    let ok = parse_counts(br#"{"v":1,"sessions":{"00000000000000ff":3}}"#).unwrap();
    assert_eq!(ok[&255], 3);
    for bad in [
        &b"nope"[..],
        br#"{"v":1}"#,
        br#"{"sessions":{"zz":1}}"#,
        br#"{"sessions":{"01":-1}}"#,
        br#"{"sessions":{"01":99999999999}}"#,
    ] {
        assert!(
            parse_counts(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

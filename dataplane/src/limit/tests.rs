use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use streamgate_policy::limits::RateRule;
use tokio::time::{Instant, advance};

use super::*;

fn bucket(per_second: f64, burst: u32) -> Bucket {
    RateRule { per_second, burst }.into()
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

#[tokio::test(start_paused = true)]
async fn a_burst_passes_then_refills_at_the_rate() {
    let l = Limiter::new(1024);
    let b = bucket(2.0, 5);
    let me = network(ip(0x0a00_0001), 32, 64);
    for i in 0..5 {
        assert_eq!(
            l.check(Class::Segment, Space::Ip, me, b, Instant::now()),
            Ok(()),
            "request {i}"
        );
    }
    let wait = l
        .check(Class::Segment, Space::Ip, me, b, Instant::now())
        .unwrap_err();
    assert_eq!(
        wait,
        Duration::from_millis(500),
        "one token comes every 500 ms"
    );
    assert_eq!(retry_after_secs(wait), 1);
    // Refused requests take nothing: after 499 ms still refused, at 500 ms one passes.
    advance(Duration::from_millis(499)).await;
    assert!(
        l.check(Class::Segment, Space::Ip, me, b, Instant::now())
            .is_err()
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        l.check(Class::Segment, Space::Ip, me, b, Instant::now()),
        Ok(())
    );
    assert!(
        l.check(Class::Segment, Space::Ip, me, b, Instant::now())
            .is_err()
    );
    // Idle long enough, the bucket is full again, and no fuller than the burst.
    advance(Duration::from_secs(60)).await;
    let passed = (0..20)
        .filter(|_| {
            l.check(Class::Segment, Space::Ip, me, b, Instant::now())
                .is_ok()
        })
        .count();
    assert_eq!(passed, 5);
}

#[tokio::test(start_paused = true)]
async fn keys_classes_and_spaces_have_their_own_buckets() {
    let l = Limiter::new(1024);
    let b = bucket(1.0, 1);
    let now = Instant::now();
    let a = network(ip(1), 32, 64);
    assert!(l.check(Class::Segment, Space::Ip, a, b, now).is_ok());
    assert!(l.check(Class::Segment, Space::Ip, a, b, now).is_err());
    // Another client, another class, another space: each still has its token.
    assert!(
        l.check(Class::Segment, Space::Ip, network(ip(2), 32, 64), b, now)
            .is_ok()
    );
    assert!(l.check(Class::Playlist, Space::Ip, a, b, now).is_ok());
    assert!(l.check(Class::Segment, Space::Subject, a, b, now).is_ok());
    assert!(
        l.check(Class::Segment, Space::Subject, "alice", b, now)
            .is_ok()
    );
    assert!(
        l.check(Class::Segment, Space::Subject, "alice", b, now)
            .is_err()
    );
    assert!(
        l.check(Class::Segment, Space::Subject, "bob", b, now)
            .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn a_sustained_client_gets_the_rate_and_no_more() {
    let l = Limiter::new(64);
    let b = bucket(10.0, 10);
    let me = network(ip(7), 32, 64);
    let mut passed = 0;
    // 100 requests a second for 10 s: the burst plus 10 a second.
    for _ in 0..1000 {
        if l.check(Class::Segment, Space::Ip, me, b, Instant::now())
            .is_ok()
        {
            passed += 1;
        }
        advance(Duration::from_millis(10)).await;
    }
    assert!((108..=111).contains(&passed), "{passed} passed");
}

#[test]
fn networks_cut_to_their_prefix() {
    let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        network(v4("10.1.2.3"), 24, 64),
        network(v4("10.1.2.200"), 24, 64)
    );
    assert_ne!(
        network(v4("10.1.2.3"), 32, 64),
        network(v4("10.1.2.4"), 32, 64)
    );
    assert_ne!(
        network(v4("10.1.2.3"), 24, 64),
        network(v4("10.1.3.3"), 24, 64)
    );
    // IPv4-mapped IPv6 is the IPv4 client.
    assert_eq!(
        network(
            IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()),
            32,
            64
        ),
        network(v4("10.1.2.3"), 32, 64)
    );
    // A /64 holds one IPv6 client; an IPv4 network is not the IPv6 one with its bytes.
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::ffff:1".parse().unwrap();
    assert_eq!(network(a, 32, 64), network(b, 32, 64));
    assert_ne!(network(a, 32, 128), network(b, 32, 128));
    assert_ne!(
        network(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 32, 0),
        network(v4("0.0.0.0"), 0, 0)
    );
    assert_eq!(
        network(v4("10.1.2.3"), 0, 64),
        network(v4("192.0.2.1"), 0, 64)
    );
    assert_eq!(
        network(v4("10.1.2.3"), 20, 64),
        network(v4("10.1.15.255"), 20, 64)
    );
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
    assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A flood of a million distinct addresses, all over their limit: the table does not grow
/// (its memory is fixed at start), idle buckets go first, and a client that keeps to its
/// limit in the middle of the flood is still limited (its bucket survives).
#[tokio::test(start_paused = true)]
async fn a_million_addresses_take_no_memory_beyond_the_table() {
    let slots = 1 << 16;
    let l = Limiter::new(slots);
    assert_eq!(l.slots(), slots);
    assert_eq!(l.table_bytes(), slots * 8);
    let b = bucket(1.0, 2);
    let heavy = network(ip(0xc000_0201), 32, 64);
    let before = rss_bytes();
    let mut heavy_refused = 0;
    for n in 0..1_000_000u32 {
        let now = Instant::now();
        let _ = l.check(
            Class::Segment,
            Space::Ip,
            network(ip(0x0a00_0000 + n), 32, 64),
            b,
            now,
        );
        if n % 1000 == 0 && l.check(Class::Segment, Space::Ip, heavy, b, now).is_err() {
            heavy_refused += 1;
        }
        if n % 100 == 0 {
            advance(Duration::from_millis(1)).await;
        }
    }
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "1M addresses: table {} KiB, RSS grew {} KiB, active buckets evicted {}",
        l.table_bytes() / 1024,
        grown / 1024,
        l.evicted_active()
    );
    // Other tests run in this process at the same time; a map of a million buckets would
    // take tens of MiB, this bound is well under that.
    assert!(grown < 8 << 20, "RSS grew {grown} bytes");
    // 1000 tries over 10 s against 1 a second: about 990 refused, if its bucket was kept.
    assert!(
        heavy_refused > 900,
        "heavy client refused only {heavy_refused} times"
    );
}

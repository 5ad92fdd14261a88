//! The chain JSON-RPC client's circuit breaker against real HTTP servers (hyper, from the
//! test support): an endpoint that fails is left out for the cooldown, then gets one trial
//! call, which reopens the circuit on failure and closes it on success, whatever the other
//! endpoints did in between.

mod support;

use std::time::Duration;

use serde_json::json;
use streamgate_policy::address::ChainId;
use streamgate_web3::Chains;
use streamgate_web3::config::{ChainConfig, EndpointConfig, Secret};
use support::TestOrigin;

fn endpoint(name: &str, origin: &TestOrigin, priority: u32) -> EndpointConfig {
    EndpointConfig {
        name: name.into(),
        url: Secret(format!("http://{}/rpc", origin.addr)),
        priority,
        weight: 1,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_opens_tries_once_after_the_cooldown_and_closes_on_success() {
    let flaky = TestOrigin::start().await; // no "rpc" object yet: every call gets 404
    let good = TestOrigin::start().await;
    good.put("rpc", r#"{"jsonrpc":"2.0","id":1,"result":"0x2a"}"#);
    let mut cfg = ChainConfig::new(ChainId::parse("eip155:1").unwrap());
    cfg.endpoints = vec![endpoint("flaky", &flaky, 0), endpoint("good", &good, 1)];
    cfg.breaker_failures = 1;
    cfg.breaker_cooldown = Duration::from_millis(300);
    cfg.hedge_after = Duration::ZERO;
    let registry = prometheus::Registry::new();
    let chains = Chains::new(&[cfg], &registry);
    let rpc = &chains.all()[0].rpc;
    let call = || rpc.call("eth_chainId", json!([]));

    // The preferred endpoint fails: failover answers, and its circuit opens.
    assert_eq!(call().await.unwrap(), "0x2a");
    assert_eq!((flaky.reads("rpc"), good.reads("rpc")), (1, 1));
    for _ in 0..3 {
        assert_eq!(call().await.unwrap(), "0x2a");
    }
    assert_eq!(flaky.reads("rpc"), 1, "left out while open");

    // After the cooldown: one trial, which fails and reopens the circuit.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(call().await.unwrap(), "0x2a");
    assert_eq!(flaky.reads("rpc"), 2);
    assert_eq!(call().await.unwrap(), "0x2a");
    assert_eq!(flaky.reads("rpc"), 2, "open again");

    // It recovers: the next trial succeeds and the circuit closes for good.
    flaky.put("rpc", r#"{"jsonrpc":"2.0","id":1,"result":"0x01"}"#);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = good.reads("rpc");
    for _ in 0..3 {
        assert_eq!(call().await.unwrap(), "0x01");
    }
    assert_eq!(flaky.reads("rpc"), 5);
    assert_eq!(good.reads("rpc"), before, "the preferred endpoint is back");

    let opens: f64 = registry
        .gather()
        .iter()
        .filter(|f| f.name() == "streamgate_edge_rpc_breaker_opens_total")
        .flat_map(|f| {
            f.get_metric()
                .iter()
                .map(|m| m.get_counter().get_value())
                .collect::<Vec<_>>()
        })
        .sum();
    assert_eq!(opens, 2.0);
}

//! Members given by host name, resolved through a DNS server the test runs: traffic follows
//! the name's addresses as they change, with no failed request, and a failing DNS server
//! leaves the last good addresses in place.

use crate::support::*;
use portico_e2e::dns::DnsServer;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const NAME: &str = "svc.portico.test";

/// Two witnesses on one port of two loopback addresses (the port comes from binding the
/// first; if the second address has it taken, both are bound again).
async fn same_port_pair() -> (Witness, Witness) {
    loop {
        let a = Witness::start_on("127.0.0.1:0".parse().unwrap(), "a")
            .await
            .unwrap();
        let second: SocketAddr = format!("127.0.0.2:{}", a.addr.port()).parse().unwrap();
        match Witness::start_on(second, "b").await {
            Ok(b) => return (a, b),
            Err(_) => a.stop(),
        }
    }
}

/// Waits (10 s at most) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let wait = async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

#[tokio::test]
async fn traffic_follows_a_member_name_to_its_new_address_without_a_failed_request() {
    let dns = DnsServer::start().await.unwrap();
    let (a, b) = same_port_pair().await;
    let port = a.addr.port();
    dns.set(NAME, &[Ipv4Addr::new(127, 0, 0, 1)]);
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
dns: {{ nameservers: [ "{dns}" ], timeout: 1s }}
upstreams:
  p:
    members: [ {{ address: "{NAME}:{port}" }} ]
    dns_refresh: 2s
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
        dns = dns.addr
    );
    let gw = Gateway::start(&yaml).await;
    let load = Load::start(&[gw.url("/")], 4, false);
    until("the first address serves", || a.count() > 20).await;

    // The name moves: new requests go to the new address; at most the ones in flight at
    // the switch still reach the old one.
    dns.set(NAME, &[Ipv4Addr::new(127, 0, 0, 2)]);
    until("the new address serves", || b.count() > 0).await;
    let a_at_switch = a.count();
    let b_at_switch = b.count();
    until("the new address takes the traffic", || {
        b.count() > b_at_switch + 100
    })
    .await;
    assert!(
        a.count() <= a_at_switch + 4,
        "the old address still got requests: {} after {a_at_switch}",
        a.count()
    );

    // Two addresses: two members, both serve.
    dns.set(
        NAME,
        &[Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)],
    );
    let a_now = a.count();
    until("both addresses serve", || a.count() > a_now + 20).await;
    let pool = gw.pool("p").await;
    let members = pool["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{pool}");
    assert!(members
        .iter()
        .all(|m| m["source"] == "dns" && m["name"] == format!("{NAME}:{port}").as_str()));

    // The DNS server fails: the lookups fail, the last addresses stay.
    dns.fail(true);
    let failed = "portico_dns_lookups_total{result=\"error\"} ";
    let wait = async {
        while metric_value(&gw.metrics().await, failed) < 2.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .expect("no failed lookup counted");
    let (a_now, b_now) = (a.count(), b.count());
    until("both addresses still serve", || {
        a.count() > a_now + 20 && b.count() > b_now + 20
    })
    .await;

    let (ok, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:#?}",
        failures.len()
    );
    assert!(ok > 200);
    assert!(dns.queries() >= 3);
}

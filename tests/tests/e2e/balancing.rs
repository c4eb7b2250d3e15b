use crate::support::*;
use std::collections::HashMap;

fn pool_config(balance: &str, extra: &str, members: &[(&Witness, u32)]) -> String {
    let mut m = String::new();
    for (w, weight) in members {
        m.push_str(&format!(
            "      - {{ address: {}, weight: {weight} }}\n",
            w.addr
        ));
    }
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\nupstreams:\n  p:\n    balance: {balance}\n{extra}    members:\n{m}routes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n"
    )
}

async fn upstream_of(c: &reqwest::Client, url: &str, header: Option<(&str, &str)>) -> String {
    let mut rb = c.get(url);
    if let Some((k, v)) = header {
        rb = rb.header(k, v);
    }
    let r = rb.send().await.expect("request");
    assert_eq!(r.status(), 200);
    r.headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string()
}

#[tokio::test]
async fn weighted_round_robin_distribution() {
    let a = Witness::start("a").await.unwrap();
    let b = Witness::start("b").await.unwrap();
    let c = Witness::start("c").await.unwrap();
    let gw = Gateway::start(&pool_config(
        "round_robin",
        "",
        &[(&a, 1), (&b, 2), (&c, 5)],
    ))
    .await;
    let client = reqwest::Client::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let n = 800;
    for _ in 0..n {
        *counts
            .entry(upstream_of(&client, &gw.url("/"), None).await)
            .or_default() += 1;
    }
    // Round robin is deterministic: each full cycle of 8 gives exactly 1:2:5.
    let share = |k: &str| counts.get(k).copied().unwrap_or(0) as f64 / n as f64;
    for (k, want) in [("a", 1.0 / 8.0), ("b", 2.0 / 8.0), ("c", 5.0 / 8.0)] {
        assert!((share(k) - want).abs() < 0.02, "{k}: {counts:?}");
    }
}

#[tokio::test]
async fn least_request_prefers_the_idle_member() {
    let a = Witness::start("a").await.unwrap();
    let b = Witness::start("b").await.unwrap();
    let gw = Gateway::start(&pool_config("least_request", "", &[(&a, 1), (&b, 1)])).await;
    let client = reqwest::Client::new();
    // Sequential requests: both members idle, so traffic is split between them.
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..200 {
        *counts
            .entry(upstream_of(&client, &gw.url("/"), None).await)
            .or_default() += 1;
    }
    assert!(counts.get("a").copied().unwrap_or(0) > 40, "{counts:?}");
    assert!(counts.get("b").copied().unwrap_or(0) > 40, "{counts:?}");
}

#[tokio::test]
async fn consistent_hashing_sticks() {
    let a = Witness::start("a").await.unwrap();
    let b = Witness::start("b").await.unwrap();
    let c = Witness::start("c").await.unwrap();
    let gw = Gateway::start(&pool_config(
        "consistent_hash",
        "    hash_key: header:x-user\n",
        &[(&a, 1), (&b, 1), (&c, 1)],
    ))
    .await;
    let client = reqwest::Client::new();
    let mut placement: HashMap<String, String> = HashMap::new();
    for user in 0..30 {
        let key = format!("user-{user}");
        let first = upstream_of(&client, &gw.url("/"), Some(("x-user", &key))).await;
        for _ in 0..4 {
            let again = upstream_of(&client, &gw.url("/"), Some(("x-user", &key))).await;
            assert_eq!(again, first, "{key} moved");
        }
        placement.insert(key, first);
    }
    let used: std::collections::HashSet<&String> = placement.values().collect();
    assert!(used.len() >= 2, "30 keys all on one member: {placement:?}");
}

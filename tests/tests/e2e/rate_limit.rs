use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn route(name: &str, prefix: &str, limits: &str) -> String {
    format!(
        "  - name: {name}\n    match: {{ prefix: {prefix} }}\n    upstream: w\n    plugins:\n      - rate_limit:\n          limits:\n{limits}"
    )
}

fn config(up: &Witness, redis: Option<&str>, routes: &[String]) -> String {
    let redis = redis
        .map(|u| {
            format!("redis:\n  url: {u}\n  command_timeout: 200ms\n  connect_timeout: 200ms\n")
        })
        .unwrap_or_default();
    format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: false }}\n{redis}upstreams:\n  w:\n    members: [ {{ address: {} }} ]\nroutes:\n{}",
        up.addr,
        routes.join("")
    )
}

/// Sends requests from `workers` loops for `for_how_long`; returns (allowed, limited).
async fn hammer(
    urls: Vec<String>,
    workers_per_url: usize,
    for_how_long: Duration,
    header: Option<(&'static str, String)>,
) -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, limited) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::new();
    for url in urls {
        for _ in 0..workers_per_url {
            let (stop, ok, limited, url, header) = (
                stop.clone(),
                ok.clone(),
                limited.clone(),
                url.clone(),
                header.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let c = reqwest::Client::new();
                while !stop.load(Ordering::Relaxed) {
                    let mut rb = c.get(&url);
                    if let Some((k, v)) = &header {
                        rb = rb.header(*k, v);
                    }
                    match rb.send().await.map(|r| r.status().as_u16()) {
                        Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Ok(429) => limited.fetch_add(1, Ordering::Relaxed),
                        other => panic!("unexpected answer {other:?}"),
                    };
                }
            }));
        }
    }
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed))
}

#[tokio::test]
async fn local_limit_admits_rate_times_time_plus_burst_and_keys_are_apart() {
    let up = Witness::start("w").await.unwrap();
    let gw = Gateway::start(&config(
        &up,
        None,
        &[
            route(
                "ip",
                "/ip",
                "            - { name: per-ip, rate: 20/s, burst: 10 }\n",
            ),
            route(
                "keyed",
                "/keyed",
                "            - { name: per-key, rate: 2/s, burst: 2, key: \"header:x-api-key\" }\n",
            ),
        ],
    ))
    .await;
    let start = Instant::now();
    let (ok, limited) = hammer(vec![gw.url("/ip")], 4, Duration::from_secs(2), None).await;
    let elapsed = start.elapsed().as_secs_f64();
    let expected = 10.0 + 20.0 * elapsed;
    assert!(limited > 0);
    assert!(
        (ok as f64 - expected).abs() <= 4.0,
        "admitted {ok}, expected {expected:.1}"
    );

    // 429 as docs/errors.md says, with Retry-After and RateLimit-* headers.
    let c = reqwest::Client::new();
    let mut last = None;
    for _ in 0..5 {
        let r = c
            .get(gw.url("/keyed"))
            .header("x-api-key", "alpha")
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            last = Some(r);
            break;
        }
        assert_eq!(r.headers().get("ratelimit-limit").unwrap(), "2");
        assert_eq!(
            r.headers().get("ratelimit-policy").unwrap(),
            "2;w=1;burst=2"
        );
        assert!(r.headers().get("ratelimit-remaining").is_some());
    }
    let r = last.expect("the third request within a second is limited");
    assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    assert_eq!(r.headers().get("ratelimit-remaining").unwrap(), "0");
    assert_error(r, 429, "rate_limited").await;
    // Another key has its own bucket.
    let r = c
        .get(gw.url("/keyed"))
        .header("x-api-key", "beta")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // After Retry-After the key is admitted again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = c
        .get(gw.url("/keyed"))
        .header("x-api-key", "alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("portico_rate_limited_total{limit=\"per-ip\",route=\"ip\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn global_limit_holds_across_three_gateways_for_a_minute() {
    let redis = RedisServer::start().await;
    let up = Witness::start("w").await.unwrap();
    let yaml = config(
        &up,
        Some(&redis.url()),
        &[route("api", "/api", "            - { name: per-user, rate: 30/s, burst: 30, key: \"header:x-user\", scope: global }\n")],
    );
    let gws = [
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
        Gateway::start(&yaml).await,
    ];
    let urls: Vec<String> = gws.iter().map(|g| g.url("/api")).collect();
    let start = Instant::now();
    let (ok, limited) = hammer(
        urls,
        3,
        Duration::from_secs(60),
        Some(("x-user", "u1".into())),
    )
    .await;
    let elapsed = start.elapsed().as_secs_f64();
    let limit = 30.0 + 30.0 * elapsed;
    eprintln!("global: admitted {ok} (limit {limit:.0}), limited {limited}");
    assert!(ok as f64 <= limit * 1.02, "admitted {ok}, limit {limit:.0}");
    assert!(ok as f64 >= limit * 0.9, "admitted only {ok} of {limit:.0}");
    assert!(limited > ok, "the load did not exceed the limit");
}

#[tokio::test]
async fn redis_outage_follows_each_policy_and_recovers() {
    let mut redis = RedisServer::start().await;
    let up = Witness::start("w").await.unwrap();
    let gw = Gateway::start(&config(
        &up,
        Some(&redis.url()),
        &[
            route("allow", "/allow", "            - { rate: 5/s, burst: 5, scope: global, on_redis_error: allow }\n"),
            route("deny", "/deny", "            - { rate: 1000/s, scope: global, on_redis_error: deny }\n"),
            route("local", "/local", "            - { rate: 20/s, burst: 10, scope: global, on_redis_error: local, local_share: 0.5 }\n"),
        ],
    ))
    .await;
    let c = reqwest::Client::new();
    assert_eq!(c.get(gw.url("/deny")).send().await.unwrap().status(), 200);
    redis.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // allow: unlimited while Redis is away (far more than 5/s get through).
    let (ok, limited) = hammer(vec![gw.url("/allow")], 2, Duration::from_secs(1), None).await;
    assert!(ok > 30 && limited == 0, "allow: {ok} ok, {limited} limited");
    // deny: everything is refused, with the JSON body.
    let r = c.get(gw.url("/deny")).send().await.unwrap();
    assert_error(r, 429, "rate_limited").await;
    // local: limited in process at half the rate (burst 10, then 10/s).
    let (ok, _) = hammer(vec![gw.url("/local")], 2, Duration::from_secs(2), None).await;
    assert!((20..=36).contains(&ok), "local fallback admitted {ok}");

    // Redis returns: global limiting resumes without a restart.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if c.get(gw.url("/deny")).send().await.unwrap().status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, limited) = hammer(vec![gw.url("/allow")], 2, Duration::from_secs(1), None).await;
    assert!(
        ok <= 12 && limited > 0,
        "global limit not back: {ok} ok, {limited} limited"
    );
}

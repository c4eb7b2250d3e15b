//! OpenTelemetry traces, received by a real OTLP/HTTP receiver that decodes the protobuf.

use crate::support::*;
use portico_e2e::otlp::{attribute, hex, OtlpReceiver, Span};
use std::time::Duration;

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const STATUS_ERROR: i32 = 2;

/// Tracing turned on by the environment alone (no `tracing` section): a server span that
/// continues the client's trace, a client span per upstream try (a refused connect and its
/// retry are siblings), a span for the global rate limit's Redis call, the trace passed to
/// the upstream, and the ids in the access log.
#[tokio::test]
async fn spans_continue_the_callers_trace_and_reach_a_real_otlp_receiver() {
    let receiver = OtlpReceiver::start(false).await.unwrap();
    let redis = RedisServer::start().await;
    let up = Witness::start("w").await.unwrap();
    let dead = PortHold::new();
    let yaml = format!(
        r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: true, path: "{{dir}}/access.log" }}
redis: {{ url: {redis} }}
upstreams:
  p:
    connect_retries: 1
    members: [ {{ address: 127.0.0.1:{dead} }}, {{ address: {up} }} ]
routes:
  - name: traced
    match: {{ prefix: /traced }}
    upstream: p
    plugins: [ {{ rate_limit: {{ limits: [ {{ name: g, rate: 1000/s, key: "header:x-bucket", scope: global }} ] }} }} ]
"#,
        redis = redis.url(),
        dead = dead.port,
        up = up.addr
    );
    let gw = GatewayBuilder::new(&yaml)
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            &format!("http://{}", receiver.addr),
        )
        .env("OTEL_SERVICE_NAME", "edge-test")
        .start()
        .await;
    let c = reqwest::Client::new();
    // First, a caller that did not sample its trace: nothing is recorded for it (it would
    // be exported before the spans of the requests that follow), but the trace goes on.
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .get(gw.url("/traced"))
        .header("traceparent", format!("00-{unsampled}-b7ad6b7169203331-00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let unsampled_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let mut incoming = Vec::new();
    for i in 0..4u8 {
        let trace = format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}");
        let parent = format!("00f067aa0ba902{i:02x}");
        let r = c
            .get(gw.url("/traced"))
            .header("traceparent", format!("00-{trace}-{parent}-01"))
            .header("tracestate", "vendor=opaque")
            // A bucket of its own: its first check asks Redis.
            .header("x-bucket", format!("b{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let request_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        incoming.push((trace, parent, request_id));
    }

    let wanted: Vec<String> = incoming.iter().map(|(t, _, _)| t.clone()).collect();
    let spans = tokio::time::timeout(
        Duration::from_secs(20),
        receiver.wait_for(|spans| {
            wanted.iter().all(|t| {
                spans
                    .iter()
                    .any(|(_, s)| hex(&s.trace_id) == *t && s.kind == SERVER)
            })
        }),
    )
    .await
    .expect("the receiver never got a server span of every request");
    assert!(spans.iter().all(|(service, _)| service == "edge-test"));

    let seen = up.seen();
    let mut retried = 0;
    let mut redis_spans = 0;
    for (trace, parent, request_id) in &incoming {
        let of_trace: Vec<&Span> = spans
            .iter()
            .map(|(_, s)| s)
            .filter(|s| hex(&s.trace_id) == *trace)
            .collect();
        let server: Vec<&&Span> = of_trace.iter().filter(|s| s.kind == SERVER).collect();
        assert_eq!(server.len(), 1, "{trace}: {of_trace:#?}");
        let server = server[0];
        assert_eq!(
            hex(&server.parent_span_id),
            *parent,
            "the caller's span is the parent"
        );
        assert_eq!(server.name, "GET traced");
        assert_eq!(
            attribute(server, "http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(
            attribute(server, "http.request.method").as_deref(),
            Some("GET")
        );
        assert_eq!(attribute(server, "url.path").as_deref(), Some("/traced"));
        assert_eq!(
            attribute(server, "portico.route").as_deref(),
            Some("traced")
        );
        assert_eq!(server.trace_state, "vendor=opaque");

        let mut tries: Vec<&&Span> = of_trace
            .iter()
            .filter(|s| s.kind == CLIENT && attribute(s, "portico.upstream").is_some())
            .collect();
        tries.sort_by_key(|s| s.start_time_unix_nano);
        assert!(!tries.is_empty() && tries.len() <= 2, "{tries:#?}");
        for t in &tries {
            assert_eq!(
                t.parent_span_id, server.span_id,
                "tries are siblings under the server span"
            );
        }
        let last = tries[tries.len() - 1];
        assert_eq!(
            attribute(last, "server.address").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            attribute(last, "server.port"),
            Some(up.addr.port().to_string())
        );
        assert_eq!(
            attribute(last, "http.response.status_code").as_deref(),
            Some("200")
        );
        if tries.len() == 2 {
            retried += 1;
            let first = tries[0];
            assert_eq!(attribute(first, "server.port"), Some(dead.port.to_string()));
            assert_eq!(first.status.as_ref().map(|s| s.code), Some(STATUS_ERROR));
            assert_eq!(
                attribute(last, "http.request.resend_count").as_deref(),
                Some("1")
            );
        }
        redis_spans += of_trace
            .iter()
            .filter(|s| s.name == "redis rate limit" && s.parent_span_id == server.span_id)
            .count();

        // The upstream received the trace, with the try's span as its parent.
        let at_upstream = seen
            .iter()
            .find(|s| s.header_values("x-request-id").contains(request_id))
            .expect("the upstream saw the request");
        let traceparent = at_upstream.header_values("traceparent");
        assert_eq!(
            traceparent,
            vec![format!("00-{trace}-{}-01", hex(&last.span_id))],
            "exactly one traceparent, the try's"
        );
        assert_eq!(
            at_upstream.header_values("tracestate"),
            vec!["vendor=opaque"]
        );

        let log = gw.dir.path().join("access.log");
        let line = wait_line(&log, |v| v["request_id"] == request_id.as_str()).await;
        assert_eq!(line["trace_id"], trace.as_str(), "{line}");
        assert_eq!(line["span_id"], hex(&server.span_id).as_str(), "{line}");
        assert_eq!(line["rate_limit"], "allowed", "{line}");
    }

    // The unsampled caller: no span, but its upstream continues the trace (unsampled, with
    // the gateway's span id as parent), and its log line names the trace.
    assert!(
        spans.iter().all(|(_, s)| hex(&s.trace_id) != unsampled),
        "an unsampled trace was recorded"
    );
    let at_upstream = seen
        .iter()
        .find(|s| s.header_values("x-request-id").contains(&unsampled_id))
        .expect("the upstream saw the unsampled request");
    let traceparent = at_upstream.header_values("traceparent");
    assert_eq!(traceparent.len(), 1, "{traceparent:?}");
    let parts: Vec<&str> = traceparent[0].split('-').collect();
    assert_eq!(parts[1], unsampled);
    assert_eq!(parts[3], "00", "still unsampled");
    assert_ne!(parts[2], "b7ad6b7169203331", "the gateway's own span id");
    let log = gw.dir.path().join("access.log");
    let line = wait_line(&log, |v| v["request_id"] == unsampled_id.as_str()).await;
    assert_eq!(line["trace_id"], unsampled, "{line}");
    assert_eq!(line["span_id"], parts[2], "{line}");

    assert!(
        retried >= 1,
        "round robin sends one of four requests to the dead member first"
    );
    assert_eq!(
        redis_spans, 4,
        "each request's first global rate-limit check asks Redis"
    );
    // Counted once the receiver's answer is back, a moment after it has the spans.
    let exported = async {
        while metric_value(&gw.metrics().await, "portico_spans_exported_total ") < 8.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exported)
        .await
        .expect("the exported spans were not counted");
}

/// A collector that stalls or is gone never holds a request up: spans are dropped and
/// counted instead.
#[tokio::test]
async fn a_stalled_or_absent_collector_drops_counted_spans_and_requests_go_on() {
    let stalled = OtlpReceiver::start(true).await.unwrap();
    let gone = PortHold::new();
    let up = Witness::start("w").await.unwrap();
    let config = |endpoint: String| {
        format!(
            r#"listeners:
  - address: 127.0.0.1:{{port}}
access_log: {{ enabled: false }}
tracing:
  endpoint: {endpoint}
  sampler: always_on
  queue_size: 8
  batch_size: 4
  export_interval: 10ms
  export_timeout: 60s
upstreams:
  p: {{ members: [ {{ address: {up} }} ] }}
routes:
  - name: all
    match: {{ prefix: / }}
    upstream: p
"#,
            up = up.addr
        )
    };
    // 50 requests make 100 spans (server and upstream try). A stalled collector holds one
    // batch (4) in its export and 8 in the queue: the other 88 are refused at the queue. An
    // absent one fails every export: all 100 are dropped, as failed exports or at the queue.
    let full = "portico_spans_dropped_total{reason=\"queue_full\"} ";
    let failed = "portico_spans_dropped_total{reason=\"export_failed\"} ";
    type DroppedEnough<'a> = &'a dyn Fn(&str) -> bool;
    let cases: [(&str, String, DroppedEnough); 2] = [
        ("stalled", stalled.endpoint(), &|m| {
            metric_value(m, full) >= 88.0
        }),
        (
            "absent",
            format!("http://127.0.0.1:{}/v1/traces", gone.port),
            &|m| {
                metric_value(m, failed) >= 1.0
                    && metric_value(m, failed) + metric_value(m, full) == 100.0
            },
        ),
    ];
    for (case, endpoint, dropped_enough) in cases {
        let gw = Gateway::start(&config(endpoint)).await;
        let c = reqwest::Client::new();
        // An export that blocked a request would hold it for the 60 s export timeout.
        let requests = async {
            for _ in 0..50 {
                let r = c.get(gw.url("/")).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        };
        tokio::time::timeout(Duration::from_secs(20), requests)
            .await
            .unwrap_or_else(|_| panic!("{case}: requests waited on the collector"));
        let dropped = async {
            loop {
                let m = gw.metrics().await;
                if dropped_enough(&m) {
                    return m;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let Ok(m) = tokio::time::timeout(Duration::from_secs(10), dropped).await else {
            let m = gw.metrics().await;
            let counts: Vec<&str> = m
                .lines()
                .filter(|l| l.starts_with("portico_spans"))
                .collect();
            panic!("{case}: the dropped spans were not counted: {counts:?}");
        };

        assert_eq!(
            metric_value(&m, "portico_spans_exported_total "),
            0.0,
            "{m}"
        );
    }
}

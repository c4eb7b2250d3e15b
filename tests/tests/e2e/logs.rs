//! The access log: its fields, the status of an abandoned request, reopening on SIGUSR1.

use crate::support::*;
use std::time::Duration;

#[tokio::test]
async fn access_log_lines_carry_every_field_and_reopen_on_sigusr1() {
    let up = Witness::start("w").await.unwrap();
    let yaml = format!(
        "listeners:\n  - address: 127.0.0.1:{{port}}\naccess_log: {{ enabled: true, path: \"{{dir}}/access.log\" }}\nupstreams:\n  p:\n    members: [ {{ address: {} }} ]\nroutes:\n  - name: all\n    match: {{ prefix: / }}\n    upstream: p\n",
        up.addr
    );
    let gw = Gateway::start(&yaml).await;
    let log = gw.dir.path().join("access.log");
    let c = reqwest::Client::new();
    let r = c
        .get(gw.url("/first?x=1"))
        .header("referer", "https://app.example.test/page")
        .header("user-agent", "logs-test")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body_len = r.bytes().await.unwrap().len();
    let line = wait_line(&log, |v| v["request_id"] == id.as_str()).await;
    assert!(
        humantime::parse_rfc3339(line["time"].as_str().unwrap()).is_ok(),
        "{line}"
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["protocol"], "HTTP/1.1");
    assert_eq!(line["path"], "/first");
    assert_eq!(line["referer"], "https://app.example.test/page");
    assert_eq!(line["user_agent"], "logs-test");
    assert_eq!(line["bytes_out"], body_len as u64, "{line}");
    assert_eq!(line["route"], "all");
    assert!(line["duration_ms"].as_f64().is_some() && line["upstream_ms"].as_f64().is_some());

    // A client that gives up before the answer: 499, as nginx logs it.
    let url = gw.url("/abandoned?hold");
    let abandoned = tokio::spawn(async move { reqwest::get(url).await });
    up.wait_held(1).await;
    abandoned.abort();
    let _ = abandoned.await;
    let line = wait_line(&log, |v| v["path"] == "/abandoned").await;
    assert_eq!(line["status"], 499, "{line}");
    up.release_held();

    // logrotate: the file moves away, SIGUSR1, and new lines go to a new file of the name.
    std::fs::rename(&log, gw.dir.path().join("access.log.1")).unwrap();
    gw.signal("USR1");
    let reopened = async {
        loop {
            c.get(gw.url("/after-rotation")).send().await.unwrap();
            if std::fs::read_to_string(&log).is_ok_and(|t| t.contains("/after-rotation")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reopened)
        .await
        .expect("no new access.log after SIGUSR1");
}

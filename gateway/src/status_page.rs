//! The status page of the admin listener (`GET /status`): a read-only HTML page, with no
//! external assets, that polls `GET /status.json` and shows the routes with their request
//! and error rates, every pool's members with health and circuit state, the config version
//! and the last reloads.

use crate::control::reload::ReloadEvent;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use serde_json::{json, Value};

pub const PAGE: &str = include_str!("status_page.html");

/// What the page shows; `upstreams` is the admin's `/upstreams` view.
pub fn status(
    snapshot: &Snapshot,
    metrics: &Metrics,
    upstreams: Value,
    reloads: Vec<ReloadEvent>,
) -> Value {
    let routes: Vec<Value> = snapshot
        .config
        .routes
        .iter()
        .map(|r| {
            json!({
                "name": r.value.name.value,
                "upstream": r.value.upstream.as_ref().map(|u| u.value.clone()),
            })
        })
        .collect();
    let requests: serde_json::Map<String, Value> = metrics
        .request_totals()
        .into_iter()
        .map(|(route, (total, errors))| (route, json!({"total": total, "errors": errors})))
        .collect();
    json!({
        "version": snapshot.version,
        "loaded_at": humantime::format_rfc3339_millis(snapshot.loaded_at).to_string(),
        "file": &*snapshot.file,
        "routes": routes,
        "requests": requests,
        "upstreams": upstreams["upstreams"],
        "reloads": reloads,
    })
}

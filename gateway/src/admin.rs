//! The admin listener (`docs/operations.md`): health, readiness, metrics, the active config, upstream
//! state, and reload behind a bearer token.

use crate::control::reload::{ReloadOutcome, Reloader};
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::redis_link::RedisLink;
use crate::snapshot::Snapshot;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use portico_plugins::revocation::{self, Revocation, Revocations, Source};
use portico_plugins::ErrorCode;
use serde_json::{json, Value};
use std::sync::Arc;

pub struct AdminApp {
    reloader: Arc<Reloader>,
    metrics: Arc<Metrics>,
    redis: Option<Arc<RedisLink>>,
    drain: Arc<Drain>,
    revocations: Arc<Revocations>,
}

/// `POST /revocations`: exactly one of the credential fields.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    /// Every session and token of the user started before now.
    user_id: Option<String>,
    /// One Better Auth session, by its token.
    session_token: Option<String>,
    /// One session by id (Better Auth's `session.id`, a JWT's `sid`).
    session_id: Option<String>,
    /// One JWT, by its `jti`.
    jti: Option<String>,
    /// How long the revocation is kept (default 24 h): as long as what it revokes could
    /// otherwise pass.
    retain: Option<portico_plugins::units::Duration>,
}

/// Admin revocations are kept a day unless told otherwise.
const ADMIN_RETAIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
const MAX_ADMIN_BODY: usize = 64 * 1024;

impl AdminApp {
    pub fn new(
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
        redis: Option<Arc<RedisLink>>,
        drain: Arc<Drain>,
        revocations: Arc<Revocations>,
    ) -> Self {
        AdminApp {
            reloader,
            metrics,
            redis,
            drain,
            revocations,
        }
    }

    /// `POST /revocations`, already authorized.
    async fn revoke(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ADMIN_BODY => {
                    body.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => return error(ErrorCode::PayloadTooLarge, "the body is too large"),
                Ok(None) => break,
                Err(_) => return error(ErrorCode::BadRequest, "the body could not be read"),
            }
        }
        let request: RevokeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => return error(ErrorCode::BadRequest, &format!("invalid JSON body: {e}")),
        };
        let now = portico_plugins::clock::unix_ms();
        let retain = request.retain.map_or(ADMIN_RETAIN, |d| d.get());
        let until_ms = now + retain.as_millis() as u64;
        let credential = |key: String| Revocation::Credential { key, until_ms };
        let revocation = match (
            request.user_id,
            request.session_token,
            request.session_id,
            request.jti,
        ) {
            (Some(user_id), None, None, None) => Revocation::User {
                user_id,
                not_before_ms: now,
                keep: Vec::new(),
                until_ms,
            },
            (None, Some(t), None, None) => credential(revocation::token_key(&t)),
            (None, None, Some(id), None) => credential(revocation::session_key(&id)),
            (None, None, None, Some(jti)) => credential(revocation::jti_key(&jti)),
            _ => {
                return error(
                    ErrorCode::BadRequest,
                    "give exactly one of user_id, session_token, session_id, jti",
                )
            }
        };
        let revoked = match &revocation {
            Revocation::User { user_id, .. } => json!({"user_id": user_id}),
            Revocation::Credential { .. } => json!("credential"),
        };
        self.revocations.revoke(revocation, Source::Admin);
        json_response(
            StatusCode::OK,
            &json!({"status": "revoked", "revoked": revoked, "until_ms": until_ms}),
        )
    }

    /// 200 when the config is loaded and Redis, where something needs it, answers; 503 from
    /// the first moment of a termination, so load balancers stop sending first.
    fn ready(&self, snapshot: &Snapshot) -> Response<Vec<u8>> {
        if self.drain.is_terminating() {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "draining", "reason": "shutting down",
                        "open_connections": self.drain.open_connections(),
                        "config_version": snapshot.version}),
            );
        }
        let redis = self
            .redis
            .as_ref()
            .map(|link| (link.status(), link.required_for_ready));
        match redis {
            Some((Err(reason), true)) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"status": "not_ready", "reason": format!("redis unreachable: {reason}"),
                        "config_version": snapshot.version,
                        "note": "pools keep serving their last known members"}),
            ),
            Some((Err(reason), false)) => json_response(
                StatusCode::OK,
                &json!({"status": "degraded", "reason": format!("redis unreachable: {reason}"), "config_version": snapshot.version}),
            ),
            _ => json_response(
                StatusCode::OK,
                &json!({"status": "ready", "config_version": snapshot.version}),
            ),
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(body).unwrap_or_default();
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body)
        .unwrap_or_default()
}

/// The error body every gateway answer uses; admin requests have no request id.
fn error_body(code: ErrorCode, message: &str) -> Value {
    json!({"error": {"code": code.as_str(), "message": message, "request_id": ""}})
}

fn error(code: ErrorCode, message: &str) -> Response<Vec<u8>> {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &error_body(code, message))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Values of keys that usually hold secrets are replaced, in case one was written inline.
fn redact(value: &mut Value) {
    const SENSITIVE: [&str; 7] = [
        "authorization",
        "token",
        "secret",
        "password",
        "api-key",
        "apikey",
        "cookie",
    ];
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let lower = k.to_ascii_lowercase().replace('_', "-");
                let is_env_name = lower.ends_with("-env");
                if !is_env_name && SENSITIVE.iter().any(|s| lower.contains(s)) && v.is_string() {
                    let references_env = v
                        .as_str()
                        .is_some_and(|s| s.trim().starts_with("${env:") && s.trim().ends_with('}'));
                    if !references_env {
                        *v = Value::String("[redacted]".into());
                    }
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn config_view(s: &Snapshot) -> Value {
    let mut config = serde_json::to_value(&*s.config).unwrap_or(Value::Null);
    redact(&mut config);
    json!({
        "version": s.version,
        "loaded_at": rfc3339(s.loaded_at),
        "file": &*s.file,
        "routes": s.router.len(),
        "config": config,
    })
}

fn upstreams_view(s: &Snapshot) -> Value {
    let mut pools: Vec<Value> = s
        .pools
        .values()
        .map(|p| {
            let members: Vec<Value> = p
                .members()
                .members
                .iter()
                .map(|m| {
                    let (id, name) = match &m.source {
                        crate::upstream::Source::Registry(id) => (Some(id.as_str()), None),
                        crate::upstream::Source::Dns(name) => (None, Some(name.as_str())),
                        crate::upstream::Source::Static => (None, None),
                    };
                    json!({
                        "address": m.address,
                        "name": name,
                        "resolved": m.addr.to_string(),
                        "weight": m.weight,
                        "source": m.source_name(),
                        "id": id,
                        "tls": m.tls,
                        "health": if m.is_healthy() { "healthy" } else { "unhealthy" },
                        "circuit": m.circuit().as_str(),
                        "in_flight": m.inflight(),
                    })
                })
                .collect();
            json!({
                "name": &*p.name,
                "balance": p.balance,
                "health_checked": p.health.is_some(),
                "service": p.service,
                "healthy": p.healthy_count(),
                "members": members,
            })
        })
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    json!({ "version": s.version, "upstreams": pools })
}

/// Mutating endpoints need `admin.token_env` set and its token as the bearer token.
#[allow(clippy::result_large_err)] // the refusal is the response itself
fn authorized(snapshot: &Snapshot, auth: Option<&[u8]>) -> Result<(), Response<Vec<u8>>> {
    let Some(token) = snapshot.admin_token.clone() else {
        return Err(error(
            ErrorCode::Forbidden,
            "set admin.token_env to enable mutating admin endpoints",
        ));
    };
    let presented = auth
        .and_then(|a| a.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if !portico_plugins::constant_time::eq(presented, token.as_bytes()) {
        let mut r = error(ErrorCode::Unauthorized, "a valid bearer token is required");
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"portico-admin\""),
        );
        return Err(r);
    }
    Ok(())
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_string();
        let auth = req
            .headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let snapshot = self.reloader.store().load_full();
        match (method, path.as_str()) {
            (Method::GET, "/health") => json_response(StatusCode::OK, &json!({"status": "ok"})),
            (Method::GET, "/ready") => self.ready(&snapshot),
            (Method::GET, "/metrics") => {
                self.metrics.update_revocations(&self.revocations);
                self.metrics
                    .update_live(self.redis.as_ref().map(|l| l.status().is_ok()));
                let body = self.metrics.render();
                Response::builder()
                    .status(StatusCode::OK)
                    .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                    .header(http::header::CONTENT_LENGTH, body.len())
                    .body(body)
                    .unwrap_or_default()
            }
            (Method::GET, "/config") => json_response(StatusCode::OK, &config_view(&snapshot)),
            (Method::GET, "/status") => Response::builder()
                .status(StatusCode::OK)
                .header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")
                .header(http::header::CONTENT_LENGTH, crate::status_page::PAGE.len())
                .header(http::header::CACHE_CONTROL, "no-store")
                // The page's own script only: no external assets, nothing to frame it.
                .header(
                    http::header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
                )
                .body(crate::status_page::PAGE.as_bytes().to_vec())
                .unwrap_or_default(),
            (Method::GET, "/status.json") => json_response(
                StatusCode::OK,
                &crate::status_page::status(
                    &snapshot,
                    &self.metrics,
                    upstreams_view(&snapshot),
                    self.reloader.history(),
                ),
            ),
            (Method::GET, "/upstreams") => {
                json_response(StatusCode::OK, &upstreams_view(&snapshot))
            }
            (Method::POST, "/reload" | "/revocations") => {
                if let Err(refused) = authorized(&snapshot, auth.as_deref()) {
                    return refused;
                }
                if path == "/revocations" {
                    return self.revoke(session).await;
                }
                match self.reloader.reload(true).await {
                    Ok(ReloadOutcome::Applied { version, elapsed }) => json_response(
                        StatusCode::OK,
                        &json!({"status": "reloaded", "version": version, "elapsed_ms": elapsed.as_secs_f64() * 1000.0}),
                    ),
                    Ok(ReloadOutcome::Unchanged { version }) => json_response(
                        StatusCode::OK,
                        &json!({"status": "unchanged", "version": version}),
                    ),
                    Err(errors) => {
                        let list: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                        let mut body = error_body(
                            ErrorCode::BadRequest,
                            "the config was rejected; the running config keeps serving",
                        );
                        body["errors"] = json!(list);
                        body["version"] = json!(snapshot.version);
                        json_response(StatusCode::BAD_REQUEST, &body)
                    }
                }
            }
            (
                _,
                "/health" | "/ready" | "/metrics" | "/config" | "/upstreams" | "/reload"
                | "/revocations" | "/status" | "/status.json",
            ) => error(ErrorCode::MethodNotAllowed, "method not allowed"),
            _ => error(ErrorCode::RouteNotFound, "no such admin endpoint"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_inline_secrets_not_env_refs() {
        let mut v = json!({"set": {"Authorization": "Bearer abc", "X-Api-Key": "${env:KEY}", "X-Other": "fine"}, "token_env": "ADMIN"});
        redact(&mut v);
        assert_eq!(v["set"]["Authorization"], "[redacted]");
        assert_eq!(v["set"]["X-Api-Key"], "${env:KEY}");
        assert_eq!(v["set"]["X-Other"], "fine");
        assert_eq!(v["token_env"], "ADMIN");
    }
}

//! Micro-benchmarks of the per-request work Portico adds: route lookup (10 and 10k routes),
//! identity-header stripping, request-id generation, each auth check (JWT HS256 and EdDSA,
//! cached and not; Better Auth's signed cookie and compact cookie cache) and the local
//! rate-limit decision.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;
use http::Method;
use pingora::http::RequestHeader;
use portico::proxy::{identity, request_id};
use portico::router::{Match, MethodSet, PathMatch, RouteEntry, Router};
use portico_plugins::better_auth::{CookieCacheVerifier, TokenVerifier};
use portico_plugins::jwt::{JwtConfig, JwtPlugin};
use portico_plugins::rate_limit::gcra::LocalBuckets;
use portico_plugins::BuildContext;
use std::sync::Arc;

fn router(n: usize) -> Router<usize> {
    let mut entries: Vec<RouteEntry<usize>> = (0..n)
        .map(|i| RouteEntry {
            hosts: if i % 3 == 0 {
                vec![format!("h{i}.example.com")]
            } else {
                vec![]
            },
            methods: MethodSet::default(),
            path: if i % 2 == 0 {
                PathMatch::Prefix(format!("/svc{i}/api"))
            } else {
                PathMatch::Exact(format!("/svc{i}/exact"))
            },
            route: Arc::new(i),
        })
        .collect();
    entries.push(RouteEntry {
        hosts: vec![],
        methods: MethodSet::default(),
        path: PathMatch::Prefix("/".into()),
        route: Arc::new(usize::MAX),
    });
    Router::build(entries).expect("router")
}

fn bench_router(c: &mut Criterion) {
    for n in [10usize, 10_000] {
        let r = router(n);
        let path = format!("/svc{}/api/users/42", (n - 2) & !1);
        c.bench_function(&format!("router/prefix/{n}-routes"), |b| {
            b.iter(
                || match r.find(black_box("app.test"), &Method::GET, black_box(&path)) {
                    Match::Found(x) => **x,
                    _ => 0,
                },
            )
        });
    }
}

fn bench_strip(c: &mut Criterion) {
    let mut clean = RequestHeader::build("GET", b"/api/users", None).expect("header");
    for (k, v) in [
        ("host", "app.test"),
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("cookie", "a=b"),
        ("authorization", "Bearer x"),
    ] {
        clean.append_header(k, v).expect("header");
    }
    c.bench_function("identity/strip/clean-request", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            identity::strip,
            criterion::BatchSize::SmallInput,
        )
    });
    let mut spoofed = clean.clone();
    spoofed.append_header("X-User-Id", "evil").expect("header");
    spoofed
        .append_header("x_user_roles", "admin")
        .expect("header");
    c.bench_function("identity/strip/spoofed-request", |b| {
        b.iter_batched_ref(
            || spoofed.clone(),
            identity::strip,
            criterion::BatchSize::SmallInput,
        )
    });
}

fn bench_request_id(c: &mut Criterion) {
    c.bench_function("request_id/generate", |b| b.iter(request_id::generate));
    c.bench_function("request_id/validate", |b| {
        b.iter(|| request_id::is_valid(black_box(b"0123456789abcdef0123456789abcdef")))
    });
}

fn jwt_plugin(provider: serde_json::Value, cache_size: usize) -> JwtPlugin {
    let config: JwtConfig = serde_json::from_value(
        serde_json::json!({"providers": [provider], "cache_size": cache_size}),
    )
    .expect("jwt config");
    JwtPlugin::new(&config, &BuildContext::default()).expect("jwt plugin")
}

fn bench_auth(c: &mut Criterion) {
    let secret = "micro-bench-secret-micro-bench-secret!!";
    std::env::set_var("MICRO_BENCH_JWT_SECRET", secret);
    let claims = serde_json::json!({"sub": "user-1", "exp": 4_000_000_000u64, "roles": ["reader"]});
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token");
    let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/micro/keys/");
    let private = std::fs::read(format!("{keys}ed25519-private.pem")).expect("test key");
    let eddsa = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_pem(&private).expect("ed25519 key"),
    )
    .expect("token");
    let hs_provider =
        serde_json::json!({"algorithms": ["HS256"], "secret_env": "MICRO_BENCH_JWT_SECRET"});
    let ed_provider = serde_json::json!({"algorithms": ["EdDSA"], "public_key_files": [format!("{keys}ed25519-public.pem")]});
    for (name, provider, token) in [
        ("hs256", hs_provider, &hs256),
        ("eddsa", ed_provider, &eddsa),
    ] {
        for (cache, size) in [("uncached", 0), ("cached", 1000)] {
            let plugin = jwt_plugin(provider.clone(), size);
            c.bench_function(&format!("auth/jwt/{name}/{cache}"), |b| {
                b.iter(|| {
                    plugin
                        .verify_token(black_box(token))
                        .now_or_never()
                        .expect("no I/O")
                        .expect("valid")
                })
            });
        }
    }

    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/better-auth-1.7.25.json"))
            .expect("fixture");
    let ba_secret = fixture["secret"]
        .as_str()
        .expect("secret")
        .as_bytes()
        .to_vec();
    let cookie = fixture["session_token_set_cookie_value"]
        .as_str()
        .expect("cookie");
    let tokens = TokenVerifier::new(&ba_secret).expect("secret");
    c.bench_function("auth/better_auth/signed_cookie", |b| {
        b.iter(|| tokens.verify(black_box(cookie.as_bytes())).expect("valid"))
    });
    let compact = fixture["compact_cookie_cache"]["session_data"]
        .as_str()
        .expect("cache");
    let verifier = CookieCacheVerifier::compact(&ba_secret);
    // The capture's own time: its cache was valid then.
    let captured_ms = 1_795_300_740_000;
    c.bench_function("auth/better_auth/compact_cookie_cache", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(compact), "1", captured_ms)
                .now_or_never()
                .expect("no I/O")
                .expect("valid")
        })
    });
}

fn bench_rate_limit(c: &mut Criterion) {
    let buckets = LocalBuckets::new(std::time::Duration::from_micros(1), 1_000_000, 100_000);
    let mut key = 0u64;
    c.bench_function("rate_limit/local_decision", |b| {
        b.iter(|| {
            key = (key + 1) % 1000;
            buckets.check(black_box(key))
        })
    });
}

criterion_group!(
    benches,
    bench_router,
    bench_strip,
    bench_request_id,
    bench_auth,
    bench_rate_limit
);
criterion_main!(benches);

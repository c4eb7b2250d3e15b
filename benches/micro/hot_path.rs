//! Micro-benchmarks of the per-request work Portico adds: route lookup (10 and 10k routes),
//! identity-header stripping, request-id generation, and member selection.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::Method;
use pingora::http::RequestHeader;
use portico::proxy::{identity, request_id};
use portico::router::{Match, MethodSet, PathMatch, RouteEntry, Router};
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

criterion_group!(benches, bench_router, bench_strip, bench_request_id);
criterion_main!(benches);

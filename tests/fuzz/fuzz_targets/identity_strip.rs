//! Header names and values from the input: after stripping, no identity header is left, in
//! any spelling.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pingora::http::RequestHeader;
use portico::proxy::identity;

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = RequestHeader::build("GET", b"/", None) else {
        return;
    };
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }
    identity::strip(&mut req);
    for name in req.headers.keys() {
        assert!(
            !identity::is_identity_header(name.as_str().as_bytes()),
            "{name} survived"
        );
    }
});

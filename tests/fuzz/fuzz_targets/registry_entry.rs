//! The registry's fetch answer (Redis time, then instance fields), as any registering
//! program could have written it: parsed or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico::registry::parse_fetch;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let raw: Vec<String> = text.split('\n').map(str::to_string).collect();
    let _ = parse_fetch(&raw);
});

//! Header value templates (`${request_id}`, `${env:NAME}`, `$$`): compiled or refused.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico_plugins::template::Template;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Template::compile_with_env(text, |name| (name.len() < 8).then(|| "v".repeat(name.len())));
    }
});

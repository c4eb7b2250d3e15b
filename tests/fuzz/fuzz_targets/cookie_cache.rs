//! Better Auth's cookie cache (`session_data`) in its three secret-keyed strategies: any
//! input is a session or a refusal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico_plugins::better_auth::cookie_cache::Verifier;
use std::sync::LazyLock;

const SECRET: &[u8] = b"fuzzing-secret-fuzzing-secret-32b";
static VERIFIERS: LazyLock<[Verifier; 3]> = LazyLock::new(|| {
    [Verifier::compact(SECRET), Verifier::jwt(SECRET), Verifier::jwe(SECRET)]
});
static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().build().ok()
});

fuzz_target!(|data: &[u8]| {
    let (Ok(cookie), Some(rt)) = (std::str::from_utf8(data), RUNTIME.as_ref()) else {
        return;
    };
    for v in VERIFIERS.iter() {
        let _ = rt.block_on(v.verify(cookie, "1", 1_700_000_000_000));
    }
});

//! Better Auth's signed session cookie (`token.signature`, percent-encoded): any input
//! verifies or is refused with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico_plugins::better_auth::signed::TokenVerifier;
use std::sync::LazyLock;

static VERIFIER: LazyLock<Option<TokenVerifier>> =
    LazyLock::new(|| TokenVerifier::new(b"fuzzing-secret-fuzzing-secret-32b").ok());

fuzz_target!(|data: &[u8]| {
    if let Some(v) = VERIFIER.as_ref() {
        let _ = v.verify(data);
    }
});

//! A bearer token through the `jwt` plugin (header parsing, algorithm choice, HS256 check,
//! claims to identity): any input verifies or is refused with a reason.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico_plugins::env::Env;
use portico_plugins::jwt::{JwtConfig, JwtPlugin};
use portico_plugins::BuildContext;
use std::sync::LazyLock;

static PLUGIN: LazyLock<Option<JwtPlugin>> = LazyLock::new(|| {
    let config: JwtConfig = serde_json::from_str(
        r#"{"providers":[{"algorithms":["HS256"],"secret_env":"FUZZ_SECRET"}],"roles_claim":"roles"}"#,
    )
    .ok()?;
    let ctx = BuildContext {
        env: Env::Placeholders,
        ..BuildContext::default()
    };
    JwtPlugin::new(&config, &ctx).ok()
});
static RUNTIME: LazyLock<Option<tokio::runtime::Runtime>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().build().ok()
});

fuzz_target!(|data: &[u8]| {
    let (Ok(token), Some(plugin), Some(rt)) =
        (std::str::from_utf8(data), PLUGIN.as_ref(), RUNTIME.as_ref())
    else {
        return;
    };
    let _ = rt.block_on(plugin.verify_token(token));
});

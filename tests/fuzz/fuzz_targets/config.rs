//! YAML text → parsed config → compiled snapshot: any input is an error list or a snapshot,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use portico::config::load_str;
use portico::snapshot::{CompileEnv, Snapshot};
use portico_plugins::env::Env;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = load_str("fuzz.yaml".into(), text) else {
        return;
    };
    // Compiling resolves member host names and reads certificate and key files: keep the
    // fuzzer to addresses and away from the file system.
    let c = &loaded.config;
    let only_ips = c.upstreams.values().all(|u| {
        u.value
            .members
            .iter()
            .all(|m| m.value.address.parse::<std::net::SocketAddr>().is_ok())
    });
    let touches_files = c.listeners.iter().any(|l| l.value.tls.is_some())
        || text.contains("public_key_files")
        || c.access_log.path.is_some();
    if !only_ips || touches_files {
        return;
    }
    let env = CompileEnv {
        env: Env::Placeholders,
        ..CompileEnv::default()
    };
    let _ = Snapshot::compile(&loaded, 1, &env);
});

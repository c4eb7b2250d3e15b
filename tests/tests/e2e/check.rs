use crate::support::*;
use std::process::Command;

fn check(yaml: &str) -> (i32, String) {
    check_with(yaml, &[])
}

fn check_with(yaml: &str, flags: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(binary())
        .arg("check")
        .args(flags)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).replace(&path.display().to_string(), "bad.yaml");
    (out.status.code().unwrap_or(-1), text)
}

const GOOD: &str = "listeners:\n  - address: 127.0.0.1:8080\nupstreams:\n  p:\n    members:\n      - address: 127.0.0.1:9000\nroutes:\n  - name: r\n    match: { prefix: / }\n    upstream: p\n";

#[test]
fn check_reports_every_error_with_its_position() {
    assert_eq!(check(GOOD), (0, "ok\n".to_string()));
    let cases: &[(&str, &str)] = &[
        // Syntax.
        ("listeners:\n  - address: 127.0.0.1:80\n   bad: indent\n", "bad.yaml:3:4: while parsing a block collection"),
        // A wrong type.
        ("listeners:\n  - address: [\n", "bad.yaml:2:14: expected string scalar"),
        // Unknown field, at the field.
        ("listeners:\n  - address: 127.0.0.1:8080\n    colour: blue\n", "bad.yaml:3:5: unknown field `colour`"),
        // Wrong unit.
        (&GOOD.replace("routes:", "limits:\n  max_body_bytes: 3 parsecs\nroutes:"), "bad.yaml:8:19:"),
        // Unknown upstream: at the route's `upstream:` value.
        (&GOOD.replace("upstream: p", "upstream: q"), "bad.yaml:10:15: route `r` names unknown upstream `q`"),
        // A bad listener address.
        (&GOOD.replace("127.0.0.1:8080", "nowhere"), "bad.yaml:2:14: `nowhere` is not an IP:PORT address"),
        // A bad regex.
        (&GOOD.replace("{ prefix: / }", "{ regex: \"(\" }"), "bad.yaml:9:21: invalid regex"),
        // A bad member weight.
        (&GOOD.replace("address: 127.0.0.1:9000", "address: 127.0.0.1:9000\n        weight: 5000"), "bad.yaml:7:17: weight `5000` is not a whole number from 1 to 1000"),
        // A plugin template naming an unset env variable.
        (&GOOD.replace("upstream: p\n", "upstream: p\n    plugins:\n      - headers: { request: { set: { X-Key: \"${env:PORTICO_TEST_UNSET}\" } } }\n"), "bad.yaml:12:38: route `r`: headers: request: header `X-Key`: environment variable `PORTICO_TEST_UNSET` is not set"),
        // Errors inside a pool's or a plugin's config point at the key, not the entry.
        (&GOOD.replace("address: 127.0.0.1:9000", "address: 127.0.0.1:9000\n    retries:\n      attempts: 20"), "bad.yaml:8:7: upstream `p`: retries.attempts: is at most 10"),
        (&GOOD.replace("upstream: p\n", "upstream: p\n    plugins:\n      - rate_limit:\n          limits:\n            - { rate: 10/s, key: client_ip }\n            - { rate: 10/fortnight, key: client_ip }\n"), "bad.yaml:15:17: route `r`: rate_limit: rate `10/fortnight`"),
        // An auth policy with no auth plugin to apply it to.
        (&GOOD.replace("upstream: p\n", "upstream: p\n    auth: { roles: [admin] }\n"), "bad.yaml:11:11: route `r`: `auth` needs an auth plugin"),
        // Contradictory policy.
        (&GOOD.replace("upstream: p\n", "upstream: p\n    auth: { invalid_credentials: anonymous }\n    plugins:\n      - jwt: { providers: [ { algorithms: [EdDSA], jwks_url: \"http://127.0.0.1:1/jwks\" } ] }\n"), "bad.yaml:11:11: route `r`: `invalid_credentials: anonymous` needs `required: false`"),
        // A better_auth plugin that could never name a user.
        (&GOOD.replace("upstream: p\n", "upstream: p\n    plugins:\n      - better_auth: { secret_env: PATH }\n"), "bad.yaml:12:9: route `r`: better_auth: set `session_endpoint`, `cookie_cache` or both"),
    ];
    for (yaml, want) in cases {
        let (code, out) = check(yaml);
        assert_eq!(code, 1, "{yaml}\n{out}");
        assert!(
            out.lines().any(|l| l.starts_with(want)),
            "want `{want}`, got:\n{out}"
        );
    }
    // Several semantic errors are all reported, in file order.
    let two = GOOD
        .replace("upstream: p", "upstream: q")
        .replace("127.0.0.1:8080", "nowhere");
    let (code, out) = check(&two);
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines().next().unwrap().starts_with("bad.yaml:2:"),
        "{out}"
    );
}

#[test]
fn schema_is_json_schema() {
    let out = Command::new(binary()).arg("schema").output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["properties"]["routes"].is_object(), "{v}");
    assert!(v["properties"]["listeners"].is_object(), "{v}");
}

#[test]
fn example_configs_are_valid() {
    let conf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut n = 0;
    for entry in std::fs::read_dir(conf).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(binary())
                .arg("check")
                .arg("-c")
                .arg(&path)
                .env("PORTICO_ADMIN_TOKEN", "x")
                .env("PAYMENTS_API_KEY", "x")
                .env(
                    "BETTER_AUTH_SECRET",
                    "example-secret-0123456789abcdef0123456789",
                )
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stdout)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
}

#[test]
fn skip_env_checks_a_config_without_its_secrets() {
    let yaml = GOOD.replace(
        "upstream: p\n",
        "upstream: p\n    auth: {}\n    plugins:\n      - headers: { request: { set: { X-Key: \"${env:PORTICO_TEST_UNSET}\" } } }\n      - jwt: { providers: [ { algorithms: [HS256], secret_env: PORTICO_TEST_UNSET_SECRET } ] }\n",
    );
    let (code, out) = check(&yaml);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("PORTICO_TEST_UNSET"), "{out}");
    let (code, out) = check_with(&yaml, &["--skip-env"]);
    assert_eq!((code, out.trim()), (0, "ok"));
    // Everything but the values is still checked.
    let broken = yaml.replace("algorithms: [HS256]", "algorithms: [HS999]");
    let (code, out) = check_with(&broken, &["--skip-env"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("unknown algorithm `HS999`"), "{out}");
}

#[test]
fn schema_into_a_closed_pipe_exits_cleanly() {
    // `portico schema | head -c 0`: the reading end is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(binary())
        .arg("schema")
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

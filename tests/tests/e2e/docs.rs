//! The docs stand alone and lead to the code: every path the code map names exists, every
//! error code is documented, and nothing points outside the repository.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap()
}

/// The backticked words of `text` that look like repository paths.
fn named_paths(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| {
            let top = w.split('/').next().unwrap_or("");
            w.contains('/')
                && !w.contains(' ')
                && [
                    "gateway", "plugins", "tests", "vendor", "docs", "benches", "deploy", "conf",
                ]
                .contains(&top)
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn every_path_in_the_code_map_exists() {
    let map = read("docs/architecture.md");
    let paths = named_paths(&map);
    assert!(paths.len() > 20, "the map names the files: {paths:?}");
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !root().join(p.as_str()).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "named in docs/architecture.md but missing: {missing:?}"
    );
}

#[test]
fn every_error_code_is_documented() {
    let source = read("plugins/src/error_code.rs");
    let docs = read("docs/errors.md");
    // The codes are the string literals of `ErrorCode::as_str`.
    let codes: Vec<&str> = source
        .lines()
        .filter(|l| l.contains("=> \"") && l.contains("ErrorCode::"))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|c| c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .collect();
    assert_eq!(codes.len(), 14, "{codes:?}");
    for code in codes {
        assert!(
            docs.contains(&format!("`{code}`")),
            "docs/errors.md lacks `{code}`"
        );
    }
}

#[test]
fn nothing_points_outside_the_repository() {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !["target", "node_modules", ".git", "vendor"].contains(&name.as_ref()) {
                    walk(&path, out);
                }
            } else if name.ends_with(".rs") || name.ends_with(".md") || name.ends_with(".yaml") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&root(), &mut files);
    // Spelled in pieces, so this file does not match itself.
    let outside = [["SPEC", ".md"].concat(), ["..", "/shared"].concat()];
    let offenders: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            outside.iter().any(|o| text.contains(o.as_str()))
        })
        .collect();
    assert!(offenders.is_empty(), "{offenders:?}");
}

use super::locate::{locate, Seg};
use super::reparse::{parse_reusing, Previous};
use super::Config;
use serde_saphyr::{Location, Spanned};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: Arc<str>,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors against one file while a config is validated and compiled.
#[derive(Debug)]
pub struct Diagnostics {
    file: Arc<str>,
    /// The file's text, to find keys whose values carry no span.
    source: Arc<str>,
    errors: Vec<ConfigError>,
}

impl Diagnostics {
    pub fn new(file: Arc<str>, source: Arc<str>) -> Self {
        Diagnostics {
            file,
            source,
            errors: Vec::new(),
        }
    }

    /// At the key `path` (from the top of the file) when the file has it, else at `fallback`.
    pub fn at_path<T>(&mut self, fallback: &Spanned<T>, path: &[Seg], message: impl Into<String>) {
        match locate(&self.source, path) {
            Some((line, column)) => self.errors.push(ConfigError {
                file: self.file.clone(),
                line,
                column,
                message: message.into(),
            }),
            None => self.at_span(fallback, message),
        }
    }

    pub fn at(&mut self, location: Location, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: location.line().max(1),
            column: location.column().max(1),
            message: message.into(),
        });
    }

    pub fn at_span<T>(&mut self, spanned: &Spanned<T>, message: impl Into<String>) {
        self.at(spanned.referenced, message)
    }

    /// For errors that belong to the file as a whole.
    pub fn top(&mut self, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: 1,
            column: 1,
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            self.errors.sort_by_key(|e| (e.line, e.column));
            Err(ConfigErrors(self.errors))
        }
    }
}

/// A parsed config and the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: Arc<str>,
    pub config: Config,
    /// The file's text, so a reload can tell an unchanged file from a changed one.
    pub source: Arc<str>,
}

pub fn load_file(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_file_reusing(path, None)
}

/// Loads the file again for a reload: the routes whose text did not change since `previous`
/// are taken from it instead of being parsed again (see `reparse`).
pub fn reload_file(path: &Path, previous: &Previous<'_>) -> Result<Loaded, ConfigErrors> {
    load_file_reusing(path, Some(previous))
}

fn load_file_reusing(path: &Path, previous: Option<&Previous<'_>>) -> Result<Loaded, ConfigErrors> {
    let file: Arc<str> = path.display().to_string().into();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    let reparsed = previous.and_then(|p| parse_reusing(&text, p));
    let mut loaded = match reparsed {
        Some(config) => Loaded {
            file,
            config,
            source: text.into(),
        },
        None => load_str(file, &text)?,
    };
    if let Some(dir) = path.parent() {
        resolve_relative_paths(&mut loaded.config, dir);
    }
    Ok(loaded)
}

/// File paths in the config are relative to the config file, as in nginx, so a config works
/// from whatever directory the gateway is started in.
fn resolve_relative_paths(config: &mut Config, dir: &Path) {
    let fix = |p: &mut String| {
        if !p.is_empty() && Path::new(p.as_str()).is_relative() {
            *p = dir.join(p.as_str()).display().to_string();
        }
    };
    for l in &mut config.listeners {
        if let Some(tls) = &mut l.value.tls {
            for c in &mut tls.certificates {
                fix(&mut c.value.cert);
                fix(&mut c.value.key);
            }
        }
    }
    if let Some(p) = &mut config.access_log.path {
        fix(p);
    }
    for up in config.upstreams.values_mut() {
        if let Some(tls) = &mut up.value.tls {
            for p in [&mut tls.ca_file, &mut tls.client_cert, &mut tls.client_key]
                .into_iter()
                .flatten()
            {
                fix(p);
            }
        }
    }
}

pub fn load_str(file: Arc<str>, text: &str) -> Result<Loaded, ConfigErrors> {
    match serde_saphyr::from_str::<Config>(text) {
        Ok(config) => Ok(Loaded {
            file,
            config,
            source: text.into(),
        }),
        Err(e) => {
            let (line, column) = e
                .location()
                .map(|l| (l.line().max(1), l.column().max(1)))
                .unwrap_or((1, 1));
            Err(ConfigErrors(vec![ConfigError {
                file,
                line,
                column,
                message: plain_message(&e),
            }]))
        }
    }
}

/// The parser's message without the location and source snippet it appends: `check`
/// prints the location itself, once, in the `FILE:LINE:COL:` form.
fn plain_message(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().next().unwrap_or("invalid config").trim();
    // Drop a trailing " at line N, column M" the message may carry.
    let first = match first.rfind(" at line ") {
        Some(pos) => first[..pos].trim_end_matches(','),
        None => first,
    };
    // The parser's advice is for programs that embed it, not for the file's author.
    if let Some(rest) = first.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("`{key}` is given twice; keep one");
    }
    first.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ConfigError {
        load_str("t.yaml".into(), text).unwrap_err().0.remove(0)
    }

    #[test]
    fn unknown_field_points_at_it() {
        let e = err("listeners:\n  - address: 127.0.0.1:1\n    colour: red\n");
        assert_eq!((e.line, e.column), (3, 5), "{e}");
        assert!(e.message.contains("colour"), "{e}");
        assert!(!e.message.contains("line"), "{e}");
    }

    #[test]
    fn syntax_error_has_location() {
        let e = err("listeners: [\n");
        assert!(e.line >= 1, "{e}");
        assert!(e.to_string().starts_with("t.yaml:"), "{e}");
    }

    #[test]
    fn messages_speak_to_the_author() {
        let e = err("listeners: []\nlisteners: []\n");
        assert_eq!(e.message, "`listeners` is given twice; keep one");
        let e = err("listeners: []\nupstreams:\n  p:\n    members:\n      - { address: \"a:1\", weight: heavy }\n");
        assert!(
            e.message
                .contains("weight `\"heavy\"` is not a whole number from 1 to 1000"),
            "{e}"
        );
        let e = err("listeners: []\nlimits:\n  max_body_bytes: 1.5 parsecs\n");
        assert!(e.message.contains("invalid size `1.5 parsecs`"), "{e}");
    }

    #[test]
    fn event_interval_is_a_count_of_one_or_more() {
        let e = err("listeners: []\nserver:\n  event_interval: 0\n");
        assert_eq!((e.line, e.column), (3, 3), "{e}");
        assert!(e.message.contains("expected a nonzero u32"), "{e}");
        let loaded = load_str(
            "t.yaml".into(),
            "listeners: []\nserver: { event_interval: 4 }\n",
        )
        .unwrap();
        assert_eq!(
            loaded.config.server.event_interval.map(|n| n.get()),
            Some(4)
        );
    }

    #[test]
    fn bad_unit() {
        let e = err("listeners: []\nlimits:\n  max_body_bytes: 10 parsecs\n");
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("parsecs"), "{e}");
    }
}

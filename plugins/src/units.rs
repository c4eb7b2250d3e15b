//! Human-friendly units in the config file: durations (`250ms`, `2s`, `1m30s`) and sizes
//! (`512`, `64KiB`, `10MiB`, `1GB`).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A number with an optional fraction, then a unit from `units` (case-sensitive), possibly
/// repeated (`1m30s`) when `repeat`. Answers the total in the units' base (ns or bytes).
/// One grammar serves the parser and the JSON Schema ([`pattern`]), so an editor that
/// validates against the schema agrees with `portico check`.
fn parse_with_units(text: &str, units: &[(&str, f64)], repeat: bool) -> Option<f64> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let valid_number = !number.is_empty()
            && !number.starts_with('.')
            && !number.ends_with('.')
            && number.matches('.').count() <= 1;
        if !valid_number {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let (_, mult) = units.iter().find(|(u, _)| *u == unit)?;
        total += value * mult;
        parts += 1;
        rest = after.trim_start();
        if !repeat && !rest.is_empty() {
            return None;
        }
    }
    (parts > 0).then_some(total)
}

/// The JSON Schema pattern of [`parse_with_units`] for the same table.
fn pattern(units: &[(&str, f64)], repeat: bool) -> String {
    let mut names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
    // Longest first, so `ms` is tried before `m` and `KiB` before `K`.
    names.sort_by_key(|u| std::cmp::Reverse(u.len()));
    let alternatives = names
        .iter()
        .map(|u| {
            if u.is_empty() {
                String::new()
            } else {
                regex_escape(u)
            }
        })
        .collect::<Vec<_>>()
        .join("|");
    let one = format!("[0-9]+(\\.[0-9]+)?\\s*({alternatives})");
    if repeat {
        format!("^\\s*({one}\\s*)+$")
    } else {
        format!("^\\s*{one}\\s*$")
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

/// Duration units, in nanoseconds.
const DURATION_UNITS: &[(&str, f64)] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("h", 3600e9),
    ("d", 86400e9),
];

/// Size units, in bytes: binary (`KiB`, and nginx's `k`/`K`), decimal (`KB`, `kB`).
const SIZE_UNITS: &[(&str, f64)] = &[
    ("", 1.0),
    ("B", 1.0),
    ("k", 1024.0),
    ("K", 1024.0),
    ("KiB", 1024.0),
    ("m", 1048576.0),
    ("M", 1048576.0),
    ("MiB", 1048576.0),
    ("g", 1073741824.0),
    ("G", 1073741824.0),
    ("GiB", 1073741824.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
];

/// A duration written as text, e.g. `2s`, `250ms`, `1m30s`, `1.5s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        parse_with_units(text, DURATION_UNITS, true)
            .filter(|ns| *ns < u64::MAX as f64)
            .map(|ns| Duration(std::time::Duration::from_nanos(ns as u64)))
            .ok_or_else(|| {
                format!(
                    "invalid duration `{text}`; write e.g. `500ms`, `2s`, `1.5s`, `1m30s` (units: ns, us, ms, s, m, h, d)"
                )
            })
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).map_err(de::Error::custom)
    }
}

impl Serialize for Duration {
    /// Whole seconds as `Ns`, else whole milliseconds as `Nms`, else `Nns`: text the parser
    /// reads back to the same value.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else if d.subsec_nanos().is_multiple_of(1_000_000) {
            format!("{}ms", d.as_millis())
        } else {
            format!("{}ns", d.as_nanos())
        };
        s.serialize_str(&text)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration such as `500ms`, `2s`, `1.5s`, `1m30s` (units: ns, us, ms, s, m, h, d).",
            "pattern": pattern(DURATION_UNITS, true)
        })
    }
}

/// A size in bytes, written as a number or with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`; `k`, `m`, `g` as nginx reads them, 1024-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }
    pub fn get(self) -> u64 {
        self.0
    }
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let bytes = parse_with_units(text, SIZE_UNITS, false).ok_or_else(|| {
            format!(
                "invalid size `{text}`; write e.g. `512`, `64KiB`, `1.5MiB`, `10MB` (units: B, KiB, MiB, GiB, KB, MB, GB, k, m, g)"
            )
        })?;
        if bytes >= u64::MAX as f64 {
            return Err(format!("size `{text}` is too large"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 512, \"64KiB\" or \"10MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ByteSize, E> {
                ByteSize::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a number, or text such as `64KiB`, `1.5MiB`, `10MB`.",
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": pattern(SIZE_UNITS, false)}
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("512").unwrap().get(), 512);
        assert_eq!(ByteSize::parse("64KiB").unwrap().get(), 65536);
        assert_eq!(ByteSize::parse("10 MiB").unwrap().get(), 10 << 20);
        assert_eq!(ByteSize::parse("1GB").unwrap().get(), 1_000_000_000);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("MiB").is_err());
        assert_eq!(ByteSize::parse("1.5MiB").unwrap().get(), 3 << 19);
        assert_eq!(
            ByteSize::parse("10k").unwrap(),
            ByteSize::parse("10K").unwrap()
        );
    }

    #[test]
    fn durations() {
        let d: Duration = serde_json::from_str("\"1m30s\"").unwrap();
        assert_eq!(d.get().as_secs(), 90);
        assert_eq!(Duration::parse("1.5s").unwrap().get().as_millis(), 1500);
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
        for d in ["1.5s", "250ms", "2h", "90s", "1ns"] {
            let v = Duration::parse(d).unwrap();
            let text = serde_json::to_value(v).unwrap();
            assert_eq!(Duration::parse(text.as_str().unwrap()).unwrap(), v, "{d}");
        }
    }

    /// The schema's patterns accept exactly what the parsers accept.
    #[test]
    fn schema_and_parser_agree() {
        let durations = regex::Regex::new(&pattern(DURATION_UNITS, true)).unwrap();
        let sizes = regex::Regex::new(&pattern(SIZE_UNITS, false)).unwrap();
        let samples = [
            "1.5s",
            "10 sec",
            "1w",
            "10s",
            "1m30s",
            "1m 30s",
            "250ms",
            ".5s",
            "5.s",
            "1.2.3s",
            "10",
            "10K",
            "10k",
            "1.5MiB",
            ".5MiB",
            "10 MiB",
            "10MB",
            "10kB",
            "1GB",
            "12 parsecs",
            "MiB",
            "",
            " 2s ",
            "3d",
            "1h30m",
            "7 ms",
            "1e3",
            "-1s",
            "10KiB10KiB",
        ];
        for s in samples {
            assert_eq!(
                durations.is_match(s),
                Duration::parse(s).is_ok(),
                "duration `{s}`"
            );
            assert_eq!(sizes.is_match(s), ByteSize::parse(s).is_ok(), "size `{s}`");
        }
    }
}

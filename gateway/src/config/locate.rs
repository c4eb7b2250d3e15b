//! Finds where a key path (`upstreams.api.retries.attempts`) is in a YAML text, so an error
//! found after deserializing — inside a pool's or a plugin's config, whose fields carry no
//! spans — still points at the exact key.

use serde_saphyr::granit_parser::{Event, Parser};

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    /// Parses a dotted path whose numeric parts are sequence indexes: `limits.0.rate`.
    pub fn parse_dotted(path: &str) -> Vec<Seg> {
        path.split('.')
            .filter(|s| !s.is_empty())
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Key(s.to_string()),
            })
            .collect()
    }
}

/// The line and column (both from 1) of the node at `path` — of its key, for a mapping
/// entry — or `None` when the text has no such node.
pub fn locate(source: &str, path: &[Seg]) -> Option<(u64, u64)> {
    let mut events = Parser::new_from_str(source)
        .filter_map(Result::ok)
        .map(|(e, span)| {
            let at = (span.start.line() as u64, span.start.col() as u64 + 1);
            (e, at)
        });
    // Skip to the document's root node.
    loop {
        match events.next()? {
            (Event::StreamStart | Event::DocumentStart(..), _) => continue,
            (first, at) => return walk(&mut events, first, at, path),
        }
    }
}

type Located<'a> = (Event<'a>, (u64, u64));

/// `node` (already read) is the current node; follows `path` into it.
fn walk<'a>(
    events: &mut impl Iterator<Item = Located<'a>>,
    node: Event<'a>,
    at: (u64, u64),
    path: &[Seg],
) -> Option<(u64, u64)> {
    let Some((step, rest)) = path.split_first() else {
        return Some(at);
    };
    match (node, step) {
        (Event::MappingStart(..), Seg::Key(want)) => loop {
            let (key, key_at) = events.next()?;
            let key = match key {
                Event::MappingEnd => return None,
                Event::Scalar(text, ..) => Some(text),
                other => {
                    skip(events, &other)?;
                    None
                }
            };
            let (value, value_at) = events.next()?;
            if key.as_deref() == Some(want.as_str()) {
                return if rest.is_empty() {
                    Some(key_at)
                } else {
                    walk(events, value, value_at, rest)
                };
            }
            skip(events, &value)?;
        },
        (Event::SequenceStart(..), Seg::Index(want)) => {
            let mut index = 0;
            loop {
                let (item, item_at) = events.next()?;
                if matches!(item, Event::SequenceEnd) {
                    return None;
                }
                if index == *want {
                    return walk(events, item, item_at, rest);
                }
                skip(events, &item)?;
                index += 1;
            }
        }
        _ => None,
    }
}

/// Consumes the rest of a node whose first event was `first`.
fn skip<'a>(events: &mut impl Iterator<Item = Located<'a>>, first: &Event<'a>) -> Option<()> {
    if !matches!(first, Event::MappingStart(..) | Event::SequenceStart(..)) {
        return Some(());
    }
    let mut depth = 1usize;
    while depth > 0 {
        match events.next()?.0 {
            Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
            Event::MappingEnd | Event::SequenceEnd => depth -= 1,
            _ => {}
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "upstreams:\n  api:\n    members: [{address: a}, {address: b}]\n    retries:\n      attempts: 20\nroutes:\n  - name: r\n    plugins:\n      - rate_limit:\n          limits:\n            - rate: 10/s\n            - rate: 5/fortnight\n";

    fn at(path: &str) -> Option<(u64, u64)> {
        locate(TEXT, &Seg::parse_dotted(path))
    }

    #[test]
    fn finds_nested_keys_and_items() {
        assert_eq!(at("upstreams.api.retries.attempts"), Some((5, 7)));
        assert_eq!(at("upstreams.api.members.1"), Some((3, 29)));
        assert_eq!(
            at("routes.0.plugins.0.rate_limit.limits.1.rate"),
            Some((12, 15))
        );
        assert_eq!(at("routes.0.name"), Some((7, 5)));
    }

    #[test]
    fn a_missing_path_is_none() {
        assert_eq!(at("upstreams.web"), None);
        assert_eq!(at("routes.3"), None);
        assert_eq!(at("upstreams.api.retries.attempts.deeper"), None);
        assert_eq!(locate("[unclosed", &Seg::parse_dotted("a")), None);
    }
}

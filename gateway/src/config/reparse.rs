//! A reload parses again only the routes whose text changed.
//!
//! Parsing is nearly all of a large config's reload (about 55k instructions per route), and an
//! edit touches a route or two. So the `routes:` block is cut into its items; an item whose
//! text and first line are those of an item of the running config's file takes that item's
//! parsed route (locations included, since the line is the same), the others are parsed
//! alone, each at its own line, and the rest of the file is parsed with the block emptied.
//!
//! Whatever the cut cannot be sure of is parsed as one file, as before: an anchor anywhere (an
//! item could then depend on text outside it), a `routes` key that is not a plain `routes:`
//! line at column 0 followed by block-style items, an item or a rest that does not parse on
//! its own (the whole file's parse then reports the error, worded as always), or so many
//! moved items that parsing them one by one would cost more than the whole file.

use super::{Config, RouteConfig};
use serde::Deserialize;
use serde_saphyr::Spanned;

/// The running config's file and what it parsed into.
pub struct Previous<'a> {
    pub source: &'a str,
    pub config: &'a Config,
}

/// Parses `text` reusing the routes of `previous` whose text did not change, or answers `None`
/// when it cannot be sure to give what a parse of the whole file gives.
pub fn parse_reusing(text: &str, previous: &Previous<'_>) -> Option<Config> {
    let cut = Cut::of(text)?;
    let old = Cut::of(previous.source)?;
    let old_routes = &previous.config.routes;
    if old.items.len() != old_routes.len()
        || !old.items.iter().zip(old_routes).all(|(item, route)| {
            let line = route.referenced.line();
            line >= item.line as u64 && line < item.end_line as u64
        })
    {
        // The running config was not parsed the way this cut reads its file.
        return None;
    }

    let mut reused = Vec::with_capacity(cut.items.len());
    let mut olds = old.items.iter().zip(old_routes).peekable();
    for item in &cut.items {
        while olds.next_if(|(o, _)| o.line < item.line).is_some() {}
        let same = olds.next_if(|(o, _)| o.line == item.line && o.text == item.text);
        reused.push(same.map(|(_, route)| route));
    }
    // The items that are not reused are parsed in runs of neighbours, each run preceded by as
    // many empty lines as its first line's number: past this many, scanning them costs more
    // than parsing the whole file would.
    let padding: usize = runs(&reused)
        .map(|run| cut.items[run.start].line as usize)
        .sum();
    if padding > PADDING_LINES_PER_LINE * cut.lines {
        return None;
    }

    let mut config: Config = serde_saphyr::from_str(&cut.rest()).ok()?;
    // Only the marker route, so the key's line was read as the key: a line at column 0 can
    // also be inside a quoted string that the parser lets run over several lines.
    match config.routes.as_slice() {
        [marker] if marker.value.name.value == MARKER_NAME => config.routes.clear(),
        _ => return None,
    }
    config.routes.reserve_exact(cut.items.len());
    let mut padded = String::new();
    let mut next = 0;
    for run in runs(&reused) {
        config.routes.extend(
            reused[next..run.start]
                .iter()
                .flatten()
                .map(|r| (*r).clone()),
        );
        let parsed = parse_alone(&cut.items[run.clone()], &mut padded)?;
        config.routes.extend(parsed);
        next = run.end;
    }
    config
        .routes
        .extend(reused[next..].iter().flatten().map(|r| (*r).clone()));
    Some(config)
}

/// The ranges of neighbouring items that no running route stands for.
fn runs<T>(reused: &[Option<T>]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let start = at + reused[at..].iter().position(Option::is_none)?;
        let end = start + reused[start..].iter().take_while(|r| r.is_none()).count();
        at = end;
        Some(start..end)
    })
}

/// Padding lines scanned per line of the file before a whole parse is the cheaper one: an
/// empty line costs the parser about a hundredth of what a one-line route does.
const PADDING_LINES_PER_LINE: usize = 8;

/// The route that stands for the block in the rest of the file.
const MARKER_NAME: &str = "portico-routes-parsed-one-by-one";
const MARKER_LINE: &str = "routes: [{ name: portico-routes-parsed-one-by-one, match: {} }]\n";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Routes {
    routes: Vec<Spanned<RouteConfig>>,
}

/// Parses neighbouring items at their own lines and columns: empty lines up to the line
/// before the first, which holds the `routes:` key.
fn parse_alone(items: &[Item<'_>], padded: &mut String) -> Option<Vec<Spanned<RouteConfig>>> {
    let (first, _) = items.split_first()?;
    padded.clear();
    padded.extend(std::iter::repeat_n('\n', first.line as usize - 2));
    padded.push_str("routes:\n");
    for item in items {
        padded.push_str(item.text);
    }
    let parsed: Routes = serde_saphyr::from_str(padded).ok()?;
    (parsed.routes.len() == items.len()).then_some(parsed.routes)
}

/// The `routes:` block of a file, cut into its items.
struct Cut<'a> {
    text: &'a str,
    /// The file's number of lines.
    lines: usize,
    /// Where the key's line starts, and where the first line after the block starts.
    key_at: usize,
    after: usize,
    /// The lines of the block after the key's.
    block_lines: usize,
    items: Vec<Item<'a>>,
}

/// One item of the block: from the line of its `-` to the next item or the block's end,
/// comments and empty lines included.
struct Item<'a> {
    /// Its first line, from 1.
    line: u32,
    /// The line after its last.
    end_line: u32,
    text: &'a str,
}

impl<'a> Cut<'a> {
    fn of(text: &'a str) -> Option<Cut<'a>> {
        if has_anchor(text) {
            return None;
        }
        let lines = lines_of(text);
        let mut key = None;
        for (index, line) in lines.iter().enumerate() {
            match top_level_key(line.content) {
                TopKey::Routes if key.is_none() => key = Some(index),
                TopKey::Routes | TopKey::Unsure => return None,
                TopKey::Other => {}
            }
        }
        let key = key?;

        // The line index of each item's `-`; an item runs to the next one's, the last to `end`.
        let mut starts: Vec<usize> = Vec::new();
        let mut indent = None;
        let mut end = lines.len();
        for (index, line) in lines.iter().enumerate().skip(key + 1) {
            let at = match line_kind(line.content) {
                LineKind::Content(at) => at,
                LineKind::Blank => continue, // part of the item it follows
                LineKind::Unsure => return None,
            };
            let n = *indent.get_or_insert(at);
            if at == n && is_item_start(&line.content[at..]) {
                starts.push(index);
            } else if at <= n {
                if at != 0 || starts.is_empty() || !is_plain_key(line.content) {
                    return None;
                }
                end = index;
                break;
            }
        }
        if starts.is_empty() {
            return None;
        }

        let start_of = |index: usize| lines.get(index).map_or(text.len(), |l| l.start);
        let ends = starts.iter().skip(1).copied().chain([end]);
        let items = starts
            .iter()
            .zip(ends)
            .map(|(&first, last)| Item {
                line: first as u32 + 1,
                end_line: last as u32 + 1,
                text: &text[start_of(first)..start_of(last)],
            })
            .collect();
        Some(Cut {
            text,
            lines: lines.len(),
            key_at: start_of(key),
            after: start_of(end),
            block_lines: end - key - 1,
            items,
        })
    }

    /// The file with a marker route on the key's line and the block's lines empty, so every
    /// other line keeps its number.
    fn rest(&self) -> String {
        let kept = self.text.len() - (self.after - self.key_at);
        let mut rest = String::with_capacity(kept + MARKER_LINE.len() + self.block_lines);
        rest.push_str(&self.text[..self.key_at]);
        rest.push_str(MARKER_LINE);
        rest.extend(std::iter::repeat_n('\n', self.block_lines));
        rest.push_str(&self.text[self.after..]);
        rest
    }
}

struct Line<'a> {
    /// Byte offset of its first character.
    start: usize,
    /// Without the line break.
    content: &'a str,
}

fn lines_of(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut start = 0;
    for content in text.split_inclusive('\n') {
        lines.push(Line {
            start,
            content: content.trim_end_matches(['\n', '\r']),
        });
        start += content.len();
    }
    lines
}

enum TopKey {
    /// `routes:`, alone on its line or with a comment.
    Routes,
    /// A line at column 0 that might be a `routes` key written some other way.
    Unsure,
    Other,
}

fn top_level_key(line: &str) -> TopKey {
    if line.starts_with('%') {
        return TopKey::Unsure; // a directive: `%TAG` changes what tags in the items mean
    }
    if line.starts_with(' ')
        || !line
            .trim_start_matches(['"', '\'', '?', ' '])
            .starts_with("routes")
    {
        return TopKey::Other;
    }
    match line.strip_prefix("routes:") {
        Some("") => TopKey::Routes,
        Some(after) if after.starts_with([' ', '\t']) => {
            let after = after.trim_start();
            if after.is_empty() || after.starts_with('#') {
                TopKey::Routes
            } else {
                TopKey::Unsure
            }
        }
        _ => TopKey::Unsure,
    }
}

enum LineKind {
    /// Empty, or a comment.
    Blank,
    /// Content from this column.
    Content(usize),
    /// Content indented with tabs as well as spaces.
    Unsure,
}

fn line_kind(line: &str) -> LineKind {
    let at = line.len() - line.trim_start_matches(' ').len();
    match line[at..].chars().next() {
        None | Some('#') => LineKind::Blank,
        Some('\t') if line[at..].trim().is_empty() => LineKind::Blank,
        Some('\t') => LineKind::Unsure,
        Some(_) => LineKind::Content(at),
    }
}

/// `name:` at the start of a line, as the top-level key after the block is written.
fn is_plain_key(line: &str) -> bool {
    let name = line.trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    name.len() != line.len() && (name == ":" || name.starts_with(": ") || name.starts_with(":\t"))
}

fn is_item_start(content: &str) -> bool {
    content == "-" || content.starts_with("- ") || content.starts_with("-\t")
}

/// Whether `&` may start an anchor somewhere: a `&` at the start of a token. Conservative: one
/// in a quoted string after a space counts too, and only costs the whole file's parse.
fn has_anchor(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices('&').any(|(i, _)| {
        i == 0
            || matches!(
                bytes[i - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'[' | b'{' | b',' | b'-' | b':' | b'?'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Config {
        match serde_saphyr::from_str(text) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// What a config says, locations included; the spans' character offsets (which the
    /// gateway never reads, and which an item parsed alone does not share) left out.
    fn said(config: &Config) -> String {
        let text = format!("{config:#?}");
        let mut kept = Vec::new();
        let mut in_span: Option<usize> = None;
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            match in_span {
                Some(at) => {
                    if indent == at && line.trim_start().starts_with('}') {
                        in_span = None;
                    }
                }
                None if line.trim_start().starts_with("span:") => in_span = Some(indent),
                None => kept.push(line),
            }
        }
        kept.join("\n")
    }

    fn against(new: &str, source: &str, config: &Config) -> Option<Config> {
        parse_reusing(new, &Previous { source, config })
    }

    /// Reparsing `new` against `old` gives what parsing `new` whole gives.
    fn reparsed(old: &str, new: &str) -> Option<Config> {
        let got = against(new, old, &full(old))?;
        assert_eq!(said(&got), said(&full(new)), "reparsing:\n{new}");
        Some(got)
    }

    const BASE: &str = "\
listeners:
  - address: 127.0.0.1:8080
upstreams:
  api:
    members: [{ address: 127.0.0.1:9000 }]
# the routes
routes:
  - name: one
    match: { prefix: /one }
    upstream: api

  # a comment inside
  - name: two
    match:
      prefix: /two
    plugins:
      - respond:
          status: 200
          body: |+
            kept


  - { name: three, match: { exact: /three }, upstream: api }
admin:
  address: 127.0.0.1:9901
";

    #[test]
    fn spans_are_left_out_of_the_comparison_only() {
        let text = said(&full(BASE));
        assert!(text.contains("line: 13"), "{text}");
        assert!(!text.contains("offset"), "{text}");
        assert_ne!(
            said(&full(BASE)),
            said(&full(&BASE.replace("/two", "/deux")))
        );
    }

    #[test]
    fn edits_give_what_a_whole_parse_gives() {
        let edits = [
            BASE.to_string(),
            BASE.replace("/two", "/deux"),
            BASE.replace("/three", "/trois"),
            BASE.replace(
                "upstream: api\n\n",
                "upstream: api\n    strip_prefix: true\n\n",
            ),
            format!("{BASE}# appended\n"),
            BASE.replace(
                "routes:\n",
                "routes:\n  - { name: zero, match: { exact: /0 }, upstream: api }\n",
            ),
            BASE.replace(
                "admin:",
                "  - { name: four, match: { exact: /4 }, upstream: api }\nadmin:",
            ),
            BASE.replace(
                "  - { name: three, match: { exact: /three }, upstream: api }\n",
                "",
            ),
            BASE.replace("kept\n\n\n", "kept\n\n\n\n"),
            // A `&` that cannot start an anchor.
            BASE.replace("kept\n", "a=1&b=2\n"),
            BASE.replace("127.0.0.1:9901", "127.0.0.1:9902"),
        ];
        for new in &edits {
            assert!(reparsed(BASE, new).is_some(), "not reparsed:\n{new}");
        }
        // Items at column 0, and Windows line breaks.
        let flush = "listeners: []\nroutes:\n- name: one\n  match: { exact: /1 }\n- name: two\n  match: { exact: /2 }\n";
        assert!(reparsed(flush, &flush.replace("/2", "/two")).is_some());
        let crlf = BASE.replace('\n', "\r\n");
        assert!(reparsed(&crlf, &crlf.replace("/one", "/1")).is_some());
    }

    #[test]
    fn routes_that_moved_are_parsed_again_in_one_run() {
        let mut text = String::from("listeners: []\nroutes:\n");
        for i in 0..200 {
            text.push_str(&format!(
                "  - {{ name: r{i}, match: {{ prefix: /r{i} }} }}\n"
            ));
        }
        assert!(reparsed(&text, &text.replace("/r150 ", "/edited ")).is_some());
        assert!(reparsed(&text, &format!("# moved\n{text}")).is_some());
        let edited_every_third = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                if i % 3 == 0 {
                    l.replace("} }", "}, strip_prefix: true }")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        // Runs of one route, each preceded by its line's worth of padding: parsed whole.
        assert!(reparsed(&text, &edited_every_third).is_none());
    }

    #[test]
    fn an_unchanged_item_takes_the_running_route() {
        let mut previous = full(BASE);
        previous.routes[0].value.strip_prefix = true; // what the file does not say
        previous.routes[1].value.strip_prefix = true;
        let new = BASE.replace("/two", "/deux");
        let got = against(&new, BASE, &previous).map(|c| {
            c.routes
                .iter()
                .map(|r| r.value.strip_prefix)
                .collect::<Vec<_>>()
        });
        assert_eq!(got, Some(vec![true, false, false]));
    }

    #[test]
    fn what_the_cut_cannot_be_sure_of_is_parsed_whole() {
        let unsure = [
            // An anchor: an item could depend on text outside it.
            BASE.replace("members: [", "members: &m ["),
            // A second routes key, quoted or not; a flow-style block; a directive.
            format!("{BASE}\"routes\": []\n"),
            BASE.replace("routes:\n", "routes: # the\n")
                .replace("admin:", "routes: []\nadmin:"),
            BASE.replace("routes:\n  - name: one", "routes: [ { name: one")
                .replace("    upstream: api\n\n", "    upstream: api }]\n\n"),
            format!("%YAML 1.2\n---\n{BASE}"),
            // A route that does not parse alone, or at all.
            BASE.replace("/two", "/two\n  colour: red"),
            BASE.replace("name: one", "name: one\n    colour: red"),
            // An indented line ends the block.
            BASE.replace("admin:", " stray: 1\nadmin:"),
        ];
        for new in &unsure {
            let previous = full(BASE);
            let got = against(new, BASE, &previous);
            assert!(got.is_none(), "reparsed:\n{new}");
        }
    }

    #[test]
    fn a_running_config_the_cut_does_not_match_is_not_reused() {
        // Two routes in the file, three in the config said to come from it.
        let mut previous = full(BASE);
        let extra = previous.routes[0].clone();
        previous.routes.push(extra);
        let got = against(BASE, BASE, &previous);
        assert!(got.is_none());
    }

    #[test]
    fn a_quoted_string_cannot_hide_the_routes_key() {
        // The parser lets a quoted string run over lines at column 0, so this `routes:` line
        // is inside a trusted proxy's address, not a key.
        let text = "listeners: []\ntrusted_proxies: [\"10.0.0.1\nroutes:\n  - { name: a, match: { exact: /a } }\nadmin: x\", \"10.0.0.2\"]\n";
        assert!(full(text).routes.is_empty());
        assert!(Cut::of(text).is_some());
        let previous = full(BASE);
        let got = against(text, BASE, &previous);
        assert!(got.is_none());
    }
}

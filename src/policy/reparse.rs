//! Parsing again only the routes an edit touched.
//!
//! A large policy kept in one file is mostly its `routes:` list, and an edit
//! changes a few of its items. Parsing the whole file again costs tens of
//! milliseconds at thousands of routes; parsing the changed items costs
//! microseconds. This finds the items that differ between the last text and
//! the new one, parses just those lines, and splices the result into the
//! routes parsed last time.
//!
//! It is a shortcut that must give exactly what a full parse gives, so it
//! only runs where that is plain from the text, and any doubt means "parse
//! the whole file":
//! - the last parse of the file was one document with no problems;
//! - the file has one top-level `routes:` key whose items are a block list
//!   (`- ` at one indent), and the lines that look like items are as many as
//!   the routes parsed last time;
//! - the edit lies within that list, and starts and ends at the same item
//!   boundaries in the old and the new text;
//! - neither the old nor the new lines of the changed items hold a `&`
//!   (a YAML anchor there could be used elsewhere in the file);
//! - the new lines parse on their own as routes, with no unknown key.
//!
//! Positions are not part of the parse (errors find theirs in the text, see
//! `locate`), so a spliced parse reports problems as a full one does; and a
//! problem in the new lines always takes the full parse, which reports it.

use std::ops::Range;

use super::raw::{PolicyFile, Route};

/// The `routes:` list of a file, as found in its text.
#[derive(Debug, PartialEq, Eq)]
struct RoutesBlock {
    /// Byte offset of the line after `routes:`.
    start: usize,
    /// Byte offset of each item's first line (`- ` at the items' indent).
    items: Vec<usize>,
    /// Byte offset where the list ends: the next top-level line, or the end.
    end: usize,
}

/// Which of the routes parsed from `old` to replace, and with what, for
/// `new`'s routes: `parsed.routes.splice(range, fresh)`. `None` when that
/// can't be done surely, and the file must be parsed whole.
pub(crate) fn routes(old: &str, new: &str, parsed: &PolicyFile) -> Option<(Range<usize>, Vec<Route>)> {
    let before = routes_block(old)?;
    let after = routes_block(new)?;
    if before.items.len() != parsed.routes.len() {
        return None;
    }
    // The changed bytes: what is not common prefix or common suffix.
    let prefix = old.bytes().zip(new.bytes()).take_while(|(a, b)| a == b).count();
    let max_suffix = old.len().min(new.len()) - prefix;
    let suffix = old.bytes().rev().zip(new.bytes().rev()).take(max_suffix).take_while(|(a, b)| a == b).count();
    // The items around the change: from the last item starting before it
    // (or the list's start) to the first starting after it (or the list's
    // end). An item starting where the change starts is in it.
    let span = |block: &RoutesBlock, text: &str| -> Option<(usize, usize, usize, usize)> {
        let changed_end = text.len() - suffix;
        if prefix < block.start || changed_end > block.end {
            return None;
        }
        let (first, start) = match block.items.iter().rposition(|&s| s < prefix) {
            Some(i) => (i, block.items[i]),
            None => (0, block.start),
        };
        let last = (block.items.iter()).position(|&s| s >= changed_end && s > start).unwrap_or(block.items.len());
        let end = block.items.get(last).copied().unwrap_or(block.end);
        Some((start, first, last, end))
    };
    let (start, first, old_last, old_end) = span(&before, old)?;
    let (new_start, new_first, new_last, new_end) = span(&after, new)?;
    // The same start (within the common prefix) and the same end (within
    // the common suffix) in both texts.
    if new_start != start || new_first != first || old.len() - old_end != new.len() - new_end {
        return None;
    }
    let (old_lines, new_lines) = (&old[start..old_end], &new[start..new_end]);
    if old_lines.contains('&') || new_lines.contains('&') {
        return None;
    }
    let fresh = parse_routes(new_lines)?;
    if fresh.len() != new_last - new_first {
        return None;
    }
    Some((first..old_last, fresh))
}

/// Routes from list items written alone; `None` on any error or unknown key.
fn parse_routes(lines: &str) -> Option<Vec<Route>> {
    let mut unknown = false;
    let de = serde_yaml::Deserializer::from_str(lines);
    let routes: Vec<Route> = serde_ignored::deserialize(de, |_| unknown = true).ok()?;
    (!unknown).then_some(routes)
}

/// The top-level `routes:` block list of `text`, if it has exactly one and
/// nothing makes its lines doubtful (several documents, directives, tabs
/// at the start of a line).
fn routes_block(text: &str) -> Option<RoutesBlock> {
    enum At {
        Outside,
        /// After `routes:`, before its first item.
        Key,
        /// In the list, whose items are at this indent.
        List(usize),
    }
    let mut block: Option<RoutesBlock> = None;
    let mut at = At::Outside;
    for (offset, line) in (Lines { text, at: 0 }) {
        if line.starts_with("---") || line.starts_with("...") || line.starts_with('%') || line.starts_with('\t') {
            return None;
        }
        let trimmed = line.trim_start_matches(' ');
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        let item = trimmed == "-" || trimmed.starts_with("- ");
        match at {
            At::Key if item => at = At::List(indent),
            At::Key => return None,
            At::List(i) if indent > i => continue,
            At::List(i) if indent == i && item => {}
            // A top-level key: the list ends.
            At::List(_) if indent == 0 => {
                block.as_mut()?.end = offset;
                at = At::Outside;
            }
            At::List(_) => return None,
            At::Outside => {}
        }
        match at {
            At::List(_) => block.as_mut()?.items.push(offset),
            At::Outside if indent == 0 && is_key(trimmed, "routes") => {
                if block.is_some() {
                    return None;
                }
                let start = (offset + line.len() + 1).min(text.len());
                block = Some(RoutesBlock { start, items: Vec::new(), end: text.len() });
                at = At::Key;
            }
            _ => {}
        }
    }
    block.filter(|b| !b.items.is_empty())
}

/// `routes:`, alone or with a comment after it.
fn is_key(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .and_then(|rest| rest.strip_prefix(':'))
        .is_some_and(|rest| rest.trim().is_empty() || rest.trim_start().starts_with('#') && rest.starts_with(' '))
}

/// Lines with the byte offset each starts at, without their line break.
struct Lines<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a str);
    fn next(&mut self) -> Option<(usize, &'a str)> {
        if self.at >= self.text.len() {
            return None;
        }
        let start = self.at;
        let rest = &self.text[start..];
        let len = rest.find('\n').unwrap_or(rest.len());
        self.at = start + len + 1;
        Some((start, rest[..len].strip_suffix('\r').unwrap_or(&rest[..len])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "listeners:\n  - name: public\n    port: 8080\nservices:\n  - name: a\n    url: http://127.0.0.1:1\n";

    fn route(i: usize) -> String {
        format!("  - name: r{i}\n    match: {{ prefix: /r/{i}/ }}\n    service: a\n")
    }

    fn file(n: usize, tail: &str) -> String {
        let mut s = format!("{HEAD}routes:\n");
        (0..n).for_each(|i| s += &route(i));
        s + tail
    }

    fn full(text: &str) -> PolicyFile {
        serde_yaml::from_str(text).expect("parses")
    }

    /// The splice, checked against parsing `new` whole.
    fn spliced(old: &str, new: &str) -> Option<Vec<Route>> {
        let mut got = full(old).routes;
        let (range, fresh) = routes(old, new, &full(old))?;
        got.splice(range, fresh);
        assert_eq!(format!("{got:?}"), format!("{:?}", full(new).routes), "spliced == parsed whole for:\n{new}");
        Some(got)
    }

    #[test]
    fn finds_the_items_of_the_routes_list() {
        let text = file(3, "rate_limits: []\n");
        let block = routes_block(&text).expect("a routes list");
        assert_eq!(block.items.len(), 3);
        assert!(text[block.items[0]..].starts_with("  - name: r0"));
        assert!(text[block.end..].starts_with("rate_limits:"));
        // Items at the key's own indent, comments and blank lines between.
        let flush = "routes:\n- name: a\n  service: s\n\n# note\n- name: b\n  service: s\nservices: []\n";
        let block = routes_block(flush).expect("a routes list");
        assert_eq!(block.items.len(), 2);
        assert!(flush[block.end..].starts_with("services:"));
    }

    #[test]
    fn edits_inside_the_list_parse_only_the_changed_items() {
        let old = file(50, "");
        assert!(spliced(&old, &old.replace("/r/7/", "/r/seven/")).is_some(), "a changed item");
        assert!(spliced(&old, &(old.clone() + &route(50))).is_some(), "an item added at the end");
        assert!(spliced(&old, &old.replace(&route(20), "")).is_some(), "an item removed");
        assert!(
            spliced(&old, &old.replace(&route(20), &(route(20) + &route(99) + &route(98)))).is_some(),
            "two inserted"
        );
        assert!(
            spliced(&old, &old.replace(&route(0), "  # first\n")).is_some(),
            "the first item replaced by a comment"
        );
        let tail = file(50, "rate_limits:\n  - name: rl\n    requests: 1\n    per: minute\n");
        assert!(spliced(&tail, &tail.replace("/r/49/", "/r/last/")).is_some(), "the last item, before another key");
    }

    #[test]
    fn anything_doubtful_parses_the_whole_file() {
        let old = file(5, "");
        let whole = |new: &str| routes(&old, new, &full(&old));
        assert!(whole(&old.replace("port: 8080", "port: 8081")).is_none(), "an edit outside the list");
        assert!(whole(&(old.clone() + "rate_limits: []\n")).is_none(), "a new top-level key");
        assert!(
            whole(&old.replace("service: a\n  - name: r3", "service: a\n    colour: red\n  - name: r3")).is_none(),
            "an unknown key"
        );
        assert!(whole(&old.replace("/r/2/", "/r/2/ ")).is_some(), "(a harmless edit takes the short way)");
        assert!(whole(&old.replace("prefix: /r/2/ }", "prefix: /r/2/ ")).is_none(), "a syntax error");
        assert!(whole(&old.replace("name: r2", "name: &n r2")).is_none(), "an anchor");
        assert!(whole(&format!("{old}---\nroutes: []\n")).is_none(), "a second document");
        let flow = "routes: [ { name: a, match: { prefix: / }, service: s } ]\n";
        assert!(routes(flow, &flow.replace("a,", "b,"), &full(flow)).is_none(), "a flow list");
        // A quoted string whose second line looks like an item: the lines
        // that look like items outnumber the routes.
        let quoted = format!("{HEAD}routes:\n  - name: 'a\n  - name: b'\n    match: {{ prefix: / }}\n    service: a\n");
        assert_eq!(full(&quoted).routes.len(), 1);
        assert!(routes(&quoted, &quoted.replace("service: a\n", "service: b\n"), &full(&quoted)).is_none());
    }

    /// What a full parse of the file gives: its routes, or `None` when it
    /// has a syntax error, an unknown key or several documents.
    fn parse_whole(text: &str) -> Option<Vec<Route>> {
        let mut docs = serde_yaml::Deserializer::from_str(text);
        let doc = docs.next()?;
        let mut unknown = false;
        let pf: PolicyFile = serde_ignored::deserialize(doc, |_| unknown = true).ok()?;
        (!unknown && docs.next().is_none()).then_some(pf.routes)
    }

    /// A file with most of what YAML allows inside a routes list: comments,
    /// block and flow collections, quoted and multi-line strings, nesting.
    const VARIED: &str = r#"# the gateway
listeners:
  - name: public
    port: 8080
routes:
  # first
  - name: a
    match:
      prefix: /a
      methods:
        - GET
        - POST
    service: s
  - name: "b"
    match: { path: '/b', headers: { x-v: "2" } }
    service: s
    request_headers:
      add:
        x-note: >
          folded
          text
      remove: [x-old]

  -
    name: c
    match:
      regex: "^/c/[0-9]+$"
    split:
      - service: s
        weight: 90
      - { service: t, weight: 10 }
  - name: d # trailing comment
    match: { prefix: /d }
    service: s
    response_headers:
      add:
        x-multi: "one
          two"
services:
  - name: s
    url: http://127.0.0.1:1
"#;

    /// Every splice the short way takes must equal a full parse, and an edit
    /// a full parse rejects must never take it. Edits: each line removed,
    /// doubled, or with a character inserted, replaced or removed at each
    /// position.
    #[test]
    fn the_short_way_agrees_with_a_full_parse_under_many_edits() {
        let old = VARIED;
        let parsed = full(old);
        assert_eq!(parsed.routes.len(), 4);
        let lines: Vec<&str> = old.split_inclusive('\n').collect();
        let mut edits: Vec<String> = Vec::new();
        for i in 0..lines.len() {
            let without: String = lines.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, l)| *l).collect();
            let doubled: String =
                lines.iter().enumerate().flat_map(|(j, l)| if j == i { vec![*l, *l] } else { vec![*l] }).collect();
            edits.extend([without, doubled]);
        }
        for (at, _) in old.char_indices() {
            for c in ["x", " ", "-", "\n", "#", "\"", "&", "*", "  - name: z\n    match: { prefix: /z }\n"] {
                edits.push(format!("{}{c}{}", &old[..at], &old[at..]));
                let next = old[at..].chars().next().map_or(0, char::len_utf8);
                edits.push(format!("{}{c}{}", &old[..at], &old[at + next..]));
            }
            let next = old[at..].chars().next().map_or(0, char::len_utf8);
            edits.push(format!("{}{}", &old[..at], &old[at + next..]));
        }
        let (mut short, mut valid) = (0, 0);
        for new in &edits {
            valid += usize::from(parse_whole(new).is_some());
            let Some((range, fresh)) = routes(old, new, &parsed) else { continue };
            short += 1;
            let whole =
                parse_whole(new).unwrap_or_else(|| panic!("the short way took a file a full parse rejects:\n{new}"));
            let mut got = parsed.routes.clone();
            got.splice(range, fresh);
            assert_eq!(format!("{got:?}"), format!("{whole:?}"), "spliced != parsed whole for:\n{new}");
        }
        // Most edits a full parse accepts should take the short way.
        assert!(short * 3 > valid, "{short} of {valid} valid edits took the short way");
    }
}

//! Where every key and value of a YAML file starts, so that errors found
//! after parsing can still name `FILE:LINE:COL`.
//!
//! serde_yaml forgets positions once a value is parsed; yaml-rust2's event
//! parser reports a marker for every node, from which this builds an index
//! from a path such as `routes[3].service` to the line and column of its key
//! and of its value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    /// A mapping key. Validation names a path for every item it checks,
    /// almost always with keys written in the code, so those are borrowed.
    Key(Cow<'static, str>),
    /// A sequence index.
    Index(usize),
}

/// A path into a YAML document, such as `routes[3].match.prefix`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct YamlPath(pub Vec<Seg>);

impl YamlPath {
    /// This path with one more key.
    #[must_use]
    pub fn key(&self, k: impl Into<Cow<'static, str>>) -> Self {
        let mut p = Self(Vec::with_capacity(self.0.len() + 1));
        p.0.extend_from_slice(&self.0);
        p.0.push(Seg::Key(k.into()));
        p
    }

    /// This path with one more index.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut p = Self(Vec::with_capacity(self.0.len() + 1));
        p.0.extend_from_slice(&self.0);
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos { line: m.line(), column: m.col() + 1 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Node {
    key: Option<Pos>,
    value: Pos,
}

/// Positions of every node in every document of one file.
#[derive(Debug, Default)]
pub struct LocationIndex {
    nodes: HashMap<(usize, YamlPath), Node>,
}

impl LocationIndex {
    /// Index `text`. A file that does not parse gives an empty index (serde
    /// reports the syntax error with its own position).
    #[must_use]
    pub fn build(text: &str) -> Self {
        let mut b = Builder::default();
        let _ = Parser::new_from_str(text).load(&mut b, true);
        LocationIndex { nodes: b.nodes }
    }

    /// Where the value at `path` starts, or the nearest ancestor that exists.
    #[must_use]
    pub fn value(&self, doc: usize, path: &YamlPath) -> Pos {
        self.find(doc, path, |n| n.value)
    }

    /// Where the key of the entry at `path` starts (its value for list items).
    #[must_use]
    pub fn key(&self, doc: usize, path: &YamlPath) -> Pos {
        self.find(doc, path, |n| n.key.unwrap_or(n.value))
    }

    fn find(&self, doc: usize, path: &YamlPath, pick: impl Fn(&Node) -> Pos) -> Pos {
        let mut p = path.clone();
        loop {
            if let Some(n) = self.nodes.get(&(doc, p.clone())) {
                return pick(n);
            }
            if p.0.pop().is_none() {
                return Pos { line: 1, column: 1 };
            }
        }
    }
}

enum Frame {
    Map { key: Option<(String, Pos)> },
    Seq { next: usize },
}

#[derive(Default)]
struct Builder {
    doc: Option<usize>,
    stack: Vec<Frame>,
    path: YamlPath,
    nodes: HashMap<(usize, YamlPath), Node>,
}

impl Builder {
    /// A node starts at `pos`: record it as a key or as a value at its path.
    fn node(&mut self, pos: Pos, scalar: Option<&str>, opens: bool) {
        let doc = self.doc.unwrap_or(0);
        let (seg, key) = match self.stack.last_mut() {
            None => (None, None),
            Some(Frame::Map { key }) => match key.take() {
                None => {
                    // This node is a key. Complex keys are not used by policy files.
                    *key = Some((scalar.unwrap_or("?").to_owned(), pos));
                    // yaml-rust2 marks a block mapping's start at the `:` after
                    // its first key; the mapping starts where that key does.
                    if let Some(map) = self.nodes.get_mut(&(doc, self.path.clone())) {
                        if (map.value.line, map.value.column) > (pos.line, pos.column) {
                            map.value = pos;
                        }
                    }
                    if opens {
                        self.stack.push(Frame::Seq { next: 0 });
                        self.path.0.push(Seg::Key("?".into()));
                    }
                    return;
                }
                Some((k, kpos)) => (Some(Seg::Key(k.into())), Some(kpos)),
            },
            Some(Frame::Seq { next }) => {
                *next += 1;
                (Some(Seg::Index(*next - 1)), None)
            }
        };
        if let Some(seg) = seg.clone() {
            self.path.0.push(seg);
        }
        self.nodes.insert((doc, self.path.clone()), Node { key, value: pos });
        if !opens && seg.is_some() {
            self.path.0.pop();
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        match ev {
            Event::DocumentStart => {
                self.doc = Some(self.doc.map_or(0, |d| d + 1));
                self.stack.clear();
                self.path.0.clear();
            }
            Event::Scalar(ref v, ..) => self.node(pos, Some(v), false),
            Event::Alias(_) => self.node(pos, None, false),
            Event::MappingStart(..) => {
                self.node(pos, None, true);
                self.stack.push(Frame::Map { key: None });
            }
            Event::SequenceStart(..) => {
                self.node(pos, None, true);
                self.stack.push(Frame::Seq { next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                // The root container has no segment of its own.
                if !self.stack.is_empty() {
                    self.path.0.pop();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> YamlPath {
        YamlPath(segs.iter().map(|s| s.parse().map_or_else(|_| Seg::Key((*s).to_owned().into()), Seg::Index)).collect())
    }

    #[test]
    fn finds_keys_and_values_in_nested_lists_and_maps() {
        let text = "routes:\n  - name: a\n    match: { prefix: /a }\n    service: x\n  - name: b\n    service: y\n";
        let idx = LocationIndex::build(text);
        assert_eq!(idx.value(0, &p(&["routes", "1", "service"])), Pos { line: 6, column: 14 });
        assert_eq!(idx.key(0, &p(&["routes", "1", "service"])), Pos { line: 6, column: 5 });
        assert_eq!(idx.value(0, &p(&["routes", "0", "match", "prefix"])), Pos { line: 3, column: 22 });
        assert_eq!(idx.value(0, &p(&["routes", "0", "service"])), Pos { line: 4, column: 14 });
        // Missing leaf: nearest ancestor.
        assert_eq!(idx.value(0, &p(&["routes", "1", "timeout"])), Pos { line: 5, column: 5 });
    }

    #[test]
    fn a_block_mapping_starts_at_its_first_key() {
        let text = "routes:\n  - name: a\n    match:\n      methods: [GET]\n    rewrite: { prefix: /b }\n";
        let idx = LocationIndex::build(text);
        assert_eq!(idx.value(0, &p(&["routes", "0", "match"])), Pos { line: 4, column: 7 });
        assert_eq!(idx.value(0, &p(&["routes", "0"])), Pos { line: 2, column: 5 });
        assert_eq!(idx.value(0, &p(&["routes", "0", "rewrite"])), Pos { line: 5, column: 14 });
    }

    #[test]
    fn separates_documents() {
        let text = "services: []\n---\nroutes:\n  - name: a\n";
        let idx = LocationIndex::build(text);
        assert_eq!(idx.value(1, &p(&["routes", "0", "name"])), Pos { line: 4, column: 11 });
    }
}

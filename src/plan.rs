//! `legate plan`: what applying a policy folder would do to the fleet,
//! before it is saved where a legate watches.
//!
//! Both sides are the Envoy resources as `legate render` and the admin
//! API's `/api/config` show them (Envoy's own JSON, private keys redacted):
//! the proposed folder's, and either another folder's or what a running
//! legate serves. Resources are matched by type and name; a changed one is
//! shown as a diff of its YAML, so the changed fields are read in Envoy's
//! own terms.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde_json::Value;
use similar::{ChangeTag, TextDiff};

use crate::snapshot::Kind;

/// What happens to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only in the proposed config.
    Added,
    /// Only in the current config.
    Removed,
    /// In both, different: a unified diff of the YAML, current to proposed.
    Changed(String),
}

/// Which proxies get the changes: only these node clusters (listeners and
/// their routes with `fleets:`), or every fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fleets {
    /// Only Envoys whose node.cluster is one of these.
    Only(BTreeSet<String>),
    /// Every Envoy connected.
    Every,
}

impl Default for Fleets {
    fn default() -> Self {
        Fleets::Only(BTreeSet::new())
    }
}

impl Fleets {
    /// Add the proxies that get one change: these fleets, or (`None`) every fleet.
    fn add(&mut self, only: Option<&Vec<String>>) {
        match (self, only) {
            (Fleets::Every, _) => {}
            (Fleets::Only(set), Some(list)) => set.extend(list.iter().cloned()),
            (all, None) => *all = Fleets::Every,
        }
    }
}

/// One side of a plan: the rendered resources (`render::view_json` of every
/// resource, or `/api/config`), and which fleets each listener is for.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// `{"clusters": [...], "endpoints": [...], ...}`.
    pub resources: Value,
    /// Listener (and route configuration) name → the fleets it is for;
    /// absent: every fleet. `None` when not known (a running legate's).
    pub fleets: Option<BTreeMap<String, Vec<String>>>,
}

/// Everything that would change, by type, in the order of [`Kind::ALL`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (type, resource name, change), types in xDS order, names sorted.
    pub changes: Vec<(Kind, String, Change)>,
    /// The fleets whose proxies would receive a change.
    pub fleets: Fleets,
}

impl Plan {
    /// Whether applying changes anything.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// What applying `proposed` over `current` would add, remove and change.
#[must_use]
pub fn plan(current: &Side, proposed: &Side) -> Plan {
    let mut out = Plan::default();
    for kind in Kind::ALL {
        let (before, after) = (by_name(kind, &current.resources), by_name(kind, &proposed.resources));
        let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        for name in names {
            let change = match (before.get(name), after.get(name)) {
                (None, Some(_)) => Change::Added,
                (Some(_), None) => Change::Removed,
                (Some(a), Some(b)) if a != b => Change::Changed(diff(a, b)),
                _ => continue,
            };
            // Who gets it: the proposed side's fleets, or for a removal the
            // current side's (every fleet when that is not known).
            let side = if change == Change::Removed { current } else { proposed };
            let only = match kind {
                Kind::Listener | Kind::Route => side.fleets.as_ref().and_then(|map| map.get(name)),
                _ => None,
            };
            out.fleets.add(only);
            out.changes.push((kind, name.clone(), change));
        }
    }
    out
}

/// A type's resources by name (`cluster_name` for endpoints).
fn by_name(kind: Kind, resources: &Value) -> BTreeMap<String, &Value> {
    let key = if kind == Kind::Endpoint { "cluster_name" } else { "name" };
    (resources.get(kind.plural()).and_then(Value::as_array).into_iter().flatten())
        .filter_map(|r| Some((r.get(key)?.as_str()?.to_owned(), r)))
        .collect()
}

/// A unified diff of two resources' YAML, with three lines of context.
fn diff(before: &Value, after: &Value) -> String {
    let (a, b) = (yaml(before), yaml(after));
    let text = TextDiff::from_lines(&a, &b);
    let mut out = String::new();
    for (i, group) in text.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push_str("  ...\n");
        }
        for op in group {
            for change in text.iter_changes(op) {
                let sign = match change.tag() {
                    ChangeTag::Delete => '-',
                    ChangeTag::Insert => '+',
                    ChangeTag::Equal => ' ',
                };
                let _ = write!(out, "{sign} {}", change.value());
                if change.missing_newline() {
                    out.push('\n');
                }
            }
        }
    }
    out
}

fn yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_default()
}

/// The plan as text: a summary line per type, then each resource added,
/// removed or changed (with its diff), then the fleets affected.
#[must_use]
pub fn render(plan: &Plan) -> String {
    if plan.is_empty() {
        return "No changes: the proxies would get nothing new.\n".to_owned();
    }
    let mut out = String::new();
    for kind in Kind::ALL {
        let of: Vec<&(Kind, String, Change)> = plan.changes.iter().filter(|(k, _, _)| *k == kind).collect();
        if of.is_empty() {
            continue;
        }
        let count = |c: fn(&Change) -> bool| of.iter().filter(|(_, _, x)| c(x)).count();
        let _ = writeln!(
            out,
            "{}: {} to add, {} to remove, {} to change",
            kind.plural(),
            count(|c| *c == Change::Added),
            count(|c| *c == Change::Removed),
            count(|c| matches!(c, Change::Changed(_)))
        );
        for (_, name, change) in of {
            match change {
                Change::Added => {
                    let _ = writeln!(out, "  + {name}");
                }
                Change::Removed => {
                    let _ = writeln!(out, "  - {name}");
                }
                Change::Changed(diff) => {
                    let _ = writeln!(out, "  ~ {name}");
                    for line in diff.lines() {
                        let _ = writeln!(out, "      {line}");
                    }
                }
            }
        }
    }
    let fleets = match &plan.fleets {
        Fleets::Every => "every fleet".to_owned(),
        Fleets::Only(names) => names.iter().map(String::as_str).collect::<Vec<_>>().join(", "),
    };
    let _ = writeln!(out, "Fleets affected: {fleets}");
    out
}

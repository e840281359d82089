//! Routes that can never match: every request one of them would match is
//! matched first by routes placed before it (precedence in
//! [`super::routes::precedence`]). Each is a warning naming the routes that
//! cover it; `legate validate --strict` fails on it.
//!
//! Only what can be shown for certain is reported, never a guess. Earlier
//! routes cover a later one when, on the same listener:
//! - their path match takes every path the later one's does: the same exact
//!   path, the same prefix, the same regex, or a regex `L.*` (or `L.+`)
//!   before a prefix that begins with `L` and is longer;
//! - each of their host, header and query conditions holds whenever the
//!   later route's do (the same value; `present` for any value or regex; a
//!   regex that the later route's exact value matches);
//! - and between them they take all of the later route's methods (a route
//!   without `methods` takes them all; a later route without `methods` can
//!   also be sent any method legate does not list, so methods never cover
//!   it).

use std::collections::HashMap;

use regex_syntax::hir::{Class, Hir, HirKind, Look};

use super::Errors;
use crate::policy::model::{Backend, PathMatch, Route, ValueMatch, ValueRule};
use crate::policy::source::Origin;

/// Warn about every route in `routes` (in precedence order) that the routes
/// before it leave nothing to match.
pub(super) fn check(errs: &mut Errors<'_>, routes: &[(&Origin, &Route)]) {
    // The routes before, by listener and by the path they match.
    let mut same_path: HashMap<(&str, PathKey<'_>), Vec<usize>> = HashMap::new();
    // Regexes of the form `L.*`, by listener: (route, L, at least one char after L).
    let mut open_regexes: HashMap<&str, Vec<(usize, String, bool)>> = HashMap::new();
    for (j, (o, b)) in routes.iter().enumerate() {
        let key = PathKey::of(&b.path);
        let mut candidates: Vec<usize> = same_path.get(&(b.listener.as_str(), key)).cloned().unwrap_or_default();
        if let PathMatch::Prefix(p) = &b.path {
            for (i, lit, one_more) in open_regexes.get(b.listener.as_str()).into_iter().flatten() {
                if p.starts_with(lit.as_str()) && (!one_more || p.len() > lit.len()) {
                    candidates.push(*i);
                }
            }
        }
        candidates.sort_unstable();
        let covering: Vec<usize> = candidates.into_iter().filter(|&i| conditions_cover(routes[i].1, b)).collect();
        if let Some(cover) = methods_cover(routes, &covering, b) {
            let names: Vec<String> = cover
                .iter()
                .map(|&i| {
                    let (at, a) = routes[i];
                    format!("{} `{}` ({})", noun(a), a.name, errs.place(&at.key("name")))
                })
                .collect();
            let by = if let [one] = names.as_slice() {
                format!("{one} is placed before it and matches every request it would")
            } else {
                format!("{} are placed before it and between them match every request it would", names.join(" and "))
            };
            errs.warn(
                &o.key("name"),
                format!(
                    "{} `{}` can never match: {by}; give it a more specific match, or remove it \
                     (docs/policy.md#route-precedence)",
                    noun(b),
                    b.name
                ),
            );
        }
        same_path.entry((b.listener.as_str(), key)).or_default().push(j);
        if let PathMatch::Regex(r) = &b.path {
            if let Some((lit, one_more)) = literal_then_anything(r) {
                open_regexes.entry(b.listener.as_str()).or_default().push((j, lit, one_more));
            }
        }
    }
}

fn noun(r: &Route) -> &'static str {
    if matches!(r.backend, Backend::Aggregation(_)) {
        "aggregation"
    } else {
        "route"
    }
}

/// A path match as a map key: kind and text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum PathKey<'a> {
    Exact(&'a str),
    Prefix(&'a str),
    Regex(&'a str),
}

impl<'a> PathKey<'a> {
    fn of(p: &'a PathMatch) -> Self {
        match p {
            PathMatch::Exact(s) => PathKey::Exact(s),
            PathMatch::Prefix(s) => PathKey::Prefix(s),
            PathMatch::Regex(s) => PathKey::Regex(s),
        }
    }
}

/// Which of `covering` (routes before `b` that cover it in all but
/// methods) take all of `b`'s methods: the first without methods, else the
/// first for each of `b`'s methods; `None` when they don't.
fn methods_cover(routes: &[(&Origin, &Route)], covering: &[usize], b: &Route) -> Option<Vec<usize>> {
    if let Some(&all) = covering.iter().find(|&&i| routes[i].1.methods.is_empty()) {
        return Some(vec![all]);
    }
    if b.methods.is_empty() {
        return None;
    }
    let mut used = Vec::new();
    for m in &b.methods {
        let &i = covering.iter().find(|&&i| routes[i].1.methods.contains(m))?;
        if !used.contains(&i) {
            used.push(i);
        }
    }
    Some(used)
}

/// Whether `a`'s host, header and query conditions hold for every request
/// that `b`'s hold for.
fn conditions_cover(a: &Route, b: &Route) -> bool {
    let hosts = a.hosts.is_empty()
        || (!b.hosts.is_empty() && b.hosts.iter().all(|h| a.hosts.iter().any(|g| host_covers(g, h))));
    hosts && values_cover(&a.headers, &b.headers) && values_cover(&a.query, &b.query)
}

/// Whether host pattern `g` takes every Host that `h` does (`*.example.com`
/// takes `api.example.com` and `*.api.example.com`).
fn host_covers(g: &str, h: &str) -> bool {
    if g == h || g == "*" {
        return true;
    }
    match g.strip_prefix('*') {
        Some(suffix) => h.strip_prefix('*').unwrap_or(h).ends_with(suffix) && h.len() > suffix.len(),
        None => false,
    }
}

/// Whether every condition in `a` is implied by `b`'s condition on the same name.
fn values_cover(a: &[ValueMatch], b: &[ValueMatch]) -> bool {
    a.iter().all(|c| b.iter().any(|d| d.name == c.name && rule_implies(&d.rule, &c.rule)))
}

/// Whether a value that passes `held` always passes `needed`.
fn rule_implies(held: &ValueRule, needed: &ValueRule) -> bool {
    match (held, needed) {
        (held, needed) if held == needed => true,
        (ValueRule::Exact(_) | ValueRule::Regex(_), ValueRule::Present(true)) => true,
        (ValueRule::Exact(v), ValueRule::Regex(r)) => {
            regex::Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(v))
        }
        _ => false,
    }
}

/// For a path regex that is a literal followed by "anything" (`/api/.*`,
/// `^/api/.+$`), the literal and whether at least one character must follow.
/// Envoy matches a path regex against the whole path, so anchors add
/// nothing.
fn literal_then_anything(pattern: &str) -> Option<(String, bool)> {
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    let HirKind::Concat(parts) = hir.kind() else { return None };
    let anchor = |h: &Hir| matches!(h.kind(), HirKind::Look(Look::Start | Look::End));
    let parts: Vec<&Hir> = parts.iter().filter(|h| !anchor(h)).collect();
    let [lit, rest] = parts.as_slice() else { return None };
    let HirKind::Literal(lit) = lit.kind() else { return None };
    let HirKind::Repetition(rep) = rest.kind() else { return None };
    if rep.max.is_some() || rep.min > 1 || !takes_any_path_char(&rep.sub) {
        return None;
    }
    Some((String::from_utf8(lit.0.to_vec()).ok()?, rep.min == 1))
}

/// Whether a class takes every character a path can hold (all but line
/// breaks, which Envoy never lets into a path).
fn takes_any_path_char(h: &Hir) -> bool {
    match h.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let mut missing = c.clone();
            missing.negate();
            missing.iter().all(|r| r.start() >= '\n' && r.end() <= '\r')
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut missing = c.clone();
            missing.negate();
            missing.iter().all(|r| r.start() >= b'\n' && r.end() <= b'\r')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::{host_covers, literal_then_anything, rule_implies};
    use crate::policy::model::ValueRule;

    #[test]
    fn regexes_that_take_everything_after_a_literal() {
        assert_eq!(literal_then_anything("/api/.*"), Some(("/api/".into(), false)));
        assert_eq!(literal_then_anything("^/api/.+$"), Some(("/api/".into(), true)));
        assert_eq!(literal_then_anything("/a(?s:.)*"), Some(("/a".into(), false)));
        for not in ["/api/[0-9]+", "/api/.{0,3}", "(?i)/api/.*", "/api/.*/x", "/api", ".*", "/a|/b.*"] {
            assert_eq!(literal_then_anything(not), None, "{not}");
        }
    }

    #[test]
    fn hosts_and_values() {
        assert!(host_covers("*.example.com", "api.example.com"));
        assert!(host_covers("*.example.com", "*.api.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
        assert!(!host_covers("api.example.com", "*.example.com"));
        let exact = |v: &str| ValueRule::Exact(v.into());
        assert!(rule_implies(&exact("v2"), &ValueRule::Present(true)));
        assert!(rule_implies(&exact("v2"), &ValueRule::Regex("v[0-9]".into())));
        assert!(!rule_implies(&exact("v2x"), &ValueRule::Regex("v[0-9]".into())));
        assert!(!rule_implies(&ValueRule::Present(true), &exact("v2")));
        assert!(!rule_implies(&ValueRule::Present(false), &ValueRule::Present(true)));
    }
}

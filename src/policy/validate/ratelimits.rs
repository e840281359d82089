//! `rate_limits` policies, and `rate_limit:` references on defaults,
//! services and routes.

use std::collections::{BTreeMap, BTreeSet};

use super::{check_name, did_you_mean, header_name_ok, insert_unique, resolve_names, Errors, Named, RefWords};
use crate::policy::model::{RateKey, RateLimit, Scope, Window};
use crate::policy::raw;
use crate::policy::source::Origin;

const KEYS: &[&str] = &["client_ip", "route"];
use crate::policy::words::{SCOPES, WINDOWS};

/// The policies, with the names written (valid or not).
pub(super) struct RateLimits<'a> {
    pub(super) valid: BTreeMap<String, RateLimit>,
    pub(super) defined: BTreeSet<&'a str>,
}

impl Named for raw::RateLimit {
    fn name(&self) -> &str {
        &self.name
    }
}

pub(super) fn check_rate_limits<'a>(errs: &mut Errors<'_>, all: &'a [(Origin, raw::RateLimit)]) -> RateLimits<'a> {
    let mut out = RateLimits { valid: BTreeMap::new(), defined: all.iter().map(|(_, r)| r.name.as_str()).collect() };
    for (o, r) in all {
        if let Some(r) = check_rate_limit(errs, o, r) {
            insert_unique(errs, &mut out.valid, o, r.name.clone(), r, "rate limit", all);
        }
    }
    out
}

fn hint(word: &str, options: &[&str]) -> String {
    did_you_mean(word, options).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default()
}

fn check_rate_limit(errs: &mut Errors<'_>, o: &Origin, r: &raw::RateLimit) -> Option<RateLimit> {
    let raw::RateLimit { name, limits, key, scope, headers, shadow, fail_closed } = r;
    let before = errs.list.len();
    check_name(errs, o, name, "rate limit");

    let mut windows: Vec<(Window, u64, Origin)> = Vec::new();
    match limits {
        None => errs.at(&o.key("name"), format!("rate limit `{name}` needs `limits`, like {{ minute: 100 }}")),
        Some(l) if l.is_empty() => {
            errs.at(&o.key("limits"), "limits is empty; give at least one window, like { minute: 100 }");
        }
        Some(l) => {
            for (w, n) in l {
                let at = o.key("limits").key(w.clone());
                match (Window::from_name(w), u64::try_from(*n)) {
                    (None, _) => errs.at_key(
                        &at,
                        format!("unknown window `{w}` (one of {}){}", WINDOWS.join(", "), hint(w, WINDOWS)),
                    ),
                    (Some(_), Ok(0) | Err(_)) => {
                        errs.at(&at, format!("a limit must be a positive number of requests, not {n}"));
                    }
                    (Some(_), Ok(n)) if n > u64::from(u32::MAX) => {
                        errs.at(&at, format!("{n} is more than Envoy can count ({})", u32::MAX));
                    }
                    (Some(win), Ok(n)) => windows.push((win, n, at)),
                }
            }
        }
    }
    windows.sort_by_key(|(w, _, _)| *w);
    for (i, (short, n_short, at)) in windows.iter().enumerate() {
        if let Some((long, n_long, _)) = windows[i + 1..].iter().find(|(_, n_long, _)| n_short > n_long) {
            errs.at(
                at,
                format!(
                    "`{}: {n_short}` allows more than `{}: {n_long}`; the {} limit could never be reached",
                    short.name(),
                    long.name(),
                    short.name()
                ),
            );
        }
    }

    let key = match key {
        None => Some(RateKey::ClientIp),
        Some(raw::RateKey::Named(k)) => match k.as_str() {
            "client_ip" => Some(RateKey::ClientIp),
            "route" => Some(RateKey::Route),
            other => {
                errs.at(
                    &o.key("key"),
                    format!(
                        "unknown key `{other}` (client_ip, route, {{ header: NAME }} or {{ claim: NAME }}){}",
                        hint(other, KEYS)
                    ),
                );
                None
            }
        },
        Some(raw::RateKey::Spec(raw::RateKeySpec { header, claim })) => match (header, claim) {
            (Some(h), None) if header_name_ok(h) => Some(RateKey::Header(h.to_ascii_lowercase())),
            (Some(h), None) => {
                errs.at(&o.key("key").key("header"), format!("`{h}` is not a valid header name"));
                None
            }
            (None, Some(c)) if !c.is_empty() => Some(RateKey::Claim(c.clone())),
            (None, Some(_)) => {
                errs.at(&o.key("key").key("claim"), "the claim name is empty");
                None
            }
            _ => {
                errs.at(&o.key("key"), "a key needs exactly one of `header` or `claim`");
                None
            }
        },
    };
    let scope = match scope.as_deref() {
        None | Some("local") => Some(Scope::Local),
        Some("global") => Some(Scope::Global),
        Some(other) => {
            errs.at(&o.key("scope"), format!("unknown scope `{other}` (local or global){}", hint(other, SCOPES)));
            None
        }
    };
    if *fail_closed == Some(true) && scope == Some(Scope::Local) {
        errs.at(&o.key("fail_closed"), "fail_closed applies to `scope: global` only (a local limit cannot fail)");
    }
    if errs.list.len() > before {
        return None;
    }
    Some(RateLimit {
        name: name.clone(),
        limits: windows.into_iter().map(|(w, n, _)| (w, n)).collect(),
        key: key?,
        scope: scope?,
        headers: headers.unwrap_or(false),
        shadow: shadow.unwrap_or(false),
        fail_closed: fail_closed.unwrap_or(false),
    })
}

/// A `rate_limit:` value at `o`: `none` (empty), a policy, or a list that
/// all apply. `None` when it names something undefined (reported) or a
/// policy with errors of its own.
pub(super) fn resolve(
    errs: &mut Errors<'_>,
    o: &Origin,
    r: &raw::NameRef,
    limits: &RateLimits<'_>,
) -> Option<Vec<String>> {
    let valid: Vec<&str> = limits.valid.keys().map(String::as_str).collect();
    let words = RefWords { noun: "rate limit", plural: "rate limits", key: "rate_limit", home: "`rate_limits`" };
    Some(resolve_names(errs, o, r, &valid, &limits.defined, &words)?.unwrap_or_default())
}

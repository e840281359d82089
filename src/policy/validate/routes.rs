//! `routes`: matches, backends, rewrites, header changes and `auth`, and
//! the precedence that orders them.

use std::collections::BTreeMap;

use super::{auth, check_substitution, ratelimits, Refs};
use super::{check_name, did_you_mean, duration, header_name_ok, header_ops, regex, DefaultOps, Errors};
use crate::policy::model::{
    Auth, Backend, Cors, HeaderOps, PathMatch, PathRewrite, Policy, RateKey, RateLimit, Route, ValueMatch, ValueRule,
};
use crate::policy::raw;
use crate::policy::source::Origin;

/// Route precedence, most specific first, as Gateway API implementations
/// order them: exact paths, then regexes, then longer prefixes; then routes
/// with method, header and query conditions before those without.
pub(super) fn precedence(
    r: &Route,
) -> (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
    let (kind, len) = match &r.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Regex(p) => (1, p.len()),
        PathMatch::Prefix(p) => (2, p.len()),
    };
    use std::cmp::Reverse as R;
    (kind, R(len), r.methods.is_empty(), R(r.headers.len() + usize::from(!r.hosts.is_empty())), R(r.query.len()))
}

fn value_matches(
    errs: &mut Errors<'_>,
    o: &Origin,
    items: Option<&BTreeMap<String, raw::ValueMatch>>,
    header: bool,
) -> Vec<ValueMatch> {
    let mut out = Vec::new();
    for (name, m) in items.into_iter().flatten() {
        let at = o.key(name.clone());
        if header && !header_name_ok(name) {
            errs.at_key(&at, format!("`{name}` is not a valid header name"));
            continue;
        }
        let rule = match m {
            raw::ValueMatch::Exact(v) => Some(ValueRule::Exact(v.clone())),
            raw::ValueMatch::Spec(raw::ValueMatchSpec { exact, present, regex: re }) => match (exact, present, re) {
                (Some(v), None, None) => Some(ValueRule::Exact(v.clone())),
                (None, Some(p), None) => Some(ValueRule::Present(*p)),
                (None, None, Some(r)) => regex(errs, &at.key("regex"), r).then(|| ValueRule::Regex(r.clone())),
                _ => {
                    errs.at(&at, format!("`{name}` needs exactly one of exact, present or regex"));
                    None
                }
            },
        };
        if let Some(rule) = rule {
            let name = if header { name.to_ascii_lowercase() } else { name.clone() };
            out.push(ValueMatch { name, rule });
        }
    }
    out
}

/// Every listener and service name the files define, valid or not.
pub(super) struct Defined<'a> {
    pub(super) listeners: std::collections::BTreeSet<&'a str>,
    pub(super) services: std::collections::BTreeSet<&'a str>,
}

/// The listener a route or aggregation (`what`) is served on: the one it
/// names, else the only one there is.
pub(super) fn listener_of(
    errs: &mut Errors<'_>,
    o: &Origin,
    what: &str,
    name: &str,
    listener: Option<&String>,
    policy: &Policy,
    defined: &Defined<'_>,
) -> Option<String> {
    match listener {
        Some(l) if policy.listeners.contains_key(l) => Some(l.clone()),
        Some(l) if defined.listeners.contains(l.as_str()) => None, // reported at the listener
        Some(l) => {
            let names: Vec<&str> = policy.listeners.keys().map(String::as_str).collect();
            let hint = did_you_mean(l, &names).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(&o.key("listener"), format!("{what} `{name}` names listener `{l}`, which is not defined{hint}"));
            None
        }
        None if defined.listeners.len() == 1 => policy.listeners.keys().next().cloned(),
        None if defined.listeners.is_empty() => {
            errs.at(
                &o.key("name"),
                format!("{what} `{name}` has no listener to be served on; define one under `listeners`"),
            );
            None
        }
        None => {
            let names: Vec<&str> = defined.listeners.iter().copied().collect();
            errs.at(
                &o.key("name"),
                format!("{what} `{name}` must say which listener serves it (`listener:` one of {})", names.join(", ")),
            );
            None
        }
    }
}

pub(super) fn check_route(
    errs: &mut Errors<'_>,
    o: &Origin,
    r: &raw::Route,
    policy: &Policy,
    defined: &Defined<'_>,
    defaults: &DefaultOps,
    refs: &Refs<'_, '_>,
) -> Option<Route> {
    let raw::Route {
        name,
        listener,
        matcher,
        service,
        split,
        rewrite,
        timeout,
        request_headers,
        response_headers,
        auth: route_auth,
        rate_limit: route_limits,
        cors,
        ip_restriction: route_ip,
    } = r;
    let before = errs.list.len();
    check_name(errs, o, name, "route");

    let listener = listener_of(errs, o, "route", name, listener.as_ref(), policy, defined);

    let m = o.key("match");
    let raw::Match { prefix, path, regex: re, methods, headers, query, hosts } = matcher;
    let mut host_list: Vec<String> = Vec::new();
    for (i, h) in hosts.iter().flatten().enumerate() {
        super::listeners::check_host(errs, &m.key("hosts").index(i), h, &host_list);
        host_list.push(h.to_ascii_lowercase());
    }
    let path_match = match (prefix, path, re) {
        (Some(p), None, None) if p.starts_with('/') => Some(PathMatch::Prefix(p.clone())),
        (None, Some(p), None) if p.starts_with('/') => Some(PathMatch::Exact(p.clone())),
        (Some(p), None, None) | (None, Some(p), None) => {
            let key = if prefix.is_some() { "prefix" } else { "path" };
            errs.at(&m.key(key), format!("`{p}` must start with `/`"));
            None
        }
        (None, None, Some(r)) => regex(errs, &m.key("regex"), r).then(|| PathMatch::Regex(r.clone())),
        _ => {
            errs.at(&m, "a match needs exactly one of prefix, path or regex");
            None
        }
    };
    let method_list = super::methods(errs, &m.key("methods"), methods.as_ref());
    let headers = value_matches(errs, &m.key("headers"), headers.as_ref(), true);
    let query = value_matches(errs, &m.key("query"), query.as_ref(), false);

    let known = |s: &str| policy.services.contains_key(s);
    let dangling = |errs: &mut Errors<'_>, at: &Origin, s: &str| {
        if defined.services.contains(s) {
            return; // defined, with errors of its own
        }
        let names: Vec<&str> = policy.services.keys().map(String::as_str).collect();
        let hint = did_you_mean(s, &names).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
        errs.at(at, format!("route `{name}` sends to service `{s}`, which is not defined{hint}"));
    };
    let backend = match (service, split) {
        (Some(s), None) if known(s) => Some(Backend::Service(s.clone())),
        (Some(s), None) => {
            dangling(errs, &o.key("service"), s);
            None
        }
        (None, Some(targets)) => {
            let mut out = Vec::new();
            for (i, t) in targets.iter().enumerate() {
                let at = o.key("split").index(i);
                if !known(&t.service) {
                    dangling(errs, &at.key("service"), &t.service);
                } else if out.iter().any(|(s, _)| s == &t.service) {
                    errs.at(&at.key("service"), format!("service `{}` appears twice in the split", t.service));
                } else {
                    out.push((t.service.clone(), t.weight));
                }
            }
            if targets.is_empty() {
                errs.at(&o.key("split"), "split is empty; list services with weights");
            } else if targets.iter().map(|t| u64::from(t.weight)).sum::<u64>() == 0 {
                errs.at(&o.key("split"), "split weights add up to 0; give at least one a weight");
            }
            Some(Backend::Split(out))
        }
        (Some(_), Some(_)) => {
            errs.at(&o.key("split"), "a route has either `service` or `split`, not both");
            None
        }
        (None, None) => {
            errs.at(&o.key("name"), format!("route `{name}` needs `service` or `split`"));
            None
        }
    };

    let (rewrite, host_rewrite) = match rewrite {
        None => (None, None),
        Some(raw::Rewrite { prefix, regex: re, substitution, host }) => {
            let w = o.key("rewrite");
            let path_rw = match (prefix, re, substitution) {
                (None, None, None) => None,
                (Some(p), None, None) => {
                    if matches!(path_match, Some(PathMatch::Regex(_))) {
                        errs.at(
                            &w.key("prefix"),
                            "rewrite.prefix needs a prefix or path match; with a regex match use rewrite.regex",
                        );
                    } else if !p.starts_with('/') {
                        errs.at(&w.key("prefix"), format!("rewrite.prefix `{p}` must start with `/`"));
                    }
                    Some(PathRewrite::Prefix(p.clone()))
                }
                (None, Some(r), Some(s)) => (regex(errs, &w.key("regex"), r)
                    && check_substitution(errs, &w.key("substitution"), r, s))
                .then(|| PathRewrite::Regex { pattern: r.clone(), substitution: s.clone() }),
                (None, Some(_), None) => {
                    errs.at(&w.key("regex"), "rewrite.regex needs a `substitution`");
                    None
                }
                (None, None, Some(_)) => {
                    errs.at(&w.key("substitution"), "rewrite.substitution needs a `regex`");
                    None
                }
                _ => {
                    errs.at(&w, "a rewrite has either `prefix` or `regex`, not both");
                    None
                }
            };
            if host.as_deref() == Some("") {
                errs.at(&w.key("host"), "rewrite.host is empty");
            }
            (path_rw, host.clone())
        }
    };

    let route_timeout = duration(errs, &o.key("timeout"), timeout.as_ref()).flatten();
    let service_timeout = match &backend {
        Some(Backend::Service(s)) => policy.services.get(s).and_then(|s| s.timeout),
        Some(Backend::Split(v)) => v.iter().filter_map(|(s, _)| policy.services.get(s).and_then(|s| s.timeout)).max(),
        Some(Backend::Aggregation(_)) | None => None,
    };
    let cors = cors.as_ref().and_then(|c| check_cors(errs, &o.key("cors"), c));
    let req = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
    let resp = header_ops(errs, &o.key("response_headers"), response_headers.as_ref(), false);
    let own_auth = route_auth.as_ref().map(|a| auth::resolve(errs, &o.key("auth"), a, refs.providers));
    let service = |name: &str| policy.services.get(name);
    let auth = inherit(errs, o, "auth", own_auth, backend.as_ref(), |s| service(s)?.auth.clone(), &defaults.auth);
    let own_limits = route_limits.as_ref().map(|r| ratelimits::resolve(errs, &o.key("rate_limit"), r, refs.limits));
    let rate_limits = inherit(
        errs,
        o,
        "rate_limit",
        own_limits,
        backend.as_ref(),
        |s| service(s)?.rate_limit.clone(),
        &defaults.rate_limits,
    );
    if let (Some(auth), Some(names)) = (&auth, &rate_limits) {
        check_route_limits(errs, o, name, auth, names, refs);
    }
    let retries = inherit(errs, o, "retries", None, backend.as_ref(), |s| service(s).map(|s| s.retries.clone()), &None);
    let own_ip = route_ip.as_ref().map(|r| super::check_ip_restriction(errs, &o.key("ip_restriction"), r));
    let ip_restriction = inherit(
        errs,
        o,
        "ip_restriction",
        own_ip,
        backend.as_ref(),
        |s| service(s)?.ip_restriction.clone(),
        &defaults.ip_restriction,
    );
    // Header changes: defaults, then the service's, then the route's.
    let service_ops = inherit(
        errs,
        o,
        "request_headers` or `response_headers",
        None,
        backend.as_ref(),
        |s| service(s).map(|s| (s.request_headers.clone(), s.response_headers.clone())),
        &(HeaderOps::default(), HeaderOps::default()),
    );
    let effective_timeout = route_timeout.or(service_timeout);
    if let (Some(Some(r)), Some(t)) = (&retries, effective_timeout) {
        if r.per_try_timeout.is_some_and(|p| p > t) {
            errs.at(
                &o.key("name"),
                format!(
                    "route `{name}` times out after {}, before one try of its service's retries may end \
                     (per_try_timeout {}); make per_try_timeout shorter than the timeout",
                    humantime::format_duration(t),
                    humantime::format_duration(r.per_try_timeout.unwrap_or_default())
                ),
            );
        }
    }

    if errs.list.len() > before {
        return None;
    }
    let (service_request, service_response) = service_ops?;
    Some(Route {
        name: name.clone(),
        listener: listener?,
        path: path_match?,
        methods: method_list,
        headers,
        query,
        hosts: host_list,
        backend: backend?,
        rewrite,
        host_rewrite,
        timeout: route_timeout.or(service_timeout),
        request_headers: defaults.request.merged(&service_request).merged(&req),
        response_headers: defaults.response.merged(&service_response).merged(&resp),
        auth: auth?,
        rate_limits: rate_limits?,
        retries: retries?,
        cors,
        ip_restriction: ip_restriction?,
    })
}

/// `cors`: origins exact (a whole `scheme://host[:port]`, or `*`) or by
/// regex; methods, header names, a duration.
fn check_cors(errs: &mut Errors<'_>, o: &Origin, c: &raw::Cors) -> Option<Cors> {
    let raw::Cors { origins, methods, headers, expose_headers, max_age, credentials } = c;
    let before = errs.list.len();
    let mut out = Vec::new();
    match origins {
        None => errs.at(o, "cors needs `origins`: the sites allowed to call this route"),
        Some(list) if list.is_empty() => errs.at(&o.key("origins"), "origins is empty; list at least one"),
        Some(list) => {
            for (i, m) in list.iter().enumerate() {
                let at = o.key("origins").index(i);
                match m {
                    raw::ValueMatch::Exact(v)
                    | raw::ValueMatch::Spec(raw::ValueMatchSpec { exact: Some(v), present: None, regex: None }) => {
                        let whole = v == "*"
                            || url::Url::parse(v).is_ok_and(|u| u.has_host() && u.path() == "/" && !v.ends_with('/'));
                        if whole {
                            out.push(ValueRule::Exact(v.clone()));
                        } else {
                            errs.at(
                                &at,
                                format!(
                                    "origin `{v}` is not scheme://host[:port] (like https://app.example.com) or `*`"
                                ),
                            );
                        }
                    }
                    raw::ValueMatch::Spec(raw::ValueMatchSpec { exact: None, present: None, regex: Some(r) }) => {
                        if regex(errs, &at.key("regex"), r) {
                            out.push(ValueRule::Regex(r.clone()));
                        }
                    }
                    raw::ValueMatch::Spec(_) => errs.at(&at, "an origin is a string, or { regex: ... }"),
                }
            }
        }
    }
    let method_list = super::methods(errs, &o.key("methods"), methods.as_ref());
    for (key, list) in [("headers", headers), ("expose_headers", expose_headers)] {
        for (i, h) in list.iter().flatten().enumerate() {
            if !header_name_ok(h) {
                errs.at(&o.key(key).index(i), format!("`{h}` is not a valid header name"));
            }
        }
    }
    let max_age = duration(errs, &o.key("max_age"), max_age.as_ref());
    if *credentials == Some(true) && out.contains(&ValueRule::Exact("*".into())) {
        errs.at(&o.key("credentials"), "browsers refuse credentials with origin `*`; list the origins");
    }
    if errs.list.len() > before {
        return None;
    }
    Some(Cors {
        origins: out,
        methods: method_list,
        headers: headers.clone().unwrap_or_default(),
        expose_headers: expose_headers.clone().unwrap_or_default(),
        max_age: max_age?,
        credentials: credentials.unwrap_or(false),
    })
}

/// Limits that cannot work on this route: counting by a claim on a public
/// route, which has no verified token.
pub(super) fn check_route_limits(
    errs: &mut Errors<'_>,
    o: &Origin,
    route: &str,
    auth: &Auth,
    names: &[String],
    refs: &Refs<'_, '_>,
) {
    let at = o.key("rate_limit");
    let limits: Vec<&RateLimit> = names.iter().filter_map(|n| refs.limits.valid.get(n)).collect();
    for l in &limits {
        if let (RateKey::Claim(c), Auth::Public | Auth::ApiKeys(_)) = (&l.key, auth) {
            errs.at(
                &at,
                format!(
                    "rate limit `{}` counts by the JWT claim `{c}`, but route `{route}` is public, so it has no verified \
                     token; give the route `auth`, or count by another key",
                    l.name
                ),
            );
        }
    }
}

/// A setting (`auth`, `rate_limit`) of a route: its own (`own`, already
/// resolved: `Some(None)` when it named something undefined), else its
/// service's (`of`), else the defaults'. A split whose services disagree
/// must say on the route.
fn inherit<T: Clone + PartialEq>(
    errs: &mut Errors<'_>,
    o: &Origin,
    key: &str,
    own: Option<Option<T>>,
    backend: Option<&Backend>,
    of: impl Fn(&str) -> Option<T>,
    default: &T,
) -> Option<T> {
    if let Some(own) = own {
        return own;
    }
    let from_service = match backend? {
        Backend::Service(s) => of(s),
        Backend::Split(targets) => {
            let all: Vec<Option<T>> = targets.iter().map(|(s, _)| of(s)).collect();
            if all.windows(2).any(|w| w[0] != w[1]) {
                errs.at(
                    &o.key("split"),
                    format!("the services of this split have different `{key}`; set `{key}` on the route to say which applies"),
                );
                return None;
            }
            all.into_iter().next().flatten()
        }
        Backend::Aggregation(_) => None,
    };
    Some(from_service.unwrap_or_else(|| default.clone()))
}

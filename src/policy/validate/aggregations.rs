//! `aggregations`: the path and its parameters, the calls and their
//! templates, and the route each aggregation becomes (so that auth and rate
//! limits apply at Envoy exactly as on routes). Clashes with routes are
//! checked once every route is known.

use std::collections::BTreeSet;
use std::time::Duration;

use super::routes::{check_route_limits, listener_of, Defined};
use super::{auth, check_name, did_you_mean, duration, ratelimits, DefaultOps, Errors, Refs};
use crate::policy::model::{Aggregation, Backend, Call, HeaderOps, PathMatch, Policy, Route, Segment, TemplatePart};
use crate::policy::raw;
use crate::policy::source::Origin;

/// When an aggregation says no `timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Request headers every call gets when the client request has them: the
/// request id and trace context, so that a call can be followed.
const ALWAYS_FORWARDED: &[&str] = &[
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-forwarded-for",
    "x-forwarded-proto",
];

pub(super) fn check_aggregation(
    errs: &mut Errors<'_>,
    o: &Origin,
    a: &raw::Aggregation,
    policy: &Policy,
    defined: &Defined<'_>,
    defaults: &DefaultOps,
    refs: &Refs<'_, '_>,
) -> Option<(Aggregation, Route)> {
    let raw::Aggregation { name, listener, path, methods, auth: own_auth, rate_limit, timeout, calls } = a;
    let before = errs.list.len();
    check_name(errs, o, name, "aggregation");
    let listener = listener_of(errs, o, "aggregation", name, listener.as_ref(), policy, defined);
    let segments = match path {
        None => {
            errs.at(&o.key("name"), format!("aggregation `{name}` needs a `path`, like /api/dashboard/{{userId}}"));
            None
        }
        Some(p) => parse_path(errs, &o.key("path"), p),
    };
    let mut methods = super::methods(errs, &o.key("methods"), methods.as_ref());
    if methods.is_empty() {
        methods.push("GET".to_owned());
    }
    let timeout = match duration(errs, &o.key("timeout"), timeout.as_ref()) {
        Some(Some(t)) if t.is_zero() => {
            errs.at(&o.key("timeout"), "timeout must be more than 0");
            None
        }
        t => t.map(|t| t.unwrap_or(DEFAULT_TIMEOUT)),
    };
    let auth = match own_auth {
        Some(x) => auth::resolve(errs, &o.key("auth"), x, refs.providers),
        None => Some(defaults.auth.clone()),
    };
    let rate_limits = match rate_limit {
        Some(x) => ratelimits::resolve(errs, &o.key("rate_limit"), x, refs.limits),
        None => Some(defaults.rate_limits.clone()),
    };
    if let (Some(auth), Some(names)) = (&auth, &rate_limits) {
        check_route_limits(errs, o, name, auth, names, refs);
    }

    let params: Vec<&str> = segments
        .iter()
        .flatten()
        .filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    let c = o.key("calls");
    if calls.0.is_empty() {
        errs.at(&o.key("name"), format!("aggregation `{name}` has no `calls`; name at least one service call"));
    }
    let mut out = Vec::new();
    for (i, (call_name, call)) in calls.0.iter().enumerate() {
        let at = c.key(call_name.clone());
        // A repeated key's positions are those of its last place, so
        // neither is checked further: the message would point wrong.
        if calls.0.iter().filter(|(n, _)| n == call_name).count() > 1 {
            if !calls.0[..i].iter().any(|(n, _)| n == call_name) {
                errs.at_key(&at, format!("call `{call_name}` is given twice; each call needs its own name"));
            }
            continue;
        }
        if call_name.is_empty() {
            errs.at_key(&at, "a call name is the key of its answer and cannot be empty");
            continue;
        }
        if let Some(call) = check_call(errs, &at, call_name, call, &params, timeout, policy, defined) {
            out.push(call);
        }
    }

    if errs.list.len() > before {
        return None;
    }
    let (segments, timeout) = (segments?, timeout?);
    let regex = path_regex(&segments);
    let aggregation = Aggregation {
        name: name.clone(),
        path: path.clone().unwrap_or_default(),
        segments,
        timeout,
        calls: out,
        forward_headers: forward_headers(refs, &defaults.request),
    };
    let route = Route {
        name: name.clone(),
        listener: listener?,
        path: PathMatch::Regex(regex),
        methods,
        headers: Vec::new(),
        query: Vec::new(),
        hosts: Vec::new(),
        backend: Backend::Aggregation(name.clone()),
        rewrite: None,
        host_rewrite: None,
        timeout: Some(timeout),
        idle_timeout: None,
        max_request_body: None,
        request_headers: defaults.request.clone(),
        request_query: HeaderOps::default(),
        request_id: None,
        response_headers: defaults.response.clone(),
        auth: auth?,
        retries: None,
        cors: None,
        rate_limits: rate_limits?,
        ip_restriction: defaults.ip_restriction.clone(),
    };
    Some((aggregation, route))
}

/// `/api/dashboard/{userId}`: literal segments and whole-segment parameters.
fn parse_path(errs: &mut Errors<'_>, o: &Origin, path: &str) -> Option<Vec<Segment>> {
    let Some(rest) = path.strip_prefix('/') else {
        errs.at(o, format!("`{path}` must start with `/`"));
        return None;
    };
    if path.contains(['?', '#']) {
        errs.at(o, format!("`{path}`: an aggregation path has no query or fragment; calls can use the client's query as {{query.NAME}}"));
        return None;
    }
    let mut out = Vec::new();
    for seg in rest.split('/') {
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(p) if param_name_ok(p) => {
                if out.contains(&Segment::Param(p.to_owned())) {
                    errs.at(o, format!("`{path}` names the parameter `{p}` twice"));
                    return None;
                }
                out.push(Segment::Param(p.to_owned()));
            }
            Some(p) => {
                errs.at(o, format!("`{{{p}}}` in `{path}`: a parameter name is letters, digits and `_`"));
                return None;
            }
            None if seg.contains(['{', '}']) => {
                errs.at(o, format!("`{path}`: a parameter is a whole segment, like /users/{{id}}"));
                return None;
            }
            None => out.push(Segment::Literal(seg.to_owned())),
        }
    }
    Some(out)
}

fn param_name_ok(p: &str) -> bool {
    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The RE2 regex Envoy matches the path (without its query) against.
fn path_regex(segments: &[Segment]) -> String {
    let parts: Vec<String> = segments
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => regex_syntax::escape(l),
            Segment::Param(_) => "[^/]+".to_owned(),
        })
        .collect();
    format!("/{}", parts.join("/"))
}

#[allow(clippy::too_many_arguments)]
fn check_call(
    errs: &mut Errors<'_>,
    o: &Origin,
    name: &str,
    call: &raw::Call,
    params: &[&str],
    overall: Option<Duration>,
    policy: &Policy,
    defined: &Defined<'_>,
) -> Option<Call> {
    let raw::Call { service, path, pick, default, timeout } = call;
    let before = errs.list.len();
    let service = match service {
        None => {
            errs.at_key(o, format!("call `{name}` needs a `service`"));
            None
        }
        Some(s) if policy.services.contains_key(s) => Some(s.clone()),
        Some(s) => {
            if !defined.services.contains(s.as_str()) {
                let names: Vec<&str> = policy.services.keys().map(String::as_str).collect();
                let hint = did_you_mean(s, &names).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
                errs.at(&o.key("service"), format!("call `{name}` names service `{s}`, which is not defined{hint}"));
            }
            None
        }
    };
    let template = match path {
        None => {
            errs.at_key(o, format!("call `{name}` needs a `path`, like \"/users/{{userId}}\""));
            None
        }
        Some(p) => parse_template(errs, &o.key("path"), p, params),
    };
    let pick: Vec<String> = pick.iter().flat_map(|p| p.split('.')).map(str::to_owned).collect();
    if pick.iter().any(String::is_empty) {
        errs.at(&o.key("pick"), "pick is a field name, or a dotted path like `data.count`");
    }
    let default = match default.as_ref().map(serde_json::to_value) {
        None => Some(serde_json::Value::Null),
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            errs.at(&o.key("default"), format!("this default cannot be JSON: {e}"));
            None
        }
    };
    let own_timeout = match duration(errs, &o.key("timeout"), timeout.as_ref())? {
        Some(t) if t.is_zero() => {
            errs.at(&o.key("timeout"), "timeout must be more than 0");
            None
        }
        t => t,
    };
    // Only a timeout written on the call is worth a warning: a service's
    // longer one is its routes' business.
    if let (Some(t), Some(all)) = (own_timeout, overall) {
        if t > all {
            errs.warn(
                &o.key("timeout"),
                format!(
                    "call `{name}` may take {}, but the aggregation answers after {}; the call gets its default then",
                    humantime::format_duration(t),
                    humantime::format_duration(all)
                ),
            );
        }
    }
    let timeout = own_timeout
        .or_else(|| service.as_ref().and_then(|s| policy.services.get(s)).and_then(|s| s.timeout))
        .or(overall);
    if errs.list.len() > before {
        return None;
    }
    Some(Call {
        name: name.to_owned(),
        service: service?,
        path: template?,
        pick,
        default: default?,
        timeout: timeout?.min(overall?),
    })
}

/// `/orders?customerId={userId}&limit=5`: text, the aggregation path's
/// parameters, and the client's query parameters as `{query.NAME}`.
fn parse_template(errs: &mut Errors<'_>, o: &Origin, text: &str, params: &[&str]) -> Option<Vec<TemplatePart>> {
    if !text.starts_with('/') {
        errs.at(o, format!("`{text}` must start with `/`"));
        return None;
    }
    let mut out = Vec::new();
    let mut rest = text;
    let mut in_query = false;
    while let Some(open) = rest.find(['{', '}']) {
        let literal = &rest[..open];
        in_query |= literal.contains('?');
        if rest[open..].starts_with('}') {
            errs.at(o, format!("`{text}` has a `}}` without its `{{`"));
            return None;
        }
        let Some(close) = rest[open..].find('}') else {
            errs.at(o, format!("`{text}` has a `{{` without its `}}`"));
            return None;
        };
        if !literal.is_empty() {
            out.push(TemplatePart::Text(literal.to_owned()));
        }
        let var = &rest[open + 1..open + close];
        if let Some(q) = var.strip_prefix("query.") {
            if q.is_empty() {
                errs.at(o, "`{query.}` names no query parameter");
                return None;
            }
            out.push(TemplatePart::Query { name: q.to_owned(), in_query });
        } else if params.contains(&var) {
            out.push(TemplatePart::Param { name: var.to_owned(), in_query });
        } else {
            let hint = did_you_mean(var, params).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            let has = if params.is_empty() {
                "has none".to_owned()
            } else {
                let list: Vec<String> = params.iter().map(|p| format!("{{{p}}}")).collect();
                format!("has {}", list.join(", "))
            };
            errs.at(
                o,
                format!(
                    "`{{{var}}}` is not a parameter of the aggregation's path (it {has}){hint}; \
                     the client's query parameters are {{query.NAME}}"
                ),
            );
            return None;
        }
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        out.push(TemplatePart::Text(rest.to_owned()));
    }
    Some(out)
}

/// Every header a call is given from the client request: [`ALWAYS_FORWARDED`],
/// every provider's identity headers and forwarded token headers, and the
/// headers `defaults.request_headers` sets.
fn forward_headers(refs: &Refs<'_, '_>, defaults: &HeaderOps) -> Vec<String> {
    let mut out: BTreeSet<String> = ALWAYS_FORWARDED.iter().map(|h| (*h).to_owned()).collect();
    for p in refs.providers.valid.values() {
        out.extend(p.claims_to_headers.values().map(|h| h.to_ascii_lowercase()));
        for source in p.from.iter().filter(|_| p.forward_token) {
            if let crate::policy::TokenSource::Header { name, .. } = source {
                out.insert(name.to_ascii_lowercase());
            }
        }
    }
    for s in refs.providers.api_keys.values() {
        out.extend(s.client_header.iter().map(|h| h.to_ascii_lowercase()));
        if s.forward_key {
            out.extend(s.from.iter().filter_map(|k| match k {
                crate::policy::KeySource::Header(h) => Some(h.clone()),
                crate::policy::KeySource::Query(_) => None,
            }));
        }
    }
    for (_, set) in defaults.sets() {
        out.extend(set.keys().map(|h| h.to_ascii_lowercase()));
    }
    out.into_iter().collect()
}

/// Whether the aggregation's path matches `path` (a concrete path).
pub(crate) fn path_matches(segments: &[Segment], path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    let parts: Vec<&str> = rest.split('/').collect();
    parts.len() == segments.len()
        && segments.iter().zip(&parts).all(|(s, p)| match s {
            Segment::Literal(l) => l == p,
            Segment::Param(_) => !p.is_empty(),
        })
}

/// Whether some path matches both aggregation paths.
fn paths_overlap(a: &[Segment], b: &[Segment]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Segment::Literal(x), Segment::Literal(y)) => x == y,
            _ => true,
        })
}

fn methods_overlap(a: &[String], b: &[String]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
}

/// Routes the aggregation would take requests from (an exact path, or a
/// prefix that is itself a path, that the aggregation's path matches), and
/// aggregations on one listener whose paths overlap. `routes` are every
/// valid route and aggregation route, each with where it is written.
pub(super) fn check_clashes(errs: &mut Errors<'_>, policy: &Policy, routes: &[(&Origin, &Route)]) {
    for (i, (o, r)) in routes.iter().enumerate() {
        let Backend::Aggregation(name) = &r.backend else { continue };
        let Some(agg) = policy.aggregations.get(name) else { continue };
        for (j, (other_o, other)) in routes.iter().enumerate() {
            if other.listener != r.listener || !methods_overlap(&r.methods, &other.methods) {
                continue;
            }
            let what = match &other.backend {
                Backend::Aggregation(other_name) if j > i => {
                    let Some(b) = policy.aggregations.get(other_name) else { continue };
                    if !paths_overlap(&agg.segments, &b.segments) {
                        continue;
                    }
                    format!("aggregation `{other_name}`'s path `{}`", b.path)
                }
                Backend::Aggregation(_) => continue,
                _ => {
                    let p = match &other.path {
                        PathMatch::Exact(p) => p.as_str(),
                        PathMatch::Prefix(p) => p.trim_end_matches('/'),
                        PathMatch::Regex(_) => continue,
                    };
                    if !path_matches(&agg.segments, p) {
                        continue;
                    }
                    format!("route `{}`'s path `{p}`", other.name)
                }
            };
            let at = errs.place(&other_o.key("name"));
            errs.at(
                &o.key("path"),
                format!(
                    "aggregation `{name}` (`{}`) and {what} (at {at}) match the same requests on listener `{}`; \
                     change one of the paths or their methods",
                    agg.path, r.listener
                ),
            );
        }
    }
}

//! `routes`: matches, backends, rewrites, header changes and `auth`, and
//! the precedence that orders them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::{auth, check_substitution, ratelimits, Refs};
use super::{check_name, did_you_mean, duration, header_name_ok, header_ops, regex, DefaultOps, Errors};
use crate::policy::model::{
    ApiKeySet, Auth, Backend, BasicUserSet, Cors, HeaderOps, HostRewrite, JwtProvider, Listener, PathMatch,
    PathRewrite, Policy, RateKey, RateLimit, Route, Service, ValueMatch, ValueRule,
};
use crate::policy::raw;
use crate::policy::source::Origin;

/// Route precedence, most specific first (SPEC, docs/policy.md#route-precedence):
/// the path first (exact paths, then regexes, longer first, then prefixes,
/// longer first), then routes with more host, header and query conditions,
/// then routes with methods before those without. Ties keep the order the
/// routes are written in (the caller sorts on this key and then that order).
///
/// Conditions rank above methods so that a header-versioned route
/// (`headers: {api-version: v2}`) beside one that lists methods takes the
/// requests it names, as Kong's router and Gateway API do.
pub(super) fn precedence(r: &Route) -> (u8, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>, bool) {
    let (kind, len) = match &r.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Regex(p) => (1, p.len()),
        PathMatch::Prefix(p) => (2, p.len()),
    };
    let conditions = r.headers.len() + usize::from(!r.hosts.is_empty()) + r.query.len();
    use std::cmp::Reverse as R;
    (kind, R(len), R(conditions), r.methods.is_empty())
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

/// Routes validated by the last load, by name, with what they were made
/// from: on a large policy an edit changes a few routes, and checking every
/// route again was most of a reload.
///
/// A route is reused when its text is equal to last time's and so is
/// everything else [`check_route`] reads ([`Context`]); any change to those
/// starts afresh. Routes with errors or warnings are never kept, so their
/// problems are reported on every load.
#[derive(Debug, Default)]
pub(crate) struct RouteCache {
    context: Option<Context>,
    routes: HashMap<String, Kept>,
    /// Counts validations, to find the routes the last one did not see.
    generation: u64,
}

/// A route as written, and what validating it gave.
#[derive(Debug)]
struct Kept {
    raw: raw::Route,
    route: Arc<Route>,
    /// The last validation that saw it.
    seen: u64,
}

/// Everything but the route itself that [`check_route`] reads, owned: the
/// listeners and services, the names written in the files, the defaults,
/// the auth providers and rate limits. Whoever makes `check_route` read
/// something more must add it here.
#[derive(Debug, PartialEq)]
struct Context {
    listeners: BTreeMap<String, Listener>,
    services: BTreeMap<String, Service>,
    defined: (BTreeSet<String>, BTreeSet<String>),
    defaults: DefaultOps,
    providers: ProviderContext,
    limits: (BTreeMap<String, RateLimit>, BTreeSet<String>),
}

/// The auth providers of every kind, and the names written.
#[derive(Debug, PartialEq)]
struct ProviderContext {
    jwt: BTreeMap<String, JwtProvider>,
    api_keys: BTreeMap<String, ApiKeySet>,
    basic: BTreeMap<String, BasicUserSet>,
    defined: BTreeSet<String>,
}

impl RouteCache {
    /// Begin one validation's use of the cache, given what routes can refer to.
    pub(super) fn start<'c>(
        &'c mut self,
        policy: &Policy,
        defined: &Defined<'_>,
        defaults: &DefaultOps,
        refs: &Refs<'_, '_>,
    ) -> CachedRoutes<'c> {
        let owned = |set: &BTreeSet<&str>| set.iter().map(|s| (*s).to_owned()).collect();
        let context = Context {
            listeners: policy.listeners.clone(),
            services: policy.services.clone(),
            defined: (owned(&defined.listeners), owned(&defined.services)),
            defaults: defaults.clone(),
            providers: ProviderContext {
                jwt: refs.providers.valid.clone(),
                api_keys: refs.providers.api_keys.clone(),
                basic: refs.providers.basic.clone(),
                defined: owned(&refs.providers.defined),
            },
            limits: (refs.limits.valid.clone(), owned(&refs.limits.defined)),
        };
        if self.context.as_ref() != Some(&context) {
            self.routes.clear();
            self.context = Some(context);
        }
        self.generation += 1;
        CachedRoutes { cache: self }
    }
}

/// One validation's use of the [`RouteCache`]. When it ends, routes this
/// validation did not see leave the cache.
pub(super) struct CachedRoutes<'c> {
    cache: &'c mut RouteCache,
}

impl CachedRoutes<'_> {
    /// Last time's result for `r`, if it was written the same way.
    pub(super) fn get(&mut self, r: &raw::Route) -> Option<Arc<Route>> {
        let kept = self.cache.routes.get_mut(r.name.as_str()).filter(|k| k.raw == *r)?;
        kept.seen = self.cache.generation;
        Some(Arc::clone(&kept.route))
    }

    /// Keep `route`, validated from `r` without a problem, for the next validation.
    pub(super) fn keep(&mut self, r: &raw::Route, route: &Arc<Route>) {
        let kept = Kept { raw: r.clone(), route: Arc::clone(route), seen: self.cache.generation };
        self.cache.routes.insert(r.name.clone(), kept);
    }
}

impl Drop for CachedRoutes<'_> {
    fn drop(&mut self) {
        let generation = self.cache.generation;
        self.cache.routes.retain(|_, k| k.seen == generation);
    }
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

/// A route checked against the rest of the policy. What it reads besides
/// `r` is in [`Context`], which decides when [`RouteCache`] may reuse it.
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
        respond,
        rewrite,
        timeout,
        idle_timeout,
        max_request_body,
        request_headers,
        request_query,
        request_id,
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
    let backend = match (service, split, respond) {
        (None, None, Some(raw::Respond { status, message })) => {
            let status =
                super::whole_number(errs, &o.key("respond").key("status"), Some(*status), "status", (200, 599), "");
            status.flatten().map(|status| Backend::Respond { status, message: message.clone().unwrap_or_default() })
        }
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            let key = if service.is_some() { "service" } else { "split" };
            errs.at(&o.key("respond"), format!("a route has `respond` or `{key}`, not both"));
            None
        }
        (Some(s), None, None) if known(s) => Some(Backend::Service(s.clone())),
        (Some(s), None, None) => {
            dangling(errs, &o.key("service"), s);
            None
        }
        (None, Some(targets), None) => {
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
            let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
            if targets.is_empty() {
                errs.at(&o.key("split"), "split is empty; list services with weights");
            } else if total == 0 {
                errs.at(&o.key("split"), "split weights add up to 0; give at least one a weight");
            } else if total > u64::from(u32::MAX) {
                // Envoy adds them up in 32 bits.
                errs.at(&o.key("split"), format!("split weights add up to more than {}; scale them down", u32::MAX));
            }
            Some(Backend::Split(out))
        }
        (Some(_), Some(_), None) => {
            errs.at(&o.key("split"), "a route has either `service` or `split`, not both");
            None
        }
        (None, None, None) => {
            errs.at(&o.key("name"), format!("route `{name}` needs `service`, `split` or `respond`"));
            None
        }
    };

    let (rewrite, host_rewrite) = match rewrite {
        None => (None, None),
        Some(raw::Rewrite { prefix, regex: re, substitution, host, auto_host }) => {
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
            let host = match (host, auto_host) {
                (Some(h), None | Some(false)) if h.is_empty() => {
                    errs.at(&w.key("host"), "rewrite.host is empty");
                    None
                }
                (Some(h), None | Some(false)) => Some(HostRewrite::Literal(h.clone())),
                (None, Some(true)) => Some(HostRewrite::Endpoint),
                (None, None | Some(false)) => None,
                (Some(_), Some(true)) => {
                    errs.at(&w.key("auto_host"), "a rewrite has either `host` or `auto_host`, not both");
                    None
                }
            };
            (path_rw, host)
        }
    };

    let route_timeout = duration(errs, &o.key("timeout"), timeout.as_ref()).flatten();
    let route_idle = duration(errs, &o.key("idle_timeout"), idle_timeout.as_ref()).flatten();
    let route_body = super::byte_size(errs, &o.key("max_request_body"), max_request_body.as_ref()).flatten();
    // The service's, or the longest of a split's services' (for a body
    // limit, the smallest: each of them accepts it).
    let service_timeout = of_services(backend.as_ref(), policy, |s| s.timeout).into_iter().max();
    let service_idle = of_services(backend.as_ref(), policy, |s| s.idle_timeout).into_iter().max();
    let service_body = of_services(backend.as_ref(), policy, |s| s.max_request_body).into_iter().min();
    let cors = cors.as_ref().and_then(|c| check_cors(errs, &o.key("cors"), c));
    let req = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
    let query_ops = super::query_ops(errs, &o.key("request_query"), request_query.as_ref());
    let request_id = request_id.as_ref().and_then(|raw::RequestId { header, echo }| {
        let lower = header.to_ascii_lowercase();
        if !header_name_ok(header) || lower == "host" || lower.starts_with(':') || lower == "x-request-id" {
            errs.at(&o.key("request_id").key("header"), format!("`{header}` cannot carry the request id"));
            return None;
        }
        Some((header.clone(), echo.unwrap_or(false)))
    });
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
    // A timeout of 0 is none at all (Envoy's meaning): any try fits in it.
    if let (Some(Some(r)), Some(t)) = (&retries, effective_timeout.filter(|t| !t.is_zero())) {
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
        idle_timeout: route_idle.or(service_idle),
        max_request_body: route_body.or(service_body),
        request_headers: defaults.request.merged(&service_request).merged(&req),
        request_query: query_ops,
        request_id,
        response_headers: defaults.response.merged(&service_response).merged(&resp),
        auth: auth?,
        rate_limits: rate_limits?,
        retries: retries?,
        cors,
        ip_restriction: ip_restriction?,
    })
}

/// What `pick` gives of each service the route sends to (none for an
/// aggregation or `respond`).
fn of_services<T>(backend: Option<&Backend>, policy: &Policy, pick: impl Fn(&Service) -> Option<T>) -> Vec<T> {
    let names: Vec<&str> = match backend {
        Some(Backend::Service(s)) => vec![s.as_str()],
        Some(Backend::Split(v)) => v.iter().map(|(s, _)| s.as_str()).collect(),
        Some(Backend::Aggregation(_) | Backend::Respond { .. }) | None => Vec::new(),
    };
    names.into_iter().filter_map(|s| policy.services.get(s).and_then(&pick)).collect()
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
    if let Some(list) = headers.as_ref().filter(|l| l.len() > 1 && l.iter().any(|h| h == "*")) {
        let i = list.iter().position(|h| h == "*").unwrap_or_default();
        errs.at(&o.key("headers").index(i), "`*` (the headers a preflight asks for, echoed) stands alone in `headers`");
    }
    let max_age = super::whole_seconds(errs, &o.key("max_age"), max_age.as_ref(), "max_age");
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
        if let (RateKey::Claim(c), Auth::Public | Auth::ApiKeys(_) | Auth::Basic(_)) = (&l.key, auth) {
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
        Backend::Aggregation(_) | Backend::Respond { .. } => None,
    };
    Some(from_service.unwrap_or_else(|| default.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::policy::{load_dir_cached, load_texts, LoadCache, Policy};

    const LISTENER: &str = "listeners:\n  - name: public\n    port: 8080\n";
    const ROUTES: &str = "routes:\n  - name: a\n    match: { prefix: /a }\n    service: s\n  \
                          - name: b\n    match: { prefix: /b }\n    service: s\n    rate_limit: rl\n";
    const SERVICES: &str = "services:\n  - name: s\n    url: http://127.0.0.1:1\n";
    const LIMITS: &str = "rate_limits:\n  - name: rl\n    limits: { minute: 5 }\n";

    /// Loads of `dir` with one cache, each checked against a load without.
    struct Folder {
        dir: tempfile::TempDir,
        cache: LoadCache,
    }

    impl Folder {
        fn load(&mut self, files: &[(&str, &str)]) -> Result<Policy, crate::policy::Diagnostics> {
            for entry in std::fs::read_dir(self.dir.path()).expect("read the folder") {
                std::fs::remove_file(entry.expect("an entry").path()).expect("remove");
            }
            for (name, text) in files {
                std::fs::write(self.dir.path().join(name), text).expect("write");
            }
            let cached = load_dir_cached(self.dir.path(), &mut self.cache);
            let texts: Vec<(String, String)> = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
            assert_eq!(cached, load_texts(&texts), "cached and uncached loads differ for {files:?}");
            cached
        }
    }

    fn route<'p>(p: &'p Policy, name: &str) -> &'p Arc<crate::policy::Route> {
        p.routes.iter().find(|r| r.name == name).expect("the route")
    }

    #[test]
    fn a_route_is_reused_only_while_it_and_all_it_reads_are_unchanged() {
        let mut f = Folder { dir: tempfile::tempdir().expect("a folder"), cache: LoadCache::default() };
        let files = |routes: &str, services: &str, limits: &str| -> [(&str, String); 4] {
            [
                ("l.yaml", LISTENER.to_owned()),
                ("r.yaml", routes.to_owned()),
                ("s.yaml", services.to_owned()),
                ("x.yaml", limits.to_owned()),
            ]
        };
        let load = |f: &mut Folder, set: &[(&str, String); 4]| {
            let borrowed: Vec<(&str, &str)> = set.iter().map(|(n, t)| (*n, t.as_str())).collect();
            f.load(&borrowed)
        };
        let first = load(&mut f, &files(ROUTES, SERVICES, LIMITS)).expect("valid");

        // One route edited: the other is the very same route.
        let edited = load(&mut f, &files(&ROUTES.replace("/a", "/a2"), SERVICES, LIMITS)).expect("valid");
        assert!(!Arc::ptr_eq(route(&first, "a"), route(&edited, "a")));
        assert!(Arc::ptr_eq(route(&first, "b"), route(&edited, "b")), "b reused");

        // What routes inherit from their service changes them all.
        let timeout = SERVICES.to_owned() + "    timeout: 3s\n";
        let slower = load(&mut f, &files(&ROUTES.replace("/a", "/a2"), &timeout, LIMITS)).expect("valid");
        assert!(!Arc::ptr_eq(route(&edited, "b"), route(&slower, "b")), "b checked again");
        assert_eq!(route(&slower, "b").timeout, Some(std::time::Duration::from_secs(3)));

        // A service or rate limit taken away is an error, not a stale route.
        let gone = load(&mut f, &files(ROUTES, "services: []\n", LIMITS)).expect_err("dangling service");
        assert!(gone.to_string().contains("service `s`, which is not defined"), "{gone}");
        let gone = load(&mut f, &files(ROUTES, SERVICES, "rate_limits: []\n")).expect_err("dangling limit");
        assert!(gone.to_string().contains("rate limit `rl` is not defined"), "{gone}");

        // Back as it was: valid again; a route removed and put back is
        // checked afresh.
        load(&mut f, &files(ROUTES, SERVICES, LIMITS)).expect("valid");
        let only_b = ROUTES.split_once("  - name: b").map(|(head, _)| head.to_owned()).expect("two routes");
        load(&mut f, &files(&only_b, SERVICES, LIMITS)).expect("valid");
        assert_eq!(f.cache.routes.routes.len(), 1, "b left the cache");
        load(&mut f, &files(ROUTES, SERVICES, LIMITS)).expect("valid");

        // A route with a problem is never kept, so it is reported each time.
        let bad = ROUTES.replace("/b }", "b }");
        for _ in 0..2 {
            let err = load(&mut f, &files(&bad, SERVICES, LIMITS)).expect_err("no leading slash");
            assert!(err.to_string().contains("`b` must start with `/`"), "{err}");
        }
    }
}

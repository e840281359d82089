//! The second pass: the merged files as a whole. Checks names, references,
//! durations, regexes and port clashes, collects every error, and builds the
//! [`Policy`] model.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

mod auth;

use super::keys::did_you_mean;
use super::model::{
    Auth, Backend, Discovery, Endpoint, HeaderOps, Listener, LoadBalancing, PathMatch, PathRewrite, Policy, Route,
    Service, ValueMatch, ValueRule,
};
use super::raw;
use super::source::{Origin, Parsed, SourceFile};
use super::{Diagnostic, Diagnostics};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
const LB_POLICIES: &[&str] = &["round_robin", "least_request", "random", "ring_hash"];

struct Errors<'a> {
    files: &'a [SourceFile],
    list: Vec<Diagnostic>,
}

impl Errors<'_> {
    fn at(&mut self, o: &Origin, message: impl Into<String>) {
        let file = &self.files[o.file];
        self.list.push(file.diagnostic(file.index().value(o.doc, &o.path), message));
    }
    /// Like [`Errors::at`], at the key of a mapping entry (for list items, the item).
    fn at_key(&mut self, o: &Origin, message: impl Into<String>) {
        let file = &self.files[o.file];
        self.list.push(file.diagnostic(file.index().key(o.doc, &o.path), message));
    }
    fn place(&self, o: &Origin) -> String {
        let file = &self.files[o.file];
        let pos = file.index().value(o.doc, &o.path);
        format!("{}:{}:{}", file.rel, pos.line, pos.column)
    }
}

/// Validate the parsed files as one policy.
pub(crate) fn validate(files: &[SourceFile], parsed: Parsed) -> Result<Policy, Diagnostics> {
    let mut errs = Errors { files, list: parsed.errors };
    let mut listeners = Vec::new();
    let mut services = Vec::new();
    let mut routes = Vec::new();
    let mut defaults: Vec<(Origin, raw::Defaults)> = Vec::new();
    let mut jwt = Vec::new();
    for (file, doc, pf) in parsed.docs {
        let root = Origin { file, doc, path: super::YamlPath::default() };
        let raw::PolicyFile { listeners: l, services: s, routes: r, defaults: d, auth: a } = pf;
        if let Some(a) = a {
            jwt.extend(a.jwt.into_iter().enumerate().map(|(i, x)| (root.key("auth").key("jwt").index(i), x)));
        }
        listeners.extend(l.into_iter().enumerate().map(|(i, x)| (root.key("listeners").index(i), x)));
        services.extend(s.into_iter().enumerate().map(|(i, x)| (root.key("services").index(i), x)));
        routes.extend(r.into_iter().enumerate().map(|(i, x)| (root.key("routes").index(i), x)));
        if let Some(d) = d {
            defaults.push((root.key("defaults"), d));
        }
    }

    let mut policy = Policy::default();
    let providers = auth::check_providers(&mut errs, &jwt);
    let defaults = check_defaults(&mut errs, defaults, &providers);
    for (o, l) in &listeners {
        if let Some(l) = check_listener(&mut errs, o, l) {
            insert_unique(&mut errs, &mut policy.listeners, o, l.name.clone(), l, "listener", &listeners);
        }
    }
    check_port_clashes(&mut errs, &listeners, &policy);
    for (o, s) in &services {
        if let Some(s) = check_service(&mut errs, o, s, &providers) {
            insert_unique(&mut errs, &mut policy.services, o, s.name.clone(), s, "service", &services);
        }
    }
    // Names written in the files, valid or not: a route naming a listener or
    // service that has errors of its own gets no second, misleading error.
    let defined = Defined {
        listeners: listeners.iter().map(|(_, l)| l.name.as_str()).collect(),
        services: services.iter().map(|(_, s)| s.name.as_str()).collect(),
    };
    let mut seen_routes: HashMap<&str, &Origin> = HashMap::new();
    let mut ordered = Vec::new();
    for (seq, (o, r)) in routes.iter().enumerate() {
        if let Some(first) = seen_routes.get(r.name.as_str()) {
            let msg =
                format!("route `{}` is defined twice; the other is at {}", r.name, errs.place(&first.key("name")));
            errs.at(&o.key("name"), msg);
            continue;
        }
        seen_routes.insert(&r.name, o);
        if let Some(route) = check_route(&mut errs, o, r, &policy, &defined, &defaults, &providers) {
            ordered.push((seq, route));
        }
    }
    ordered.sort_by(|(sa, a), (sb, b)| precedence(a).cmp(&precedence(b)).then(sa.cmp(sb)));
    policy.routes = ordered.into_iter().map(|(_, r)| r).collect();
    policy.read_files = providers.read_files;
    policy.jwt_providers = providers.valid;

    if errs.list.is_empty() {
        Ok(policy)
    } else {
        let order: HashMap<&str, usize> = files.iter().enumerate().map(|(i, f)| (f.rel.as_str(), i)).collect();
        errs.list.sort_by_key(|d| (order.get(d.file.as_str()).copied(), d.line, d.column));
        errs.list.dedup();
        Err(Diagnostics(errs.list))
    }
}

/// Route precedence, most specific first, as Gateway API implementations
/// order them: exact paths, then regexes, then longer prefixes; then routes
/// with method, header and query conditions before those without.
fn precedence(r: &Route) -> (u8, std::cmp::Reverse<usize>, bool, std::cmp::Reverse<usize>, std::cmp::Reverse<usize>) {
    let (kind, len) = match &r.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Regex(p) => (1, p.len()),
        PathMatch::Prefix(p) => (2, p.len()),
    };
    use std::cmp::Reverse as R;
    (kind, R(len), r.methods.is_empty(), R(r.headers.len()), R(r.query.len()))
}

fn insert_unique<T, R>(
    errs: &mut Errors<'_>,
    map: &mut BTreeMap<String, T>,
    o: &Origin,
    name: String,
    value: T,
    what: &str,
    all: &[(Origin, R)],
) where
    R: Named,
{
    use std::collections::btree_map::Entry;
    match map.entry(name) {
        Entry::Vacant(v) => {
            v.insert(value);
        }
        Entry::Occupied(e) => {
            let name = e.key();
            let first = all.iter().find(|(_, r)| r.name() == name).map(|(fo, _)| errs.place(&fo.key("name")));
            let msg = format!("{what} `{name}` is defined twice; the other is at {}", first.unwrap_or_default());
            errs.at(&o.key("name"), msg);
        }
    }
}

trait Named {
    fn name(&self) -> &str;
}
impl Named for raw::Listener {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for raw::Service {
    fn name(&self) -> &str {
        &self.name
    }
}

fn check_name(errs: &mut Errors<'_>, o: &Origin, name: &str, what: &str) -> bool {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.len() <= 128;
    if !ok {
        errs.at(&o.key("name"), format!("{what} name `{name}` must be 1-128 letters, digits, `-`, `_` or `.`"));
    }
    ok
}

fn duration(errs: &mut Errors<'_>, o: &Origin, text: Option<&String>) -> Option<Option<Duration>> {
    let Some(text) = text else { return Some(None) };
    match parse_duration(text) {
        Ok(d) => Some(Some(d)),
        Err(msg) => {
            errs.at(o, msg);
            None
        }
    }
}

/// `250ms`, `5s`, `1m`, `2h`, `1m30s`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a duration; write it like 250ms, 5s, 1m or 2h");
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) || t.contains(char::is_whitespace) {
        return Err(bad());
    }
    humantime::parse_duration(t).map_err(|_| bad())
}

fn regex(errs: &mut Errors<'_>, o: &Origin, pattern: &str) -> bool {
    // Syntax only: compiling a matcher just to throw it away is the slowest
    // part of validating a large folder.
    match regex_syntax::Parser::new().parse(pattern) {
        Ok(_) => true,
        Err(e) => {
            let detail = e.to_string();
            let last = detail.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("invalid");
            errs.at(o, format!("`{pattern}` is not a valid regex: {}", last.trim().trim_start_matches("error: ")));
            false
        }
    }
}

fn check_listener(errs: &mut Errors<'_>, o: &Origin, l: &raw::Listener) -> Option<Listener> {
    let raw::Listener { name, port, address, hosts, fleets } = l;
    let mut ok = check_name(errs, o, name, "listener");
    if *port == 0 {
        errs.at(&o.key("port"), "port must be between 1 and 65535");
        ok = false;
    }
    let address = address.clone().unwrap_or_else(|| "0.0.0.0".to_owned());
    if address.parse::<IpAddr>().is_err() {
        errs.at(&o.key("address"), format!("address `{address}` is not an IP address (use 0.0.0.0 for all)"));
        ok = false;
    }
    let hosts = hosts.clone().unwrap_or_else(|| vec!["*".to_owned()]);
    if hosts.is_empty() {
        errs.at(&o.key("hosts"), "hosts is empty, so nothing would match; omit it to accept every host");
        ok = false;
    }
    for (i, h) in hosts.iter().enumerate() {
        let stars = h.matches('*').count();
        let wild_ok = stars == 0
            || (stars == 1
                && (h == "*" || h.starts_with("*.") || h.starts_with("*-") || h.ends_with(".*") || h.ends_with(":*")));
        if h.is_empty() || !wild_ok || h.contains(char::is_whitespace) {
            errs.at(
                &o.key("hosts").index(i),
                format!("host `{h}` is not a domain; `*` may only lead or trail (`*.example.com`)"),
            );
            ok = false;
        } else if hosts[..i].iter().any(|x| x.eq_ignore_ascii_case(h)) {
            errs.at(&o.key("hosts").index(i), format!("host `{h}` is listed twice"));
            ok = false;
        }
    }
    if let Some(f) = fleets {
        if f.is_empty() {
            errs.at(&o.key("fleets"), "fleets is empty, so no Envoy would get this listener; omit it for all");
            ok = false;
        }
    }
    ok.then(|| Listener { name: name.clone(), address, port: *port, hosts, fleets: fleets.clone() })
}

fn check_port_clashes(errs: &mut Errors<'_>, all: &[(Origin, raw::Listener)], policy: &Policy) {
    let mut seen: Vec<(&Origin, &Listener)> = Vec::new();
    for (o, l) in all {
        let Some(valid) = policy.listeners.get(&l.name) else { continue };
        if seen.iter().any(|(_, s)| s.name == valid.name) {
            continue; // a duplicate name, reported already
        }
        let wildcard = |a: &str| a == "0.0.0.0" || a == "::";
        let fleets_overlap = |a: &Option<Vec<String>>, b: &Option<Vec<String>>| match (a, b) {
            (Some(a), Some(b)) => a.iter().any(|x| b.contains(x)),
            _ => true,
        };
        if let Some((fo, other)) = seen.iter().find(|(_, s)| {
            s.port == valid.port
                && (s.address == valid.address || wildcard(&s.address) || wildcard(&valid.address))
                && fleets_overlap(&s.fleets, &valid.fleets)
        }) {
            let msg = format!(
                "port {} is already used by listener `{}` at {}",
                valid.port,
                other.name,
                errs.place(&fo.key("port"))
            );
            errs.at(&o.key("port"), msg);
        }
        seen.push((o, valid));
    }
}

fn check_service(
    errs: &mut Errors<'_>,
    o: &Origin,
    s: &raw::Service,
    providers: &auth::Providers<'_>,
) -> Option<Service> {
    let raw::Service { name, url, endpoints, connect_timeout, timeout, load_balancing, auth } = s;
    let mut ok = check_name(errs, o, name, "service");
    let auth = match auth {
        None => None,
        Some(a) => {
            let resolved = auth::resolve(errs, &o.key("auth"), a, providers);
            ok &= resolved.is_some();
            resolved
        }
    };
    let (eps, tls) = match (url, endpoints) {
        (Some(u), None) => parse_url(errs, &o.key("url"), u, false).map_or((Vec::new(), false), |(e, t)| (vec![e], t)),
        (None, Some(list)) => {
            if list.is_empty() {
                errs.at(&o.key("endpoints"), "endpoints is empty; list at least one host:port");
            }
            let eps: Vec<_> = list
                .iter()
                .enumerate()
                .filter_map(|(i, e)| parse_endpoint(errs, &o.key("endpoints").index(i), e))
                .collect();
            (eps, false)
        }
        (Some(_), Some(_)) => {
            errs.at(&o.key("endpoints"), "a service has either `url` or `endpoints`, not both");
            (Vec::new(), false)
        }
        (None, None) => {
            errs.at(&o.key("name"), format!("service `{name}` needs `url` or `endpoints`"));
            (Vec::new(), false)
        }
    };
    ok &= !eps.is_empty();
    let connect = duration(errs, &o.key("connect_timeout"), connect_timeout.as_ref());
    let timeout = duration(errs, &o.key("timeout"), timeout.as_ref());
    let lb = match load_balancing.as_deref() {
        None | Some("round_robin") => Some(LoadBalancing::RoundRobin),
        Some("least_request") => Some(LoadBalancing::LeastRequest),
        Some("random") => Some(LoadBalancing::Random),
        Some("ring_hash") => Some(LoadBalancing::RingHash),
        Some(other) => {
            let hint = did_you_mean(other, LB_POLICIES).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(
                &o.key("load_balancing"),
                format!("unknown load_balancing `{other}` (one of {}){hint}", LB_POLICIES.join(", ")),
            );
            None
        }
    };
    let (Some(connect), Some(timeout), Some(lb)) = (connect, timeout, lb) else { return None };
    if connect == Some(Duration::ZERO) {
        errs.at(&o.key("connect_timeout"), "connect_timeout must be more than 0");
        return None;
    }
    let is_ip = |h: &str| h.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
    let discovery = if eps.iter().all(|e| is_ip(&e.host)) {
        Discovery::Eds
    } else if url.is_some() {
        Discovery::LogicalDns
    } else {
        Discovery::StrictDns
    };
    ok.then(|| Service {
        name: name.clone(),
        endpoints: eps,
        discovery,
        tls,
        connect_timeout: connect.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
        timeout,
        load_balancing: lb,
        auth,
    })
}

/// A service URL (`allow_path` false: scheme, host and port only) or a
/// URL to fetch from.
fn parse_url(errs: &mut Errors<'_>, o: &Origin, text: &str, allow_path: bool) -> Option<(Endpoint, bool)> {
    let u = match url::Url::parse(text) {
        Ok(u) => u,
        Err(e) => {
            errs.at(o, format!("`{text}` is not a URL ({e}); write it like http://orders:3000"));
            return None;
        }
    };
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        other => {
            errs.at(o, format!("url scheme `{other}` is not supported; use http or https"));
            return None;
        }
    };
    if !allow_path && (!(u.path().is_empty() || u.path() == "/") || u.query().is_some()) {
        errs.at(
            o,
            format!(
                "url `{text}` has a path; a service is only scheme://host:port (use a route `rewrite` to change paths)"
            ),
        );
        return None;
    }
    let Some(host) = u.host_str() else {
        errs.at(o, format!("url `{text}` has no host"));
        return None;
    };
    let port = u.port_or_known_default().unwrap_or(80);
    Some((Endpoint { host: host.trim_matches(['[', ']']).to_owned(), port }, tls))
}

fn parse_endpoint(errs: &mut Errors<'_>, o: &Origin, text: &str) -> Option<Endpoint> {
    let parsed = text.rsplit_once(':').and_then(|(h, p)| {
        let host = h.trim_matches(['[', ']']);
        let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
        let valid_host = host.parse::<IpAddr>().is_ok()
            || (!host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'));
        valid_host.then(|| Endpoint { host: host.to_owned(), port })
    });
    if parsed.is_none() {
        errs.at(o, format!("endpoint `{text}` is not host:port (like 10.0.0.5:3000 or orders:3000)"));
    }
    parsed
}

struct DefaultOps {
    request: HeaderOps,
    response: HeaderOps,
    auth: Auth,
}

fn check_defaults(
    errs: &mut Errors<'_>,
    all: Vec<(Origin, raw::Defaults)>,
    providers: &auth::Providers<'_>,
) -> DefaultOps {
    let mut out = DefaultOps { request: HeaderOps::default(), response: HeaderOps::default(), auth: Auth::Public };
    if let Some((second, _)) = all.get(1) {
        let msg = format!("`defaults` is given twice; the other is at {}", errs.place(&all[0].0));
        errs.at(second, msg);
    }
    if let Some((o, d)) = all.into_iter().next() {
        let raw::Defaults { request_headers, response_headers, auth } = d;
        out.request = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
        out.response = header_ops(errs, &o.key("response_headers"), response_headers.as_ref(), false);
        if let Some(a) = auth {
            out.auth = auth::resolve(errs, &o.key("auth"), &a, providers).unwrap_or_default();
        }
    }
    out
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn header_ops(errs: &mut Errors<'_>, o: &Origin, ops: Option<&raw::HeaderOps>, request: bool) -> HeaderOps {
    let Some(raw::HeaderOps { add, remove }) = ops else { return HeaderOps::default() };
    let check = |errs: &mut Errors<'_>, at: &Origin, name: &str| {
        let lower = name.to_ascii_lowercase();
        if !header_name_ok(name) {
            errs.at_key(at, format!("`{name}` is not a valid header name"));
        } else if request && (lower == "host" || lower.starts_with(':')) {
            errs.at_key(at, format!("`{name}` cannot be changed here; use `rewrite: {{ host: ... }}`"));
        }
    };
    for name in add.keys() {
        check(errs, &o.key("add").key(name), name);
    }
    for (i, name) in remove.iter().enumerate() {
        check(errs, &o.key("remove").index(i), name);
    }
    HeaderOps { add: add.clone(), remove: remove.clone() }
}

fn value_matches(
    errs: &mut Errors<'_>,
    o: &Origin,
    items: Option<&BTreeMap<String, raw::ValueMatch>>,
    header: bool,
) -> Vec<ValueMatch> {
    let mut out = Vec::new();
    for (name, m) in items.into_iter().flatten() {
        let at = o.key(name);
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
struct Defined<'a> {
    listeners: std::collections::BTreeSet<&'a str>,
    services: std::collections::BTreeSet<&'a str>,
}

fn check_route(
    errs: &mut Errors<'_>,
    o: &Origin,
    r: &raw::Route,
    policy: &Policy,
    defined: &Defined<'_>,
    defaults: &DefaultOps,
    providers: &auth::Providers<'_>,
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
    } = r;
    let before = errs.list.len();
    check_name(errs, o, name, "route");

    let listener = match listener {
        Some(l) if policy.listeners.contains_key(l) => Some(l.clone()),
        Some(l) if defined.listeners.contains(l.as_str()) => None, // reported at the listener
        Some(l) => {
            let names: Vec<&str> = policy.listeners.keys().map(String::as_str).collect();
            let hint = did_you_mean(l, &names).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(&o.key("listener"), format!("route `{name}` names listener `{l}`, which is not defined{hint}"));
            None
        }
        None if defined.listeners.len() == 1 => policy.listeners.keys().next().cloned(),
        None if defined.listeners.is_empty() => {
            errs.at(
                &o.key("name"),
                format!("route `{name}` has no listener to be served on; define one under `listeners`"),
            );
            None
        }
        None => {
            let names: Vec<&str> = defined.listeners.iter().copied().collect();
            errs.at(
                &o.key("name"),
                format!("route `{name}` must say which listener serves it (`listener:` one of {})", names.join(", ")),
            );
            None
        }
    };

    let m = o.key("match");
    let raw::Match { prefix, path, regex: re, methods, headers, query } = matcher;
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
    let mut method_list = Vec::new();
    for (i, meth) in methods.iter().flatten().enumerate() {
        let up = meth.to_ascii_uppercase();
        if METHODS.contains(&up.as_str()) {
            if !method_list.contains(&up) {
                method_list.push(up);
            }
        } else {
            let hint = did_you_mean(&up, METHODS).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(&m.key("methods").index(i), format!("`{meth}` is not an HTTP method{hint}"));
        }
    }
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
                (None, Some(r), Some(s)) => regex(errs, &w.key("regex"), r)
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
        None => None,
    };
    let req = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
    let resp = header_ops(errs, &o.key("response_headers"), response_headers.as_ref(), false);
    let auth = route_auth_of(errs, o, route_auth.as_ref(), backend.as_ref(), policy, defaults, providers);

    if errs.list.len() > before {
        return None;
    }
    Some(Route {
        name: name.clone(),
        listener: listener?,
        path: path_match?,
        methods: method_list,
        headers,
        query,
        backend: backend?,
        rewrite,
        host_rewrite,
        timeout: route_timeout.or(service_timeout),
        request_headers: defaults.request.merged(&req),
        response_headers: defaults.response.merged(&resp),
        auth: auth?,
    })
}

/// A route's `auth`, else its service's, else the defaults'. A split whose
/// services disagree must say on the route.
fn route_auth_of(
    errs: &mut Errors<'_>,
    o: &Origin,
    own: Option<&raw::AuthRef>,
    backend: Option<&Backend>,
    policy: &Policy,
    defaults: &DefaultOps,
    providers: &auth::Providers<'_>,
) -> Option<Auth> {
    if let Some(a) = own {
        return auth::resolve(errs, &o.key("auth"), a, providers);
    }
    let of = |s: &str| policy.services.get(s).and_then(|s| s.auth.clone());
    let service_auth = match backend? {
        Backend::Service(s) => of(s),
        Backend::Split(targets) => {
            let all: Vec<Option<Auth>> = targets.iter().map(|(s, _)| of(s)).collect();
            if all.windows(2).any(|w| w[0] != w[1]) {
                errs.at(
                    &o.key("split"),
                    "the services of this split have different `auth`; set `auth` on the route to say which applies",
                );
                return None;
            }
            all.into_iter().next().flatten()
        }
    };
    Some(service_auth.unwrap_or_else(|| defaults.auth.clone()))
}

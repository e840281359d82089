//! The second pass: the merged files as a whole. Checks names, references,
//! durations, regexes and port clashes, collects every error, and builds the
//! [`Policy`] model. One submodule per part of the format; what they share
//! (the error list, names, durations, regexes, header changes) is here.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

mod aggregations;
mod auth;
mod listeners;
mod ratelimits;
mod resilience;
mod routes;
mod services;
mod shadowed;
mod tls;

use super::keys::did_you_mean;
use super::model::{AccessLog, AccessLogging, Auth, Cidr, HeaderOps, IpRestriction, LogFormat, Policy, Tracing};
use super::raw;
use super::source::{Origin, Parsed, SourceFile};
use super::{Diagnostic, Diagnostics};

use aggregations::check_aggregation;
use listeners::{check_listener, check_port_clashes};
pub(crate) use routes::RouteCache;
use routes::{check_route, precedence, Defined};
use services::check_service;
pub(crate) use services::endpoint_host_ok;

/// What validation collects besides the model: errors, warnings, and the
/// other files it read.
struct Errors<'a> {
    files: &'a [SourceFile],
    list: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    read_files: Vec<std::path::PathBuf>,
}

impl Errors<'_> {
    /// A problem that does not stop the policy from loading.
    fn warn(&mut self, o: &Origin, message: impl Into<String>) {
        let file = &self.files[o.file];
        self.warnings.push(file.diagnostic(file.index().value(o.doc, &o.path), message));
    }
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

/// Validate the parsed files as one policy, reusing from `cache` (when there
/// is one to keep) the routes that, with all they refer to, are as the last
/// validation saw them.
pub(crate) fn validate(
    files: &[SourceFile],
    parsed: Parsed,
    cache: Option<&mut RouteCache>,
) -> Result<Policy, Diagnostics> {
    let mut errs = Errors { files, list: parsed.errors, warnings: Vec::new(), read_files: Vec::new() };
    let mut listeners = Vec::new();
    let mut services = Vec::new();
    let mut routes = Vec::new();
    let mut defaults: Vec<(Origin, raw::Defaults)> = Vec::new();
    let mut jwt = Vec::new();
    let mut api_keys = Vec::new();
    let mut basic = Vec::new();
    let mut rate_limits = Vec::new();
    let mut aggregations = Vec::new();
    let kong_origins = parsed.origins;
    for (file, doc, pf) in &parsed.docs {
        let (file, doc) = (*file, *doc);
        // Where item `i` of list `key` is written (for a converted Kong
        // file: the Kong entity it came from).
        let at = |key: &[&'static str], i: usize| {
            let path = key.iter().fold(super::YamlPath::default(), |p, k| p.key(*k)).index(i);
            kong_origins.origin(file, doc, path)
        };
        let raw::PolicyFile {
            listeners: l,
            services: s,
            routes: r,
            defaults: d,
            auth: a,
            rate_limits: rl,
            aggregations: ag,
        } = &**pf;
        aggregations.extend(ag.iter().cloned().enumerate().map(|(i, x)| (at(&["aggregations"], i), x)));
        rate_limits.extend(rl.iter().cloned().enumerate().map(|(i, x)| (at(&["rate_limits"], i), x)));
        if let Some(a) = a {
            jwt.extend(a.jwt.iter().cloned().enumerate().map(|(i, x)| (at(&["auth", "jwt"], i), x)));
            api_keys.extend(a.api_keys.iter().cloned().enumerate().map(|(i, x)| (at(&["auth", "api_keys"], i), x)));
            basic.extend(a.basic.iter().cloned().enumerate().map(|(i, x)| (at(&["auth", "basic"], i), x)));
        }
        listeners.extend(l.iter().cloned().enumerate().map(|(i, x)| (at(&["listeners"], i), x)));
        services.extend(s.iter().cloned().enumerate().map(|(i, x)| (at(&["services"], i), x)));
        routes.extend(r.iter().enumerate().map(|(i, x)| (at(&["routes"], i), x)));
        if let Some(d) = d {
            defaults.push((Origin { file, doc, path: super::YamlPath::default().key("defaults") }, d.clone()));
        }
    }

    let mut policy = Policy::default();
    let providers = auth::check_providers(&mut errs, &jwt, &api_keys, &basic);
    let limits = ratelimits::check_rate_limits(&mut errs, &rate_limits);
    let refs = Refs { providers: &providers, limits: &limits };
    let defaults = check_defaults(&mut errs, defaults, &refs);
    for (o, l) in &listeners {
        if let Some(l) = check_listener(&mut errs, o, l) {
            insert_unique(&mut errs, &mut policy.listeners, o, l.name.clone(), l, "listener", &listeners);
        }
    }
    check_port_clashes(&mut errs, &listeners, &policy);
    for (o, s) in &services {
        if let Some(s) = check_service(&mut errs, o, s, &refs) {
            insert_unique(&mut errs, &mut policy.services, o, s.name.clone(), s, "service", &services);
        }
    }
    // Names written in the files, valid or not: a route naming a listener or
    // service that has errors of its own gets no second, misleading error.
    let defined = Defined {
        listeners: listeners.iter().map(|(_, l)| l.name.as_str()).collect(),
        services: services.iter().map(|(_, s)| s.name.as_str()).collect(),
    };
    let mut seen_routes: HashMap<&str, &Origin> = HashMap::with_capacity(routes.len());
    let mut ordered = Vec::with_capacity(routes.len());
    let mut cached = cache.map(|c| c.start(&policy, &defined, &defaults, &refs));
    for (seq, (o, r)) in routes.iter().enumerate() {
        if let Some(first) = seen_routes.get(r.name.as_str()) {
            let msg =
                format!("route `{}` is defined twice; the other is at {}", r.name, errs.place(&first.key("name")));
            errs.at(&o.key("name"), msg);
            continue;
        }
        seen_routes.insert(&r.name, o);
        let route = cached.as_mut().and_then(|c| c.get(r)).or_else(|| {
            let (errors, warnings) = (errs.list.len(), errs.warnings.len());
            let route = Arc::new(check_route(&mut errs, o, r, &policy, &defined, &defaults, &refs)?);
            // Only a route with nothing to say is kept: problems are
            // reported again on every load.
            if let Some(c) = cached.as_mut().filter(|_| errs.list.len() == errors && errs.warnings.len() == warnings) {
                c.keep(r, &route);
            }
            Some(route)
        });
        if let Some(route) = route {
            ordered.push((seq, o, route));
        }
    }
    // An aggregation is served as a route, so the two share one namespace.
    for (seq, (o, a)) in aggregations.iter().enumerate() {
        if let Some(first) = seen_routes.get(a.name.as_str()) {
            let msg = format!(
                "aggregation `{}` has the name of a route or aggregation at {}; names are shared by both",
                a.name,
                errs.place(&first.key("name"))
            );
            errs.at(&o.key("name"), msg);
            continue;
        }
        seen_routes.insert(&a.name, o);
        if let Some((agg, route)) = check_aggregation(&mut errs, o, a, &policy, &defined, &defaults, &refs) {
            policy.aggregations.insert(agg.name.clone(), agg);
            ordered.push((routes.len() + seq, o, Arc::new(route)));
        }
    }
    {
        let all: Vec<(&Origin, &crate::policy::Route)> = ordered.iter().map(|(_, o, r)| (*o, &**r)).collect();
        aggregations::check_clashes(&mut errs, &policy, &all);
    }
    // Sort keys, not routes: moving thousands of large routes about in a
    // sort was a tenth of a 5,000-route reload.
    let keys: Vec<_> = ordered.iter().map(|(seq, _, r)| (precedence(r), *seq)).collect();
    let mut by_precedence: Vec<usize> = (0..ordered.len()).collect();
    by_precedence.sort_unstable_by_key(|&i| keys[i]);
    {
        let placed: Vec<(&Origin, &crate::policy::Route)> =
            by_precedence.iter().map(|&i| (ordered[i].1, &*ordered[i].2)).collect();
        shadowed::check(&mut errs, &placed);
    }
    let mut routes: Vec<Option<Arc<crate::policy::Route>>> = ordered.into_iter().map(|(_, _, r)| Some(r)).collect();
    policy.routes = by_precedence.into_iter().filter_map(|i| routes[i].take()).collect();
    policy.read_files = providers.read_files.into_iter().chain(std::mem::take(&mut errs.read_files)).collect();
    policy.warnings = std::mem::take(&mut errs.warnings);
    policy.jwt_providers = providers.valid;
    policy.api_keys = providers.api_keys;
    policy.basic_users = providers.basic;
    policy.rate_limits = limits.valid;
    policy.access_log = defaults.access_log.clone();
    policy.tracing = defaults.tracing.clone();

    if errs.list.is_empty() {
        Ok(policy)
    } else {
        let order: HashMap<&str, usize> = files.iter().enumerate().map(|(i, f)| (f.rel.as_str(), i)).collect();
        errs.list.sort_by_key(|d| (order.get(d.file.as_str()).copied(), d.line, d.column));
        errs.list.dedup();
        Err(Diagnostics(errs.list))
    }
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
    parsed(errs, o, text, parse_duration)
}

/// `text` read by `parse`, its error reported at `o`: `Some(None)` when
/// there is no text, `None` when it does not read.
fn parsed<T>(
    errs: &mut Errors<'_>,
    o: &Origin,
    text: Option<&String>,
    parse: fn(&str) -> Result<T, String>,
) -> Option<Option<T>> {
    let Some(text) = text else { return Some(None) };
    match parse(text) {
        Ok(v) => Some(Some(v)),
        Err(msg) => {
            errs.at(o, msg);
            None
        }
    }
}

/// The longest duration a policy may give: 100 years (of 365.25 days).
/// Every Envoy field legate writes one to takes it (Envoy's own ceilings,
/// 2^62 ms for a JWKS cache and 2^63 ns elsewhere, are about 146 and 292
/// years), and so does the margin legate adds to an aggregation's timeout.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000);

/// `250ms`, `5s`, `1m`, `2h`, `1m30s`: whole milliseconds (Envoy counts
/// timeouts in them, and would read `500us` as 0, no timeout at all), up to
/// [`MAX_DURATION`].
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a duration; write it like 250ms, 5s, 1m or 2h");
    if t.is_empty() || !t.starts_with(|c: char| c.is_ascii_digit()) || t.contains(char::is_whitespace) {
        return Err(bad());
    }
    let d = humantime::parse_duration(t).map_err(|_| bad())?;
    if d.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("`{text}` is finer than Envoy counts; durations are whole milliseconds (1ms at least)"));
    }
    if d > MAX_DURATION {
        return Err(format!("`{text}` is too long; a duration is at most 100 years ({}s)", MAX_DURATION.as_secs()));
    }
    Ok(d)
}

/// A duration Envoy counts in whole seconds (`clock_skew`, CORS `max_age`).
fn whole_seconds(errs: &mut Errors<'_>, o: &Origin, text: Option<&String>, what: &str) -> Option<Option<Duration>> {
    let d = duration(errs, o, text)?;
    if d.is_some_and(|d| d.subsec_nanos() != 0) {
        errs.at(o, format!("{what} is whole seconds (Envoy counts no finer), not {}", text.map_or("", |t| t.as_str())));
        return None;
    }
    Some(d)
}

/// A size in bytes: `512B`, `64KiB`, `10MiB`, `1GiB` (powers of 1024) or
/// `64KB`, `10MB`, `1GB` (powers of 1000), from 1 byte to 4294967295
/// (Envoy counts a body limit in 32 bits).
fn byte_size(errs: &mut Errors<'_>, o: &Origin, text: Option<&String>) -> Option<Option<u32>> {
    parsed(errs, o, text, parse_size)
}

/// See [`byte_size`].
pub(crate) fn parse_size(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a size; write it like 512KiB, 10MiB or 1GB");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let unit: u64 = match &t[digits..] {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    match n.checked_mul(unit).and_then(|b| u32::try_from(b).ok()) {
        Some(0) => Err(format!("`{text}` would refuse every body; the smallest size is 1B")),
        Some(b) => Ok(b),
        None => Err(format!("`{text}` is more than 4294967295 bytes, the most Envoy counts")),
    }
}

/// A whole number from `min` to `max` (`why`: what a value below `min`
/// would do, when that is the reason for it).
fn whole_number(
    errs: &mut Errors<'_>,
    o: &Origin,
    n: Option<i64>,
    what: &str,
    (min, max): (u32, u32),
    why: &str,
) -> Option<Option<u32>> {
    let Some(n) = n else { return Some(None) };
    match u32::try_from(n) {
        Ok(v) if (min..=max).contains(&v) => Some(Some(v)),
        _ => {
            let why = if n < i64::from(min) && !why.is_empty() { format!(" ({why})") } else { String::new() };
            errs.at(o, format!("{what} must be a whole number from {min} to {max}, not {n}{why}"));
            None
        }
    }
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

/// A rewrite's substitution as RE2 (and so Envoy) checks it: `\\N` may
/// only name a group the pattern has, and a backslash is followed by a digit
/// or another backslash.
fn check_substitution(errs: &mut Errors<'_>, o: &Origin, pattern: &str, text: &str) -> bool {
    let groups = regex_syntax::Parser::new().parse(pattern).map_or(0, |h| h.properties().explicit_captures_len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            continue;
        }
        match chars.next() {
            Some('\\') => {}
            Some(d) if d.is_ascii_digit() => {
                let n = d.to_digit(10).unwrap_or(0) as usize;
                if n > groups {
                    errs.at(
                        o,
                        format!(
                            "`\\{n}` names group {n}, but the regex has {groups} (RE2, which Envoy runs, rejects it)"
                        ),
                    );
                    return false;
                }
            }
            _ => {
                errs.at(o, "a `\\` in a substitution must be followed by a group number or another `\\`");
                return false;
            }
        }
    }
    true
}

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// A list of HTTP methods at `o` (each checked, uppercased, without repeats).
fn methods(errs: &mut Errors<'_>, o: &Origin, list: Option<&Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, m) in list.into_iter().flatten().enumerate() {
        let up = m.to_ascii_uppercase();
        if METHODS.contains(&up.as_str()) {
            if !out.contains(&up) {
                out.push(up);
            }
        } else {
            let hint = did_you_mean(&up, METHODS).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(&o.index(i), format!("`{m}` is not an HTTP method{hint}"));
        }
    }
    out
}

/// How to speak of what a `NameRef` names, for its messages.
struct RefWords {
    /// `auth provider`
    noun: &'static str,
    /// `providers`
    plural: &'static str,
    /// `auth`
    key: &'static str,
    /// where they are defined: `` `auth: jwt:` ``
    home: &'static str,
}

/// Resolve an `auth:` / `rate_limit:` value at `o`: `Some(None)` for `none`,
/// `Some(Some(names))` for a name or a list, `None` when it names something
/// undefined (reported here) or something with errors of its own (reported
/// there).
fn resolve_names(
    errs: &mut Errors<'_>,
    o: &Origin,
    r: &raw::NameRef,
    valid: &[&str],
    defined: &std::collections::BTreeSet<&str>,
    words: &RefWords,
) -> Option<Option<Vec<String>>> {
    let RefWords { noun, plural, key, home } = words;
    let known = |errs: &mut Errors<'_>, at: &Origin, name: &str| -> Option<String> {
        if valid.contains(&name) {
            return Some(name.to_owned());
        }
        if !defined.contains(name) {
            let msg = if valid.is_empty() {
                format!("{noun} `{name}` is not defined (define it under {home}, or use `none`)")
            } else {
                let hint = did_you_mean(name, valid).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
                format!("{noun} `{name}` is not defined{hint}")
            };
            errs.at(at, msg);
        }
        None
    };
    match r {
        raw::NameRef::One(n) if n == "none" => Some(None),
        raw::NameRef::One(n) => known(errs, o, n).map(|n| Some(vec![n])),
        raw::NameRef::AnyOf(list) => {
            if list.is_empty() {
                errs.at(o, format!("{key} list is empty; name at least one, or write `none`"));
                return None;
            }
            let mut out = Vec::new();
            let mut ok = true;
            for (i, n) in list.iter().enumerate() {
                let at = o.index(i);
                if n == "none" {
                    errs.at(&at, format!("`none` cannot be one of several {plural}; write `{key}: none` on its own"));
                    ok = false;
                } else if let Some(n) = known(errs, &at, n) {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                } else {
                    ok = false;
                }
            }
            ok.then_some(Some(out))
        }
    }
}

/// What `auth:` and `rate_limit:` can name.
struct Refs<'r, 'a> {
    providers: &'r auth::Providers<'a>,
    limits: &'r ratelimits::RateLimits<'a>,
}

#[derive(Debug, Clone, PartialEq)]
struct DefaultOps {
    request: HeaderOps,
    response: HeaderOps,
    auth: Auth,
    rate_limits: Vec<String>,
    ip_restriction: Option<IpRestriction>,
    access_log: AccessLogging,
    tracing: Option<Tracing>,
}

/// `defaults.tracing`.
fn check_tracing(errs: &mut Errors<'_>, o: &Origin, t: &raw::Tracing) -> Option<Tracing> {
    let raw::Tracing { collector, service_name, sampling } = t;
    let Some(collector) = collector else {
        errs.at(o, "tracing needs a `collector` (the OpenTelemetry collector's host:port, OTLP over gRPC)");
        return None;
    };
    let endpoint = services::parse_endpoint(errs, &o.key("collector"), collector)?;
    let sampling = sampling.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&sampling) {
        errs.at(&o.key("sampling"), format!("sampling is a percentage (0-100), not {sampling}"));
        return None;
    }
    let service_name = service_name.clone().unwrap_or_else(|| "gateway".to_owned());
    if service_name.trim().is_empty() {
        errs.at(&o.key("service_name"), "service_name is empty");
        return None;
    }
    Some(Tracing { collector: endpoint, service_name, sampling })
}

/// `defaults.access_log`; `None` is an error.
fn check_access_log(errs: &mut Errors<'_>, o: &Origin, a: &raw::AccessLog) -> Option<AccessLogging> {
    match a {
        raw::AccessLog::Word(w) if w == "off" => Some(AccessLogging::Off),
        raw::AccessLog::Word(w) => {
            errs.at(o, format!("access_log `{w}`: write `off`, or {{ format: json, path: stdout }}"));
            None
        }
        raw::AccessLog::Spec(raw::AccessLogSpec { format, path }) => {
            let format = match format.as_deref() {
                None | Some("json") => LogFormat::Json,
                Some("text") => LogFormat::Text,
                Some(other) => {
                    errs.at(&o.key("format"), format!("access_log format `{other}` is json or text"));
                    return None;
                }
            };
            let path = path.clone().unwrap_or_else(|| "stdout".to_owned());
            if path.is_empty() || !(matches!(path.as_str(), "stdout" | "stderr" | "legate") || path.starts_with('/')) {
                errs.at(
                    &o.key("path"),
                    format!("access_log path `{path}` is stdout, stderr, legate or an absolute file path"),
                );
                return None;
            }
            Some(AccessLogging::On(AccessLog { format, path }))
        }
    }
}

fn check_defaults(errs: &mut Errors<'_>, all: Vec<(Origin, raw::Defaults)>, refs: &Refs<'_, '_>) -> DefaultOps {
    let mut out = DefaultOps {
        request: HeaderOps::default(),
        response: HeaderOps::default(),
        auth: Auth::Public,
        rate_limits: Vec::new(),
        ip_restriction: None,
        access_log: AccessLogging::Unset,
        tracing: None,
    };
    if let Some((second, _)) = all.get(1) {
        let msg = format!("`defaults` is given twice; the other is at {}", errs.place(&all[0].0));
        errs.at(second, msg);
    }
    if let Some((o, d)) = all.into_iter().next() {
        let raw::Defaults { request_headers, response_headers, auth, rate_limit, ip_restriction, access_log, tracing } =
            d;
        if let Some(r) = ip_restriction {
            out.ip_restriction = check_ip_restriction(errs, &o.key("ip_restriction"), &r).flatten();
        }
        out.tracing = tracing.as_ref().and_then(|t| check_tracing(errs, &o.key("tracing"), t));
        out.access_log = access_log.and_then(|a| check_access_log(errs, &o.key("access_log"), &a)).unwrap_or_default();
        out.request = header_ops(errs, &o.key("request_headers"), request_headers.as_ref(), true);
        out.response = header_ops(errs, &o.key("response_headers"), response_headers.as_ref(), false);
        if let Some(a) = auth {
            out.auth = auth::resolve(errs, &o.key("auth"), &a, refs.providers).unwrap_or_default();
        }
        if let Some(r) = rate_limit {
            out.rate_limits = ratelimits::resolve(errs, &o.key("rate_limit"), &r, refs.limits).unwrap_or_default();
        }
    }
    out
}

/// `ip_restriction` at `o`: `Some(None)` for `none`, `None` when wrong.
fn check_ip_restriction(errs: &mut Errors<'_>, o: &Origin, r: &raw::IpRestriction) -> Option<Option<IpRestriction>> {
    let spec = match r {
        raw::IpRestriction::Word(w) if w == "none" => return Some(None),
        raw::IpRestriction::Word(w) => {
            errs.at(o, format!("ip_restriction `{w}`: write `none`, or {{ allow: [CIDR...], deny: [CIDR...] }}"));
            return None;
        }
        raw::IpRestriction::Spec(s) => s,
    };
    let before = errs.list.len();
    let mut ranges = |key: &'static str, list: Option<&Vec<String>>| -> Vec<Cidr> {
        let mut out = Vec::new();
        for (i, text) in list.into_iter().flatten().enumerate() {
            match parse_cidr(text) {
                Some(c) => out.push(c),
                None => errs.at(
                    &o.key(key).index(i),
                    format!("`{text}` is not an address or range (like 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32)"),
                ),
            }
        }
        out
    };
    let (allow, deny) = (ranges("allow", spec.allow.as_ref()), ranges("deny", spec.deny.as_ref()));
    if spec.allow.is_none() && spec.deny.is_none() {
        errs.at(o, "ip_restriction needs `allow`, `deny` or both (or write `none`)");
    }
    (errs.list.len() == before).then_some(Some(IpRestriction { allow, deny }))
}

/// `10.0.0.0/8`, `192.0.2.7` (one address), `2001:db8::/32`.
fn parse_cidr(text: &str) -> Option<Cidr> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let address: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix_len = match len {
        Some(l) => l.trim().parse::<u32>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some(Cidr { address, prefix_len })
}

fn header_name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `request_query`: the same operations as on headers, on query parameters
/// (a name is any text without `&`, `=`, `#`, `?` or spaces).
fn query_ops(errs: &mut Errors<'_>, o: &Origin, ops: Option<&raw::HeaderOps>) -> HeaderOps {
    let problem = |name: &str| {
        (name.is_empty() || name.contains(['&', '=', '#', '?']) || name.contains(char::is_whitespace))
            .then(|| format!("`{name}` is not a query parameter name"))
    };
    checked_ops(errs, o, ops, "parameter", false, &problem)
}

fn header_ops(errs: &mut Errors<'_>, o: &Origin, ops: Option<&raw::HeaderOps>, request: bool) -> HeaderOps {
    let problem = |name: &str| {
        let lower = name.to_ascii_lowercase();
        if !header_name_ok(name) {
            Some(format!("`{name}` is not a valid header name"))
        } else if request && (lower == "host" || lower.starts_with(':')) {
            Some(format!("`{name}` cannot be changed here; use `rewrite: {{ host: ... }}`"))
        } else {
            None
        }
    };
    checked_ops(errs, o, ops, "header", true, &problem)
}

/// Header or query changes, each name checked by `problem`, and each said
/// once among `add`, `default`, `replace` and `append` (`fold_case`: names
/// that differ in case only are one).
fn checked_ops(
    errs: &mut Errors<'_>,
    o: &Origin,
    ops: Option<&raw::HeaderOps>,
    noun: &str,
    fold_case: bool,
    problem: &dyn Fn(&str) -> Option<String>,
) -> HeaderOps {
    let Some(raw::HeaderOps { add, default, replace, append, remove }) = ops else { return HeaderOps::default() };
    let same = |a: &str, b: &str| if fold_case { a.eq_ignore_ascii_case(b) } else { a == b };
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (key, map) in [("add", add), ("default", default), ("replace", replace), ("append", append)] {
        for name in map.keys() {
            let at = o.key(key).key(name.clone());
            if let Some(msg) = problem(name) {
                errs.at_key(&at, msg);
            } else if let Some((other, _)) = seen.iter().find(|(_, n)| same(n, name)) {
                errs.at_key(&at, format!("`{name}` is in `{other}` too; say one thing of a {noun}"));
            }
            seen.push((key, name));
        }
    }
    for (i, name) in remove.iter().enumerate() {
        if let Some(msg) = problem(name) {
            errs.at_key(&o.key("remove").index(i), msg);
        }
    }
    HeaderOps {
        add: add.clone(),
        default: default.clone(),
        replace: replace.clone(),
        append: append.clone(),
        remove: remove.clone(),
    }
}

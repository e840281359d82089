//! `routes` → one RDS RouteConfiguration per listener, with one virtual host
//! whose domains are the listener's `hosts`. Routes keep the policy's
//! precedence order (most specific first).

use std::collections::HashMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    data_source, header_value_option::HeaderAppendAction, DataSource, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    route,
    route_action::{self, HashPolicy},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    DirectResponseAction, HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route as EnvoyRoute, RouteAction,
    RouteConfiguration, RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use prost::Name as _;

use super::proto_duration;
use crate::policy::{
    Backend, HeaderOps, HostRewrite, Listener, LoadBalancing, PathMatch, PathRewrite, Policy, Route, SetWhen,
    ValueMatch, ValueRule,
};
use crate::snapshot::{self, Resource};

/// What the last translation encoded, by route: kept between reloads so
/// that an edit to a few of thousands of routes translates and encodes only
/// those. Everything is made again when anything but the routes changed.
#[derive(Debug, Default)]
pub(super) struct RouteCache {
    /// The policy the entries were made for, without its routes.
    context: Option<Policy>,
    /// By route name: the route (shared with the policy it came from, so an
    /// unchanged route is usually the same allocation), and its entry in a
    /// virtual host (field key, length and canonical encoding of the Envoy
    /// route).
    entries: HashMap<String, (Arc<Route>, Arc<[u8]>)>,
}

/// `routes` of `VirtualHost`: its entries are inserted before the fields
/// declared after it, the first of which is numbered 4 or higher (prost
/// writes fields in declaration order: name 1, domains 2, routes 3, ...).
const VIRTUAL_HOST_ROUTES: u32 = 3;
/// `virtual_hosts` of `RouteConfiguration`.
const ROUTE_CONFIGURATION_VIRTUAL_HOSTS: u32 = 2;

/// One RouteConfiguration per listener, named after it, encoded. Each is
/// the same bytes as encoding the whole typed message (one test checks it
/// on every example), but built from each route's encoded entry, reused
/// from `cache` when the route and the rest of the policy are unchanged.
pub(super) fn route_configurations(policy: &Policy, cache: &mut RouteCache) -> Vec<Arc<Resource>> {
    let context = without_routes(policy);
    if cache.context.as_ref() != Some(&context) {
        cache.entries.clear();
        cache.context = Some(context);
    }
    let mut old = std::mem::replace(&mut cache.entries, HashMap::with_capacity(policy.routes.len()));
    let mut out = Vec::with_capacity(policy.listeners.len());
    for l in policy.listeners.values() {
        let mut entries = Vec::new();
        for r in policy.routes.iter().filter(|r| r.listener == l.name) {
            // The same allocation when validation reused the route too.
            let (route, entry) = match old.remove(&r.name) {
                Some((cached, entry)) if Arc::ptr_eq(&cached, r) || *cached == **r => (cached, entry),
                _ => (Arc::clone(r), route_entry(policy, r)),
            };
            entries.extend_from_slice(&entry);
            cache.entries.insert(route.name.clone(), (route, entry));
        }
        let shell = snapshot::canonical_bytes(&route_configuration(l, Vec::new()));
        // The fallback is not reached (the shell is ours).
        let value =
            snapshot::insert_fields(&shell, ROUTE_CONFIGURATION_VIRTUAL_HOSTS, VIRTUAL_HOST_ROUTES + 1, &entries)
                .unwrap_or_else(|| encode_whole(policy, l));
        out.push(Resource::encoded(l.name.clone(), RouteConfiguration::type_url(), value));
    }
    out
}

/// The listener's RouteConfiguration with `routes`: one virtual host whose
/// domains are the listener's hosts.
fn route_configuration(l: &Listener, routes: Vec<EnvoyRoute>) -> RouteConfiguration {
    RouteConfiguration {
        name: l.name.clone(),
        virtual_hosts: vec![VirtualHost {
            name: l.name.clone(),
            domains: domains(&l.hosts),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The listener's RouteConfiguration translated and encoded whole, every
/// route afresh: what [`route_configurations`] assembles, byte for byte.
fn encode_whole(policy: &Policy, l: &Listener) -> Vec<u8> {
    let routes = policy.routes.iter().filter(|r| r.listener == l.name).map(|r| route(policy, r)).collect();
    snapshot::canonical_bytes(&route_configuration(l, routes))
}

/// A route as an entry of a virtual host's `routes`.
fn route_entry(policy: &Policy, r: &Route) -> Arc<[u8]> {
    let bytes = snapshot::canonical_bytes(&route(policy, r));
    let mut entry = Vec::with_capacity(bytes.len() + 6);
    prost::encoding::encode_key(VIRTUAL_HOST_ROUTES, prost::encoding::WireType::LengthDelimited, &mut entry);
    prost::encoding::encode_varint(bytes.len() as u64, &mut entry);
    entry.extend_from_slice(&bytes);
    entry.into()
}

/// Everything a route's translation may read besides the route itself.
fn without_routes(policy: &Policy) -> Policy {
    let Policy {
        listeners,
        services,
        routes: _,
        jwt_providers,
        api_keys,
        basic_users,
        rate_limits,
        access_log,
        tracing,
        aggregations,
        read_files: _,
        warnings: _,
    } = policy;
    Policy {
        listeners: listeners.clone(),
        services: services.clone(),
        routes: Vec::new(),
        jwt_providers: jwt_providers.clone(),
        api_keys: api_keys.clone(),
        basic_users: basic_users.clone(),
        rate_limits: rate_limits.clone(),
        access_log: access_log.clone(),
        tracing: tracing.clone(),
        aggregations: aggregations.clone(),
        read_files: Vec::new(),
        warnings: Vec::new(),
    }
}

/// Each plain host also with any port (`api.example.com:*`): Envoy matches
/// the Host header with its port, and clients send one on non-default ports.
/// Envoy allows one wildcard per domain, so `*.example.com` matches only
/// without a port.
fn domains(hosts: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in hosts {
        let with_port = (!h.contains('*') && !h.contains(':')).then(|| format!("{h}:*"));
        for d in std::iter::once(h.clone()).chain(with_port) {
            if !out.iter().any(|x| x.eq_ignore_ascii_case(&d)) {
                out.push(d);
            }
        }
    }
    out
}

fn route(policy: &Policy, r: &Route) -> EnvoyRoute {
    let Route {
        name,
        listener: _,
        path,
        methods,
        headers,
        query,
        hosts,
        backend,
        rewrite,
        host_rewrite,
        timeout,
        idle_timeout,
        max_request_body: _,
        request_headers,
        request_query: _,
        request_id,
        response_headers,
        auth: _,
        rate_limits: _,
        retries,
        cors: _,
        ip_restriction: _,
    } = r;
    let mut header_matchers: Vec<HeaderMatcher> = headers.iter().map(header_matcher).collect();
    if !hosts.is_empty() {
        header_matchers.insert(
            0,
            HeaderMatcher {
                name: ":authority".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(
                    MatchPattern::SafeRegex(regex(&host_regex(hosts))),
                ))),
                ..Default::default()
            },
        );
    }
    if !methods.is_empty() {
        let pattern = if let [one] = methods.as_slice() {
            MatchPattern::Exact(one.clone())
        } else {
            MatchPattern::SafeRegex(regex(&format!("^({})$", methods.join("|"))))
        };
        header_matchers.insert(
            0,
            HeaderMatcher {
                name: ":method".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(string_matcher(pattern))),
                ..Default::default()
            },
        );
    }
    // None for `respond`: Envoy answers, no cluster.
    let cluster_specifier = match backend {
        Backend::Service(s) => Some(route_action::ClusterSpecifier::Cluster(s.clone())),
        Backend::Split(targets) => Some(route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: targets
                .iter()
                .map(|(s, w)| ClusterWeight {
                    name: s.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })),
        Backend::Aggregation(_) => Some(route_action::ClusterSpecifier::Cluster(crate::aggregator::CLUSTER.to_owned())),
        Backend::Respond { .. } => None,
    };
    // ring_hash balances on a hash of each service's key (client address or
    // a header); Envoy takes the first hash policy that yields a value.
    let targets: Vec<&str> = match backend {
        Backend::Service(s) => vec![s.as_str()],
        Backend::Split(t) => t.iter().map(|(s, _)| s.as_str()).collect(),
        Backend::Aggregation(_) | Backend::Respond { .. } => Vec::new(),
    };
    let mut hash_policy: Vec<HashPolicy> = Vec::new();
    for s in targets.iter().filter_map(|s| policy.services.get(*s)) {
        let h = super::resilience::hash_policy(s);
        if s.load_balancing == LoadBalancing::RingHash && !hash_policy.contains(&h) {
            hash_policy.push(h);
        }
    }
    let (prefix_rewrite, regex_rewrite) = match rewrite {
        None => (String::new(), None),
        // Envoy's prefix_rewrite keeps what follows the matched prefix as is,
        // so `/legacy/a` with prefix `/legacy` rewritten to `/` would become
        // `//a`. When the new prefix ends in `/` and the match does not, a
        // regex also absorbs the slashes after the matched prefix.
        Some(PathRewrite::Prefix(p)) => match path {
            PathMatch::Prefix(m) if p.ends_with('/') && !m.ends_with('/') => (
                String::new(),
                Some(RegexMatchAndSubstitute {
                    pattern: Some(regex(&format!("^{}/*", regex_syntax::escape(m)))),
                    substitution: p.replace('\\', "\\\\"),
                }),
            ),
            _ => (p.clone(), None),
        },
        Some(PathRewrite::Regex { pattern, substitution }) => (
            String::new(),
            Some(RegexMatchAndSubstitute { pattern: Some(regex(pattern)), substitution: substitution.clone() }),
        ),
    };
    // The aggregator learns which aggregation to answer from a header only
    // Envoy sets (a client's own is overwritten); it answers by the
    // aggregation's timeout, so Envoy waits a little longer than that.
    let (mut request_adds, timeout) = (header_adds(request_headers), *timeout);
    let mut response_adds = header_adds(response_headers);
    // Envoy's request id (made at the edge, as x-request-id) under another
    // name too: the one command a value here may hold, so not escaped.
    if let Some((header, echo)) = request_id {
        let command = |value: &str, action: HeaderAppendAction| HeaderValueOption {
            header: Some(HeaderValue { key: header.clone(), value: value.to_owned(), ..Default::default() }),
            append_action: action.into(),
            ..Default::default()
        };
        request_adds.push(command("%REQ(X-REQUEST-ID)%", HeaderAppendAction::AddIfAbsent));
        if *echo {
            response_adds.push(command(&format!("%REQ({header})%"), HeaderAppendAction::OverwriteIfExistsOrAdd));
        }
    }
    let timeout = match backend {
        Backend::Aggregation(a) => {
            request_adds.push(header_add(crate::aggregator::NAME_HEADER, a));
            timeout.map(|t| t + crate::aggregator::ENVOY_MARGIN)
        }
        _ => timeout,
    };
    EnvoyRoute {
        name: name.clone(),
        r#match: Some(RouteMatch {
            path_specifier: Some(match path {
                PathMatch::Prefix(p) => PathSpecifier::Prefix(p.clone()),
                PathMatch::Exact(p) => PathSpecifier::Path(p.clone()),
                PathMatch::Regex(p) => PathSpecifier::SafeRegex(regex(p)),
            }),
            headers: header_matchers,
            query_parameters: query.iter().map(query_matcher).collect(),
            ..Default::default()
        }),
        action: Some(match (backend, cluster_specifier) {
            // Envoy answers itself; its local-reply JSON wraps the message.
            (Backend::Respond { status, message }, _) => route::Action::DirectResponse(DirectResponseAction {
                status: *status,
                body: (!message.is_empty()).then(|| DataSource {
                    specifier: Some(data_source::Specifier::InlineString(message.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            (_, cluster_specifier) => route::Action::Route(RouteAction {
                cluster_specifier,
                prefix_rewrite,
                regex_rewrite,
                host_rewrite_specifier: host_rewrite.as_ref().map(|h| match h {
                    HostRewrite::Literal(name) => route_action::HostRewriteSpecifier::HostRewriteLiteral(name.clone()),
                    HostRewrite::Endpoint => {
                        route_action::HostRewriteSpecifier::AutoHostRewrite(BoolValue { value: true })
                    }
                }),
                timeout: timeout.map(proto_duration),
                idle_timeout: idle_timeout.map(proto_duration),
                rate_limits: super::ratelimit::route_rate_limits(policy, r),
                hash_policy,
                retry_policy: match backend {
                    Backend::Aggregation(_) => Some(aggregator_retry()),
                    _ => retries.as_ref().map(super::resilience::retry_policy),
                },
                ..Default::default()
            }),
        }),
        request_headers_to_add: request_adds,
        request_headers_to_remove: {
            let mut remove = request_headers.remove.clone();
            if super::basic_auth::hides_credentials(policy, r) {
                remove.push("authorization".to_owned());
            }
            remove
        },
        response_headers_to_add: response_adds,
        response_headers_to_remove: response_headers.remove.clone(),
        typed_per_filter_config: super::auth::per_route(r)
            .into_iter()
            .chain(super::cors::per_route(r))
            .chain(super::ip_restriction::per_route(r))
            .chain(super::api_keys::per_route(policy, r))
            .chain(super::basic_auth::per_route(policy, r))
            .chain(super::body_limit::per_route(r))
            .chain(super::query::per_route(r))
            .collect(),
        ..Default::default()
    }
}

/// A legate replica that is down (refused or reset connection) is not an
/// answer: try another. Nothing is retried after the aggregator answered.
fn aggregator_retry() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,reset-before-request".to_owned(),
        num_retries: Some(UInt32Value { value: 2 }),
        retry_host_predicate: vec![super::resilience::previous_hosts()],
        host_selection_retry_max_attempts: 3,
        ..Default::default()
    }
}

/// The headers a route sets, in the order Envoy applies them (after its
/// removals): `replace`, `add`, `default`, `append`.
fn header_adds(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    ops.sets()
        .into_iter()
        .flat_map(|(when, map)| {
            let action = match when {
                SetWhen::Present => HeaderAppendAction::OverwriteIfExists,
                SetWhen::Always => HeaderAppendAction::OverwriteIfExistsOrAdd,
                SetWhen::Absent => HeaderAppendAction::AddIfAbsent,
                SetWhen::Append => HeaderAppendAction::AppendIfExistsOrAdd,
            };
            map.iter().map(move |(k, v)| header_option(k, v, action))
        })
        .collect()
}

/// Set a header, replacing any value it has.
fn header_add(key: &str, value: &str) -> HeaderValueOption {
    header_option(key, value, HeaderAppendAction::OverwriteIfExistsOrAdd)
}

/// A header value as written: Envoy reads `%...%` in it as a command, so a
/// `%` is doubled.
fn header_option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value: value.replace('%', "%%"), ..Default::default() }),
        append_action: action.into(),
        ..Default::default()
    }
}

/// The Host (`:authority`) of a request for one of `hosts`, with any port:
/// `*.example.com` stands for one or more labels before `.example.com`,
/// `example.*` for any after `example.`, `*` for anything.
fn host_regex(hosts: &[String]) -> String {
    let alternatives: Vec<String> = hosts
        .iter()
        .map(|h| {
            if h == "*" {
                ".+".to_owned()
            } else if let Some(rest) = h.strip_prefix("*.") {
                format!(r"[^:]+\.{}", regex_syntax::escape(rest))
            } else if let Some(rest) = h.strip_suffix(".*") {
                format!(r"{}\.[^:]+", regex_syntax::escape(rest))
            } else {
                regex_syntax::escape(h)
            }
        })
        .collect();
    format!("(?i)({})(:[0-9]+)?", alternatives.join("|"))
}

fn regex(pattern: &str) -> RegexMatcher {
    RegexMatcher { regex: pattern.to_owned(), ..Default::default() }
}

fn string_matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher { match_pattern: Some(p), ..Default::default() }
}

fn header_matcher(m: &ValueMatch) -> HeaderMatcher {
    let spec = match &m.rule {
        ValueRule::Exact(v) => HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::Exact(v.clone()))),
        ValueRule::Regex(r) => HeaderMatchSpecifier::StringMatch(string_matcher(MatchPattern::SafeRegex(regex(r)))),
        ValueRule::Present(p) => HeaderMatchSpecifier::PresentMatch(*p),
    };
    HeaderMatcher { name: m.name.clone(), header_match_specifier: Some(spec), ..Default::default() }
}

fn query_matcher(m: &ValueMatch) -> QueryParameterMatcher {
    let spec = match &m.rule {
        ValueRule::Exact(v) => {
            QueryParameterMatchSpecifier::StringMatch(string_matcher(MatchPattern::Exact(v.clone())))
        }
        ValueRule::Regex(r) => {
            QueryParameterMatchSpecifier::StringMatch(string_matcher(MatchPattern::SafeRegex(regex(r))))
        }
        ValueRule::Present(p) => QueryParameterMatchSpecifier::PresentMatch(*p),
    };
    QueryParameterMatcher { name: m.name.clone(), query_parameter_match_specifier: Some(spec) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every shipped policy and golden case: config/, examples/*, tests/golden/*.
    fn policies() -> Vec<(String, Policy)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut dirs = vec![root.join("config")];
        for parent in ["examples", "tests/golden"] {
            let mut found: Vec<_> = std::fs::read_dir(root.join(parent))
                .expect("read folder")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            found.sort();
            dirs.extend(found);
        }
        dirs.into_iter()
            .filter_map(|d| Some((d.display().to_string(), crate::policy::load_dir(&d).ok()?)))
            .filter(|(_, p)| !p.routes.is_empty())
            .collect()
    }

    fn whole(policy: &Policy) -> Vec<(String, Vec<u8>)> {
        policy.listeners.values().map(|l| (l.name.clone(), encode_whole(policy, l))).collect()
    }

    fn built(policy: &Policy, cache: &mut RouteCache) -> Vec<(String, Vec<u8>)> {
        route_configurations(policy, cache).iter().map(|r| (r.name.clone(), r.any.value.clone())).collect()
    }

    #[test]
    fn built_from_route_entries_is_the_whole_message_byte_for_byte() {
        let all = policies();
        assert!(all.len() > 10, "found only {} policies", all.len());
        for (dir, policy) in &all {
            assert_eq!(built(policy, &mut RouteCache::default()), whole(policy), "{dir}");
        }
    }

    #[test]
    fn unchanged_routes_are_reused_and_anything_else_starts_afresh() {
        let (_, policy) = policies().into_iter().max_by_key(|(_, p)| p.routes.len()).expect("a policy");
        assert!(policy.routes.len() >= 3, "a policy with several routes");
        let mut cache = RouteCache::default();
        built(&policy, &mut cache);
        let before: HashMap<String, Arc<[u8]>> =
            cache.entries.iter().map(|(n, (_, e))| (n.clone(), Arc::clone(e))).collect();

        // One route changes: only its entry is made again.
        let mut edited = policy.clone();
        let changed = edited.routes[1].name.clone();
        Arc::make_mut(&mut edited.routes[1]).timeout = Some(std::time::Duration::from_millis(1234));
        assert_eq!(built(&edited, &mut cache), whole(&edited));
        for (name, (_, entry)) in &cache.entries {
            assert_eq!(Arc::ptr_eq(entry, &before[name]), *name != changed, "route {name}");
        }

        // A route removed leaves the cache.
        edited.routes.remove(0);
        assert_eq!(built(&edited, &mut cache), whole(&edited));
        assert_eq!(cache.entries.len(), edited.routes.len());

        // Anything but the routes changes: every entry is made again.
        let kept: Vec<Arc<[u8]>> = cache.entries.values().map(|(_, e)| Arc::clone(e)).collect();
        let service = edited.services.values_mut().next().expect("a service");
        service.timeout = Some(std::time::Duration::from_secs(77));
        assert_eq!(built(&edited, &mut cache), whole(&edited));
        assert!(cache.entries.values().all(|(_, e)| !kept.iter().any(|k| Arc::ptr_eq(k, e))));
    }
}

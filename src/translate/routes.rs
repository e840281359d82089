//! `routes` → one RDS RouteConfiguration per listener, with one virtual host
//! whose domains are the listener's `hosts`. Routes keep the policy's
//! precedence order (most specific first).

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    route,
    route_action::{self, HashPolicy},
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
    HeaderMatcher, QueryParameterMatcher, RetryPolicy, Route as EnvoyRoute, RouteAction, RouteConfiguration,
    RouteMatch, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    string_matcher::MatchPattern, RegexMatchAndSubstitute, RegexMatcher, StringMatcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;

use super::proto_duration;
use crate::policy::{Backend, HeaderOps, LoadBalancing, PathMatch, PathRewrite, Policy, Route, ValueMatch, ValueRule};

/// One RouteConfiguration per listener, named after it.
pub(super) fn route_configurations(policy: &Policy) -> Vec<RouteConfiguration> {
    policy
        .listeners
        .values()
        .map(|l| {
            let on_listener = || policy.routes.iter().filter(|r| r.listener == l.name);
            // Sized up front: an Envoy route is large, and growing a
            // vector of thousands of them by doubling was a fifth of a
            // 5,000-route reload (copies and fresh pages).
            let mut routes = Vec::with_capacity(on_listener().count());
            routes.extend(on_listener().map(|r| route(policy, r)));
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
        })
        .collect()
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
        request_headers,
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
    let cluster_specifier = match backend {
        Backend::Service(s) => route_action::ClusterSpecifier::Cluster(s.clone()),
        Backend::Split(targets) => route_action::ClusterSpecifier::WeightedClusters(WeightedCluster {
            clusters: targets
                .iter()
                .map(|(s, w)| ClusterWeight {
                    name: s.clone(),
                    weight: Some(UInt32Value { value: *w }),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        Backend::Aggregation(_) => route_action::ClusterSpecifier::Cluster(crate::aggregator::CLUSTER.to_owned()),
    };
    // ring_hash balances on a hash of each service's key (client address or
    // a header); Envoy takes the first hash policy that yields a value.
    let targets: Vec<&str> = match backend {
        Backend::Service(s) => vec![s.as_str()],
        Backend::Split(t) => t.iter().map(|(s, _)| s.as_str()).collect(),
        Backend::Aggregation(_) => Vec::new(),
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
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(cluster_specifier),
            prefix_rewrite,
            regex_rewrite,
            host_rewrite_specifier: host_rewrite.clone().map(route_action::HostRewriteSpecifier::HostRewriteLiteral),
            timeout: timeout.map(proto_duration),
            rate_limits: super::ratelimit::route_rate_limits(policy, r),
            hash_policy,
            retry_policy: match backend {
                Backend::Aggregation(_) => Some(aggregator_retry()),
                _ => retries.as_ref().map(super::resilience::retry_policy),
            },
            ..Default::default()
        })),
        request_headers_to_add: request_adds,
        request_headers_to_remove: request_headers.remove.clone(),
        response_headers_to_add: header_adds(response_headers),
        response_headers_to_remove: response_headers.remove.clone(),
        typed_per_filter_config: super::auth::per_route(r)
            .into_iter()
            .chain(super::ratelimit::per_route(policy, r))
            .chain(super::cors::per_route(r))
            .chain(super::ip_restriction::per_route(r))
            .chain(super::api_keys::per_route(policy, r))
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

fn header_adds(ops: &HeaderOps) -> Vec<HeaderValueOption> {
    ops.add.iter().map(|(k, v)| header_add(k, v)).collect()
}

/// Set a header, replacing any value it has.
fn header_add(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue { key: key.to_owned(), value: value.to_owned(), ..Default::default() }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
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

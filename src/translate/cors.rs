//! `routes[].cors` → Envoy's CORS filter (first in the chain, so a
//! preflight is answered before authentication or rate limits) with a
//! `CorsPolicy` per route.

use envoy_types::pb::envoy::extensions::filters::http::cors::v3::{Cors as CorsFilter, CorsPolicy};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue};

use super::any;
use crate::policy::{Cors, Policy, Route, ValueRule};

const FILTER: &str = "envoy.filters.http.cors";

/// The CORS filter, when a route on `listener` has `cors`.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| r.cors.is_some()) {
        return Vec::new();
    }
    vec![super::http_filter(FILTER, any(&CorsFilter::default()))]
}

/// The route's `CorsPolicy`.
pub(super) fn per_route(route: &Route) -> Option<(String, Any)> {
    let Cors { origins, methods, headers, expose_headers, max_age, credentials } = route.cors.as_ref()?;
    let matcher = |rule: &ValueRule| StringMatcher {
        match_pattern: Some(match rule {
            ValueRule::Exact(o) if o == "*" => {
                MatchPattern::SafeRegex(RegexMatcher { regex: ".*".into(), ..Default::default() })
            }
            ValueRule::Exact(o) => MatchPattern::Exact(o.clone()),
            ValueRule::Regex(r) => MatchPattern::SafeRegex(RegexMatcher { regex: r.clone(), ..Default::default() }),
            ValueRule::Present(_) => MatchPattern::SafeRegex(RegexMatcher { regex: ".*".into(), ..Default::default() }),
        }),
        ..Default::default()
    };
    let policy = CorsPolicy {
        allow_origin_string_match: origins.iter().map(matcher).collect(),
        allow_methods: methods.join(", "),
        allow_headers: headers.join(", "),
        expose_headers: expose_headers.join(", "),
        max_age: max_age.map(|d| d.as_secs().to_string()).unwrap_or_default(),
        allow_credentials: credentials.then_some(BoolValue { value: true }),
        // A preflight from an origin not allowed is answered here too (no
        // CORS headers: the browser refuses), not passed to the service.
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    };
    Some((FILTER.to_owned(), any(&policy)))
}

//! `auth.api_keys` → Envoy's API key filter. It is on the listener but
//! disabled there (an empty key list would refuse every request), and each
//! route with `auth:` naming key sets enables it with its own credentials,
//! key sources and forwarding. A missing or unknown key gets 401 with the
//! JSON error body; the client's name goes to the upstream in
//! `client_header`, which is stripped from every incoming request (see
//! `Policy::identity_headers`).

use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::api_key_auth::v3::{
    ApiKeyAuth, ApiKeyAuthPerRoute, Credential, Forwarding, KeySource as EnvoyKeySource,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::Any;

use super::any;
use crate::policy::{ApiKeySet, Auth, KeySource, Policy, Route};

const FILTER: &str = "envoy.filters.http.api_key_auth";

/// The filter, disabled, when a route on `listener` takes API keys.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| matches!(r.auth, Auth::ApiKeys(_))) {
        return Vec::new();
    }
    vec![HttpFilter { disabled: true, ..super::http_filter(FILTER, any(&ApiKeyAuth::default())) }]
}

/// The route's keys, enabling the filter for it.
pub(super) fn per_route(policy: &Policy, route: &Route) -> Option<(String, Any)> {
    let Auth::ApiKeys(names) = &route.auth else { return None };
    let sets: Vec<&ApiKeySet> = names.iter().filter_map(|n| policy.api_keys.get(n)).collect();
    let credentials = sets
        .iter()
        .flat_map(|s| s.keys.iter().map(|(client, key)| Credential { key: key.clone(), client: client.clone() }))
        .collect();
    let mut key_sources: Vec<EnvoyKeySource> = Vec::new();
    for source in sets.iter().flat_map(|s| &s.from) {
        let k = match source {
            KeySource::Header(h) => EnvoyKeySource { header: h.clone(), ..Default::default() },
            KeySource::Query(q) => EnvoyKeySource { query: q.clone(), ..Default::default() },
        };
        if !key_sources.contains(&k) {
            key_sources.push(k);
        }
    }
    let header = sets.iter().find_map(|s| s.client_header.clone()).unwrap_or_default();
    let hide_credentials = !sets.iter().all(|s| s.forward_key);
    let config = ApiKeyAuthPerRoute {
        credentials,
        key_sources,
        forwarding: Some(Forwarding { header, hide_credentials }),
        ..Default::default()
    };
    let enabled = FilterConfig { config: Some(any(&config)), is_optional: false, disabled: false };
    Some((FILTER.to_owned(), any(&enabled)))
}

//! `auth.basic` → Envoy's basic auth filter. It is on the listener but
//! disabled there, and each route with `auth:` naming user sets enables it
//! with those sets' users (`BasicAuthPerRoute`). Missing or wrong
//! credentials get 401 with the JSON error body; the user name goes to the
//! upstream in the sets' `client_header` (stripped from every incoming
//! request, see `Policy::identity_headers`), and the Authorization header
//! only with `forward_credentials` (see `routes`).

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::route::v3::FilterConfig;
use envoy_types::pb::envoy::extensions::filters::http::basic_auth::v3::{BasicAuth, BasicAuthPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::Any;

use super::any;
use crate::policy::{Auth, BasicUserSet, Policy, Route};

const FILTER: &str = "envoy.filters.http.basic_auth";

/// The users of these sets, one htpasswd line each (the first set's hash
/// for a user in several).
fn htpasswd<'a>(sets: impl Iterator<Item = &'a BasicUserSet>) -> DataSource {
    let mut users: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for s in sets {
        for (user, hash) in &s.users {
            users.entry(user).or_insert(hash);
        }
    }
    let text: String = users.iter().map(|(u, h)| format!("{u}:{h}\n")).collect();
    DataSource { specifier: Some(data_source::Specifier::InlineString(text)), ..Default::default() }
}

/// The filter, disabled, when a route on `listener` takes basic credentials.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| matches!(r.auth, Auth::Basic(_))) {
        return Vec::new();
    }
    let config = BasicAuth {
        // Every route that turns the filter on brings its own users, so the
        // listener holds none: an htpasswd of one blank line (Envoy refuses
        // an empty one). A password change is then a route change only, and
        // no listener is rebuilt (and drained) for it.
        users: Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString("\n".into())),
            ..Default::default()
        }),
        forward_username_header: policy.basic_users.values().find_map(|s| s.client_header.clone()).unwrap_or_default(),
        ..Default::default()
    };
    vec![HttpFilter { disabled: true, ..super::http_filter(FILTER, any(&config)) }]
}

/// The route's users, enabling the filter for it.
pub(super) fn per_route(policy: &Policy, route: &Route) -> Option<(String, Any)> {
    let Auth::Basic(names) = &route.auth else { return None };
    let config = BasicAuthPerRoute { users: Some(htpasswd(names.iter().filter_map(|n| policy.basic_users.get(n)))) };
    let enabled = FilterConfig { config: Some(any(&config)), is_optional: false, disabled: false };
    Some((FILTER.to_owned(), any(&enabled)))
}

/// Whether the route's Authorization header stays at Envoy.
pub(super) fn hides_credentials(policy: &Policy, route: &Route) -> bool {
    let Auth::Basic(names) = &route.auth else { return false };
    !names.iter().filter_map(|n| policy.basic_users.get(n)).all(|s| s.forward_credentials)
}

//! `request_query` → a header mutation filter of its own (after
//! authentication, before the router), with the route's query parameter
//! changes in its per-route config: `remove`, then `replace` (only a
//! parameter the request has), `add`, `default` (only one it lacks) and
//! `append`, as for headers.

use envoy_types::pb::envoy::config::core::v3::{
    key_value_append::KeyValueAppendAction, KeyValueAppend, KeyValueMutation, KeyValuePair,
};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
    HeaderMutation, HeaderMutationPerRoute, Mutations,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::{value::Kind, Any, Value};

use super::any;
use crate::policy::{Policy, Route, SetWhen};

/// Not Envoy's own name for the filter: the identity-header strip is that.
const FILTER: &str = "legate.request_query";

/// The filter, doing nothing itself, when a route on `listener` changes its query.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| !r.request_query.is_empty()) {
        return Vec::new();
    }
    vec![super::http_filter(FILTER, any(&HeaderMutation::default()))]
}

/// The route's query changes.
pub(super) fn per_route(route: &Route) -> Option<(String, Any)> {
    let ops = &route.request_query;
    if ops.is_empty() {
        return None;
    }
    let removals = ops.remove.iter().map(|name| KeyValueMutation { remove: name.clone(), ..Default::default() });
    let sets = ops.sets().into_iter().flat_map(|(when, map)| {
        let action = match when {
            SetWhen::Present => KeyValueAppendAction::OverwriteIfExists,
            SetWhen::Always => KeyValueAppendAction::OverwriteIfExistsOrAdd,
            SetWhen::Absent => KeyValueAppendAction::AddIfAbsent,
            SetWhen::Append => KeyValueAppendAction::AppendIfExistsOrAdd,
        };
        map.iter().map(move |(k, v)| KeyValueMutation {
            append: Some(KeyValueAppend {
                record: Some(KeyValuePair {
                    key: k.clone(),
                    value: Some(Value { kind: Some(Kind::StringValue(v.clone())) }),
                }),
                action: action.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    });
    let config = HeaderMutationPerRoute {
        mutations: Some(Mutations { query_parameter_mutations: removals.chain(sets).collect(), ..Default::default() }),
    };
    Some((FILTER.to_owned(), any(&config)))
}

//! Pure translation: a validated [`Policy`] to Envoy resources.
//!
//! No I/O and nothing async: the same policy always gives byte-identical
//! resources. One submodule per concern; each policy key is set in exactly
//! one of them.

mod access_log;
mod api_keys;
mod auth;
mod basic_auth;
mod body_limit;
mod clusters;
mod cors;
mod ip_restriction;
mod listeners;
mod local_reply;
mod query;
mod ratelimit;
mod resilience;
mod routes;
mod tls;
mod tracing;

use std::collections::BTreeMap;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    config_source::ConfigSourceSpecifier, AggregatedConfigSource, ApiVersion, ConfigSource,
};

use crate::policy::Policy;
use crate::snapshot::Snapshot;

/// Translate a policy into the snapshot every proxy is served from.
#[must_use]
pub fn translate(policy: &Policy) -> Snapshot {
    translate_cached(policy, &mut Cache::default())
}

/// What a translation keeps for the next one (the watcher keeps one across
/// reloads): each route's encoding.
#[derive(Debug, Default)]
pub struct Cache {
    routes: routes::RouteCache,
}

/// [`translate`], reusing what `cache` holds from the last translation for
/// whatever is unchanged, and leaving in it what this one made. The result
/// is the same as [`translate`]'s.
#[must_use]
pub fn translate_cached(policy: &Policy, cache: &mut Cache) -> Snapshot {
    // Clusters legate adds besides the services: JWKS hosts, the collector.
    let mut extra = auth::jwks_services(policy);
    let collector = tracing::collector_service(policy);
    extra.extend(collector.clone());
    let mut clusters = clusters::clusters(policy, &extra);
    if let Some(c) = collector.and_then(|s| clusters.iter_mut().find(|c| c.name == s.name)) {
        tracing::http2(c);
    }
    let endpoints = clusters::load_assignments(policy, &extra);
    let listeners = listeners::listeners(policy);
    let routes = routes::route_configurations(policy, &mut cache.routes);
    // A redirect listener goes to the same fleets as its TLS listener.
    let fleets: BTreeMap<String, Vec<String>> = policy
        .listeners
        .values()
        .filter_map(|l| Some((l, l.fleets.clone()?)))
        .flat_map(|(l, f)| {
            let redirect = l.http_redirect_port.map(|_| (tls::redirect_name(l), f.clone()));
            std::iter::once((l.name.clone(), f)).chain(redirect)
        })
        .collect();
    let mut secrets = tls::secrets(policy);
    secrets.extend(clusters::ca_secrets(policy.services.values().chain(&extra)));
    Snapshot::build(&clusters, &endpoints, &listeners, routes, &secrets, fleets)
}

/// "Over ADS, v3": how every dynamic resource refers to its source.
fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3.into(),
        ..Default::default()
    }
}

fn proto_duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// An HTTP filter of the connection manager, with its typed config.
fn http_filter(
    name: &str,
    config: envoy_types::pb::google::protobuf::Any,
) -> envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{http_filter, HttpFilter};
    HttpFilter {
        name: name.to_owned(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// Whether a route served on `listener` needs what `needs` looks for (and
/// so the listener needs the filter that does it).
fn listener_needs(policy: &Policy, listener: &str, needs: impl Fn(&crate::policy::Route) -> bool) -> bool {
    policy.routes.iter().any(|r| r.listener == listener && needs(r))
}

fn any<M: prost::Message + prost::Name>(msg: &M) -> envoy_types::pb::google::protobuf::Any {
    envoy_types::pb::google::protobuf::Any { type_url: M::type_url(), value: msg.encode_to_vec() }
}

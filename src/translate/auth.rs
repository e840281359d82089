//! `auth` → Envoy's `jwt_authn` HTTP filter, one requirement per distinct
//! `auth:` value, chosen per route; and, ahead of it, a `header_mutation`
//! filter that strips every claim header from every request, so an
//! upstream sees those headers only from a verified token (SPEC §3).
//!
//! Remote JWKS are fetched by Envoy through a cluster legate adds for the
//! JWKS host; the listener waits for the first fetch before serving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
    header_mutation::Action, HeaderMutation as MutationRule,
};
use envoy_types::pb::envoy::config::core::v3::{data_source, http_uri, DataSource, HttpUri};
use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{HeaderMutation, Mutations};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    jwt_provider::JwksSourceSpecifier, jwt_requirement::RequiresType, per_route_config::RequirementSpecifier,
    JwksAsyncFetch, JwtAuthentication, JwtCacheConfig, JwtClaimToHeader, JwtHeader, JwtProvider as EnvoyProvider,
    JwtRequirement, JwtRequirementOrList, PerRouteConfig, RemoteJwks,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::Any;

use super::{any, proto_duration};
use crate::policy::{Auth, Jwks, JwtProvider, Policy, Route, Service, TokenSource};

/// The `jwt_authn` filter's name, also its key in a route's `typed_per_filter_config`.
pub(super) const JWT_FILTER: &str = "envoy.filters.http.jwt_authn";
/// Where in jwt_authn's dynamic metadata a verified token's payload goes
/// (for rate limits keyed by a claim).
pub(super) const JWT_PAYLOAD: &str = "jwt_payload";
const STRIP_FILTER: &str = "envoy.filters.http.header_mutation";
/// Verified tokens each Envoy worker remembers per provider.
const JWT_CACHE_SIZE: u32 = 1000;
/// How long Envoy waits for a JWKS host.
const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The filters that go before the router on `listener`: the identity-header
/// strip whenever any provider maps claims to headers (on every listener,
/// public routes included), then `jwt_authn` when a route here needs a token.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    let mut out = Vec::new();
    let strip = policy.identity_headers();
    if !strip.is_empty() {
        let request_mutations = strip.into_iter().map(|h| MutationRule { action: Some(Action::Remove(h)) }).collect();
        let config = HeaderMutation {
            mutations: Some(Mutations { request_mutations, ..Default::default() }),
            ..Default::default()
        };
        out.push(super::http_filter(STRIP_FILTER, any(&config)));
    }
    let requirements: BTreeSet<&[String]> = policy
        .routes
        .iter()
        .filter(|r| r.listener == listener)
        .filter_map(|r| match &r.auth {
            Auth::AnyOf(p) => Some(p.as_slice()),
            Auth::Public | Auth::ApiKeys(_) | Auth::Basic(_) => None,
        })
        .collect();
    if requirements.is_empty() {
        return out;
    }
    let used: BTreeSet<&String> = requirements.iter().flat_map(|r| r.iter()).collect();
    let config = JwtAuthentication {
        providers: used
            .iter()
            .filter_map(|n| policy.jwt_providers.get(*n))
            .map(|p| (p.name.clone(), provider(p)))
            .collect(),
        requirement_map: requirements.iter().map(|r| (requirement_name(r), requirement(r))).collect(),
        // A CORS preflight carries no credentials; it must reach CORS handling.
        bypass_cors_preflight: true,
        ..Default::default()
    };
    out.push(super::http_filter(JWT_FILTER, any(&config)));
    out
}

/// The route's `typed_per_filter_config` entry naming its requirement.
pub(super) fn per_route(route: &Route) -> Option<(String, Any)> {
    let Auth::AnyOf(providers) = &route.auth else { return None };
    let config = PerRouteConfig {
        requirement_specifier: Some(RequirementSpecifier::RequirementName(requirement_name(providers))),
    };
    Some((JWT_FILTER.to_owned(), any(&config)))
}

/// One cluster per remote JWKS host, as a service the cluster code builds.
pub(super) fn jwks_services(policy: &Policy) -> Vec<Service> {
    let mut out: BTreeMap<String, Service> = BTreeMap::new();
    for p in policy.jwt_providers.values() {
        let Jwks::Remote(r) = &p.jwks else { continue };
        let name = jwks_cluster(r);
        out.entry(name.clone())
            .or_insert_with(|| Service::internal(name, r.endpoint.clone(), r.tls, JWKS_FETCH_TIMEOUT));
    }
    out.into_values().collect()
}

/// `jwks:<scheme>:<host>:<port>`: `:` cannot occur in a service name, so
/// this never clashes with one.
fn jwks_cluster(r: &crate::policy::RemoteJwks) -> String {
    let scheme = if r.tls { "https" } else { "http" };
    format!("jwks:{scheme}:{}:{}", r.endpoint.host, r.endpoint.port)
}

/// `a` or `a|b`: provider names cannot contain `|`.
fn requirement_name(providers: &[String]) -> String {
    providers.join("|")
}

fn requirement(providers: &[String]) -> JwtRequirement {
    let one = |p: &String| JwtRequirement { requires_type: Some(RequiresType::ProviderName(p.clone())) };
    match providers {
        [p] => one(p),
        many => JwtRequirement {
            requires_type: Some(RequiresType::RequiresAny(JwtRequirementOrList {
                requirements: many.iter().map(one).collect(),
            })),
        },
    }
}

fn provider(p: &JwtProvider) -> EnvoyProvider {
    let JwtProvider {
        name: _,
        issuer,
        audiences,
        jwks,
        from,
        claims_to_headers,
        clock_skew,
        require_expiration,
        max_lifetime,
        forward_token,
    } = p;
    let mut from_headers = Vec::new();
    let mut from_params = Vec::new();
    for source in from {
        match source {
            TokenSource::Header { name, prefix } => {
                from_headers.push(JwtHeader { name: name.clone(), value_prefix: prefix.clone() });
            }
            TokenSource::Query(q) => from_params.push(q.clone()),
        }
    }
    let source = match jwks {
        Jwks::Local(text) => JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(text.clone())),
            ..Default::default()
        }),
        Jwks::Remote(r) => JwksSourceSpecifier::RemoteJwks(RemoteJwks {
            http_uri: Some(HttpUri {
                uri: r.uri.clone(),
                timeout: Some(proto_duration(JWKS_FETCH_TIMEOUT)),
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(jwks_cluster(r))),
            }),
            cache_duration: Some(proto_duration(r.cache)),
            // Fetch when the listener is created and hold the listener until
            // the keys are in, so the first request is not the one that waits.
            async_fetch: Some(JwksAsyncFetch { fast_listener: false, ..Default::default() }),
            ..Default::default()
        }),
    };
    EnvoyProvider {
        issuer: issuer.clone(),
        audiences: audiences.clone(),
        forward: *forward_token,
        from_headers,
        from_params,
        claim_to_headers: claims_to_headers
            .iter()
            .map(|(claim, header)| JwtClaimToHeader {
                header_name: header.clone(),
                claim_name: claim.clone(),
                ..Default::default()
            })
            .collect(),
        // Envoy counts whole seconds; part of a second rounds up.
        clock_skew_seconds: u32::try_from(clock_skew.as_secs() + u64::from(clock_skew.subsec_nanos() > 0))
            .unwrap_or(u32::MAX),
        require_expiration: *require_expiration,
        max_lifetime: max_lifetime.map(proto_duration),
        jwks_source_specifier: Some(source),
        payload_in_metadata: JWT_PAYLOAD.into(),
        // Verified tokens are remembered (per worker, until they expire), so
        // a client's repeated requests skip the signature check. The cache
        // goes with the filter config: a key rotation starts a new one.
        jwt_cache_config: Some(JwtCacheConfig { jwt_cache_size: JWT_CACHE_SIZE, ..Default::default() }),
        ..Default::default()
    }
}

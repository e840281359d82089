//! `rate_limits` → Envoy's `ratelimit` filter, asking legate's rate-limit
//! service (on the xDS port, through the bootstrap's `legate_xds` cluster).
//!
//! Local and global limits alike are counted there, in fixed windows, so a
//! window never admits more than its limit (Envoy's own `local_ratelimit`
//! is a token bucket refilled continuously: up to twice the limit in a
//! window, which is not what `minute: 100` says). A local limit is counted
//! per proxy (the service tells proxies apart by the header their
//! bootstrap adds); a global one once for the fleet.
//!
//! Each route sends one descriptor per policy; its first entry carries the
//! policy itself ([`LimitSpec`]) so the service needs no copy of the
//! configuration and replicas cannot disagree. A second filter, at another
//! stage, serves the `fail_closed` policies.
//!
//! Counters are per route: a policy applied to several routes counts each
//! route separately, locally and globally alike.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    ApiVersion, GrpcService,
};
use envoy_types::pb::envoy::config::ratelimit::v3::RateLimitServiceConfig;
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    rate_limit::{
        action::{self, meta_data, ActionSpecifier},
        Action,
    },
    HeaderMatcher, RateLimit as EnvoyRateLimit,
};
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    rate_limit::XRateLimitHeadersRfcVersion as Headers, RateLimit as RateLimitFilter,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::metadata::v3::{metadata_key, MetadataKey};
use envoy_types::pb::envoy::r#type::v3::{HttpStatus, StatusCode};
use envoy_types::pb::google::protobuf::{BoolValue, UInt32Value};

use super::{any, auth::JWT_PAYLOAD, proto_duration};
use crate::policy::{Policy, RateKey, RateLimit, Route};
use crate::ratelimit::LimitSpec;

/// Filter names.
const FILTER: &str = "legate.ratelimit";
const FILTER_CLOSED: &str = "legate.ratelimit.fail_closed";
/// Stages: a route's descriptors go to one of the two filters.
const STAGE_OPEN: u32 = 0;
const STAGE_CLOSED: u32 = 1;
/// The descriptor entry that names (and holds) the policy.
const POLICY_KEY: &str = crate::ratelimit::SPEC_KEY;
/// The bootstrap's cluster for legate (see `bootstrap`).
const LEGATE_CLUSTER: &str = "legate_xds";
/// The rate-limit domain legate's service answers for.
pub(crate) const DOMAIN: &str = "legate";
/// How long Envoy waits for a decision before failing open (or closed).
const SERVICE_TIMEOUT: Duration = Duration::from_millis(250);

fn policies<'p>(policy: &'p Policy, route: &Route) -> Vec<&'p RateLimit> {
    route.rate_limits.iter().filter_map(|n| policy.rate_limits.get(n)).collect()
}

/// The filters that go before the router on `listener`: the `ratelimit`
/// filter(s) when a route there has a limit.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    let used: Vec<&RateLimit> =
        policy.routes.iter().filter(|r| r.listener == listener).flat_map(|r| policies(policy, r)).collect();
    let mut out = Vec::new();
    if used.iter().any(|l| !l.fail_closed) {
        out.push(super::http_filter(FILTER, any(&filter(STAGE_OPEN, false))));
    }
    if used.iter().any(|l| l.fail_closed) {
        out.push(super::http_filter(FILTER_CLOSED, any(&filter(STAGE_CLOSED, true))));
    }
    out
}

fn filter(stage: u32, fail_closed: bool) -> RateLimitFilter {
    RateLimitFilter {
        domain: DOMAIN.into(),
        stage,
        timeout: Some(proto_duration(SERVICE_TIMEOUT)),
        failure_mode_deny: fail_closed,
        // A limit that cannot be checked is the gateway's failure, not the
        // client's: 503 (Envoy's default would be 500).
        status_on_error: fail_closed.then_some(HttpStatus { code: StatusCode::ServiceUnavailable.into() }),
        rate_limit_service: Some(RateLimitServiceConfig {
            grpc_service: Some(GrpcService {
                target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                    cluster_name: LEGATE_CLUSTER.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            transport_api_version: ApiVersion::V3.into(),
        }),
        // legate's service adds the x-ratelimit-* headers itself, per policy.
        enable_x_ratelimit_headers: Headers::Off.into(),
        stat_prefix: if fail_closed { "legate_rate_limit_fail_closed" } else { "legate_rate_limit" }.into(),
        ..Default::default()
    }
}

/// The route's `rate_limits` (RouteAction field): a descriptor for each
/// of its policies.
pub(super) fn route_rate_limits(policy: &Policy, route: &Route) -> Vec<EnvoyRateLimit> {
    policies(policy, route)
        .into_iter()
        .flat_map(|l| {
            let spec = LimitSpec::of(l).encode();
            let stage = if l.fail_closed { STAGE_CLOSED } else { STAGE_OPEN };
            key_rate_limits(&l.key, &spec, &route.name, stage)
        })
        .collect()
}

/// Envoy `RateLimit` entries for one policy's key on `route`, for the filter
/// at `stage`. A header key gives two
/// alternatives: the header's value, or (when the request has no such
/// header) the client address, so leaving the header out is no way around
/// the limit.
fn key_rate_limits(key: &RateKey, id: &str, route: &str, stage: u32) -> Vec<EnvoyRateLimit> {
    let generic = |k: &str, v: &str| Action {
        action_specifier: Some(ActionSpecifier::GenericKey(action::GenericKey {
            descriptor_key: k.to_owned(),
            descriptor_value: v.to_owned(),
            ..Default::default()
        })),
    };
    let head = [generic(POLICY_KEY, id), generic("route", route)];
    let remote = Action { action_specifier: Some(ActionSpecifier::RemoteAddress(action::RemoteAddress {})) };
    let alternatives: Vec<Vec<Action>> = match key {
        RateKey::ClientIp => vec![vec![remote]],
        RateKey::Header(h) => vec![
            // Present: counted by its value (absent: this descriptor is not made).
            vec![Action {
                action_specifier: Some(ActionSpecifier::RequestHeaders(action::RequestHeaders {
                    header_name: h.clone(),
                    descriptor_key: "header".into(),
                    skip_if_absent: false,
                })),
            }],
            // Absent: counted by client address.
            vec![
                Action {
                    action_specifier: Some(ActionSpecifier::HeaderValueMatch(action::HeaderValueMatch {
                        descriptor_key: "no_header".into(),
                        descriptor_value: h.clone(),
                        expect_match: Some(BoolValue { value: true }),
                        headers: vec![HeaderMatcher {
                            name: h.clone(),
                            header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(false)),
                            ..Default::default()
                        }],
                        ..Default::default()
                    })),
                },
                remote,
            ],
        ],
        // The verified token's payload, which jwt_authn puts in dynamic metadata.
        RateKey::Claim(c) => vec![vec![Action {
            action_specifier: Some(ActionSpecifier::Metadata(action::MetaData {
                descriptor_key: "claim".into(),
                metadata_key: Some(MetadataKey {
                    key: super::auth::JWT_FILTER.into(),
                    path: [JWT_PAYLOAD, c.as_str()]
                        .into_iter()
                        .map(|k| metadata_key::PathSegment {
                            segment: Some(metadata_key::path_segment::Segment::Key(k.to_owned())),
                        })
                        .collect(),
                }),
                source: meta_data::Source::Dynamic.into(),
                ..Default::default()
            })),
        }]],
        RateKey::Route => vec![Vec::new()],
    };
    alternatives
        .into_iter()
        .map(|rest| EnvoyRateLimit {
            stage: Some(UInt32Value { value: stage }),
            actions: head.iter().cloned().chain(rest).collect(),
            ..Default::default()
        })
        .collect()
}

//! `rate_limits` → Envoy's rate-limit filters.
//!
//! **Local** limits use `local_ratelimit`, configured per route: one token
//! bucket per window of each policy, as a descriptor whose key entry has no
//! value, so each distinct key value (client address, header, claim) gets
//! buckets of its own. All windows are enforced at once.
//!
//! **Global** limits use the `ratelimit` filter, which asks legate's
//! rate-limit service (on the xDS port, through the bootstrap's `legate_xds`
//! cluster). Each route sends one descriptor per policy; its first entry
//! carries the policy itself ([`GlobalSpec`]) so the service needs no copy
//! of the configuration and replicas cannot disagree. A second filter, at
//! another stage, serves the `fail_closed` policies.
//!
//! Counters are per route: a policy applied to several routes counts each
//! route separately, locally and globally alike.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    ApiVersion, GrpcService, RuntimeFractionalPercent,
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
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    rate_limit_descriptor::Entry, LocalRateLimitDescriptor, XRateLimitHeadersRfcVersion,
};
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::ratelimit::v3::{
    rate_limit::XRateLimitHeadersRfcVersion as GlobalHeaders, RateLimit as GlobalRateLimit,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::envoy::r#type::metadata::v3::{metadata_key, MetadataKey};
use envoy_types::pb::envoy::r#type::v3::{
    fractional_percent::DenominatorType, FractionalPercent, HttpStatus, StatusCode, TokenBucket,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};

use super::{any, auth::JWT_PAYLOAD, proto_duration};
use crate::policy::{Policy, RateKey, RateLimit, Route, Scope};
use crate::ratelimit::GlobalSpec;

/// Filter names; also the keys of a route's `typed_per_filter_config`.
pub(super) const LOCAL_FILTER: &str = "envoy.filters.http.local_ratelimit";
const GLOBAL_FILTER: &str = "legate.ratelimit";
const GLOBAL_FILTER_CLOSED: &str = "legate.ratelimit.fail_closed";
/// Stages: a route's global descriptors go to one of the two filters.
const STAGE_OPEN: u32 = 0;
const STAGE_CLOSED: u32 = 1;
/// The descriptor entry that names the policy (and for global limits, holds it).
const POLICY_KEY: &str = crate::ratelimit::SPEC_KEY;
/// The bootstrap's cluster for legate (see `bootstrap`).
const LEGATE_CLUSTER: &str = "legate_xds";
/// The rate-limit domain legate's service answers for.
pub(crate) const DOMAIN: &str = "legate";
/// How long Envoy waits for a global decision before failing open (or closed).
const SERVICE_TIMEOUT: Duration = Duration::from_millis(250);
/// Distinct key values (clients, header values, ...) each local descriptor
/// keeps buckets for; the least recently seen are dropped beyond it.
const MAX_DYNAMIC_DESCRIPTORS: u32 = 65_536;

fn policies<'p>(policy: &'p Policy, route: &Route, scope: Scope) -> Vec<&'p RateLimit> {
    route.rate_limits.iter().filter_map(|n| policy.rate_limits.get(n)).filter(|l| l.scope == scope).collect()
}

/// The filters that go before the router on `listener`: `local_ratelimit`
/// when a route there has a local limit, the `ratelimit` filter(s) when one
/// has a global limit.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    let routes: Vec<&Route> = policy.routes.iter().filter(|r| r.listener == listener).map(|r| &**r).collect();
    let used = |scope: Scope| routes.iter().flat_map(|r| policies(policy, r, scope)).collect::<Vec<_>>();
    let mut out = Vec::new();
    if !used(Scope::Local).is_empty() {
        // Off here (no bucket, 0% enabled); each route with limits turns it on.
        let config = LocalRateLimit { stat_prefix: "legate_local_rate_limit".into(), ..Default::default() };
        out.push(super::http_filter(LOCAL_FILTER, any(&config)));
    }
    let global = used(Scope::Global);
    if global.iter().any(|l| !l.fail_closed) {
        out.push(super::http_filter(GLOBAL_FILTER, any(&global_filter(STAGE_OPEN, false))));
    }
    if global.iter().any(|l| l.fail_closed) {
        out.push(super::http_filter(GLOBAL_FILTER_CLOSED, any(&global_filter(STAGE_CLOSED, true))));
    }
    out
}

fn global_filter(stage: u32, fail_closed: bool) -> GlobalRateLimit {
    GlobalRateLimit {
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
        enable_x_ratelimit_headers: GlobalHeaders::Off.into(),
        stat_prefix: if fail_closed { "legate_rate_limit_fail_closed" } else { "legate_rate_limit" }.into(),
        ..Default::default()
    }
}

/// The route's `local_ratelimit` config, when it has local limits.
pub(super) fn per_route(policy: &Policy, route: &Route) -> Option<(String, Any)> {
    let local = policies(policy, route, Scope::Local);
    if local.is_empty() {
        return None;
    }
    let headers = local.iter().any(|l| l.headers);
    let mut descriptors = Vec::new();
    let mut rate_limits = Vec::new();
    for l in &local {
        for (window, limit) in &l.limits {
            let id = format!("{}/{}", l.name, window.name());
            for actions in key_actions(&l.key, &id, None) {
                let entries: Vec<Entry> =
                    actions.iter().map(|(k, v)| Entry { key: k.clone(), value: v.clone() }).collect();
                descriptors.push(LocalRateLimitDescriptor {
                    entries,
                    token_bucket: Some(bucket(*limit, Duration::from_secs(window.seconds()))),
                    shadow_mode: l.shadow,
                });
            }
            rate_limits.extend(key_rate_limits(&l.key, &id, None, None));
        }
    }
    let percent = |n: u32| RuntimeFractionalPercent {
        default_value: Some(FractionalPercent { numerator: n, denominator: DenominatorType::Hundred.into() }),
        runtime_key: String::new(),
    };
    let config = LocalRateLimit {
        stat_prefix: "legate_local_rate_limit".into(),
        // Requests no descriptor matches draw from a bucket that never runs dry.
        token_bucket: Some(bucket(u64::from(u32::MAX), Duration::from_secs(1))),
        filter_enabled: Some(percent(100)),
        filter_enforced: Some(percent(100)),
        descriptors,
        rate_limits,
        always_consume_default_token_bucket: Some(BoolValue { value: false }),
        max_dynamic_descriptors: Some(UInt32Value { value: MAX_DYNAMIC_DESCRIPTORS }),
        enable_x_ratelimit_headers: if headers {
            XRateLimitHeadersRfcVersion::DraftVersion03.into()
        } else {
            XRateLimitHeadersRfcVersion::Off.into()
        },
        enable_retry_after_header: headers,
        ..Default::default()
    };
    Some((LOCAL_FILTER.to_owned(), any(&config)))
}

/// The route's `rate_limits` for its global limits (RouteAction field).
pub(super) fn route_rate_limits(policy: &Policy, route: &Route) -> Vec<EnvoyRateLimit> {
    policies(policy, route, Scope::Global)
        .into_iter()
        .flat_map(|l| {
            let spec = GlobalSpec::of(l).encode();
            let stage = if l.fail_closed { STAGE_CLOSED } else { STAGE_OPEN };
            key_rate_limits(&l.key, &spec, Some(&route.name), Some(stage))
        })
        .collect()
}

/// The descriptor entries each request yields for a policy: `(key, value)`,
/// an empty value standing for "whatever the request has". A header key
/// gives two alternatives: the header's value, or (when the request has no
/// such header) the client address, so leaving the header out is no way
/// around the limit.
fn key_actions(key: &RateKey, id: &str, route: Option<&str>) -> Vec<Vec<(String, String)>> {
    let mut head = vec![(POLICY_KEY.to_owned(), id.to_owned())];
    if let Some(r) = route {
        head.push(("route".to_owned(), r.to_owned()));
    }
    let with = |rest: &[(&str, &str)]| {
        let mut v = head.clone();
        v.extend(rest.iter().map(|(k, x)| ((*k).to_owned(), (*x).to_owned())));
        v
    };
    match key {
        RateKey::ClientIp => vec![with(&[("remote_address", "")])],
        RateKey::Header(h) => {
            vec![with(&[("header", "")]), with(&[("no_header", h), ("remote_address", "")])]
        }
        RateKey::Claim(_) => vec![with(&[("claim", "")])],
        RateKey::Route => vec![with(&[])],
    }
}

/// Envoy `RateLimit` entries producing [`key_actions`]' descriptors.
fn key_rate_limits(key: &RateKey, id: &str, route: Option<&str>, stage: Option<u32>) -> Vec<EnvoyRateLimit> {
    let generic = |k: &str, v: &str| Action {
        action_specifier: Some(ActionSpecifier::GenericKey(action::GenericKey {
            descriptor_key: k.to_owned(),
            descriptor_value: v.to_owned(),
            ..Default::default()
        })),
    };
    let mut head = vec![generic(POLICY_KEY, id)];
    if let Some(r) = route {
        head.push(generic("route", r));
    }
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
            stage: stage.map(|value| UInt32Value { value }),
            actions: head.iter().cloned().chain(rest).collect(),
            ..Default::default()
        })
        .collect()
}

/// `limit` requests per `every`, all refilled at once at the end of each
/// interval: a fixed window.
fn bucket(limit: u64, every: Duration) -> TokenBucket {
    let n = u32::try_from(limit).unwrap_or(u32::MAX);
    TokenBucket {
        max_tokens: n,
        tokens_per_fill: Some(UInt32Value { value: n }),
        fill_interval: Some(proto_duration(every)),
    }
}

//! A service's resilience settings: circuit breakers, outlier detection and
//! active health checks on its cluster; retries and the `ring_hash` key on
//! the routes to it.

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{
    circuit_breakers::Thresholds, CircuitBreakers, OutlierDetection as EnvoyOutlier,
};
use envoy_types::pb::envoy::config::core::v3::{
    health_check::{HealthChecker, HttpHealthCheck},
    HealthCheck as EnvoyHealthCheck,
};
use envoy_types::pb::envoy::config::route::v3::{
    header_matcher::HeaderMatchSpecifier,
    retry_policy::{retry_host_predicate, RetryBackOff, RetryHostPredicate},
    route_action::{hash_policy, HashPolicy},
    HeaderMatcher, RetryPolicy,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, RegexMatcher, StringMatcher};
use envoy_types::pb::google::protobuf::{Duration as ProtoDuration, UInt32Value};

use super::{any, proto_duration};
use crate::policy::{CircuitBreaker, HashKey, HealthCheck, OutlierDetection, Retries, Service};

/// Backoff between retries: Envoy's jittered exponential backoff from 25 ms,
/// capped at 250 ms.
const RETRY_BASE: Duration = Duration::from_millis(25);
const RETRY_MAX: Duration = Duration::from_millis(250);

fn u32_value(v: Option<u32>) -> Option<UInt32Value> {
    v.map(|value| UInt32Value { value })
}

fn dur(d: Duration) -> Option<ProtoDuration> {
    Some(proto_duration(d))
}

/// The cluster's `circuit_breakers`.
pub(super) fn circuit_breakers(c: &CircuitBreaker) -> CircuitBreakers {
    let CircuitBreaker { max_connections, max_pending_requests, max_requests, max_retries } = c;
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: u32_value(*max_connections),
            max_pending_requests: u32_value(*max_pending_requests),
            max_requests: u32_value(*max_requests),
            max_retries: u32_value(*max_retries),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The cluster's `outlier_detection`: consecutive 5xx only (success-rate
/// ejection needs traffic volumes a gateway can't assume).
pub(super) fn outlier_detection(o: &OutlierDetection) -> EnvoyOutlier {
    let OutlierDetection { consecutive_5xx, interval, base_ejection_time, max_ejection_percent } = o;
    EnvoyOutlier {
        consecutive_5xx: u32_value(Some(*consecutive_5xx)),
        interval: dur(*interval),
        base_ejection_time: dur(*base_ejection_time),
        max_ejection_percent: u32_value(Some(*max_ejection_percent)),
        enforcing_consecutive_5xx: u32_value(Some(100)),
        enforcing_success_rate: u32_value(Some(0)),
        ..Default::default()
    }
}

/// The cluster's active HTTP health check.
pub(super) fn health_check(h: &HealthCheck) -> EnvoyHealthCheck {
    let HealthCheck { path, interval, timeout, unhealthy_threshold, healthy_threshold } = h;
    EnvoyHealthCheck {
        timeout: dur(*timeout),
        interval: dur(*interval),
        // Envoy checks a cluster that has had no traffic yet only once a
        // minute by default; check it at the interval the policy gives.
        no_traffic_interval: dur(*interval),
        unhealthy_threshold: u32_value(Some(*unhealthy_threshold)),
        healthy_threshold: u32_value(Some(*healthy_threshold)),
        health_checker: Some(HealthChecker::HttpHealthCheck(HttpHealthCheck {
            path: path.clone(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route's `retry_policy`: only for the listed methods (by default the
/// idempotent ones), each retry on another host when there is one.
pub(super) fn retry_policy(r: &Retries) -> RetryPolicy {
    let Retries { attempts, on, per_try_timeout, methods } = r;
    RetryPolicy {
        retry_on: on.join(","),
        num_retries: u32_value(Some(*attempts)),
        per_try_timeout: per_try_timeout.map(proto_duration),
        retry_back_off: Some(RetryBackOff { base_interval: dur(RETRY_BASE), max_interval: dur(RETRY_MAX) }),
        retry_host_predicate: vec![previous_hosts()],
        host_selection_retry_max_attempts: 3,
        retriable_request_headers: vec![HeaderMatcher {
            name: ":method".into(),
            header_match_specifier: Some(HeaderMatchSpecifier::StringMatch(StringMatcher {
                match_pattern: Some(MatchPattern::SafeRegex(RegexMatcher {
                    regex: methods.join("|"),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// Retry on another host than those tried, when there is one.
pub(super) fn previous_hosts() -> RetryHostPredicate {
    RetryHostPredicate {
        name: "envoy.retry_host_predicates.previous_hosts".into(),
        config_type: Some(retry_host_predicate::ConfigType::TypedConfig(any(&PreviousHostsPredicate {}))),
    }
}

/// The route's `hash_policy` when a service it sends to uses `ring_hash`.
pub(super) fn hash_policy(s: &Service) -> HashPolicy {
    let specifier = match &s.hash_key {
        HashKey::ClientIp => {
            hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties { source_ip: true })
        }
        HashKey::Header(h) => {
            hash_policy::PolicySpecifier::Header(hash_policy::Header { header_name: h.clone(), ..Default::default() })
        }
    };
    HashPolicy { policy_specifier: Some(specifier), ..Default::default() }
}

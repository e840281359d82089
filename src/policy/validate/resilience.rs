//! A service's resilience settings: `retries`, `circuit_breaker`,
//! `outlier_detection`, `health_check`, and `hash_key` for `ring_hash`.
//!
//! Each check returns `None` when it reported an error, else the setting
//! (`Some(None)` when absent).

use std::time::Duration;

use super::{did_you_mean, duration, header_name_ok, whole_number, Errors};
use crate::policy::model::{CircuitBreaker, HashKey, HealthCheck, OutlierDetection, Retries};
use crate::policy::raw;
use crate::policy::source::Origin;

/// Retry conditions, named as Envoy's `retry_on` names them.
use crate::policy::words::RETRY_ON;
/// Retried unless `methods` says otherwise: the idempotent ones (RFC 9110).
pub(crate) const IDEMPOTENT: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

/// Envoy's counters are 32 bits.
const MAX: u32 = u32::MAX;

/// A duration that must be more than zero.
fn positive(errs: &mut Errors<'_>, o: &Origin, text: Option<&String>, what: &str) -> Option<Option<Duration>> {
    let d = duration(errs, o, text)?;
    if d == Some(Duration::ZERO) {
        errs.at(o, format!("{what} must be more than 0"));
        return None;
    }
    Some(d)
}

pub(super) fn retries(errs: &mut Errors<'_>, o: &Origin, r: Option<&raw::Retries>) -> Option<Option<Retries>> {
    let Some(raw::Retries { attempts, on, per_try_timeout, methods }) = r else { return Some(None) };
    let before = errs.list.len();
    let attempts = match attempts {
        None => {
            errs.at(o, "retries needs `attempts` (how many times to retry after the first try)");
            None
        }
        // 0: one try, no retries.
        Some(n) => whole_number(errs, &o.key("attempts"), Some(*n), "attempts", (0, MAX), "").flatten(),
    };
    let mut conditions: Vec<String> = Vec::new();
    for (i, c) in on.iter().flatten().enumerate() {
        if !RETRY_ON.contains(&c.as_str()) {
            let hint = did_you_mean(c, RETRY_ON).map(|b| format!("; did you mean `{b}`?")).unwrap_or_default();
            errs.at(
                &o.key("on").index(i),
                format!("unknown retry condition `{c}` (one of {}){hint}", RETRY_ON.join(", ")),
            );
        } else if !conditions.contains(c) {
            conditions.push(c.clone());
        }
    }
    if on.as_ref().is_some_and(Vec::is_empty) {
        errs.at(&o.key("on"), "`on` is empty; list when to retry, like [5xx, reset, connect-failure]");
    }
    if on.is_none() {
        conditions = vec!["5xx".into(), "reset".into(), "connect-failure".into()];
    }
    let per_try = positive(errs, &o.key("per_try_timeout"), per_try_timeout.as_ref(), "per_try_timeout");
    let mut method_list = super::methods(errs, &o.key("methods"), methods.as_ref());
    if methods.is_none() {
        method_list = IDEMPOTENT.iter().map(|m| (*m).to_owned()).collect();
    }
    if errs.list.len() > before {
        return None;
    }
    Some(Some(Retries { attempts: attempts?, on: conditions, per_try_timeout: per_try?, methods: method_list }))
}

pub(super) fn circuit_breaker(
    errs: &mut Errors<'_>,
    o: &Origin,
    c: Option<&raw::CircuitBreaker>,
) -> Option<Option<CircuitBreaker>> {
    let Some(raw::CircuitBreaker { max_connections, max_pending_requests, max_requests, max_retries }) = c else {
        return Some(None);
    };
    // 0 pending requests (no queue) and 0 retries at once are settings;
    // 0 connections or requests would refuse everything.
    let mut each = |key: &'static str, n: &Option<i64>, min: u32| {
        whole_number(errs, &o.key(key), *n, key, (min, MAX), "0 would refuse every request")
    };
    let (a, b, c, d) = (
        each("max_connections", max_connections, 1),
        each("max_pending_requests", max_pending_requests, 0),
        each("max_requests", max_requests, 1),
        each("max_retries", max_retries, 0),
    );
    Some(Some(CircuitBreaker { max_connections: a?, max_pending_requests: b?, max_requests: c?, max_retries: d? }))
}

pub(super) fn outlier_detection(
    errs: &mut Errors<'_>,
    o: &Origin,
    d: Option<&raw::OutlierDetection>,
) -> Option<Option<OutlierDetection>> {
    let Some(raw::OutlierDetection { consecutive_5xx, interval, base_ejection_time, max_ejection_percent }) = d else {
        return Some(None);
    };
    let n = whole_number(
        errs,
        &o.key("consecutive_5xx"),
        *consecutive_5xx,
        "consecutive_5xx",
        (1, MAX),
        "to eject no endpoint, leave outlier_detection out",
    );
    let interval = positive(errs, &o.key("interval"), interval.as_ref(), "interval");
    let base = positive(errs, &o.key("base_ejection_time"), base_ejection_time.as_ref(), "base_ejection_time");
    let percent = match max_ejection_percent {
        None => Some(None),
        Some(p @ 0..=100) => Some(Some(u32::try_from(*p).unwrap_or(100))),
        Some(p) => {
            errs.at(&o.key("max_ejection_percent"), format!("max_ejection_percent is a percentage (0-100), not {p}"));
            None
        }
    };
    // Envoy's own defaults where the policy says nothing.
    Some(Some(OutlierDetection {
        consecutive_5xx: n?.unwrap_or(5),
        interval: interval?.unwrap_or(Duration::from_secs(10)),
        base_ejection_time: base?.unwrap_or(Duration::from_secs(30)),
        max_ejection_percent: percent?.unwrap_or(10),
    }))
}

pub(super) fn health_check(
    errs: &mut Errors<'_>,
    o: &Origin,
    h: Option<&raw::HealthCheck>,
) -> Option<Option<HealthCheck>> {
    let Some(raw::HealthCheck { path, interval, timeout, unhealthy_threshold, healthy_threshold }) = h else {
        return Some(None);
    };
    let path = match path {
        Some(p) if p.starts_with('/') => Some(p.clone()),
        Some(p) => {
            errs.at(&o.key("path"), format!("health_check path `{p}` must start with `/`"));
            None
        }
        None => {
            errs.at(o, "health_check needs a `path` to GET, like /healthz");
            None
        }
    };
    let interval = positive(errs, &o.key("interval"), interval.as_ref(), "interval");
    let timeout = positive(errs, &o.key("timeout"), timeout.as_ref(), "timeout");
    let threshold = |errs: &mut Errors<'_>, key: &'static str, n: Option<i64>| {
        whole_number(errs, &o.key(key), n, key, (1, MAX), "a count of checks in a row")
    };
    let unhealthy = threshold(errs, "unhealthy_threshold", *unhealthy_threshold);
    let healthy = threshold(errs, "healthy_threshold", *healthy_threshold);
    let (interval, timeout) = (interval?.unwrap_or(Duration::from_secs(5)), timeout?.unwrap_or(Duration::from_secs(1)));
    if timeout > interval {
        errs.at(&o.key("timeout"), "the health check timeout is longer than its interval");
        return None;
    }
    Some(Some(HealthCheck {
        path: path?,
        interval,
        timeout,
        unhealthy_threshold: unhealthy?.unwrap_or(3),
        healthy_threshold: healthy?.unwrap_or(2),
    }))
}

pub(super) fn hash_key(errs: &mut Errors<'_>, o: &Origin, k: Option<&raw::RateKey>) -> Option<HashKey> {
    match k {
        None => Some(HashKey::ClientIp),
        Some(raw::RateKey::Named(n)) if n == "client_ip" => Some(HashKey::ClientIp),
        Some(raw::RateKey::Spec(raw::RateKeySpec { header: Some(h), claim: None })) if header_name_ok(h) => {
            Some(HashKey::Header(h.to_ascii_lowercase()))
        }
        Some(_) => {
            errs.at(o, "hash_key is `client_ip` or `{ header: NAME }`");
            None
        }
    }
}

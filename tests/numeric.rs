//! Every numeric policy key, at the smallest and the largest value legate
//! allows: the policy validates, and stock Envoy (`envoy --mode validate`)
//! accepts what it translates to. One step beyond either end is an error
//! located at the key (or, for a sum, at the list it sums).
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::path::Path;

use common::static_config::{envoy_validate, static_bootstrap};

/// The longest duration legate accepts: 100 years.
const MAX_DURATION: &str = "3155760000s";
const PAST_DURATION: &str = "3155760001s";
const U32_MAX: &str = "4294967295";
const PAST_U32: &str = "4294967296";

/// Each `@name` below is a value under test; every other `@name` keeps its
/// everyday value meanwhile.
const POLICY: &str = r#"
listeners:
  - name: public
    port: @port
  - name: secure
    port: 8443
    tls: { cert: localhost.crt, key: localhost.key }
    http_redirect_port: @redirect
services:
  - name: orders
    url: http://127.0.0.1:@url_port
    connect_timeout: @connect_timeout
    timeout: @service_timeout
    idle_timeout: @service_idle_timeout
    retries:
      attempts: @attempts
      per_try_timeout: @per_try_timeout
    circuit_breaker:
      max_connections: @max_connections
      max_pending_requests: @max_pending
      max_requests: @max_requests
      max_retries: @max_retries
    outlier_detection:
      consecutive_5xx: @consecutive_5xx
      interval: @outlier_interval
      base_ejection_time: @base_ejection_time
      max_ejection_percent: @max_ejection_percent
    health_check:
      path: /healthz
      interval: @health_interval
      timeout: @health_timeout
      unhealthy_threshold: @unhealthy_threshold
      healthy_threshold: @healthy_threshold
  - name: orders-next
    endpoints: ["127.0.0.1:@endpoint_port"]
  - name: orders-later
    url: http://127.0.0.1:3002
routes:
  - name: orders
    listener: public
    match: { prefix: /orders }
    service: orders
    timeout: @route_timeout
    idle_timeout: @route_idle_timeout
    max_request_body: @max_request_body
    rate_limit: per-client
    auth: main
    cors:
      origins: [https://app.example.com]
      max_age: @max_age
  - name: canary
    listener: public
    match: { prefix: /canary }
    split:
      - { service: orders-next, weight: @weight }
      - { service: orders-later, weight: 1 }
aggregations:
  - name: dashboard
    listener: public
    path: /dashboard/{id}
    timeout: @aggregation_timeout
    calls:
      order: { service: orders, path: "/orders/{id}", timeout: @call_timeout }
rate_limits:
  - name: per-client
    limits: { minute: @minute }
auth:
  jwt:
    - name: main
      issuer: https://auth.example.com
      jwks: { uri: "https://auth.example.com/.well-known/jwks.json", cache: @jwks_cache }
      clock_skew: @clock_skew
defaults:
  tracing: { collector: "127.0.0.1:4317", sampling: @sampling }
"#;

/// One key: its placeholder, everyday value, smallest and largest allowed
/// value, the values just beyond (`None`: nothing beyond that end can be
/// written).
struct Key {
    name: &'static str,
    everyday: &'static str,
    min: &'static str,
    max: &'static str,
    below: Option<&'static str>,
    above: Option<&'static str>,
}

const fn key(
    name: &'static str,
    everyday: &'static str,
    (min, max): (&'static str, &'static str),
    (below, above): (Option<&'static str>, Option<&'static str>),
) -> Key {
    Key { name, everyday, min, max, below, above }
}

/// A duration from `min` up to 100 years.
const fn duration(name: &'static str, everyday: &'static str, min: &'static str, below: &'static str) -> Key {
    key(name, everyday, (min, MAX_DURATION), (Some(below), Some(PAST_DURATION)))
}

/// A 32-bit count from `min` up.
const fn count(name: &'static str, everyday: &'static str, min: &'static str, below: &'static str) -> Key {
    key(name, everyday, (min, U32_MAX), (Some(below), Some(PAST_U32)))
}

const KEYS: &[Key] = &[
    key("port", "10000", ("1", "65535"), (Some("0"), Some("65536"))),
    key("redirect", "8080", ("1", "65535"), (Some("0"), Some("65536"))),
    key("url_port", "3000", ("1", "65535"), (Some("0"), Some("65536"))),
    key("endpoint_port", "3001", ("1", "65535"), (Some("0"), Some("65536"))),
    duration("connect_timeout", "1s", "1ms", "0s"),
    // 0s: no timeout, as in Envoy.
    duration("service_timeout", "15s", "0s", "-1ms"),
    duration("service_idle_timeout", "1m", "0s", "-1ms"),
    count("attempts", "2", "0", "-1"),
    duration("per_try_timeout", "1s", "1ms", "0s"),
    count("max_connections", "100", "1", "0"),
    count("max_pending", "100", "0", "-1"),
    count("max_requests", "100", "1", "0"),
    count("max_retries", "3", "0", "-1"),
    count("consecutive_5xx", "5", "1", "0"),
    duration("outlier_interval", "10s", "1ms", "0s"),
    duration("base_ejection_time", "30s", "1ms", "0s"),
    key("max_ejection_percent", "10", ("0", "100"), (Some("-1"), Some("101"))),
    duration("health_interval", "5s", "1ms", "0s"),
    duration("health_timeout", "1s", "1ms", "0s"),
    count("unhealthy_threshold", "3", "1", "0"),
    count("healthy_threshold", "2", "1", "0"),
    duration("route_timeout", "15s", "0s", "-1ms"),
    duration("route_idle_timeout", "5m", "0s", "-1ms"),
    // Envoy's buffer filter counts a body in 32 bits, and 0 refuses every one.
    key("max_request_body", "10MiB", ("1B", "4294967295B"), (Some("0B"), Some("4294967296B"))),
    // Whole seconds: Envoy's max_age is a number of them.
    key("max_age", "10m", ("0s", MAX_DURATION), (Some("-1s"), Some(PAST_DURATION))),
    // With the other weight's 1, the sum Envoy adds up in 32 bits (that
    // error points at the split's list, which starts on this line).
    key("weight", "9", ("0", "4294967294"), (Some("-1"), Some(U32_MAX))),
    duration("aggregation_timeout", "2s", "1ms", "0s"),
    duration("call_timeout", "1s", "1ms", "0s"),
    count("minute", "100", "1", "0"),
    duration("jwks_cache", "5m", "1s", "999ms"),
    // Whole seconds, at least 1 (Envoy would read 0 as 60).
    key("clock_skew", "60s", ("1s", MAX_DURATION), (Some("0s"), Some(PAST_DURATION))),
    key("sampling", "100", ("0", "100"), (Some("-0.1"), Some("100.1"))),
];

/// Keys whose smallest or largest values clash with another key's (two
/// listeners on one port), checked in a policy of their own.
const ALONE: &[&str] = &["redirect"];

/// The policy with `set` values, every other key at its everyday value.
fn render(set: &[(&str, &str)]) -> String {
    let mut text = POLICY.to_owned();
    // Longest names first: `@max_requests` is not `@max_request` + "s".
    let mut keys: Vec<&Key> = KEYS.iter().collect();
    keys.sort_by_key(|k| std::cmp::Reverse(k.name.len()));
    for k in keys {
        let value = set.iter().find(|(n, _)| *n == k.name).map_or(k.everyday, |(_, v)| *v);
        text = text.replace(&format!("@{}", k.name), value);
    }
    assert!(!text.contains('@'), "a placeholder left: {text}");
    text
}

/// Write `policy` into a folder with the TLS files it names, and load it.
fn load(policy: &str) -> Result<legate::policy::Policy, legate::policy::Diagnostics> {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tls/certs");
    for f in ["localhost.crt", "localhost.key"] {
        std::fs::copy(certs.join(f), dir.path().join(f)).expect("copy the example certificate");
    }
    std::fs::write(dir.path().join("gateway.yaml"), policy).expect("write");
    legate::policy::load_dir(dir.path())
}

/// The line (from 1) of the policy's first line that contains `text`
/// (values hold no newline, so the template's lines are the policy's).
fn line_of(text: &str) -> usize {
    POLICY.lines().position(|l| l.contains(text)).map(|i| i + 1).unwrap_or_else(|| panic!("no `{text}` in the policy"))
}

#[test]
fn envoy_accepts_every_numeric_key_at_both_ends() {
    for (end, pick) in [("smallest", (|k: &Key| k.min) as fn(&Key) -> &'static str), ("largest", |k: &Key| k.max)] {
        let mut groups: Vec<Vec<(&str, &str)>> =
            vec![KEYS.iter().filter(|k| !ALONE.contains(&k.name)).map(|k| (k.name, pick(k))).collect()];
        groups.extend(KEYS.iter().filter(|k| ALONE.contains(&k.name)).map(|k| vec![(k.name, pick(k))]));
        for set in groups {
            let text = render(&set);
            let policy = load(&text).unwrap_or_else(|d| panic!("the {end} values are refused:\n{d}\n{text}"));
            if let Err(said) = envoy_validate(&static_bootstrap(&policy)) {
                panic!(
                    "envoy refuses the {end} values of {:?}: {said}",
                    set.iter().map(|(n, _)| n).collect::<Vec<_>>()
                );
            }
        }
    }
}

#[test]
fn one_step_beyond_either_end_is_a_located_error() {
    let mut checked = 0;
    for k in KEYS {
        for (end, value) in [("below", k.below), ("above", k.above)] {
            let Some(value) = value else { continue };
            let text = render(&[(k.name, value)]);
            let errors = match load(&text) {
                Ok(_) => panic!("`{}: {value}` ({end} the range) is accepted", k.name),
                Err(d) => d.0,
            };
            let want = line_of(&format!("@{}", k.name));
            assert!(
                errors.iter().any(|e| e.file == "gateway.yaml" && e.line == want),
                "`{}: {value}` should be an error at gateway.yaml:{want}, got:\n{}",
                k.name,
                errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
            );
            checked += 1;
        }
    }
    assert!(checked >= 2 * KEYS.len() - 2, "{checked} values beyond the ends checked");
}

#[test]
fn finer_than_envoy_counts_is_an_error_not_a_rounding() {
    // Envoy counts timeouts in milliseconds and would read 500us as 0: no
    // timeout at all. clock_skew and max_age are whole seconds.
    for (name, value, says) in [
        ("route_timeout", "500us", "whole milliseconds"),
        ("connect_timeout", "1ms500us", "whole milliseconds"),
        ("clock_skew", "1500ms", "whole seconds"),
        ("max_age", "90500ms", "whole seconds"),
    ] {
        let text = render(&[(name, value)]);
        let errors = load(&text).err().unwrap_or_else(|| panic!("`{name}: {value}` is accepted")).0;
        let line = line_of(&format!("@{name}"));
        assert!(
            errors.iter().any(|e| e.line == line && e.message.contains(says)),
            "`{name}: {value}`: {}",
            errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
        );
    }
}

//! The policy files as written: serde types that mirror SPEC §2 key for key.
//!
//! Values whose checks need more than their own text (durations, regexes,
//! references) stay strings here; `validate` turns them into the model.

use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, value::MapAccessDeserializer, value::SeqAccessDeserializer};
use serde::{Deserialize, Deserializer};

/// One YAML document of a policy file. Every list merges across files.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct PolicyFile {
    /// Where Envoy accepts requests: a port, with its hosts and TLS.
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    /// The upstreams routes send to: an Envoy cluster each.
    #[serde(default)]
    pub(crate) services: Vec<Service>,
    /// Which requests go to which service, with rewrites, auth, limits and header changes.
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    /// Settings every route has unless its service or the route says otherwise.
    pub(crate) defaults: Option<Defaults>,
    /// JWT providers and API key sets, which `auth:` on defaults, services and routes names.
    pub(crate) auth: Option<AuthSection>,
    /// Rate-limit policies, which `rate_limit:` on defaults, services and routes names.
    #[serde(default)]
    pub(crate) rate_limits: Vec<RateLimit>,
    /// One client request answered from several service calls, made by legate's aggregator.
    #[serde(default)]
    pub(crate) aggregations: Vec<Aggregation>,
}

/// `aggregations[]`: one client request answered from several service calls.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Aggregation {
    /// Unique among routes and aggregations.
    pub(crate) name: String,
    /// Optional when there is one listener.
    pub(crate) listener: Option<String>,
    /// The path it answers, with `{name}` standing for one whole path segment.
    pub(crate) path: Option<String>,
    /// Default [GET].
    pub(crate) methods: Option<Vec<String>>,
    /// As on a route; default: defaults.auth.
    pub(crate) auth: Option<NameRef>,
    /// As on a route; default: defaults.rate_limit.
    pub(crate) rate_limit: Option<NameRef>,
    /// The answer is ready by then, with defaults for calls not done (default 5s).
    pub(crate) timeout: Option<String>,
    /// Call name -> the call; the name is the key of its result in the answer.
    #[serde(default)]
    pub(crate) calls: Calls,
}

/// `aggregations[].calls`: call name → call, in file order, repeats kept so
/// that validation can name them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Calls(pub(crate) Vec<(String, Call)>);

impl JsonSchema for Calls {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Calls".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <BTreeMap<String, Call>>::json_schema(generator)
    }
}

/// `aggregations[].calls.NAME`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Call {
    /// The service to call.
    pub(crate) service: Option<String>,
    /// Its path and query, with `{name}` from the request path and `{query.NAME}` from its query.
    pub(crate) path: Option<String>,
    /// Take this field of the call's JSON answer rather than the whole.
    pub(crate) pick: Option<String>,
    /// Any YAML value; answered in its place when the call fails.
    #[schemars(with = "Option<serde_json::Value>")]
    pub(crate) default: Option<serde_yaml::Value>,
    /// How long to wait for this call.
    pub(crate) timeout: Option<String>,
}

impl<'de> Deserialize<'de> for Calls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Calls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping of call name to { service, path, pick, default, timeout }")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Calls, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((name, map.next_value::<Call>()?));
                }
                Ok(Calls(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `listeners[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Listener {
    /// Unique: the Envoy listener and its route configuration.
    pub(crate) name: String,
    /// 1-65535.
    #[schemars(range(min = 1))]
    pub(crate) port: u16,
    /// An IP address; default 0.0.0.0.
    pub(crate) address: Option<String>,
    /// Virtual-host domains; `*` may lead (*.example.com) or trail; default ["*"].
    pub(crate) hosts: Option<Vec<String>>,
    /// Only Envoys whose node.cluster is listed get it; default: all.
    pub(crate) fleets: Option<Vec<String>>,
    /// TLS ends at Envoy; services get plain HTTP.
    pub(crate) tls: Option<ListenerTls>,
    /// Plain HTTP on this port answers 301 to https on `port`.
    #[schemars(range(min = 1))]
    pub(crate) http_redirect_port: Option<u16>,
}

/// `listeners[].tls`: one certificate (`cert`, `key`) or several chosen by
/// SNI (`certificates`), with protocol settings.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    /// PEM certificate chain, relative to this file's folder.
    pub(crate) cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub(crate) key: Option<String>,
    /// Several certificates, chosen by the name the client asks for (SNI).
    pub(crate) certificates: Option<Vec<TlsCertificate>>,
    /// "1.2" (default) or "1.3".
    #[serde(default)]
    #[schemars(schema_with = "tls_version")]
    pub(crate) min_version: Option<String>,
    /// Default [h2, http/1.1].
    #[serde(default)]
    #[schemars(schema_with = "alpn")]
    pub(crate) alpn: Option<Vec<String>>,
}

/// `listeners[].tls.certificates[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TlsCertificate {
    /// PEM certificate chain, relative to this file's folder.
    pub(crate) cert: Option<String>,
    /// PEM private key.
    pub(crate) key: Option<String>,
    /// The names it is for; none: every other name.
    pub(crate) hosts: Option<Vec<String>>,
}

/// `services[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Service {
    /// Unique: the Envoy cluster name.
    pub(crate) name: String,
    /// scheme://host[:port], no path; https talks TLS (SNI = host).
    pub(crate) url: Option<String>,
    /// Each endpoint, instead of `url`: host:port, or { address: host:port, weight }.
    pub(crate) endpoints: Option<Vec<EndpointSpec>>,
    /// Default 5s.
    pub(crate) connect_timeout: Option<String>,
    /// Default request timeout of routes to it (Envoy's default: 15s).
    pub(crate) timeout: Option<String>,
    /// Default idle timeout of routes to it: the longest gap with no bytes
    /// either way (Envoy's default: 5m; 0s: none).
    pub(crate) idle_timeout: Option<String>,
    /// Default largest request body of routes to it (512KiB, 10MiB, 1GB);
    /// a larger one gets 413.
    pub(crate) max_request_body: Option<String>,
    /// round_robin | least_request | random | ring_hash.
    #[serde(default)]
    #[schemars(schema_with = "lb_policy")]
    pub(crate) load_balancing: Option<String>,
    /// ring_hash only: client_ip (default) or { header: NAME }.
    pub(crate) hash_key: Option<RateKey>,
    /// { attempts, on, per_try_timeout, methods }.
    pub(crate) retries: Option<Retries>,
    /// { max_connections, max_pending_requests, max_requests, max_retries }.
    pub(crate) circuit_breaker: Option<CircuitBreaker>,
    /// { consecutive_5xx, interval, base_ejection_time, max_ejection_percent }.
    pub(crate) outlier_detection: Option<OutlierDetection>,
    /// { path, interval, timeout, unhealthy_threshold, healthy_threshold }.
    pub(crate) health_check: Option<HealthCheck>,
    /// Header changes on the way to the service.
    pub(crate) request_headers: Option<HeaderOps>,
    /// Header changes on the way back.
    pub(crate) response_headers: Option<HeaderOps>,
    /// For routes to it that don't say: a provider, a list, or `none`.
    pub(crate) auth: Option<NameRef>,
    /// For routes to it that don't say: a policy, a list, or `none`.
    pub(crate) rate_limit: Option<NameRef>,
    /// For routes to it that don't say: `none`, or { allow, deny }.
    pub(crate) ip_restriction: Option<IpRestriction>,
    /// TLS to it: { ca, server_name, verify }; https urls talk TLS without it.
    pub(crate) tls: Option<ServiceTls>,
}

/// `services[].endpoints[]`: `host:port`, or `{ address: host:port, weight: N }`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum EndpointSpec {
    Address(String),
    Weighted(WeightedEndpoint),
}

/// The long form of an endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct WeightedEndpoint {
    /// host:port.
    pub(crate) address: String,
    /// Its share of the requests, relative to the other endpoints' (default 1).
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) weight: Option<i64>,
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("host:port, or { address: host:port, weight: N }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                Ok(EndpointSpec::Address(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<EndpointSpec, A::Error> {
                WeightedEndpoint::deserialize(MapAccessDeserializer::new(map)).map(EndpointSpec::Weighted)
            }
        }
        d.deserialize_any(V)
    }
}

/// `ip_restriction`: `none`, or `{ allow: [CIDR...], deny: [CIDR...] }`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum IpRestriction {
    Word(#[schemars(schema_with = "word_none")] String),
    Spec(IpRestrictionSpec),
}

/// The long form of `ip_restriction`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct IpRestrictionSpec {
    /// Addresses or ranges (10.0.0.0/8, 192.0.2.7, 2001:db8::/32) allowed; others get 403.
    pub(crate) allow: Option<Vec<String>>,
    /// Addresses or ranges refused with 403.
    pub(crate) deny: Option<Vec<String>>,
}

impl<'de> Deserialize<'de> for IpRestriction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = IpRestriction;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`none`, or { allow: [CIDR...], deny: [CIDR...] }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpRestriction, E> {
                Ok(IpRestriction::Word(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<IpRestriction, A::Error> {
                IpRestrictionSpec::deserialize(MapAccessDeserializer::new(map)).map(IpRestriction::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// `services[].retries`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Retries {
    /// How many times a request is retried after its first try (0: never).
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub(crate) attempts: Option<i64>,
    /// Conditions: 5xx, reset, connect-failure, gateway-error, retriable-4xx.
    #[serde(default)]
    #[schemars(schema_with = "retry_on")]
    pub(crate) on: Option<Vec<String>>,
    /// Timeout of each try.
    pub(crate) per_try_timeout: Option<String>,
    /// Methods retried; default the idempotent ones.
    pub(crate) methods: Option<Vec<String>>,
}

/// `services[].circuit_breaker`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct CircuitBreaker {
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) max_connections: Option<i64>,
    /// 0: no queue, a request that finds no connection free is refused.
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub(crate) max_pending_requests: Option<i64>,
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) max_requests: Option<i64>,
    /// 0: no retries in flight to this service.
    #[schemars(range(min = 0, max = 4_294_967_295_u32))]
    pub(crate) max_retries: Option<i64>,
}

/// `services[].outlier_detection`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct OutlierDetection {
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) consecutive_5xx: Option<i64>,
    pub(crate) interval: Option<String>,
    pub(crate) base_ejection_time: Option<String>,
    #[schemars(range(min = 0, max = 100))]
    pub(crate) max_ejection_percent: Option<i64>,
}

/// `services[].health_check`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    pub(crate) path: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) unhealthy_threshold: Option<i64>,
    #[schemars(range(min = 1, max = 4_294_967_295_u32))]
    pub(crate) healthy_threshold: Option<i64>,
}

/// `routes[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Route {
    /// Unique.
    pub(crate) name: String,
    /// Optional when there is exactly one listener.
    pub(crate) listener: Option<String>,
    /// Which requests: prefix | path | regex, and methods, headers, query, hosts.
    #[serde(rename = "match")]
    pub(crate) matcher: Match,
    /// The service it sends to; or `split`.
    pub(crate) service: Option<String>,
    /// A weighted split over services: [{ service, weight }].
    pub(crate) split: Option<Vec<SplitTarget>>,
    /// Envoy answers itself, no service called: { status, message }.
    pub(crate) respond: Option<Respond>,
    /// { prefix } or { regex, substitution }, and { host }.
    pub(crate) rewrite: Option<Rewrite>,
    /// Default: the service's timeout (the longest, for a split).
    pub(crate) timeout: Option<String>,
    /// Longest gap with no bytes either way; default: the service's (the
    /// longest, for a split), else Envoy's 5m. 0s: none.
    pub(crate) idle_timeout: Option<String>,
    /// Largest request body (512KiB, 10MiB, 1GB); a larger one gets 413.
    /// Default: the service's (the smallest, for a split), else any.
    pub(crate) max_request_body: Option<String>,
    /// Header changes on the way in: { add: {NAME: value}, remove: [NAME] }.
    pub(crate) request_headers: Option<HeaderOps>,
    /// Query parameter changes on the way in, as for headers.
    pub(crate) request_query: Option<HeaderOps>,
    /// The request's id in a header of this name too: { header, echo }.
    pub(crate) request_id: Option<RequestId>,
    /// Header changes on the way out.
    pub(crate) response_headers: Option<HeaderOps>,
    /// A provider, a list (any of them), or `none`; default: the service's, then defaults.auth.
    pub(crate) auth: Option<NameRef>,
    /// A policy, a list, or `none`; default: the service's, then defaults.rate_limit.
    pub(crate) rate_limit: Option<NameRef>,
    /// Browsers' cross-origin requests: origins, methods, headers.
    pub(crate) cors: Option<Cors>,
    /// `none`, or { allow, deny }; default: the service's, then the defaults'.
    pub(crate) ip_restriction: Option<IpRestriction>,
}

/// `routes[].cors`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Cors {
    /// Allowed origins: exact strings, { regex }, or "*".
    pub(crate) origins: Option<Vec<ValueMatch>>,
    /// Allowed methods.
    pub(crate) methods: Option<Vec<String>>,
    /// Request headers allowed.
    pub(crate) headers: Option<Vec<String>>,
    /// Response headers scripts may read.
    pub(crate) expose_headers: Option<Vec<String>>,
    /// How long browsers cache the preflight answer.
    pub(crate) max_age: Option<String>,
    /// Cookies and Authorization; not with "*".
    pub(crate) credentials: Option<bool>,
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Match {
    /// Path prefix; exactly one of prefix | path | regex.
    pub(crate) prefix: Option<String>,
    /// Exact path.
    pub(crate) path: Option<String>,
    /// RE2 regex of the whole path.
    pub(crate) regex: Option<String>,
    /// Default: all.
    pub(crate) methods: Option<Vec<String>>,
    /// All must hold: a value (exact), { present: bool } or { regex }.
    pub(crate) headers: Option<BTreeMap<String, ValueMatch>>,
    /// Query parameters, in the same three forms.
    pub(crate) query: Option<BTreeMap<String, ValueMatch>>,
    /// The Host, any port and case; default: any of the listener's.
    pub(crate) hosts: Option<Vec<String>>,
}

/// A header or query value to match: a plain string is an exact match.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum ValueMatch {
    /// `name: value`
    Exact(#[schemars(schema_with = "scalar")] String),
    /// `name: { present: true }` or `name: { regex: ... }`
    Spec(ValueMatchSpec),
}

/// The long form of a header or query match.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ValueMatchSpec {
    pub(crate) exact: Option<String>,
    pub(crate) present: Option<bool>,
    pub(crate) regex: Option<String>,
}

/// `services[].tls`: how Envoy checks the service's certificate.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ServiceTls {
    /// PEM file of the CAs the service's certificate chains to; default: the Mozilla roots legate ships.
    pub(crate) ca: Option<String>,
    /// The name the certificate must hold, also sent as SNI; default: the url's host.
    pub(crate) server_name: Option<String>,
    /// false: accept any certificate (for testing only). Default true.
    pub(crate) verify: Option<bool>,
}

/// `routes[].request_id`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct RequestId {
    /// The header the service gets the id in (a client's own value is kept).
    pub(crate) header: String,
    /// Also in the answer to the client (default false).
    pub(crate) echo: Option<bool>,
}

/// `routes[].respond`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Respond {
    /// The status code, 200 to 599.
    #[schemars(range(min = 200, max = 599))]
    pub(crate) status: i64,
    /// The `message` of the JSON answer.
    pub(crate) message: Option<String>,
}

/// `routes[].split[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct SplitTarget {
    /// A service.
    pub(crate) service: String,
    /// Its share, relative to the others'.
    pub(crate) weight: u32,
}

/// `routes[].rewrite`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Rewrite {
    /// Replaces the matched prefix.
    pub(crate) prefix: Option<String>,
    /// RE2 regex over the path, with `substitution`.
    pub(crate) regex: Option<String>,
    /// The new path; `\1` for the first group.
    pub(crate) substitution: Option<String>,
    /// Host header sent upstream.
    pub(crate) host: Option<String>,
    /// true: the Host header sent upstream is the endpoint's own host (and
    /// port, unless the scheme's default), whichever endpoint is chosen.
    pub(crate) auto_host: Option<bool>,
}

/// `request_headers` / `response_headers`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct HeaderOps {
    /// Header name -> value, set (replacing any).
    #[serde(default)]
    pub(crate) add: BTreeMap<String, String>,
    /// Header name -> value, set only where the header is absent.
    #[serde(default)]
    pub(crate) default: BTreeMap<String, String>,
    /// Header name -> value, set only where the header is present.
    #[serde(default)]
    pub(crate) replace: BTreeMap<String, String>,
    /// Header name -> value, added as one more value of the header.
    #[serde(default)]
    pub(crate) append: BTreeMap<String, String>,
    /// Header names removed.
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

/// `defaults`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Header changes on the way in, for every route.
    pub(crate) request_headers: Option<HeaderOps>,
    /// Header changes on the way out, for every route.
    pub(crate) response_headers: Option<HeaderOps>,
    /// A provider, a list, or `none` (the default).
    pub(crate) auth: Option<NameRef>,
    /// A policy, a list, or `none` (the default).
    pub(crate) rate_limit: Option<NameRef>,
    /// `none` (the default), or { allow, deny }.
    pub(crate) ip_restriction: Option<IpRestriction>,
    /// { format: json | text, path: stdout | stderr | legate | FILE } or `off` (the default).
    pub(crate) access_log: Option<AccessLog>,
    /// OpenTelemetry tracing: { collector, service_name, sampling }; absent: off.
    pub(crate) tracing: Option<Tracing>,
}

/// `defaults.tracing`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Tracing {
    /// The OpenTelemetry collector's host:port (OTLP over gRPC).
    pub(crate) collector: Option<String>,
    /// Default "gateway".
    pub(crate) service_name: Option<String>,
    /// Percent of requests traced, 0-100 (default 100).
    #[schemars(range(min = 0, max = 100))]
    pub(crate) sampling: Option<f64>,
}

/// `defaults.access_log`: `off`, or where and how.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum AccessLog {
    Word(#[schemars(schema_with = "word_off")] String),
    Spec(AccessLogSpec),
}

/// The long form of `access_log`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct AccessLogSpec {
    /// json (default) or text.
    pub(crate) format: Option<String>,
    /// stdout (default), stderr, legate, or an absolute file path.
    pub(crate) path: Option<String>,
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = AccessLog;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`off`, or { format: json | text, path: stdout | stderr | FILE }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AccessLog, E> {
                Ok(AccessLog::Word(v.to_owned()))
            }
            // YAML 1.1 reads a bare `off` as false.
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AccessLog, E> {
                Ok(AccessLog::Word(if v { "on" } else { "off" }.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<AccessLog, A::Error> {
                AccessLogSpec::deserialize(MapAccessDeserializer::new(map)).map(AccessLog::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// `rate_limits[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct RateLimit {
    /// Unique; what `rate_limit:` refers to.
    pub(crate) name: String,
    /// Window name → requests allowed in it; numbers stay signed so that a
    /// negative one gets our message rather than serde's.
    #[serde(default)]
    #[schemars(schema_with = "windows")]
    pub(crate) limits: Option<BTreeMap<String, i64>>,
    /// client_ip (default) | route | { header: NAME } | { claim: NAME }.
    pub(crate) key: Option<RateKey>,
    /// local (default): each Envoy counts alone | global: one count for the fleet.
    #[serde(default)]
    #[schemars(schema_with = "scope")]
    pub(crate) scope: Option<String>,
    /// Default false: x-ratelimit-limit / -remaining / -reset, Retry-After on 429.
    pub(crate) headers: Option<bool>,
    /// true: count and report, never reject (a dry run).
    pub(crate) shadow: Option<bool>,
    /// Global only: refuse (503) when the count can't be checked.
    pub(crate) fail_closed: Option<bool>,
}

/// `rate_limits[].key`: `client_ip`, `route`, `{ header: NAME }` or `{ claim: NAME }`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum RateKey {
    Named(#[schemars(schema_with = "rate_key_word")] String),
    Spec(RateKeySpec),
}

/// The long form of a rate-limit key.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct RateKeySpec {
    /// Count by this request header's value.
    pub(crate) header: Option<String>,
    /// Count by this JWT claim (the route needs `auth`).
    pub(crate) claim: Option<String>,
}

impl<'de> Deserialize<'de> for RateKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RateKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client_ip, route, { header: NAME } or { claim: NAME }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RateKey, E> {
                Ok(RateKey::Named(v.to_owned()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RateKey, A::Error> {
                RateKeySpec::deserialize(MapAccessDeserializer::new(map)).map(RateKey::Spec)
            }
        }
        d.deserialize_any(V)
    }
}

/// The top-level `auth`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct AuthSection {
    /// JWT providers: tokens verified by Envoy.
    #[serde(default)]
    pub(crate) jwt: Vec<JwtProvider>,
    /// API key sets: clients and their keys.
    #[serde(default)]
    pub(crate) api_keys: Vec<ApiKeySet>,
    /// HTTP Basic user sets: user names and their password hashes.
    #[serde(default)]
    pub(crate) basic: Vec<BasicUserSet>,
}

/// `auth.basic[]`: users and their password hashes (htpasswd `{SHA}`).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct BasicUserSet {
    /// Unique among JWT providers, key sets and user sets; what `auth:` refers to.
    pub(crate) name: String,
    /// User name → `{SHA}` and the base64 SHA-1 of the password (`htpasswd -nbs`).
    pub(crate) users: Option<BTreeMap<String, String>>,
    /// The upstream learns which user called from this header.
    pub(crate) client_header: Option<String>,
    /// Default false: the Authorization header stays at Envoy.
    pub(crate) forward_credentials: Option<bool>,
}

/// `auth.api_keys[]`: clients and their keys.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ApiKeySet {
    /// Unique among JWT providers and key sets; what `auth:` refers to.
    pub(crate) name: String,
    /// Client name → key.
    pub(crate) keys: Option<BTreeMap<String, String>>,
    /// Where the key is: one place or a list of places.
    pub(crate) from: Option<KeyFrom>,
    /// The upstream learns which client called from this header.
    pub(crate) client_header: Option<String>,
    /// Default false: the key stays at Envoy.
    pub(crate) forward_key: Option<bool>,
}

/// `auth.api_keys[].from`.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum KeyFrom {
    One(KeySource),
    Many(Vec<KeySource>),
}

/// One place an API key may be: a header or a query parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct KeySource {
    /// A request header.
    pub(crate) header: Option<String>,
    /// A query parameter.
    pub(crate) query: Option<String>,
}

impl<'de> Deserialize<'de> for KeyFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = KeyFrom;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ header: NAME } or { query: NAME }, or a list of them")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<KeyFrom, A::Error> {
                KeySource::deserialize(MapAccessDeserializer::new(map)).map(KeyFrom::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<KeyFrom, A::Error> {
                Vec::<KeySource>::deserialize(SeqAccessDeserializer::new(seq)).map(KeyFrom::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// `auth.jwt[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct JwtProvider {
    /// Unique; what `auth:` refers to.
    pub(crate) name: String,
    /// Required: tokens must carry this `iss`.
    pub(crate) issuer: Option<String>,
    /// The `aud` must hold one of them.
    pub(crate) audiences: Option<Vec<String>>,
    /// The keys: { file } | { inline } | { uri, cache }.
    pub(crate) jwks: Option<Jwks>,
    /// Default { header: Authorization, prefix: "Bearer " }; or { query: NAME }; or a list of them.
    pub(crate) from: Option<TokenFromList>,
    /// Claim -> request header the service gets (clients can't forge it).
    pub(crate) claims_to_headers: Option<BTreeMap<String, String>>,
    /// Default 60s; whole seconds, at least 1s.
    pub(crate) clock_skew: Option<String>,
    /// true: a token without `exp` is refused (default false: `exp` is
    /// checked when present).
    pub(crate) require_expiration: Option<bool>,
    /// The longest a token may still have to live (`exp` minus now); a
    /// token without `exp` is refused. Whole seconds.
    pub(crate) max_lifetime: Option<String>,
    /// Default false: the upstream does not get the token.
    pub(crate) forward_token: Option<bool>,
}

/// `auth.jwt[].jwks`: exactly one of file, inline, uri.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Jwks {
    /// A JWKS file, relative to this policy file's folder.
    pub(crate) file: Option<String>,
    /// The JWKS itself, as a string.
    pub(crate) inline: Option<String>,
    /// Fetched by Envoy over https.
    pub(crate) uri: Option<String>,
    /// How long Envoy keeps a fetched JWKS (default 5m).
    pub(crate) cache: Option<String>,
}

/// `auth.jwt[].from`: one place, or a list of places (any of them).
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum TokenFromList {
    One(TokenFrom),
    Many(Vec<TokenFrom>),
}

impl<'de> Deserialize<'de> for TokenFromList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = TokenFromList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("{ header: NAME, prefix: TEXT } or { query: NAME }, or a list of them")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<TokenFromList, A::Error> {
                TokenFrom::deserialize(MapAccessDeserializer::new(map)).map(TokenFromList::One)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<TokenFromList, A::Error> {
                Vec::<TokenFrom>::deserialize(SeqAccessDeserializer::new(seq)).map(TokenFromList::Many)
            }
        }
        d.deserialize_any(V)
    }
}

/// `auth.jwt[].from`: a header (with a prefix) or a query parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TokenFrom {
    /// A request header.
    pub(crate) header: Option<String>,
    /// What comes before the token in the header.
    pub(crate) prefix: Option<String>,
    /// A query parameter.
    pub(crate) query: Option<String>,
}

/// `auth:` or `rate_limit:` on defaults, a service or a route: one name (or
/// `none`), or a list of names.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[schemars(untagged)]
pub(crate) enum NameRef {
    One(String),
    AnyOf(Vec<String>),
}

impl<'de> Deserialize<'de> for NameRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = NameRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a name, a list of names, or `none`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameRef, E> {
                Ok(NameRef::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<NameRef, A::Error> {
                Vec::<String>::deserialize(SeqAccessDeserializer::new(seq)).map(NameRef::AnyOf)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for ValueMatch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = ValueMatch;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string to match exactly, or { exact | present | regex }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(v.to_owned()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ValueMatch, E> {
                Ok(ValueMatch::Exact(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<ValueMatch, A::Error> {
                ValueMatchSpec::deserialize(MapAccessDeserializer::new(map)).map(ValueMatch::Spec)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<ValueMatch, A::Error> {
                // Only here for a clearer message than serde's default.
                let _ = Vec::<String>::deserialize(SeqAccessDeserializer::new(seq));
                Err(de::Error::custom("a list is not a match; use { regex: \"a|b\" } to accept several values"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `none`, the one word `ip_restriction` takes.
fn word_none(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "const": "none", "description": "no restriction" })
}

/// `off` (or YAML's `false`), the one word `access_log` takes.
fn word_off(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["off", false], "description": "no access log" })
}

/// The named rate-limit and hash keys.
fn rate_key_word(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "enum": ["client_ip", "route"] })
}

/// One of `words`.
fn one_of(words: &[&str]) -> Schema {
    json_schema!({ "type": "string", "enum": words })
}

/// A list of `words`.
fn list_of(words: &[&str]) -> Schema {
    json_schema!({ "type": "array", "items": one_of(words) })
}

fn tls_version(_: &mut SchemaGenerator) -> Schema {
    one_of(super::words::TLS_VERSIONS)
}

fn alpn(_: &mut SchemaGenerator) -> Schema {
    list_of(super::words::ALPN)
}

fn lb_policy(_: &mut SchemaGenerator) -> Schema {
    one_of(super::words::LB_POLICIES)
}

fn retry_on(_: &mut SchemaGenerator) -> Schema {
    list_of(super::words::RETRY_ON)
}

fn scope(_: &mut SchemaGenerator) -> Schema {
    one_of(super::words::SCOPES)
}

/// Window name to the requests allowed in it.
fn windows(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": one_of(super::words::WINDOWS),
        "additionalProperties": { "type": "integer", "minimum": 1, "maximum": 4_294_967_295_u32 }
    })
}

/// A value matched exactly: a string, or a number or boolean read as one.
fn scalar(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "number", "boolean"] })
}

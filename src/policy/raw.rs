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
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    #[serde(default)]
    pub(crate) services: Vec<Service>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    pub(crate) defaults: Option<Defaults>,
    pub(crate) auth: Option<AuthSection>,
    #[serde(default)]
    pub(crate) rate_limits: Vec<RateLimit>,
    #[serde(default)]
    pub(crate) aggregations: Vec<Aggregation>,
}

/// `aggregations[]`: one client request answered from several service calls.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Aggregation {
    pub(crate) name: String,
    pub(crate) listener: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) auth: Option<NameRef>,
    pub(crate) rate_limit: Option<NameRef>,
    pub(crate) timeout: Option<String>,
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
    pub(crate) service: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) pick: Option<String>,
    /// Any YAML value; answered in its place when the call fails.
    #[schemars(with = "Option<serde_json::Value>")]
    pub(crate) default: Option<serde_yaml::Value>,
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
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) address: Option<String>,
    pub(crate) hosts: Option<Vec<String>>,
    pub(crate) fleets: Option<Vec<String>>,
    pub(crate) tls: Option<ListenerTls>,
    pub(crate) http_redirect_port: Option<u16>,
}

/// `listeners[].tls`: one certificate (`cert`, `key`) or several chosen by
/// SNI (`certificates`), with protocol settings.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ListenerTls {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) certificates: Option<Vec<TlsCertificate>>,
    pub(crate) min_version: Option<String>,
    pub(crate) alpn: Option<Vec<String>>,
}

/// `listeners[].tls.certificates[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TlsCertificate {
    pub(crate) cert: Option<String>,
    pub(crate) key: Option<String>,
    pub(crate) hosts: Option<Vec<String>>,
}

/// `services[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Service {
    pub(crate) name: String,
    pub(crate) url: Option<String>,
    pub(crate) endpoints: Option<Vec<String>>,
    pub(crate) connect_timeout: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) load_balancing: Option<String>,
    pub(crate) hash_key: Option<RateKey>,
    pub(crate) retries: Option<Retries>,
    pub(crate) circuit_breaker: Option<CircuitBreaker>,
    pub(crate) outlier_detection: Option<OutlierDetection>,
    pub(crate) health_check: Option<HealthCheck>,
    pub(crate) request_headers: Option<HeaderOps>,
    pub(crate) response_headers: Option<HeaderOps>,
    pub(crate) auth: Option<NameRef>,
    pub(crate) rate_limit: Option<NameRef>,
    pub(crate) ip_restriction: Option<IpRestriction>,
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
    pub(crate) allow: Option<Vec<String>>,
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
    pub(crate) attempts: Option<i64>,
    pub(crate) on: Option<Vec<String>>,
    pub(crate) per_try_timeout: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
}

/// `services[].circuit_breaker`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct CircuitBreaker {
    pub(crate) max_connections: Option<i64>,
    pub(crate) max_pending_requests: Option<i64>,
    pub(crate) max_requests: Option<i64>,
    pub(crate) max_retries: Option<i64>,
}

/// `services[].outlier_detection`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct OutlierDetection {
    pub(crate) consecutive_5xx: Option<i64>,
    pub(crate) interval: Option<String>,
    pub(crate) base_ejection_time: Option<String>,
    pub(crate) max_ejection_percent: Option<i64>,
}

/// `services[].health_check`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct HealthCheck {
    pub(crate) path: Option<String>,
    pub(crate) interval: Option<String>,
    pub(crate) timeout: Option<String>,
    pub(crate) unhealthy_threshold: Option<i64>,
    pub(crate) healthy_threshold: Option<i64>,
}

/// `routes[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: String,
    pub(crate) listener: Option<String>,
    #[serde(rename = "match")]
    pub(crate) matcher: Match,
    pub(crate) service: Option<String>,
    pub(crate) split: Option<Vec<SplitTarget>>,
    pub(crate) rewrite: Option<Rewrite>,
    pub(crate) timeout: Option<String>,
    pub(crate) request_headers: Option<HeaderOps>,
    pub(crate) response_headers: Option<HeaderOps>,
    pub(crate) auth: Option<NameRef>,
    pub(crate) rate_limit: Option<NameRef>,
    pub(crate) cors: Option<Cors>,
    pub(crate) ip_restriction: Option<IpRestriction>,
}

/// `routes[].cors`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Cors {
    pub(crate) origins: Option<Vec<ValueMatch>>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) headers: Option<Vec<String>>,
    pub(crate) expose_headers: Option<Vec<String>>,
    pub(crate) max_age: Option<String>,
    pub(crate) credentials: Option<bool>,
}

/// `routes[].match`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Match {
    pub(crate) prefix: Option<String>,
    pub(crate) path: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) methods: Option<Vec<String>>,
    pub(crate) headers: Option<BTreeMap<String, ValueMatch>>,
    pub(crate) query: Option<BTreeMap<String, ValueMatch>>,
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

/// `routes[].split[]`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct SplitTarget {
    pub(crate) service: String,
    pub(crate) weight: u32,
}

/// `routes[].rewrite`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Rewrite {
    pub(crate) prefix: Option<String>,
    pub(crate) regex: Option<String>,
    pub(crate) substitution: Option<String>,
    pub(crate) host: Option<String>,
}

/// `request_headers` / `response_headers`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct HeaderOps {
    #[serde(default)]
    pub(crate) add: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) remove: Vec<String>,
}

/// `defaults`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Defaults {
    pub(crate) request_headers: Option<HeaderOps>,
    pub(crate) response_headers: Option<HeaderOps>,
    pub(crate) auth: Option<NameRef>,
    pub(crate) rate_limit: Option<NameRef>,
    pub(crate) ip_restriction: Option<IpRestriction>,
    pub(crate) access_log: Option<AccessLog>,
    pub(crate) tracing: Option<Tracing>,
}

/// `defaults.tracing`.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Tracing {
    pub(crate) collector: Option<String>,
    pub(crate) service_name: Option<String>,
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
    pub(crate) format: Option<String>,
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
    pub(crate) name: String,
    /// Window name → requests allowed in it; numbers stay signed so that a
    /// negative one gets our message rather than serde's.
    pub(crate) limits: Option<BTreeMap<String, i64>>,
    pub(crate) key: Option<RateKey>,
    pub(crate) scope: Option<String>,
    pub(crate) headers: Option<bool>,
    pub(crate) shadow: Option<bool>,
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
    pub(crate) header: Option<String>,
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
    #[serde(default)]
    pub(crate) jwt: Vec<JwtProvider>,
    #[serde(default)]
    pub(crate) api_keys: Vec<ApiKeySet>,
}

/// `auth.api_keys[]`: clients and their keys.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct ApiKeySet {
    pub(crate) name: String,
    /// Client name → key.
    pub(crate) keys: Option<BTreeMap<String, String>>,
    /// Where the key is: one place or a list of places.
    pub(crate) from: Option<KeyFrom>,
    pub(crate) client_header: Option<String>,
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
    pub(crate) header: Option<String>,
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
    pub(crate) name: String,
    pub(crate) issuer: Option<String>,
    pub(crate) audiences: Option<Vec<String>>,
    pub(crate) jwks: Option<Jwks>,
    pub(crate) from: Option<TokenFrom>,
    pub(crate) claims_to_headers: Option<BTreeMap<String, String>>,
    pub(crate) clock_skew: Option<String>,
    pub(crate) forward_token: Option<bool>,
}

/// `auth.jwt[].jwks`: exactly one of file, inline, uri.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct Jwks {
    pub(crate) file: Option<String>,
    pub(crate) inline: Option<String>,
    pub(crate) uri: Option<String>,
    pub(crate) cache: Option<String>,
}

/// `auth.jwt[].from`: a header (with a prefix) or a query parameter.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub(crate) struct TokenFrom {
    pub(crate) header: Option<String>,
    pub(crate) prefix: Option<String>,
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

/// A value matched exactly: a string, or a number or boolean read as one.
fn scalar(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": ["string", "number", "boolean"] })
}

//! Gateway test files (`*.gateway.yaml`): the requests to send and what to
//! expect of the answers, read and checked against the policy before
//! anything starts, with every problem at `FILE:LINE:COL`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer};

use crate::policy::{did_you_mean, serde_problem, Diagnostic, LocationIndex, Policy, Pos, YamlPath};

/// One gateway test file: its cases run in order against one gateway.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "TestFile")]
pub(crate) struct RawFile {
    /// The cases, run in order.
    tests: Vec<RawCase>,
}

/// One case: a request, and what its answers must be.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "Case")]
struct RawCase {
    /// Unique in the file; reports and JUnit name the case by it.
    name: String,
    /// What to send.
    request: RawRequest,
    /// Send the request this many times (default 1); every answer is checked.
    #[schemars(range(min = 1))]
    repeat: Option<u32>,
    /// What every answer must be; leave a key out to check nothing of it.
    #[serde(default)]
    expect: RawExpect,
}

/// The request, sent through Envoy from a loopback address of its own.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "Request")]
struct RawRequest {
    /// Default GET.
    method: Option<String>,
    /// Starts with `/`; may hold a query string.
    path: String,
    /// Query parameters, added to the path's (encoded here).
    #[serde(default)]
    query: BTreeMap<String, Scalar>,
    /// Request headers.
    #[serde(default)]
    headers: BTreeMap<String, Scalar>,
    /// The Host header; default: the listener's first host (`*.x.com` as `test.x.com`), else `localhost`.
    host: Option<String>,
    /// The listener to send to; needed when the policy has several.
    listener: Option<String>,
    /// The request body.
    body: Option<String>,
    /// Send a JWT signed by the run's test key, which every JWT provider trusts during the run.
    jwt: Option<RawJwt>,
}

/// A JWT for one provider, put where that provider looks for it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "Jwt")]
struct RawJwt {
    /// The JWT provider; needed when the policy has several.
    provider: Option<String>,
    /// Claims over the defaults (the provider's issuer and first audience, valid for ten minutes); null removes one.
    #[serde(default)]
    claims: BTreeMap<String, serde_json::Value>,
}

/// What the answers must be.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "Expect")]
struct RawExpect {
    /// The status code.
    #[schemars(range(min = 100, max = 599))]
    status: Option<u16>,
    /// The service whose echo stand-in answered.
    service: Option<String>,
    /// The path (with the query) the service saw, after rewrites.
    upstream_path: Option<String>,
    /// Headers the service saw: a value, null (absent), or { exact | present | regex | contains }.
    #[serde(default)]
    upstream_headers: BTreeMap<String, Rule>,
    /// Headers of the answer, in the same forms.
    #[serde(default)]
    headers: BTreeMap<String, Rule>,
    /// Text the answer's body holds.
    body_contains: Option<String>,
    /// How many of the `repeat` answers are 429: a count, or { at_least, at_most }. The others are checked against the rest of `expect`.
    rate_limited: Option<Count>,
}

/// How many answers: `N`, or `{ at_least: N, at_most: M }` (either bound
/// may be left out) where a window may end in the middle of a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    /// The fewest.
    pub min: u32,
    /// The most.
    pub max: u32,
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min, self.max) {
            (a, b) if a == b => write!(f, "{a}"),
            (a, u32::MAX) => write!(f, "at least {a}"),
            (0, b) => write!(f, "at most {b}"),
            (a, b) => write!(f, "{a} to {b}"),
        }
    }
}

impl Count {
    /// Whether `n` is within.
    #[must_use]
    pub fn holds(self, n: usize) -> bool {
        u32::try_from(n).is_ok_and(|n| (self.min..=self.max).contains(&n))
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
struct CountSpec {
    /// The fewest.
    at_least: Option<u32>,
    /// The most.
    at_most: Option<u32>,
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a count, or { at_least, at_most }")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                let n = u32::try_from(v).map_err(|_| E::custom("too many"))?;
                Ok(Count { min: n, max: n })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Count, E> {
                u64::try_from(v).map_err(|_| E::custom("a count can't be negative")).and_then(|v| self.visit_u64(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Count, A::Error> {
                let spec = CountSpec::deserialize(MapAccessDeserializer::new(map))?;
                let c = Count { min: spec.at_least.unwrap_or(0), max: spec.at_most.unwrap_or(u32::MAX) };
                if spec.at_least.is_none() && spec.at_most.is_none() {
                    return Err(de::Error::custom("give at_least, at_most or both"));
                }
                if c.min > c.max {
                    return Err(de::Error::custom("at_least is more than at_most"));
                }
                Ok(c)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or a number or boolean written where one is meant.
#[derive(Debug, Clone)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Scalar(s)),
            serde_yaml::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Scalar(b.to_string())),
            _ => Err(de::Error::custom("expected a string, number or boolean")),
        }
    }
}

/// What a header's value must be.
#[derive(Debug, Clone)]
pub enum Rule {
    /// Exactly this (`name: value`).
    Exact(String),
    /// There or not (`{ present: bool }`; `name: null` for absent).
    Present(bool),
    /// Matching this regular expression, as a whole (`{ regex: ... }`).
    Regex(regex::Regex),
    /// Holding this text (`{ contains: ... }`).
    Contains(String),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(deny_unknown_fields)]
struct RuleSpec {
    /// Exactly this value.
    exact: Option<Scalar>,
    /// There (true) or not (false).
    present: Option<bool>,
    /// Matching this regular expression, as a whole.
    regex: Option<String>,
    /// Holding this text.
    contains: Option<String>,
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Rule;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value, null (absent), or one of { exact, present, regex, contains }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Rule, E> {
                Ok(Rule::Exact(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rule, E> {
                Ok(Rule::Exact(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rule, E> {
                Ok(Rule::Exact(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rule, E> {
                Ok(Rule::Exact(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Rule, E> {
                Ok(Rule::Exact(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Rule, E> {
                Ok(Rule::Present(false))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Rule, A::Error> {
                let spec = RuleSpec::deserialize(MapAccessDeserializer::new(map))?;
                match spec {
                    RuleSpec { exact: Some(v), present: None, regex: None, contains: None } => Ok(Rule::Exact(v.0)),
                    RuleSpec { exact: None, present: Some(p), regex: None, contains: None } => Ok(Rule::Present(p)),
                    RuleSpec { exact: None, present: None, regex: Some(r), contains: None } => {
                        regex::Regex::new(&format!("^(?:{r})$"))
                            .map(Rule::Regex)
                            // The last line of the message says what is wrong.
                            .map_err(|e| {
                                let e = e.to_string();
                                let why = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                                de::Error::custom(format!("not a valid regex: {why}"))
                            })
                    }
                    RuleSpec { exact: None, present: None, regex: None, contains: Some(c) } => Ok(Rule::Contains(c)),
                    _ => Err(de::Error::custom("give exactly one of exact, present, regex, contains")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl Rule {
    /// Whether `actual` (the value, or `None` when absent) satisfies this.
    #[must_use]
    pub fn holds(&self, actual: Option<&str>) -> bool {
        match (self, actual) {
            (Rule::Present(p), a) => *p == a.is_some(),
            (Rule::Exact(e), Some(a)) => e == a,
            (Rule::Regex(r), Some(a)) => r.is_match(a),
            (Rule::Contains(c), Some(a)) => a.contains(c.as_str()),
            (_, None) => false,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Exact(v) => write!(f, "{v:?}"),
            Rule::Present(true) => f.write_str("present"),
            Rule::Present(false) => f.write_str("absent"),
            Rule::Regex(r) => {
                let s = r.as_str();
                write!(f, "matching /{}/", &s[4..s.len() - 2])
            }
            Rule::Contains(c) => write!(f, "containing {c:?}"),
        }
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

impl JsonSchema for Rule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Rule".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let spec = generator.subschema_for::<RuleSpec>();
        json_schema!({
            "description": "A value (exact), null (absent), or one of { exact, present, regex, contains }",
            "anyOf": [{ "type": ["string", "number", "boolean", "null"] }, spec]
        })
    }
}

impl JsonSchema for Count {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Count".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let spec = generator.subschema_for::<CountSpec>();
        json_schema!({ "anyOf": [{ "type": "integer", "minimum": 0 }, spec] })
    }
}

/// The test file format as a JSON Schema (draft 7), for editors.
#[must_use]
pub fn schema() -> String {
    crate::policy::schema_of::<RawFile>("legate gateway test file")
}

/// One test file, checked.
#[derive(Debug)]
pub struct TestFile {
    /// As given on the command line, or found under the policy folder.
    pub path: String,
    /// Its cases, in order.
    pub cases: Vec<Case>,
}

/// One case: a request (sent `repeat` times) and what its answers must be.
#[derive(Debug)]
pub struct Case {
    /// Its name, unique in its file.
    pub name: String,
    /// Where it starts in its file.
    pub line: usize,
    /// What to send.
    pub request: Request,
    /// How many times to send it (1 unless `repeat:`).
    pub repeat: u32,
    /// What the answers must be.
    pub expect: Expect,
}

/// A request to send through Envoy.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET` unless given.
    pub method: String,
    /// The path with the query string, as sent (without a JWT in the query).
    pub path: String,
    /// Headers to send, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The Host header.
    pub host: String,
    /// The listener it is sent to.
    pub listener: String,
    /// The body.
    pub body: String,
    /// A token to sign and send.
    pub jwt: Option<Jwt>,
}

/// A JWT to sign with the run's test key, for the provider named.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The provider whose issuer and audience are the defaults, and where the token goes.
    pub provider: String,
    /// Claims given, over the defaults (`iss`, `aud`, `iat`, `nbf`, `exp`); a
    /// null claim removes the default.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

/// What a case's answers must be; `None` and empty lists check nothing.
#[derive(Debug, Default)]
pub struct Expect {
    /// The status code.
    pub status: Option<u16>,
    /// The service whose stand-in answered.
    pub service: Option<String>,
    /// The path (and query) the service saw.
    pub upstream_path: Option<String>,
    /// Headers the service saw.
    pub upstream_headers: Vec<(String, Rule)>,
    /// Headers of the answer.
    pub headers: Vec<(String, Rule)>,
    /// Text the answer's body holds.
    pub body_contains: Option<String>,
    /// How many of the `repeat` answers are 429; the others are checked
    /// against the rest.
    pub rate_limited: Option<Count>,
}

/// Read and check one test file against `policy`. `path` is how the file
/// is named in errors.
///
/// # Errors
/// Every problem found, at its place in the file.
pub fn read(path: &Path, policy: &Policy) -> Result<TestFile, Vec<Diagnostic>> {
    let name = path.display().to_string();
    let at = |pos: Pos, message: String| Diagnostic { file: name.clone(), line: pos.line, column: pos.column, message };
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![at(Pos { line: 1, column: 1 }, format!("cannot read: {e}"))])?;
    let raw: RawFile = serde_yaml::from_str(&text).map_err(|e| {
        let (pos, message) = serde_problem(&e);
        vec![at(pos, message)]
    })?;
    let index = LocationIndex::build(&text);
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    let mut names = BTreeMap::new();
    for (i, raw) in raw.tests.into_iter().enumerate() {
        let here = YamlPath::default().key("tests").index(i);
        let mut error = |p: &YamlPath, message: String| errors.push(at(index.value(0, p), message));
        let line = index.key(0, &here).line;
        if let Some(first) = names.insert(raw.name.clone(), line) {
            error(&here.key("name"), format!("a case named {:?} is already at line {first}", raw.name));
        }
        match check_case(raw, policy, &here, line) {
            Ok(case) => cases.push(case),
            Err(problems) => {
                for (p, message) in problems {
                    error(&p, message);
                }
            }
        }
    }
    errors.sort_by_key(|d| (d.line, d.column));
    if errors.is_empty() {
        Ok(TestFile { path: name, cases })
    } else {
        Err(errors)
    }
}

type Problems = Vec<(YamlPath, String)>;

fn check_case(raw: RawCase, policy: &Policy, here: &YamlPath, line: usize) -> Result<Case, Problems> {
    let mut problems = Problems::new();
    let req = here.key("request");
    let r = raw.request;
    let method = r.method.unwrap_or_else(|| "GET".to_owned()).to_ascii_uppercase();
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        problems.push((req.key("method"), format!("`{method}` is not an HTTP method")));
    }
    if !r.path.starts_with('/') {
        problems.push((req.key("path"), format!("the path must start with `/`, not {:?}", r.path)));
    }
    let listener = match r.listener {
        Some(l) if policy.listeners.contains_key(&l) => l,
        Some(l) => {
            problems.push((req.key("listener"), unknown("listener", &l, policy.listeners.keys())));
            l
        }
        None if policy.listeners.len() == 1 => policy.listeners.keys().next().cloned().unwrap_or_default(),
        None => {
            let names: Vec<&str> = policy.listeners.keys().map(String::as_str).collect();
            problems.push((
                req.clone(),
                format!("the policy has {} listeners ({}): say which with `listener:`", names.len(), names.join(", ")),
            ));
            String::new()
        }
    };
    let host = r.host.unwrap_or_else(|| policy.listeners.get(&listener).map_or_else(String::new, default_host));
    let mut path = r.path;
    for (k, v) in &r.query {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(&encode(k));
        path.push('=');
        path.push_str(&encode(&v.0));
    }
    for (k, v) in &r.headers {
        if hyper::header::HeaderName::from_bytes(k.as_bytes()).is_err()
            || hyper::header::HeaderValue::from_str(&v.0).is_err()
        {
            problems.push((req.key("headers").key(k.clone()), format!("`{k}: {}` is not a valid header", v.0)));
        }
    }
    let jwt = r.jwt.map(|j| {
        let provider = match j.provider {
            Some(p) if policy.jwt_providers.contains_key(&p) => p,
            Some(p) => {
                problems
                    .push((req.key("jwt").key("provider"), unknown("JWT provider", &p, policy.jwt_providers.keys())));
                p
            }
            None if policy.jwt_providers.len() == 1 => policy.jwt_providers.keys().next().cloned().unwrap_or_default(),
            None if policy.jwt_providers.is_empty() => {
                problems.push((req.key("jwt"), "the policy has no JWT providers to sign for".to_owned()));
                String::new()
            }
            None => {
                let names: Vec<&str> = policy.jwt_providers.keys().map(String::as_str).collect();
                problems.push((
                    req.key("jwt"),
                    format!("the policy has several JWT providers ({}): say which with `provider:`", names.join(", ")),
                ));
                String::new()
            }
        };
        let claims = j.claims.into_iter().collect();
        Jwt { provider, claims }
    });
    let exp = here.key("expect");
    let e = raw.expect;
    if let Some(s) = e.status.filter(|s| !(100..=599).contains(s)) {
        problems.push((exp.key("status"), format!("{s} is not an HTTP status")));
    }
    if let Some(s) = e.service.as_ref().filter(|s| !policy.services.contains_key(*s)) {
        problems.push((exp.key("service"), unknown("service", s, policy.services.keys())));
    }
    let repeat = raw.repeat.unwrap_or(1);
    if repeat == 0 {
        problems.push((here.key("repeat"), "repeat at least once".to_owned()));
    }
    if let Some(n) = e.rate_limited.filter(|n| n.min > repeat) {
        problems
            .push((exp.key("rate_limited"), format!("{n} of {repeat} request(s) can't be limited: raise `repeat`")));
    }
    let lower = |m: BTreeMap<String, Rule>| m.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
    let expect = Expect {
        status: e.status,
        service: e.service,
        upstream_path: e.upstream_path,
        upstream_headers: lower(e.upstream_headers),
        headers: lower(e.headers),
        body_contains: e.body_contains,
        rate_limited: e.rate_limited,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    let request = Request {
        method,
        path,
        headers: r.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.0)).collect(),
        host,
        listener,
        body: r.body.unwrap_or_default(),
        jwt,
    };
    Ok(Case { name: raw.name, line, request, repeat, expect })
}

/// The Host a request to `listener` sends unless the case says: its first
/// host, with a leading `*` made concrete; `localhost` for any host.
fn default_host(listener: &crate::policy::Listener) -> String {
    match listener.hosts.iter().find(|h| h.as_str() != "*") {
        Some(h) => match h.strip_prefix('*') {
            Some(rest) => format!("test{rest}"),
            None => h.clone(),
        },
        None => "localhost".to_owned(),
    }
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    let mut msg = format!("there is no {what} `{name}` in the policy");
    match did_you_mean(name, &known) {
        Some(best) => msg.push_str(&format!("; did you mean `{best}`?")),
        None => msg.push_str(&format!(" (it has: {})", known.join(", "))),
    }
    msg
}

/// What a query key or value keeps as it is: RFC 3986's unreserved characters.
const QUERY: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encoding for a query key or value.
fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> Result<Rule, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn header_rules_in_every_form() {
        let cases: &[(&str, Option<&str>, bool)] = &[
            ("abc", Some("abc"), true),
            ("abc", Some("abcd"), false),
            ("abc", None, false),
            ("42", Some("42"), true),
            ("true", Some("true"), true),
            ("null", None, true),
            ("null", Some(""), false),
            ("{ present: true }", Some(""), true),
            ("{ present: true }", None, false),
            ("{ present: false }", None, true),
            ("{ exact: 7 }", Some("7"), true),
            ("{ regex: 'a+' }", Some("aaa"), true),
            ("{ regex: 'a+' }", Some("aab"), false), // the whole value
            ("{ regex: 'a|b' }", Some("b"), true),   // alternatives inside the anchors
            ("{ contains: json }", Some("application/json; charset=utf-8"), true),
            ("{ contains: json }", Some("text/plain"), false),
        ];
        for (yaml, actual, want) in cases {
            let r = rule(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(r.holds(*actual), *want, "{yaml} against {actual:?}");
        }
        assert_eq!(rule("{ regex: 'a|b' }").map(|r| r.to_string()), Ok("matching /a|b/".to_owned()));
        assert!(rule("{ exact: a, present: true }").is_err_and(|e| e.contains("exactly one of")));
        assert!(rule("{ regex: '(' }").is_err_and(|e| e.contains("not a valid regex: unclosed group")));
        assert!(rule("[a]").is_err());
    }

    #[test]
    fn counts_exact_or_between() {
        let count = |yaml: &str| serde_yaml::from_str::<Count>(yaml).map_err(|e| e.to_string());
        let c = count("2").expect("a count");
        assert!(c.holds(2) && !c.holds(1) && !c.holds(3));
        assert_eq!(c.to_string(), "2");
        let c = count("{ at_least: 2, at_most: 7 }").expect("a range");
        assert!(c.holds(2) && c.holds(7) && !c.holds(8) && !c.holds(1));
        assert_eq!(c.to_string(), "2 to 7");
        assert_eq!(count("{ at_least: 1 }").map(|c| c.to_string()), Ok("at least 1".to_owned()));
        assert_eq!(count("{ at_most: 3 }").map(|c| c.to_string()), Ok("at most 3".to_owned()));
        assert!(count("{}").is_err_and(|e| e.contains("give at_least, at_most or both")));
        assert!(count("{ at_least: 3, at_most: 2 }").is_err());
        assert!(count("-1").is_err());
    }

    #[test]
    fn the_default_host_is_the_listener_s_first_concrete_one() {
        let listener = |hosts: &[&str]| crate::policy::Listener {
            name: "public".into(),
            address: "0.0.0.0".into(),
            port: 10000,
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
            fleets: None,
            tls: None,
            http_redirect_port: None,
        };
        assert_eq!(default_host(&listener(&["*"])), "localhost");
        assert_eq!(default_host(&listener(&["*", "api.example.com"])), "api.example.com");
        assert_eq!(default_host(&listener(&["*.example.com"])), "test.example.com");
        assert_eq!(encode("a b&c=d-e_f.g~"), "a%20b%26c%3Dd-e_f.g~");
    }
}

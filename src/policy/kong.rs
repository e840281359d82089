//! Kong declarative configuration (`_format_version` 1.1 / 2.1 / 3.0) to
//! legate policy: read from the policy folder like any policy file, and
//! printed by `legate import kong`.
//!
//! The conversion is exact or refuses: every Kong setting either has a
//! legate equivalent or is reported as a problem naming the Kong entity and
//! field (a setting left at Kong's default is not a problem). Plugins are
//! resolved per route with Kong's precedence (route > service > global, the
//! most specific configuration of a plugin wins whole), so the policy says
//! on each route exactly what applies to it.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_yaml::{Mapping, Value};

use super::locate::YamlPath;

/// What one Kong document converts to.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    /// The legate policy document.
    pub(crate) policy: Mapping,
    /// Where each legate item came from: (legate path, Kong path).
    pub(crate) origins: Vec<(YamlPath, YamlPath)>,
    /// Settings with no legate equivalent, at their Kong path.
    pub(crate) problems: Vec<(YamlPath, String)>,
    /// Entities left out whole because of those problems (what `--partial`
    /// omits), at their Kong path: the entity and why.
    pub(crate) dropped: Vec<(YamlPath, String)>,
}

/// The port a converted Kong config is served on: Kong's proxy port.
pub(crate) const LISTENER_PORT: u16 = 8000;
/// The listener a converted Kong config's routes are on.
pub(crate) const LISTENER: &str = "kong";

/// Whether a file's text is a Kong declarative config.
pub(crate) fn is_kong(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("_format_version"))
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn map(entries: Vec<(&str, Value)>) -> Value {
    Value::Mapping(entries.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn get<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
    v.get(k).filter(|x| !x.is_null())
}

fn get_str<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    get(v, k).and_then(Value::as_str)
}

fn list<'a>(v: &'a Value, k: &str) -> Vec<&'a Value> {
    get(v, k).and_then(Value::as_sequence).map(|s| s.iter().collect()).unwrap_or_default()
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    list(v, k).iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()
}

/// A plugin, with where it is and what it applies to.
#[derive(Debug, Clone)]
struct Plugin<'a> {
    name: String,
    config: &'a Value,
    at: YamlPath,
    /// `global`, `service NAME` or `route NAME`, for messages and names.
    scope: String,
}

/// The Host header Kong sends a service when the route does not preserve
/// the client's.
#[derive(Debug, Clone)]
enum HostHeader {
    /// This one.
    Literal(String),
    /// Each upstream target's own (`rewrite.auto_host`).
    PerTarget,
}

struct Ctx<'a> {
    out: Converted,
    global: Vec<Plugin<'a>>,
    services: Vec<(String, Value, YamlPath)>,
    routes: Vec<(Value, YamlPath)>,
    rate_limits: Distinct,
    providers: Vec<Value>,
    /// Each consumer credential's issuer and JWKS, with its consumer, for
    /// the jwt plugin.
    jwt_secrets: Vec<(String, String, String)>,
    /// Each consumer's key-auth keys, with the consumer.
    api_keys: Vec<(String, String)>,
    /// Each consumer's basic-auth credentials: consumer, user name, password.
    basic_credentials: Vec<(String, String, String)>,
    /// `_transform: false`: credentials' secrets are stored already hashed.
    hashed_secrets: bool,
    /// Basic user sets made so far.
    basic_sets: Distinct,
    /// Each consumer's ACL groups.
    groups: BTreeMap<String, Vec<String>>,
    /// API key sets made so far.
    key_sets: Distinct,
    /// Services with a `path`, which Kong puts in front of the upstream path.
    service_paths: BTreeMap<String, String>,
    /// `_format_version` 1.1 or 2.1: a path with regex characters is a
    /// regex without the `~` Kong 3 asks for.
    legacy_paths: bool,
    /// The names of the config's services, converted or not.
    kong_services: Vec<String>,
    /// The config's upstreams by name, with where each is.
    upstreams: BTreeMap<String, (&'a Value, YamlPath)>,
    /// The Host header each converted service is sent (Kong's
    /// `preserve_host: false`).
    service_hosts: BTreeMap<String, HostHeader>,
    /// The routes go on the conversion's own plain-HTTP listener `kong`.
    own_listener: bool,
    /// A global file-log's path, as legate's access log path.
    access_log: Option<String>,
    /// The distinct token places jwt plugins name other than Kong's
    /// default (Authorization, `?jwt=`), for provider names.
    jwt_sources: Vec<Vec<Value>>,
}

impl Ctx<'_> {
    fn problem(&mut self, at: &YamlPath, message: String) {
        self.out.problems.push((at.clone(), message));
    }

    /// Fields of `entity` (at `at`) that must be absent or at Kong's default.
    fn only(&mut self, entity: &str, v: &Value, at: &YamlPath, known: &[&str], defaults: &[(&str, Value)]) {
        let Some(m) = v.as_mapping() else { return };
        for (k, val) in m {
            let Some(k) = k.as_str() else { continue };
            if known.contains(&k) || val.is_null() {
                continue;
            }
            if defaults.iter().any(|(n, d)| *n == k && val == d) {
                continue;
            }
            self.problem(&at.key(k.to_owned()), format!("{entity}: `{k}` has no legate equivalent"));
        }
    }
}

/// Policies the conversion makes (rate limits, API key sets): one per
/// distinct body, named `base`, else `base-2`, `base-3`, ... by the first
/// place that needs it.
#[derive(Debug, Default)]
struct Distinct(BTreeMap<String, Vec<(&'static str, Value)>>);

impl Distinct {
    /// The name of the policy with this body, made if there is none yet.
    fn name_for(&mut self, base: &str, body: Vec<(&'static str, Value)>) -> String {
        if let Some((name, _)) = self.0.iter().find(|(_, b)| **b == body) {
            return name.clone();
        }
        let mut name = base.to_owned();
        let mut n = 2;
        while self.0.contains_key(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.0.insert(name.clone(), body);
        name
    }

    /// Each policy with its `name` first, in name order.
    fn values(&self) -> Vec<Value> {
        self.0
            .iter()
            .map(|(name, body)| map(std::iter::once(("name", s(name))).chain(body.iter().cloned()).collect()))
            .collect()
    }
}

/// Fields every Kong entity may carry that mean nothing to routing
/// (`_comment`: a note Kong ignores).
const META: &[&str] = &["id", "tags", "created_at", "updated_at", "_comment"];

/// Convert one Kong declarative document. With `own_listener`, the policy
/// has a listener `kong` on Kong's proxy port and every route is on it;
/// without, it has no listener and its routes go on the one the other
/// policy files define.
pub(crate) fn convert(doc: &Value, own_listener: bool) -> Converted {
    let mut cx = Ctx {
        out: Converted::default(),
        global: Vec::new(),
        services: Vec::new(),
        routes: Vec::new(),
        rate_limits: Distinct::default(),
        providers: Vec::new(),
        jwt_secrets: Vec::new(),
        api_keys: Vec::new(),
        basic_credentials: Vec::new(),
        hashed_secrets: get(doc, "_transform").and_then(Value::as_bool) == Some(false),
        basic_sets: Distinct::default(),
        groups: BTreeMap::new(),
        key_sets: Distinct::default(),
        service_paths: BTreeMap::new(),
        legacy_paths: matches!(get_str(doc, "_format_version"), Some("1.1" | "2.1")),
        kong_services: list(doc, "services").iter().filter_map(|v| get_str(v, "name").map(str::to_owned)).collect(),
        upstreams: list(doc, "upstreams")
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| {
                get_str(v, "name").map(|n| (n.to_owned(), (v, YamlPath::default().key("upstreams").index(i))))
            })
            .collect(),
        service_hosts: BTreeMap::new(),
        own_listener,
        access_log: None,
        jwt_sources: Vec::new(),
    };
    let root = YamlPath::default();
    match get(doc, "_format_version") {
        Some(Value::String(v)) if ["1.1", "2.1", "3.0"].contains(&v.as_str()) => {}
        Some(Value::Number(n)) => cx.problem(
            &root.key("_format_version"),
            format!("Kong reads `_format_version` as a string, and {n} is a number in YAML; quote it: \"{n}\""),
        ),
        Some(other) => {
            let shown = match other {
                Value::String(v) => v.clone(),
                v => serde_yaml::to_string(v).unwrap_or_default().trim().to_owned(),
            };
            cx.problem(
                &root.key("_format_version"),
                format!("Kong `_format_version` {shown} is not one legate reads (1.1, 2.1, 3.0)"),
            );
        }
        None => cx.problem(&root, "a Kong config needs `_format_version` (1.1, 2.1 or 3.0)".to_owned()),
    }
    cx.only(
        "the Kong config",
        doc,
        &root,
        &[
            "_format_version",
            "_transform",
            "_workspace",
            "_comment",
            "_info",
            "services",
            "routes",
            "consumers",
            "plugins",
            "keyauth_credentials",
            "basicauth_credentials",
            "acls",
            "jwt_secrets",
            "upstreams",
        ],
        &[],
    );
    for (i, c) in list(doc, "consumers").into_iter().enumerate() {
        consumer(&mut cx, c, &root.key("consumers").index(i));
    }
    top_level_credentials(&mut cx, doc, &root);
    // Top-level plugins are global, or name the service or route they apply to.
    let mut service_plugins: BTreeMap<String, Vec<Plugin<'_>>> = BTreeMap::new();
    let mut scoped_route_plugins: BTreeMap<String, Vec<Plugin<'_>>> = BTreeMap::new();
    let scope_name = |v: Option<&Value>| match v {
        Some(Value::String(n)) => Some(n.clone()),
        Some(m) => get_str(m, "name").map(str::to_owned),
        None => None,
    };
    for (i, p) in list(doc, "plugins").into_iter().enumerate() {
        let at = root.key("plugins").index(i);
        let (service, route) = (scope_name(get(p, "service")), scope_name(get(p, "route")));
        let scope = match (&service, &route) {
            (_, Some(r)) => format!("route `{r}`"),
            (Some(s), None) => format!("service `{s}`"),
            (None, None) => "global".to_owned(),
        };
        let Some(plugin) = plugin(&mut cx, p, &at, &scope) else { continue };
        match (service, route) {
            (_, Some(r)) => scoped_route_plugins.entry(r).or_default().push(plugin),
            (Some(s), None) => service_plugins.entry(s).or_default().push(plugin),
            (None, None) => cx.global.push(plugin),
        }
    }
    let mut route_list: Vec<(&Value, YamlPath, Option<String>)> = Vec::new();
    for (i, svc) in list(doc, "services").into_iter().enumerate() {
        let at = root.key("services").index(i);
        let Some(name) = get_str(svc, "name").map(str::to_owned) else {
            cx.problem(&at, "a Kong service needs a `name` to convert".to_owned());
            continue;
        };
        let plugins: Vec<Plugin<'_>> = list(svc, "plugins")
            .into_iter()
            .enumerate()
            .filter_map(|(j, p)| plugin(&mut cx, p, &at.key("plugins").index(j), &format!("service `{name}`")))
            .collect();
        service_plugins.entry(name.clone()).or_default().extend(plugins);
        match service(&mut cx, svc, &at, &name) {
            Some(v) => cx.services.push((name.clone(), v, at.clone())),
            None => cx.out.dropped.push((at.clone(), format!("service `{name}`, with its routes"))),
        }
        for (j, r) in list(svc, "routes").into_iter().enumerate() {
            route_list.push((r, at.key("routes").index(j), Some(name.clone())));
        }
    }
    for (i, r) in list(doc, "routes").into_iter().enumerate() {
        let at = root.key("routes").index(i);
        let svc = match get(r, "service") {
            Some(Value::String(n)) => Some(n.clone()),
            Some(m) => get_str(m, "name").map(str::to_owned),
            None => None,
        };
        route_list.push((r, at, svc));
    }
    let indexed = |k: &'static str| {
        let root = &root;
        list(doc, k).into_iter().enumerate().map(move |(i, v)| (v, root.key(k).index(i)))
    };
    unique_names(&mut cx, "service", "name", indexed("services"));
    unique_names(&mut cx, "consumer", "username", indexed("consumers"));
    unique_names(&mut cx, "route", "name", route_list.iter().map(|(r, at, _)| (*r, at.clone())));
    let routed: std::collections::BTreeSet<String> = route_list.iter().filter_map(|(_, _, s)| s.clone()).collect();
    let no_routes = route_list.is_empty();
    for (r, at, svc) in route_list {
        let scoped = get_str(r, "name").and_then(|n| scoped_route_plugins.get(n)).cloned().unwrap_or_default();
        route(&mut cx, r, &at, svc.as_deref(), &service_plugins, scoped);
    }
    // Plugins no route uses are still Kong configuration, checked like the
    // rest: a service's without routes, and global ones when there is no
    // route at all (what converts is dropped with them).
    let global = cx.global.clone();
    for (name, plugins) in &service_plugins {
        if !routed.contains(name) && !plugins.is_empty() {
            route_settings(&mut cx, &effective(&[], plugins, &global));
        }
    }
    if no_routes && !global.is_empty() {
        route_settings(&mut cx, &effective(&[], &[], &global));
    }

    let mut policy = Mapping::new();
    if own_listener {
        policy.insert(
            s("listeners"),
            Value::Sequence(vec![map(vec![("name", s(LISTENER)), ("port", LISTENER_PORT.into())])]),
        );
    } else {
        for (r, _) in &mut cx.routes {
            r.as_mapping_mut().map(|m| m.remove("listener"));
        }
    }
    let services: Vec<Value> = cx.services.iter().map(|(_, v, _)| v.clone()).collect();
    for (i, (_, _, at)) in cx.services.iter().enumerate() {
        cx.out.origins.push((YamlPath::default().key("services").index(i), at.clone()));
    }
    policy.insert(s("services"), Value::Sequence(services));
    let mut routes = Vec::new();
    for (i, (v, at)) in cx.routes.iter().enumerate() {
        cx.out.origins.push((YamlPath::default().key("routes").index(i), at.clone()));
        routes.push(v.clone());
    }
    policy.insert(s("routes"), Value::Sequence(routes));
    if !cx.rate_limits.0.is_empty() {
        policy.insert(s("rate_limits"), Value::Sequence(cx.rate_limits.values()));
    }
    let mut auth = vec![];
    if !cx.providers.is_empty() {
        auth.push(("jwt", Value::Sequence(cx.providers.clone())));
    }
    if !cx.key_sets.0.is_empty() {
        auth.push(("api_keys", Value::Sequence(cx.key_sets.values())));
    }
    if !cx.basic_sets.0.is_empty() {
        auth.push(("basic", Value::Sequence(cx.basic_sets.values())));
    }
    if !auth.is_empty() {
        policy.insert(s("auth"), map(auth));
    }
    if let Some(path) = &cx.access_log {
        let log = map(vec![("format", s("json")), ("path", s(path))]);
        policy.insert(s("defaults"), map(vec![("access_log", log)]));
    }
    cx.out.policy = policy;
    // A global plugin's problem is found once per route it applies to.
    let mut seen = std::collections::HashSet::new();
    cx.out.problems.retain(|p| seen.insert(p.clone()));
    cx.out
}

fn plugin<'a>(cx: &mut Ctx<'a>, p: &'a Value, at: &YamlPath, scope: &str) -> Option<Plugin<'a>> {
    let name = get_str(p, "name").unwrap_or_default().to_owned();
    cx.only(
        &format!("plugin `{name}` ({scope})"),
        p,
        at,
        &["name", "config", "enabled", "protocols", "instance_name", "id", "tags", "service", "route"],
        &[],
    );
    if get(p, "consumer").is_some() {
        cx.problem(
            &at.key("consumer"),
            format!("plugin `{name}` ({scope}): per-consumer plugins have no legate equivalent"),
        );
    }
    if get(p, "enabled").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    static EMPTY: Value = Value::Null;
    Some(Plugin { name, config: get(p, "config").unwrap_or(&EMPTY), at: at.clone(), scope: scope.to_owned() })
}

fn consumer(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath) {
    let name = consumer_name(c).unwrap_or("(unnamed)").to_owned();
    let entity = format!("consumer `{name}`");
    let mut known: Vec<&str> = META.to_vec();
    known.extend(["username", "custom_id", "jwt_secrets", "keyauth_credentials", "basicauth_credentials", "acls"]);
    cx.only(&entity, c, at, &known, &[]);
    for (kind, add) in CREDENTIALS {
        for (i, cred) in list(c, kind).into_iter().enumerate() {
            add(cx, &name, &entity, cred, &at.key(*kind).index(i), &[]);
        }
    }
}

/// How a consumer is named: its `username`, else its `custom_id`.
fn consumer_name(c: &Value) -> Option<&str> {
    get_str(c, "username").or_else(|| get_str(c, "custom_id"))
}

/// One credential (or ACL group) of consumer `name`: where it goes in the
/// conversion. `extra` are fields the entity may have besides its own (the
/// `consumer` reference of a top-level one).
type Credential = fn(&mut Ctx<'_>, &str, &str, &Value, &YamlPath, &[&str]);

/// What a consumer may hold, nested in it or as a top-level list naming it.
const CREDENTIALS: &[(&str, Credential)] = &[
    ("keyauth_credentials", keyauth_credential),
    ("basicauth_credentials", basicauth_credential),
    ("acls", acl_group),
    ("jwt_secrets", jwt_secret),
];

/// Top-level `keyauth_credentials`, `acls` and `jwt_secrets`: each names its
/// consumer (by username, custom_id or id) in `consumer`.
fn top_level_credentials(cx: &mut Ctx<'_>, doc: &Value, root: &YamlPath) {
    let consumers = list(doc, "consumers");
    for (kind, add) in CREDENTIALS {
        for (i, cred) in list(doc, kind).into_iter().enumerate() {
            let at = root.key(*kind).index(i);
            let named = match get(cred, "consumer") {
                Some(Value::String(n)) => Some(n.as_str()),
                Some(m) => get_str(m, "username").or_else(|| get_str(m, "id")).or_else(|| get_str(m, "custom_id")),
                None => None,
            };
            let Some(named) = named else {
                cx.problem(&at, format!("{kind}[{i}]: names no `consumer` it belongs to"));
                continue;
            };
            let found = consumers
                .iter()
                .find(|c| [get_str(c, "username"), get_str(c, "custom_id"), get_str(c, "id")].contains(&Some(named)));
            let Some(consumer) = found.copied().and_then(consumer_name) else {
                cx.problem(&at.key("consumer"), format!("{kind}[{i}]: consumer `{named}` is not in `consumers`"));
                continue;
            };
            let consumer = consumer.to_owned();
            add(cx, &consumer, &format!("consumer `{consumer}`"), cred, &at, &["consumer"]);
        }
    }
}

fn keyauth_credential(cx: &mut Ctx<'_>, name: &str, entity: &str, cred: &Value, at: &YamlPath, extra: &[&str]) {
    let mut known: Vec<&str> = META.to_vec();
    known.extend(["key", "ttl"]);
    known.extend(extra);
    cx.only(entity, cred, at, &known, &[]);
    match get_str(cred, "key") {
        Some(k) => match cx.api_keys.iter().find(|(_, other)| other == k) {
            // Kong refuses the same key twice (it could not tell whose it is).
            Some((owner, _)) => {
                let owner = if owner == name { "this consumer" } else { owner.as_str() };
                cx.problem(&at.key("key"), format!("{entity}: this key is already a key of `{owner}`"));
            }
            None => cx.api_keys.push((name.to_owned(), k.to_owned())),
        },
        None => cx.problem(at, format!("{entity}: a keyauth credential needs its `key`")),
    }
}

fn basicauth_credential(cx: &mut Ctx<'_>, name: &str, entity: &str, cred: &Value, at: &YamlPath, extra: &[&str]) {
    let mut known: Vec<&str> = META.to_vec();
    known.extend(["username", "password"]);
    known.extend(extra);
    cx.only(entity, cred, at, &known, &[]);
    let (Some(user), Some(password)) = (get_str(cred, "username"), get_str(cred, "password")) else {
        cx.problem(at, format!("{entity}: a basicauth credential needs its `username` and `password`"));
        return;
    };
    if cx.hashed_secrets {
        // Kong's export (`_transform: false`) holds sha1(password .. consumer
        // id), which no other server can check a password against.
        cx.problem(
            &at.key("password"),
            format!("{entity}: the password is stored hashed with the consumer's id (`_transform: false`); give it in the clear"),
        );
        return;
    }
    if let Some((owner, _, _)) = cx.basic_credentials.iter().find(|(_, u, _)| u == user) {
        let owner = if owner == name { "this consumer" } else { owner.as_str() };
        cx.problem(&at.key("username"), format!("{entity}: user `{user}` is already a credential of `{owner}`"));
        return;
    }
    cx.basic_credentials.push((name.to_owned(), user.to_owned(), password.to_owned()));
}

fn acl_group(cx: &mut Ctx<'_>, name: &str, entity: &str, acl: &Value, at: &YamlPath, extra: &[&str]) {
    let mut known: Vec<&str> = META.to_vec();
    known.push("group");
    known.extend(extra);
    cx.only(entity, acl, at, &known, &[]);
    if let Some(g) = get_str(acl, "group") {
        cx.groups.entry(name.to_owned()).or_default().push(g.to_owned());
    }
}

fn jwt_secret(cx: &mut Ctx<'_>, name: &str, entity: &str, secret: &Value, at: &YamlPath, extra: &[&str]) {
    let mut known: Vec<&str> = META.to_vec();
    known.extend(["key", "algorithm", "secret", "rsa_public_key"]);
    known.extend(extra);
    cx.only(entity, secret, at, &known, &[]);
    let Some(key) = get_str(secret, "key") else {
        cx.problem(at, format!("{entity}: a jwt_secret needs its `key` (the `iss` its tokens carry)"));
        return;
    };
    let alg = get_str(secret, "algorithm").unwrap_or("HS256");
    let jwk = match alg {
        "HS256" | "HS384" | "HS512" => match get_str(secret, "secret") {
            Some(secret) => Ok(serde_json::json!({
                "kty": "oct", "alg": alg,
                "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret.as_bytes()),
            })),
            None => Err("an HS secret needs `secret`".to_owned()),
        },
        "RS256" | "RS384" | "RS512" | "ES256" | "ES384" => match get_str(secret, "rsa_public_key") {
            Some(pem) => public_jwk(pem, alg),
            None => Err(format!("an {alg} secret needs `rsa_public_key` (the PEM public key)")),
        },
        other => Err(format!("algorithm `{other}` has no legate equivalent (HS256/384/512, RS256/384/512, ES256/384)")),
    };
    match jwk {
        Ok(jwk) => {
            let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
            cx.jwt_secrets.push((key.to_owned(), jwks, name.to_owned()));
        }
        Err(e) => cx.problem(at, format!("{entity}: {e}")),
    }
}

/// A PEM public key as a JWK.
fn public_jwk(pem: &str, alg: &str) -> Result<serde_json::Value, String> {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).map_err(|_| "rsa_public_key is not PEM".to_owned())?;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&pem.contents)
        .map_err(|_| "rsa_public_key is not a PEM public key (BEGIN PUBLIC KEY)".to_owned())?;
    match spki.parsed().map_err(|e| format!("rsa_public_key: {e}"))? {
        PublicKey::RSA(k) if alg.starts_with("RS") => {
            let trim = |b: &[u8]| b.iter().skip_while(|x| **x == 0).copied().collect::<Vec<u8>>();
            Ok(serde_json::json!({ "kty": "RSA", "alg": alg, "n": b64(&trim(k.modulus)), "e": b64(&trim(k.exponent)) }))
        }
        PublicKey::EC(p) if alg.starts_with("ES") => {
            let (crv, len) = if alg == "ES256" { ("P-256", 32) } else { ("P-384", 48) };
            let d = p.data();
            if d.len() != 1 + 2 * len || d[0] != 4 {
                return Err(format!("rsa_public_key is not an uncompressed {crv} key"));
            }
            Ok(
                serde_json::json!({ "kty": "EC", "alg": alg, "crv": crv, "x": b64(&d[1..=len]), "y": b64(&d[1 + len..]) }),
            )
        }
        _ => Err(format!("rsa_public_key is not a key for {alg}")),
    }
}

/// A Kong service as a legate service.
fn service(cx: &mut Ctx<'_>, v: &Value, at: &YamlPath, name: &str) -> Option<Value> {
    let entity = format!("service `{name}`");
    let mut known: Vec<&str> = META.to_vec();
    known.extend([
        "name",
        "url",
        "protocol",
        "host",
        "port",
        "path",
        "connect_timeout",
        "read_timeout",
        "write_timeout",
        "retries",
        "routes",
        "plugins",
        "tls_verify",
    ]);
    cx.only(&entity, v, at, &known, &[("enabled", true.into())]);
    let (scheme, host, port) = match get_str(v, "url") {
        Some(u) => match url::Url::parse(u) {
            Ok(u) => {
                if !matches!(u.path(), "" | "/") {
                    cx.service_paths.insert(name.to_owned(), u.path().to_owned());
                }
                (u.scheme().to_owned(), u.host_str().unwrap_or_default().to_owned(), u.port_or_known_default())
            }
            Err(e) => {
                cx.problem(&at.key("url"), format!("{entity}: `url` is not a URL: {e}"));
                return None;
            }
        },
        None => {
            if let Some(p) = get_str(v, "path").filter(|p| *p != "/") {
                cx.service_paths.insert(name.to_owned(), p.to_owned());
            }
            (
                get_str(v, "protocol").unwrap_or("http").to_owned(),
                get_str(v, "host").unwrap_or_default().to_owned(),
                get(v, "port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok()),
            )
        }
    };
    // A WebSocket service is HTTP until the handshake upgrades it, and
    // every legate route passes the handshake on.
    let scheme = match scheme.as_str() {
        "ws" => "http".to_owned(),
        "wss" => "https".to_owned(),
        _ => scheme,
    };
    if !matches!(scheme.as_str(), "http" | "https") {
        cx.problem(
            &at.key("protocol"),
            format!("{entity}: protocol `{scheme}` has no legate equivalent (http, https, ws, wss)"),
        );
        return None;
    }
    if host.is_empty() {
        cx.problem(at, format!("{entity}: needs a `url` or a `host`"));
        return None;
    }
    let upstream = cx.upstreams.get(&host).cloned();
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    // Kong's Host for the service: its host, and its port unless the
    // scheme's default (kong/runloop/balancer, set_host_header).
    let host_header = |host: &str, port: u16| match (scheme.as_str(), port) {
        ("http", 80) | ("https", 443) => host.to_owned(),
        _ => format!("{host}:{port}"),
    };
    let mut out = vec![("name", s(name))];
    let is_upstream = upstream.is_some();
    match upstream {
        // Kong balances over the upstream's targets, on the targets' ports.
        Some((u, u_at)) => {
            let (balancing, targets) = kong_upstream(cx, u, &u_at, &host, name)?;
            let hosts: std::collections::BTreeSet<String> =
                targets.iter().map(|(h, p, _)| host_header(h, *p)).collect();
            let chosen = match get_str(u, "host_header") {
                Some(h) => HostHeader::Literal(h.to_owned()),
                None if hosts.len() == 1 => HostHeader::Literal(hosts.into_iter().next().unwrap_or_default()),
                None => HostHeader::PerTarget,
            };
            cx.service_hosts.insert(name.to_owned(), chosen);
            let same = targets.iter().all(|(_, _, w)| *w == targets[0].2);
            let endpoints = targets
                .iter()
                .map(|(h, p, w)| {
                    let address = if h.contains(':') { format!("[{h}]:{p}") } else { format!("{h}:{p}") };
                    if same {
                        s(&address)
                    } else {
                        map(vec![("address", s(&address)), ("weight", (*w).into())])
                    }
                })
                .collect();
            out.push(("endpoints", Value::Sequence(endpoints)));
            if scheme == "https" {
                // TLS to the targets, their certificates checked for one name.
                let verify = get(v, "tls_verify").and_then(Value::as_bool) != Some(false);
                if verify && targets.iter().any(|(h, _, _)| *h != targets[0].0) {
                    cx.problem(
                        &at.key("protocol"),
                        format!(
                            "{entity}: https to upstream `{host}`, whose targets have different names; \
                             legate checks one name per service"
                        ),
                    );
                    return None;
                }
                let mut tls = vec![("server_name", s(&targets[0].0))];
                if !verify {
                    tls.push(("verify", false.into()));
                }
                out.push(("tls", map(tls)));
            }
            out.extend(balancing);
        }
        None => {
            cx.service_hosts.insert(name.to_owned(), HostHeader::Literal(host_header(&host, port)));
            out.push(("url", s(&format!("{scheme}://{host}:{port}"))));
        }
    }
    let ms = |k: &str| get(v, k).and_then(Value::as_u64).unwrap_or(60_000);
    let duration = |ms: u64| if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") };
    out.extend([
        ("connect_timeout", s(&duration(ms("connect_timeout")))),
        // Kong's read and write timeouts bound the gap between two reads or
        // writes (nginx's proxy_read_timeout / proxy_send_timeout), never the
        // whole response: Envoy's stream idle timeout, and no request timeout.
        ("timeout", s("0s")),
        ("idle_timeout", s(&duration(ms("read_timeout").max(ms("write_timeout"))))),
    ]);
    // legate checks an https service's certificate unless told not to;
    // Kong's `tls_verify: false` is that. (Left unset, Kong follows nginx's
    // `proxy_ssl_verify`, off by default: legate checks.)
    if scheme == "https" && !is_upstream && get(v, "tls_verify").and_then(Value::as_bool) == Some(false) {
        out.push(("tls", map(vec![("verify", false.into())])));
    }
    // Kong retries a request whose connection failed, up to `retries` (5) times.
    let retries = get(v, "retries").and_then(Value::as_u64).unwrap_or(5);
    if retries > 0 {
        out.push((
            "retries",
            map(vec![
                ("attempts", retries.into()),
                ("on", Value::Sequence(vec![s("connect-failure")])),
                (
                    "methods",
                    Value::Sequence(["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"].map(s).to_vec()),
                ),
            ]),
        ));
    }
    Some(map(out))
}

/// An upstream target: host, port, weight.
type Target = (String, u16, u64);

/// Keys of a legate entity the conversion writes, in order.
type Settings = Vec<(&'static str, Value)>;

/// A Kong upstream as the endpoints and balancing of the services that
/// name it: its targets (host, port, weight; Kong's default port 8000,
/// weight-0 targets left out, as Kong sends them nothing), its algorithm,
/// and its health checks.
fn kong_upstream(
    cx: &mut Ctx<'_>,
    u: &Value,
    at: &YamlPath,
    name: &str,
    service: &str,
) -> Option<(Settings, Vec<Target>)> {
    let entity = format!("upstream `{name}`");
    let mut known: Vec<&str> = META.to_vec();
    known.extend(["name", "targets", "algorithm", "hash_on", "hash_on_header", "healthchecks", "host_header"]);
    cx.only(
        &entity,
        u,
        at,
        &known,
        &[
            ("hash_fallback", s("none")),
            ("hash_on_cookie_path", s("/")),
            ("slots", 10_000.into()),
            ("use_srv_name", false.into()),
        ],
    );
    let before = cx.out.problems.len();
    let mut targets = Vec::new();
    for (i, t) in list(u, "targets").into_iter().enumerate() {
        let t_at = at.key("targets").index(i);
        let mut known: Vec<&str> = META.to_vec();
        known.extend(["target", "weight", "upstream"]);
        cx.only(&format!("{entity}, target {}", i + 1), t, &t_at, &known, &[]);
        let Some(text) = get_str(t, "target") else {
            cx.problem(&t_at, format!("{entity}: a target needs `target` (host:port)"));
            continue;
        };
        // `host`, `host:port`, `[v6]` or `[v6]:port`; Kong's default port is 8000.
        let (host, port) = match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, p.parse::<u16>().ok()),
            _ => (text, Some(8000)),
        };
        let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(ip) => ip.parse::<std::net::IpAddr>().is_ok(),
            None => super::validate::endpoint_host_ok(host),
        };
        let Some(port) = port.filter(|p| *p > 0 && host_ok) else {
            cx.problem(&t_at.key("target"), format!("{entity}: target `{text}` is not host:port"));
            continue;
        };
        let weight = get(t, "weight").and_then(Value::as_u64).unwrap_or(100);
        if weight > 0 {
            targets.push((host.trim_matches(['[', ']']).to_owned(), port, weight));
        }
    }
    if targets.is_empty() && cx.out.problems.len() == before {
        cx.problem(
            at,
            format!("{entity}: no target with a weight above 0, so Kong would answer 503 for service `{service}`"),
        );
    }
    let mut out = Vec::new();
    let hash_on = get_str(u, "hash_on").unwrap_or("none");
    match (get_str(u, "algorithm").unwrap_or("round-robin"), hash_on) {
        ("round-robin" | "consistent-hashing", "none") => {}
        ("least-connections", "none") => out.push(("load_balancing", s("least_request"))),
        (_, "ip") => out.push(("load_balancing", s("ring_hash"))),
        (_, "header") => match get_str(u, "hash_on_header") {
            Some(h) => {
                out.push(("load_balancing", s("ring_hash")));
                out.push(("hash_key", map(vec![("header", s(h))])));
            }
            None => cx.problem(&at.key("hash_on_header"), format!("{entity}: hash_on header needs `hash_on_header`")),
        },
        (_, "none") => cx.problem(
            &at.key("algorithm"),
            format!("{entity}: algorithm `{}` has no legate equivalent", get_str(u, "algorithm").unwrap_or_default()),
        ),
        (_, other) => cx.problem(
            &at.key("hash_on"),
            format!("{entity}: hash_on `{other}` has no legate equivalent (none, ip, header)"),
        ),
    }
    if let Some(h) = get(u, "healthchecks") {
        out.extend(kong_health_checks(cx, h, &at.key("healthchecks"), &entity));
    }
    (cx.out.problems.len() == before).then_some((out, targets))
}

/// An upstream's `healthchecks`: active checks as a legate `health_check`,
/// passive ones as `outlier_detection`; all-zero counters (Kong's default)
/// are none.
fn kong_health_checks(cx: &mut Ctx<'_>, h: &Value, at: &YamlPath, entity: &str) -> Vec<(&'static str, Value)> {
    let what = format!("{entity}: healthchecks");
    cx.only(&what, h, at, &["active", "passive"], &[("threshold", 0.into())]);
    let num = |v: &Value, path: &[&str]| path.iter().try_fold(v, |v, k| get(v, k)).and_then(Value::as_u64).unwrap_or(0);
    let mut out = Vec::new();
    if let Some(a) = get(h, "active") {
        let a_at = at.key("active");
        cx.only(
            &what,
            a,
            &a_at,
            &[
                "type",
                "http_path",
                "timeout",
                "healthy",
                "unhealthy",
                "concurrency",
                "https_verify_certificate",
                "headers",
            ],
            &[],
        );
        let (healthy, unhealthy) = (num(a, &["healthy", "interval"]), num(a, &["unhealthy", "interval"]));
        if healthy > 0 || unhealthy > 0 {
            // Envoy checks every endpoint at one interval, healthy or not.
            if healthy != unhealthy {
                cx.problem(
                    &a_at,
                    format!(
                        "{what}: active checks every {healthy}s of healthy targets and every {unhealthy}s of \
                         unhealthy ones; legate checks all at one interval (make them equal)"
                    ),
                );
            } else if !matches!(get_str(a, "type").unwrap_or("http"), "http" | "https") {
                cx.problem(
                    &a_at.key("type"),
                    format!("{what}: active checks of type tcp or grpc have no legate equivalent"),
                );
            } else {
                // Kong marks a target down after `http_failures` failed
                // checks (or `timeouts`, or `tcp_failures`, each counted
                // apart); Envoy counts them together.
                let fails = ["http_failures", "timeouts", "tcp_failures"]
                    .iter()
                    .map(|k| num(a, &["unhealthy", k]))
                    .filter(|n| *n > 0)
                    .min()
                    .unwrap_or(1);
                let mut check = vec![
                    ("path", s(get_str(a, "http_path").unwrap_or("/"))),
                    ("interval", s(&format!("{healthy}s"))),
                    ("timeout", s(&format!("{}s", num(a, &["timeout"]).max(1)))),
                    ("unhealthy_threshold", fails.into()),
                    ("healthy_threshold", num(a, &["healthy", "successes"]).max(1).into()),
                ];
                if num(a, &["timeout"]) == 0 {
                    check[2] = ("timeout", s("1s"));
                }
                out.push(("health_check", map(check)));
            }
        }
    }
    if let Some(p) = get(h, "passive") {
        let p_at = at.key("passive");
        cx.only(&what, p, &p_at, &["type", "healthy", "unhealthy"], &[]);
        let failures = num(p, &["unhealthy", "http_failures"]);
        if failures > 0 {
            out.push(("outlier_detection", map(vec![("consecutive_5xx", failures.into())])));
        }
    }
    out
}

/// The plugins that apply to a route: for each plugin name, the route's,
/// else its service's, else the global one.
fn effective<'a>(route: &[Plugin<'a>], service: &[Plugin<'a>], global: &[Plugin<'a>]) -> BTreeMap<String, Plugin<'a>> {
    let mut out = BTreeMap::new();
    for p in global.iter().chain(service).chain(route) {
        out.insert(p.name.clone(), p.clone());
    }
    out
}

fn route<'a>(
    cx: &mut Ctx<'a>,
    r: &'a Value,
    at: &YamlPath,
    service: Option<&str>,
    service_plugins: &BTreeMap<String, Vec<Plugin<'a>>>,
    scoped: Vec<Plugin<'a>>,
) {
    let index = match at.0.last() {
        Some(super::locate::Seg::Index(i)) => i + 1,
        _ => 0,
    };
    let name = get_str(r, "name").map_or_else(|| format!("{}-route-{index}", service.unwrap_or("kong")), str::to_owned);
    let entity = format!("route `{name}`");
    let mut known: Vec<&str> = META.to_vec();
    known.extend([
        "name",
        "paths",
        "methods",
        "headers",
        "hosts",
        "strip_path",
        "preserve_host",
        "plugins",
        "service",
        "protocols",
    ]);
    // Kong redirects (or answers 426) only on a route for https alone; a
    // route that takes http never uses its https_redirect_status_code.
    let protocols = strings(r, "protocols");
    if protocols.is_empty() || protocols.iter().any(|p| p == "http") {
        known.push("https_redirect_status_code");
    }
    // Kong orders by regex_priority only routes with regex paths
    // (kong/router/transform.lua); on others it means nothing.
    let legacy = cx.legacy_paths;
    let is_regex = |p: &String| {
        p.starts_with('~') || (legacy && !p.chars().all(|c| c.is_ascii_alphanumeric() || "._~/%-".contains(c)))
    };
    if !strings(r, "paths").iter().any(is_regex) {
        known.push("regex_priority");
    }
    cx.only(
        &entity,
        r,
        at,
        &known,
        &[
            ("https_redirect_status_code", 426.into()),
            ("regex_priority", 0.into()),
            ("path_handling", s("v0")),
            ("request_buffering", true.into()),
            ("response_buffering", true.into()),
        ],
    );
    for p in strings(r, "protocols") {
        if !matches!(p.as_str(), "http" | "https" | "ws" | "wss") {
            cx.problem(&at.key("protocols"), format!("{entity}: protocol `{p}` has no legate equivalent"));
        }
    }
    // A route for https (or wss) alone is served by Kong on its TLS port
    // only; the conversion's own listener is plain HTTP, where Kong would
    // answer 426 and never reach the service.
    if cx.own_listener && !protocols.is_empty() && protocols.iter().all(|p| p == "https" || p == "wss") {
        cx.problem(
            &at.key("protocols"),
            format!(
                "{entity}: a route for https alone needs a TLS listener; define one in a listeners file next to the \
                 Kong file (its routes go on it)"
            ),
        );
    }
    // A route without a service: Kong runs its plugins, then answers 503
    // (kong/runloop/handler.lua).
    let service = service.unwrap_or_default();
    if !service.is_empty() && !cx.services.iter().any(|(n, _, _)| n == service) {
        if cx.kong_services.iter().any(|n| n == service) {
            // Left out for a problem of its own, already reported.
            cx.out.dropped.push((at.clone(), format!("{entity}: its service `{service}` is left out")));
        } else {
            cx.problem(&at.key("service"), format!("{entity}: service `{service}` is not in the Kong config"));
            cx.out.dropped.push((at.clone(), entity));
        }
        return;
    }
    let mut route_plugins = scoped;
    route_plugins.extend(
        list(r, "plugins")
            .into_iter()
            .enumerate()
            .filter_map(|(j, p)| plugin(cx, p, &at.key("plugins").index(j), &format!("route `{name}`"))),
    );
    let none = Vec::new();
    let global = cx.global.clone();
    let plugins = effective(&route_plugins, service_plugins.get(service).unwrap_or(&none), &global);

    let service_host = cx.service_hosts.get(service).cloned();
    let strip = get(r, "strip_path").and_then(Value::as_bool).unwrap_or(true);
    let preserve_host = get(r, "preserve_host").and_then(Value::as_bool).unwrap_or(false);
    let methods = strings(r, "methods");
    let hosts = strings(r, "hosts");
    let mut headers = Mapping::new();
    if let Some(h) = get(r, "headers").and_then(Value::as_mapping) {
        for (k, vals) in h {
            let Some(k) = k.as_str() else { continue };
            let vals: Vec<String> = vals
                .as_sequence()
                .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            let rule = if vals.len() == 1 {
                s(&vals[0])
            } else {
                let alts: Vec<String> = vals.iter().map(|v| regex_syntax::escape(v)).collect();
                map(vec![("regex", s(&alts.join("|")))])
            };
            headers.insert(s(k), rule);
        }
    }
    let mut paths = strings(r, "paths");
    if cx.legacy_paths {
        // Kong before 3.0 read a path as a regex when it held anything but
        // [A-Za-z0-9._~/%-]; Kong 3 (and its migration, `deck convert`)
        // marks those with `~`.
        for p in &mut paths {
            let plain = p.chars().all(|c| c.is_ascii_alphanumeric() || "._~/%-".contains(c));
            if !plain && !p.starts_with('~') {
                p.insert(0, '~');
            }
        }
    }
    let paths = if paths.is_empty() { vec!["/".to_owned()] } else { paths };
    let before = cx.out.problems.len();
    let mut settings = route_settings(cx, &plugins);
    if service.is_empty() && !settings.iter().any(|(k, _)| *k == "respond") {
        let respond = map(vec![("status", 503.into()), ("message", s("no Service found with those values"))]);
        settings.push(("respond", respond));
    }
    // request-transformer's `replace.uri` is the whole upstream path.
    let replace_uri = settings.iter().position(|(k, _)| *k == REPLACE_URI).map(|i| settings.remove(i).1);
    let bot_rules = settings.iter().position(|(k, _)| *k == BOT_RULES).map(|i| settings.remove(i).1);
    let first_made = cx.routes.len();
    if cx.out.problems.len() > before {
        cx.out.dropped.push((at.clone(), format!("{entity}: for its plugins' problems")));
        return;
    }
    for (i, p) in paths.iter().enumerate() {
        let path_match = match p.strip_prefix('~') {
            // Kong anchors a regex path at the start only; legate's match the whole path.
            Some(re) => ("regex", s(&re.strip_suffix('$').map_or_else(|| format!("{re}.*"), str::to_owned))),
            None => ("prefix", s(p)),
        };
        let conditions = |path: (&'static str, Value)| {
            let mut m = vec![path];
            if !methods.is_empty() {
                m.push(("methods", Value::Sequence(methods.iter().map(|x| s(x)).collect())));
            }
            if !hosts.is_empty() {
                m.push(("hosts", Value::Sequence(hosts.iter().map(|x| s(x)).collect())));
            }
            if !headers.is_empty() {
                m.push(("headers", Value::Mapping(headers.clone())));
            }
            map(m)
        };
        let route_name = if paths.len() == 1 { name.clone() } else { format!("{name}-{}", i + 1) };
        let mut out = vec![("name", s(&route_name)), ("listener", s(LISTENER)), ("match", conditions(path_match))];
        // request-termination (or no service): Envoy answers, no service is called.
        let responds = settings.iter().any(|(k, _)| *k == "respond");
        if !responds {
            out.push(("service", s(service)));
        }
        // Kong's upstream path: the service's path, then the request path
        // with the matched prefix cut off when strip_path (the default).
        let written_base = cx.service_paths.get(service).cloned();
        let base = written_base.as_deref().map(|b| b.trim_end_matches('/').to_owned());
        let exact = (!p.starts_with('~') && replace_uri.is_none() && !responds)
            .then(|| exact_path_upstream(p, strip, written_base.as_deref()))
            .flatten();
        let mut rewrite = vec![];
        if responds {
            // Envoy answers: nothing goes upstream.
        } else if let Some(uri) = &replace_uri {
            rewrite.push(("regex", s("^.*$")));
            rewrite.push(("substitution", s(&uri.as_str().unwrap_or_default().replace('\\', "\\\\"))));
        } else if p.starts_with('~') {
            if strip || base.is_some() {
                cx.problem(
                    &at.key("paths").index(i),
                    format!("{entity}: a regex path with strip_path or a service path has no legate equivalent"),
                );
                return;
            }
        } else if strip && p != "/" {
            rewrite.push(("prefix", s(&format!("{}/", base.as_deref().unwrap_or("")))));
        } else if let Some(b) = &base {
            rewrite.push(("prefix", s(&format!("{b}{p}"))));
        }
        if !preserve_host && !responds {
            match &service_host {
                Some(HostHeader::Literal(h)) => rewrite.push(("host", s(h))),
                Some(HostHeader::PerTarget) => rewrite.push(("auto_host", true.into())),
                None => {}
            }
        }
        let host_rewrite: Vec<(&'static str, Value)> =
            rewrite.iter().filter(|(k, _)| matches!(*k, "host" | "auto_host")).cloned().collect();
        if !rewrite.is_empty() {
            out.push(("rewrite", map(rewrite)));
        }
        out.extend(settings.iter().map(|(k, v)| (*k, v.clone())));
        // A request for exactly the route's path, where Kong's upstream
        // path differs from what the prefix rewrite gives (no slash added).
        if let Some(upstream) = exact {
            let mut exact_route = out.clone();
            exact_route[0] = ("name", s(&format!("{route_name}-exact")));
            exact_route[2] = ("match", conditions(("path", s(p))));
            let rewrite = std::iter::once(("prefix", s(&upstream))).chain(host_rewrite).collect();
            match exact_route.iter_mut().find(|(k, _)| *k == "rewrite") {
                Some(r) => r.1 = map(rewrite),
                None => exact_route.insert(4, ("rewrite", map(rewrite))),
            }
            cx.routes.push((map(exact_route), at.clone()));
        }
        cx.routes.push((map(out), at.clone()));
    }
    if let Some(rules) = bot_rules {
        guard_against_bots(cx, &rules, first_made, at, &entity);
    }
}

/// bot-detection on the routes made from one Kong route (from index
/// `first`): before each, a route taking the same requests whose
/// User-Agent matches `deny` or Kong's bot patterns, answered 403 as Kong
/// does; and before that, when there is an `allow` list, the route itself
/// again for User-Agents it allows (Kong checks `allow` first). Header
/// conditions rank these above the route (docs/policy.md#route-precedence),
/// and the written order keeps `allow` before the bots.
fn guard_against_bots(cx: &mut Ctx<'_>, rules: &Value, first: usize, at: &YamlPath, entity: &str) {
    let allow = strings(rules, "allow");
    let deny = strings(rules, "deny");
    let mut patterns: Vec<&str> = deny.iter().map(String::as_str).collect();
    patterns.extend(kong_bot_patterns());
    let bots = search_regex(&patterns);
    let allowed = (!allow.is_empty()).then(|| search_regex(&allow.iter().map(String::as_str).collect::<Vec<_>>()));
    let made: Vec<(Value, YamlPath)> = cx.routes.drain(first..).collect();
    for (route, route_at) in made {
        let name = route.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let with_agent = |r: &Value, regex: &str| -> Option<Value> {
            let mut r = r.clone();
            let m = r.get_mut("match")?.as_mapping_mut()?;
            let headers = m.entry(s("headers")).or_insert_with(|| Value::Mapping(Mapping::new()));
            let headers = headers.as_mapping_mut()?;
            if headers.keys().any(|k| k.as_str().is_some_and(|k| k.eq_ignore_ascii_case("user-agent"))) {
                return None;
            }
            headers.insert(s("user-agent"), map(vec![("regex", s(regex))]));
            Some(r)
        };
        let Some(mut blocked) = with_agent(&route, &bots) else {
            cx.problem(at, format!("{entity}: bot-detection on a route that matches User-Agent itself"));
            cx.out.dropped.push((at.clone(), format!("{entity}: for its plugins' problems")));
            return;
        };
        if let Some(allowed) = &allowed {
            if let Some(mut r) = with_agent(&route, allowed) {
                r["name"] = s(&format!("{name}-bots-allowed"));
                cx.routes.push((r, route_at.clone()));
            }
        }
        // Kong's bot-detection runs before authentication and limits.
        if let Some(m) = blocked.as_mapping_mut() {
            m.retain(|k, _| matches!(k.as_str(), Some("name" | "listener" | "match")));
            m.insert(s("name"), s(&format!("{name}-bots")));
            m.insert(s("respond"), map(vec![("status", 403.into()), ("message", s("Forbidden"))]));
            m.insert(s("auth"), s("none"));
            m.insert(s("rate_limit"), s("none"));
        }
        cx.routes.push((blocked, route_at.clone()));
        cx.routes.push((route, route_at));
    }
}

/// Names (`key`) Kong requires unique among `entities` (services, routes,
/// consumers): each one used before is a problem naming where.
fn unique_names<'a>(cx: &mut Ctx<'_>, kind: &str, key: &str, entities: impl Iterator<Item = (&'a Value, YamlPath)>) {
    let mut seen: BTreeMap<&str, YamlPath> = BTreeMap::new();
    for (v, at) in entities {
        let Some(name) = get_str(v, key) else { continue };
        match seen.get(name) {
            Some(first) => cx.problem(
                &at.key(key.to_owned()),
                format!("{kind} `{name}` is defined twice, here and at `{first}`; Kong refuses a name twice"),
            ),
            None => {
                seen.insert(name, at);
            }
        }
    }
}

/// Kong's upstream path (path_handling v0, its default) for a request for
/// exactly `path`, the route's prefix, when it is not what the route's
/// prefix rewrite gives; `base` is the service's path as written (`None`:
/// `/`). Kong joins the service path and the rest of the request with one
/// slash only when there is a rest: `/getOrder` on a service path
/// `/kitchen/getOrder` is `/kitchen/getOrder`, not `/kitchen/getOrder/`
/// (kong/router/utils.lua, `get_upstream_uri_v0`).
fn exact_path_upstream(path: &str, strip: bool, base: Option<&str>) -> Option<String> {
    let base = base?;
    let trimmed = base.trim_end_matches('/');
    if strip && path != "/" {
        // The prefix rewrite gives `trimmed/`; Kong keeps the slash only
        // when the route's path ends with one.
        (!path.ends_with('/') && !trimmed.is_empty()).then(|| trimmed.to_owned())
    } else if path == "/" {
        // The prefix rewrite gives `trimmed/`; Kong gives the base as written.
        (!base.ends_with('/')).then(|| base.to_owned())
    } else {
        None
    }
}

/// Not a legate key: the upstream path request-transformer's `replace.uri`
/// sets, which `route` makes the route's rewrite.
const REPLACE_URI: &str = "replace_uri";

/// Not a legate key: bot-detection's `allow` and `deny` regexes, which
/// `route` makes routes of their own.
const BOT_RULES: &str = "bot_rules";

/// Kong's default bot patterns (kong/plugins/bot-detection/rules.lua).
fn kong_bot_patterns() -> Vec<&'static str> {
    include_str!("kong/bot_rules.txt").lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect()
}

/// A regex matching a whole header value that holds one of `patterns`
/// anywhere (Kong searches, legate's header regexes match the whole value).
fn search_regex(patterns: &[&str]) -> String {
    format!(".*(?:{}).*", patterns.join("|"))
}

/// auth, rate_limit, header changes and CORS of a route from its plugins.
fn route_settings(cx: &mut Ctx<'_>, plugins: &BTreeMap<String, Plugin<'_>>) -> Vec<(&'static str, Value)> {
    let mut out = vec![("auth", s("none")), ("rate_limit", s("none"))];
    let has_jwt = plugins.contains_key("jwt");
    // The acl plugin narrows who the route's authentication lets in.
    let acl = match plugins.get("acl") {
        None => None,
        Some(p) => {
            let what = format!("plugin `acl` ({})", p.scope);
            let at = p.at.key("config");
            cx.only(&what, p.config, &at, &["allow", "deny", "whitelist", "blacklist", "hide_groups_header"], &[]);
            let allow: Vec<String> =
                strings(p.config, "allow").into_iter().chain(strings(p.config, "whitelist")).collect();
            let deny: Vec<String> =
                strings(p.config, "deny").into_iter().chain(strings(p.config, "blacklist")).collect();
            if !has_jwt && !plugins.contains_key("key-auth") && !plugins.contains_key("basic-auth") {
                cx.problem(
                    &p.at,
                    format!(
                        "{what}: needs the jwt, key-auth or basic-auth plugin on the same route to know the consumer"
                    ),
                );
            }
            Some((allow, deny))
        }
    };
    let kinds: Vec<&str> = ["jwt", "key-auth", "basic-auth"].into_iter().filter(|k| plugins.contains_key(*k)).collect();
    if let [first, .., last] = kinds.as_slice() {
        let at = plugins.get(*last).map(|p| p.at.clone()).unwrap_or_default();
        cx.problem(
            &at,
            format!("plugins `{first}` and `{last}` on one route: legate takes one kind of credential per route"),
        );
    }
    let groups = cx.groups.clone();
    let narrowed = acl.is_some();
    let admitted = |consumer: &str| -> bool {
        let Some((allow, deny)) = &acl else { return true };
        let mine = groups.get(consumer).map(Vec::as_slice).unwrap_or_default();
        (allow.is_empty() || mine.iter().any(|g| allow.contains(g))) && !mine.iter().any(|g| deny.contains(g))
    };
    for p in plugins.values() {
        let what = format!("plugin `{}` ({})", p.name, p.scope);
        let c = p.config;
        let at = p.at.key("config");
        match p.name.as_str() {
            "jwt" => {
                cx.only(
                    &what,
                    c,
                    &at,
                    &[
                        "claims_to_verify",
                        "maximum_expiration",
                        "key_claim_name",
                        "header_names",
                        "uri_param_names",
                        "run_on_preflight",
                    ],
                    &[
                        // The HS keys are converted as written; base64 ones would need decoding first.
                        ("secret_is_base64", false.into()),
                        ("cookie_names", Value::Sequence(vec![])),
                        ("anonymous", Value::Null),
                    ],
                );
                if get_str(c, "key_claim_name").is_some_and(|k| k != "iss") {
                    cx.problem(&at.key("key_claim_name"), format!("{what}: legate matches keys by `iss` only"));
                }
                // Where Kong looks for the token: each of header_names
                // (default Authorization) after `Bearer `, and each of
                // uri_param_names (default `jwt`) in the query.
                let headers = match get(c, "header_names") {
                    Some(_) => strings(c, "header_names"),
                    None => vec!["Authorization".to_owned()],
                };
                let params = match get(c, "uri_param_names") {
                    Some(_) => strings(c, "uri_param_names"),
                    None => vec!["jwt".to_owned()],
                };
                let from: Vec<Value> = headers
                    .iter()
                    .map(|h| map(vec![("header", s(h)), ("prefix", s("Bearer "))]))
                    .chain(params.iter().map(|q| map(vec![("query", s(q))])))
                    .collect();
                let claims = strings(c, "claims_to_verify");
                for (i, claim) in claims.iter().enumerate() {
                    if !matches!(claim.as_str(), "exp" | "nbf") {
                        cx.problem(
                            &at.key("claims_to_verify").index(i),
                            format!("{what}: Kong verifies `exp` and `nbf`, not `{claim}`"),
                        );
                    }
                }
                let max_lifetime = get(c, "maximum_expiration").and_then(Value::as_u64).filter(|n| *n > 0);
                if max_lifetime.is_some() && !claims.iter().any(|c| c == "exp") {
                    // Kong's schema refuses this too.
                    cx.problem(
                        &at.key("maximum_expiration"),
                        format!("{what}: maximum_expiration needs `exp` in claims_to_verify"),
                    );
                }
                let checks = ExpiryChecks { require_exp: claims.iter().any(|c| c == "exp"), max_lifetime, from };
                let names = jwt_providers(cx, &at, &what, &admitted, narrowed, &checks);
                out[0] = ("auth", Value::Sequence(names.iter().map(|n| s(n)).collect()));
            }
            "rate-limiting" => {
                let consumer_header = if plugins.contains_key("key-auth") {
                    Some("X-Consumer-Username")
                } else if plugins.contains_key("basic-auth") {
                    Some("X-Credential-Identifier")
                } else {
                    None
                };
                if let Some(name) = rate_limit(cx, p, has_jwt, consumer_header) {
                    out[1] = ("rate_limit", s(&name));
                }
            }
            "request-transformer" | "response-transformer" => {
                let request = p.name == "request-transformer";
                let key = if request { "request_headers" } else { "response_headers" };
                let Transformed { headers, query, uri } = transformer(cx, c, &at, &what, request);
                if let Some(ops) = headers {
                    out.push((key, ops));
                }
                if let Some(ops) = query {
                    out.push(("request_query", ops));
                }
                if let Some(uri) = uri {
                    out.push((REPLACE_URI, s(&uri)));
                }
            }
            "cors" => {
                if let Some(cors) = cors(cx, c, &at, &what) {
                    out.push(("cors", cors));
                }
            }
            "ip-restriction" => {
                if let Some(ip) = ip_restriction(cx, c, &at, &what) {
                    out.push(("ip_restriction", ip));
                }
            }
            "key-auth" => {
                if let Some(name) = key_set(cx, c, &at, &what, &admitted, narrowed) {
                    out[0] = ("auth", s(&name));
                }
            }
            "basic-auth" => {
                if let Some(name) = basic_set(cx, c, &at, &what, &admitted, narrowed) {
                    out[0] = ("auth", s(&name));
                }
            }
            "acl" => {}
            "file-log" => {
                // `reopen` (Kong opens the file for each write): Envoy keeps it
                // open and reopens it on its admin's /reopen_logs.
                cx.only(&what, c, &at, &["path", "reopen"], &[("custom_fields_by_lua", Value::Null)]);
                let path = match get_str(c, "path") {
                    Some("/dev/stdout") => Some("stdout".to_owned()),
                    Some("/dev/stderr") => Some("stderr".to_owned()),
                    Some(p) if p.starts_with('/') => Some(p.to_owned()),
                    _ => {
                        cx.problem(&at.key("path"), format!("{what}: `path` must be an absolute file path"));
                        None
                    }
                };
                if p.scope != "global" {
                    cx.problem(
                        &p.at.key("name"),
                        format!("{what}: legate's access log covers every route or none (a global file-log converts)"),
                    );
                } else if let Some(path) = path {
                    cx.access_log = Some(path);
                }
            }
            "correlation-id" => {
                // `generator` shapes the id (uuid, uuid#counter, tracker);
                // Envoy's is a UUID whichever is asked for.
                cx.only(&what, c, &at, &["header_name", "generator", "echo_downstream"], &[]);
                let header = get_str(c, "header_name").unwrap_or("Kong-Request-ID");
                let echo = get(c, "echo_downstream").and_then(Value::as_bool) == Some(true);
                out.push(("request_id", map(vec![("header", s(header)), ("echo", echo.into())])));
            }
            "bot-detection" => {
                cx.only(&what, c, &at, &["allow", "deny"], &[]);
                let mut lists = vec![];
                for key in ["allow", "deny"] {
                    let list = strings(c, key);
                    for (i, re) in list.iter().enumerate() {
                        if regex_syntax::Parser::new().parse(re).is_err() {
                            cx.problem(
                                &at.key(key).index(i),
                                format!("{what}: `{re}` is not a regex legate (RE2) reads"),
                            );
                        }
                    }
                    lists.push((key, Value::Sequence(list.iter().map(|x| s(x)).collect())));
                }
                out.push((BOT_RULES, map(lists)));
            }
            "request-size-limiting" => {
                cx.only(
                    &what,
                    c,
                    &at,
                    &["allowed_payload_size", "size_unit"],
                    &[("require_content_length", false.into())],
                );
                let size = get(c, "allowed_payload_size").and_then(Value::as_u64).unwrap_or(128);
                let unit = match get_str(c, "size_unit").unwrap_or("megabytes") {
                    "megabytes" => "MiB",
                    "kilobytes" => "KiB",
                    "bytes" => "B",
                    other => {
                        cx.problem(&at.key("size_unit"), format!("{what}: size_unit `{other}` is not one Kong has"));
                        continue;
                    }
                };
                let text = format!("{size}{unit}");
                match super::validate::parse_size(&text) {
                    Ok(_) => out.push(("max_request_body", s(&text))),
                    Err(e) => cx.problem(&at.key("allowed_payload_size"), format!("{what}: {e}")),
                }
            }
            "request-termination" => {
                cx.only(&what, c, &at, &["status_code", "message"], &[("echo", false.into())]);
                let status = get(c, "status_code").and_then(Value::as_u64).unwrap_or(503);
                if !(200..=599).contains(&status) {
                    cx.problem(&at.key("status_code"), format!("{what}: legate answers with 200 to 599, not {status}"));
                }
                // Kong's words when the plugin gives none (kong/tools/http.lua).
                let message = get_str(c, "message").map(str::to_owned).or_else(|| {
                    let default = match status {
                        401 => "Unauthorized",
                        404 => "Not found",
                        405 => "Method not allowed",
                        500 => "An unexpected error occurred",
                        502 => "Bad Gateway",
                        503 => "Service unavailable",
                        _ => return None,
                    };
                    Some(default.to_owned())
                });
                let mut respond = vec![("status", status.into())];
                if let Some(m) = message {
                    respond.push(("message", s(&m)));
                }
                out.push(("respond", map(respond)));
            }
            // Kong's metrics for its status API. Nothing to convert: each
            // Envoy exports its request metrics (per route and cluster) on
            // its admin's /stats/prometheus, and legate its own on /metrics.
            "prometheus" => cx.only(
                &what,
                c,
                &at,
                &[
                    "per_consumer",
                    "status_code_metrics",
                    "latency_metrics",
                    "bandwidth_metrics",
                    "upstream_health_metrics",
                    "ai_metrics",
                ],
                &[],
            ),
            other => cx.problem(&p.at.key("name"), format!("{what}: Kong plugin `{other}` has no legate equivalent")),
        }
    }
    out
}

/// What a jwt plugin checks of `exp`: whether a token must carry one
/// (`claims_to_verify: [exp]`), and the longest it may still have to live
/// (`maximum_expiration`, seconds).
#[derive(Debug, Clone)]
struct ExpiryChecks {
    require_exp: bool,
    max_lifetime: Option<u64>,
    /// legate `from` entries: where the token may be.
    from: Vec<Value>,
}

/// One legate JWT provider per consumer credential (issuer = the
/// credential's `key`) and distinct expiry checks.
fn jwt_providers(
    cx: &mut Ctx<'_>,
    at: &YamlPath,
    what: &str,
    admitted: &dyn Fn(&str) -> bool,
    narrowed: bool,
    checks: &ExpiryChecks,
) -> Vec<String> {
    if !cx.jwt_secrets.iter().any(|(_, _, consumer)| admitted(consumer)) {
        let which = if narrowed { " that the route's acl admits" } else { "" };
        cx.problem(at, format!("{what}: no consumer{which} has jwt_secrets, so no token could pass"));
        return Vec::new();
    }
    if checks.from.is_empty() {
        cx.problem(at, format!("{what}: no header_names or uri_param_names, so no token could be read"));
        return Vec::new();
    }
    let default_from =
        vec![map(vec![("header", s("Authorization")), ("prefix", s("Bearer "))]), map(vec![("query", s("jwt"))])];
    let from_suffix = if checks.from == default_from {
        String::new()
    } else {
        let k = match cx.jwt_sources.iter().position(|f| *f == checks.from) {
            Some(k) => k,
            None => {
                cx.jwt_sources.push(checks.from.clone());
                cx.jwt_sources.len() - 1
            }
        };
        format!("-from-{}", k + 1)
    };
    let mut names = Vec::new();
    for (i, (iss, jwks, consumer)) in cx.jwt_secrets.clone().into_iter().enumerate() {
        if !admitted(&consumer) {
            continue;
        }
        let suffix = match checks {
            ExpiryChecks { max_lifetime: Some(n), .. } => format!("-max-{n}s"),
            ExpiryChecks { require_exp: true, .. } => "-exp".to_owned(),
            ExpiryChecks { .. } => String::new(),
        };
        let name = format!("kong-jwt-{}{suffix}{from_suffix}", i + 1);
        if !cx.providers.iter().any(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str())) {
            let mut provider = vec![
                ("name", s(&name)),
                ("issuer", s(&iss)),
                ("jwks", map(vec![("inline", s(&jwks))])),
                ("from", Value::Sequence(checks.from.clone())),
                ("claims_to_headers", map(vec![("iss", s("X-Credential-Identifier"))])),
                // Kong allows no clock skew; 1s is the least Envoy can (it reads 0 as 60s).
                ("clock_skew", s("1s")),
            ];
            match checks.max_lifetime {
                Some(n) => provider.push(("max_lifetime", s(&format!("{n}s")))),
                None if checks.require_exp => provider.push(("require_expiration", true.into())),
                None => {}
            }
            provider.push(("forward_token", true.into()));
            cx.providers.push(map(provider));
        }
        names.push(name);
    }
    names
}

/// The key-auth plugin: an API key set of the admitted consumers' keys,
/// one per distinct setting.
fn key_set(
    cx: &mut Ctx<'_>,
    c: &Value,
    at: &YamlPath,
    what: &str,
    admitted: &dyn Fn(&str) -> bool,
    narrowed: bool,
) -> Option<String> {
    cx.only(
        what,
        c,
        at,
        &["key_names", "key_in_header", "key_in_query", "hide_credentials", "run_on_preflight"],
        &[("key_in_body", false.into()), ("anonymous", Value::Null), ("realm", Value::Null)],
    );
    let mut keys = Mapping::new();
    for (consumer, key) in cx.api_keys.iter().filter(|(c, _)| admitted(c)) {
        let mut client = consumer.clone();
        let mut n = 2;
        while keys.contains_key(client.as_str()) {
            client = format!("{consumer}-{n}");
            n += 1;
        }
        keys.insert(s(&client), s(key));
    }
    if keys.is_empty() {
        let which = if narrowed { " that the route's acl admits" } else { "" };
        cx.problem(at, format!("{what}: no consumer{which} has keyauth_credentials, so no key could pass"));
        return None;
    }
    let names = strings(c, "key_names");
    let names = if names.is_empty() { vec!["apikey".to_owned()] } else { names };
    let mut from = Vec::new();
    for n in &names {
        if get(c, "key_in_header").and_then(Value::as_bool) != Some(false) {
            from.push(map(vec![("header", s(n))]));
        }
        if get(c, "key_in_query").and_then(Value::as_bool) != Some(false) {
            from.push(map(vec![("query", s(n))]));
        }
    }
    let body = vec![
        ("keys", Value::Mapping(keys)),
        ("from", Value::Sequence(from)),
        // What Kong sets for the upstream.
        ("client_header", s("X-Consumer-Username")),
        ("forward_key", (get(c, "hide_credentials").and_then(Value::as_bool) != Some(true)).into()),
    ];
    Some(cx.key_sets.name_for("kong-keys", body))
}

/// `consumer_header`: the header naming the consumer (key-auth) or its
/// credential (basic-auth) for the upstream, when one of those applies.
/// The basic-auth plugin: a basic user set of the admitted consumers'
/// credentials (Kong's user name, its password as htpasswd's `{SHA}`),
/// one per distinct setting. The credential's user name goes upstream in
/// `X-Credential-Identifier`, as Kong sends it.
fn basic_set(
    cx: &mut Ctx<'_>,
    c: &Value,
    at: &YamlPath,
    what: &str,
    admitted: &dyn Fn(&str) -> bool,
    narrowed: bool,
) -> Option<String> {
    use base64::Engine as _;
    cx.only(what, c, at, &["hide_credentials"], &[("anonymous", Value::Null), ("realm", s("service"))]);
    let mut users = Mapping::new();
    for (_, user, password) in cx.basic_credentials.iter().filter(|(consumer, _, _)| admitted(consumer)) {
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, password.as_bytes());
        let hash = format!("{{SHA}}{}", base64::engine::general_purpose::STANDARD.encode(digest.as_ref()));
        users.insert(s(user), s(&hash));
    }
    if users.is_empty() {
        let which = if narrowed { " that the route's acl admits" } else { "" };
        cx.problem(at, format!("{what}: no consumer{which} has basicauth_credentials, so no user could pass"));
        return None;
    }
    let body = vec![
        ("users", Value::Mapping(users)),
        ("client_header", s("X-Credential-Identifier")),
        ("forward_credentials", (get(c, "hide_credentials").and_then(Value::as_bool) != Some(true)).into()),
    ];
    Some(cx.basic_sets.name_for("kong-basic", body))
}

fn rate_limit(cx: &mut Ctx<'_>, p: &Plugin<'_>, has_jwt: bool, consumer_header: Option<&str>) -> Option<String> {
    let what = format!("plugin `rate-limiting` ({})", p.scope);
    let c = p.config;
    let at = p.at.key("config");
    cx.only(
        &what,
        c,
        &at,
        &[
            "second",
            "minute",
            "hour",
            "day",
            "month",
            "year",
            "limit_by",
            "header_name",
            "policy",
            "fault_tolerant",
            "hide_client_headers",
            "sync_rate",
            "redis_host",
            "redis_port",
            "redis_password",
            "redis_username",
            "redis_database",
            "redis_timeout",
            "redis_ssl",
            "redis_ssl_verify",
            "redis_server_name",
            "redis",
        ],
        &[("error_code", 429.into()), ("error_message", s("API rate limit exceeded")), ("path", Value::Null)],
    );
    let mut limits = Mapping::new();
    for w in ["second", "minute", "hour", "day", "month", "year"] {
        if let Some(n) = get(c, w).and_then(Value::as_u64) {
            limits.insert(s(w), n.into());
        }
    }
    if limits.is_empty() {
        cx.problem(&at, format!("{what}: no limit in second, minute, hour, day, month or year"));
        return None;
    }
    let key = match get_str(c, "limit_by").unwrap_or("consumer") {
        "ip" => s("client_ip"),
        "header" => match get_str(c, "header_name") {
            Some(h) => map(vec![("header", s(h))]),
            None => {
                cx.problem(&at.key("header_name"), format!("{what}: limit_by header needs `header_name`"));
                return None;
            }
        },
        // The consumer is the credential a token was checked against: its issuer.
        "consumer" | "credential" if has_jwt => map(vec![("claim", s("iss"))]),
        // key-auth names the consumer in X-Consumer-Username, set by Envoy.
        "consumer" | "credential" if consumer_header.is_some() => {
            map(vec![("header", s(consumer_header.unwrap_or_default()))])
        }
        // Kong counts by client address when no consumer was identified.
        "consumer" | "credential" => s("client_ip"),
        other => {
            cx.problem(&at.key("limit_by"), format!("{what}: limit_by `{other}` has no legate equivalent"));
            return None;
        }
    };
    let scope = match get_str(c, "policy").unwrap_or("local") {
        "local" => "local",
        "cluster" | "redis" => "global",
        other => {
            cx.problem(&at.key("policy"), format!("{what}: policy `{other}` has no legate equivalent"));
            return None;
        }
    };
    let mut out = vec![("limits", Value::Mapping(limits)), ("key", key), ("scope", s(scope))];
    if get(c, "hide_client_headers").and_then(Value::as_bool) != Some(true) {
        out.push(("headers", true.into()));
    }
    if scope == "global" && get(c, "fault_tolerant").and_then(Value::as_bool) == Some(false) {
        out.push(("fail_closed", true.into()));
    }
    // Named after where it was first written.
    let base = format!("rate-limiting-{}", p.scope.replace(['`', ' '], "-").replace("--", "-").trim_end_matches('-'));
    Some(cx.rate_limits.name_for(&base, out))
}

/// A request- or response-transformer's header changes, as Kong makes
/// them (kong/plugins/request-transformer/access.lua): `remove`, then
/// `replace` (only a header the request has), `add` (only one it lacks),
/// `append` (one more value). A header both added and replaced is set
/// either way (legate's `add`). `replace.uri` (request-transformer) is
/// returned apart: it becomes the route's path rewrite.
fn transformer(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath, what: &str, request: bool) -> Transformed {
    let mut sections = vec!["add", "remove", "append", "replace", "rename"];
    if request {
        sections.push("http_method");
    }
    cx.only(what, c, at, &sections, &[]);
    if let Some(m) = get_str(c, "http_method") {
        cx.problem(&at.key("http_method"), format!("{what}: `http_method` ({m}) has no legate equivalent"));
    }
    // Kong's order: remove, rename, replace, add, append.
    let mut headers = Changes::default();
    let mut query = Changes::default();
    let mut uri = None;
    for section in ["remove", "rename", "replace", "add", "append"] {
        let Some(fields) = c.get(section).and_then(Value::as_mapping) else { continue };
        for (k, v) in fields {
            let Some(k) = k.as_str() else { continue };
            let f_at = at.key(section.to_owned()).key(k.to_owned());
            let empty = v.as_sequence().is_none_or(Vec::is_empty) && (v.is_null() || v.is_sequence());
            let changes = match (section, k) {
                (_, "headers") => &mut headers,
                (_, "querystring") if request => &mut query,
                ("replace", "uri") if request && v.is_string() => {
                    let u = v.as_str().unwrap_or_default();
                    if u.contains("$(") {
                        cx.problem(&f_at, format!("{what}: `replace.uri` is a Lua template; no legate equivalent yet"));
                    } else {
                        uri = Some(u.to_owned());
                    }
                    continue;
                }
                _ if empty => continue,
                _ => {
                    cx.problem(&f_at, format!("{what}: `{section}.{k}` has no legate equivalent"));
                    continue;
                }
            };
            for (i, entry) in v.as_sequence().into_iter().flatten().enumerate() {
                let e_at = f_at.index(i);
                let entry = entry.as_str().unwrap_or_default();
                if section == "remove" {
                    changes.remove.push(s(entry));
                    continue;
                }
                // Kong splits NAME:VALUE at the first colon.
                let Some((name, value)) = entry.split_once(':') else {
                    cx.problem(&e_at, format!("{what}: `{entry}` is not NAME:VALUE"));
                    continue;
                };
                let (name, value) = (name.trim(), value.trim_start());
                if value.contains("$(") {
                    cx.problem(&e_at, format!("{what}: `{name}` is set from a Lua template; no legate equivalent yet"));
                    continue;
                }
                if section == "rename" {
                    cx.problem(&e_at, format!("{what}: `rename.{k}` has no legate equivalent"));
                    continue;
                }
                if k == "headers" && name.eq_ignore_ascii_case("host") {
                    cx.problem(
                        &e_at,
                        format!("{what}: the Host header is the route's `preserve_host`/service host in legate"),
                    );
                    continue;
                }
                let key = match section {
                    "replace" => "replace",
                    "add" => "default",
                    _ => "append",
                };
                changes.sets.entry(key).or_default().insert(s(name), s(value));
            }
        }
    }
    Transformed { headers: headers.into_policy(cx, at, what), query: query.into_policy(cx, at, what), uri }
}

/// What a transformer does to a request or response.
struct Transformed {
    /// legate's `request_headers` / `response_headers`.
    headers: Option<Value>,
    /// legate's `request_query`.
    query: Option<Value>,
    /// request-transformer's `replace.uri`.
    uri: Option<String>,
}

/// A transformer's changes to headers or to the query, by legate key.
#[derive(Default)]
struct Changes {
    sets: BTreeMap<&'static str, Mapping>,
    remove: Vec<Value>,
}

impl Changes {
    /// As legate writes them: a name both replaced (where present) and
    /// added (where absent) is set either way.
    fn into_policy(mut self, cx: &mut Ctx<'_>, at: &YamlPath, what: &str) -> Option<Value> {
        let replaced: Vec<Value> = self.sets.get("replace").map(|m| m.keys().cloned().collect()).unwrap_or_default();
        for name in replaced {
            let Some(value) = self.sets.get_mut("default").and_then(|m| m.remove(&name)) else { continue };
            let replaced = self.sets.get_mut("replace").and_then(|m| m.remove(&name));
            if replaced.as_ref() != Some(&value) {
                let name = name.as_str().unwrap_or_default();
                cx.problem(
                    at,
                    format!("{what}: `{name}` is added and replaced with different values; legate sets one value"),
                );
            }
            self.sets.entry("add").or_default().insert(name, value);
        }
        let mut out = vec![];
        for key in ["add", "default", "replace", "append"] {
            if let Some(m) = self.sets.remove(key).filter(|m| !m.is_empty()) {
                out.push((key, Value::Mapping(m)));
            }
        }
        if !self.remove.is_empty() {
            out.push(("remove", Value::Sequence(self.remove)));
        }
        (!out.is_empty()).then(|| map(out))
    }
}

/// `allow` / `deny` (`whitelist` / `blacklist` in Kong 1.x).
fn ip_restriction(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath, what: &str) -> Option<Value> {
    cx.only(what, c, at, &["allow", "deny", "whitelist", "blacklist"], &[]);
    let allow: Vec<Value> = strings(c, "allow").into_iter().chain(strings(c, "whitelist")).map(|x| s(&x)).collect();
    let deny: Vec<Value> = strings(c, "deny").into_iter().chain(strings(c, "blacklist")).map(|x| s(&x)).collect();
    if allow.is_empty() && deny.is_empty() {
        cx.problem(at, format!("{what}: needs `allow` or `deny`"));
        return None;
    }
    let mut out = vec![];
    if !allow.is_empty() {
        out.push(("allow", Value::Sequence(allow)));
    }
    if !deny.is_empty() {
        out.push(("deny", Value::Sequence(deny)));
    }
    Some(map(out))
}

/// The methods Kong's cors plugin allows when it lists none.
const KONG_CORS_METHODS: &[&str] = &["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

/// One of Kong's cors `origins` as a legate origin. Kong reads an entry
/// holding anything but `[A-Za-z0-9.:/-]` as a regex, anchored at both ends
/// (a `^` or `$` written is kept as one), over the request origin's host
/// when the entry has no `:`, else over the whole `scheme://host[:port]`
/// (kong/plugins/cors/handler.lua, `configure_origin`); legate's regexes
/// match the whole Origin header.
fn kong_origin(entry: &str) -> Value {
    let plain = entry.chars().all(|c| c.is_ascii_alphanumeric() || ".:/-".contains(c));
    if plain {
        return s(entry);
    }
    let body = entry.strip_prefix('^').unwrap_or(entry);
    let body = body.strip_suffix('$').unwrap_or(body);
    let regex = if entry.contains(':') {
        format!("(?:{body})")
    } else {
        format!("[A-Za-z][A-Za-z0-9+.-]*://(?:{body})(?::[0-9]+)?")
    };
    map(vec![("regex", s(&regex))])
}

fn cors(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath, what: &str) -> Option<Value> {
    cx.only(
        what,
        c,
        at,
        &["origins", "methods", "headers", "exposed_headers", "credentials", "max_age"],
        &[("preflight_continue", false.into()), ("private_network", false.into())],
    );
    // With credentials, Kong answers `*` with the request's own Origin
    // (browsers refuse `*` then); a regex taking every origin does that.
    let credentials = get(c, "credentials").and_then(Value::as_bool) == Some(true);
    let origins = strings(c, "origins");
    let origins: Vec<Value> = if origins.is_empty() || origins.iter().any(|o| o == "*") {
        vec![if credentials { map(vec![("regex", s(".*"))]) } else { s("*") }]
    } else {
        origins.iter().map(|o| kong_origin(o)).collect()
    };
    let mut out = vec![("origins", Value::Sequence(origins))];
    // Kong's defaults: every method, and a preflight's requested headers
    // echoed (legate's `*`).
    let methods = strings(c, "methods");
    let methods =
        if methods.is_empty() { KONG_CORS_METHODS.iter().map(|m| (*m).to_owned()).collect() } else { methods };
    out.push(("methods", Value::Sequence(methods.iter().map(|x| s(x)).collect())));
    let headers = strings(c, "headers");
    let headers = if headers.is_empty() { vec!["*".to_owned()] } else { headers };
    out.push(("headers", Value::Sequence(headers.iter().map(|x| s(x)).collect())));
    let exposed = strings(c, "exposed_headers");
    if !exposed.is_empty() {
        out.push(("expose_headers", Value::Sequence(exposed.iter().map(|x| s(x)).collect())));
    }
    if let Some(n) = get(c, "max_age").and_then(Value::as_u64) {
        out.push(("max_age", s(&format!("{n}s"))));
    }
    if credentials {
        out.push(("credentials", true.into()));
    }
    Some(map(out))
}

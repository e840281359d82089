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
    /// The names of the config's upstreams (which legate cannot convert yet).
    upstreams: Vec<String>,
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
        groups: BTreeMap::new(),
        key_sets: Distinct::default(),
        service_paths: BTreeMap::new(),
        legacy_paths: matches!(get_str(doc, "_format_version"), Some("1.1" | "2.1")),
        kong_services: list(doc, "services").iter().filter_map(|v| get_str(v, "name").map(str::to_owned)).collect(),
        upstreams: list(doc, "upstreams").iter().filter_map(|v| get_str(v, "name").map(str::to_owned)).collect(),
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
            "acls",
            "jwt_secrets",
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
    if !auth.is_empty() {
        policy.insert(s("auth"), map(auth));
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
    known.extend(["username", "custom_id", "jwt_secrets", "keyauth_credentials", "acls"]);
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
const CREDENTIALS: &[(&str, Credential)] =
    &[("keyauth_credentials", keyauth_credential), ("acls", acl_group), ("jwt_secrets", jwt_secret)];

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
    if cx.upstreams.contains(&host) {
        // Kong balances over the upstream's targets; a DNS lookup of the
        // upstream's name would reach nothing.
        let key = if get(v, "url").is_some() { "url" } else { "host" };
        cx.problem(
            &at.key(key),
            format!("{entity}: its host is the upstream `{host}`, and upstreams have no legate equivalent yet"),
        );
        return None;
    }
    let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
    let ms = |k: &str| get(v, k).and_then(Value::as_u64).unwrap_or(60_000);
    let duration = |ms: u64| if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") };
    let mut out = vec![
        ("name", s(name)),
        ("url", s(&format!("{scheme}://{host}:{port}"))),
        ("connect_timeout", s(&duration(ms("connect_timeout")))),
        // Kong's read and write timeouts bound the exchange; legate has one timeout for it.
        ("timeout", s(&duration(ms("read_timeout").max(ms("write_timeout"))))),
    ];
    // legate checks an https service's certificate unless told not to;
    // Kong's `tls_verify: false` is that. (Left unset, Kong follows nginx's
    // `proxy_ssl_verify`, off by default: legate checks.)
    if scheme == "https" && get(v, "tls_verify").and_then(Value::as_bool) == Some(false) {
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
    let Some(service) = service else {
        cx.problem(at, format!("{entity}: a route without a service has no legate equivalent"));
        cx.out.dropped.push((at.clone(), entity));
        return;
    };
    if !cx.services.iter().any(|(n, _, _)| n == service) {
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

    let service_host = cx.services.iter().find(|(n, _, _)| n == service).and_then(|(_, v, _)| {
        v.get("url")
            .and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned))
    });
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
    let settings = route_settings(cx, &plugins);
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
        let mut out = vec![
            ("name", s(&route_name)),
            ("listener", s(LISTENER)),
            ("match", conditions(path_match)),
            ("service", s(service)),
        ];
        // Kong's upstream path: the service's path, then the request path
        // with the matched prefix cut off when strip_path (the default).
        let written_base = cx.service_paths.get(service).cloned();
        let base = written_base.as_deref().map(|b| b.trim_end_matches('/').to_owned());
        let exact = (!p.starts_with('~')).then(|| exact_path_upstream(p, strip, written_base.as_deref())).flatten();
        let mut rewrite = vec![];
        if p.starts_with('~') {
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
        if !preserve_host {
            if let Some(h) = &service_host {
                rewrite.push(("host", s(h)));
            }
        }
        let host_rewrite: Vec<(&'static str, Value)> = rewrite.iter().filter(|(k, _)| *k == "host").cloned().collect();
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
            if !has_jwt && !plugins.contains_key("key-auth") {
                cx.problem(
                    &p.at,
                    format!("{what}: needs the jwt or key-auth plugin on the same route to know the consumer"),
                );
            }
            Some((allow, deny))
        }
    };
    if has_jwt && plugins.contains_key("key-auth") {
        let at = plugins.get("key-auth").map(|p| p.at.clone()).unwrap_or_default();
        cx.problem(
            &at,
            "plugins `jwt` and `key-auth` on one route: legate takes one kind of credential per route".to_owned(),
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
                    &["claims_to_verify", "key_claim_name", "header_names", "uri_param_names", "run_on_preflight"],
                    &[
                        // The HS keys are converted as written; base64 ones would need decoding first.
                        ("secret_is_base64", false.into()),
                        ("maximum_expiration", 0.into()),
                        ("cookie_names", Value::Sequence(vec![])),
                        ("anonymous", Value::Null),
                    ],
                );
                if get_str(c, "key_claim_name").is_some_and(|k| k != "iss") {
                    cx.problem(&at.key("key_claim_name"), format!("{what}: legate matches keys by `iss` only"));
                }
                let headers = strings(c, "header_names");
                if headers.len() > 1 || headers.first().is_some_and(|h| !h.eq_ignore_ascii_case("authorization")) {
                    cx.problem(
                        &at.key("header_names"),
                        format!("{what}: legate reads tokens from the Authorization header"),
                    );
                }
                let names = jwt_providers(cx, &at, &what, &admitted, narrowed);
                out[0] = ("auth", Value::Sequence(names.iter().map(|n| s(n)).collect()));
            }
            "rate-limiting" => {
                if let Some(name) = rate_limit(cx, p, has_jwt, plugins.contains_key("key-auth")) {
                    out[1] = ("rate_limit", s(&name));
                }
            }
            "request-transformer" | "response-transformer" => {
                let key = if p.name == "request-transformer" { "request_headers" } else { "response_headers" };
                if let Some(ops) = transformer(cx, c, &at, &what) {
                    out.push((key, ops));
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
            "acl" => {}
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

/// One legate JWT provider per consumer credential (issuer = the credential's `key`).
fn jwt_providers(
    cx: &mut Ctx<'_>,
    at: &YamlPath,
    what: &str,
    admitted: &dyn Fn(&str) -> bool,
    narrowed: bool,
) -> Vec<String> {
    if !cx.jwt_secrets.iter().any(|(_, _, consumer)| admitted(consumer)) {
        let which = if narrowed { " that the route's acl admits" } else { "" };
        cx.problem(at, format!("{what}: no consumer{which} has jwt_secrets, so no token could pass"));
        return Vec::new();
    }
    let mut names = Vec::new();
    for (i, (iss, jwks, consumer)) in cx.jwt_secrets.clone().into_iter().enumerate() {
        if !admitted(&consumer) {
            continue;
        }
        let name = format!("kong-jwt-{}", i + 1);
        if !cx.providers.iter().any(|p| p.get("name").and_then(Value::as_str) == Some(name.as_str())) {
            cx.providers.push(map(vec![
                ("name", s(&name)),
                ("issuer", s(&iss)),
                ("jwks", map(vec![("inline", s(&jwks))])),
                ("claims_to_headers", map(vec![("iss", s("X-Credential-Identifier"))])),
                ("forward_token", true.into()),
            ]));
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

fn rate_limit(cx: &mut Ctx<'_>, p: &Plugin<'_>, has_jwt: bool, has_key_auth: bool) -> Option<String> {
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
        "consumer" | "credential" if has_key_auth => map(vec![("header", s("X-Consumer-Username"))]),
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

/// `add.headers` / `remove.headers` of a request- or response-transformer.
fn transformer(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath, what: &str) -> Option<Value> {
    cx.only(what, c, at, &["add", "remove", "append", "replace", "rename"], &[]);
    let mut add = Mapping::new();
    let mut remove = Vec::new();
    for (section, fields) in [("add", c.get("add")), ("remove", c.get("remove"))] {
        let Some(fields) = fields.and_then(Value::as_mapping) else { continue };
        for (k, v) in fields {
            let Some(k) = k.as_str() else { continue };
            let empty = v.as_sequence().is_none_or(Vec::is_empty);
            if k != "headers" {
                if !empty {
                    cx.problem(
                        &at.key(section.to_owned()).key(k.to_owned()),
                        format!("{what}: `{section}.{k}` has no legate equivalent"),
                    );
                }
                continue;
            }
            for (i, h) in v.as_sequence().into_iter().flatten().enumerate() {
                let h = h.as_str().unwrap_or_default();
                if section == "remove" {
                    remove.push(s(h));
                } else if let Some((name, value)) = h.split_once(':') {
                    add.insert(s(name.trim()), s(value.trim_start()));
                } else {
                    cx.problem(
                        &at.key(section.to_owned()).key(k.to_owned()).index(i),
                        format!("{what}: `{h}` is not NAME:VALUE"),
                    );
                }
            }
        }
    }
    for section in ["append", "replace", "rename"] {
        if let Some(fields) = c.get(section).and_then(Value::as_mapping) {
            for (k, v) in fields {
                if v.as_sequence().is_some_and(|s| !s.is_empty()) || (!v.is_null() && !v.is_sequence()) {
                    let k = k.as_str().unwrap_or_default();
                    cx.problem(
                        &at.key(section.to_owned()).key(k.to_owned()),
                        format!("{what}: `{section}.{k}` has no legate equivalent"),
                    );
                }
            }
        }
    }
    let mut out = vec![];
    if !add.is_empty() {
        out.push(("add", Value::Mapping(add)));
    }
    if !remove.is_empty() {
        out.push(("remove", Value::Sequence(remove)));
    }
    (!out.is_empty()).then(|| map(out))
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

fn cors(cx: &mut Ctx<'_>, c: &Value, at: &YamlPath, what: &str) -> Option<Value> {
    cx.only(
        what,
        c,
        at,
        &["origins", "methods", "headers", "exposed_headers", "credentials", "max_age"],
        &[("preflight_continue", false.into()), ("private_network", false.into())],
    );
    let origins = strings(c, "origins");
    let origins: Vec<Value> = if origins.is_empty() { vec![s("*")] } else { origins.iter().map(|o| s(o)).collect() };
    // With credentials, Kong answers `*` with the request's own Origin
    // (browsers refuse `*` then); a regex taking every origin does that.
    let credentials = get(c, "credentials").and_then(Value::as_bool) == Some(true);
    let origins: Vec<Value> = origins
        .into_iter()
        .map(|o| if credentials && o.as_str() == Some("*") { map(vec![("regex", s(".*"))]) } else { o })
        .collect();
    let mut out = vec![("origins", Value::Sequence(origins))];
    for (k, legate) in [("methods", "methods"), ("headers", "headers"), ("exposed_headers", "expose_headers")] {
        let v = strings(c, k);
        if !v.is_empty() {
            out.push((legate, Value::Sequence(v.iter().map(|x| s(x)).collect())));
        }
    }
    if let Some(n) = get(c, "max_age").and_then(Value::as_u64) {
        out.push(("max_age", s(&format!("{n}s"))));
    }
    if credentials {
        out.push(("credentials", true.into()));
    }
    Some(map(out))
}

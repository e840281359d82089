//! `auth.jwt` providers, and `auth:` references on defaults, services and
//! routes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use super::services::parse_url;
use super::{check_name, duration, header_name_ok, insert_unique, resolve_names, Errors, Named, RefWords};
use crate::policy::jwks;
use crate::policy::model::{ApiKeySet, Auth, BasicUserSet, Jwks, JwtProvider, KeySource, RemoteJwks, TokenSource};
use crate::policy::raw;
use crate::policy::source::Origin;

const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
const DEFAULT_JWKS_CACHE: Duration = Duration::from_secs(300);

/// The providers and API key sets, with the names written (valid or not)
/// and the files read.
pub(super) struct Providers<'a> {
    pub(super) valid: BTreeMap<String, JwtProvider>,
    pub(super) api_keys: BTreeMap<String, ApiKeySet>,
    pub(super) basic: BTreeMap<String, BasicUserSet>,
    pub(super) defined: BTreeSet<&'a str>,
    pub(super) read_files: Vec<PathBuf>,
}

impl Named for raw::ApiKeySet {
    fn name(&self) -> &str {
        &self.name
    }
}

/// `auth.api_keys[]`.
fn check_api_key_set(errs: &mut Errors<'_>, o: &Origin, s: &raw::ApiKeySet) -> Option<ApiKeySet> {
    let raw::ApiKeySet { name, keys, from, client_header, forward_key } = s;
    let before = errs.list.len();
    check_name(errs, o, name, "API key set");
    let keys = keys.clone().unwrap_or_default();
    if keys.is_empty() {
        errs.at(&o.key("name"), format!("API key set `{name}` has no `keys` (client name: key)"));
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (client, key) in &keys {
        if key.trim().is_empty() {
            errs.at(&o.key("keys").key(client.clone()), format!("the key of client `{client}` is empty"));
        } else if let Some(other) = seen.insert(key.as_str(), client.as_str()) {
            errs.at(&o.key("keys").key(client.clone()), format!("clients `{other}` and `{client}` have the same key"));
        }
    }
    let sources: Vec<&raw::KeySource> = match from {
        None => Vec::new(),
        Some(raw::KeyFrom::One(s)) => vec![s],
        Some(raw::KeyFrom::Many(list)) => list.iter().collect(),
    };
    let mut out_from = Vec::new();
    for (i, src) in sources.iter().enumerate() {
        let at = if matches!(from, Some(raw::KeyFrom::Many(_))) { o.key("from").index(i) } else { o.key("from") };
        match (&src.header, &src.query) {
            (Some(h), None) if header_name_ok(h) => out_from.push(KeySource::Header(h.to_ascii_lowercase())),
            (Some(h), None) => errs.at(&at.key("header"), format!("`{h}` is not a valid header name")),
            (None, Some(q)) if !q.is_empty() => out_from.push(KeySource::Query(q.clone())),
            _ => errs.at(&at, "a key source is { header: NAME } or { query: NAME }"),
        }
    }
    if out_from.is_empty() && from.is_none() {
        out_from.push(KeySource::Header("x-api-key".to_owned()));
    }
    if let Some(h) = client_header {
        if !header_name_ok(h) {
            errs.at(&o.key("client_header"), format!("`{h}` is not a valid header name"));
        } else if out_from.iter().any(|s| matches!(s, KeySource::Header(k) if k.eq_ignore_ascii_case(h))) {
            errs.at(
                &o.key("client_header"),
                "client_header is stripped from every request, so it cannot carry the key too",
            );
        }
    }
    (errs.list.len() == before).then(|| ApiKeySet {
        name: name.clone(),
        keys,
        from: out_from,
        client_header: client_header.clone(),
        forward_key: forward_key.unwrap_or(false),
    })
}

impl Named for raw::BasicUserSet {
    fn name(&self) -> &str {
        &self.name
    }
}

/// `auth.basic[]`.
fn check_basic_set(errs: &mut Errors<'_>, o: &Origin, s: &raw::BasicUserSet) -> Option<BasicUserSet> {
    let raw::BasicUserSet { name, users, client_header, forward_credentials } = s;
    let before = errs.list.len();
    check_name(errs, o, name, "basic user set");
    let users = users.clone().unwrap_or_default();
    if users.is_empty() {
        errs.at(&o.key("name"), format!("basic user set `{name}` has no `users` (user name: {{SHA}}hash)"));
    }
    for (user, hash) in &users {
        let at = o.key("users").key(user.clone());
        // Envoy takes htpasswd's SHA-1 form only: `{SHA}` and 28 base64 characters.
        let sha = hash.strip_prefix("{SHA}").and_then(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok().filter(|d| d.len() == 20)
        });
        if user.is_empty() || user.contains(':') {
            errs.at_key(&at, format!("`{user}` cannot be a user name (empty, or with a `:`)"));
        } else if sha.is_none() {
            errs.at(
                &at,
                format!("the password of `{user}` is not `{{SHA}}` and a base64 SHA-1 (what `htpasswd -nbs` prints)"),
            );
        }
    }
    if let Some(h) = client_header.as_ref().filter(|h| !header_name_ok(h) || h.eq_ignore_ascii_case("authorization")) {
        errs.at(&o.key("client_header"), format!("`{h}` cannot carry the user name"));
    }
    (errs.list.len() == before).then(|| BasicUserSet {
        name: name.clone(),
        users,
        client_header: client_header.clone(),
        forward_credentials: forward_credentials.unwrap_or(false),
    })
}

impl Named for raw::JwtProvider {
    fn name(&self) -> &str {
        &self.name
    }
}

pub(super) fn check_providers<'a>(
    errs: &mut Errors<'_>,
    all: &'a [(Origin, raw::JwtProvider)],
    key_sets: &'a [(Origin, raw::ApiKeySet)],
    basic: &'a [(Origin, raw::BasicUserSet)],
) -> Providers<'a> {
    let mut out = Providers {
        valid: BTreeMap::new(),
        api_keys: BTreeMap::new(),
        basic: BTreeMap::new(),
        defined: all
            .iter()
            .map(|(_, p)| p.name.as_str())
            .chain(key_sets.iter().map(|(_, s)| s.name.as_str()))
            .chain(basic.iter().map(|(_, s)| s.name.as_str()))
            .collect(),
        read_files: Vec::new(),
    };
    let jwt_names = || all.iter().map(|(po, p)| (po, p.name.as_str(), "a JWT provider"));
    for (o, s) in basic {
        let key_set_names = key_sets.iter().map(|(ko, k)| (ko, k.name.as_str(), "an API key set"));
        if named_by_another_kind(errs, o, &s.name, "a basic user set", jwt_names().chain(key_set_names)) {
            continue;
        }
        if let Some(set) = check_basic_set(errs, o, s) {
            insert_unique(errs, &mut out.basic, o, set.name.clone(), set, "basic user set", basic);
        }
    }
    // Envoy's basic auth filter sends the user name in one header per listener.
    let headers: BTreeSet<String> =
        out.basic.values().filter_map(|s| s.client_header.as_ref().map(|h| h.to_ascii_lowercase())).collect();
    if headers.len() > 1 {
        if let Some((o, _)) = basic.iter().find(|(_, s)| s.client_header.is_some()) {
            errs.at(
                &o.key("client_header"),
                "basic user sets must agree on `client_header` (Envoy sends the user name in one header)",
            );
        }
    }
    for (o, s) in key_sets {
        if named_by_another_kind(errs, o, &s.name, "an API key set", jwt_names()) {
            continue;
        }
        if let Some(set) = check_api_key_set(errs, o, s) {
            insert_unique(errs, &mut out.api_keys, o, set.name.clone(), set, "API key set", key_sets);
        }
    }
    for (o, p) in all {
        if let Some(p) = check_provider(errs, o, p, &mut out.read_files) {
            insert_unique(errs, &mut out.valid, o, p.name.clone(), p, "JWT provider", all);
        }
    }
    // A header that carries a token cannot also be set from a claim: every
    // claim header is stripped from requests, which would strip the token.
    let token_headers: Vec<(&str, &str)> = all
        .iter()
        .flat_map(|(_, p)| {
            let sources: Vec<&raw::TokenFrom> = match &p.from {
                None => return vec![("Authorization", p.name.as_str())],
                Some(raw::TokenFromList::One(f)) => vec![f],
                Some(raw::TokenFromList::Many(list)) => list.iter().collect(),
            };
            sources.into_iter().filter_map(|f| Some((f.header.as_deref()?, p.name.as_str()))).collect()
        })
        .collect();
    for (o, p) in all {
        for (claim, header) in p.claims_to_headers.iter().flatten() {
            // Name the provider itself when it is one of those reading this header.
            let owner = token_headers
                .iter()
                .filter(|(h, _)| h.eq_ignore_ascii_case(header))
                .min_by_key(|(_, owner)| *owner != p.name);
            if let Some((_, owner)) = owner {
                errs.at(
                    &o.key("claims_to_headers").key(claim.clone()),
                    format!(
                        "`{header}` carries the token of provider `{owner}`; claim headers are removed from every \
                         request, so it cannot also be set from a claim"
                    ),
                );
            }
        }
    }
    out
}

fn check_provider(
    errs: &mut Errors<'_>,
    o: &Origin,
    p: &raw::JwtProvider,
    read_files: &mut Vec<PathBuf>,
) -> Option<JwtProvider> {
    let raw::JwtProvider {
        name,
        issuer,
        audiences,
        jwks,
        from,
        claims_to_headers,
        clock_skew,
        require_expiration,
        max_lifetime,
        forward_token,
    } = p;
    let before = errs.list.len();
    check_name(errs, o, name, "JWT provider");
    match issuer.as_deref().map(str::trim) {
        None => {
            errs.at(&o.key("name"), format!("JWT provider `{name}` needs an `issuer` (the `iss` its tokens carry)"));
        }
        Some("") => errs.at(&o.key("issuer"), "issuer is empty; give the `iss` value its tokens carry"),
        Some(_) => {}
    }
    for (i, a) in audiences.iter().flatten().enumerate() {
        if a.trim().is_empty() {
            errs.at(&o.key("audiences").index(i), "an audience is empty");
        }
    }
    let jwks = match jwks {
        None => {
            errs.at(&o.key("name"), format!("JWT provider `{name}` needs `jwks` ({{ file | inline | uri }})"));
            None
        }
        Some(j) => check_jwks(errs, &o.key("jwks"), j, read_files),
    };
    let from = match from {
        None => Some(vec![TokenSource::Header { name: "Authorization".into(), prefix: "Bearer ".into() }]),
        Some(raw::TokenFromList::One(f)) => token_source(errs, &o.key("from"), f).map(|s| vec![s]),
        Some(raw::TokenFromList::Many(list)) => {
            if list.is_empty() {
                errs.at(&o.key("from"), "`from` is empty; list where the token may be");
            }
            let sources: Vec<Option<TokenSource>> =
                list.iter().enumerate().map(|(i, f)| token_source(errs, &o.key("from").index(i), f)).collect();
            sources.into_iter().collect::<Option<Vec<_>>>().filter(|s| !s.is_empty())
        }
    };
    let mut claims = BTreeMap::new();
    for (claim, header) in claims_to_headers.iter().flatten() {
        let at = o.key("claims_to_headers").key(claim.clone());
        let lower = header.to_ascii_lowercase();
        if claim.is_empty() {
            errs.at_key(&at, "a claim name is empty");
        } else if !header_name_ok(header) {
            errs.at(&at, format!("`{header}` is not a valid header name"));
        } else if lower == "host" || lower == "content-length" || lower == "transfer-encoding" {
            errs.at(&at, format!("`{header}` cannot be set from a claim"));
        } else if let Some((other, _)) =
            claims.iter().find(|(_, h): &(&String, &String)| h.eq_ignore_ascii_case(header))
        {
            errs.at(&at, format!("claims `{other}` and `{claim}` both set `{header}`"));
        } else {
            claims.insert(claim.clone(), header.clone());
        }
    }
    let skew = super::whole_seconds(errs, &o.key("clock_skew"), clock_skew.as_ref(), "clock_skew")
        .map(|d| d.unwrap_or(DEFAULT_CLOCK_SKEW));
    if skew.is_some_and(|d| d < Duration::from_secs(1)) {
        // Envoy counts whole seconds and reads 0 as its default, 60s.
        errs.at(&o.key("clock_skew"), "clock_skew must be at least 1s (Envoy would read 0 as 60s)");
    }
    let max_lifetime = super::whole_seconds(errs, &o.key("max_lifetime"), max_lifetime.as_ref(), "max_lifetime");
    if max_lifetime.flatten().is_some_and(|d| d.is_zero()) {
        errs.at(&o.key("max_lifetime"), "max_lifetime must be at least 1s (0 would refuse every token)");
    }
    if errs.list.len() > before {
        return None;
    }
    Some(JwtProvider {
        name: name.clone(),
        issuer: issuer.clone()?.trim().to_owned(),
        audiences: audiences.clone().unwrap_or_default(),
        jwks: jwks?,
        from: from?,
        claims_to_headers: claims,
        clock_skew: skew?,
        require_expiration: require_expiration.unwrap_or(false),
        max_lifetime: max_lifetime?,
        forward_token: forward_token.unwrap_or(false),
    })
}

/// Whether `name`, of a `what` at `o`, is already the name of a provider of
/// another kind among `earlier` (where, its name, what it is): reported at
/// `o` if so, naming where the other is.
fn named_by_another_kind<'a>(
    errs: &mut Errors<'_>,
    o: &Origin,
    name: &str,
    what: &str,
    mut earlier: impl Iterator<Item = (&'a Origin, &'a str, &'static str)>,
) -> bool {
    let Some((at, _, other)) = earlier.find(|(_, n, _)| *n == name) else { return false };
    let msg = format!("`{name}` names both {other} (at {}) and {what}", errs.place(&at.key("name")));
    errs.at(&o.key("name"), msg);
    true
}

/// One place a token may be (`f` at `o`).
fn token_source(errs: &mut Errors<'_>, f: &Origin, from: &raw::TokenFrom) -> Option<TokenSource> {
    let raw::TokenFrom { header, prefix, query } = from;
    match (header, prefix, query) {
        (Some(h), _, None) if header_name_ok(h) => {
            Some(TokenSource::Header { name: h.clone(), prefix: prefix.clone().unwrap_or_default() })
        }
        (Some(h), _, None) => {
            errs.at(&f.key("header"), format!("`{h}` is not a valid header name"));
            None
        }
        (None, None, Some(q)) if !q.is_empty() => Some(TokenSource::Query(q.clone())),
        (None, None, Some(_)) => {
            errs.at(&f.key("query"), "the query parameter name is empty");
            None
        }
        (None, Some(_), Some(_)) => {
            errs.at(&f.key("prefix"), "`prefix` goes with `header`, not `query`");
            None
        }
        _ => {
            errs.at(f, "`from` needs exactly one of `header` (with an optional `prefix`) or `query`");
            None
        }
    }
}

fn check_jwks(errs: &mut Errors<'_>, o: &Origin, j: &raw::Jwks, read_files: &mut Vec<PathBuf>) -> Option<Jwks> {
    let raw::Jwks { file, inline, uri, cache } = j;
    if cache.is_some() && uri.is_none() {
        errs.at(&o.key("cache"), "`cache` applies to a `uri` JWKS only");
    }
    match (file, inline, uri) {
        (Some(f), None, None) => {
            let path = errs.files[o.file].dir.join(f);
            read_files.push(path.clone());
            let at = o.key("file");
            match std::fs::read_to_string(&path) {
                Err(e) => {
                    errs.at(&at, format!("cannot read JWKS file `{}`: {e}", path.display()));
                    None
                }
                Ok(text) => match jwks::check(&text) {
                    Ok((compact, _)) => Some(Jwks::Local(compact)),
                    Err(why) => {
                        errs.at(&at, format!("JWKS file `{}` {why}", path.display()));
                        None
                    }
                },
            }
        }
        (None, Some(text), None) => match jwks::check(text) {
            Ok((compact, _)) => Some(Jwks::Local(compact)),
            Err(why) => {
                errs.at(&o.key("inline"), format!("the inline JWKS {why}"));
                None
            }
        },
        (None, None, Some(u)) => {
            let at = o.key("uri");
            let (endpoint, tls) = parse_url(errs, &at, u, true)?;
            let cache = duration(errs, &o.key("cache"), cache.as_ref())?.unwrap_or(DEFAULT_JWKS_CACHE);
            if cache < Duration::from_secs(1) {
                errs.at(&o.key("cache"), "cache must be at least 1s");
                return None;
            }
            Some(Jwks::Remote(RemoteJwks { uri: u.clone(), endpoint, tls, cache }))
        }
        _ => {
            errs.at(o, "`jwks` needs exactly one of `file`, `inline` or `uri`");
            None
        }
    }
}

/// An `auth:` value at `o`: `none`, a provider, or a list of which any one
/// suffices. `None` when it names something undefined (reported) or a
/// provider with errors of its own.
pub(super) fn resolve(errs: &mut Errors<'_>, o: &Origin, r: &raw::NameRef, providers: &Providers<'_>) -> Option<Auth> {
    let valid: Vec<&str> = providers
        .valid
        .keys()
        .chain(providers.api_keys.keys())
        .chain(providers.basic.keys())
        .map(String::as_str)
        .collect();
    let words = RefWords {
        noun: "auth provider",
        plural: "providers",
        key: "auth",
        home: "`auth: jwt:`, `auth: api_keys:` or `auth: basic:`",
    };
    let Some(names) = resolve_names(errs, o, r, &valid, &providers.defined, &words)? else { return Some(Auth::Public) };
    let keys = names.iter().filter(|n| providers.api_keys.contains_key(*n)).count();
    let basic = names.iter().filter(|n| providers.basic.contains_key(*n)).count();
    if keys == 0 && basic == 0 {
        Some(Auth::AnyOf(names))
    } else if keys == names.len() {
        Some(Auth::ApiKeys(names))
    } else if basic == names.len() {
        Some(Auth::Basic(names))
    } else {
        errs.at(o, "an `auth` list takes one kind: JWT providers, API key sets or basic user sets");
        None
    }
}

//! The keys each part of a policy file allows, for "unknown key" messages
//! with a "did you mean" hint.

use super::locate::{Seg, YamlPath};

const TOP: &[&str] = &["listeners", "services", "routes", "defaults", "auth", "rate_limits", "aggregations"];
const LISTENER: &[&str] = &["name", "port", "address", "hosts", "fleets", "tls", "http_redirect_port"];
const TLS: &[&str] = &["cert", "key", "certificates", "min_version", "alpn"];
const TLS_CERT: &[&str] = &["cert", "key", "hosts"];
const SERVICE: &[&str] = &[
    "name",
    "url",
    "endpoints",
    "connect_timeout",
    "timeout",
    "idle_timeout",
    "max_request_body",
    "load_balancing",
    "hash_key",
    "retries",
    "circuit_breaker",
    "outlier_detection",
    "health_check",
    "request_headers",
    "response_headers",
    "auth",
    "rate_limit",
    "ip_restriction",
    "tls",
];
const SERVICE_TLS: &[&str] = &["ca", "server_name", "verify"];
const RETRIES: &[&str] = &["attempts", "on", "per_try_timeout", "methods"];
const CIRCUIT_BREAKER: &[&str] = &["max_connections", "max_pending_requests", "max_requests", "max_retries"];
const OUTLIER: &[&str] = &["consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent"];
const HEALTH_CHECK: &[&str] = &["path", "interval", "timeout", "unhealthy_threshold", "healthy_threshold"];
const HASH_KEY: &[&str] = &["header"];
const ROUTE: &[&str] = &[
    "name",
    "listener",
    "match",
    "service",
    "split",
    "respond",
    "rewrite",
    "timeout",
    "idle_timeout",
    "max_request_body",
    "request_headers",
    "request_query",
    "request_id",
    "response_headers",
    "auth",
    "rate_limit",
    "cors",
    "ip_restriction",
];
const CORS: &[&str] = &["origins", "methods", "headers", "expose_headers", "max_age", "credentials"];
const MATCH: &[&str] = &["prefix", "path", "regex", "methods", "headers", "query", "hosts"];
const VALUE_MATCH: &[&str] = &["exact", "present", "regex"];
const SPLIT: &[&str] = &["service", "weight"];
const RESPOND: &[&str] = &["status", "message"];
const REQUEST_ID: &[&str] = &["header", "echo"];
const REWRITE: &[&str] = &["prefix", "regex", "substitution", "host", "auto_host"];
const ENDPOINT: &[&str] = &["address", "weight"];
const HEADER_OPS: &[&str] = &["add", "default", "replace", "append", "remove"];
const DEFAULTS: &[&str] =
    &["request_headers", "response_headers", "auth", "rate_limit", "ip_restriction", "access_log", "tracing"];
const IP_RESTRICTION: &[&str] = &["allow", "deny"];
const RATE_LIMIT: &[&str] = &["name", "limits", "key", "scope", "headers", "shadow", "fail_closed"];
const RATE_KEY: &[&str] = &["header", "claim"];
const AUTH: &[&str] = &["jwt", "api_keys", "basic"];
const BASIC: &[&str] = &["name", "users", "client_header", "forward_credentials"];
const API_KEYS: &[&str] = &["name", "keys", "from", "client_header", "forward_key"];
const KEY_FROM: &[&str] = &["header", "query"];
const JWT: &[&str] = &[
    "name",
    "issuer",
    "audiences",
    "jwks",
    "from",
    "claims_to_headers",
    "clock_skew",
    "require_expiration",
    "max_lifetime",
    "forward_token",
];
const JWKS: &[&str] = &["file", "inline", "uri", "cache"];
const TOKEN_FROM: &[&str] = &["header", "prefix", "query"];

const AGGREGATION: &[&str] = &["name", "listener", "path", "methods", "auth", "rate_limit", "timeout", "calls"];
const CALL: &[&str] = &["service", "path", "pick", "default", "timeout"];
const TRACING: &[&str] = &["collector", "service_name", "sampling"];
const ACCESS_LOG: &[&str] = &["format", "path"];

/// What the mapping at `parent` is, for messages, with its allowed keys.
fn context(parent: &[Seg]) -> Option<(&'static str, &'static [&'static str])> {
    use Seg::{Index as I, Key as K};
    let k = |s: &Seg, want: &str| matches!(s, K(x) if x == want);
    Some(match parent {
        [] => ("the top level", TOP),
        [l, I(_)] if k(l, "listeners") => ("a listener", LISTENER),
        [l, I(_), t] if k(l, "listeners") && k(t, "tls") => ("tls", TLS),
        [l, I(_), t, c, I(_)] if k(l, "listeners") && k(t, "tls") && k(c, "certificates") => {
            ("a certificate", TLS_CERT)
        }
        [s, I(_)] if k(s, "services") => ("a service", SERVICE),
        [s, I(_), e, I(_)] if k(s, "services") && k(e, "endpoints") => ("an endpoint", ENDPOINT),
        [s, I(_), x] if k(s, "services") => match x {
            K(x) if x == "retries" => ("retries", RETRIES),
            K(x) if x == "circuit_breaker" => ("circuit_breaker", CIRCUIT_BREAKER),
            K(x) if x == "outlier_detection" => ("outlier_detection", OUTLIER),
            K(x) if x == "health_check" => ("health_check", HEALTH_CHECK),
            K(x) if x == "hash_key" => ("hash_key", HASH_KEY),
            K(x) if x == "tls" => ("a service's tls", SERVICE_TLS),
            _ => return None,
        },
        [r, I(_)] if k(r, "routes") => ("a route", ROUTE),
        [r, I(_), c] if k(r, "routes") && k(c, "cors") => ("cors", CORS),
        [r, I(_), c, o, I(_)] if k(r, "routes") && k(c, "cors") && k(o, "origins") => ("an origin", VALUE_MATCH),
        [r, I(_), m] if k(r, "routes") && k(m, "match") => ("a route match", MATCH),
        [r, I(_), m, h, K(_)] if k(r, "routes") && k(m, "match") && (k(h, "headers") || k(h, "query")) => {
            ("a value match", VALUE_MATCH)
        }
        [r, I(_), s, I(_)] if k(r, "routes") && k(s, "split") => ("a split entry", SPLIT),
        [r, I(_), s] if k(r, "routes") && k(s, "respond") => ("respond", RESPOND),
        [r, I(_), s] if k(r, "routes") && k(s, "request_id") => ("request_id", REQUEST_ID),
        [r, I(_), w] if k(r, "routes") && k(w, "rewrite") => ("a rewrite", REWRITE),
        [.., h] if k(h, "request_headers") || k(h, "response_headers") => ("a header change", HEADER_OPS),
        [.., h] if k(h, "request_query") => ("a query change", HEADER_OPS),
        [.., h] if k(h, "ip_restriction") => ("ip_restriction", IP_RESTRICTION),
        [d] if k(d, "defaults") => ("defaults", DEFAULTS),
        [d, t] if k(d, "defaults") && k(t, "tracing") => ("tracing", TRACING),
        [d, a] if k(d, "defaults") && k(a, "access_log") => ("access_log", ACCESS_LOG),
        [a] if k(a, "auth") => ("auth", AUTH),
        [a, I(_)] if k(a, "aggregations") => ("an aggregation", AGGREGATION),
        [a, I(_), c, K(_)] if k(a, "aggregations") && k(c, "calls") => ("a call", CALL),
        [r, I(_)] if k(r, "rate_limits") => ("a rate limit", RATE_LIMIT),
        [r, I(_), kk] if k(r, "rate_limits") && k(kk, "key") => ("a rate-limit key", RATE_KEY),
        [a, j, I(_)] if k(a, "auth") && k(j, "jwt") => ("a JWT provider", JWT),
        [a, j, I(_)] if k(a, "auth") && k(j, "api_keys") => ("an API key set", API_KEYS),
        [a, j, I(_)] if k(a, "auth") && k(j, "basic") => ("a basic user set", BASIC),
        [a, j, I(_), f, ..] if k(a, "auth") && k(j, "api_keys") && k(f, "from") => ("from", KEY_FROM),
        [a, j, I(_), w] if k(a, "auth") && k(j, "jwt") && k(w, "jwks") => ("jwks", JWKS),
        [a, j, I(_), f] if k(a, "auth") && k(j, "jwt") && k(f, "from") => ("from", TOKEN_FROM),
        _ => return None,
    })
}

/// The message for an unknown key at `path`.
pub(crate) fn unknown_key_message(path: &YamlPath) -> String {
    let Some((Seg::Key(key), parent)) = path.0.split_last() else {
        return format!("unexpected entry at {path}");
    };
    let Some((what, allowed)) = context(parent) else {
        return format!("unknown key `{key}`");
    };
    let mut msg = format!("unknown key `{key}` in {what}");
    if let Some(best) = did_you_mean(key, allowed) {
        msg.push_str(&format!("; did you mean `{best}`?"));
    } else {
        msg.push_str(&format!(" (expected one of: {})", allowed.join(", ")));
    }
    msg
}

/// The closest of `options` to `word`, when close enough to be a typo.
pub(crate) fn did_you_mean<'a>(word: &str, options: &[&'a str]) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    options
        .iter()
        .map(|o| (strsim::damerau_levenshtein(&word, &o.to_ascii_lowercase()), *o))
        .filter(|(d, o)| *d <= 2.max(o.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, o)| o)
}

/// Rephrase serde's messages where ours say more.
pub(crate) fn explain_serde(message: &str) -> String {
    message.replace("invalid type: ", "wrong type: ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segs: &[Seg]) -> YamlPath {
        YamlPath(segs.to_vec())
    }

    #[test]
    fn suggests_the_closest_key() {
        let p = path(&[Seg::Key("routes".into()), Seg::Index(0), Seg::Key("servce".into())]);
        assert_eq!(unknown_key_message(&p), "unknown key `servce` in a route; did you mean `service`?");
    }

    #[test]
    fn lists_keys_when_nothing_is_close() {
        let p = path(&[Seg::Key("listeners".into()), Seg::Index(2), Seg::Key("zzzzzzzz".into())]);
        assert!(unknown_key_message(&p).contains("expected one of: name, port"));
    }

    #[test]
    fn call_keys_are_checked() {
        let p = path(&[
            Seg::Key("aggregations".into()),
            Seg::Index(0),
            Seg::Key("calls".into()),
            Seg::Key("user".into()),
            Seg::Key("servic".into()),
        ]);
        assert_eq!(unknown_key_message(&p), "unknown key `servic` in a call; did you mean `service`?");
    }
}

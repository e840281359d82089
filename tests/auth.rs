//! JWT authentication end to end: tokens signed here, verified by stock
//! Envoy with the `jwt_authn` config legate pushes, asserting what a client
//! and the upstream see.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::Duration;

use common::jwt::{self, claims, jwks, Key};
use common::JsonServer;
use common::{free_port, request, Gateway, Resp};
use serde_json::{json, Value};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

const ISSUER: &str = "https://auth.example.com";
const AUDIENCE: &str = "orders-api";
const PARTNER: &str = "https://partner.example.net";

const POLICY: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
  - name: members
    url: http://127.0.0.1:@ALPHA
    auth: main
routes:
  - name: private
    match: { prefix: /private }
    service: alpha
    auth: main
  - name: public
    match: { prefix: /public }
    service: alpha
    auth: none
  - name: either
    match: { prefix: /either }
    service: alpha
    auth: [main, partner]
  - name: by-query
    match: { prefix: /query }
    service: alpha
    auth: byquery
  - name: members
    match: { prefix: /members }
    service: members
  - name: members-open
    match: { prefix: /members/open }
    service: members
    auth: none
  - name: fallback
    match: { prefix: / }
    service: alpha
auth:
  jwt:
    - name: main
      issuer: https://auth.example.com
      audiences: [orders-api]
      jwks: { file: keys/main.json }
      claims_to_headers: { sub: X-User-Id, role: X-User-Role, email: X-User-Email }
    - name: partner
      issuer: https://partner.example.net
      jwks: { inline: '@PARTNER_JWKS' }
      claims_to_headers: { sub: X-Partner-Id }
      clock_skew: 5s
    - name: byquery
      issuer: https://auth.example.com
      jwks: { file: keys/main.json }
      from: { query: access_token }
      forward_token: true
defaults:
  auth: main
"#;

fn policy(listen: u16, alpha: u16, partner_jwks: &str) -> String {
    POLICY
        .replace("@LISTEN", &listen.to_string())
        .replace("@ALPHA", &alpha.to_string())
        .replace("@PARTNER_JWKS", partner_jwks)
}

fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    request(method, url, headers).unwrap_or_else(|e| panic!("{e}"))
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET url` with the token, if any, as a bearer token.
fn get_as(url: &str, token: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let auth = token.map(bearer);
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    call("GET", url, &headers)
}

/// The request headers the upstream saw (the echo service reflects them).
fn upstream_headers(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "expected the upstream's answer, got {} {}", r.status, r.body);
    r.json()["headers"].clone()
}

/// A JSON error from Envoy with this status and code, whose message holds `words`.
#[track_caller]
fn assert_rejected(r: &Resp, status: u16, code: &str, words: &str, case: &str) {
    assert_eq!(r.status, status, "{case}: body {}", r.body);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("application/json")),
        "{case}: content-type {:?}",
        r.header("content-type")
    );
    let j = r.json();
    assert_eq!(j["error"], code, "{case}: {}", r.body);
    assert_eq!(j["status"], u64::from(status), "{case}: {}", r.body);
    let message = j["message"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(message.contains(words), "{case}: message {message:?} should mention {words:?}");
    if status == 401 {
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer"), "{case}: WWW-Authenticate {www:?}");
    }
}

struct Keys {
    rsa: Key,
    ec: Key,
    partner: Key,
}

fn keys() -> Keys {
    Keys { rsa: Key::rsa("rsa-a", "a"), ec: Key::ec("e"), partner: Key::rsa("rsa-b", "p") }
}

/// A gateway serving [`POLICY`] through one Envoy; returns it and the base URL.
fn start(k: &Keys) -> (Gateway, String) {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("keys/main.json", &jwks(&[&k.rsa, &k.ec]));
    gw.write("gateway.yaml", &policy(listen, alpha, &jwks(&[&k.partner])));
    gw.serve();
    gw.envoy("auth", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    let url = format!("{base}/public");
    gw.wait("Envoy to serve /public", PUSH, || request("GET", &url, &[]).ok().filter(|r| r.status == 200));
    (gw, base)
}

#[test]
fn valid_tokens_pass_with_their_claims_and_every_bad_one_is_a_json_401_or_403() {
    let k = keys();
    let (_gw, base) = start(&k);
    let private = format!("{base}/private/orders");
    let good = claims(ISSUER, AUDIENCE, "alice");

    // RS256 and ES256 tokens: the upstream sees the claims as headers, and
    // not the token (forward_token is off by default).
    for (alg, key) in [("RS256", &k.rsa), ("ES256", &k.ec)] {
        let seen = upstream_headers(&get_as(&private, Some(&key.sign(&good)), &[]));
        assert_eq!(seen["x-user-id"], "alice", "{alg}: {seen}");
        assert_eq!(seen["x-user-role"], "admin", "{alg}: {seen}");
        assert_eq!(seen["x-user-email"], "alice@example.com", "{alg}: {seen}");
        assert!(seen.get("authorization").is_none(), "{alg}: the token must not be forwarded: {seen}");
    }

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    // A claim the token lacks sets no header.
    let no_email = k.rsa.sign(&with(&|c| drop(c.as_object_mut().map(|o| o.remove("email")))));
    let seen = upstream_headers(&get_as(&private, Some(&no_email), &[("x-user-email", "forged@example.com")]));
    assert!(seen.get("x-user-email").is_none(), "{seen}");
    assert_eq!(seen["x-user-id"], "alice");
    let t = jwt::now();
    let cases: Vec<(&str, Option<String>, u16, &str, &str)> = vec![
        ("missing", None, 401, "unauthorized", "missing"),
        ("malformed", Some("not-a-jwt".into()), 401, "unauthorized", "jwt"),
        ("expired", Some(k.rsa.sign(&with(&|c| c["exp"] = json!(t - 3600)))), 401, "unauthorized", "expired"),
        (
            "not yet valid",
            Some(k.rsa.sign(&with(&|c| c["nbf"] = json!(t + 3600)))),
            401,
            "unauthorized",
            "not yet valid",
        ),
        ("bad signature", Some(k.partner.sign_as("a", &good)), 401, "unauthorized", "verification fail"),
        ("alg none", Some(jwt::unsigned(&good)), 401, "unauthorized", "jwt"),
        ("alg none, any signature", Some(format!("{}c2ln", jwt::unsigned(&good))), 401, "unauthorized", "alg"),
        ("unknown kid", Some(k.partner.sign_as("zzz", &good)), 401, "unauthorized", "kid"),
        (
            "wrong issuer",
            Some(k.rsa.sign(&with(&|c| c["iss"] = json!("https://evil.example.com")))),
            401,
            "unauthorized",
            "issuer",
        ),
        ("wrong audience", Some(k.rsa.sign(&with(&|c| c["aud"] = json!("other-api")))), 403, "forbidden", "audience"),
    ];
    for (case, token, status, code, words) in &cases {
        let r = get_as(&private, token.as_deref(), &[]);
        eprintln!("{case}: {} {} www-authenticate={:?}", r.status, r.body, r.header("www-authenticate"));
        assert_rejected(&r, *status, code, words, case);
    }

    // Clock skew: 60s by default; 5s for the partner provider.
    let recent = k.rsa.sign(&with(&|c| c["exp"] = json!(t - 20)));
    assert_eq!(get_as(&private, Some(&recent), &[]).status, 200, "within the default 60s clock skew");
    let mut partner = claims(PARTNER, "x", "acme");
    partner["exp"] = json!(t - 20);
    let r = get_as(&format!("{base}/either"), Some(&k.partner.sign(&partner)), &[]);
    assert_rejected(&r, 401, "unauthorized", "expired", "expired 20s ago with a 5s clock skew");
}

#[test]
fn identity_headers_cannot_be_forged_on_public_or_protected_routes() {
    let k = keys();
    let (_gw, base) = start(&k);
    let forged = [("x-user-id", "root"), ("X-User-Role", "superuser"), ("x-partner-id", "acme")];

    // Public route: the forged headers are gone, other headers pass.
    let seen = upstream_headers(&get_as(
        &format!("{base}/public"),
        None,
        &[forged[0], forged[1], forged[2], ("x-other", "1")],
    ));
    for (h, _) in forged {
        assert!(
            seen.get(h.to_ascii_lowercase()).is_none(),
            "forged {h} reached the upstream of a public route: {seen}"
        );
    }
    assert_eq!(seen["x-other"], "1");

    // Protected route with a valid token: the token's claims win.
    let token = k.rsa.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let seen = upstream_headers(&get_as(&format!("{base}/private"), Some(&token), &forged));
    assert_eq!(seen["x-user-id"], "alice", "{seen}");
    assert_eq!(seen["x-user-role"], "admin", "{seen}");
    assert!(seen.get("x-partner-id").is_none(), "a claim header of another provider: {seen}");

    // Protected route without a token: rejected, forged headers or not.
    assert_eq!(get_as(&format!("{base}/private"), None, &forged).status, 401);
}

#[test]
fn attachment_any_of_query_tokens_precedence_and_cors_preflight() {
    let k = keys();
    let (_gw, base) = start(&k);
    let main = k.rsa.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let partner = k.partner.sign(&claims(PARTNER, "anything", "acme"));

    // Any one of several providers.
    let seen = upstream_headers(&get_as(&format!("{base}/either"), Some(&partner), &[]));
    assert_eq!(seen["x-partner-id"], "acme", "{seen}");
    assert_eq!(upstream_headers(&get_as(&format!("{base}/either"), Some(&main), &[]))["x-user-id"], "alice");
    assert_eq!(get_as(&format!("{base}/either"), None, &[]).status, 401);
    assert_eq!(get_as(&format!("{base}/private"), Some(&partner), &[]).status, 401, "partner tokens are not main's");

    // Token in a query parameter, forwarded to the upstream.
    let r = get_as(&format!("{base}/query?access_token={main}"), None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.json()["path"].as_str().unwrap_or_default().contains("access_token="),
        "forward_token keeps it: {}",
        r.body
    );
    assert_eq!(get_as(&format!("{base}/query"), Some(&main), &[]).status, 401, "this provider reads the query only");

    // Precedence: route > service > defaults.
    assert_eq!(get_as(&format!("{base}/members/list"), None, &[]).status, 401, "service auth applies");
    assert_eq!(get_as(&format!("{base}/members/list"), Some(&main), &[]).status, 200);
    assert_eq!(get_as(&format!("{base}/members/open"), None, &[]).status, 200, "route `auth: none` wins");
    assert_eq!(get_as(&format!("{base}/anything"), None, &[]).status, 401, "defaults apply");
    assert_eq!(get_as(&format!("{base}/anything"), Some(&main), &[]).status, 200);

    // A CORS preflight carries no token and must not be refused by auth.
    let r = call(
        "OPTIONS",
        &format!("{base}/private"),
        &[("origin", "https://app.example.com"), ("access-control-request-method", "GET")],
    );
    assert_ne!(r.status, 401, "preflight blocked by auth: {}", r.body);
}

#[test]
fn rotated_keys_are_pushed_live_for_files_and_inline_jwks() {
    let k = keys();
    let (gw, base) = start(&k);
    let private = format!("{base}/private");
    let old = k.rsa.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(get_as(&private, Some(&old), &[]).status, 200);

    // The JWKS file now holds a new key only.
    let new_key = Key::rsa("rsa-b", "b");
    gw.write("keys/main.json", &jwks(&[&new_key]));
    gw.wait("the old key to stop working", PUSH, || (get_as(&private, Some(&old), &[]).status == 401).then_some(()));
    let new = new_key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(get_as(&private, Some(&new), &[]).status, 200, "a token from the new key");

    // Inline JWKS: the partner provider moves to a fresh EC key.
    let either = format!("{base}/either");
    let partner_old = k.partner.sign(&claims(PARTNER, "x", "acme"));
    assert_eq!(get_as(&either, Some(&partner_old), &[]).status, 200);
    let fresh = Key::ec("p2");
    let text = std::fs::read_to_string(gw.config.join("gateway.yaml")).expect("policy");
    gw.write("gateway.yaml", &text.replace(&jwks(&[&k.partner]), &jwks(&[&fresh])));
    gw.wait("the old inline key to stop working", PUSH, || {
        (get_as(&either, Some(&partner_old), &[]).status == 401).then_some(())
    });
    assert_eq!(get_as(&either, Some(&fresh.sign(&claims(PARTNER, "x", "acme"))), &[]).status, 200);
}

#[test]
fn a_remote_jwks_is_fetched_before_serving_and_used() {
    let key = Key::rsa("rsa-a", "a");
    let server = JsonServer::start(jwks(&[&key]));
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write(
        "gateway.yaml",
        &format!(
            r#"
listeners: [{{ name: public, port: {listen}, address: 127.0.0.1 }}]
services: [{{ name: alpha, url: "http://127.0.0.1:{alpha}" }}]
routes: [{{ name: all, match: {{ prefix: / }}, service: alpha }}]
auth:
  jwt:
    - name: remote
      issuer: {ISSUER}
      jwks: {{ uri: "http://127.0.0.1:{port}/.well-known/jwks.json", cache: 5m }}
      claims_to_headers: {{ sub: X-User-Id }}
defaults: {{ auth: remote }}
"#,
            port = server.port
        ),
    );
    gw.serve();
    gw.envoy("remote", "edge");
    // No request has been sent yet: Envoy fetched the keys on its own.
    gw.wait("Envoy to fetch the JWKS", PUSH, || (server.hits() > 0).then_some(()));
    let url = format!("http://127.0.0.1:{listen}/x");
    let token = key.sign(&claims(ISSUER, "any", "bob"));
    let r = gw.wait("Envoy to serve with the fetched keys", PUSH, || {
        request("GET", &url, &[("authorization", &bearer(&token))]).ok().filter(|r| r.status == 200)
    });
    assert_eq!(r.json()["headers"]["x-user-id"], "bob");
    let stranger = Key::rsa("rsa-b", "a").sign(&claims(ISSUER, "any", "eve"));
    assert_eq!(get_as(&url, Some(&stranger), &[]).status, 401, "a key the JWKS does not hold");
    assert_eq!(get_as(&url, None, &[]).status, 401);
    server.set(String::new());
}

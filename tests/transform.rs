//! Reshaping at the edge, end to end: header changes both ways, forged
//! internal headers, versioning by header and by query, and CORS answered
//! at Envoy.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::Duration;

use common::{free_port, request, Gateway, Resp};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

const POLICY: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: v1
    url: http://127.0.0.1:@V1
    request_headers: { add: { x-tier: service, x-service-only: "1" } }
    response_headers: { add: { x-service: v1 } }
  - name: v2
    url: http://127.0.0.1:@V2
defaults:
  request_headers: { add: { x-gateway: legate }, remove: [x-debug] }
  response_headers: { add: { x-served-by: legate } }
routes:
  - name: items-for-partners
    match: { prefix: /api/items, hosts: [partner.example.com, "*.partners.example.org"] }
    service: v2
  - name: items-v2-header
    match: { prefix: /api/items, headers: { api-version: v2 } }
    service: v1
    rewrite: { prefix: /api/v2/items }
  - name: items-v2-query
    match: { prefix: /api/items, query: { version: "2" } }
    service: v2
  - name: items
    match: { prefix: /api/items }
    service: v1
    request_headers: { add: { x-route: items, x-tier: route }, remove: [x-client-secret] }
    response_headers: { add: { x-api: items } }
    cors:
      origins: ["https://app.example.com", { regex: 'https://[a-z]+\.example\.org' }]
      methods: [GET, POST]
      headers: [Authorization, Content-Type]
      expose_headers: [X-Api]
      max_age: 10m
      credentials: true
  - name: slow
    match: { prefix: /slow }
    service: v1
    timeout: 5s
"#;

fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    request(method, url, headers).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn headers_versions_forged_internal_headers_and_cors() {
    let mut gw = Gateway::new();
    let (v1, v2, listen) = (gw.echo("v1"), gw.echo("v2"), free_port());
    gw.write(
        "gateway.yaml",
        &POLICY.replace("@LISTEN", &listen.to_string()).replace("@V1", &v1.to_string()).replace("@V2", &v2.to_string()),
    );
    gw.serve();
    gw.envoy("edge", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    let items = format!("{base}/api/items/7");
    gw.wait("Envoy to serve", PUSH, || request("GET", &items, &[]).ok().filter(|r| r.status == 200));

    // Header changes, both ways: defaults, then the service's, then the route's (which wins).
    let r = call("GET", &items, &[("x-debug", "1"), ("x-client-secret", "s3cr3t"), ("x-keep", "yes")]);
    assert_eq!(r.header("x-served-by"), Some("legate"), "{:?}", r.headers);
    assert_eq!(r.header("x-api"), Some("items"), "{:?}", r.headers);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-gateway"], "legate", "{seen}");
    assert_eq!(seen["x-route"], "items", "{seen}");
    assert_eq!(seen["x-keep"], "yes", "{seen}");
    assert_eq!((seen["x-tier"].as_str(), seen["x-service-only"].as_str()), (Some("route"), Some("1")), "{seen}");
    assert_eq!(r.header("x-service"), Some("v1"), "{:?}", r.headers);
    assert!(seen.get("x-debug").is_none() && seen.get("x-client-secret").is_none(), "removed: {seen}");

    // Routing by host name (any port, any case; a wildcard for subdomains).
    for (host, service) in [
        ("partner.example.com", "v2"),
        ("Partner.Example.com:8443", "v2"),
        ("a.b.partners.example.org", "v2"),
        ("partners.example.org", "v1"),
        ("other.example.com", "v1"),
    ] {
        let r = call("GET", &items, &[("host", host)]).json();
        assert_eq!(r["service"], service, "Host {host}: {r}");
    }

    // Versioning: by header (to /api/v2/... on the same service) and by query (to the v2 service).
    let r = call("GET", &items, &[("api-version", "v2")]).json();
    assert_eq!((r["service"].as_str(), r["path"].as_str()), (Some("v1"), Some("/api/v2/items/7")), "{r}");
    let r = call("GET", &format!("{items}?version=2"), &[]).json();
    assert_eq!(r["service"], "v2", "{r}");
    assert_eq!(call("GET", &items, &[]).json()["service"], "v1");

    // Forged internal headers: a client cannot set Envoy's own controls.
    let r = call(
        "GET",
        &format!("{base}/slow/delay/300"),
        &[("x-envoy-upstream-rq-timeout-ms", "1"), ("x-envoy-retry-on", "5xx"), ("x-envoy-max-retries", "9")],
    );
    assert_eq!(r.status, 200, "a client-sent timeout must not apply: {}", r.body);
    let seen = &r.json()["headers"];
    for h in ["x-envoy-retry-on", "x-envoy-max-retries", "x-envoy-upstream-rq-timeout-ms"] {
        assert!(seen.get(h).is_none(), "{h} from the client reached the upstream: {seen}");
    }

    // CORS: a preflight is answered at Envoy...
    let preflight = |origin: &str| {
        call(
            "OPTIONS",
            &items,
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "authorization"),
            ],
        )
    };
    let p = preflight("https://app.example.com");
    assert_eq!(p.status, 200, "{}", p.body);
    assert_eq!(p.header("access-control-allow-origin"), Some("https://app.example.com"), "{:?}", p.headers);
    assert!(p.header("access-control-allow-methods").is_some_and(|m| m.contains("POST")), "{:?}", p.headers);
    assert_eq!(p.header("access-control-max-age"), Some("600"));
    assert_eq!(p.header("access-control-allow-credentials"), Some("true"));
    assert!(p.try_json().is_none_or(|j| j.get("service").is_none()), "the service was not asked: {}", p.body);
    let p = preflight("https://shop.example.org");
    assert_eq!(p.header("access-control-allow-origin"), Some("https://shop.example.org"), "regex origin");
    let p = preflight("https://evil.example.com");
    assert_eq!(p.header("access-control-allow-origin"), None, "a foreign origin gets no grant: {:?}", p.headers);
    assert!(p.try_json().is_none_or(|j| j.get("service").is_none()), "nor reaches the service: {}", p.body);
    // ...and an actual request gets the headers with the service's answer.
    let r = call("GET", &items, &[("origin", "https://app.example.com")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert!(r.header("access-control-expose-headers").is_some_and(|h| h.contains("X-Api")), "{:?}", r.headers);
}

const SHAPES: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: pool
    endpoints: [{ address: "127.0.0.1:@HEAVY", weight: 3 }, "localhost:@LIGHT"]
routes:
  - name: blocked
    match: { prefix: /admin }
    respond: { status: 403, message: Access is forbidden. }
  - name: pool
    match: { prefix: /pool }
    service: pool
    rewrite: { auto_host: true }
    request_headers:
      default: { x-tenant: none }
      replace: { authorization: Bearer internal }
      append: { x-trail: gateway }
      add: { x-discount: 50% }
    response_headers: { default: { cache-control: no-store } }
    request_query: { default: { page: "1" }, replace: { token: hidden }, append: { tag: gw }, remove: [debug] }
"#;

#[test]
fn headers_by_presence_literal_values_respond_and_weighted_endpoints() {
    let mut gw = Gateway::new();
    let (heavy, light, listen) = (gw.echo("heavy"), gw.echo("light"), free_port());
    gw.write(
        "gateway.yaml",
        &SHAPES
            .replace("@LISTEN", &listen.to_string())
            .replace("@HEAVY", &heavy.to_string())
            .replace("@LIGHT", &light.to_string()),
    );
    gw.serve();
    gw.envoy("edge", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("Envoy to serve", PUSH, || request("GET", &format!("{base}/pool"), &[]).ok().filter(|r| r.status == 200));

    // `respond`: Envoy answers, in legate's JSON, and no service is called.
    let r = call("GET", &format!("{base}/admin/users"), &[]);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        (r.json()["error"].as_str(), r.json()["message"].as_str()),
        (Some("forbidden"), Some("Access is forbidden."))
    );

    // default / replace / append, by what the request has; `%` is a `%`.
    let r = call("GET", &format!("{base}/pool"), &[]);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-tenant"], "none", "{seen}");
    assert!(seen.get("authorization").is_none(), "replace adds nothing: {seen}");
    assert_eq!(seen["x-trail"], "gateway", "{seen}");
    assert_eq!(seen["x-discount"], "50%", "{seen}");
    assert_eq!(r.header("cache-control"), Some("no-store"), "{:?}", r.headers);
    let r = call(
        "GET",
        &format!("{base}/pool"),
        &[("x-tenant", "acme"), ("authorization", "Bearer client"), ("x-trail", "client")],
    );
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-tenant"], "acme", "default keeps the client's: {seen}");
    assert_eq!(seen["authorization"], "Bearer internal", "{seen}");
    assert_eq!(seen["x-trail"], "client, gateway", "{seen}");

    // The same four changes on the query.
    let query = |path: &str| {
        let j = call("GET", &format!("{base}{path}"), &[]).json();
        let mut pairs: Vec<String> =
            j["query"].as_str().unwrap_or_default().split('&').filter(|p| !p.is_empty()).map(str::to_owned).collect();
        pairs.sort();
        pairs
    };
    assert_eq!(query("/pool"), ["page=1", "tag=gw"]);
    assert_eq!(query("/pool?debug=1&token=abc&page=3&tag=x"), ["page=3", "tag=gw", "tag=x", "token=hidden"]);

    // Weighted endpoints (3:1), each sent its own host:port as Host.
    let mut heavy_hits = 0;
    for _ in 0..200 {
        let r = call("GET", &format!("{base}/pool"), &[("host", "gateway.example")]);
        let j = r.json();
        let (name, host) =
            (j["service"].as_str().unwrap_or_default(), j["headers"]["host"].as_str().unwrap_or_default());
        match name {
            "heavy" => {
                heavy_hits += 1;
                assert_eq!(host, format!("127.0.0.1:{heavy}"));
            }
            "light" => assert_eq!(host, format!("localhost:{light}")),
            other => panic!("answered by {other}"),
        }
    }
    // Round robin with weights 3 and 1 gives the heavier three in four (150);
    // a wide margin still tells it from an even split (100).
    assert!((125..=175).contains(&heavy_hits), "heavy answered {heavy_hits} of 200");
}

#[test]
fn a_route_with_many_hosts_and_a_long_regex_is_served() {
    // One regex over :authority for a dozen hosts, and a long path regex:
    // both are larger RE2 programs than Envoy takes by default (100), and
    // Envoys from `legate bootstrap` lift that limit.
    let hosts: Vec<String> = (0..12).map(|i| format!("h{i}.shop.example.com")).collect();
    let policy = format!(
        "listeners: [{{ name: public, port: @LISTEN, address: 127.0.0.1 }}]\nservices: [{{ name: up, url: \
         'http://127.0.0.1:@UP' }}]\nroutes:\n  - {{ name: shops, match: {{ prefix: /shop, hosts: [{}] }}, service: up }}\n  \
         - {{ name: items, match: {{ regex: '/(orders|users|items|carts|payments|shipments|invoices|refunds)/[0-9]+/\
         (detail|history|audit|export)' }}, service: up }}\n",
        hosts.join(", ")
    );
    let mut gw = Gateway::new();
    let listen = gw.serve_one(&policy);
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("Envoy to serve", PUSH, || {
        request("GET", &format!("{base}/shop"), &[("host", "h11.shop.example.com")]).ok().filter(|r| r.status == 200)
    });
    assert_eq!(call("GET", &format!("{base}/shop"), &[("host", "other.example.com")]).status, 404);
    assert_eq!(call("GET", &format!("{base}/refunds/7/audit"), &[]).status, 200);
    let nacks = gw.status()["nodes"].to_string();
    assert!(!nacks.contains("program size"), "{nacks}");
}

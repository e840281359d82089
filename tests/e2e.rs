//! End-to-end tests: `legate serve` feeding stock Envoy over ADS, asserting on
//! what a client of Envoy sees. Each test runs its own legate, Envoys and echo
//! upstreams on ports of its own, so the tests run in parallel.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, must_get, request, Gateway, Resp};
use serde_json::Value;

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

/// `template` with each `@NAME` replaced by its value.
fn fill(template: &str, vars: &[(&str, u16)]) -> String {
    vars.iter().fold(template.to_owned(), |t, (name, value)| t.replace(name, &value.to_string()))
}

/// Which route answered: every route below adds `x-route: <name>` to the
/// request, and the echo upstream reflects request headers.
fn route_of(r: &Resp) -> String {
    assert_eq!(r.status, 200, "expected an upstream answer, got {} {}", r.status, r.body);
    r.json()["headers"]["x-route"].as_str().unwrap_or("<none>").to_owned()
}

fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    request(method, url, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// `{"error","message","status"}` with `status` equal to the HTTP status.
fn assert_json_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert!(
        r.header("content-type").is_some_and(|c| c.starts_with("application/json")),
        "content-type of a {status}: {:?}",
        r.header("content-type")
    );
    let j = r.json();
    assert_eq!(j["error"], code, "body: {}", r.body);
    assert!(j["message"].as_str().is_some_and(|m| !m.is_empty()), "message in {}", r.body);
    assert_eq!(j["status"], u64::from(status), "body: {}", r.body);
}

const ROUTING: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
  - name: beta
    url: http://127.0.0.1:@BETA
routes:
  - name: exact
    match: { path: /exact }
    service: beta
    request_headers: { add: { x-route: exact } }
  - name: by-header
    match: { prefix: /api, headers: { x-tenant: blue } }
    service: beta
    request_headers: { add: { x-route: by-header } }
  - name: by-query
    match: { prefix: /api, query: { debug: "1" } }
    service: beta
    request_headers: { add: { x-route: by-query } }
  - name: by-method
    match: { prefix: /api, methods: [POST, PUT] }
    service: beta
    request_headers: { add: { x-route: by-method } }
  - name: api
    match: { prefix: /api }
    service: alpha
    request_headers: { add: { x-route: api } }
  - name: items
    match: { regex: "/items/[0-9]+" }
    service: alpha
    request_headers: { add: { x-route: items } }
  - name: rewrite-prefix
    match: { prefix: /old }
    service: alpha
    rewrite: { prefix: /new }
  - name: rewrite-regex
    match: { prefix: /users/ }
    service: alpha
    rewrite: { regex: '^/users/([^/]+)/profile$', substitution: '/profiles/\1' }
  - name: rewrite-host
    match: { prefix: /host }
    service: alpha
    rewrite: { host: internal.example }
  - name: transform
    match: { prefix: /headers }
    service: alpha
    request_headers: { add: { x-added: "yes" }, remove: [x-secret] }
    response_headers: { add: { x-gateway: legate }, remove: [content-type] }
  - name: half
    match: { prefix: /half }
    split: [{ service: alpha, weight: 50 }, { service: beta, weight: 50 }]
  - name: all-alpha
    match: { prefix: /all }
    split: [{ service: alpha, weight: 100 }, { service: beta, weight: 0 }]
"#;

#[test]
fn routes_match_rewrite_transform_and_split() {
    let mut gw = Gateway::new();
    let (alpha, beta, listen) = (gw.echo("alpha"), gw.echo("beta"), free_port());
    gw.write("gateway.yaml", &fill(ROUTING, &[("@LISTEN", listen), ("@ALPHA", alpha), ("@BETA", beta)]));
    gw.serve();
    gw.envoy("router", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("Envoy to serve /api", PUSH, || common::get(&format!("{base}/api")).ok().filter(|r| r.status == 200));

    // Matching: exact path, regex, prefix, and method/header/query conditions.
    let get = |path: &str| must_get(&format!("{base}{path}"));
    assert_eq!(route_of(&get("/exact")), "exact");
    assert_eq!(get("/exact/more").status, 404, "an exact path must not match as a prefix");
    assert_eq!(route_of(&get("/items/42")), "items");
    assert_eq!(get("/items/abc").status, 404, "the regex needs digits");
    assert_eq!(get("/items/42/more").status, 404, "a path regex matches the whole path");
    assert_eq!(route_of(&get("/api/orders")), "api");
    let api = format!("{base}/api/orders");
    assert_eq!(route_of(&call("GET", &api, &[("x-tenant", "blue")])), "by-header");
    assert_eq!(route_of(&call("GET", &api, &[("x-tenant", "red")])), "api");
    assert_eq!(route_of(&get("/api/orders?debug=1")), "by-query");
    assert_eq!(route_of(&get("/api/orders?debug=0")), "api");
    assert_eq!(route_of(&call("POST", &api, &[])), "by-method");
    assert_eq!(route_of(&call("PUT", &api, &[])), "by-method");
    assert_eq!(route_of(&call("DELETE", &api, &[])), "api");
    assert_eq!(get("/exact").json()["service"], "beta", "the exact route goes to beta");

    // Rewrites: the upstream sees the rewritten path and host.
    let r = get("/old/thing?x=1").json();
    assert_eq!(r["path"], "/new/thing?x=1", "prefix rewrite: {r}");
    let r = get("/users/42/profile").json();
    assert_eq!(r["path"], "/profiles/42", "regex rewrite: {r}");
    let r = call("GET", &format!("{base}/host/x"), &[("host", "public.example")]).json();
    assert_eq!(r["headers"]["host"], "internal.example", "host rewrite: {r}");
    assert_eq!(r["path"], "/host/x");

    // Header changes, both ways.
    let r = call("GET", &format!("{base}/headers"), &[("x-secret", "s3cr3t"), ("x-keep", "1")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gateway"), Some("legate"), "response header added: {:?}", r.headers);
    assert_eq!(r.header("content-type"), None, "response header removed: {:?}", r.headers);
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-added"], "yes", "request header added: {seen}");
    assert_eq!(seen["x-keep"], "1", "other request headers pass: {seen}");
    assert!(seen.get("x-secret").is_none(), "request header removed: {seen}");

    // Weighted splits.
    let (mut a, mut b) = (0, 0);
    for _ in 0..200 {
        match get("/half").json()["service"].as_str() {
            Some("alpha") => a += 1,
            Some("beta") => b += 1,
            other => panic!("unexpected service {other:?}"),
        }
    }
    assert!(a >= 50 && b >= 50, "a 50/50 split gave alpha {a}, beta {b} of 200");
    for _ in 0..50 {
        assert_eq!(get("/all").json()["service"], "alpha", "a 100/0 split sends everything to alpha");
    }
}

const ERRORS: &str = r"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
  - name: gone
    url: http://127.0.0.1:@GONE
    connect_timeout: 250ms
routes:
  - name: ok
    match: { prefix: /ok }
    service: alpha
  - name: down
    match: { prefix: /down }
    service: gone
  - name: slow
    match: { prefix: /slow }
    service: alpha
    rewrite: { prefix: /delay }
    timeout: 300ms
";

#[test]
fn envoy_errors_are_json_and_status_lists_the_proxy() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    // A port nobody listens on: the upstream is down.
    let gone = free_port();
    gw.write("gateway.yaml", &fill(ERRORS, &[("@LISTEN", listen), ("@ALPHA", alpha), ("@GONE", gone)]));
    gw.serve();
    gw.envoy("edge-1", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("Envoy to serve /ok", PUSH, || common::get(&format!("{base}/ok")).ok().filter(|r| r.status == 200));

    assert_json_error(&must_get(&format!("{base}/nowhere")), 404, "not_found");
    assert_json_error(&must_get(&format!("{base}/down")), 503, "service_unavailable");
    let t0 = Instant::now();
    let r = must_get(&format!("{base}/slow/3000"));
    assert_json_error(&r, 504, "gateway_timeout");
    assert!(t0.elapsed() < Duration::from_secs(2), "the 300ms route timeout took {:?}", t0.elapsed());

    // /api/status lists the proxy with what it ACKed: the current version of every type.
    let status = gw.wait("every type ACKed in /api/status", PUSH, || {
        let s = gw.status();
        let node = s["nodes"].as_array()?.iter().find(|n| n["id"] == "edge-1")?.clone();
        let resources = node["resources"].as_object()?;
        let acked = resources.len() >= 4 && resources.values().all(|r| r["acked_version"].is_string());
        acked.then_some(s)
    });
    let node = &status["nodes"][0];
    assert_eq!(node["cluster"], "edge", "{status}");
    assert!(node["connected_at"].is_string(), "{status}");
    for kind in ["listener.v3.Listener", "route.v3.RouteConfiguration", "cluster.v3.Cluster"] {
        let url = format!("type.googleapis.com/envoy.config.{kind}");
        let r = &node["resources"][&url];
        assert!(r["acked_version"].as_str().is_some_and(|v| !v.is_empty()), "{url} in {status}");
        assert_eq!(r["nack"], Value::Null, "{url} in {status}");
    }
    assert_eq!(status["last_reload"]["ok"], true, "{status}");
    assert_eq!(gw.metric("legate_connected_proxies"), Some(1.0));
}

const LIVE: &str = r"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
  - name: beta
    url: http://127.0.0.1:@BETA
routes:
  - name: v1
    match: { prefix: /v1 }
    service: alpha
";

/// The Prometheus series counting rejected reloads.
const ERRORS_TOTAL: &str = r#"legate_config_reloads_total{result="error"}"#;

/// Once pending file events have been handled, the count of rejected
/// reloads stays put: legate's own reads of the folder are not changes.
/// Returns the count.
fn assert_no_reload_loop(gw: &Gateway) -> f64 {
    std::thread::sleep(Duration::from_millis(300));
    let before = gw.metric(ERRORS_TOTAL).expect("reload error counter");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.metric(ERRORS_TOTAL), Some(before), "legate kept reloading with no change");
    before
}

/// The line (from 1) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> u64 {
    let i = text.lines().position(|l| l.contains(needle)).expect("needle in text");
    u64::try_from(i + 1).expect("small")
}

#[test]
fn live_edits_reach_envoy_and_invalid_ones_are_held_back() {
    let mut gw = Gateway::new();
    let (alpha, beta, listen) = (gw.echo("alpha"), gw.echo("beta"), free_port());
    let base_policy = fill(LIVE, &[("@LISTEN", listen), ("@ALPHA", alpha), ("@BETA", beta)]);
    gw.write("gateway.yaml", &base_policy);
    gw.serve();
    gw.envoy("live", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    let service_at = |path: &str| -> Option<String> {
        let r = common::get(&format!("{base}{path}")).ok()?;
        (r.status == 200).then(|| r.try_json()?["service"].as_str().map(str::to_owned))?
    };
    gw.wait("Envoy to serve /v1 from alpha", PUSH, || (service_at("/v1")? == "alpha").then_some(()));
    assert_eq!(must_get(&format!("{base}/v2")).status, 404);

    // A valid edit: a new route, and an existing route moved to another service.
    let edited = base_policy.replace("service: alpha\n", "service: beta\n")
        + "  - name: v2\n    match: { prefix: /v2 }\n    service: alpha\n";
    gw.write("gateway.yaml", &edited);
    gw.wait("the edit to reach Envoy", PUSH, || {
        (service_at("/v2")? == "alpha" && service_at("/v1")? == "beta").then_some(())
    });
    // (legate records the reload just after pushing it: poll.)
    let status = gw.wait("the edit's reload in /api/status", PUSH, || {
        let s = gw.status();
        (s["last_reload"]["ok"] == true).then_some(s)
    });
    let good_version = status["version"].clone();

    // An invalid edit (a dangling service reference) is reported with its
    // file and line and nothing reaches Envoy.
    let broken = edited.clone() + "  - name: v3\n    match: { prefix: /v3 }\n    service: missing\n";
    gw.write("gateway.yaml", &broken);
    let status = gw.wait("the rejected reload in /api/status", PUSH, || {
        let s = gw.status();
        (s["last_reload"]["ok"] == false).then_some(s)
    });
    let errors = status["last_reload"]["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), 1, "{status}");
    assert_eq!(errors[0]["file"], "gateway.yaml", "{status}");
    assert_eq!(errors[0]["line"], line_of(&broken, "service: missing"), "{status}");
    assert!(errors[0]["column"].as_u64().is_some_and(|c| c > 1), "{status}");
    assert!(errors[0]["message"].as_str().is_some_and(|m| m.contains("missing")), "{status}");
    assert_eq!(status["version"], good_version, "the served version must not change");
    let errors_counted = assert_no_reload_loop(&gw);
    // One save may be seen as two changes (the temporary file, then the rename).
    assert!((1.0..=2.0).contains(&errors_counted), "{ERRORS_TOTAL} is {errors_counted} after one bad save");
    // Envoy keeps the last good config.
    assert_eq!(service_at("/v1").as_deref(), Some("beta"));
    assert_eq!(service_at("/v2").as_deref(), Some("alpha"));
    assert_eq!(must_get(&format!("{base}/v3")).status, 404);
    assert_eq!(gw.admin("/readyz").status, 200, "still ready on the last good config");

    // A YAML syntax error is reported once, with its line, and legate stays responsive.
    let garbled = edited.clone() + "  - name: v3\n    match: { prefix: /v3 \n";
    gw.write("gateway.yaml", &garbled);
    let status = gw.wait("the syntax error in /api/status", PUSH, || {
        let s = gw.status();
        let message = s["last_reload"]["errors"][0]["message"].as_str()?;
        (!message.contains("service `missing`")).then_some(s)
    });
    assert_eq!(status["last_reload"]["ok"], false, "{status}");
    let errors = status["last_reload"]["errors"].as_array().expect("errors list");
    assert_eq!(errors.len(), 1, "{status}");
    assert_eq!(errors[0]["file"], "gateway.yaml", "{status}");
    assert!(errors[0]["line"].as_u64().is_some_and(|l| l >= line_of(&garbled, "prefix: /v3")), "{status}");
    assert_eq!(status["version"], good_version);
    assert_eq!(service_at("/v2").as_deref(), Some("alpha"));
    assert!(assert_no_reload_loop(&gw) > errors_counted);

    // Fixing the file pushes the fix.
    let fixed = edited + "  - name: v3\n    match: { prefix: /v3 }\n    service: beta\n";
    gw.write("gateway.yaml", &fixed);
    gw.wait("the fix to reach Envoy", PUSH, || (service_at("/v3")? == "beta").then_some(()));
    let status = gw.wait("the fix's reload in /api/status", PUSH, || {
        let s = gw.status();
        (s["last_reload"]["ok"] == true).then_some(s)
    });
    assert_eq!(status["last_reload"]["errors"], serde_json::json!([]), "{status}");
    assert_ne!(status["version"], good_version);
    assert_eq!(service_at("/v1").as_deref(), Some("beta"));
}

const FLEETS: &str = r"
listeners:
  - name: shared
    port: @SHARED
    address: 127.0.0.1
  - name: only-a
    port: @PORTA
    address: 127.0.0.1
    fleets: [a]
  - name: only-b
    port: @PORTB
    address: 127.0.0.1
    fleets: [b]
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
routes:
  - name: shared
    listener: shared
    match: { prefix: / }
    service: alpha
  - name: on-a
    listener: only-a
    match: { prefix: / }
    service: alpha
    request_headers: { add: { x-route: on-a } }
  - name: on-b
    listener: only-b
    match: { prefix: / }
    service: alpha
    request_headers: { add: { x-route: on-b } }
";

#[test]
fn fleets_get_their_own_listeners() {
    let mut gw = Gateway::new();
    let (alpha, shared, port_a, port_b) = (gw.echo("alpha"), free_port(), free_port(), free_port());
    let vars = [("@SHARED", shared), ("@PORTA", port_a), ("@PORTB", port_b), ("@ALPHA", alpha)];
    gw.write("gateway.yaml", &fill(FLEETS, &vars));
    gw.serve();
    let a = gw.envoy("envoy-a", "a");
    let b = gw.envoy("envoy-b", "b");
    let serves = |port: u16| common::get(&format!("http://127.0.0.1:{port}/x")).ok().filter(|r| r.status == 200);
    let on_a = gw.wait("the fleet-a listener", PUSH, || serves(port_a));
    assert_eq!(route_of(&on_a), "on-a");
    let on_b = gw.wait("the fleet-b listener", PUSH, || serves(port_b));
    assert_eq!(route_of(&on_b), "on-b");
    gw.wait("the shared listener", PUSH, || serves(shared));

    // Each Envoy holds the shared listener and its own fleet's, not the other's.
    let listeners = |e: &common::Envoy| -> Vec<String> {
        let text = e.admin("/listeners").body;
        let mut names: Vec<String> = text.lines().filter_map(|l| Some(l.split_once("::")?.0.to_owned())).collect();
        names.sort();
        names
    };
    gw.wait("Envoy a to hold shared + only-a", PUSH, || (listeners(&a) == ["only-a", "shared"]).then_some(()));
    gw.wait("Envoy b to hold shared + only-b", PUSH, || (listeners(&b) == ["only-b", "shared"]).then_some(()));

    // legate shows both proxies, each in its fleet, with different listener sets ACKed.
    let lds = "type.googleapis.com/envoy.config.listener.v3.Listener";
    let status = gw.wait("both proxies with ACKed listeners", PUSH, || {
        let s = gw.status();
        let acked = |id: &str| {
            s["nodes"].as_array()?.iter().find(|n| n["id"] == id)?["resources"][lds]["acked_version"]
                .as_str()
                .map(str::to_owned)
        };
        (acked("envoy-a").is_some() && acked("envoy-b").is_some()).then_some(s)
    });
    let nodes = status["nodes"].as_array().expect("nodes");
    let node = |id: &str| nodes.iter().find(|n| n["id"] == id).expect("node listed");
    assert_eq!(node("envoy-a")["cluster"], "a");
    assert_eq!(node("envoy-b")["cluster"], "b");
    assert_ne!(
        node("envoy-a")["resources"][lds]["acked_version"],
        node("envoy-b")["resources"][lds]["acked_version"],
        "different fleets, different listener sets: {status}"
    );
    assert_eq!(gw.metric("legate_connected_proxies"), Some(2.0));
}

const RESTART: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
routes:
  - name: a
    match: { prefix: /a }
    service: alpha
"#;

/// Deterministic versions: a restarted legate serving the same files gives a
/// reconnecting Envoy nothing new, so Envoy applies no update at all.
#[test]
fn a_restarted_legate_causes_no_churn() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("gateway.yaml", &fill(RESTART, &[("@LISTEN", listen), ("@ALPHA", alpha)]));
    gw.serve();
    let envoy = gw.envoy("envoy-r", "edge");
    let url = format!("http://127.0.0.1:{listen}/a");
    gw.wait("the route", PUSH, || common::get(&url).ok().filter(|r| r.status == 200));
    let updates = || {
        envoy.stats([
            "cluster_manager.cds.update_success",
            "listener_manager.lds.update_success",
            "http.public.rds.public.update_success",
            "cluster.alpha.update_success",
        ])
    };
    let before = updates();
    let lds = "type.googleapis.com/envoy.config.listener.v3.Listener";
    let acked = gw.status()["nodes"][0]["resources"][lds]["acked_version"].clone();
    assert!(acked.is_string(), "{}", gw.status());

    gw.restart_legate();
    // Envoy reconnects (with backoff) and says which versions it has.
    let status = gw.wait("Envoy to reconnect", PUSH, || {
        let s = gw.status();
        (s["nodes"][0]["resources"][lds]["acked_version"] == acked).then_some(s)
    });
    assert_eq!(status["nodes"][0]["id"], "envoy-r");
    // Give any (wrong) push time to arrive and be applied.
    std::thread::sleep(Duration::from_millis(1500));
    for kind in ["cds", "eds", "lds", "rds"] {
        let series = format!("legate_pushes_total{{type=\"{kind}\"}}");
        assert_eq!(gw.metric(&series), Some(0.0), "{series} after a restart with the same files");
    }
    assert_eq!(updates(), before, "Envoy applied an update after legate restarted with the same files");
    assert_eq!(call("GET", &url, &[]).status, 200);
}

//! Access logs end to end: two real Envoys log every request locally (JSON
//! lines on stdout) and stream it to legate, whose central log holds both
//! fleets' entries, tagged with their node ids.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::Duration;

use common::jwt::{claims, jwks, Key};
use common::{free_port, request, Gateway};
use serde_json::Value;

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

#[test]
fn every_proxys_requests_reach_the_central_log_with_node_and_user() {
    let key = Key::rsa("rsa-a", "a");
    let mut gw = Gateway::new();
    let central = gw.path().join("access.log");
    gw.serve_args = vec!["--access-log".into(), central.display().to_string()];
    let (alpha, pa, pb, otel) = (gw.echo("alpha"), free_port(), free_port(), free_port());
    gw.write("keys.json", &jwks(&[&key]));
    gw.write(
        "gateway.yaml",
        &format!(
            r#"
listeners:
  - {{ name: a, port: {pa}, address: 127.0.0.1, fleets: [fleet-a] }}
  - {{ name: b, port: {pb}, address: 127.0.0.1, fleets: [fleet-b] }}
services:
  - {{ name: alpha, url: "http://127.0.0.1:{alpha}" }}
routes:
  - {{ name: open-a, listener: a, match: {{ prefix: /open }}, service: alpha }}
  - {{ name: open-b, listener: b, match: {{ prefix: /open }}, service: alpha }}
  - {{ name: private-b, listener: b, match: {{ prefix: /private }}, service: alpha, auth: main }}
auth:
  jwt:
    - {{ name: main, issuer: "https://auth.example.com", jwks: {{ file: keys.json }} }}
defaults:
  access_log: {{ format: json, path: stdout }}
  # Nothing listens there: Envoy must still take the config and serve.
  tracing: {{ collector: "127.0.0.1:{otel}", service_name: gateway, sampling: 100 }}
"#
        ),
    );
    gw.serve();
    gw.envoy("e1", "fleet-a");
    gw.envoy("e2", "fleet-b");
    let (a, b) = (format!("http://127.0.0.1:{pa}"), format!("http://127.0.0.1:{pb}"));
    gw.wait("both Envoys to serve", PUSH, || {
        let ok = |u: String| request("GET", &u, &[]).ok().is_some_and(|r| r.status == 200);
        (ok(format!("{a}/open/warm")) && ok(format!("{b}/open/warm"))).then_some(())
    });

    let token = key.sign(&claims("https://auth.example.com", "x", "alice"));
    // x-request-id is made at the edge (a client's own is replaced) and passed upstream.
    let r = request("GET", &format!("{a}/open/one?x=1"), &[("x-request-id", "forged")]).expect("a");
    assert_eq!(r.status, 200);
    let request_id = r.json()["headers"]["x-request-id"].as_str().unwrap_or_default().to_owned();
    assert!(!request_id.is_empty() && request_id != "forged", "x-request-id upstream: {request_id:?}");
    assert_eq!(request("POST", &format!("{b}/open/two"), &[]).expect("b").status, 200);
    let auth = format!("Bearer {token}");
    assert_eq!(request("GET", &format!("{b}/private/me"), &[("authorization", &auth)]).expect("private").status, 200);
    assert_eq!(request("GET", &format!("{b}/private/me"), &[]).expect("denied").status, 401);

    let find = |all: &[Value], path: &str, status: u64| {
        all.iter().find(|l| l["path"] == path && l["status"] == status).cloned()
    };
    let all = gw.wait("the entries in legate's central log", PUSH, || {
        let all = lines(&central);
        let ready = find(&all, "/open/one?x=1", 200).is_some()
            && find(&all, "/open/two", 200).is_some()
            && find(&all, "/private/me", 200).is_some()
            && find(&all, "/private/me", 401).is_some();
        ready.then_some(all)
    });
    let one = find(&all, "/open/one?x=1", 200).expect("entry");
    assert_eq!((one["node"].as_str(), one["node_cluster"].as_str()), (Some("e1"), Some("fleet-a")), "{one}");
    assert_eq!(one["method"], "GET");
    assert_eq!(one["service"], "alpha");
    assert_eq!(one["route"], "open-a");
    assert_eq!(one["client_ip"], "127.0.0.1");
    assert_eq!(one["request_id"], request_id.as_str(), "the log carries the id the upstream saw: {one}");
    assert!(one["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{one}");
    assert!(one["duration_ms"].is_number(), "{one}");
    let two = find(&all, "/open/two", 200).expect("entry");
    assert_eq!((two["node"].as_str(), two["method"].as_str()), (Some("e2"), Some("POST")), "{two}");
    let me = find(&all, "/private/me", 200).expect("entry");
    assert_eq!((me["user_id"].as_str(), me["auth"].as_str()), (Some("alice"), Some("verified")), "{me}");
    let denied = find(&all, "/private/me", 401).expect("entry");
    assert_eq!(denied["auth"], "denied", "{denied}");
    assert!(denied["user_id"].is_null(), "{denied}");

    // Each Envoy also wrote its own JSON line locally (stdout, in its log).
    // (Envoy flushes its file logs about once a second.)
    let line = gw.wait("Envoy's own JSON line", PUSH, || {
        lines(&gw.log("envoy-e1")).into_iter().find(|l| l["path"] == "/open/one?x=1")
    });
    assert_eq!(line["route"], "open-a", "{line}");
    assert!(gw.metric("legate_access_log_entries_total").unwrap_or(0.0) >= 4.0);
}

#[test]
fn the_access_log_flag_collects_from_a_policy_that_says_nothing_of_logs() {
    let mut gw = Gateway::new();
    let central = gw.path().join("central.log");
    gw.serve_args = vec!["--access-log".into(), central.display().to_string()];
    let (up, listen) = (gw.echo("up"), free_port());
    let policy = |defaults: &str| {
        format!(
            "listeners: [{{ name: l, port: {listen}, address: 127.0.0.1 }}]\n\
             services: [{{ name: up, url: \"http://127.0.0.1:{up}\" }}]\n\
             routes: [{{ name: all, match: {{ prefix: / }}, service: up }}]\n{defaults}"
        )
    };
    gw.write("gateway.yaml", &policy(""));
    gw.serve();
    let envoy = gw.envoy("edge-1", "default");
    let url = format!("http://127.0.0.1:{listen}/flagged");
    gw.wait("Envoy to serve", PUSH, || request("GET", &url, &[]).ok().filter(|r| r.status == 200));
    let entry = gw.wait("the entry in the central log", PUSH, || {
        lines(&central).into_iter().find(|l| l["path"] == "/flagged" && l["status"] == 200)
    });
    assert_eq!((entry["node"].as_str(), entry["route"].as_str()), (Some("edge-1"), Some("all")), "{entry}");
    let dump = envoy.admin("/config_dump?resource=dynamic_listeners").body;
    assert!(dump.contains("envoy.access_loggers.http_grpc"), "the listener streams to legate: {dump}");
    assert!(!dump.contains("envoy.access_loggers.file"), "and logs nowhere else: {dump}");
    let legate_log = || std::fs::read_to_string(gw.log("legate")).unwrap_or_default();
    assert!(!legate_log().contains("--access-log is set"), "{}", legate_log());

    // `access_log: off` wins over the flag, and legate says the flag has
    // nothing to collect.
    gw.write("gateway.yaml", &policy("defaults: { access_log: off }\n"));
    gw.wait("the warning that --access-log has nothing to collect", PUSH, || {
        legate_log().contains("--access-log is set, but the policy turns access logs off").then_some(())
    });
    // Connections Envoy opened before the change drain first; after that
    // no request reaches the central log.
    let mut n = 0;
    let logged = |path: &str| lines(&central).iter().any(|l| l["path"] == path);
    gw.wait("requests to stop reaching the central log", PUSH * 2, || {
        n += 1;
        let path = format!("/unlogged-{n}");
        assert_eq!(request("GET", &format!("http://127.0.0.1:{listen}{path}"), &[]).expect("get").status, 200);
        std::thread::sleep(Duration::from_millis(1500)); // longer than Envoy's flush interval
        (!logged(&path)).then_some(())
    });
    for i in 0..3 {
        let path = format!("/quiet-{i}");
        assert_eq!(request("GET", &format!("http://127.0.0.1:{listen}{path}"), &[]).expect("get").status, 200);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!((0..3).all(|i| !logged(&format!("/quiet-{i}"))), "logged despite `access_log: off`");
    let dump = envoy.admin("/config_dump?resource=dynamic_listeners").body;
    assert!(!dump.contains("envoy.access_loggers"), "Envoy still has a logger: {dump}");
}

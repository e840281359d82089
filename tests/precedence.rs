//! Route precedence as a client of Envoy sees it (docs/policy.md#route-precedence),
//! and routes that can never match: reported as warnings by `validate`
//! (failing with `--strict`), `plan`, the log and `/api/status`.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::process::Command;

use common::{request, Gateway, Resp, LEGATE};

/// The seed's versioning pattern (shared/gateway-pattern.md): v1 lists its
/// methods, v2 is chosen by a header. Written v1 first, as people write it.
const VERSIONED: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: orders-v1
    url: http://127.0.0.1:@UP
  - name: orders-v2
    url: http://127.0.0.1:@UP
routes:
  - name: orders
    match: { prefix: /api/orders, methods: [GET, POST, PUT, DELETE] }
    service: orders-v1
    request_headers: { add: { x-route: orders } }
  - name: orders-v2
    match: { prefix: /api/orders, headers: { api-version: v2 } }
    service: orders-v2
    rewrite: { prefix: /api/v2/orders }
    request_headers: { add: { x-route: orders-v2 } }
  - name: orders-beta
    match: { prefix: /api/orders, headers: { api-version: v2 }, query: { beta: "1" } }
    service: orders-v2
    request_headers: { add: { x-route: orders-beta } }
  - name: orders-any
    match: { prefix: /api/orders }
    service: orders-v1
    request_headers: { add: { x-route: orders-any } }
  - name: first-tie
    match: { prefix: /tie, headers: { x-a: "1" } }
    service: orders-v1
    request_headers: { add: { x-route: first-tie } }
  - name: second-tie
    match: { prefix: /tie, query: { a: "1" } }
    service: orders-v1
    request_headers: { add: { x-route: second-tie } }
  - name: orders-again
    match: { prefix: /api/orders, methods: [GET] }
    service: orders-v1
    request_headers: { add: { x-route: orders-again } }
"#;

fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    request(method, url, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// Which route answered (each adds `x-route`), and the path the upstream saw.
fn answered(r: &Resp) -> (String, String) {
    assert_eq!(r.status, 200, "expected an upstream answer, got {} {}", r.status, r.body);
    let j = r.json();
    (j["headers"]["x-route"].as_str().unwrap_or("<none>").to_owned(), j["path"].as_str().unwrap_or("").to_owned())
}

/// Line and column (from 1) of the first `needle` in `text`, at its start.
fn place(text: &str, needle: &str) -> (usize, usize) {
    let at = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the policy"));
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

#[test]
fn header_versioning_wins_over_methods_and_shadowed_routes_are_reported() {
    let mut gw = Gateway::new();
    let port = gw.serve_one(VERSIONED);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");

    // Header and query conditions rank above methods.
    let v2 = [("api-version", "v2")];
    assert_eq!(answered(&call("GET", &url("/api/orders/7"), &v2)), ("orders-v2".into(), "/api/v2/orders/7".into()));
    assert_eq!(answered(&call("POST", &url("/api/orders"), &v2)).0, "orders-v2");
    assert_eq!(answered(&call("PATCH", &url("/api/orders/7"), &v2)).0, "orders-v2");
    // More conditions first.
    assert_eq!(answered(&call("GET", &url("/api/orders/7?beta=1"), &v2)).0, "orders-beta");
    // Methods rank above no conditions at all.
    assert_eq!(answered(&call("GET", &url("/api/orders/7"), &[])), ("orders".into(), "/api/orders/7".into()));
    assert_eq!(answered(&call("PATCH", &url("/api/orders/7"), &[])).0, "orders-any");
    assert_eq!(answered(&call("GET", &url("/api/orders/7"), &[("api-version", "v3")])).0, "orders");
    // One header against one query condition: the order written decides.
    assert_eq!(answered(&call("GET", &url("/tie?a=1"), &[("x-a", "1")])).0, "first-tie");
    assert_eq!(answered(&call("GET", &url("/tie?a=1"), &[])).0, "second-tie");

    // `orders-again` can never match: `orders` takes every GET first.
    let policy = std::fs::read_to_string(gw.config.join("gateway.yaml")).expect("policy");
    let (line, column) = place(&policy, "orders-again\n");
    let (o_line, o_column) = place(&policy, "orders\n");
    let message = format!(
        "route `orders-again` can never match: route `orders` (gateway.yaml:{o_line}:{o_column}) is placed before it \
         and matches every request it would; give it a more specific match, or remove it \
         (docs/policy.md#route-precedence)"
    );
    let status = gw.status();
    let reload = &status["last_reload"];
    assert_eq!(reload["ok"], true, "{status}");
    assert_eq!(
        reload["warnings"],
        serde_json::json!([{ "file": "gateway.yaml", "line": line, "column": column, "message": message }]),
        "{status}"
    );
    // The log line carries FILE:LINE:COL in its message, in plain text (the
    // log is a file, not a terminal: no colours).
    let log = std::fs::read_to_string(gw.log("legate")).expect("legate's log");
    let expected = format!("gateway.yaml:{line}:{column}: warning: {message}");
    assert!(log.contains(&expected), "{expected}\nnot in the log:\n{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a log written to a file:\n{log}");

    // validate: the warning on stderr, exit 0; with --strict, exit 1.
    let validate = |strict: bool| {
        Command::new(LEGATE)
            .args(["validate", "--config"])
            .arg(&gw.config)
            .args(strict.then_some("--strict"))
            .output()
            .expect("run legate validate")
    };
    let plain = validate(false);
    assert!(plain.status.success(), "{plain:?}");
    assert_eq!(String::from_utf8_lossy(&plain.stderr).trim(), expected);
    let strict = validate(true);
    assert_eq!(strict.status.code(), Some(1), "{strict:?}");
    let stderr = String::from_utf8_lossy(&strict.stderr);
    assert!(stderr.contains(&expected) && stderr.contains("1 warning(s), and --strict fails on warnings"), "{stderr}");

    // plan shows it too, before what would change.
    let plan = Command::new(LEGATE)
        .args(["plan", "--config"])
        .arg(&gw.config)
        .args(["--admin-addr", &format!("127.0.0.1:{}", gw.admin_port)])
        .output()
        .expect("run legate plan");
    assert_eq!(plan.status.code(), Some(0), "nothing changes: {plan:?}");
    assert_eq!(String::from_utf8_lossy(&plan.stderr).trim(), expected);

    // Removing it leaves nothing to warn about.
    let fixed: String = policy.split("  - name: orders-again").next().expect("head").to_owned();
    gw.write("gateway.yaml", &fixed);
    gw.wait("the warning gone", common::STARTUP, || {
        let s = gw.status();
        (s["last_reload"]["warnings"] == serde_json::json!([]) && s["routes"].as_array()?.len() == 6).then_some(())
    });
}

//! Request aggregation end to end: the dashboard of the gateway-pattern
//! document through stock Envoy (JWT and rate limit at Envoy) and legate's
//! aggregator, against real upstreams: `legate echo` for users and orders,
//! a JSON server answering `{"count": 3}` for notifications.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::{Duration, Instant};

use common::jwt::{claims, jwks, Key};
use common::{free_port, request, request_from, Gateway, JsonServer, Resp};
use serde_json::{json, Value};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

const POLICY: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: user-service
    url: http://127.0.0.1:@USERS
  - name: order-service
    url: http://127.0.0.1:@ORDERS
  - name: notification-service
    url: http://127.0.0.1:@NOTIFICATIONS
aggregations:
  - name: dashboard
    path: /api/dashboard/{userId}
    methods: [GET]
    auth: jwt-main
    rate_limit: three-a-minute
    timeout: @TIMEOUT
    calls:
      user:          { service: user-service, path: "/users/{userId}" }
      recentOrders:  { service: order-service, path: "/orders?customerId={userId}&limit=5", default: [] }
      unreadCount:   { service: notification-service, path: "/notifications/{userId}/unread", pick: count, default: 0 }
routes:
  - name: users
    match: { prefix: /api/ }
    service: user-service
rate_limits:
  - name: three-a-minute
    limits: { minute: 3 }
    key: client_ip
auth:
  jwt:
    - name: jwt-main
      issuer: https://auth.example.com
      audiences: [orders-api]
      jwks: { file: keys/main.json }
      claims_to_headers: { sub: X-User-Id, role: X-User-Role }
"#;

struct Setup {
    gw: Gateway,
    listen: u16,
    token: String,
    notifications: JsonServer,
    /// The whole policy, as rendered before any edit.
    policy: String,
}

/// legate, one Envoy, echo upstreams for users and orders (`orders_args`
/// for `legate echo`), and notifications at `notifications` (a JSON server,
/// or a port where nothing listens when `down`).
fn setup(orders_args: &[&str], timeout: &str, notifications_down: bool) -> Setup {
    setup_with(orders_args, timeout, notifications_down, |p| p.to_owned())
}

/// [`setup`], with `edit` applied to the policy first.
fn setup_with(orders_args: &[&str], timeout: &str, notifications_down: bool, edit: fn(&str) -> String) -> Setup {
    let mut gw = Gateway::new();
    let key = Key::rsa("rsa-a", "a");
    gw.write("keys/main.json", &jwks(&[&key]));
    let users = gw.echo("user-service");
    let orders = gw.echo_with("order-service", orders_args);
    let notifications = JsonServer::start(r#"{"count": 3, "latest": {"id": "n-9"}}"#.to_owned());
    let notifications_port = if notifications_down { free_port() } else { notifications.port };
    let listen = free_port();
    let policy = POLICY
        .replace("@LISTEN", &listen.to_string())
        .replace("@USERS", &users.to_string())
        .replace("@ORDERS", &orders.to_string())
        .replace("@NOTIFICATIONS", &notifications_port.to_string())
        .replace("@TIMEOUT", timeout);
    gw.write("gateway.yaml", &edit(&policy));
    gw.serve();
    gw.envoy("edge-1", "default");
    let mut c = claims("https://auth.example.com", "orders-api", "user-42");
    c["role"] = json!("customer");
    let token = key.sign(&c);
    Setup { gw, listen, token, notifications, policy }
}

impl Setup {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.listen)
    }

    /// GET the dashboard of `user` with the token, from client address `from`.
    fn dashboard(&self, from: &str, user: &str, extra: &[(&str, &str)]) -> Resp {
        let auth = format!("Bearer {}", self.token);
        let mut headers = vec![("authorization", auth.as_str())];
        headers.extend_from_slice(extra);
        request_from(from, "GET", &self.url(&format!("/api/dashboard/{user}")), &headers)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[track_caller]
fn answer(r: &Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{:?}", r.headers);
    r.json()
}

#[test]
fn the_dashboard_answers_all_three_calls_with_the_verified_identity() {
    let s = setup(&[], "2s", false);
    let r = s.dashboard("127.0.0.2", "u1", &[("x-user-role", "admin")]);
    let j = answer(&r);
    // Keys in the order the calls are written.
    let at = |key: &str| r.body.find(&format!("\"{key}\":")).unwrap_or_else(|| panic!("{key} in {}", r.body));
    assert!(r.body.starts_with("{\"user\":") && at("recentOrders") < at("unreadCount"), "{}", r.body);
    assert!(s.dashboard("127.0.0.2", "u1", &[]).header("x-legate-partial").is_none());

    assert_eq!(j["user"]["service"], "user-service", "{j}");
    assert_eq!(j["user"]["path"], "/users/u1");
    assert_eq!(j["recentOrders"]["service"], "order-service");
    assert_eq!(j["recentOrders"]["path"], "/orders?customerId=u1&limit=5");
    assert_eq!(j["unreadCount"], 3, "pick: count");
    // Every call got the verified identity (not the forged role), and one request id.
    for call in ["user", "recentOrders"] {
        let h = &j[call]["headers"];
        assert_eq!(h["x-user-id"], "user-42", "{call}: {h}");
        assert_eq!(h["x-user-role"], "customer", "{call}: a forged role must not pass: {h}");
        assert!(h.get("authorization").is_none(), "{call}: the token stays at Envoy: {h}");
        assert!(h.get("x-legate-aggregation").is_none(), "{call}: {h}");
    }
    let id = j["user"]["headers"]["x-request-id"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "{j}");
    assert_eq!(j["recentOrders"]["headers"]["x-request-id"], id);

    // Parameters are encoded for where they stand: path segment, query value.
    // (`&` may stand in a path segment; in a query value it may not.)
    let j = answer(&s.dashboard("127.0.0.3", "a%2Fb%20c%26d", &[]));
    assert_eq!(j["user"]["path"], "/users/a%2Fb%20c&d", "{j}");
    assert_eq!(j["recentOrders"]["path"], "/orders?customerId=a%2Fb%20c%26d&limit=5", "{j}");
    assert!(s.notifications.hits() >= 3);

    // Auth at Envoy: no token, a bad token; the aggregator is not called.
    let calls_before =
        s.gw.metric("legate_aggregation_calls_total{aggregation=\"dashboard\",call=\"user\",result=\"ok\"}");
    let r = request("GET", &s.url("/api/dashboard/u1"), &[]).expect("answer");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");
    let r = request("GET", &s.url("/api/dashboard/u1"), &[("authorization", "Bearer nope")]).expect("answer");
    assert_eq!(r.status, 401, "{}", r.body);
    let calls_after =
        s.gw.metric("legate_aggregation_calls_total{aggregation=\"dashboard\",call=\"user\",result=\"ok\"}");
    assert_eq!(calls_before, calls_after);
    // Other methods and paths are not the aggregation's: the prefix route answers.
    let auth = format!("Bearer {}", s.token);
    let r = request("POST", &s.url("/api/dashboard/u1"), &[("authorization", &auth)]).expect("answer");
    assert_eq!(r.json()["service"], "user-service", "{}", r.body);
    let r = request("GET", &s.url("/api/dashboard/u1/more"), &[]).expect("answer");
    assert_eq!(r.json()["path"], "/api/dashboard/u1/more", "{}", r.body);

    // The rate limit at Envoy: three a minute per client, then a JSON 429.
    for i in 0..3 {
        assert_eq!(s.dashboard("127.0.0.4", "u1", &[]).status, 200, "request {i}");
    }
    let r = s.dashboard("127.0.0.4", "u1", &[]);
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.json()["error"], "too_many_requests");
}

#[test]
fn a_service_that_is_down_gives_its_default_and_the_rest_still_answer() {
    let s = setup(&[], "2s", true);
    let r = s.dashboard("127.0.0.2", "u1", &[]);
    let j = answer(&r);
    assert_eq!(j["unreadCount"], 0, "{j}");
    assert_eq!(j["user"]["path"], "/users/u1", "{j}");
    assert_eq!(j["recentOrders"]["service"], "order-service", "{j}");
    assert_eq!(r.header("x-legate-partial"), Some("unreadCount"));
    let failed =
        s.gw.metric("legate_aggregation_calls_total{aggregation=\"dashboard\",call=\"unreadCount\",result=\"error\"}");
    assert!(failed.is_some_and(|n| n >= 1.0), "{failed:?}");
}

#[test]
fn a_slow_service_gives_its_default_at_the_overall_timeout() {
    // Orders take 10 s; the aggregation answers after 1 s.
    let s = setup(&["--delay", "10000"], "1s", false);
    let t0 = Instant::now();
    let r = s.dashboard("127.0.0.2", "u1", &[]);
    let took = t0.elapsed();
    let j = answer(&r);
    assert_eq!(j["recentOrders"], json!([]), "{j}");
    assert_eq!(j["user"]["path"], "/users/u1", "{j}");
    assert_eq!(j["unreadCount"], 3, "{j}");
    assert_eq!(r.header("x-legate-partial"), Some("recentOrders"));
    // Not before the timeout, and long before the slow call would have ended.
    assert!(took >= Duration::from_millis(950) && took < Duration::from_secs(8), "answered after {took:?}");
}

#[test]
fn a_call_timeout_shorter_than_the_aggregation_s_ends_that_call_early() {
    let s = setup(&["--delay", "10000"], "6s", false);
    let text = std::fs::read_to_string(s.gw.config.join("gateway.yaml")).expect("policy");
    s.gw.write("gateway.yaml", &text.replace("default: [] }", "default: [], timeout: 300ms }"));
    // Only the aggregator's table changes (Envoy's config is the same): wait for the reload.
    let reloads = "legate_config_reloads_total{result=\"ok\"}";
    s.gw.wait("the reload", PUSH, || (s.gw.metric(reloads) >= Some(2.0)).then_some(()));
    let t0 = Instant::now();
    let r = s.dashboard("127.0.0.2", "u1", &[]);
    let took = t0.elapsed();
    let j = answer(&r);
    assert_eq!(j["recentOrders"], json!([]), "{j}");
    assert_eq!(j["unreadCount"], 3, "{j}");
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "answered after {took:?}");
}

#[test]
fn an_edited_aggregation_is_answered_as_soon_as_it_is_pushed() {
    let s = setup(&[], "2s", false);
    answer(&s.dashboard("127.0.0.2", "u1", &[]));
    let text = std::fs::read_to_string(s.gw.config.join("gateway.yaml")).expect("policy");
    let edited = text.replace(
        "      unreadCount:",
        "      latest:        { service: notification-service, path: \"/latest/{userId}\", pick: latest.id }\n      unreadCount:",
    );
    s.gw.write("gateway.yaml", &edited);
    // Each try from a client address of its own: three a minute each.
    let mut n = 0;
    let j = s.gw.wait("the new call in the answer", PUSH, || {
        n += 1;
        let r = s.dashboard(&format!("127.0.{}.{}", 1 + n / 250, 1 + n % 250), "u1", &[]);
        r.try_json().filter(|j| j.get("latest").is_some())
    });
    assert_eq!(j["latest"], "n-9", "{j}");

    // A broken edit (a call naming a parameter the path lacks) is refused and the last good one kept.
    s.gw.write("gateway.yaml", &edited.replace("/latest/{userId}", "/latest/{user}"));
    s.gw.wait("the refused reload", PUSH, || (s.gw.status()["last_reload"]["ok"] == false).then_some(()));
    let errors = s.gw.status()["last_reload"]["errors"].to_string();
    assert!(errors.contains("{user}") && errors.contains("did you mean `userId`"), "{errors}");
    assert_eq!(answer(&s.dashboard("127.0.0.6", "u1", &[]))["latest"], "n-9");
}

#[test]
fn the_aggregator_answers_only_aggregations_it_knows() {
    let s = setup(&[], "2s", false);
    let base = format!("http://127.0.0.1:{}", s.gw.aggregator_port);
    let r = request("GET", &format!("{base}/api/dashboard/u1"), &[("x-legate-aggregation", "nope")]).expect("answer");
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.json()["error"], "not_found");
    let r = request("GET", &format!("{base}/elsewhere"), &[("x-legate-aggregation", "dashboard")]).expect("answer");
    assert_eq!(r.status, 404, "{}", r.body);
    // A client can't pick another aggregation through Envoy: the header is Envoy's.
    let r = s.dashboard("127.0.0.2", "u1", &[("x-legate-aggregation", "nope")]);
    assert_eq!(answer(&r)["unreadCount"], 3);
}

/// `legate serve` on `config` with the given aggregator port and ports of
/// its own; its admin port.
fn legate_serve(config: &std::path::Path, aggregator: u16) -> (std::process::Command, u16) {
    let admin = free_port();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_legate"));
    cmd.args(["serve", "--config"]).arg(config).args([
        "--xds-addr",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-addr",
        &format!("127.0.0.1:{admin}"),
        "--aggregator-addr",
        &format!("127.0.0.1:{aggregator}"),
    ]);
    (cmd, admin)
}

/// `policy` without its `aggregations`.
fn without_aggregations(policy: &str) -> String {
    let (start, end) = (policy.find("aggregations:").expect("aggregations"), policy.find("routes:").expect("routes"));
    format!("{}{}", &policy[..start], &policy[end..])
}

#[test]
fn the_aggregator_listens_only_once_the_policy_has_aggregations() {
    let s = setup_with(&[], "2s", false, without_aggregations);
    let without = std::fs::read_to_string(s.gw.config.join("gateway.yaml")).expect("policy");
    // Served by the `users` route meanwhile.
    s.gw.wait("Envoy to serve", PUSH, || (s.dashboard("127.0.0.9", "u1", &[]).status == 200).then_some(()));
    assert!(!common::listening(s.gw.aggregator_port), "no aggregations: nothing holds the aggregator's address");

    // So a second replica on the same host and address starts as well.
    let other = tempfile::tempdir().expect("temp dir");
    std::fs::copy(s.gw.config.join("keys/main.json"), other.path().join("main.json")).expect("keys");
    std::fs::write(other.path().join("gateway.yaml"), without.replace("keys/main.json", "main.json")).expect("write");
    let (mut cmd, admin) = legate_serve(other.path(), s.gw.aggregator_port);
    s.gw.spawn("legate-2", &mut cmd);
    s.gw.wait("the second replica ready", common::STARTUP, || {
        common::get(&format!("http://127.0.0.1:{admin}/readyz")).ok().filter(|r| r.status == 200)
    });

    // A live edit adds the aggregation: the aggregator binds and answers.
    let with = s.policy.clone();
    s.gw.write("gateway.yaml", &with);
    let mut n = 0;
    let j = s.gw.wait("the dashboard answered by the aggregator", PUSH, || {
        n += 1;
        s.dashboard(&format!("127.0.1.{n}"), "u1", &[]).try_json().filter(|j| j.get("unreadCount").is_some())
    });
    assert_eq!(j["unreadCount"], 3, "{j}");
    assert!(
        std::fs::read_to_string(s.gw.log("legate")).unwrap_or_default().contains("aggregator listening"),
        "the bind is logged"
    );

    // A replica whose policy has aggregations from the start, on a taken
    // address, refuses to start and names the flag to change.
    std::fs::write(other.path().join("gateway.yaml"), with.replace("keys/main.json", "main.json")).expect("write");
    let (mut cmd, _) = legate_serve(other.path(), s.gw.aggregator_port);
    let mut child = cmd.stderr(std::process::Stdio::piped()).spawn().expect("legate serve");
    let status = common::wait_for("the third replica to give up", common::STARTUP, || child.try_wait().ok().flatten());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("read");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for the aggregator on 127.0.0.1:{}", s.gw.aggregator_port))
            && stderr.contains("--aggregator-addr"),
        "{stderr}"
    );
}

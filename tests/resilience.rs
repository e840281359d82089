//! Resilience end to end: circuit breakers, outlier detection, retries,
//! timeouts, active health checks and ring_hash, through stock Envoy to
//! upstreams the test controls (`legate echo` with `--status` and
//! `--fail-first`, stopped and restarted at will).
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::{Duration, Instant};

use common::{free_port, request, Envoy, Gateway, Resp};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

fn call(method: &str, url: &str) -> Resp {
    request(method, url, &[]).unwrap_or_else(|e| panic!("{e}"))
}

/// Which upstream answered (the echo's `--name`), or the status when none did.
fn who(r: &Resp) -> String {
    if r.status == 200 {
        r.json()["service"].as_str().unwrap_or("?").to_owned()
    } else {
        r.status.to_string()
    }
}

/// A gateway on `policy` (`@LISTEN`, `@PROBE` and the given `@NAME` ports
/// filled in) and one Envoy. Every policy has a `/probe` route to an
/// upstream of its own, so waiting for Envoy sends nothing to the upstreams
/// under test. Returns the base URL and the Envoy.
fn start(gw: &mut Gateway, policy: &str, ports: &[(&str, u16)]) -> (String, Envoy) {
    let (listen, probe) = (free_port(), gw.echo("probe"));
    let mut text = format!("{policy}\n  - {{ name: probe, url: \"http://127.0.0.1:{probe}\" }}\n");
    text = text.replace("@LISTEN", &listen.to_string());
    for (name, port) in ports {
        text = text.replace(name, &port.to_string());
    }
    gw.write("gateway.yaml", &text);
    gw.write("probe.yaml", "routes: [{ name: probe, match: { prefix: /probe }, service: probe }]\n");
    gw.serve();
    let envoy = gw.envoy("resilience", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    let url = format!("{base}/probe");
    gw.wait("Envoy to serve /probe", PUSH, || request("GET", &url, &[]).ok().filter(|r| r.status == 200));
    (base, envoy)
}

/// A counter from Envoy's stats.
fn envoy_stat(e: &Envoy, name: &str) -> u64 {
    let text = e.admin(&format!("/stats?filter=^{}$", name.replace('.', "%5C."))).body;
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))?.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn circuit_breaker_overflow_is_an_immediate_json_503() {
    let mut gw = Gateway::new();
    let slow = gw.echo("slow");
    let (base, _) = start(
        &mut gw,
        r"
listeners: [{ name: public, port: @LISTEN, address: 127.0.0.1 }]
routes: [{ name: all, match: { prefix: /slow }, service: slow }]
services:
  - name: slow
    url: http://127.0.0.1:@SLOW
    circuit_breaker: { max_requests: 1, max_pending_requests: 1 }",
        &[("@SLOW", slow)],
    );
    let url = format!("{base}/slow/delay/1500");
    let answers: Vec<(Resp, Duration)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u64)
            .map(|i| {
                let url = url.clone();
                s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(100 * i)); // the first one takes the slot
                    let t0 = Instant::now();
                    (call("GET", &url), t0.elapsed())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("client")).collect()
    });
    let statuses: Vec<u16> = answers.iter().map(|(r, _)| r.status).collect();
    assert_eq!(statuses, [200, 503, 503, 503], "one in flight, the rest overflow");
    let slow_took = answers[0].1;
    for (r, took) in &answers[1..] {
        assert_eq!(r.header("x-envoy-overloaded"), Some("true"), "{:?}", r.headers);
        assert_eq!(r.json()["error"], "service_unavailable", "{}", r.body);
        assert!(r.json()["message"].as_str().unwrap_or_default().contains("overloaded"), "{}", r.body);
        assert!(*took * 4 < slow_took, "refused at once ({took:?}), not after the slow request ({slow_took:?})");
    }
}

#[test]
fn a_failing_host_is_ejected_and_comes_back() {
    let mut gw = Gateway::new();
    let (good, bad) = (gw.echo("good"), gw.echo_with("bad", &["--status", "500"]));
    let (base, _) = start(
        &mut gw,
        r#"
listeners: [{ name: public, port: @LISTEN, address: 127.0.0.1 }]
routes: [{ name: all, match: { prefix: /pool }, service: pool }]
services:
  - name: pool
    endpoints: ["127.0.0.1:@GOOD", "127.0.0.1:@BAD"]
    outlier_detection: { consecutive_5xx: 3, interval: 500ms, base_ejection_time: 2s, max_ejection_percent: 50 }"#,
        &[("@GOOD", good), ("@BAD", bad)],
    );
    let url = format!("{base}/pool");
    // Round robin: the bad host gets every other request until its third
    // 500. Envoy ejects it on its main thread, after the worker that saw
    // the third 500 tells it, so one more request can reach it first (seen
    // once in CI): 3 or 4 failures, then none.
    let first: Vec<String> = (0..10).map(|_| who(&call("GET", &url))).collect();
    let failures = first.iter().filter(|w| *w == "500").count();
    assert!((3..=4).contains(&failures), "ejected after 3 failures in a row: {first:?}");
    let then: Vec<String> = (0..20).map(|_| who(&call("GET", &url))).collect();
    assert!(then.iter().all(|w| w == "good"), "all traffic to the healthy host: {then:?}");
    // After the ejection time it is tried again.
    gw.wait("the ejected host to get traffic again", Duration::from_secs(20), || {
        (who(&call("GET", &url)) == "500").then_some(())
    });
}

#[test]
fn retries_hide_one_failure_of_idempotent_requests_only_and_timeouts_are_504() {
    let mut gw = Gateway::new();
    let flaky_get = gw.echo_with("flaky-get", &["--fail-first", "1"]);
    let flaky_post = gw.echo_with("flaky-post", &["--fail-first", "1"]);
    let slow = gw.echo("slow");
    let (base, envoy) = start(
        &mut gw,
        r"
listeners: [{ name: public, port: @LISTEN, address: 127.0.0.1 }]
routes:
  - { name: get, match: { prefix: /get }, service: flaky-get }
  - { name: post, match: { prefix: /post }, service: flaky-post }
  - { name: slow, match: { prefix: /slow }, service: slow }
  - { name: patient, match: { prefix: /patient }, service: slow, timeout: 3s }
services:
  - name: flaky-get
    url: http://127.0.0.1:@GET
    retries: { attempts: 2, on: [5xx], per_try_timeout: 1s }
  - name: flaky-post
    url: http://127.0.0.1:@POST
    retries: { attempts: 2, on: [5xx] }
  - name: slow
    url: http://127.0.0.1:@SLOW
    timeout: 300ms",
        &[("@GET", flaky_get), ("@POST", flaky_post), ("@SLOW", slow)],
    );
    // GET: the first try fails, the retry answers; the client sees only the 200.
    let r = call("GET", &format!("{base}/get"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(envoy_stat(&envoy, "cluster.flaky-get.upstream_rq_retry"), 1);
    // POST is not idempotent: not retried, the failure reaches the client.
    let r = call("POST", &format!("{base}/post"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(envoy_stat(&envoy, "cluster.flaky-post.upstream_rq_retry"), 0);
    assert_eq!(call("POST", &format!("{base}/post")).status, 200, "it was the upstream's one failure");

    // The service's timeout gives a JSON 504; a route's own timeout wins.
    let r = call("GET", &format!("{base}/slow/delay/1000"));
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"], "gateway_timeout", "{}", r.body);
    assert_eq!(call("GET", &format!("{base}/patient/delay/1000")).status, 200, "route timeout 3s wins");
}

#[test]
fn health_checked_endpoints_leave_and_rejoin() {
    let mut gw = Gateway::new();
    let (a, b) = (gw.echo("a"), gw.echo("b"));
    let (base, _) = start(
        &mut gw,
        r#"
listeners: [{ name: public, port: @LISTEN, address: 127.0.0.1 }]
routes: [{ name: all, match: { prefix: /pool }, service: pool }]
services:
  - name: pool
    endpoints: ["127.0.0.1:@A", "127.0.0.1:@B"]
    health_check: { path: /healthz, interval: 300ms, timeout: 200ms, unhealthy_threshold: 1, healthy_threshold: 1 }"#,
        &[("@A", a), ("@B", b)],
    );
    let url = format!("{base}/pool");
    let sample = || (0..10).map(|_| who(&call("GET", &url))).collect::<Vec<String>>();
    gw.wait("both endpoints to serve", PUSH, || {
        let s = sample();
        (s.contains(&"a".to_owned()) && s.contains(&"b".to_owned())).then_some(())
    });
    gw.stop("echo-b");
    gw.wait("traffic to leave the stopped endpoint", PUSH, || sample().iter().all(|w| w == "a").then_some(()));
    assert!(sample().iter().all(|w| w == "a"), "and it stays away");
    gw.echo_at("b", b, &[]);
    gw.wait("the recovered endpoint to serve again", PUSH, || sample().contains(&"b".to_owned()).then_some(()));
}

#[test]
fn ring_hash_keeps_a_header_value_on_one_endpoint() {
    let mut gw = Gateway::new();
    let (a, b) = (gw.echo("a"), gw.echo("b"));
    let (base, _) = start(
        &mut gw,
        r#"
listeners: [{ name: public, port: @LISTEN, address: 127.0.0.1 }]
routes: [{ name: all, match: { prefix: /pool }, service: pool }]
services:
  - name: pool
    endpoints: ["127.0.0.1:@A", "127.0.0.1:@B"]
    load_balancing: ring_hash
    hash_key: { header: X-User }"#,
        &[("@A", a), ("@B", b)],
    );
    let url = format!("{base}/pool");
    let mut seen = std::collections::BTreeMap::new();
    // Sixteen users: the ring is built from the endpoints' (random) ports,
    // so a few users could all land on one endpoint by chance.
    for n in 0..16 {
        let user = format!("user-{n}");
        let answers: std::collections::BTreeSet<String> = (0..4)
            .map(|_| who(&request("GET", &url, &[("x-user", &user)]).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        assert_eq!(answers.len(), 1, "{user} always lands on one endpoint: {answers:?}");
        seen.insert(user, answers.into_iter().next().unwrap_or_default());
    }
    let used: std::collections::BTreeSet<&String> = seen.values().collect();
    assert_eq!(used.len(), 2, "the users spread over both endpoints: {seen:?}");
}

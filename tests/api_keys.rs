//! API keys end to end: `auth.api_keys` sets checked by stock Envoy's API
//! key filter, the caller's name passed on in a header clients can't forge.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use common::{request, Gateway, Resp};

const POLICY: &str = r#"
listeners:
  - name: public
    port: @LISTEN
    address: 127.0.0.1
services:
  - name: up
    url: http://127.0.0.1:@UP
routes:
  - name: partners
    match: { prefix: /partners }
    service: up
    auth: partners
  - name: either
    match: { prefix: /either }
    service: up
    auth: [partners, internal]
  - name: open
    match: { prefix: / }
    service: up
auth:
  api_keys:
    - name: partners
      keys: { partner-a: key-a-123, partner-b: key-b-456 }
      from: [{ header: apikey }, { query: apikey }]
      client_header: X-Consumer-Username
    - name: internal
      keys: { ops: ops-key-789 }
"#;

#[test]
fn api_keys_let_their_clients_in_and_no_one_else() {
    let mut gw = Gateway::new();
    let listen = gw.serve_one(POLICY);
    let get = |path: &str, headers: &[(&str, &str)]| -> Resp {
        request("GET", &format!("http://127.0.0.1:{listen}{path}"), headers).unwrap_or_else(|e| panic!("{e}"))
    };
    let refused = |r: &Resp| {
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"], "unauthorized", "{}", r.body);
    };
    refused(&get("/partners/x", &[]));
    refused(&get("/partners/x", &[("apikey", "nope")]));
    refused(&get("/partners/x", &[("apikey", "ops-key-789")]));

    // A key in the header or the query; the upstream learns who called, not the key.
    let r = get("/partners/x", &[("apikey", "key-a-123"), ("x-consumer-username", "admin")]);
    assert_eq!(r.status, 200, "{}", r.body);
    let h = &r.json()["headers"];
    assert_eq!(h["x-consumer-username"], "partner-a", "{h}");
    assert!(h.get("apikey").is_none(), "the key stays at Envoy: {h}");
    let r = get("/partners/x?apikey=key-b-456", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-consumer-username"], "partner-b");

    // Any of two sets, each from its own place (x-api-key by default).
    assert_eq!(get("/either", &[("x-api-key", "ops-key-789")]).status, 200);
    assert_eq!(get("/either", &[("apikey", "key-a-123")]).status, 200);
    refused(&get("/either", &[("x-api-key", "key-a-123x")]));

    // Public routes need no key, and the client header can't be forged there either.
    let r = get("/open", &[("x-consumer-username", "admin")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["headers"].get("x-consumer-username").is_none(), "{}", r.body);
}

//! Every mistake a user can make in policy files is reported as
//! `FILE:LINE:COL: message`, pointing at the offending line, with a message
//! a user can act on; all of them at once, in file and line order. The last
//! tests run `legate validate` itself.

use std::path::Path;
use std::process::{Command, Output};

use legate::policy::{load_dir, load_texts, Diagnostic};

/// The diagnostics for in-memory files, which must not load.
fn errors(files: &[(&str, &str)]) -> Vec<Diagnostic> {
    let texts: Vec<(String, String)> = files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect();
    match load_texts(&texts) {
        Ok(p) => panic!("expected errors, but the policy loaded: {p:?}"),
        Err(d) => d.0,
    }
}

/// `diags` are exactly the `FILE:LINE:COL` places given, in that order, and
/// each message holds its key words.
#[track_caller]
fn assert_errors(diags: &[Diagnostic], expected: &[(&str, &[&str])]) {
    let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
    let places: Vec<String> = diags.iter().map(|d| format!("{}:{}:{}", d.file, d.line, d.column)).collect();
    let want: Vec<&str> = expected.iter().map(|(p, _)| *p).collect();
    assert_eq!(places, want, "places differ; got:\n{}", shown.join("\n"));
    for (d, (_, words)) in diags.iter().zip(expected) {
        for w in *words {
            assert!(d.message.contains(w), "`{w}` missing from:\n{d}");
        }
    }
}

#[track_caller]
fn check(files: &[(&str, &str)], expected: &[(&str, &[&str])]) {
    assert_errors(&errors(files), expected);
}

// ---- the files themselves ---------------------------------------------------

#[test]
fn malformed_yaml_names_the_line_of_the_syntax_error() {
    let text = "listeners:\n  - name: public\n    port: 10000\n   address: 0.0.0.0\n";
    check(&[("gateway.yaml", text)], &[("gateway.yaml:4:4", &["did not find expected"])]);
}

#[test]
fn an_unclosed_flow_list_is_reported_once_and_loading_ends() {
    let text = "services:\n  - name: s\n    endpoints: [\"10.0.0.1:80\"\n";
    let diags = errors(&[("s.yaml", text)]);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].file.as_str(), diags[0].line), ("s.yaml", 4), "{}", diags[0]);
}

#[test]
fn a_tab_in_indentation_is_a_syntax_error() {
    let text = "listeners:\n  - name: public\n\tport: 10000\n";
    check(&[("tabs.yaml", text)], &[("tabs.yaml:3:1", &["tab character"])]);
}

#[test]
fn a_wrong_type_names_the_key_and_the_expected_type() {
    let text = "listeners:\n  - name: public\n    port: \"abc\"\n";
    check(&[("l.yaml", text)], &[("l.yaml:3:11", &["listeners[0].port", "wrong type", "\"abc\"", "u16"])]);
}

#[test]
fn a_port_out_of_range_is_a_wrong_type() {
    let text = "listeners:\n  - name: public\n    port: 70000\n";
    check(&[("l.yaml", text)], &[("l.yaml:3:11", &["listeners[0].port", "70000"])]);
}

#[test]
fn a_missing_required_key_is_named() {
    let text = "routes:\n  - name: r\n    service: s\n";
    check(&[("r.yaml", text)], &[("r.yaml:2:5", &["routes[0]", "missing field `match`"])]);
}

#[test]
fn a_key_given_twice_in_one_mapping_is_an_error() {
    let text = "listeners:\n  - name: public\n    port: 10000\n    port: 10001\n";
    // serde_yaml reports it at the listener's mapping, not at the second key.
    check(&[("l.yaml", text)], &[("l.yaml:2:5", &["duplicate field `port`"])]);
}

#[test]
fn a_list_is_not_a_header_match() {
    let text = "routes:\n  - name: r\n    match: { prefix: /, headers: { x-v: [a, b] } }\n    service: s\n";
    check(&[("r.yaml", text)], &[("r.yaml:3:41", &["a list is not a match", "regex"])]);
}

#[test]
fn a_kong_file_of_a_version_legate_does_not_read_is_refused_at_its_version() {
    // (Kong files themselves are tested in tests/kong.rs.)
    let text = "_format_version: \"0.9\"\nservices: []\n";
    check(&[("kong.yaml", text)], &[("kong.yaml:1:1", &["Kong `_format_version` 0.9 is not one legate reads"])]);
}

// ---- unknown and not-yet-supported keys --------------------------------------

#[test]
fn an_unknown_key_close_to_a_known_one_gets_a_did_you_mean() {
    let text = "listeners:\n  - name: public\n    port: 10000\nservices:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: { prefix: / }\n    servce: s\n";
    check(
        &[("routes.yaml", text)],
        &[
            // The route lacks `service` because of the typo; both are reported.
            ("routes.yaml:8:11", &["route `r` needs `service`, `split` or `respond`"]),
            ("routes.yaml:10:5", &["unknown key `servce` in a route", "did you mean `service`?"]),
        ],
    );
}

#[test]
fn unknown_keys_are_found_at_every_level() {
    let text = "listners: []\nroutes:\n  - name: r\n    listener: l\n    match: { prefx: /, headers: { x: { exactly: a } } }\n    service: s\n    rewrite: { prefix: /a, hots: b }\n    request_headers: { ad: { a: b } }\ndefaults:\n  response_header: {}\n";
    check(
        &[("p.yaml", text)],
        &[
            ("p.yaml:1:1", &["unknown key `listners` in the top level", "did you mean `listeners`?"]),
            ("p.yaml:4:15", &["listener `l`, which is not defined"]),
            ("p.yaml:5:12", &["exactly one of prefix, path or regex"]),
            ("p.yaml:5:14", &["unknown key `prefx` in a route match", "did you mean `prefix`?"]),
            ("p.yaml:5:38", &["`x` needs exactly one of exact, present or regex"]),
            ("p.yaml:5:40", &["unknown key `exactly` in a value match", "did you mean `exact`?"]),
            ("p.yaml:6:14", &["service `s`, which is not defined"]),
            ("p.yaml:7:28", &["unknown key `hots` in a rewrite", "did you mean `host`?"]),
            ("p.yaml:8:24", &["unknown key `ad` in a header change", "did you mean `add`?"]),
            ("p.yaml:10:3", &["unknown key `response_header` in defaults", "did you mean `response_headers`?"]),
        ],
    );
}

#[test]
fn an_unknown_key_with_no_close_match_lists_the_allowed_keys() {
    let text = "listeners:\n  - name: public\n    port: 10000\n    bandwidth: 10\n";
    check(
        &[("l.yaml", text)],
        &[(
            "l.yaml:4:5",
            &["unknown key `bandwidth` in a listener", "expected one of: name, port, address, hosts, fleets"],
        )],
    );
}

// ---- references --------------------------------------------------------------

const ONE_LISTENER: &str = "listeners:\n  - name: public\n    port: 10000\n";

#[test]
fn a_dangling_service_reference_suggests_the_closest_name() {
    let services = "services:\n  - name: order-service\n    url: http://10.0.0.1:80\n  - name: UserService\n    url: http://10.0.0.2:80\n";
    let routes = "routes:\n  - name: orders\n    match: { prefix: /orders }\n    service: order-servce\n  - name: users\n    match: { prefix: /users }\n    service: userservise\n  - name: split\n    match: { prefix: /s }\n    split: [{ service: payments, weight: 1 }]\n";
    check(
        &[("l.yaml", ONE_LISTENER), ("s.yaml", services), ("r.yaml", routes)],
        &[
            (
                "r.yaml:4:14",
                &[
                    "route `orders` sends to service `order-servce`, which is not defined",
                    "did you mean `order-service`?",
                ],
            ),
            ("r.yaml:7:14", &["service `userservise`", "did you mean `UserService`?"]),
            ("r.yaml:10:24", &["route `split` sends to service `payments`, which is not defined"]),
        ],
    );
    let unrelated = errors(&[("l.yaml", ONE_LISTENER), ("s.yaml", services), ("r.yaml", routes)]);
    assert!(!unrelated[2].message.contains("did you mean"), "no hint for a name that is not close: {}", unrelated[2]);
}

#[test]
fn a_dangling_listener_reference_suggests_the_closest_name() {
    let text = "listeners:\n  - name: public\n    port: 10000\n  - name: internal\n    port: 10001\nservices:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    listener: publc\n    match: { prefix: / }\n    service: s\n";
    check(
        &[("p.yaml", text)],
        &[("p.yaml:11:15", &["route `r` names listener `publc`, which is not defined", "did you mean `public`?"])],
    );
}

#[test]
fn a_route_without_a_listener_must_name_one_when_there_are_several() {
    let text = "listeners:\n  - name: public\n    port: 10000\n  - name: internal\n    port: 10001\nservices:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: s\n";
    check(
        &[("p.yaml", text)],
        &[("p.yaml:10:11", &["route `r` must say which listener serves it", "internal, public"])],
    );
}

#[test]
fn a_route_with_no_listener_defined_anywhere_is_an_error() {
    let text = "services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: s\n";
    check(&[("p.yaml", text)], &[("p.yaml:5:11", &["no listener", "define one under `listeners`"])]);
}

#[test]
fn a_reference_to_an_invalid_service_or_listener_is_not_reported_twice() {
    let text = "listeners:\n  - name: public\n    port: 0\nservices:\n  - name: s\n    url: http://10.0.0.1:80\n    timeout: soon\nroutes:\n  - name: r\n    listener: public\n    match: { prefix: / }\n    service: s\n";
    check(
        &[("p.yaml", text)],
        &[("p.yaml:3:11", &["port must be between 1 and 65535"]), ("p.yaml:7:14", &["`soon` is not a duration"])],
    );
}

#[test]
fn a_name_defined_in_two_files_names_the_other_place() {
    let a = "listeners:\n  - name: public\n    port: 10000\nservices:\n  - name: orders\n    url: http://10.0.0.1:80\nroutes:\n  - name: orders\n    match: { prefix: /orders }\n    service: orders\n";
    let b = "# the same names again\nroutes:\n  - name: orders\n    match: { prefix: /v2/orders }\n    service: orders\nservices:\n  - name: orders\n    url: http://10.0.0.2:80\nlisteners:\n  - name: public\n    port: 10001\n";
    check(
        &[("a.yaml", a), ("team/b.yaml", b)],
        &[
            ("team/b.yaml:3:11", &["route `orders` is defined twice; the other is at a.yaml:8:11"]),
            ("team/b.yaml:7:11", &["service `orders` is defined twice; the other is at a.yaml:5:11"]),
            ("team/b.yaml:10:11", &["listener `public` is defined twice; the other is at a.yaml:2:11"]),
        ],
    );
}

#[test]
fn defaults_given_in_two_documents_names_the_first() {
    let text = "defaults:\n  request_headers: { add: { a: b } }\n---\ndefaults:\n  response_headers: {}\n";
    check(&[("d.yaml", text)], &[("d.yaml:5:3", &["`defaults` is given twice; the other is at d.yaml:2:3"])]);
}

// ---- values ------------------------------------------------------------------

#[test]
fn bad_durations_are_errors_at_their_value() {
    let text = "listeners:\n  - name: public\n    port: 10000\nservices:\n  - name: s\n    url: http://10.0.0.1:80\n    connect_timeout: 5 seconds\n    timeout: 5x\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: s\n    timeout: \"-1s\"\n  - name: r2\n    match: { prefix: /b }\n    service: s\n    timeout: 10\n";
    let like = "write it like 250ms, 5s, 1m or 2h";
    check(
        &[("d.yaml", text)],
        &[
            ("d.yaml:7:22", &["`5 seconds` is not a duration", like]),
            ("d.yaml:8:14", &["`5x` is not a duration", like]),
            ("d.yaml:13:14", &["`-1s` is not a duration"]),
            ("d.yaml:17:14", &["`10` is not a duration"]),
        ],
    );
}

#[test]
fn a_zero_connect_timeout_is_an_error() {
    let text = "services:\n  - name: s\n    url: http://10.0.0.1:80\n    connect_timeout: 0s\n";
    check(&[("s.yaml", text)], &[("s.yaml:4:22", &["connect_timeout must be more than 0"])]);
}

#[test]
fn bad_regexes_are_errors_at_their_value() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: path\n    match: {{ regex: \"/api/(v1\" }}\n    service: s\n  - name: header\n    match:\n      prefix: /h\n      headers: {{ x-v: {{ regex: \"[a-\" }} }}\n    service: s\n  - name: rewrite\n    match: {{ prefix: /r }}\n    service: s\n    rewrite: {{ regex: \"*a\", substitution: b }}\n"
    );
    check(
        &[("re.yaml", &text)],
        &[
            ("re.yaml:9:21", &["`/api/(v1` is not a valid regex", "unclosed group"]),
            ("re.yaml:14:32", &["`[a-` is not a valid regex", "unclosed character class"]),
            ("re.yaml:19:23", &["`*a` is not a valid regex", "repetition operator missing expression"]),
        ],
    );
}

#[test]
fn a_port_clash_between_listeners_names_the_other_listener() {
    let a = "listeners:\n  - name: public\n    port: 10000\n  - name: loopback\n    port: 10000\n    address: 127.0.0.1\n  - name: edge\n    port: 10001\n    fleets: [edge]\n  - name: batch\n    port: 10001\n    fleets: [batch]\n";
    let b = "listeners:\n  - name: also-edge\n    port: 10001\n    fleets: [batch, edge]\n";
    check(
        &[("a.yaml", a), ("b.yaml", b)],
        &[
            ("a.yaml:5:11", &["port 10000 is already used by listener `public` at a.yaml:3:11"]),
            ("b.yaml:3:11", &["port 10001 is already used by listener `edge` at a.yaml:8:11"]),
        ],
    );
}

#[test]
fn listener_values_are_checked() {
    let text = "listeners:\n  - name: bad name\n    port: 0\n    address: localhost\n    hosts: []\n    fleets: []\n  - name: hosts\n    port: 1\n    hosts: [\"a.*.com\", \"ok.com\", \"OK.com\", \"\"]\n";
    check(
        &[("l.yaml", text)],
        &[
            ("l.yaml:2:11", &["listener name `bad name` must be 1-128 letters"]),
            ("l.yaml:3:11", &["port must be between 1 and 65535"]),
            ("l.yaml:4:14", &["address `localhost` is not an IP address"]),
            ("l.yaml:5:12", &["hosts is empty"]),
            ("l.yaml:6:13", &["fleets is empty"]),
            ("l.yaml:9:13", &["host `a.*.com` is not a domain"]),
            ("l.yaml:9:34", &["host `OK.com` is listed twice"]),
            ("l.yaml:9:44", &["host `` is not a domain"]),
        ],
    );
}

#[test]
fn an_empty_split_and_zero_weights_are_errors() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: a\n    url: http://10.0.0.1:80\n  - name: b\n    url: http://10.0.0.2:80\nroutes:\n  - name: empty\n    match: {{ prefix: /e }}\n    split: []\n  - name: zero\n    match: {{ prefix: /z }}\n    split:\n      - {{ service: a, weight: 0 }}\n      - {{ service: b, weight: 0 }}\n  - name: twice\n    match: {{ prefix: /t }}\n    split:\n      - {{ service: a, weight: 1 }}\n      - {{ service: a, weight: 1 }}\n"
    );
    check(
        &[("split.yaml", &text)],
        &[
            ("split.yaml:12:12", &["split is empty"]),
            ("split.yaml:16:7", &["split weights add up to 0"]),
            ("split.yaml:22:20", &["service `a` appears twice in the split"]),
        ],
    );
}

#[test]
fn service_addresses_are_checked() {
    let text = "services:\n  - name: path\n    url: http://orders:3000/api\n  - name: query\n    url: http://orders:3000?x=1\n  - name: scheme\n    url: ftp://orders:21\n  - name: not-a-url\n    url: orders:3000:x\n  - name: eps\n    endpoints: [\"10.0.0.1\", \"h:abc\", \"bad host:80\", \"h:0\", \"ok:80\"]\n  - name: none\n    endpoints: []\n  - name: both\n    url: http://a:1\n    endpoints: [\"a:1\"]\n  - name: neither\n    timeout: 1s\n";
    check(
        &[("s.yaml", text)],
        &[
            ("s.yaml:3:10", &["url `http://orders:3000/api` has a path", "rewrite"]),
            ("s.yaml:5:10", &["has a path"]),
            ("s.yaml:7:10", &["url scheme `ftp` is not supported; use http or https"]),
            ("s.yaml:9:10", &["url scheme `orders` is not supported"]),
            ("s.yaml:11:17", &["endpoint `10.0.0.1` is not host:port"]),
            ("s.yaml:11:29", &["endpoint `h:abc` is not host:port"]),
            ("s.yaml:11:38", &["endpoint `bad host:80` is not host:port"]),
            ("s.yaml:11:53", &["endpoint `h:0` is not host:port"]),
            ("s.yaml:13:16", &["endpoints is empty"]),
            ("s.yaml:16:16", &["either `url` or `endpoints`, not both"]),
            ("s.yaml:17:11", &["service `neither` needs `url` or `endpoints`"]),
        ],
    );
}

#[test]
fn an_unknown_load_balancing_policy_suggests_the_closest() {
    let text = "services:\n  - name: s\n    url: http://a:1\n    load_balancing: least_requests\n  - name: t\n    url: http://a:1\n    load_balancing: fastest\n";
    check(
        &[("s.yaml", text)],
        &[
            ("s.yaml:4:21", &["unknown load_balancing `least_requests`", "did you mean `least_request`?"]),
            ("s.yaml:7:21", &["unknown load_balancing `fastest`", "round_robin, least_request, random, ring_hash"]),
        ],
    );
}

#[test]
fn exactly_one_of_rules_are_enforced() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: prefix-and-path\n    match: {{ prefix: /a, path: /b }}\n    service: s\n  - name: no-path\n    match:\n      methods: [GET]\n    service: s\n  - name: service-and-split\n    match: {{ prefix: /c }}\n    service: s\n    split: [{{ service: s, weight: 1 }}]\n  - name: no-backend\n    match: {{ prefix: /d }}\n  - name: two-rewrites\n    match: {{ prefix: /e }}\n    service: s\n    rewrite: {{ prefix: /f, regex: a, substitution: b }}\n  - name: value-match\n    match: {{ prefix: /g, query: {{ q: {{ exact: a, present: true }} }} }}\n    service: s\n"
    );
    check(
        &[("one.yaml", &text)],
        &[
            ("one.yaml:9:12", &["a match needs exactly one of prefix, path or regex"]),
            ("one.yaml:13:7", &["a match needs exactly one of prefix, path or regex"]),
            ("one.yaml:18:12", &["a route has either `service` or `split`, not both"]),
            ("one.yaml:19:11", &["route `no-backend` needs `service`, `split` or `respond`"]),
            ("one.yaml:24:14", &["a rewrite has either `prefix` or `regex`, not both"]),
            ("one.yaml:26:38", &["`q` needs exactly one of exact, present or regex"]),
        ],
    );
}

#[test]
fn path_and_rewrite_values_are_checked() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: relative\n    match: {{ prefix: api }}\n    service: s\n  - name: regex-with-prefix-rewrite\n    match: {{ regex: \"/r/.*\" }}\n    service: s\n    rewrite: {{ prefix: /x }}\n  - name: relative-rewrite\n    match: {{ prefix: /y }}\n    service: s\n    rewrite: {{ prefix: z }}\n  - name: regex-alone\n    match: {{ prefix: /w }}\n    service: s\n    rewrite: {{ regex: a }}\n  - name: substitution-alone\n    match: {{ prefix: /v }}\n    service: s\n    rewrite: {{ substitution: a, host: \"\" }}\n  - name: method\n    match: {{ prefix: /m, methods: [GTE, FETCH] }}\n    service: s\n"
    );
    check(
        &[("p.yaml", &text)],
        &[
            ("p.yaml:9:22", &["`api` must start with `/`"]),
            ("p.yaml:14:24", &["rewrite.prefix needs a prefix or path match", "rewrite.regex"]),
            ("p.yaml:18:24", &["rewrite.prefix `z` must start with `/`"]),
            ("p.yaml:22:23", &["rewrite.regex needs a `substitution`"]),
            ("p.yaml:26:30", &["rewrite.substitution needs a `regex`"]),
            ("p.yaml:26:39", &["rewrite.host is empty"]),
            ("p.yaml:28:36", &["`GTE` is not an HTTP method", "did you mean `GET`?"]),
            ("p.yaml:28:41", &["`FETCH` is not an HTTP method"]),
        ],
    );
}

#[test]
fn invalid_header_names_are_errors() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: {{ prefix: /, headers: {{ \"bad header\": x }} }}\n    service: s\n    request_headers:\n      add: {{ \"x y\": z }}\n      remove: [\"a,b\"]\n    response_headers:\n      add: {{ \"x(1)\": v }}\ndefaults:\n  response_headers: {{ remove: [\"\"] }}\n"
    );
    check(
        &[("h.yaml", &text)],
        &[
            ("h.yaml:9:36", &["`bad header` is not a valid header name"]),
            ("h.yaml:12:14", &["`x y` is not a valid header name"]),
            ("h.yaml:13:16", &["`a,b` is not a valid header name"]),
            ("h.yaml:15:14", &["`x(1)` is not a valid header name"]),
            ("h.yaml:17:32", &["`` is not a valid header name"]),
        ],
    );
}

#[test]
fn host_and_pseudo_headers_cannot_be_changed_in_request_headers() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: {{ prefix: / }}\n    service: s\n    request_headers:\n      add: {{ Host: example.com }}\n      remove: [HOST, \":path\"]\ndefaults:\n  request_headers: {{ add: {{ host: a }} }}\n"
    );
    check(
        &[("h.yaml", &text)],
        &[
            ("h.yaml:12:14", &["`Host` cannot be changed here", "rewrite: { host: ... }"]),
            ("h.yaml:13:16", &["`HOST` cannot be changed here"]),
            ("h.yaml:13:22", &["`:path`"]),
            ("h.yaml:15:29", &["`host` cannot be changed here"]),
        ],
    );
}

// ---- auth --------------------------------------------------------------------

/// A usable JWKS (one P-256 key), for providers whose keys are not the point.
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

fn provider(name: &str) -> String {
    format!("  - name: {name}\n    issuer: https://{name}.example.com\n    jwks: {{ inline: '{JWKS}' }}\n")
}

#[test]
fn unknown_auth_providers_are_named_wherever_they_are_used() {
    let auth = format!("auth:\n  jwt:\n{}{}", provider("jwt-main"), provider("partner"));
    let rest = "services:\n  - name: s\n    url: http://10.0.0.1:80\n    auth: jwt-mian\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: s\n    auth: [partner, partnr]\n  - name: q\n    match: { prefix: /q }\n    service: s\n    auth: [partner, none]\n  - name: e\n    match: { prefix: /e }\n    service: s\n    auth: []\ndefaults:\n  auth: nobody\n";
    check(
        &[("auth.yaml", &auth), ("l.yaml", ONE_LISTENER), ("p.yaml", rest)],
        &[
            ("p.yaml:4:11", &["auth provider `jwt-mian` is not defined", "did you mean `jwt-main`?"]),
            ("p.yaml:9:21", &["auth provider `partnr` is not defined", "did you mean `partner`?"]),
            ("p.yaml:13:21", &["`none` cannot be one of several providers"]),
            ("p.yaml:17:11", &["auth list is empty"]),
            ("p.yaml:19:9", &["auth provider `nobody` is not defined"]),
        ],
    );
}

#[test]
fn an_auth_provider_without_any_providers_defined_says_where_to_define_them() {
    let routes = "routes:\n  - name: r\n    match: { prefix: / }\n    service: s\n    auth: jwt-main\nservices:\n  - name: s\n    url: http://10.0.0.1:80\n";
    check(
        &[("l.yaml", ONE_LISTENER), ("r.yaml", routes)],
        &[("r.yaml:5:11", &["auth provider `jwt-main` is not defined", "define it under `auth: jwt:`", "`none`"])],
    );
}

#[test]
fn bad_jwks_documents_are_errors_before_envoy_sees_them() {
    let text = r#"auth:
  jwt:
    - name: not-json
      issuer: https://a.example.com
      jwks: { inline: '{"keys": [' }
    - name: no-keys
      issuer: https://b.example.com
      jwks: { inline: '{"keys": []}' }
    - name: only-unknown-types
      issuer: https://c.example.com
      jwks: { inline: '{"keys": [{"kty": "XYZ"}]}' }
    - name: broken-rsa
      issuer: https://d.example.com
      jwks: { inline: '{"keys": [{"kty": "RSA", "kid": "k1", "e": "AQAB"}]}' }
"#;
    check(
        &[("auth.yaml", text)],
        &[
            ("auth.yaml:5:23", &["the inline JWKS is not valid JSON"]),
            ("auth.yaml:8:23", &["the inline JWKS has no usable keys"]),
            ("auth.yaml:11:23", &["has no usable keys"]),
            ("auth.yaml:14:23", &["key 0 (RSA, kid `k1`) has no `n`"]),
        ],
    );
}

#[test]
fn jwks_files_resolve_beside_their_policy_file_and_bad_ones_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let text = "auth:\n  jwt:\n    - name: good\n      issuer: https://a.example.com\n      jwks: { file: keys/good.json }\n    - name: missing\n      issuer: https://b.example.com\n      jwks: { file: keys/none.json }\n    - name: garbage\n      issuer: https://c.example.com\n      jwks: { file: keys/garbage.json }\n";
    write(root, "teams/auth.yaml", text);
    write(root, "teams/keys/good.json", JWKS);
    write(root, "teams/keys/garbage.json", "-----BEGIN PUBLIC KEY-----\n");
    let diags = load_dir(root).expect_err("two bad providers").0;
    let auth = Path::new("teams").join("auth.yaml").display().to_string();
    assert_errors(
        &diags,
        &[
            (&format!("{auth}:8:21"), &["cannot read JWKS file", "none.json"]),
            (&format!("{auth}:11:21"), &["JWKS file", "garbage.json", "is not valid JSON"]),
        ],
    );
    // Without the bad ones, it loads: `keys/good.json` is beside teams/auth.yaml.
    write(root, "teams/auth.yaml", &text.lines().take(5).map(|l| format!("{l}\n")).collect::<String>());
    let policy = load_dir(root).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(policy.read_files, vec![root.join("teams").join("keys/good.json")]);
}

#[test]
fn provider_settings_are_checked() {
    let text = r#"auth:
  jwt:
    - name: no-issuer
      jwks: { inline: '{"keys":[]}' }
    - name: empty-issuer
      issuer: ""
      jwks: { uri: "ftp://keys.example.com/jwks.json" }
    - name: no-jwks
      issuer: https://a.example.com
    - name: two-sources
      issuer: https://a.example.com
      jwks: { file: a.json, uri: "https://a.example.com/jwks", cache: 5m }
    - name: token-header
      issuer: https://a.example.com
      jwks: { uri: "https://a.example.com/jwks", cache: 0s }
      claims_to_headers: { sub: Authorization }
      clock_skew: soon
    - name: bad-from
      issuer: https://a.example.com
      jwks: { uri: "https://a.example.com/jwks" }
      from: { query: token, prefix: "Bearer " }
      clock_skew: 0s
"#;
    check(
        &[("auth.yaml", text)],
        &[
            ("auth.yaml:3:13", &["JWT provider `no-issuer` needs an `issuer`"]),
            ("auth.yaml:4:23", &["the inline JWKS has no usable keys"]),
            ("auth.yaml:6:15", &["issuer is empty"]),
            ("auth.yaml:7:20", &["url scheme `ftp` is not supported"]),
            ("auth.yaml:8:13", &["JWT provider `no-jwks` needs `jwks`"]),
            ("auth.yaml:12:13", &["`jwks` needs exactly one of `file`, `inline` or `uri`"]),
            ("auth.yaml:15:57", &["cache must be at least 1s"]),
            ("auth.yaml:16:33", &["`Authorization` carries the token of provider `token-header`"]),
            ("auth.yaml:17:19", &["`soon` is not a duration"]),
            ("auth.yaml:21:37", &["`prefix` goes with `header`, not `query`"]),
            ("auth.yaml:22:19", &["clock_skew must be at least 1s"]),
        ],
    );
}

// ---- rate limits ---------------------------------------------------------------

#[test]
fn rate_limit_settings_are_checked() {
    let text = r#"rate_limits:
  - name: windows
    limits: { minit: 10, hour: 0, day: -5 }
  - name: upside-down
    limits: { second: 100, minute: 50, hour: 60 }
  - name: keys
    limits: { minute: 1 }
    key: clientip
  - name: key-spec
    limits: { minute: 1 }
    key: { header: X-Key, claim: sub }
  - name: scope
    limits: { minute: 1 }
    scope: fleet
  - name: closed-local
    limits: { minute: 1 }
    fail_closed: true
  - name: no-limits
"#;
    check(
        &[("limits.yaml", text)],
        &[
            ("limits.yaml:3:15", &["unknown window `minit`", "did you mean `minute`?"]),
            ("limits.yaml:3:32", &["a limit must be a positive number of requests, not 0"]),
            ("limits.yaml:3:40", &["not -5"]),
            ("limits.yaml:5:23", &["`second: 100` allows more than `minute: 50`"]),
            ("limits.yaml:8:10", &["unknown key `clientip`", "did you mean `client_ip`?"]),
            ("limits.yaml:11:10", &["exactly one of `header` or `claim`"]),
            ("limits.yaml:14:12", &["unknown scope `fleet` (local or global)"]),
            ("limits.yaml:17:18", &["fail_closed applies to `scope: global` only"]),
            ("limits.yaml:18:11", &["rate limit `no-limits` needs `limits`"]),
        ],
    );
}

#[test]
fn rate_limit_references_are_checked_where_they_are_used() {
    let limits = "rate_limits:\n  - name: per-client\n    limits: { minute: 100 }\n  - name: per-user\n    limits: { minute: 10 }\n    key: { claim: sub }\n";
    let rest = "services:\n  - name: t\n    url: http://10.0.0.1:80\n    rate_limit: per-clinet\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: s\n    rate_limit: [per-client, none]\n  - name: u\n    match: { prefix: /u }\n    service: s\n    rate_limit: per-user\ndefaults:\n  rate_limit: []\n";
    check(
        &[("limits.yaml", limits), ("l.yaml", ONE_LISTENER), ("p.yaml", rest)],
        &[
            ("p.yaml:4:17", &["rate limit `per-clinet` is not defined", "did you mean `per-client`?"]),
            ("p.yaml:11:30", &["`none` cannot be one of several rate limits"]),
            ("p.yaml:15:17", &["counts by the JWT claim `sub`", "route `u` is public"]),
            ("p.yaml:17:15", &["rate_limit list is empty"]),
        ],
    );
}

// ---- resilience ------------------------------------------------------------------

#[test]
fn resilience_settings_are_checked() {
    let text = r#"services:
  - name: a
    url: http://10.0.0.1:80
    retries: { attempts: -1, on: [5xx, timeout], per_try_timeout: 0s }
  - name: b
    url: http://10.0.0.1:80
    outlier_detection: { consecutive_5xx: -1, max_ejection_percent: 150 }
    circuit_breaker: { max_requests: 0 }
  - name: c
    url: http://10.0.0.1:80
    health_check: { interval: 1s, timeout: 2s }
    hash_key: { header: X-User }
  - name: d
    url: http://10.0.0.1:80
    timeout: 1s
    retries: { attempts: 3, per_try_timeout: 2s, methods: [GET, FETCH] }
"#;
    let routes = "routes:\n  - name: r\n    match: { prefix: / }\n    service: d\n";
    check(
        &[("l.yaml", ONE_LISTENER), ("r.yaml", routes), ("s.yaml", text)],
        &[
            ("s.yaml:4:26", &["attempts must be a whole number from 0 to 4294967295, not -1"]),
            ("s.yaml:4:40", &["unknown retry condition `timeout`"]),
            ("s.yaml:4:67", &["per_try_timeout must be more than 0"]),
            ("s.yaml:7:43", &["consecutive_5xx must be a whole number from 1 to 4294967295, not -1"]),
            ("s.yaml:7:69", &["max_ejection_percent is a percentage (0-100), not 150"]),
            (
                "s.yaml:8:38",
                &["max_requests must be a whole number from 1 to 4294967295, not 0", "refuse every request"],
            ),
            ("s.yaml:11:19", &["health_check needs a `path`"]),
            ("s.yaml:11:44", &["the health check timeout is longer than its interval"]),
            ("s.yaml:12:15", &["hash_key goes with `load_balancing: ring_hash`"]),
            ("s.yaml:16:65", &["`FETCH` is not an HTTP method"]),
        ],
    );
    // Once the service is valid, its route's timeout is checked against the
    // retries' per-try timeout.
    let fixed = text.replace(", FETCH]", "]");
    check(
        &[("l.yaml", ONE_LISTENER), ("r.yaml", routes), ("s.yaml", &fixed)],
        &[
            ("r.yaml:2:11", &["route `r` times out after 1s", "per_try_timeout 2s"]),
            ("s.yaml:4:26", &["attempts must be"]),
            ("s.yaml:4:40", &["unknown retry condition"]),
            ("s.yaml:4:67", &["per_try_timeout must be more than 0"]),
            ("s.yaml:7:43", &["consecutive_5xx"]),
            ("s.yaml:7:69", &["max_ejection_percent"]),
            ("s.yaml:8:38", &["max_requests"]),
            ("s.yaml:11:19", &["health_check needs a `path`"]),
            ("s.yaml:11:44", &["longer than its interval"]),
            ("s.yaml:12:15", &["hash_key goes with"]),
        ],
    );
}

// ---- TLS ---------------------------------------------------------------------------

/// A certificate for `name` and its key, as PEM, valid until `not_after`.
fn certificate(name: &str, not_after: (i32, u8, u8)) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let cert = params.self_signed(&key).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

#[test]
fn tls_files_are_read_parsed_and_matched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let (good_cert, good_key) = certificate("good.test", (2099, 1, 1));
    let (_, other_key) = certificate("other.test", (2099, 1, 1));
    write(root, "certs/good.crt", &good_cert);
    write(root, "certs/good.key", &good_key);
    write(root, "certs/other.key", &other_key);
    write(root, "certs/not-pem.crt", "this is not a certificate\n");
    let text = r#"listeners:
  - name: mismatch
    port: 10001
    tls: { cert: certs/good.crt, key: certs/other.key }
  - name: garbage
    port: 10002
    tls: { cert: certs/not-pem.crt, key: certs/good.key }
  - name: missing
    port: 10003
    tls: { cert: certs/good.crt, key: certs/none.key }
  - name: settings
    port: 10004
    tls: { cert: certs/good.crt, key: certs/good.key, min_version: "1.1", alpn: [h3] }
  - name: no-tls
    port: 10005
    http_redirect_port: 10006
  - name: clash
    port: 10007
    tls: { cert: certs/good.crt, key: certs/good.key }
    http_redirect_port: 10008
  - name: valid
    port: 10008
"#;
    write(root, "listeners.yaml", text);
    let diags = load_dir(root).expect_err("bad TLS").0;
    assert_errors(
        &diags,
        &[
            ("listeners.yaml:4:39", &["the key in", "other.key", "does not belong to the certificate in", "good.crt"]),
            ("listeners.yaml:7:18", &["not-pem.crt", "holds no PEM certificate"]),
            ("listeners.yaml:10:39", &["cannot read the key file", "none.key"]),
            ("listeners.yaml:13:68", &["min_version `1.1` is not supported"]),
            ("listeners.yaml:13:82", &["ALPN protocol `h3` is not supported"]),
            ("listeners.yaml:16:25", &["http_redirect_port redirects to https, so the listener needs `tls`"]),
            ("listeners.yaml:22:11", &["port 10008 is already used by listener `clash`"]),
        ],
    );
    // No message holds key material.
    let key_line = good_key.lines().nth(1).expect("a key line");
    assert!(diags.iter().all(|d| !d.message.contains(key_line) && !d.message.contains("PRIVATE KEY")), "{diags:?}");
}

#[test]
fn an_expired_certificate_is_a_warning_not_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, key) = certificate("old.test", (2021, 1, 1));
    write(dir.path(), "old.crt", &cert);
    write(dir.path(), "old.key", &key);
    write(
        dir.path(),
        "gateway.yaml",
        "listeners:\n  - name: web\n    port: 10443\n    tls: { cert: old.crt, key: old.key }\n",
    );
    let policy = load_dir(dir.path()).unwrap_or_else(|e| panic!("an expired certificate still loads:\n{e}"));
    let w = policy.warnings.first().expect("a warning");
    assert_eq!((w.file.as_str(), w.line, w.column), ("gateway.yaml", 4, 18), "{w}");
    assert!(w.message.contains("expired on"), "{w}");
    let out = validate(dir.path());
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gateway.yaml:4:18: warning: the certificate in"), "{stderr}");
}

/// `services[].tls`: what is checked of an https service's certificate.
#[test]
fn upstream_tls_mistakes_are_reported_where_they_are() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let (cert, _) = certificate("ca.test", (2099, 1, 1));
    write(root, "certs/ca.pem", &cert);
    write(root, "certs/not-pem.pem", "not a certificate\n");
    let text = r#"listeners:
  - { name: public, port: 10000 }
services:
  - name: plain
    url: http://a.example.com
    tls: { ca: certs/ca.pem }
  - name: pool
    endpoints: ["10.0.0.1:443"]
    tls: { ca: certs/ca.pem }
  - name: both
    url: https://b.example.com
    tls: { ca: certs/ca.pem, verify: false }
  - name: missing
    url: https://c.example.com
    tls: { ca: certs/none.pem }
  - name: not-pem
    url: https://d.example.com
    tls: { ca: certs/not-pem.pem }
  - name: bad-name
    endpoints: ["10.0.0.2:443"]
    tls: { server_name: "bad name" }
  - name: typo
    url: https://e.example.com
    tls: { verfy: false }
  - name: good
    endpoints: ["10.0.0.3:443"]
    tls: { ca: certs/ca.pem, server_name: ledger.internal }
"#;
    write(root, "gateway.yaml", text);
    let diags = load_dir(root).expect_err("bad upstream TLS").0;
    assert_errors(
        &diags,
        &[
            ("gateway.yaml:6:10", &["`tls` is for https services; write the url as https://"]),
            ("gateway.yaml:9:10", &["give `server_name`", "or `verify: false`"]),
            ("gateway.yaml:12:16", &["`ca` is not used with `verify: false`"]),
            ("gateway.yaml:15:16", &["cannot read the CA file", "none.pem"]),
            ("gateway.yaml:18:16", &["not-pem.pem", "holds no PEM certificate"]),
            ("gateway.yaml:21:25", &["server_name `bad name` is not a host name or an IP address"]),
            ("gateway.yaml:24:12", &["unknown key `verfy` in a service's tls; did you mean `verify`?"]),
        ],
    );
}

#[test]
fn an_unchecked_upstream_certificate_is_a_warning() {
    let policy = load_texts(&[(
        "gateway.yaml".to_owned(),
        "services:\n  - name: s\n    url: https://s.example.com\n    tls: { verify: false }\n".to_owned(),
    )])
    .unwrap_or_else(|e| panic!("verify: false loads:\n{e}"));
    let w = policy.warnings.first().expect("a warning");
    assert_eq!((w.file.as_str(), w.line, w.column), ("gateway.yaml", 4, 20), "{w}");
    assert!(w.message.contains("certificate is not checked"), "{w}");
    let tls = policy.services["s"].tls.as_ref().expect("TLS");
    assert_eq!(tls.verify, legate::policy::Verify::Off);
}

// ---- CORS and rewrites -------------------------------------------------------------

#[test]
fn cors_and_rewrite_substitutions_are_checked() {
    let routes = r#"routes:
  - name: a
    match: { prefix: /a }
    service: s
    cors: { origins: ["app.example.com", "*", { regex: "(" }], methods: [GET, FETCH], headers: ["bad header"], credentials: true }
  - name: b
    match: { prefix: /b }
    service: s
    cors: { methods: [GET] }
  - name: c
    match: { prefix: /c }
    service: s
    rewrite: { regex: '^/c/([^/]+)$', substitution: '/items/\2' }
  - name: d
    match: { prefix: /d }
    service: s
    rewrite: { regex: '^/d/(.*)$', substitution: '/x/\n' }
"#;
    let services = "services:\n  - name: s\n    url: http://10.0.0.1:80\n";
    check(
        &[("l.yaml", ONE_LISTENER), ("r.yaml", routes), ("s.yaml", services)],
        &[
            ("r.yaml:5:23", &["origin `app.example.com` is not scheme://host[:port]"]),
            ("r.yaml:5:56", &["`(` is not a valid regex"]),
            ("r.yaml:5:79", &["`FETCH` is not an HTTP method"]),
            ("r.yaml:5:97", &["`bad header` is not a valid header name"]),
            ("r.yaml:5:125", &["browsers refuse credentials with origin `*`"]),
            ("r.yaml:9:11", &["cors needs `origins`"]),
            ("r.yaml:13:53", &["`\\2` names group 2, but the regex has 1"]),
            ("r.yaml:17:50", &["must be followed by a group number"]),
        ],
    );
}

// ---- access logs -----------------------------------------------------------------

#[test]
fn access_log_settings_are_checked() {
    let bad = |text: &str, at: &str, words: &[&str]| {
        let file = format!("{ONE_LISTENER}defaults:\n  access_log: {text}\n");
        check(&[("d.yaml", &file)], &[(at, words)]);
    };
    bad("loud", "d.yaml:5:15", &["access_log `loud`", "`off`"]);
    bad("{ format: xml }", "d.yaml:5:25", &["format `xml` is json or text"]);
    bad("{ path: logs/access.log }", "d.yaml:5:23", &["stdout, stderr, legate or an absolute file path"]);
    bad("{ paht: stdout }", "d.yaml:5:17", &["unknown key `paht` in access_log", "did you mean `path`?"]);
    let tracing = |text: &str, at: &str, words: &[&str]| {
        let file = format!("{ONE_LISTENER}defaults:\n  tracing: {text}\n");
        check(&[("d.yaml", &file)], &[(at, words)]);
    };
    tracing("{ service_name: gw }", "d.yaml:5:12", &["tracing needs a `collector`"]);
    tracing("{ collector: otel }", "d.yaml:5:25", &["endpoint `otel` is not host:port"]);
    tracing(
        "{ collector: \"otel:4317\", sampling: 150 }",
        "d.yaml:5:48",
        &["sampling is a percentage (0-100), not 150"],
    );
    for ok in ["off", "{ format: text, path: stderr }", "{ path: /var/log/envoy/access.log }", "{ path: legate }"] {
        let file = format!("{ONE_LISTENER}defaults:\n  access_log: {ok}\n");
        let texts = vec![("d.yaml".to_owned(), file)];
        load_texts(&texts).unwrap_or_else(|e| panic!("`{ok}` is valid:\n{e}"));
    }
}

// ---- many errors at once ------------------------------------------------------

#[test]
fn a_file_with_several_errors_reports_all_of_them_in_line_order() {
    // Written so that validation meets them out of line order: services are
    // checked before routes, and listeners before services.
    let text = "routes:\n  - name: r\n    match: { prefix: /, methods: [GTE] }\n    service: missing\n    timeout: soon\nservices:\n  - name: s\n    url: http://s:1/path\nlisteners:\n  - name: public\n    port: 0\n    bogus: 1\n";
    check(
        &[("many.yaml", text)],
        &[
            ("many.yaml:3:35", &["`GTE` is not an HTTP method"]),
            ("many.yaml:4:14", &["service `missing`, which is not defined"]),
            ("many.yaml:5:14", &["`soon` is not a duration"]),
            ("many.yaml:8:10", &["has a path"]),
            ("many.yaml:11:11", &["port must be between 1 and 65535"]),
            ("many.yaml:12:5", &["unknown key `bogus`"]),
        ],
    );
}

#[test]
fn errors_in_several_files_are_all_reported_in_file_order() {
    let z = "listeners:\n  - name: public\n    port: 10000\n    adress: 0.0.0.0\n";
    let a = "routes:\n  - name: r\n    match: { prefix: / }\n    service: nowhere\n";
    let m = "services:\n  - name: s\n    url: http://s:1\n    timeout: 5 s\n";
    let broken = "services: [\n";
    check(
        &[("z.yaml", z), ("a/routes.yaml", a), ("m.yml", m), ("b.yaml", broken)],
        &[
            ("a/routes.yaml:4:14", &["service `nowhere`, which is not defined"]),
            ("b.yaml:2:1", &["did not find expected"]),
            ("m.yml:4:14", &["`5 s` is not a duration"]),
            ("z.yaml:4:5", &["unknown key `adress` in a listener", "did you mean `address`?"]),
        ],
    );
}

#[test]
fn a_syntax_error_in_one_file_does_not_hide_errors_in_another() {
    let bad = "listeners:\n  - name: public\n    port: [10000\n";
    let other = "services:\n  - name: s\n    url: ftp://s:1\n";
    let diags = errors(&[("a.yaml", bad), ("b.yaml", other)]);
    assert!(diags.iter().any(|d| d.file == "a.yaml"), "{diags:?}");
    assert!(diags.iter().any(|d| d.file == "b.yaml" && d.line == 3 && d.message.contains("ftp")), "{diags:?}");
}

// ---- reading folders -----------------------------------------------------------

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn load_dir_names_files_relative_to_the_folder_including_subfolders() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "listeners.yaml", ONE_LISTENER);
    write(
        dir.path(),
        "teams/orders/routes.yml",
        "routes:\n  - name: r\n    match: { prefix: / }\n    service: orders\n",
    );
    write(dir.path(), "notes.txt", "not: [yaml");
    write(dir.path(), ".swap.yaml", "not: [yaml");
    let diags = load_dir(dir.path()).expect_err("dangling service").0;
    let teams = Path::new("teams").join("orders").join("routes.yml");
    assert_errors(
        &diags,
        &[(&format!("{}:4:14", teams.display()), &["route `r` sends to service `orders`, which is not defined"])],
    );
}

#[test]
fn load_dir_reports_a_missing_folder_and_an_unreadable_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let diags = load_dir(&missing).expect_err("no folder").0;
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].file, missing.display().to_string());
    assert!(diags[0].message.contains("cannot read the policy folder"), "{}", diags[0]);

    std::fs::write(dir.path().join("latin1.yaml"), b"listeners: [\xe9]\n").expect("write");
    let diags = load_dir(dir.path()).expect_err("not UTF-8").0;
    assert_errors(&diags, &[("latin1.yaml:1:1", &["cannot read file"])]);
}

// ---- `legate validate` -------------------------------------------------------

fn validate(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_legate"))
        .args(["validate", "--config"])
        .arg(dir)
        .output()
        .expect("run legate validate")
}

#[test]
fn cli_validate_prints_a_one_line_summary_and_exits_0_when_valid() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "listeners.yaml", ONE_LISTENER);
    write(
        dir.path(),
        "sub/services.yaml",
        "services:\n  - name: s\n    url: http://s:1\n  - name: t\n    endpoints: [\"10.0.0.1:80\"]\n",
    );
    write(
        dir.path(),
        "sub/deeper/routes.yaml",
        "routes:\n  - name: a\n    match: { prefix: /a }\n    service: s\n  - name: b\n    match: { prefix: /b }\n    service: t\n",
    );
    let out = validate(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout}");
    assert!(stdout.contains("valid") && stdout.contains("1 listener, 2 services, 2 routes"), "{stdout}");
}

#[test]
fn cli_validate_prints_every_error_as_file_line_col_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "listeners.yaml", "listeners:\n  - name: public\n    port: 10000\n    hots: [\"*\"]\n");
    write(
        dir.path(),
        "teams/orders.yaml",
        "routes:\n  - name: r\n    match: { prefix: / }\n    service: orders\n    timeout: 5 s\n",
    );
    let out = validate(dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {stderr}");
    let orders = Path::new("teams").join("orders.yaml");
    let orders = orders.display();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "listeners.yaml:4:5: unknown key `hots` in a listener; did you mean `hosts`?".to_owned(),
            format!("{orders}:4:14: route `r` sends to service `orders`, which is not defined"),
            format!("{orders}:5:14: `5 s` is not a duration; write it like 250ms, 5s, 1m or 2h"),
        ],
        "stderr: {stderr}"
    );
    assert!(!stdout.contains(&dir.path().display().to_string()), "paths are relative to DIR: {stdout}");
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn cli_validate_reports_a_missing_folder_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-config");
    let out = validate(&missing);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&missing.display().to_string()) && stdout.contains("cannot read the policy folder"),
        "{stdout}"
    );
}

#[test]
fn cli_validate_reports_a_file_given_as_the_folder_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "gateway.yaml", ONE_LISTENER);
    let out = validate(&dir.path().join("gateway.yaml"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("gateway.yaml:1:1: cannot read the policy folder"), "{stdout}");
}

// ---- aggregations --------------------------------------------------------------

const AGG_SERVICES: &str = "listeners:\n  - name: public\n    port: 10000\nservices:\n  - name: user-service\n    url: http://10.0.0.1:80\n  - name: order-service\n    url: http://10.0.0.2:80\n";

#[test]
fn aggregation_mistakes_are_reported_where_they_are() {
    let text = format!(
        "{AGG_SERVICES}aggregations:
  - name: dashboard
    path: /api/dashboard/{{userId}}
    timeout: soon
    calls:
      user: {{ service: user-service, path: \"/users/{{id}}\" }}
      orders: {{ service: order-servce, path: \"/orders?c={{userId}}\" }}
      feed: {{ service: user-service, path: \"/feed/{{userId\", pick: a..b }}
      twice: {{ service: user-service, path: /a }}
      twice: {{ service: user-service, path: /b }}
      bad: {{ servic: user-service }}
  - name: other
    path: /x/{{a}}/y{{b}}
    calls: {{}}
  - name: third
    path: /t/{{a}}/{{a}}
    calls:
      x: {{ service: user-service, path: /x, timeout: 0s }}
"
    );
    check(
        &[("a.yaml", &text)],
        &[
            ("a.yaml:12:14", &["`soon` is not a duration"]),
            (
                "a.yaml:14:44",
                &["`{id}` is not a parameter of the aggregation's path", "it has {userId}", "{query.NAME}"],
            ),
            (
                "a.yaml:15:26",
                &["call `orders` names service `order-servce`, which is not defined", "did you mean `order-service`?"],
            ),
            ("a.yaml:16:44", &["has a `{` without its `}`"]),
            ("a.yaml:16:67", &["pick is a field name, or a dotted path"]),
            ("a.yaml:18:7", &["call `twice` is given twice"]),
            ("a.yaml:19:7", &["call `bad` needs a `service`"]),
            ("a.yaml:19:7", &["call `bad` needs a `path`"]),
            ("a.yaml:19:14", &["unknown key `servic` in a call; did you mean `service`?"]),
            ("a.yaml:20:11", &["aggregation `other` has no `calls`"]),
            ("a.yaml:21:11", &["a parameter is a whole segment"]),
            ("a.yaml:24:11", &["names the parameter `a` twice"]),
            ("a.yaml:26:54", &["timeout must be more than 0"]),
        ],
    );
}

#[test]
fn aggregation_paths_that_clash_with_routes_or_each_other_are_errors() {
    let text = format!(
        "{AGG_SERVICES}routes:
  - name: me
    match: {{ path: /api/dashboard/me }}
    service: user-service
  - name: dashboard-all
    match: {{ prefix: /api/dashboard/ }}
    service: user-service
  - name: posts-only
    match: {{ path: /api/dashboard/posted, methods: [POST] }}
    service: user-service
aggregations:
  - name: dashboard
    path: /api/dashboard/{{userId}}
    calls:
      user: {{ service: user-service, path: \"/users/{{userId}}\" }}
  - name: by-section
    path: /api/{{section}}/{{userId}}
    methods: [POST]
    calls:
      user: {{ service: user-service, path: \"/users/{{userId}}?s={{section}}\" }}
  - name: me
    path: /me
    calls:
      user: {{ service: user-service, path: /users/me }}
"
    );
    // The prefix route is not a clash: the aggregation is more specific and
    // wins its paths, the route keeps the rest. A GET aggregation and a
    // POST route don't meet; a POST aggregation meets a POST route and a
    // route for every method.
    check(
        &[("a.yaml", &text)],
        &[
            ("a.yaml:21:11", &["aggregation `dashboard` (`/api/dashboard/{userId}`) and route `me`'s path `/api/dashboard/me` (at a.yaml:10:11)", "change one of the paths or their methods"]),
            ("a.yaml:25:11", &["aggregation `by-section`", "route `me`'s path"]),
            ("a.yaml:25:11", &["aggregation `by-section`", "route `posts-only`'s path `/api/dashboard/posted` (at a.yaml:16:11)"]),
            ("a.yaml:29:11", &["aggregation `me` has the name of a route or aggregation at a.yaml:10:11"]),
        ],
    );
}

#[test]
fn a_call_timeout_longer_than_its_aggregation_s_is_a_warning() {
    // user-service's own 15s timeout is no warning: only a call's own is.
    let text = format!(
        "{}aggregations:
  - name: dashboard
    path: /d/{{id}}
    timeout: 1s
    calls:
      user: {{ service: user-service, path: \"/u/{{id}}\" }}
      orders: {{ service: order-service, path: /o, timeout: 3s }}
",
        AGG_SERVICES.replace("url: http://10.0.0.1:80\n", "url: http://10.0.0.1:80\n    timeout: 15s\n")
    );
    let texts = vec![("a.yaml".to_owned(), text)];
    let policy = load_texts(&texts).unwrap_or_else(|e| panic!("{e}"));
    let shown: Vec<String> = policy.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("a.yaml:16:60: call `orders` may take 3s"), "{shown:?}");
    let calls = &policy.aggregations["dashboard"].calls;
    assert_eq!(calls.iter().map(|c| c.timeout.as_millis()).collect::<Vec<_>>(), [1000, 1000]);
}

#[test]
fn ip_restriction_mistakes_are_reported_where_they_are() {
    let text = format!(
        "{ONE_LISTENER}services:
  - name: s
    url: http://10.0.0.1:80
    ip_restriction: {{ allow: [10.0.0.0/33, not-an-ip] }}
routes:
  - name: r
    match: {{ prefix: / }}
    service: s
    ip_restriction: sometimes
  - name: q
    match: {{ prefix: /q }}
    service: s
    ip_restriction: {{}}
defaults:
  ip_restriction: {{ deny: [\"::1/129\"], alow: [] }}
"
    );
    check(
        &[("a.yaml", &text)],
        &[
            ("a.yaml:7:31", &["`10.0.0.0/33` is not an address or range"]),
            ("a.yaml:7:44", &["`not-an-ip` is not an address or range"]),
            ("a.yaml:12:21", &["ip_restriction `sometimes`: write `none`"]),
            ("a.yaml:16:21", &["ip_restriction needs `allow`, `deny` or both"]),
            ("a.yaml:18:28", &["`::1/129` is not an address or range"]),
            ("a.yaml:18:40", &["unknown key `alow` in ip_restriction; did you mean `allow`?"]),
        ],
    );
}

#[test]
fn api_key_mistakes_are_reported_where_they_are() {
    let text = format!(
        "{ONE_LISTENER}services:
  - name: s
    url: http://10.0.0.1:80
routes:
  - name: r
    match: {{ prefix: / }}
    service: s
    auth: [good, main]
auth:
  jwt:
    - name: main
      issuer: https://auth.example.com
      jwks: {{ inline: '{{\"keys\":[{{\"kty\":\"oct\",\"k\":\"c2VjcmV0\",\"alg\":\"HS256\"}}]}}' }}
  api_keys:
    - name: good
      keys: {{ g: good-key }}
    - name: keys
      keys: {{ a: same, b: same, c: \"\" }}
      from: {{ cookie: k }}
      client_header: X-Client
    - name: main
      keys: {{ x: y }}
    - name: empty
"
    );
    check(
        &[("a.yaml", &text)],
        &[
            ("a.yaml:11:11", &["an `auth` list takes one kind"]),
            ("a.yaml:21:27", &["clients `a` and `b` have the same key"]),
            ("a.yaml:21:36", &["the key of client `c` is empty"]),
            ("a.yaml:22:13", &["a key source is { header: NAME } or { query: NAME }"]),
            ("a.yaml:22:15", &["unknown key `cookie` in from"]),
            ("a.yaml:24:13", &["`main` names both a JWT provider (at a.yaml:14:13) and an API key set"]),
            ("a.yaml:26:13", &["API key set `empty` has no `keys`"]),
        ],
    );
}

#[test]
fn a_route_host_that_is_not_a_domain_is_reported() {
    let text = format!(
        "{ONE_LISTENER}services:\n  - name: s\n    url: http://10.0.0.1:80\nroutes:\n  - name: r\n    match: {{ prefix: /, hosts: [a.example.com, \"a.*.com\", A.example.com] }}\n    service: s\n"
    );
    check(
        &[("a.yaml", &text)],
        &[
            ("a.yaml:9:48", &["host `a.*.com` is not a domain"]),
            ("a.yaml:9:59", &["host `A.example.com` is listed twice"]),
        ],
    );
}

#[test]
fn respond_weights_auto_host_header_sets_and_expiry_mistakes_are_located() {
    let text = r#"listeners:
  - name: public
    port: 10000
services:
  - name: pool
    endpoints: [{ address: "a:80", weight: 0 }, { address: "b", weight: 2 }]
  - name: one
    url: http://one:80
routes:
  - name: both
    match: { prefix: /both }
    service: one
    respond: { status: 403 }
  - name: teapot
    match: { prefix: /teapot }
    respond: { status: 100 }
  - name: hosts
    match: { prefix: /hosts }
    service: one
    rewrite: { host: one.internal, auto_host: true }
    request_headers: { add: { x-a: "1" }, replace: { X-A: "2" } }
    cors: { origins: ["*"], headers: [x-b, "*"] }
auth:
  jwt:
    - name: main
      issuer: https://auth.example.com
      jwks: { inline: '{"keys":[]}' }
      max_lifetime: 0s
"#;
    let diags = errors(&[("g.yaml", text)]);
    let shown: Vec<String> = diags.iter().map(ToString::to_string).collect();
    for (place, words) in [
        ("g.yaml:6:44", &["weight must be a whole number from 1", "leave the endpoint out"][..]),
        ("g.yaml:6:60", &["endpoint `b` is not host:port"]),
        ("g.yaml:13:14", &["`respond` or `service`, not both"]),
        ("g.yaml:16:24", &["status must be a whole number from 200 to 599"]),
        ("g.yaml:20:47", &["either `host` or `auto_host`"]),
        ("g.yaml:21:54", &["`X-A` is in `add` too"]),
        ("g.yaml:22:44", &["`*`", "stands alone"]),
        ("g.yaml:28:21", &["max_lifetime must be at least 1s"]),
    ] {
        assert!(
            diags.iter().any(|d| format!("{}:{}:{}", d.file, d.line, d.column) == place
                && words.iter().all(|w| d.message.contains(w))),
            "no error at {place} with {words:?}:\n{}",
            shown.join("\n")
        );
    }
}

#[test]
fn basic_user_set_mistakes_are_located() {
    let hash = "{SHA}qvTGHdzF6KLavt4PO0gs2a6pQ00=";
    let sets = format!(
        r#"auth:
  api_keys:
    - {{ name: keys, keys: {{ a: key-a }} }}
  basic:
    - name: staff
      users: {{ admin: "secret", "a:b": "{hash}" }}
    - name: keys
      users: {{ b: "{hash}" }}
"#
    );
    check(
        &[("a.yaml", &sets)],
        &[
            ("a.yaml:6:23", &["password of `admin` is not `{SHA}`", "htpasswd -nbs"]),
            ("a.yaml:6:33", &["`a:b` cannot be a user name"]),
            ("a.yaml:7:13", &["`keys` names both an API key set", "and a basic user set"]),
        ],
    );
    let mixed = format!(
        r#"listeners: [{{ name: public, port: 10000 }}]
services: [{{ name: s, url: "http://s:80" }}]
routes:
  - {{ name: r, match: {{ prefix: / }}, service: s, auth: [staff, keys] }}
auth:
  api_keys:
    - {{ name: keys, keys: {{ a: key-a }} }}
  basic:
    - {{ name: staff, users: {{ admin: "{hash}" }}, client_header: X-User }}
    - {{ name: other, users: {{ c: "{hash}" }}, client_header: X-Other }}
"#
    );
    check(
        &[("b.yaml", &mixed)],
        &[("b.yaml:4:56", &["an `auth` list takes one kind"]), ("b.yaml:9:92", &["must agree on `client_header`"])],
    );
}

#[test]
fn a_request_id_header_that_cannot_carry_it_is_located() {
    let text = "listeners: [{ name: public, port: 10000 }]\nservices: [{ name: s, url: \"http://s:80\" }]\nroutes:\n  \
                - { name: r, match: { prefix: / }, service: s, request_id: { header: x-request-id } }\n";
    check(&[("r.yaml", text)], &[("r.yaml:4:72", &["`x-request-id` cannot carry the request id"])]);
}

#[test]
fn an_empty_token_place_list_is_located() {
    let text = "auth:\n  jwt:\n    - name: main\n      issuer: https://a.example.com\n      \
                jwks: { inline: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}' }\n      from: []\n";
    check(&[("a.yaml", text)], &[("a.yaml:6:13", &["`from` is empty"])]);
}

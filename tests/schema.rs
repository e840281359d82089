//! The policy format's JSON Schema (issue 11): `legate schema` prints what
//! is checked in, every example and `config/` file is valid against it and
//! points editors at it, and mistakes a user makes are flagged by it. The
//! same for gateway test files (`legate schema --tests`).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const POLICY: &str = "schema/policy.schema.json";
const TESTS: &str = "schema/gateway-test.schema.json";

fn checked_in(schema: &str) -> String {
    std::fs::read_to_string(root().join(schema)).expect(schema)
}

fn validator(schema: &str) -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(&checked_in(schema)).expect("the schema is JSON");
    jsonschema::draft7::new(&schema).expect("a valid draft 7 schema")
}

/// Each YAML document of `text`, as JSON.
fn documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_json::Value::deserialize(d).expect("YAML that converts to JSON"))
        .filter(|v| !v.is_null())
        .collect()
}

/// What the policy schema says of `text`: one line per problem.
fn problems(text: &str) -> Vec<String> {
    problems_by(POLICY, text)
}

/// What `schema` says of `text`: one line per problem.
fn problems_by(schema: &str, text: &str) -> Vec<String> {
    let v = validator(schema);
    documents(text)
        .iter()
        .flat_map(|doc| v.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect::<Vec<_>>())
        .collect()
}

/// The YAML files the repository ships in `config/` and the examples:
/// policy files (Kong declarative configs are another format, and are left
/// out), or gateway test files (`tests`).
fn shipped(tests: bool) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("read the folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("config"), &mut out);
    walk(&root().join("examples"), &mut out);
    out.retain(|p| !std::fs::read_to_string(p).expect("read").lines().any(|l| l.starts_with("_format_version")));
    out.retain(|p| p.to_string_lossy().ends_with(".gateway.yaml") == tests);
    out.sort();
    out
}

/// `legate schema ARGS` prints the checked-in `schema`.
fn assert_prints_checked_in(args: &[&str], schema: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_legate")).arg("schema").args(args).output().expect("run legate schema");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout) == checked_in(schema),
        "{schema} differs from what the code generates; \
         run `cargo run -- schema {} > {schema}` and commit it",
        args.join(" ")
    );
}

#[test]
fn legate_schema_prints_the_checked_in_schema() {
    assert_prints_checked_in(&[], POLICY);
    assert_prints_checked_in(&["--tests"], TESTS);
}

/// Every one of `files` is valid against `schema`, and its first line
/// tells editors where that schema is, relative to the file.
fn assert_valid_and_naming(files: &[PathBuf], schema: &str) {
    for path in files {
        let text = std::fs::read_to_string(path).expect("read");
        let found = problems_by(schema, &text);
        assert!(found.is_empty(), "{}: {found:#?}", path.display());

        let first = text.lines().next().unwrap_or_default();
        let rel = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{} must start with `# yaml-language-server: $schema=...`", path.display()));
        let target = path.parent().expect("a folder").join(rel);
        assert_eq!(
            std::fs::canonicalize(&target).ok(),
            std::fs::canonicalize(root().join(schema)).ok(),
            "{}: $schema={rel} is not {schema}",
            path.display()
        );
    }
}

#[test]
fn every_shipped_policy_file_is_valid_and_names_the_schema() {
    let files = shipped(false);
    assert!(files.len() >= 10, "expected config/ and the examples, found {files:?}");
    assert_valid_and_naming(&files, POLICY);
}

#[test]
fn every_shipped_test_file_is_valid_and_names_its_schema() {
    let files = shipped(true);
    assert!(files.len() >= 10, "expected config/'s and the examples' test files, found {files:?}");
    assert_valid_and_naming(&files, TESTS);
}

/// Each `(what, text, at)`: `schema` flags `text` at the instance path `at`.
#[track_caller]
fn assert_flagged(schema: &str, cases: &[(&str, String, &str)]) {
    for (what, bad, at) in cases {
        let found = problems_by(schema, bad);
        assert!(
            found.iter().any(|p| p.starts_with(&format!("{at}:"))),
            "{what} should be flagged at `{at}`; the schema said {found:#?}"
        );
    }
}

#[test]
fn the_test_file_schema_flags_unknown_keys_and_wrong_types() {
    let good =
        "tests:\n  - name: a\n    request: { path: /a, query: { n: 1 }, jwt: { claims: { sub: x, exp: null } } }\n    \
                repeat: 3\n    expect:\n      status: 200\n      rate_limited: { at_least: 1 }\n      \
                headers: { a: b, c: null, d: { regex: x }, e: 7 }\n";
    assert_eq!(problems_by(TESTS, good), Vec::<String>::new(), "the valid file");
    let cases = [
        ("an unknown key in expect", good.replace("status:", "staus:"), "/tests/0/expect"),
        ("an unknown key in a request", good.replace("path: /a,", "path: /a, colour: blue,"), "/tests/0/request"),
        (
            "a case without a request",
            good.replace("    request: { path: /a, query: { n: 1 }, jwt: { claims: { sub: x, exp: null } } }\n", ""),
            "/tests/0",
        ),
        ("a status that is not a number", good.replace("status: 200", "status: ok"), "/tests/0/expect/status"),
        ("a list as a header rule", good.replace("a: b,", "a: [b],"), "/tests/0/expect/headers/a"),
        ("an unknown header rule", good.replace("{ regex: x }", "{ like: x }"), "/tests/0/expect/headers/d"),
        ("a negative count", good.replace("{ at_least: 1 }", "-1"), "/tests/0/expect/rate_limited"),
    ];
    assert_flagged(TESTS, &cases);
}

#[test]
fn the_schema_flags_unknown_keys_and_wrong_types() {
    let good = "listeners:\n  - name: public\n    port: 8080\nservices:\n  - name: s\n    url: https://s.example.com\n\
                \x20   tls: { verify: true }\n    load_balancing: ring_hash\n    retries: { on: [5xx, reset] }\n\
                rate_limits:\n  - name: a\n    limits: { minute: 5 }\n    scope: global\n\
                routes:\n  - name: r\n    match: { prefix: /r, headers: { x-v: 2, x-on: { present: true } } }\n    \
                service: s\n    auth: none\n    ip_restriction: none\n\
                defaults:\n  access_log: off\n  rate_limit: [a, b]\n";
    assert_eq!(problems(good), Vec::<String>::new(), "the valid file");
    let cases = [
        ("an unknown top-level key", good.replace("services:", "service:"), ""),
        ("an unknown key in a route", good.replace("    auth: none", "    colour: blue"), "/routes/0"),
        ("an unknown key in a match", good.replace("prefix: /r", "prefx: /r"), "/routes/0/match"),
        ("a port that is not a number", good.replace("port: 8080", "port: eighty"), "/listeners/0/port"),
        (
            "a route without match",
            good.replace("    match: { prefix: /r, headers: { x-v: 2, x-on: { present: true } } }\n", ""),
            "/routes/0",
        ),
        (
            "a word ip_restriction does not take",
            good.replace("ip_restriction: none", "ip_restriction: all"),
            "/routes/0/ip_restriction",
        ),
        ("a list as a header value", good.replace("x-v: 2", "x-v: [1, 2]"), "/routes/0/match/headers/x-v"),
        ("a load balancer legate lacks", good.replace("ring_hash", "maglev"), "/services/0/load_balancing"),
        ("a retry condition legate lacks", good.replace("[5xx, reset]", "[5xx, oops]"), "/services/0/retries"),
        ("a window legate lacks", good.replace("minute: 5", "fortnight: 5"), "/rate_limits/0/limits"),
        ("a scope legate lacks", good.replace("scope: global", "scope: fleet"), "/rate_limits/0/scope"),
        ("an unknown key in a service's tls", good.replace("verify: true", "verfy: true"), "/services/0/tls"),
    ];
    assert_flagged(POLICY, &cases);
}

//! `legate plan` (issue 11): what applying a folder would change, per Envoy
//! resource, against another folder or a running legate, with the exit
//! status CI relies on (0 nothing, 2 something, 1 an invalid folder).
//!
//! The outputs are reviewed snapshots in `tests/snapshots/plan__*.snap`; to
//! accept changed output after reading the diff:
//! `INSTA_UPDATE=always cargo test --test plan`.

mod common;

use std::process::Command;

use common::Gateway;

const LEGATE: &str = env!("CARGO_BIN_EXE_legate");

/// The folder every case starts from: one listener, two services, two
/// routes (one limited), a rate limit.
const BASE: &str = "\
listeners:
  - name: public
    port: 10000
services:
  - name: orders
    url: http://orders.internal:3000
  - name: users
    url: http://users.internal:3000
routes:
  - name: orders
    match: { prefix: /api/orders }
    service: orders
    rate_limit: per-client
  - name: users
    match: { prefix: /api/users }
    service: users
rate_limits:
  - name: per-client
    limits: { minute: 100 }
";

/// `legate plan --config (BASE edited) --against (BASE)`: exit code and output.
fn plan_against(edited: &str) -> (i32, String) {
    plan_of(BASE, edited)
}

/// `legate plan --config (proposed) --against (current)`: exit code and output.
fn plan_of(current: &str, proposed: &str) -> (i32, String) {
    let (current, proposed) = (folder(current), folder(proposed));
    run(&["plan", "--config", path(&proposed), "--against", path(&current)])
}

/// Each case (name, current, proposed) changes something: exit 2, and the
/// output is its snapshot.
fn assert_plans(cases: [(&str, String, String); 3]) {
    for (name, current, proposed) in cases {
        let (code, out) = plan_of(&current, &proposed);
        assert_eq!(code, 2, "{name}: something changes\n{out}");
        insta::assert_snapshot!(name, out);
    }
}

fn folder(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a folder");
    std::fs::write(dir.path().join("gateway.yaml"), text).expect("write");
    dir
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("a UTF-8 path")
}

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(LEGATE).args(args).output().expect("run legate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

#[test]
fn nothing_to_change_exits_0() {
    let (code, out) = plan_against(BASE);
    assert_eq!((code, out.as_str()), (0, "No changes: the proxies would get nothing new.\n"));
}

#[test]
fn a_route_added_removed_and_changed() {
    let added =
        edit("rate_limits:", "  - name: health\n    match: { path: /healthz }\n    service: users\nrate_limits:");
    let removed = edit("  - name: users\n    match: { prefix: /api/users }\n    service: users\n", "");
    let changed = edit("prefix: /api/users", "prefix: /api/v2/users");
    assert_plans([
        ("route_added", BASE.to_owned(), added),
        ("route_removed", BASE.to_owned(), removed),
        ("route_changed", BASE.to_owned(), changed),
    ]);
}

#[test]
fn a_service_added_removed_and_changed() {
    let with_audit = edit("routes:", "  - name: audit\n    url: http://audit.internal:3000\nroutes:");
    let changed = edit("url: http://users.internal:3000", "url: http://users.internal:3000\n    timeout: 3s");
    assert_plans([
        ("service_added", BASE.to_owned(), with_audit.clone()),
        ("service_removed", with_audit, BASE.to_owned()),
        ("service_changed", BASE.to_owned(), changed),
    ]);
}

#[test]
fn a_rate_limit_added_removed_and_changed() {
    let added = edit("    service: users\n", "    service: users\n    rate_limit: strict\n")
        + "  - name: strict\n    limits: { second: 5 }\n";
    let removed = edit("    rate_limit: per-client\n", "")
        .replace("rate_limits:\n  - name: per-client\n    limits: { minute: 100 }\n", "");
    let changed = edit("limits: { minute: 100 }", "limits: { minute: 50 }");
    assert_plans([
        ("rate_limit_added", BASE.to_owned(), added),
        ("rate_limit_removed", BASE.to_owned(), removed),
        ("rate_limit_changed", BASE.to_owned(), changed),
    ]);
}

#[test]
fn the_fleets_affected_are_named() {
    let fleets = edit("    port: 10000\n", "    port: 10000\n    fleets: [edge]\n");
    let (code, out) = plan_of(&fleets, &fleets.replace("/api/users", "/api/people"));
    assert_eq!(code, 2, "{out}");
    assert!(out.ends_with("Fleets affected: edge\n"), "only the edge fleet gets the route change:\n{out}");
    let (_, out) = plan_of(&fleets, &fleets.replace("users.internal", "people.internal"));
    assert!(out.ends_with("Fleets affected: every fleet\n"), "clusters go to every fleet:\n{out}");
}

#[test]
fn an_invalid_folder_is_an_error_with_its_position() {
    let (code, out) = plan_against(&edit("service: users\n", "service: nobody\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gateway.yaml:16:14: route `users` sends to service `nobody`"), "{out}");
    assert!(out.contains("not valid; nothing to plan"), "{out}");
}

#[test]
fn against_a_running_legate() {
    let mut gw = Gateway::new();
    gw.write("gateway.yaml", BASE);
    gw.serve();
    let admin = format!("127.0.0.1:{}", gw.admin_port);
    let served = gw.config.to_str().expect("a UTF-8 path").to_owned();

    let (code, out) = run(&["plan", "--config", &served, "--admin-addr", &admin]);
    assert_eq!((code, out.as_str()), (0, "No changes: the proxies would get nothing new.\n"), "the folder it serves");

    let proposed = folder(&edit("prefix: /api/users", "prefix: /api/v2/users"));
    let (code, out) = run(&["plan", "--config", path(&proposed), "--admin-addr", &admin]);
    assert_eq!(code, 2, "{out}");
    let (_, against) = plan_against(&edit("prefix: /api/users", "prefix: /api/v2/users"));
    assert_eq!(out, against, "the same plan as against the folder it serves");

    let nobody = format!("127.0.0.1:{}", common::free_port());
    let (code, out) = run(&["plan", "--config", path(&proposed), "--admin-addr", &nobody]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot reach legate's admin API"), "{out}");
}

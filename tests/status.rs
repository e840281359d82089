//! The status page and `legate status`: the admin page loads in headless
//! Chromium (Debian's `chromium`) and shows the connected proxies, the
//! routes and, after a bad edit, the reload error with its location; the
//! terminal table says the same.
//!
//! Needs Envoy and Chromium (`scripts/test` installs both); fails without them.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{free_port, Gateway, LEGATE};

/// How long a pushed change gets to reach Envoy (generous: CI machines are busy).
const PUSH: Duration = Duration::from_secs(15);

/// The admin page's DOM after Chromium has loaded it.
fn dump_dom(url: &str, profile: &std::path::Path) -> String {
    let bin = std::env::var("CHROMIUM_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "chromium".into());
    let out = Command::new(&bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {bin} ({e}): install Debian's chromium (`apt-get install chromium`; scripts/test does)")
        });
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn legate_status(admin: u16) -> String {
    let out = Command::new(LEGATE)
        .args(["status", "--admin-addr", &format!("127.0.0.1:{admin}")])
        .output()
        .expect("run legate status");
    assert!(out.status.success(), "legate status: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_and_table_show_the_fleet_the_routes_and_reload_errors() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    let policy = format!(
        r#"listeners:
  - {{ name: public, port: {listen}, address: 127.0.0.1 }}
services:
  - {{ name: alpha, url: "http://127.0.0.1:{alpha}" }}
routes:
  - {{ name: orders, match: {{ prefix: /orders }}, service: alpha, rate_limit: per-client }}
  - {{ name: health, match: {{ path: /healthz }}, service: alpha }}
rate_limits:
  - {{ name: per-client, limits: {{ minute: 100 }} }}
"#
    );
    gw.write("gateway.yaml", &policy);
    gw.serve();
    gw.envoy("edge-1", "edge");
    gw.envoy("edge-2", "edge");
    gw.wait("both proxies to ACK", PUSH, || {
        let s = gw.status();
        let acked = |n: &serde_json::Value| {
            n["resources"].as_object().is_some_and(|r| r.values().all(|t| !t["acked_version"].is_null()))
        };
        (s["nodes"].as_array().is_some_and(|n| n.len() == 2 && n.iter().all(acked))).then_some(())
    });
    let url = format!("http://127.0.0.1:{}/", gw.admin_port);
    let profile = gw.path().join("chromium");

    let dom = dump_dom(&url, &profile);
    for want in ["edge-1", "edge-2", "orders", "prefix /orders", "per-client", "valid, at", "Listener"] {
        assert!(dom.contains(want), "`{want}` missing from the page:\n{dom}");
    }
    assert!(dom.contains("http-equiv=\"refresh\""), "the page refreshes itself");
    let table = legate_status(gw.admin_port);
    for want in ["edge-1", "edge-2", "orders", "per-client", "valid, at"] {
        assert!(table.contains(want), "`{want}` missing from `legate status`:\n{table}");
    }

    // A bad edit: the page and the table show the error and where it is.
    gw.write("gateway.yaml", &policy.replace("service: alpha, rate_limit", "service: nope, rate_limit"));
    gw.wait("the reload error", PUSH, || (gw.status()["last_reload"]["ok"] == false).then_some(()));
    let dom = dump_dom(&url, &profile);
    assert!(dom.contains("rejected at") && dom.contains("gateway.yaml:6:"), "{dom}");
    assert!(dom.contains("`nope`"), "{dom}");
    assert!(dom.contains("edge-1"), "proxies are still listed: {dom}");
    let table = legate_status(gw.admin_port);
    assert!(table.contains("REJECTED") && table.contains("gateway.yaml:6:"), "{table}");
}

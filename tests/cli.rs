//! The commands around `serve`: `render`, `bootstrap`, and the admin API's
//! readiness and rendered config, run as a user runs them.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{Gateway, LEGATE};
use serde_json::Value;

fn legate(args: &[&str]) -> Output {
    Command::new(LEGATE).args(args).output().expect("run legate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name).display().to_string()
}

fn names(rendered: &Value, kind: &str) -> Vec<String> {
    rendered[kind].as_array().expect(kind).iter().map(|r| r["name"].as_str().unwrap_or_default().to_owned()).collect()
}

#[test]
fn render_shows_each_fleet_its_own_listeners() {
    let dir = example("fleets");
    for (cluster, listener) in [("edge", "public"), ("internal", "internal")] {
        let out = legate(&["render", "--config", &dir, "--node-cluster", cluster, "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let j: Value = serde_json::from_slice(&out.stdout).expect("render --format json prints JSON");
        assert_eq!(names(&j, "listeners"), [listener]);
        assert_eq!(names(&j, "clusters"), ["admin-ui", "app"]);
        let hcm = &j["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
        assert_eq!(
            hcm["@type"],
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
        );
        assert_eq!(hcm["rds"]["route_config_name"], listener);
    }
    let out = legate(&["render", "--config", &dir, "--node-cluster", "nobody"]);
    let y: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("render prints YAML by default");
    assert_eq!(y["listeners"].as_sequence().map(Vec::len), Some(0), "no fleet lists `nobody`");
}

#[test]
fn render_of_an_invalid_folder_prints_the_errors_and_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("g.yaml"), "listeners:\n  - name: x\n    port: nope\n").expect("write");
    let out = legate(&["render", "--config", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("g.yaml:3:11: "), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}

#[test]
fn bootstrap_lists_every_replica_and_names_the_node() {
    let out = legate(&[
        "bootstrap",
        "--node-id",
        "edge-1",
        "--node-cluster",
        "edge",
        "--xds-addr",
        "10.1.0.1:18000",
        "--xds-addr",
        "legate-2:18000",
        "--admin-port",
        "9902",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let y: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).expect("YAML");
    assert_eq!(y["node"]["id"], "edge-1");
    assert_eq!(y["node"]["cluster"], "edge");
    assert_eq!(y["admin"]["address"]["socket_address"]["port_value"], 9902);
    assert_eq!(y["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
    let eps = &y["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"];
    let addrs: Vec<String> = eps
        .as_sequence()
        .expect("endpoints")
        .iter()
        .map(|e| {
            let a = &e["endpoint"]["address"]["socket_address"];
            format!("{}:{}", a["address"].as_str().unwrap_or_default(), a["port_value"].as_u64().unwrap_or_default())
        })
        .collect();
    assert_eq!(addrs, ["10.1.0.1:18000", "legate-2:18000"]);
    // The aggregator of each replica, on its default port.
    let aggregator = &y["static_resources"]["clusters"][1];
    assert_eq!(aggregator["name"], "legate_aggregator");
    let eps = aggregator["load_assignment"]["endpoints"][0]["lb_endpoints"].as_sequence().expect("endpoints");
    let ports: Vec<(String, u64)> = eps
        .iter()
        .map(|e| {
            let a = &e["endpoint"]["address"]["socket_address"];
            (a["address"].as_str().unwrap_or_default().to_owned(), a["port_value"].as_u64().unwrap_or_default())
        })
        .collect();
    assert_eq!(ports, [("10.1.0.1".to_owned(), 18002), ("legate-2".to_owned(), 18002)]);

    let out = legate(&["bootstrap", "--node-id", "n", "--xds-addr", "nohost"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("HOST:PORT"), "{}", text(&out.stderr));
}

#[test]
fn readyz_waits_for_a_valid_config_and_api_config_matches_render() {
    let good = std::fs::read_to_string(Path::new(&example("fleets")).join("gateway.yaml")).expect("example");
    let mut gw = Gateway::new();
    gw.write("gateway.yaml", &good.replace("service: app\n", "service: ap\n"));

    gw.serve_unready();
    assert_eq!(gw.admin("/readyz").status, 503, "not ready on an invalid folder");
    let status = gw.status();
    assert_eq!(status["version"], Value::Null);
    assert_eq!(status["last_reload"]["ok"], false);
    assert_eq!(status["last_reload"]["errors"][0]["file"], "gateway.yaml");
    assert!(status["last_reload"]["errors"][0]["line"].as_u64().is_some(), "{status}");

    gw.write("gateway.yaml", &good);
    gw.wait("/readyz after the fix", Duration::from_secs(15), || (gw.admin("/readyz").status == 200).then_some(()));

    let served = gw.admin("/api/config?node_cluster=edge");
    assert_eq!(served.status, 200);
    let config = gw.config.display().to_string();
    let out = legate(&["render", "--config", &config, "--node-cluster", "edge", "--format", "json"]);
    let rendered: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(served.json(), rendered, "/api/config and render disagree");
    let all = gw.admin("/api/config").json();
    assert_eq!(names(&all, "listeners"), ["internal", "public"], "without node_cluster: every listener");
}

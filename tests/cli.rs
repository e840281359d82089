//! The commands around `serve`: `render`, `bootstrap`, and the admin API's
//! readiness and rendered config, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LEGATE: &str = env!("CARGO_BIN_EXE_legate");

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

    let out = legate(&["bootstrap", "--node-id", "n", "--xds-addr", "nohost"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("HOST:PORT"), "{}", text(&out.stderr));
}

struct Serve(Child, u16);
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

fn serve(dir: &Path) -> Serve {
    let (xds, admin) = (free_port(), free_port());
    let child = Command::new(LEGATE)
        .args(["serve", "--config"])
        .arg(dir)
        .args(["--xds-addr", &format!("127.0.0.1:{xds}"), "--admin-addr", &format!("127.0.0.1:{admin}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run legate serve");
    let s = Serve(child, admin);
    wait("the admin API", || get(&s, "/healthz").map(|(c, _)| c == 200));
    s
}

fn get(s: &Serve, path: &str) -> Option<(u16, String)> {
    match ureq::get(&format!("http://127.0.0.1:{}{path}", s.1)).timeout(Duration::from_secs(2)).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(c, r)) => Some((c, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

fn wait(what: &str, f: impl Fn() -> Option<bool>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while f() != Some(true) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readyz_waits_for_a_valid_config_and_api_config_matches_render() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fleets: PathBuf = Path::new(&example("fleets")).join("gateway.yaml");
    let good = std::fs::read_to_string(fleets).expect("example");
    std::fs::write(dir.path().join("gateway.yaml"), good.replace("service: app\n", "service: ap\n")).expect("write");

    let s = serve(dir.path());
    assert_eq!(get(&s, "/readyz").map(|(c, _)| c), Some(503), "not ready on an invalid folder");
    let (_, status) = get(&s, "/api/status").expect("status");
    let status: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(status["version"], Value::Null);
    assert_eq!(status["last_reload"]["ok"], false);
    assert_eq!(status["last_reload"]["errors"][0]["file"], "gateway.yaml");
    assert!(status["last_reload"]["errors"][0]["line"].as_u64().is_some(), "{status}");

    let tmp = dir.path().join("gateway.yaml.tmp");
    std::fs::write(&tmp, &good).expect("write");
    std::fs::rename(&tmp, dir.path().join("gateway.yaml")).expect("rename");
    wait("/readyz after the fix", || get(&s, "/readyz").map(|(c, _)| c == 200));

    let (code, body) = get(&s, "/api/config?node_cluster=edge").expect("config");
    assert_eq!(code, 200);
    let served: Value = serde_json::from_str(&body).expect("JSON");
    let out = legate(&[
        "render",
        "--config",
        &dir.path().display().to_string(),
        "--node-cluster",
        "edge",
        "--format",
        "json",
    ]);
    let rendered: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(served, rendered, "/api/config and render disagree");
    let all: Value = serde_json::from_str(&get(&s, "/api/config").expect("config").1).expect("JSON");
    assert_eq!(names(&all, "listeners"), ["internal", "public"], "without node_cluster: every listener");
}

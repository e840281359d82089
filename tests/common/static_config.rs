//! A policy's translation as one static Envoy bootstrap, for `envoy --mode
//! validate`: what a proxy would get over xDS, with nothing left to fetch.

use std::process::Command;

use legate::snapshot::Kind;
use serde_json::{json, Value};

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

/// Everything a node would get from `policy`, as one static Envoy bootstrap:
/// routes inlined into listeners, EDS clusters given their endpoints,
/// secrets static, plus the clusters and runtime `legate bootstrap` defines.
pub(crate) fn static_bootstrap(policy: &legate::policy::Policy) -> Value {
    let snapshot = legate::translate::translate(policy);
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
        "layered_runtime": boot["layered_runtime"],
        "static_resources": {
            "listeners": listeners.into_iter().map(strip).collect::<Vec<_>>(),
            "clusters": clusters.into_iter().map(strip).collect::<Vec<_>>(),
            "secrets": list(Kind::Secret).into_iter().map(strip).collect::<Vec<_>>(),
        }
    })
}

/// Whether `envoy --mode validate` accepts `config`; if not, the last line
/// Envoy said.
///
/// # Errors
/// Envoy's complaint.
pub(crate) fn envoy_validate(config: &Value) -> Result<(), String> {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("config.json");
    std::fs::write(&file, config.to_string()).expect("write");
    let out = Command::new(super::envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(&file)
        .output()
        .expect("envoy --mode validate");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default().to_owned())
    }
}

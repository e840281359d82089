//! The shipped policy folders stay valid: `config/` (what `legate up` runs)
//! and every folder under `examples/`, each validated and translated, and
//! what they (and the golden case tests/golden/edge_policies) translate to
//! accepted by `envoy --mode validate`.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

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

#[test]
fn envoy_accepts_what_every_example_translates_to() {
    for dir in folders() {
        let policy = legate::policy::load_dir(&dir).unwrap_or_else(|d| panic!("{}: {d}", dir.display()));
        if let Err(said) = common::static_config::envoy_validate(&common::static_config::static_bootstrap(&policy)) {
            panic!("envoy rejects {}: {said}", dir.display());
        }
    }
    // The check can fail: a config Envoy must refuse is refused.
    let policy = legate::policy::load_dir(&folders()[0]).expect("valid");
    let mut bad = common::static_config::static_bootstrap(&policy);
    bad["static_resources"]["clusters"][0]["connect_timeout"] = json!("-1s");
    assert!(common::static_config::envoy_validate(&bad).is_err(), "envoy accepted a negative connect_timeout");
}

#[test]
fn envoy_accepts_the_edge_policies_golden_case() {
    // Keys no example uses yet: basic auth, body limits, respond, weights
    // with auto_host, idle timeouts, header sets by presence.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/edge_policies");
    let policy = legate::policy::load_dir(&dir).unwrap_or_else(|d| panic!("{}: {d}", dir.display()));
    if let Err(said) = common::static_config::envoy_validate(&common::static_config::static_bootstrap(&policy)) {
        panic!("envoy rejects {}: {said}", dir.display());
    }
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
    assert!(stdout.contains("valid (1 listener, 3 services, 3 routes)"), "{stdout}");
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

//! The folder watcher: editors' atomic renames, Kubernetes ConfigMap symlink
//! swaps, invalid edits (last good kept, errors recorded) and fixes.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use legate::state::State;

const GOOD: &str = "listeners:\n  - name: public\n    port: 10000\nservices:\n  - name: a\n    url: http://127.0.0.1:3000\nroutes:\n  - name: r\n    match: { prefix: /a }\n    service: a\n";

/// Wait until `f` holds, or fail after 10 s.
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn version(state: &State) -> Option<String> {
    state.current().map(|s| s.version().to_owned())
}

fn start(dir: &Path) -> Arc<State> {
    let state = State::new();
    let watch = legate::watch::Watch::start(dir).expect("watch the folder");
    let mut cache = legate::watch::Cache::default();
    let read_files =
        legate::watch::reload(dir, &state, &mut cache, legate::watch::Overrides::default()).expect("initial load");
    tokio::spawn(watch.run(Arc::clone(&state), read_files, cache, legate::watch::Overrides::default()));
    state
}

#[tokio::test]
async fn atomic_rename_edits_are_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    common::write_atomic(&file, GOOD);
    let state = start(dir.path());
    let v1 = version(&state).expect("published");
    // No wait: the watch exists before the first load.

    common::write_atomic(&file, &GOOD.replace("/a }", "/b }"));
    until("the edit is published", || version(&state).as_ref() != Some(&v1)).await;
    let snap = state.current().expect("snapshot");
    let routes = legate::render::view_json(snap.all());
    assert!(routes.to_string().contains("\"prefix\":\"/b\""), "{routes}");
}

/// `legate serve` starts watching, then loads: an edit made while the
/// first load runs, before the watch loop even starts, is still published.
#[tokio::test]
async fn an_edit_during_the_first_load_is_not_missed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    common::write_atomic(&file, GOOD);
    let state = State::new();
    let watch = legate::watch::Watch::start(dir.path()).expect("watch the folder");
    let mut cache = legate::watch::Cache::default();
    let read_files = legate::watch::reload(dir.path(), &state, &mut cache, legate::watch::Overrides::default())
        .expect("initial load");
    let v1 = version(&state).expect("published");
    common::write_atomic(&file, &GOOD.replace("/a }", "/during }"));
    tokio::time::sleep(Duration::from_millis(100)).await; // well past the debounce
    tokio::spawn(watch.run(Arc::clone(&state), read_files, cache, legate::watch::Overrides::default()));
    until("the edit is published", || version(&state).as_ref() != Some(&v1)).await;
    let json = legate::render::view_json(state.current().expect("snapshot").all()).to_string();
    assert!(json.contains("\"prefix\":\"/during\""), "{json}");
}

#[tokio::test]
async fn invalid_edit_keeps_the_last_good_and_a_fix_is_published() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    common::write_atomic(&file, GOOD);
    let state = start(dir.path());
    let v1 = version(&state).expect("published");

    common::write_atomic(&file, &GOOD.replace("service: a\n", "service: nope\n"));
    until("the bad edit is recorded", || state.last_reload().is_some_and(|r| !r.ok)).await;
    assert_eq!(version(&state), Some(v1.clone()), "nothing new was published");
    let reload = state.last_reload().expect("reload");
    assert_eq!(reload.errors.len(), 1, "{:?}", reload.errors);
    let e = &reload.errors[0];
    assert_eq!((e.file.as_str(), e.line), ("gateway.yaml", 10), "{e}");
    assert!(e.message.contains("`nope`"), "{e}");
    let metrics = state.metrics.render();
    assert!(metrics.contains("legate_config_reloads_total{result=\"error\"} 1"), "{metrics}");
    // Every reload, good or bad, is timed.
    assert!(metrics.contains("legate_reload_duration_seconds_count 2"), "{metrics}");

    common::write_atomic(&file, &GOOD.replace("/a }", "/fixed }"));
    until("the fix is published", || version(&state).as_ref() != Some(&v1)).await;
    assert!(state.last_reload().is_some_and(|r| r.ok && r.errors.is_empty()));
}

#[cfg(unix)]
#[tokio::test]
async fn configmap_symlink_swaps_are_seen() {
    use std::os::unix::fs::symlink;
    // The layout kubelet writes for a ConfigMap volume.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::create_dir(root.join("..2026_01_01")).expect("mkdir");
    std::fs::write(root.join("..2026_01_01/gateway.yaml"), GOOD).expect("write");
    symlink("..2026_01_01", root.join("..data")).expect("symlink");
    symlink("..data/gateway.yaml", root.join("gateway.yaml")).expect("symlink");
    let state = start(root);
    let v1 = version(&state).expect("published");
    let snap = state.current().expect("snapshot");
    assert_eq!(snap.all().resources(legate::snapshot::Kind::Route).len(), 1, "hidden folders are not read twice");

    // kubelet's update: a new timestamped folder, then an atomic swap of ..data.
    std::fs::create_dir(root.join("..2026_01_02")).expect("mkdir");
    std::fs::write(root.join("..2026_01_02/gateway.yaml"), GOOD.replace("/a }", "/swapped }")).expect("write");
    symlink("..2026_01_02", root.join("..data_tmp")).expect("symlink");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");
    std::fs::remove_dir_all(root.join("..2026_01_01")).expect("cleanup");

    until("the swap is published", || version(&state).as_ref() != Some(&v1)).await;
    let json = legate::render::view_json(state.current().expect("snapshot").all()).to_string();
    assert!(json.contains("\"prefix\":\"/swapped\""), "{json}");
}

#[tokio::test]
async fn a_jwks_file_outside_the_folder_is_watched_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (policy, keys) = (dir.path().join("policy"), dir.path().join("keys"));
    let jwks = |x: &str| format!(r#"{{"keys":[{{"kty":"oct","kid":"{x}","k":"c2VjcmV0"}}]}}"#);
    common::write_atomic(&keys.join("jwks.json"), &jwks("one"));
    let auth = "auth:\n  jwt:\n    - name: main\n      issuer: https://a.example.com\n      jwks: { file: ../keys/jwks.json }\ndefaults:\n  auth: main\n";
    common::write_atomic(&policy.join("gateway.yaml"), &format!("{GOOD}{auth}"));
    let state = start(&policy);
    let v1 = version(&state).expect("published");
    tokio::time::sleep(Duration::from_millis(100)).await; // the watcher adds the keys folder

    common::write_atomic(&keys.join("jwks.json"), &jwks("two"));
    until("the new keys are published", || version(&state).as_ref() != Some(&v1)).await;
    let json = legate::render::view_json(state.current().expect("snapshot").all()).to_string();
    assert!(json.contains(r#"\"kid\":\"two\""#), "{json}");
}

/// Editors' swap files and the temporary file of an atomic save are hidden,
/// and the loader skips them, as it does gateway test files, so writing
/// them reloads nothing; a hidden file that the policy reads (here a JWKS
/// file) still counts.
#[tokio::test]
async fn hidden_and_test_files_reload_only_when_the_policy_reads_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let jwks = |x: &str| format!(r#"{{"keys":[{{"kty":"oct","kid":"{x}","k":"c2VjcmV0"}}]}}"#);
    common::write_atomic(&dir.path().join(".keys/jwks.json"), &jwks("one"));
    std::fs::create_dir(dir.path().join("tests")).expect("mkdir");
    let auth = "auth:\n  jwt:\n    - name: main\n      issuer: https://a.example.com\n      jwks: { file: .keys/jwks.json }\ndefaults:\n  auth: main\n";
    common::write_atomic(&dir.path().join("gateway.yaml"), &format!("{GOOD}{auth}"));
    let state = start(dir.path());
    let v1 = version(&state).expect("published");
    let before = reloads(&state);

    for i in 0..5 {
        std::fs::write(dir.path().join(".gateway.yaml.swp"), format!("swap {i}")).expect("write");
        std::fs::write(dir.path().join(format!("tests/t{i}.gateway.yaml")), "tests: []\n").expect("write");
        common::write_atomic(&dir.path().join(".drafts/next.yaml"), &GOOD.replace("/a }", &format!("/draft{i} }}")));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(reloads(&state), before, "hidden and test files the policy doesn't read must not reload it");

    common::write_atomic(&dir.path().join(".keys/jwks.json"), &jwks("two"));
    until("the new keys are published", || version(&state).as_ref() != Some(&v1)).await;
    let json = legate::render::view_json(state.current().expect("snapshot").all()).to_string();
    assert!(json.contains(r#"\"kid\":\"two\""#), "{json}");
    assert!(!json.contains("/draft"), "hidden policy files are not loaded: {json}");
}

#[tokio::test]
async fn a_burst_of_writes_is_coalesced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("gateway.yaml");
    common::write_atomic(&file, GOOD);
    let state = start(dir.path());
    let before = reloads(&state);
    for i in 0..50 {
        std::fs::write(&file, GOOD.replace("/a }", &format!("/burst{i} }}"))).expect("write");
    }
    until("the last write is published", || {
        legate::render::view_json(state.current().expect("snapshot").all()).to_string().contains("/burst49")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = reloads(&state) - before;
    assert!((1..50).contains(&n), "50 writes gave {n} reloads; they should be coalesced");
}

fn reloads(state: &State) -> u64 {
    let text = state.metrics.render();
    text.lines()
        .filter(|l| l.starts_with("legate_config_reloads_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

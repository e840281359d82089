//! Golden translation tests: each folder under `tests/golden/` is a policy
//! case; its Envoy resources, rendered as Envoy's own YAML with every type's
//! version in the header, are kept as a reviewed snapshot in `tests/snapshots/`.
//!
//! To accept changed output after reviewing the diff:
//! `INSTA_UPDATE=always cargo test --test golden`, then read the `.snap` files.

mod common;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use legate::policy::{load_dir, load_texts, Policy};
use legate::render::view_yaml;
use legate::snapshot::{Kind, Snapshot, View};
use legate::translate::translate;

/// A node cluster that no policy names: it sees only listeners without `fleets`.
const DEFAULT_NODE_CLUSTER: &str = "default";

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(case)
}

fn load_case(case: &str) -> Policy {
    load_dir(&case_dir(case)).unwrap_or_else(|e| panic!("golden case `{case}` does not load:\n{e}"))
}

/// Every node cluster worth rendering: the default one and each fleet named.
fn node_clusters(policy: &Policy) -> Vec<String> {
    let fleets: BTreeSet<&String> = policy.listeners.values().filter_map(|l| l.fleets.as_ref()).flatten().collect();
    std::iter::once(DEFAULT_NODE_CLUSTER.to_owned()).chain(fleets.into_iter().cloned()).collect()
}

/// The snapshot text: which case and node, every version, then the resources.
fn golden_text(case: &str, node_cluster: &str, snapshot: &Snapshot, view: &View) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# case: tests/golden/{case}");
    let _ = writeln!(out, "# node cluster: {node_cluster}");
    let _ = writeln!(out, "# snapshot version: {}", snapshot.version());
    for kind in Kind::ALL {
        let _ =
            writeln!(out, "# {} version: {} (count {})", kind.plural(), view.version(kind), view.resources(kind).len());
    }
    out.push_str(&common::rendered::view_text(view));
    out
}

fn check_case(case: &str) {
    let policy = load_case(case);
    let snapshot = translate(&policy);
    let clusters = node_clusters(&policy);
    for node_cluster in &clusters {
        let view = snapshot.view(node_cluster);
        let name = if clusters.len() == 1 { case.to_owned() } else { format!("{case}@{node_cluster}") };
        insta::with_settings!({ description => format!("tests/golden/{case} as node cluster `{node_cluster}`"), omit_expression => true }, {
            insta::assert_snapshot!(name, golden_text(case, node_cluster, &snapshot, &view));
        });
    }
}

/// The cases, one test each. `every_case_folder_has_a_test` keeps this list
/// and the folders in step.
macro_rules! golden_cases {
    ($($case:ident),* $(,)?) => {
        const CASES: &[&str] = &[$(stringify!($case)),*];
        $(
            #[test]
            fn $case() {
                check_case(stringify!($case));
            }
        )*
    };
}

golden_cases!(
    minimal,
    path_matches,
    conditions,
    weighted_split,
    rewrites,
    timeouts,
    header_ops,
    dns_services,
    https_upstream,
    load_balancing,
    fleets,
    precedence,
    multi_file,
    jwt,
    rate_limits,
    resilience,
    tls,
    observability,
    aggregation,
    ip_restriction,
    api_keys,
    edge_policies,
);

#[test]
fn every_case_folder_has_a_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<String> = std::fs::read_dir(&root)
        .expect("tests/golden exists")
        .map(|e| e.expect("readable entry"))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut listed: Vec<String> = CASES.iter().map(|c| (*c).to_owned()).collect();
    listed.sort();
    assert_eq!(dirs, listed, "add each folder under tests/golden to golden_cases!");
}

// ---- determinism -------------------------------------------------------

/// Every version of a snapshot, as seen by one node cluster.
fn versions(snapshot: &Snapshot, node_cluster: &str) -> Vec<String> {
    let view = snapshot.view(node_cluster);
    let mut v: Vec<String> = Kind::ALL.iter().map(|k| view.version(*k).to_owned()).collect();
    v.push(snapshot.version().to_owned());
    v
}

fn texts(files: &[(&str, &str)]) -> Vec<(String, String)> {
    files.iter().map(|(n, t)| ((*n).to_owned(), (*t).to_owned())).collect()
}

const LISTENERS: &str =
    "listeners:\n  - name: public\n    port: 10000\n  - name: internal\n    port: 10001\n    fleets: [internal]\n";
const SERVICES: &str = "services:\n  - name: orders\n    endpoints: [\"10.0.0.1:3000\"]\n    timeout: 5s\n  - name: users\n    url: http://users.internal:3001\n    load_balancing: ring_hash\n";
const ROUTES_A: &str = "routes:\n  - name: orders\n    listener: public\n    match: { prefix: /api/orders, headers: { x-a: \"1\", x-b: { present: true } } }\n    service: orders\n    response_headers: { add: { X-One: \"1\", X-Two: \"2\" } }\n";
const ROUTES_B: &str = "routes:\n  - name: users\n    listener: public\n    match: { path: /api/users }\n    service: users\n  - name: internal\n    listener: internal\n    match: { prefix: / }\n    split: [{ service: orders, weight: 1 }, { service: users, weight: 3 }]\n";

/// The same policy as `ROUTES_A`, with every mapping written in another order.
const ROUTES_A_REORDERED: &str = "routes:\n  - response_headers: { add: { X-Two: \"2\", X-One: \"1\" } }\n    service: orders\n    match: { headers: { x-b: { present: true }, x-a: \"1\" }, prefix: /api/orders }\n    listener: public\n    name: orders\n";

#[test]
fn same_policy_in_other_files_and_orders_gives_the_same_versions() {
    let one_file = format!("{LISTENERS}{SERVICES}{ROUTES_A}");
    let baseline =
        translate(&load_texts(&texts(&[("all.yaml", &one_file), ("more.yaml", ROUTES_B)])).expect("valid policy"));

    let layouts: Vec<Vec<(&str, &str)>> = vec![
        vec![("a.yaml", LISTENERS), ("b.yaml", SERVICES), ("c.yaml", ROUTES_A), ("d.yaml", ROUTES_B)],
        vec![("z.yaml", LISTENERS), ("y/x.yaml", SERVICES), ("m.yml", ROUTES_B), ("b.yaml", ROUTES_A_REORDERED)],
        vec![("routes-b.yaml", ROUTES_B), ("rest.yaml", &one_file)],
    ];
    for files in &layouts {
        let snapshot = translate(&load_texts(&texts(files)).expect("valid policy"));
        for node in ["default", "internal", "edge"] {
            assert_eq!(versions(&snapshot, node), versions(&baseline, node), "layout {files:?}, node {node}");
        }
    }
}

#[test]
fn the_same_files_on_disk_and_in_memory_give_the_same_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
    std::fs::write(dir.path().join("listeners.yaml"), LISTENERS).expect("write");
    std::fs::write(dir.path().join("sub/services.yaml"), SERVICES).expect("write");
    std::fs::write(dir.path().join("routes.yaml"), format!("{ROUTES_A}---\n{ROUTES_B}")).expect("write");
    let from_disk = translate(&load_dir(dir.path()).expect("valid policy"));
    let in_memory = translate(
        &load_texts(&texts(&[("a.yaml", LISTENERS), ("b.yaml", SERVICES), ("c.yaml", ROUTES_A), ("d.yaml", ROUTES_B)]))
            .expect("valid policy"),
    );
    assert_eq!(versions(&from_disk, "internal"), versions(&in_memory, "internal"));
}

#[test]
fn translating_twice_gives_identical_bytes() {
    for case in CASES {
        let policy = load_case(case);
        let (first, second) = (translate(&policy), translate(&load_case(case)));
        assert_eq!(first.version(), second.version(), "{case}");
        for node in node_clusters(&policy) {
            let (a, b) = (first.view(&node), second.view(&node));
            for kind in Kind::ALL {
                let bytes = |v: &View| -> Vec<(String, Vec<u8>)> {
                    v.resources(kind).values().map(|r| (r.name.clone(), r.any.value.clone())).collect()
                };
                assert_eq!(bytes(&a), bytes(&b), "{case} {kind} for {node}");
            }
            assert_eq!(view_yaml(&a), view_yaml(&b), "{case} for {node}");
        }
    }
}

#[test]
fn a_change_changes_only_the_versions_of_what_it_touches() {
    let base = format!("{LISTENERS}{SERVICES}{ROUTES_A}");
    let before = translate(&load_texts(&texts(&[("p.yaml", &base)])).expect("valid policy"));
    let after = translate(
        &load_texts(&texts(&[("p.yaml", &base.replace("/api/orders", "/api/orders/v2"))])).expect("valid policy"),
    );
    let (b, a) = (before.view("default"), after.view("default"));
    assert_eq!(a.version(Kind::Cluster), b.version(Kind::Cluster));
    assert_eq!(a.version(Kind::Endpoint), b.version(Kind::Endpoint));
    assert_eq!(a.version(Kind::Listener), b.version(Kind::Listener));
    assert_ne!(a.version(Kind::Route), b.version(Kind::Route));
    assert_ne!(after.version(), before.version());
}

#[test]
fn fleets_give_each_node_cluster_its_own_view() {
    let snapshot = translate(&load_case("fleets"));
    let names =
        |node: &str, kind: Kind| -> Vec<String> { snapshot.view(node).resources(kind).keys().cloned().collect() };
    assert_eq!(names("edge", Kind::Listener), ["admin", "edge"]);
    assert_eq!(names("internal", Kind::Listener), ["admin", "internal"]);
    assert_eq!(names("batch", Kind::Route), ["admin", "internal"]);
    assert_eq!(names("default", Kind::Listener), ["admin"]);
    assert_eq!(names("default", Kind::Cluster), ["orders"]);
    assert_ne!(snapshot.view("edge").version(Kind::Listener), snapshot.view("internal").version(Kind::Listener));
    // Same listeners, same versions: internal and batch share one.
    assert_eq!(snapshot.view("internal").version(Kind::Listener), snapshot.view("batch").version(Kind::Listener));
    assert_eq!(snapshot.view("edge").version(Kind::Cluster), snapshot.view("default").version(Kind::Cluster));
}

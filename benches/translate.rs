//! Translation time for large policies (issue 2, "Measure"): 1,000 and
//! 10,000 routes over 4 listeners and 50 services, timed as (a) `translate`
//! alone and (b) `load_texts` + `translate` (parse, validate, translate).
//! Goal: 10,000 routes translated in under 100 ms.
//!
//! And (c) what the watcher does after an edit of one route (issue 10): the
//! file rewritten, then `load_dir_cached` + `translate_cached` with what the
//! last reload kept, with the routes in one file per listener and all in
//! one file.
//!
//! Run with `cargo bench --bench translate`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};

use legate::policy::{load_dir_cached, load_texts, LoadCache};
use legate::translate::{translate, translate_cached, Cache};

const LISTENERS: usize = 4;
const SERVICES: usize = 50;
const SIZES: [usize; 2] = [1_000, 10_000];

/// A policy folder of `routes` routes, as in-memory files: listeners and
/// services in their own files, routes in one file per listener.
fn policy_texts(routes: usize) -> Vec<(String, String)> {
    let mut files = Vec::new();

    let mut listeners = String::from("listeners:\n");
    for l in 0..LISTENERS {
        let _ = writeln!(
            listeners,
            "  - {{ name: l{l}, port: {}, hosts: [\"api{l}.example.com\", \"*.api{l}.example.com\"] }}",
            10_000 + l
        );
    }
    listeners.push_str("defaults:\n  response_headers: { add: { X-Gateway: legate }, remove: [Server] }\n");
    files.push(("listeners.yaml".to_owned(), listeners));

    let mut services = String::from("services:\n");
    let lb = ["round_robin", "least_request", "random", "ring_hash"];
    for s in 0..SERVICES {
        let target = match s % 5 {
            0 => format!("url: http://svc-{s}.internal:8080"),
            1 => format!("endpoints: [\"svc-{s}-a.internal:8080\", \"svc-{s}-b.internal:8080\"]"),
            _ => format!("endpoints: [\"10.1.{s}.1:8080\", \"10.1.{s}.2:8080\", \"10.1.{s}.3:8080\"]"),
        };
        let _ = writeln!(
            services,
            "  - {{ name: svc-{s}, {target}, timeout: {}s, load_balancing: {} }}",
            1 + s % 10,
            lb[s % 4]
        );
    }
    files.push(("services.yaml".to_owned(), services));

    let mut per_listener = vec![String::from("routes:\n"); LISTENERS];
    for r in 0..routes {
        let out = &mut per_listener[r % LISTENERS];
        let svc = r % SERVICES;
        let _ = writeln!(out, "  - name: route-{r}\n    listener: l{}", r % LISTENERS);
        let mut matcher = match r % 10 {
            0..=4 => format!("prefix: /api/t{r}/res"),
            5 | 6 => format!("path: /api/t{r}/item"),
            _ => format!("regex: \"^/api/t{r}/items/[0-9]+$\""),
        };
        if r % 4 == 0 {
            matcher.push_str(", methods: [GET, POST]");
        }
        let mut headers = Vec::new();
        if r % 3 == 0 {
            headers.push(format!("x-tenant: t{}", r % 7));
            headers.push("x-debug: { present: true }".to_owned());
        }
        if r % 11 == 0 {
            headers.push("x-client: { regex: \"^(web|ios)-[0-9]+$\" }".to_owned());
        }
        if !headers.is_empty() {
            let _ = write!(matcher, ", headers: {{ {} }}", headers.join(", "));
        }
        if r % 13 == 0 {
            matcher.push_str(", query: { v: \"2\" }");
        }
        let _ = writeln!(out, "    match: {{ {matcher} }}");
        if r % 10 == 9 {
            let _ = writeln!(
                out,
                "    split: [{{ service: svc-{svc}, weight: 90 }}, {{ service: svc-{}, weight: 10 }}]",
                (svc + 1) % SERVICES
            );
        } else {
            let _ = writeln!(out, "    service: svc-{svc}");
        }
        match r % 10 {
            0..=4 if r % 4 == 1 => {
                let _ = writeln!(out, "    rewrite: {{ prefix: /v2/t{r}, host: svc-{svc}.example.com }}");
            }
            7 => {
                let _ = writeln!(
                    out,
                    "    rewrite: {{ regex: \"^/api/t{r}/items/([0-9]+)$\", substitution: \"/items/\\\\1\" }}"
                );
            }
            _ => {}
        }
        if r % 6 == 0 {
            let _ = writeln!(out, "    timeout: {}ms", 250 + r % 1000);
        }
        if r % 5 == 2 {
            let _ = writeln!(out, "    request_headers: {{ add: {{ X-Route: route-{r} }}, remove: [X-Debug] }}");
        }
    }
    for (l, text) in per_listener.into_iter().enumerate() {
        files.push((format!("routes/l{l}.yaml"), text));
    }
    files
}

fn bench_translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    group.sampling_mode(SamplingMode::Flat);
    for routes in SIZES {
        let policy = load_texts(&policy_texts(routes)).unwrap_or_else(|e| panic!("generated policy is invalid:\n{e}"));
        assert_eq!(policy.routes.len(), routes);
        group.throughput(Throughput::Elements(routes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(routes), &policy, |b, p| b.iter(|| translate(black_box(p))));
    }
    group.finish();
}

fn bench_load_and_translate(c: &mut Criterion) {
    let mut group = c.benchmark_group("load_texts+translate");
    group.sampling_mode(SamplingMode::Flat);
    for routes in SIZES {
        let texts = policy_texts(routes);
        group.throughput(Throughput::Elements(routes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(routes), &texts, |b, t| {
            b.iter(|| translate(&load_texts(black_box(t)).expect("valid policy")));
        });
    }
    group.finish();
}

/// `policy_texts` with every route in one file.
fn one_routes_file(texts: Vec<(String, String)>) -> Vec<(String, String)> {
    let (routes, mut out): (Vec<_>, Vec<_>) = texts.into_iter().partition(|(name, _)| name.starts_with("routes/"));
    let all = routes.iter().map(|(_, t)| &t["routes:\n".len()..]).collect::<String>();
    out.push(("routes/all.yaml".to_owned(), format!("routes:\n{all}")));
    out
}

fn bench_edit_one_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("edit_one_route+reload");
    group.sampling_mode(SamplingMode::Flat);
    for (layout, texts) in [("4_files", policy_texts(10_000)), ("1_file", one_routes_file(policy_texts(10_000)))] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        for (name, text) in &texts {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let (name, text) = texts.iter().find(|(n, _)| n.starts_with("routes/")).expect("a routes file");
        let edited = text.replacen("prefix: /api/t0/res", "prefix: /api/t0/edited", 1);
        assert_ne!(&edited, text);
        let path = dir.path().join(name);
        let (mut parsed, mut translated) = (LoadCache::default(), Cache::default());
        let mut flip = false;
        group.bench_function(BenchmarkId::from_parameter(layout), |b| {
            b.iter(|| {
                flip = !flip;
                std::fs::write(&path, if flip { &edited } else { text }).expect("write");
                let policy = load_dir_cached(dir.path(), &mut parsed).expect("valid policy");
                translate_cached(black_box(&policy), &mut translated)
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    // Six benchmarks in about a minute and a half on a 2-core machine.
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(8))
        .without_plots()
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_translate, bench_load_and_translate, bench_edit_one_route
}
criterion_main!(benches);

//! Propagation: how long from saving a policy file (an atomic rename, as
//! editors do) until a connected stock Envoy answers from the new route.
//!
//! `cargo bench --bench propagation` starts `legate serve`, one Envoy and an
//! echo upstream, makes a series of edits that each add a route, and polls
//! Envoy every millisecond until the new route answers. It does this with a
//! small policy and with 1,000 and 5,000 routes, and prints count, median,
//! p90, p99 and max in milliseconds. `PROPAGATION_EDITS` sets the number of
//! edits per size (default 40); `PROPAGATION_SIZES` the sizes
//! (default `1,1000,5000`).
//!
//! Then the same under churn: an edit every `PROPAGATION_CHURN_MS` (default
//! 100; 0 skips it), not waiting for the previous one, each timed from its
//! save until its own route answers. `PROPAGATION_FILES` (default 1) splits
//! the policy: the base routes over several files and the added routes alone
//! in the one file each edit rewrites. `LEGATE_TEST_XDS=delta` runs the Envoy
//! on delta xDS.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::{free_port, get, poll, Gateway};

fn main() {
    let edits: usize = std::env::var("PROPAGATION_EDITS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let sizes: Vec<usize> = std::env::var("PROPAGATION_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 1000, 5000]);
    let churn: u64 = std::env::var("PROPAGATION_CHURN_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let files: usize = std::env::var("PROPAGATION_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    let xds = common::xds_protocol();
    println!(
        "propagation: file saved -> Envoy answers from the new route ({edits} edits per size, one Envoy, {xds} xDS)"
    );
    println!("{:>8} {:>6} {:>9} {:>9} {:>9} {:>9}", "routes", "count", "median", "p90", "p99", "max");
    for &size in &sizes {
        row(size, &measure(size, edits, None, files));
    }
    if churn > 0 {
        println!(
            "under churn: an edit every {churn} ms, each timed until its route is served ({files} file(s), the edited one holding only the added routes when more than one)"
        );
        println!("{:>8} {:>6} {:>9} {:>9} {:>9} {:>9}", "routes", "count", "median", "p90", "p99", "max");
        for &size in &sizes {
            row(size, &measure(size, edits, Some(Duration::from_millis(churn)), files));
        }
    }
}

fn row(size: usize, samples: &[Duration]) {
    println!(
        "{size:>8} {:>6} {:>9} {:>9} {:>9} {:>9}",
        samples.len(),
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 90.0)),
        ms(percentile(samples, 99.0)),
        ms(percentile(samples, 100.0)),
    );
}

/// The policy's files: `base` routes under `/base/N/` and `added` more under
/// `/new/N/`, all to the echo upstream. With one file, everything is in
/// `gateway.yaml`; with more, the listener and service are in
/// `gateway.yaml`, the base routes spread over `base-K.yaml`, and the added
/// routes alone in `new.yaml` (the one file an edit touches).
fn policy(listen: u16, upstream: u16, base: usize, added: usize, files: usize) -> Vec<(String, String)> {
    let head = format!(
        "listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n\
         services:\n  - name: echo\n    url: http://127.0.0.1:{upstream}\n"
    );
    let base_route = |out: &mut String, i: usize| {
        let _ = write!(out, "  - name: base-{i}\n    match: {{ prefix: /base/{i}/ }}\n    service: echo\n");
    };
    let mut new = String::from("routes:\n");
    for i in 1..=added {
        let _ = write!(new, "  - name: new-{i}\n    match: {{ prefix: /new/{i}/ }}\n    service: echo\n");
    }
    if files == 1 {
        let mut out = head + "routes:\n";
        (0..base).for_each(|i| base_route(&mut out, i));
        out += &new["routes:\n".len()..];
        return vec![("gateway.yaml".into(), out)];
    }
    let mut out = vec![("gateway.yaml".to_owned(), head)];
    let parts = files - 1;
    for k in 0..parts {
        let mut text = String::from("routes:\n");
        (k..base).step_by(parts).for_each(|i| base_route(&mut text, i));
        out.push((format!("base-{k}.yaml"), text));
    }
    out.push(("new.yaml".into(), if added == 0 { String::new() } else { new }));
    out
}

/// Save → served times for `edits` edits on a policy of `base` routes: each
/// waits for the previous to be served, or with `churn` they come at that
/// pace whether or not the previous one is served yet.
fn measure(base: usize, edits: usize, churn: Option<Duration>, files: usize) -> Vec<Duration> {
    let mut gw = Gateway::new();
    let upstream = gw.echo("echo");
    let listen = free_port();
    for (name, text) in policy(listen, upstream, base, 0, files) {
        gw.write(&name, &text);
    }
    gw.serve();
    gw.envoy("bench", "edge");
    let first = format!("http://127.0.0.1:{listen}/base/0/");
    gw.wait("Envoy to serve the first route", Duration::from_secs(60), || get(&first).ok().filter(|r| r.status == 200));
    let url = |i: usize| format!("http://127.0.0.1:{listen}/new/{i}/");
    let save = |gw: &Gateway, i: usize| {
        // Only the file that changed is written, as an editor would.
        let (name, text) = policy(listen, upstream, base, i, files).pop().expect("a file");
        let t0 = Instant::now();
        gw.write(&name, &text);
        t0
    };

    let mut samples = Vec::with_capacity(edits);
    let Some(every) = churn else {
        for i in 1..=edits {
            assert_eq!(
                get(&url(i)).expect("Envoy answers").status,
                404,
                "/new/{i}/ must not be served before its edit"
            );
            let t0 = save(&gw, i);
            let served = poll(Duration::from_secs(30), Duration::from_millis(1), || {
                get(&url(i)).ok().filter(|r| r.status == 200).map(|_| t0.elapsed())
            });
            samples.push(served.unwrap_or_else(|| {
                panic!("edit {i} was not served within 30s; legate log: {}", gw.log("legate").display())
            }));
            // Let the ACK land and the watcher go quiet before the next save.
            std::thread::sleep(Duration::from_millis(50));
        }
        return samples;
    };
    // Saves every `every`; between them, the oldest edit not yet served is
    // polled every millisecond (a later route being served implies nothing
    // about an earlier one, so each is checked).
    let mut pending = std::collections::VecDeque::new();
    let mut next = Instant::now();
    let mut i = 0;
    let deadline = Instant::now() + every * u32::try_from(edits).unwrap_or(u32::MAX) + Duration::from_secs(60);
    while samples.len() < edits {
        assert!(Instant::now() < deadline, "edits not served: {pending:?}; legate log: {}", gw.log("legate").display());
        if i < edits && Instant::now() >= next {
            i += 1;
            pending.push_back((i, save(&gw, i)));
            next += every;
        }
        while let Some(&(j, t0)) = pending.front() {
            if get(&url(j)).ok().is_some_and(|r| r.status == 200) {
                samples.push(t0.elapsed());
                pending.pop_front();
            } else {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    samples
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

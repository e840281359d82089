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
    println!("propagation: file saved -> Envoy answers from the new route ({edits} edits per size, one Envoy)");
    println!("{:>8} {:>6} {:>9} {:>9} {:>9} {:>9}", "routes", "count", "median", "p90", "p99", "max");
    for size in sizes {
        let samples = measure(size, edits);
        println!(
            "{size:>8} {:>6} {:>9} {:>9} {:>9} {:>9}",
            samples.len(),
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 90.0)),
            ms(percentile(&samples, 99.0)),
            ms(percentile(&samples, 100.0)),
        );
    }
}

/// A policy with `base` routes under `/base/N/` and `added` more under
/// `/new/N/`, all to the echo upstream.
fn policy(listen: u16, upstream: u16, base: usize, added: usize) -> String {
    let mut out = format!(
        "listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\n\
         services:\n  - name: echo\n    url: http://127.0.0.1:{upstream}\nroutes:\n"
    );
    for i in 0..base {
        let _ = write!(out, "  - name: base-{i}\n    match: {{ prefix: /base/{i}/ }}\n    service: echo\n");
    }
    for i in 1..=added {
        let _ = write!(out, "  - name: new-{i}\n    match: {{ prefix: /new/{i}/ }}\n    service: echo\n");
    }
    out
}

/// Save → served times for `edits` edits on a policy of `base` routes.
fn measure(base: usize, edits: usize) -> Vec<Duration> {
    let mut gw = Gateway::new();
    let upstream = gw.echo("echo");
    let listen = free_port();
    gw.write("gateway.yaml", &policy(listen, upstream, base, 0));
    gw.serve();
    gw.envoy("bench", "edge");
    let first = format!("http://127.0.0.1:{listen}/base/0/");
    gw.wait("Envoy to serve the first route", Duration::from_secs(60), || get(&first).ok().filter(|r| r.status == 200));

    let mut samples = Vec::with_capacity(edits);
    for i in 1..=edits {
        let url = format!("http://127.0.0.1:{listen}/new/{i}/");
        let before = get(&url).expect("Envoy answers");
        assert_eq!(before.status, 404, "/new/{i}/ must not be served before its edit");
        let text = policy(listen, upstream, base, i);
        let t0 = Instant::now();
        gw.write("gateway.yaml", &text);
        let served = poll(Duration::from_secs(30), Duration::from_millis(1), || {
            get(&url).ok().filter(|r| r.status == 200).map(|_| t0.elapsed())
        });
        let took = served.unwrap_or_else(|| {
            panic!("edit {i} was not served within 30s; legate log: {}", gw.log("legate").display())
        });
        samples.push(took);
        // Let the ACK land and the watcher go quiet before the next save.
        std::thread::sleep(Duration::from_millis(50));
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

//! JWT cost: requests per second through one stock Envoy on the same echo
//! upstream, with JWT verification on and off, measured in one run.
//!
//! `cargo bench --bench jwt` starts `legate serve`, one Envoy (the harness
//! runs it with `--concurrency 1`) and an echo upstream, with two routes to
//! the same service: `/open` (`auth: none`) and `/jwt` (`auth: main`, a
//! provider with a JWKS file, an issuer and `claims_to_headers`). An
//! in-process load generator (std threads, one keep-alive client each) then
//! runs timed phases in turn: `/open` without a token, and `/jwt` with RS256
//! and ES256 tokens, each both as one token sent again and again (Envoy's
//! verified-token cache answers) and as 4,000 distinct tokens in turn (more
//! than the cache holds, so every request checks a signature), round after
//! round, so machine noise falls on every mode alike. Each phase has a 1 s warm-up, then a measured
//! window. Every response must be a 200; any other answer is printed and
//! fails the run. It prints each round, then per mode the median requests per
//! second over the rounds, p50 and p99 latency over all measured requests,
//! and the ratio to `/open`.
//!
//! `JWT_BENCH_CLIENTS` sets the concurrent clients (default 8),
//! `JWT_BENCH_SECS` the measured seconds per phase (default 5) and
//! `JWT_BENCH_ROUNDS` the rounds (default 3).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::jwt::{claims, jwks, Key};
use common::{free_port, request, Gateway};
use serde_json::json;
use support::{count_f64, env_or, median, ms, percentile};

const ISSUER: &str = "https://auth.example.com";
const WARM_UP: Duration = Duration::from_secs(1);
/// Requests that failed are printed up to this many per phase.
const SHOWN_ERRORS: usize = 5;

/// Distinct tokens in the "every request verified" modes: more than the
/// 1,000 a worker's cache holds, so cycling through them always misses.
const DISTINCT_TOKENS: usize = 4000;

/// One mode of the comparison: a path and the tokens sent in turn (none:
/// no `Authorization`).
struct Mode {
    name: &'static str,
    path: &'static str,
    tokens: Vec<String>,
}

/// What one phase measured.
struct Phase {
    requests: usize,
    latencies: Vec<Duration>,
    errors: usize,
    shown: Vec<String>,
}

impl Phase {
    fn rps(&self, window: Duration) -> f64 {
        count_f64(self.requests) / window.as_secs_f64()
    }
}

fn main() {
    let clients = env_or("JWT_BENCH_CLIENTS", 8);
    let secs = env_or("JWT_BENCH_SECS", 5);
    let rounds = env_or("JWT_BENCH_ROUNDS", 3);
    let window = Duration::from_secs(u64::try_from(secs).expect("seconds fit"));

    let rsa = Key::rsa("rsa-a", "a");
    let ec = Key::ec("e");
    let mut good = claims(ISSUER, "bench", "alice");
    // Valid for the whole run, however long it is made.
    good["exp"] = json!(common::jwt::now() + 24 * 3600);

    let mut gw = Gateway::new();
    let upstream = gw.echo("echo");
    let listen = free_port();
    gw.write("keys/main.json", &jwks(&[&rsa, &ec]));
    gw.write("gateway.yaml", &policy(listen, upstream));
    gw.serve();
    gw.envoy("bench", "edge");
    let base = format!("http://127.0.0.1:{listen}");

    let distinct = |key: &Key| -> Vec<String> {
        (0..DISTINCT_TOKENS)
            .map(|i| {
                let mut c = good.clone();
                c["jti"] = json!(i.to_string());
                key.sign(&c)
            })
            .collect()
    };
    let modes = [
        Mode { name: "open (no JWT)", path: "/open", tokens: Vec::new() },
        Mode { name: "RS256, cached", path: "/jwt", tokens: vec![rsa.sign(&good)] },
        Mode { name: "RS256, verified", path: "/jwt", tokens: distinct(&rsa) },
        Mode { name: "ES256, cached", path: "/jwt", tokens: vec![ec.sign(&good)] },
        Mode { name: "ES256, verified", path: "/jwt", tokens: distinct(&ec) },
    ];
    check(&gw, &base, &modes);

    println!(
        "jwt: same route and upstream, JWT verification off vs on; one Envoy (--concurrency 1), \
         {clients} keep-alive clients, {secs} s per phase after a 1 s warm-up, {rounds} rounds"
    );
    let mut results: Vec<Vec<Phase>> = modes.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, mode) in modes.iter().enumerate() {
            let url = format!("{base}{}", mode.path);
            let phase = run(&url, &mode.tokens, clients, window);
            line.push_str(&format!("  {} {:.0} rps", mode.name, phase.rps(window)));
            if phase.errors > 0 {
                line.push_str(&format!(" ({} errors)", phase.errors));
                for e in &phase.shown {
                    eprintln!("{} round {round}: {e}", mode.name);
                }
            }
            results[i].push(phase);
        }
        println!("{line}");
    }

    let errors: usize = results.iter().flatten().map(|p| p.errors).sum();
    let open_rps = median(&results[0].iter().map(|p| p.rps(window)).collect::<Vec<_>>());
    println!();
    println!(
        "{:<16} {:>12} {:>28} {:>10} {:>10} {:>9}",
        "mode", "median rps", "rps per round", "p50", "p99", "vs open"
    );
    for (mode, phases) in modes.iter().zip(&results) {
        let per_round: Vec<f64> = phases.iter().map(|p| p.rps(window)).collect();
        let rps = median(&per_round);
        let mut all: Vec<Duration> = phases.iter().flat_map(|p| p.latencies.iter().copied()).collect();
        all.sort_unstable();
        let rounds_text = per_round.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / ");
        println!(
            "{:<16} {rps:>12.0} {rounds_text:>28} {:>10} {:>10} {:>8.3}x",
            mode.name,
            ms(percentile(&all, 50.0)),
            ms(percentile(&all, 99.0)),
            rps / open_rps,
        );
    }
    assert!(errors == 0, "{errors} requests were not answered 200: the figures above are not valid");
}

/// One listener, one echo service, and two routes to it: `/open` public and
/// `/jwt` behind provider `main`.
fn policy(listen: u16, upstream: u16) -> String {
    format!(
        "listeners:
  - name: public
    port: {listen}
    address: 127.0.0.1
services:
  - name: echo
    url: http://127.0.0.1:{upstream}
routes:
  - name: open
    match: {{ prefix: /open }}
    service: echo
    auth: none
  - name: jwt
    match: {{ prefix: /jwt }}
    service: echo
    auth: main
auth:
  jwt:
    - name: main
      issuer: {ISSUER}
      jwks: {{ file: keys/main.json }}
      claims_to_headers: {{ sub: X-User-Id }}
"
    )
}

/// Before measuring: Envoy serves both routes, `/jwt` refuses a request
/// without a token, and each mode reaches the upstream with (for `/jwt`)
/// the `sub` claim as `X-User-Id`, so the figures are of the intended work.
fn check(gw: &Gateway, base: &str, modes: &[Mode]) {
    let push = Duration::from_secs(30);
    let open = format!("{base}/open");
    gw.wait("Envoy to serve /open", push, || request("GET", &open, &[]).ok().filter(|r| r.status == 200));
    let jwt = format!("{base}/jwt");
    let refused = request("GET", &jwt, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(refused.status, 401, "/jwt without a token must be refused: {}", refused.body);
    for mode in modes {
        let url = format!("{base}{}", mode.path);
        let auth = mode.tokens.first().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = gw.wait(&format!("{} to answer 200", mode.name), push, || {
            request("GET", &url, &headers).ok().filter(|r| r.status == 200)
        });
        let user = r.json()["headers"]["x-user-id"].clone();
        let expected = if mode.tokens.is_empty() { serde_json::Value::Null } else { json!("alice") };
        assert_eq!(user, expected, "{}: X-User-Id the upstream saw; body {}", mode.name, r.body);
    }
}

/// `clients` threads, each with its own keep-alive agent, send `GET url`
/// back to back (with the tokens in turn, each client from its own place in
/// the list) for the warm-up and then for `window`; only requests started
/// inside the window are counted and timed.
fn run(url: &str, tokens: &[String], clients: usize, window: Duration) -> Phase {
    let auth: Vec<String> = tokens.iter().map(|t| format!("Bearer {t}")).collect();
    let start = Instant::now() + WARM_UP;
    let end = start + window;
    let phases: Vec<Phase> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|i| {
                let (auth, first) = (&auth, i * auth.len() / clients);
                s.spawn(move || client(url, auth, first, start, end))
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("client thread")).collect()
    });
    let mut total = Phase { requests: 0, latencies: Vec::new(), errors: 0, shown: Vec::new() };
    for p in phases {
        total.requests += p.requests;
        total.latencies.extend(p.latencies);
        total.errors += p.errors;
        total.shown.extend(p.shown);
    }
    total.shown.truncate(SHOWN_ERRORS);
    total
}

fn client(url: &str, auth: &[String], first: usize, start: Instant, end: Instant) -> Phase {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build();
    let mut out = Phase { requests: 0, latencies: Vec::with_capacity(64 * 1024), errors: 0, shown: Vec::new() };
    for n in first.. {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let mut req = agent.get(url);
        if !auth.is_empty() {
            req = req.set("authorization", &auth[n % auth.len()]);
        }
        // The body is read to the end so the connection is reused.
        let failure = match req.call() {
            Ok(r) => r.into_string().err().map(|e| format!("reading the body: {e}")),
            Err(ureq::Error::Status(code, r)) => {
                Some(format!("status {code}: {}", r.into_string().unwrap_or_default()))
            }
            Err(ureq::Error::Transport(t)) => Some(t.to_string()),
        };
        let took = t0.elapsed();
        if let Some(e) = failure {
            out.errors += 1;
            if out.shown.len() < SHOWN_ERRORS {
                out.shown.push(e);
            }
        } else if t0 >= start {
            out.requests += 1;
            out.latencies.push(took);
        }
    }
    out
}

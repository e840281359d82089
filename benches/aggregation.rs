//! Aggregation overhead: what legate's aggregator adds over the slowest of
//! its calls, in latency and in requests per second through one stock Envoy.
//!
//! `cargo bench --bench aggregation` starts, for each of two scenarios, a
//! fresh `legate serve`, one Envoy (the harness runs it with
//! `--concurrency 1`) and three `legate echo` upstreams, each a service. The
//! policy has one public listener (no auth, no rate limit) with one
//! aggregation, `/agg/{id}`, calling all three services at once, and a plain
//! route, `/plain/`, to the slowest of them, for comparison through Envoy.
//! The scenarios: every upstream answers at once (no delay: the aggregator's
//! pure overhead), and upstreams that wait 1 ms, 2 ms and 5 ms (`--delay`)
//! before answering, the slowest call being 5 ms.
//!
//! Latency: four targets are each sent `AGG_BENCH_REQUESTS` sequential
//! requests (default 2,000), each target on its own keep-alive connection,
//! taking turns request by request so that machine noise falls on all four
//! alike, after a warm-up of a tenth as many:
//! 1. the slowest upstream, directly (its echo port);
//! 2. the aggregator, directly (legate's `--aggregator-addr`, with the
//!    `x-legate-aggregation` header Envoy's route would set);
//! 3. the plain route to the slowest upstream, through Envoy;
//! 4. the aggregation, through Envoy.
//!
//! The aggregator's overhead is (2) − (1) and, through Envoy, (4) − (3), at
//! p50 and p99. The goal is under 1 ms added at p50.
//!
//! Requests per second: `AGG_BENCH_CLIENTS` concurrent clients (default 8,
//! std threads, one keep-alive connection each) send requests back to back
//! for a 1 s warm-up and then `AGG_BENCH_SECS` measured seconds (default 3),
//! alternating between the plain route and the aggregation through Envoy for
//! `AGG_BENCH_ROUNDS` rounds (default 3), so noise falls on both. It reports
//! the median requests per second over the rounds, p50 and p99 under that
//! load, and the aggregation's ratio to the plain route. Each aggregation
//! request makes three upstream calls where a plain request makes one.
//! Over each measured window it also takes the CPU time (`/proc/PID/stat`)
//! of `legate serve`, Envoy, the three upstreams and this process (the
//! clients), found by their command lines, and prints it per request: where
//! an aggregation's cost goes when the cores, not the delays, are the limit.
//!
//! Every answer is checked: status 200; from an echo, the service that
//! answered; from an aggregation, all three keys, each the answer of its
//! own service, and no `x-legate-partial` header (no call fell back to its
//! default). Failures are printed and fail the run, so a broken setup cannot
//! print good figures. The load generator, Envoy, legate and the upstreams
//! share the machine's cores.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use common::{free_port, request, Gateway};
use support::{clock_ticks, count_f64, env_or, median, ms, percentile, stat_ticks};

/// The aggregation's name, as Envoy's route puts it in [`NAME_HEADER`].
const AGGREGATION: &str = "bench";
/// The header naming the aggregation (legate's `aggregator::NAME_HEADER`).
const NAME_HEADER: &str = "x-legate-aggregation";
/// The header naming the calls that fell back to their default.
const PARTIAL_HEADER: &str = "x-legate-partial";
/// Call name and service of each call; the last is the slowest.
const CALLS: [(&str, &str); 3] = [("a", "svc-a"), ("b", "svc-b"), ("c", "svc-c")];
/// The slowest service: the plain route's and the direct target's.
const SLOWEST: &str = "svc-c";
const AGGREGATION_PATH: &str = "/agg/u1";
/// The latency targets, in order.
const LATENCY_TARGETS: [&str; 4] =
    ["slowest upstream, direct", "aggregator, direct", "plain route via Envoy", "aggregation via Envoy"];
const PLAIN_PATH: &str = "/plain/u1";

const WARM_UP: Duration = Duration::from_secs(1);
/// Requests that failed are printed up to this many per target and phase.
const SHOWN_ERRORS: usize = 5;

/// One scenario: how long each upstream waits before answering, in ms.
struct Scenario {
    name: &'static str,
    delays: [u64; 3],
}

const SCENARIOS: [Scenario; 2] =
    [Scenario { name: "no delay", delays: [0, 0, 0] }, Scenario { name: "1/2/5 ms", delays: [1, 2, 5] }];

/// What an answer must be.
#[derive(Clone, Copy)]
enum Expect {
    /// An echo of this service.
    Echo(&'static str),
    /// The aggregation: every call answered by its own service.
    Aggregation,
}

impl Expect {
    fn check(self, partial: Option<&str>, body: &str) -> Result<(), String> {
        let json: serde_json::Value =
            serde_json::from_str(body).map_err(|e| format!("body is not JSON ({e}): {body:?}"))?;
        match self {
            Expect::Echo(service) => {
                if json["service"] != service {
                    return Err(format!("expected an echo of {service}: {body}"));
                }
            }
            Expect::Aggregation => {
                if let Some(p) = partial {
                    return Err(format!("{PARTIAL_HEADER}: {p} (calls answered by their default): {body}"));
                }
                for (call, service) in CALLS {
                    if json.get(call).is_none_or(|v| v["service"] != service) {
                        return Err(format!("`{call}` is not the answer of {service}: {body}"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Something to send requests to.
struct Target {
    name: &'static str,
    url: String,
    /// The aggregation header, for the aggregator called directly.
    named: bool,
    expect: Expect,
}

/// Latencies of the answers that passed the check, and the failures.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: usize,
    shown: Vec<String>,
}

impl Samples {
    fn record(&mut self, result: Result<Duration, String>, counted: bool) {
        match result {
            Ok(took) if counted => self.latencies.push(took),
            Ok(_) => {}
            Err(e) => {
                self.errors += 1;
                if self.shown.len() < SHOWN_ERRORS {
                    self.shown.push(e);
                }
            }
        }
    }

    fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.shown.extend(other.shown);
        self.shown.truncate(SHOWN_ERRORS);
    }

    /// Print the failures, if any, naming `what`.
    fn report(&self, what: &str) {
        for e in &self.shown {
            eprintln!("{what}: {e}");
        }
        if self.errors > self.shown.len() {
            eprintln!("{what}: ... {} failures in all", self.errors);
        }
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.latencies.clone();
        v.sort_unstable();
        v
    }
}

/// One scenario's figures.
struct Figures {
    /// Per latency target (upstream, aggregator, plain, aggregation).
    latency: Vec<Vec<Duration>>,
    /// Per throughput target (plain, aggregation), per round: req/s.
    rps: [Vec<f64>; 2],
    /// Per throughput target: every measured latency under load, sorted.
    loaded: [Vec<Duration>; 2],
    /// Per throughput target: CPU time per request of each process group.
    cpu: [Cpu; 2],
}

/// The processes whose CPU time is counted, by what their command line holds.
struct Processes {
    /// `legate serve` (xDS, admin and the aggregator).
    legate: Vec<u32>,
    envoy: Vec<u32>,
    /// The three `legate echo` upstreams.
    upstreams: Vec<u32>,
}

/// CPU seconds over a measured window, per process group; summed over rounds.
#[derive(Default, Clone, Copy)]
struct Cpu {
    legate: f64,
    envoy: f64,
    upstreams: f64,
    /// This process: the load generator.
    client: f64,
    requests: usize,
}

impl Cpu {
    fn add(&mut self, other: Cpu) {
        self.legate += other.legate;
        self.envoy += other.envoy;
        self.upstreams += other.upstreams;
        self.client += other.client;
        self.requests += other.requests;
    }

    /// Microseconds of `secs` CPU per request.
    fn per_request(&self, secs: f64) -> String {
        format!("{:.0} µs", secs * 1e6 / count_f64(self.requests.max(1)))
    }
}

fn main() {
    let requests = env_or("AGG_BENCH_REQUESTS", 2000);
    let clients = env_or("AGG_BENCH_CLIENTS", 8);
    let secs = env_or("AGG_BENCH_SECS", 3);
    let rounds = env_or("AGG_BENCH_ROUNDS", 3);
    let window = Duration::from_secs(u64::try_from(secs).expect("seconds fit"));
    let warm_up = (requests / 10).max(20);

    println!(
        "aggregation: one aggregation of three calls vs the slowest call; one Envoy (--concurrency 1); \
         latency over {requests} sequential keep-alive requests per target (after {warm_up}), \
         throughput with {clients} keep-alive clients, {secs} s per phase after a 1 s warm-up, {rounds} rounds"
    );
    let mut errors = 0;
    let mut figures = Vec::new();
    for scenario in &SCENARIOS {
        let (f, e) = run_scenario(scenario, requests, warm_up, clients, window, rounds);
        figures.push(f);
        errors += e;
    }

    println!();
    println!("Latency ({requests} sequential requests per target)");
    println!("{:<10} {:<26} {:>10} {:>10}", "scenario", "target", "p50", "p99");
    for (scenario, f) in SCENARIOS.iter().zip(&figures) {
        for (name, sorted) in LATENCY_TARGETS.iter().zip(&f.latency) {
            println!(
                "{:<10} {name:<26} {:>10} {:>10}",
                scenario.name,
                ms(percentile(sorted, 50.0)),
                ms(percentile(sorted, 99.0))
            );
        }
    }
    println!();
    println!("Overhead over the slowest call (goal: under 1 ms at p50)");
    println!("{:<10} {:<42} {:>10} {:>10}", "scenario", "comparison", "p50", "p99");
    for (scenario, f) in SCENARIOS.iter().zip(&figures) {
        for (name, with, without) in
            [("aggregator direct - upstream direct", 1, 0), ("aggregation via Envoy - plain via Envoy", 3, 2)]
        {
            let diff = |p: f64| {
                percentile(&f.latency[with], p).as_secs_f64() - percentile(&f.latency[without], p).as_secs_f64()
            };
            println!("{:<10} {name:<42} {:>10} {:>10}", scenario.name, signed_ms(diff(50.0)), signed_ms(diff(99.0)));
        }
    }
    println!();
    println!("Requests per second through Envoy ({clients} clients; an aggregation request is three upstream calls)");
    println!(
        "{:<10} {:<12} {:>11} {:>24} {:>9} {:>9} {:>9}",
        "scenario", "target", "median rps", "rps per round", "p50", "p99", "vs plain"
    );
    for (scenario, f) in SCENARIOS.iter().zip(&figures) {
        let plain = median(&f.rps[0]);
        for (i, name) in ["plain route", "aggregation"].iter().enumerate() {
            let rps = median(&f.rps[i]);
            let per_round = f.rps[i].iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(" / ");
            println!(
                "{:<10} {name:<12} {rps:>11.0} {per_round:>24} {:>9} {:>9} {:>8.2}x",
                scenario.name,
                ms(percentile(&f.loaded[i], 50.0)),
                ms(percentile(&f.loaded[i], 99.0)),
                rps / plain,
            );
        }
    }
    println!();
    println!("CPU time per request under that load (from /proc, over the measured windows)");
    println!(
        "{:<10} {:<12} {:>9} {:>9} {:>13} {:>9} {:>9}",
        "scenario", "target", "legate", "Envoy", "3 upstreams", "client", "total"
    );
    for (scenario, f) in SCENARIOS.iter().zip(&figures) {
        for (name, c) in ["plain route", "aggregation"].iter().zip(&f.cpu) {
            println!(
                "{:<10} {name:<12} {:>9} {:>9} {:>13} {:>9} {:>9}",
                scenario.name,
                c.per_request(c.legate),
                c.per_request(c.envoy),
                c.per_request(c.upstreams),
                c.per_request(c.client),
                c.per_request(c.legate + c.envoy + c.upstreams + c.client),
            );
        }
    }
    assert!(errors == 0, "{errors} requests failed their check: the figures above are not valid");
}

/// Start the gateway for `scenario`, check it, and measure latency and
/// throughput; returns the figures and how many requests failed.
fn run_scenario(
    scenario: &Scenario,
    requests: usize,
    warm_up: usize,
    clients: usize,
    window: Duration,
    rounds: usize,
) -> (Figures, usize) {
    let mut gw = Gateway::new();
    let mut ports = [0u16; 3];
    for ((port, (_, service)), delay) in ports.iter_mut().zip(CALLS).zip(scenario.delays) {
        *port = gw.echo_with(service, &["--delay", &delay.to_string()]);
    }
    let listen = free_port();
    gw.write("gateway.yaml", &policy(listen, ports));
    gw.serve();
    gw.envoy("bench", "edge");
    let envoy = format!("http://127.0.0.1:{listen}");
    let targets = [
        Target {
            name: LATENCY_TARGETS[0],
            url: format!("http://127.0.0.1:{}{PLAIN_PATH}", ports[2]),
            named: false,
            expect: Expect::Echo(SLOWEST),
        },
        Target {
            name: LATENCY_TARGETS[1],
            url: format!("http://127.0.0.1:{}{AGGREGATION_PATH}", gw.aggregator_port),
            named: true,
            expect: Expect::Aggregation,
        },
        Target {
            name: LATENCY_TARGETS[2],
            url: format!("{envoy}{PLAIN_PATH}"),
            named: false,
            expect: Expect::Echo(SLOWEST),
        },
        Target {
            name: LATENCY_TARGETS[3],
            url: format!("{envoy}{AGGREGATION_PATH}"),
            named: false,
            expect: Expect::Aggregation,
        },
    ];
    // Envoy serves both routes before anything is measured.
    for t in &targets[2..] {
        gw.wait(&format!("{} to answer", t.name), Duration::from_secs(30), || {
            let r = request("GET", &t.url, &[]).ok().filter(|r| r.status == 200)?;
            t.expect.check(r.header(PARTIAL_HEADER), &r.body).ok()
        });
    }

    println!("\nscenario {}: upstream delays {:?} ms", scenario.name, scenario.delays);
    let mut errors = 0;
    let latency = sequential(&targets, requests, warm_up);
    let mut latency_sorted = Vec::new();
    for (t, s) in targets.iter().zip(&latency) {
        s.report(&format!("{} / {}", scenario.name, t.name));
        errors += s.errors;
        let sorted = s.sorted();
        println!("  {:<26} p50 {:>9}  p99 {:>9}", t.name, ms(percentile(&sorted, 50.0)), ms(percentile(&sorted, 99.0)));
        latency_sorted.push(sorted);
    }

    let procs = Processes::find(&gw, ports);
    let loaded_targets = [&targets[2], &targets[3]];
    let mut rps: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut loaded: [Samples; 2] = [Samples::default(), Samples::default()];
    let mut cpu = [Cpu::default(); 2];
    for round in 1..=rounds {
        let mut line = format!("  round {round}:");
        for (i, t) in loaded_targets.iter().enumerate() {
            let (samples, used) = concurrent(t, clients, window, &procs);
            let r = count_f64(samples.latencies.len()) / window.as_secs_f64();
            line.push_str(&format!("  {} {r:.0} rps", t.name));
            if samples.errors > 0 {
                line.push_str(&format!(" ({} errors)", samples.errors));
                samples.report(&format!("{} / {} round {round}", scenario.name, t.name));
            }
            errors += samples.errors;
            rps[i].push(r);
            loaded[i].merge(samples);
            cpu[i].add(used);
        }
        println!("{line}");
    }
    let [plain, aggregation] = loaded;
    (Figures { latency: latency_sorted, rps, loaded: [plain.sorted(), aggregation.sorted()], cpu }, errors)
}

/// Three services with echoes at `ports`, one aggregation calling each of
/// them, and a plain route to the slowest; all public, on one listener.
fn policy(listen: u16, ports: [u16; 3]) -> String {
    let [(a, sa), (b, sb), (c, sc)] = CALLS;
    let [pa, pb, pc] = ports;
    format!(
        "listeners:
  - name: public
    port: {listen}
    address: 127.0.0.1
services:
  - name: {sa}
    url: http://127.0.0.1:{pa}
  - name: {sb}
    url: http://127.0.0.1:{pb}
  - name: {sc}
    url: http://127.0.0.1:{pc}
aggregations:
  - name: {AGGREGATION}
    path: /agg/{{id}}
    methods: [GET]
    auth: none
    timeout: 2s
    calls:
      {a}: {{ service: {sa}, path: \"/{a}/{{id}}\" }}
      {b}: {{ service: {sb}, path: \"/{b}/{{id}}\" }}
      {c}: {{ service: {sc}, path: \"/{c}/{{id}}\" }}
routes:
  - name: plain
    match: {{ prefix: /plain/ }}
    service: {SLOWEST}
    auth: none
"
    )
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .max_idle_connections_per_host(1)
        .build()
}

/// One request, timed from sending it to the end of its body, then checked.
fn send(agent: &ureq::Agent, t: &Target) -> Result<Duration, String> {
    let mut req = agent.get(&t.url);
    if t.named {
        req = req.set(NAME_HEADER, AGGREGATION);
    }
    let t0 = Instant::now();
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            return Err(format!("status {code}: {}", r.into_string().unwrap_or_default()));
        }
        Err(ureq::Error::Transport(e)) => return Err(e.to_string()),
    };
    let partial = resp.header(PARTIAL_HEADER).map(str::to_owned);
    // The body is read to the end so the connection is reused.
    let body = resp.into_string().map_err(|e| format!("reading the body: {e}"))?;
    let took = t0.elapsed();
    t.expect.check(partial.as_deref(), &body)?;
    Ok(took)
}

/// `warm_up` then `requests` rounds of one request to each target in turn,
/// each target on its own keep-alive connection; the warm-up is checked but
/// not timed.
fn sequential(targets: &[Target], requests: usize, warm_up: usize) -> Vec<Samples> {
    let agents: Vec<ureq::Agent> = targets.iter().map(|_| agent()).collect();
    let mut out: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for n in 0..warm_up + requests {
        for ((t, a), s) in targets.iter().zip(&agents).zip(&mut out) {
            s.record(send(a, t), n >= warm_up);
        }
    }
    out
}

/// `clients` threads, each with its own keep-alive connection, send
/// requests to `t` back to back for the warm-up and then for `window`; only
/// requests started inside the window are counted and timed, and the CPU
/// time of `procs` and of this process is taken over the window.
fn concurrent(t: &Target, clients: usize, window: Duration, procs: &Processes) -> (Samples, Cpu) {
    let start = Instant::now() + WARM_UP;
    let end = start + window;
    let (parts, cpu): (Vec<Samples>, Cpu) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(move || {
                    let agent = agent();
                    let mut out = Samples { latencies: Vec::with_capacity(64 * 1024), ..Samples::default() };
                    loop {
                        let t0 = Instant::now();
                        if t0 >= end {
                            break;
                        }
                        out.record(send(&agent, t), t0 >= start);
                    }
                    out
                })
            })
            .collect();
        let sampler = s.spawn(move || {
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let before = procs.ticks();
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            cpu_between(before, procs.ticks())
        });
        let parts = workers.into_iter().map(|w| w.join().expect("client thread")).collect();
        (parts, sampler.join().expect("CPU sampler thread"))
    });
    let mut total = Samples::default();
    for p in parts {
        total.merge(p);
    }
    let cpu = Cpu { requests: total.latencies.len(), ..cpu };
    (total, cpu)
}

impl Processes {
    /// The processes `gw` started for this scenario, found in `/proc` by
    /// their command lines (each names its own ports or files).
    fn find(gw: &Gateway, upstream_ports: [u16; 3]) -> Processes {
        let aggregator = format!("127.0.0.1:{}", gw.aggregator_port);
        let bootstrap = gw.path().join("bootstrap-bench.yaml").display().to_string();
        let legate = pids_with(&["serve", "--aggregator-addr", &aggregator]);
        let envoy = pids_with(&["-c", &bootstrap]);
        let upstreams: Vec<u32> =
            upstream_ports.iter().flat_map(|p| pids_with(&["echo", "--listen", &format!("127.0.0.1:{p}")])).collect();
        assert!(
            !legate.is_empty() && !envoy.is_empty() && upstreams.len() >= 3,
            "cannot find the processes in /proc: legate {legate:?}, Envoy {envoy:?}, upstreams {upstreams:?}"
        );
        Processes { legate, envoy, upstreams }
    }

    /// CPU ticks so far: legate, Envoy, upstreams, this process.
    fn ticks(&self) -> [u64; 4] {
        let sum = |pids: &[u32]| pids.iter().map(|p| stat_ticks(&format!("/proc/{p}/stat"))).sum();
        [sum(&self.legate), sum(&self.envoy), sum(&self.upstreams), stat_ticks("/proc/self/stat")]
    }
}

/// What `/proc` counted between two [`Processes::ticks`] readings, in seconds.
fn cpu_between(before: [u64; 4], after: [u64; 4]) -> Cpu {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let per_sec = *TICKS.get_or_init(clock_ticks);
    #[allow(clippy::cast_precision_loss)]
    let secs = |i: usize| after[i].saturating_sub(before[i]) as f64 / per_sec;
    Cpu { legate: secs(0), envoy: secs(1), upstreams: secs(2), client: secs(3), requests: 0 }
}

/// Processes whose command line holds every one of `needles` as a whole argument.
fn pids_with(needles: &[&str]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            needles.iter().all(|n| args.contains(&n.as_bytes()))
        })
        .collect()
}

fn signed_ms(secs: f64) -> String {
    format!("{:+.2} ms", secs * 1000.0)
}

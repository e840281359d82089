//! Global rate-limit service: decisions per second on one core, counting in
//! memory and in Redis.
//!
//! `cargo bench --bench ratelimit` runs legate's `RateLimitService`
//! (`ShouldRateLimit`, what Envoy's global rate-limit filter calls) in this
//! process on one dedicated thread with a single-threaded tokio runtime: that
//! thread is the service's one core, and does the TCP, HTTP/2, protobuf,
//! decision and (with Redis) Redis client work. A load generator on a separate
//! 2-thread runtime keeps `RL_BENCH_CONCURRENCY` requests in flight (default
//! 128) over `RL_BENCH_CHANNELS` HTTP/2 connections (default 4). Each request
//! carries one legate descriptor (policy, route, client address) with the
//! client drawn from 10,000 addresses. After 1 s of warm-up it measures for
//! `RL_BENCH_SECS` (default 5) and prints decisions per second, p50/p99
//! latency, the CPU time the service thread used (from
//! `/proc/self/task/<tid>/stat`) and decisions per CPU-second of that thread
//! — the per-core figure. With Redis it also prints the CPU time of the Redis
//! server it started (`redis-server` on PATH, or `$REDIS_SERVER_BIN`).
//!
//! Modes (`RL_BENCH_MODES`, default all): `memory` and `redis` with a limit
//! no client reaches, so every decision must be OK; `memory-over` and
//! `redis-over` with 1 request per minute per client, so nearly every decision
//! is OVER_LIMIT. Any other answer or a gRPC error fails the run, so a broken
//! setup cannot print good figures.
//!
//! The load generator, the service thread and Redis share the machine's
//! cores, so plain decisions/s is bounded by the client too; decisions per
//! service CPU-second is what one core of legate would serve.

/// The allocator the `legate` binary uses (src/main.rs), so the figures are its.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod support;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{rate_limit_descriptor::Entry, RateLimitDescriptor};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use legate::ratelimit::{Counters, LimitSpec, Service, SPEC_KEY};
use support::{clock_ticks, stat_ticks};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};

/// Distinct client addresses.
const CLIENTS: usize = 10_000;
/// Warm-up before the measured window.
const WARM_UP: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
}

struct Mode {
    name: &'static str,
    store: Store,
    /// The descriptor's policy ([`LimitSpec`] text).
    spec: &'static str,
    /// Whether OVER_LIMIT answers are expected (and most answers must be).
    over: bool,
}

const MODES: [Mode; 4] = [
    Mode { name: "memory", store: Store::Memory, spec: "bench|minute=1000000000|", over: false },
    Mode { name: "redis", store: Store::Redis, spec: "bench|minute=1000000000|", over: false },
    Mode { name: "memory-over", store: Store::Memory, spec: "bench-over|minute=1|", over: true },
    Mode { name: "redis-over", store: Store::Redis, spec: "bench-over|minute=1|", over: true },
];

struct Settings {
    secs: u64,
    concurrency: usize,
    channels: usize,
    ticks_per_sec: f64,
}

/// What one mode measured.
struct Outcome {
    decisions: u64,
    over: u64,
    errors: u64,
    error_sample: Option<String>,
    latencies_us: Vec<u32>,
    window: Duration,
    service_cpu: f64,
    process_cpu: f64,
    redis_cpu: Option<f64>,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

fn main() {
    let settings = Settings {
        secs: env("RL_BENCH_SECS", 5u64).max(1),
        concurrency: env("RL_BENCH_CONCURRENCY", 128usize).max(1),
        channels: env("RL_BENCH_CHANNELS", 4usize).max(1),
        ticks_per_sec: clock_ticks(),
    };
    let wanted: Vec<String> = std::env::var("RL_BENCH_MODES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
        .unwrap_or_else(|| MODES.iter().map(|m| m.name.to_owned()).collect());
    let modes: Vec<&Mode> = MODES.iter().filter(|m| wanted.iter().any(|w| w == m.name)).collect();
    assert!(!modes.is_empty(), "RL_BENCH_MODES names none of memory, redis, memory-over, redis-over");
    for m in &modes {
        assert!(LimitSpec::decode(m.spec).is_some(), "{} is not a policy legate reads", m.spec);
    }
    let redis = modes.iter().any(|m| m.store == Store::Redis).then(Redis::start);

    println!(
        "rate-limit service on one thread: {} in flight over {} HTTP/2 connections, {CLIENTS} client keys, \
         {} s measured after {} s warm-up",
        settings.concurrency,
        settings.channels,
        settings.secs,
        WARM_UP.as_secs()
    );
    println!(
        "{:<12} {:>12} {:>8} {:>8} {:>9} {:>14} {:>10} {:>11} {:>7}",
        "mode", "decisions/s", "p50 ms", "p99 ms", "svc CPU s", "per svc CPU-s", "proc CPU s", "Redis CPU s", "over %"
    );
    let mut failures = Vec::new();
    for mode in modes {
        let out = run(mode, &settings, redis.as_ref());
        let secs = out.window.as_secs_f64();
        let rate = out.decisions as f64 / secs;
        let mut lat = out.latencies_us.clone();
        lat.sort_unstable();
        let per_cpu = if out.service_cpu > 0.0 { out.decisions as f64 / out.service_cpu } else { f64::NAN };
        let over_pct = if out.decisions > 0 { 100.0 * out.over as f64 / out.decisions as f64 } else { 0.0 };
        println!(
            "{:<12} {:>12.0} {:>8.2} {:>8.2} {:>9.2} {:>14.0} {:>10.2} {:>11} {:>7.1}",
            mode.name,
            rate,
            f64::from(percentile(&lat, 50.0)) / 1000.0,
            f64::from(percentile(&lat, 99.0)) / 1000.0,
            out.service_cpu,
            per_cpu,
            out.process_cpu,
            out.redis_cpu.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            over_pct,
        );
        if out.errors > 0 {
            failures.push(format!(
                "{}: {} wrong answers or errors (first: {})",
                mode.name,
                out.errors,
                out.error_sample.unwrap_or_default()
            ));
        }
        if out.decisions == 0 {
            failures.push(format!("{}: no decisions in the measured window", mode.name));
        }
        if mode.over && out.over * 2 < out.decisions {
            failures.push(format!("{}: only {over_pct:.1}% OVER_LIMIT, expected most", mode.name));
        }
    }
    println!(
        "svc CPU s: CPU time of the service thread in the window; per svc CPU-s: decisions per CPU-second of it \
         (one core); proc CPU s: this whole process (service + load generator)"
    );
    drop(redis);
    assert!(failures.is_empty(), "the run is not valid:\n{}", failures.join("\n"));
}

/// One mode: start the service thread, drive it, stop it.
fn run(mode: &Mode, settings: &Settings, redis: Option<&Redis>) -> Outcome {
    let redis_url = match mode.store {
        Store::Memory => None,
        Store::Redis => Some(redis.expect("Redis was started").url()),
    };
    let server = ServiceThread::start(redis_url);
    let redis_pid = redis.filter(|_| mode.store == Store::Redis).map(|r| r.child.id());
    let out = drive(mode, settings, &server, redis_pid);
    server.stop();
    out
}

/// legate's service on its own thread and current-thread runtime.
struct ServiceThread {
    tid: u32,
    port: u16,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl ServiceThread {
    fn start(redis_url: Option<String>) -> ServiceThread {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rl-service".into())
            .spawn(move || {
                let tid = this_thread_id();
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
                rt.block_on(async move {
                    let counters = match redis_url {
                        Some(url) => Counters::redis(&url).await.expect("Redis counters"),
                        None => Counters::memory(),
                    };
                    let svc = Service::new(Arc::new(counters), legate::state::State::new()).into_service();
                    let incoming =
                        TcpIncoming::bind(([127, 0, 0, 1], 0).into()).expect("bind").with_nodelay(Some(true));
                    let port = incoming.local_addr().expect("local address").port();
                    ready_tx.send((tid, port)).expect("report ready");
                    tonic::transport::Server::builder()
                        .add_service(svc)
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stopped.await;
                        })
                        .await
                        .expect("serve");
                });
            })
            .expect("spawn the service thread");
        let (tid, port) = ready_rx.recv().expect("the service thread started");
        ServiceThread { tid, port, stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("the service thread ended cleanly");
    }
}

/// Per-task results.
#[derive(Default)]
struct Tally {
    decisions: u64,
    over: u64,
    errors: u64,
    error_sample: Option<String>,
    latencies_us: Vec<u32>,
}

/// Run the load generator against `server` for the warm-up and the window.
fn drive(mode: &Mode, settings: &Settings, server: &ServiceThread, redis_pid: Option<u32>) -> Outcome {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let url = format!("http://127.0.0.1:{}", server.port);
        let mut clients = Vec::with_capacity(settings.channels);
        for _ in 0..settings.channels {
            let channel: Channel =
                Endpoint::from_shared(url.clone()).expect("endpoint").connect().await.expect("connect to the service");
            clients.push(RateLimitServiceClient::new(channel));
        }
        let addresses: Arc<Vec<String>> =
            Arc::new((0..CLIENTS).map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)).collect());
        let from = Instant::now() + WARM_UP;
        let until = from + Duration::from_secs(settings.secs);
        let tasks: Vec<_> = (0..settings.concurrency)
            .map(|i| {
                let client = clients[i % clients.len()].clone();
                let addresses = Arc::clone(&addresses);
                let spec = mode.spec;
                let over = mode.over;
                tokio::spawn(async move { load(client, &addresses, spec, over, i as u64, from, until).await })
            })
            .collect();
        tokio::time::sleep_until(from.into()).await;
        let before =
            (thread_ticks(server.tid), process_ticks("self"), redis_pid.map(|p| process_ticks(&p.to_string())));
        let started = Instant::now();
        tokio::time::sleep_until(until.into()).await;
        let after = (thread_ticks(server.tid), process_ticks("self"), redis_pid.map(|p| process_ticks(&p.to_string())));
        let window = started.elapsed();
        let mut out = Outcome {
            decisions: 0,
            over: 0,
            errors: 0,
            error_sample: None,
            latencies_us: Vec::new(),
            window,
            service_cpu: (after.0 - before.0) as f64 / settings.ticks_per_sec,
            process_cpu: (after.1 - before.1) as f64 / settings.ticks_per_sec,
            redis_cpu: before.2.zip(after.2).map(|(b, a)| (a - b) as f64 / settings.ticks_per_sec),
        };
        for task in tasks {
            let t = task.await.expect("load task");
            out.decisions += t.decisions;
            out.over += t.over;
            out.errors += t.errors;
            out.error_sample = out.error_sample.or(t.error_sample);
            out.latencies_us.extend(t.latencies_us);
        }
        out
    })
}

/// One in-flight request at a time, back to back, until `until`; answers
/// completed in `[from, until]` are counted.
async fn load(
    mut client: RateLimitServiceClient<Channel>,
    addresses: &[String],
    spec: &str,
    over_expected: bool,
    seed: u64,
    from: Instant,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        let sent = Instant::now();
        if sent >= until {
            break;
        }
        // xorshift64: a different client each request.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let client_addr = &addresses[(x % addresses.len() as u64) as usize];
        let entry = |k: &str, v: &str| Entry { key: k.to_owned(), value: v.to_owned() };
        let request = RateLimitRequest {
            domain: "legate".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![entry(SPEC_KEY, spec), entry("route", "r"), entry("remote_address", client_addr)],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        let answer = client.should_rate_limit(request).await;
        let done = Instant::now();
        let mut over = false;
        let wrong = match answer {
            Ok(resp) => {
                let code = resp.into_inner().overall_code;
                over = code == i32::from(Code::OverLimit);
                if code == i32::from(Code::Ok) || (over && over_expected) {
                    None
                } else {
                    Some(format!("overall_code {code}"))
                }
            }
            Err(status) => Some(format!("gRPC {status}")),
        };
        if let Some(w) = wrong {
            tally.errors += 1;
            tally.error_sample.get_or_insert(w);
        }
        if done >= from && done <= until {
            tally.decisions += 1;
            tally.over += u64::from(over);
            tally.latencies_us.push(u32::try_from(done.duration_since(sent).as_micros()).unwrap_or(u32::MAX));
        }
    }
    tally
}

/// A sorted sample's `p`th percentile (0 when empty).
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// This thread's kernel id, from the `/proc/thread-self` link (`PID/task/TID`).
fn this_thread_id() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("read /proc/thread-self");
    link.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()).expect("a thread id in /proc/thread-self")
}

fn thread_ticks(tid: u32) -> u64 {
    stat_ticks(&format!("/proc/self/task/{tid}/stat"))
}

fn process_ticks(pid: &str) -> u64 {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

/// A Redis server of our own, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let bin =
            std::env::var("REDIS_SERVER_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "redis-server".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port for Redis")
            .port();
        let child = Command::new(&bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {bin} ({e}): install redis-server (apt-get install redis-server) or set REDIS_SERVER_BIN")
            });
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("{bin} exited at start ({status})");
            }
            assert!(Instant::now() < deadline, "Redis did not listen on port {port} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

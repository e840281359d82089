//! Fleet: how legate's ADS server copes with many proxies at once, over
//! SotW and over delta xDS.
//!
//! `cargo bench --bench fleet` starts, for each mode and fleet size, a fresh
//! release `legate serve` as a child process (so its CPU time and memory can
//! be read from `/proc/PID`, and so each side of the connections has its own
//! file-descriptor limit), on a policy of one listener, `FLEET_SERVICES`
//! services with static endpoints and `FLEET_ROUTES` routes spread over
//! them. It then opens N simulated proxies in this process, each on its own
//! TCP/HTTP2 connection (its own tonic `Channel`, as real Envoys have), node
//! id `sim-<i>`, node cluster `default`, `FLEET_BATCH` connections at a time
//! (the next batch starts once their streams are open). Each
//! subscribes as Envoy does (CDS and LDS wildcard; EDS by the cluster names
//! received, RDS by the listener names received) and ACKs every response at
//! once. legate sends one response per type at a time and waits for its ACK.
//!
//! Measured, per mode and size:
//! - connecting: from the first connection until every proxy has ACKed its
//!   whole first config (CDS, EDS, LDS, RDS);
//! - `FLEET_CHANGES` changes of one route's prefix, each saved atomically
//!   (temporary file + rename, as editors do): for each proxy, the time from
//!   the rename until it has ACKed an RDS response carrying the new prefix;
//!   p50 / p99 / max over every proxy and change;
//! - bytes per push: the encoded size of every response a proxy received
//!   after the rename (the gRPC message payloads legate sent), per proxy and
//!   for the whole fleet, for a route change and for one more change that
//!   adds a service with its route (where SotW resends every cluster and
//!   delta only the new one);
//! - legate's CPU seconds (utime + stime) while the fleet connects and per
//!   change, its peak RSS over the run (VmHWM), and memory per stream: (RSS
//!   with the fleet connected − RSS before) / N.
//!
//! A proxy whose stream fails, or a change not ACKed by every proxy within
//! [`CHANGE_TIMEOUT`], fails the run loudly with the tail of legate's log
//! (kept in the temporary folder).
//!
//! Settings (environment):
//! - `FLEET_SIZES`: fleet sizes, comma-separated (default `100,1000,10000`);
//! - `FLEET_MODES`: `sotw`, `delta` or both (default `sotw,delta`);
//! - `FLEET_ROUTES`: routes in the policy (default 100);
//! - `FLEET_SERVICES`: services in the policy (default 50);
//! - `FLEET_CHANGES`: route changes per run (default 5);
//! - `FLEET_BATCH`: connections opened at once (default 100: legate's xDS
//!   listener has the tokio/mio default accept backlog of 128, and a batch
//!   much larger than that overflows it while legate is busy, so that some
//!   connections are reset).
//!
//! The proxies and legate share the machine's cores: the proxies' own CPU
//! time is printed too. 10,000 proxies need 10,000 sockets in each process
//! (check `ulimit -n`) and 10,000 ephemeral ports
//! (`/proc/sys/net/ipv4/ip_local_port_range`).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use prost::Message as _;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio::task::JoinSet;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::{Channel, Endpoint};

use common::{free_port, get, LEGATE};
use legate::snapshot::Kind;
use support::{clock_ticks, count_f64, env_or, ms, percentile, stat_ticks};

/// How long every proxy gets to ACK one change.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long legate gets to start.
const STARTUP: Duration = Duration::from_secs(30);
/// Pause after each change, so nothing late is counted against the next.
const SETTLE: Duration = Duration::from_millis(200);
/// The largest response a proxy accepts (large policies make large RDS).
const MAX_MESSAGE: usize = 64 << 20;
/// The policy file legate watches.
const POLICY_FILE: &str = "gateway.yaml";
/// The one listener; legate names its RouteConfiguration after it.
const LISTENER: &str = "public";
/// The types a proxy subscribes to, in the order they are reported.
const TYPES: [Kind; 4] = [Kind::Cluster, Kind::Endpoint, Kind::Listener, Kind::Route];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Sotw,
    Delta,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Sotw => "sotw",
            Mode::Delta => "delta",
        }
    }
}

/// What the environment asked for.
struct Settings {
    sizes: Vec<usize>,
    modes: Vec<Mode>,
    routes: usize,
    services: usize,
    changes: usize,
    batch: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let sizes = env_list("FLEET_SIZES", "100,1000,10000")
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| panic!("FLEET_SIZES: `{s}` is not a count")))
            .collect();
        let modes = env_list("FLEET_MODES", "sotw,delta")
            .iter()
            .map(|m| match m.as_str() {
                "sotw" => Mode::Sotw,
                "delta" => Mode::Delta,
                other => panic!("FLEET_MODES: `{other}` is neither sotw nor delta"),
            })
            .collect();
        Settings {
            sizes,
            modes,
            routes: env_or("FLEET_ROUTES", 100),
            services: env_or("FLEET_SERVICES", 50),
            changes: env_or("FLEET_CHANGES", 5),
            batch: env_or("FLEET_BATCH", 100),
        }
    }

    /// Epochs of a run: 0 the first config, 1..=changes the route changes,
    /// then the added service.
    fn epochs(&self) -> usize {
        self.changes + 2
    }

    fn added_service_epoch(&self) -> usize {
        self.changes + 1
    }
}

/// A comma-separated list from the environment, else `default`.
fn env_list(name: &str, default: &str) -> Vec<String> {
    let text = std::env::var(name).ok().filter(|v| !v.trim().is_empty()).unwrap_or_else(|| default.to_owned());
    text.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

fn main() {
    let s = Settings::from_env();
    println!(
        "fleet: N simulated proxies on one legate; {} routes over {} services, {} route changes + 1 added service per run, \
         {} connections at a time, {} cores shared by legate and the proxies",
        s.routes,
        s.services,
        s.changes,
        s.batch,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    );
    println!(
        "{:<6} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9} {:>10} {:>8} {:>9} {:>12} {:>12}",
        "mode",
        "proxies",
        "connect",
        "p50",
        "p99",
        "max",
        "CPU conn",
        "CPU/change",
        "peak MiB",
        "KiB/strm",
        "B/push route",
        "B/push +svc",
    );
    flush();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    for &mode in &s.modes {
        for &size in &s.sizes {
            runtime.block_on(run(&s, mode, size));
        }
    }
}

fn flush() {
    let _ = std::io::stdout().flush();
}

// ------------------------------------------------------------------ one run

/// One mode × size: start legate, connect the fleet, make the changes, print a row.
async fn run(s: &Settings, mode: Mode, size: usize) {
    let ticks = clock_ticks();
    let listen = free_port();
    let mut legate = Legate::start(&policy(s, listen, 0, false));
    let shared = Arc::new(Shared::new(s));
    let (reports_tx, reports_rx) = mpsc::unbounded_channel();
    let mut tally = Tally::new(reports_rx, size, s.epochs());
    let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{}", legate.xds_port))
        .expect("ADS endpoint")
        .connect_timeout(Duration::from_secs(10))
        .tcp_nodelay(true);

    // Connect the fleet, a batch at a time, and wait until every proxy has its first config.
    let rss_before_kib = legate.memory_kib("VmRSS:");
    let (legate_start, self_start) = (legate.cpu_ticks(), stat_ticks("/proc/self/stat"));
    let started = Instant::now();
    let mut proxies = JoinSet::new();
    for first in (0..size).step_by(s.batch) {
        let last = (first + s.batch).min(size);
        for id in first..last {
            let sim = Sim::new(id, Arc::clone(&shared), reports_tx.clone());
            proxies.spawn(sim.run(mode, endpoint.clone()));
        }
        tally.wait(&mut legate, Stage::Open(last), connect_timeout(size)).await;
        eprintln!("  {} {size}: {last} streams open, {} synced", mode.name(), tally.synced_count);
    }
    tally.wait(&mut legate, Stage::Sync, connect_timeout(size)).await;
    let connect = started.elapsed();
    let legate_connected = legate.cpu_ticks();
    tokio::time::sleep(SETTLE).await;
    let rss_connected_kib = legate.memory_kib("VmRSS:");
    eprintln!("  {} {size}: all synced in {:.2} s", mode.name(), connect.as_secs_f64());

    // The route changes, then the added service.
    let mut route_latencies = Vec::with_capacity(size * s.changes);
    for epoch in 1..=s.changes {
        route_latencies.extend(change(s, &mut legate, &shared, &mut tally, listen, epoch).await);
    }
    let legate_changed = legate.cpu_ticks();
    let mut added_latencies = change(s, &mut legate, &shared, &mut tally, listen, s.added_service_epoch()).await;
    let self_end = stat_ticks("/proc/self/stat");
    let peak_kib = legate.memory_kib("VmHWM:");
    let complaints = legate.complaints();

    proxies.shutdown().await;
    drop(legate);

    route_latencies.sort();
    added_latencies.sort();
    let secs = |t: u64| t as f64 / ticks;
    // Bytes to KiB, or KiB to MiB.
    let over_1024 = |n: u64| n as f64 / 1024.0;
    let per_proxy = |bytes: u64| bytes / size as u64;
    // Mean over the route changes, for the whole fleet.
    let route_bytes: u64 = (1..=s.changes).map(|e| shared.bytes_total(e)).sum::<u64>() / s.changes as u64;
    let added_bytes = shared.bytes_total(s.added_service_epoch());
    let per_stream_kib = rss_connected_kib.saturating_sub(rss_before_kib) as f64 / count_f64(size);
    println!(
        "{:<6} {size:>7} {:>10} {:>10} {:>10} {:>10} {:>9.2} {:>10.3} {:>8.1} {:>9.1} {:>12} {:>12}",
        mode.name(),
        format!("{:.2} s", connect.as_secs_f64()),
        ms(percentile(&route_latencies, 50.0)),
        ms(percentile(&route_latencies, 99.0)),
        ms(percentile(&route_latencies, 100.0)),
        secs(legate_connected - legate_start),
        secs(legate_changed - legate_connected) / count_f64(s.changes),
        over_1024(peak_kib),
        per_stream_kib,
        per_proxy(route_bytes),
        per_proxy(added_bytes),
    );
    let by_type = |epoch: usize| {
        TYPES.iter().fold(String::new(), |mut out, &k| {
            let _ = write!(out, " {} {}", k.short(), per_proxy(shared.bytes(epoch, k)));
            out
        })
    };
    println!(
        "         first config per proxy:{} B; fleet per route change {:.1} KiB; added service:{} B per proxy, \
         fleet {:.1} KiB, ACKed p50 {} max {}; proxies' CPU {:.1} s",
        by_type(0),
        over_1024(route_bytes),
        by_type(s.added_service_epoch()),
        over_1024(added_bytes),
        ms(percentile(&added_latencies, 50.0)),
        ms(percentile(&added_latencies, 100.0)),
        secs(self_end - self_start),
    );
    println!(
        "         legate RSS {:.1} MiB before connecting, {:.1} MiB with the fleet connected",
        over_1024(rss_before_kib),
        over_1024(rss_connected_kib),
    );
    if !complaints.is_empty() {
        println!("         legate logged {} warnings or errors; the first:", complaints.len());
        for line in complaints.iter().take(5) {
            println!("           {line}");
        }
    }
    flush();
}

/// How long the whole fleet gets to connect and take its first config.
fn connect_timeout(size: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(20) * u32::try_from(size).unwrap_or(u32::MAX)
}

/// Save the policy of `epoch` and wait until every proxy has ACKed the
/// RouteConfiguration carrying it; returns each proxy's rename → ACK time.
async fn change(
    s: &Settings,
    legate: &mut Legate,
    shared: &Shared,
    tally: &mut Tally,
    listen: u16,
    epoch: usize,
) -> Vec<Duration> {
    let text = policy(s, listen, epoch.min(s.changes), epoch == s.added_service_epoch());
    // From here on responses count against this change.
    shared.epoch.store(epoch, Ordering::Release);
    let saved = legate.save(&text);
    tally.wait(legate, Stage::Change(epoch), CHANGE_TIMEOUT).await;
    tokio::time::sleep(SETTLE).await;
    tally.acked[epoch].iter().map(|at| at.expect("every proxy ACKed").saturating_duration_since(saved)).collect()
}

// ------------------------------------------------------------------ policy

/// The policy: one listener, `services` services with static endpoints
/// (never dialled: no Envoy runs), `routes` routes spread over them. Route `r-0`'s prefix is
/// [`marker`]`(change)` once changed; `extra` adds service `svc-extra`
/// with its route.
fn policy(s: &Settings, listen: u16, change: usize, extra: bool) -> String {
    let mut out = format!("listeners:\n  - name: {LISTENER}\n    port: {listen}\nservices:\n");
    for i in 0..s.services {
        let _ = write!(out, "  - name: svc-{i}\n    endpoints: [\"127.0.0.1:{}\"]\n", 10_000 + i % 50_000);
    }
    if extra {
        out.push_str("  - name: svc-extra\n    endpoints: [\"127.0.0.1:9999\"]\n");
    }
    out.push_str("routes:\n");
    for j in 0..s.routes {
        let prefix = if j == 0 && change > 0 { marker(change, s.changes) } else { format!("/r-{j}/") };
        let _ =
            write!(out, "  - name: r-{j}\n    match: {{ prefix: {prefix} }}\n    service: svc-{}\n", j % s.services);
    }
    if extra {
        let _ = write!(
            out,
            "  - name: extra\n    match: {{ prefix: {} }}\n    service: svc-extra\n",
            marker(s.changes + 1, s.changes)
        );
    }
    out
}

/// The path prefix that only the RouteConfiguration of `epoch` carries.
fn marker(epoch: usize, changes: usize) -> String {
    if epoch <= changes {
        format!("/change-{epoch}/")
    } else {
        "/extra/".to_owned()
    }
}

// ------------------------------------------------------------------ legate

/// `legate serve` as a child process in a temporary folder (`config/`, and
/// `legate.log` with its output). Dropping it kills it; on a panic the log's
/// tail is printed and the folder kept.
struct Legate {
    child: Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    log: PathBuf,
    xds_port: u16,
}

impl Legate {
    fn start(policy: &str) -> Legate {
        let dir = tempfile::Builder::new().prefix("legate-fleet-").tempdir().expect("temporary folder");
        let config = dir.path().join("config");
        fs::create_dir_all(&config).expect("config folder");
        fs::write(config.join(POLICY_FILE), policy).expect("write the policy");
        let log = dir.path().join("legate.log");
        let out = File::create(&log).expect("create legate.log");
        let (xds_port, admin_port, aggregator_port) = (free_port(), free_port(), free_port());
        let child = Command::new(LEGATE)
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--aggregator-addr", &format!("127.0.0.1:{aggregator_port}")])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone the log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {LEGATE}: {e}"));
        let mut legate = Legate { child, dir, config, log, xds_port };
        let ready = format!("http://127.0.0.1:{admin_port}/readyz");
        let deadline = Instant::now() + STARTUP;
        while !get(&ready).is_ok_and(|r| r.status == 200) {
            legate.check_alive();
            assert!(Instant::now() < deadline, "legate not ready after {STARTUP:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        legate
    }

    /// Save the policy as editors do; returns the instant of the rename.
    fn save(&self, text: &str) -> Instant {
        let tmp = self.config.join(format!(".{POLICY_FILE}.tmp"));
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        let at = Instant::now();
        fs::rename(&tmp, self.config.join(POLICY_FILE)).expect("rename the policy into place");
        at
    }

    /// Panic, with the log, if legate has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("legate exited ({status})");
        }
    }

    /// utime + stime so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        stat_ticks(&format!("/proc/{}/stat", self.child.id()))
    }

    /// A `/proc/PID/status` field in KiB, such as `VmRSS:` or `VmHWM:`.
    fn memory_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.child.id());
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// legate's WARN and ERROR log lines so far.
    fn complaints(&self) -> Vec<String> {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).map(str::to_owned).collect()
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The last `lines` lines of the log but for the one-per-proxy
    /// `proxy connected` / `proxy disconnected` lines, which are counted.
    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let per_proxy = |l: &&str| l.contains("proxy connected") || l.contains("proxy disconnected");
        let (connected, disconnected) = text.lines().filter(per_proxy).fold((0, 0), |(c, d), l| {
            if l.contains("proxy connected") {
                (c + 1, d)
            } else {
                (c, d + 1)
            }
        });
        let rest: Vec<&str> = text.lines().filter(|l| !per_proxy(l)).collect();
        format!(
            "({connected} `proxy connected` and {disconnected} `proxy disconnected` lines left out)\n{}",
            rest[rest.len().saturating_sub(lines)..].join("\n")
        )
    }
}

impl Drop for Legate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- legate log ({}), last lines -----\n{}", self.log.display(), self.log_tail(40));
            self.dir.disable_cleanup(true);
            eprintln!("----- kept {} for inspection -----", self.path().display());
        }
    }
}

// ------------------------------------------------------------------ the proxies

/// What every proxy task shares with the main task: the current change
/// and the bytes received per change and type.
struct Shared {
    /// The change now being measured (0: the first config).
    epoch: AtomicUsize,
    /// Per epoch, the path prefix only its RouteConfiguration carries.
    markers: Vec<Vec<u8>>,
    /// Per epoch and type (`Kind as usize`), bytes received by the whole fleet.
    bytes: Vec<[AtomicU64; Kind::ALL.len()]>,
}

impl Shared {
    fn new(s: &Settings) -> Shared {
        Shared {
            epoch: AtomicUsize::new(0),
            markers: (0..s.epochs()).map(|e| marker(e, s.changes).into_bytes()).collect(),
            bytes: (0..s.epochs()).map(|_| Default::default()).collect(),
        }
    }

    fn bytes(&self, epoch: usize, kind: Kind) -> u64 {
        self.bytes[epoch][kind as usize].load(Ordering::Relaxed)
    }

    fn bytes_total(&self, epoch: usize) -> u64 {
        TYPES.iter().map(|&k| self.bytes(epoch, k)).sum()
    }
}

/// What a proxy tells the main task.
enum Report {
    /// Its stream is open.
    Opened,
    /// It has ACKed its first CDS, EDS, LDS and RDS.
    Synced(usize),
    /// It has ACKed the RouteConfiguration carrying change `epoch`, at `at`.
    Acked { proxy: usize, epoch: usize, at: Instant },
    /// Its stream failed.
    Failed(usize, String),
}

/// One simulated proxy: what it subscribes to and what it has reported.
struct Sim {
    id: usize,
    shared: Arc<Shared>,
    reports: UnboundedSender<Report>,
    /// Cluster names received: its EDS subscription.
    clusters: BTreeSet<String>,
    /// Listener names received: its RDS subscription.
    listeners: BTreeSet<String>,
    /// Types ACKed at least once.
    acked: [bool; Kind::ALL.len()],
    synced: bool,
    /// The last change reported ACKed.
    reported: usize,
}

/// The name of a Cluster, ClusterLoadAssignment, Listener or
/// RouteConfiguration: field 1 of each. Decoding only it skips the rest.
#[derive(Clone, PartialEq, prost::Message)]
struct Named {
    #[prost(string, tag = "1")]
    name: String,
}

fn name_of(value: &[u8]) -> Result<String, String> {
    Named::decode(value).map(|n| n.name).map_err(|e| format!("undecodable resource: {e}"))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn kind_of(type_url: &str) -> Result<Kind, String> {
    Kind::from_type_url(type_url).filter(|k| TYPES.contains(k)).ok_or_else(|| format!("unexpected type {type_url}"))
}

impl Sim {
    fn new(id: usize, shared: Arc<Shared>, reports: UnboundedSender<Report>) -> Sim {
        Sim {
            id,
            shared,
            reports,
            clusters: BTreeSet::new(),
            listeners: BTreeSet::new(),
            acked: [false; Kind::ALL.len()],
            synced: false,
            reported: 0,
        }
    }

    /// Run the proxy until its stream fails (or the task is aborted).
    async fn run(mut self, mode: Mode, endpoint: Endpoint) {
        let result = async {
            let channel = endpoint.connect().await.map_err(|e| format!("connect: {e:?}"))?;
            match mode {
                Mode::Sotw => self.sotw(channel).await,
                Mode::Delta => self.delta(channel).await,
            }
        }
        .await;
        if let Err(e) = result {
            let _ = self.reports.send(Report::Failed(self.id, e));
        }
    }

    fn node(&self) -> Option<Node> {
        Some(Node { id: format!("sim-{}", self.id), cluster: "default".into(), ..Default::default() })
    }

    /// Count a response of `kind` of `len` bytes; returns the change it counts for.
    fn received(&self, kind: Kind, len: usize) -> usize {
        let epoch = self.shared.epoch.load(Ordering::Acquire);
        self.shared.bytes[epoch][kind as usize].fetch_add(len as u64, Ordering::Relaxed);
        epoch
    }

    /// Whether route configurations `values` carry change `epoch`.
    fn carries<'a>(&self, epoch: usize, mut values: impl Iterator<Item = &'a [u8]>) -> bool {
        epoch > self.reported && values.any(|v| contains(v, &self.shared.markers[epoch]))
    }

    /// After ACKing a response of `kind`; `carries` when it was the RDS
    /// response carrying change `epoch`.
    fn acked(&mut self, kind: Kind, epoch: usize, carries: bool) {
        let at = Instant::now();
        self.acked[kind as usize] = true;
        if !self.synced && TYPES.iter().all(|&k| self.acked[k as usize]) {
            self.synced = true;
            let _ = self.reports.send(Report::Synced(self.id));
        }
        if carries {
            self.reported = epoch;
            let _ = self.reports.send(Report::Acked { proxy: self.id, epoch, at });
        }
    }

    /// A SotW stream: every response is the full set; an ACK repeats its
    /// version and the names subscribed.
    async fn sotw(&mut self, channel: Channel) -> Result<(), String> {
        let request = |kind: Kind, names: &BTreeSet<String>, version: &str, nonce: &str| DiscoveryRequest {
            version_info: version.to_owned(),
            resource_names: names.iter().cloned().collect(),
            type_url: kind.type_url().to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        };
        let none = BTreeSet::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let send = |req: DiscoveryRequest| tx.send(req).map_err(|_| "request stream closed".to_owned());
        send(DiscoveryRequest { node: self.node(), ..request(Kind::Cluster, &none, "", "") })?;
        send(request(Kind::Listener, &none, "", ""))?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let response = client.stream_aggregated_resources(UnboundedReceiverStream::new(rx)).await;
        let mut inbound = response.map_err(|s| format!("opening the stream: {s}"))?.into_inner();
        let _ = self.reports.send(Report::Opened);
        // The last EDS and RDS (version, nonce), which a new subscription repeats.
        let (mut eds, mut rds) = ((String::new(), String::new()), (String::new(), String::new()));
        while let Some(resp) = inbound.message().await.map_err(|s| format!("stream failed: {s}"))? {
            let kind = kind_of(&resp.type_url)?;
            let epoch = self.received(kind, resp.encoded_len());
            let ack = |names: &BTreeSet<String>| request(kind, names, &resp.version_info, &resp.nonce);
            let mut carries = false;
            match kind {
                Kind::Cluster => {
                    let names = resp.resources.iter().map(|a| name_of(&a.value)).collect::<Result<_, _>>()?;
                    if names != self.clusters {
                        // As Envoy: endpoints of new clusters are asked for before the clusters' ACK.
                        self.clusters = names;
                        send(request(Kind::Endpoint, &self.clusters, &eds.0, &eds.1))?;
                    }
                    send(ack(&none))?;
                }
                Kind::Endpoint => {
                    eds = (resp.version_info.clone(), resp.nonce.clone());
                    send(ack(&self.clusters))?;
                }
                Kind::Listener => {
                    let names = resp.resources.iter().map(|a| name_of(&a.value)).collect::<Result<_, _>>()?;
                    if names != self.listeners {
                        self.listeners = names;
                        send(request(Kind::Route, &self.listeners, &rds.0, &rds.1))?;
                    }
                    send(ack(&none))?;
                }
                Kind::Route | Kind::Secret => {
                    rds = (resp.version_info.clone(), resp.nonce.clone());
                    carries = self.carries(epoch, resp.resources.iter().map(|a| a.value.as_slice()));
                    send(ack(&self.listeners))?;
                }
            }
            self.acked(kind, epoch, carries);
        }
        Err("legate ended the stream".into())
    }

    /// A delta stream: responses carry what changed and what went; an ACK
    /// is the type and the nonce.
    async fn delta(&mut self, channel: Channel) -> Result<(), String> {
        let request = |kind: Kind| DeltaDiscoveryRequest { type_url: kind.type_url().to_owned(), ..Default::default() };
        let (tx, rx) = mpsc::unbounded_channel();
        let send = |req: DeltaDiscoveryRequest| tx.send(req).map_err(|_| "request stream closed".to_owned());
        send(DeltaDiscoveryRequest { node: self.node(), ..request(Kind::Cluster) })?;
        send(request(Kind::Listener))?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let response = client.delta_aggregated_resources(UnboundedReceiverStream::new(rx)).await;
        let mut inbound = response.map_err(|s| format!("opening the stream: {s}"))?.into_inner();
        let _ = self.reports.send(Report::Opened);
        while let Some(resp) = inbound.message().await.map_err(|s| format!("stream failed: {s}"))? {
            let kind = kind_of(&resp.type_url)?;
            let epoch = self.received(kind, resp.encoded_len());
            // What the proxy holds of a wildcard type after this response.
            let held = |old: &BTreeSet<String>| {
                let mut names = old.clone();
                names.extend(resp.resources.iter().map(|r| r.name.clone()));
                for gone in &resp.removed_resources {
                    names.remove(gone);
                }
                names
            };
            // Subscribe to what is new in `names`, unsubscribe from what went.
            let resubscribe = |on: Kind, old: &BTreeSet<String>, names: &BTreeSet<String>| DeltaDiscoveryRequest {
                resource_names_subscribe: names.difference(old).cloned().collect(),
                resource_names_unsubscribe: old.difference(names).cloned().collect(),
                ..request(on)
            };
            let mut carries = false;
            match kind {
                Kind::Cluster => {
                    let names = held(&self.clusters);
                    if names != self.clusters {
                        send(resubscribe(Kind::Endpoint, &self.clusters, &names))?;
                        self.clusters = names;
                    }
                }
                Kind::Listener => {
                    let names = held(&self.listeners);
                    if names != self.listeners {
                        send(resubscribe(Kind::Route, &self.listeners, &names))?;
                        self.listeners = names;
                    }
                }
                Kind::Route => {
                    let values = resp.resources.iter().filter_map(|r| r.resource.as_ref()).map(|a| a.value.as_slice());
                    carries = self.carries(epoch, values);
                }
                _ => {}
            }
            send(DeltaDiscoveryRequest { response_nonce: resp.nonce.clone(), ..request(kind) })?;
            self.acked(kind, epoch, carries);
        }
        Err("legate ended the stream".into())
    }
}

// ------------------------------------------------------------------ the main task's view

/// What the main task waits for.
#[derive(Debug, Clone, Copy)]
enum Stage {
    /// This many streams open.
    Open(usize),
    /// Every proxy has its first config.
    Sync,
    /// Every proxy has ACKed this change.
    Change(usize),
}

/// The proxies' reports, as counted by the main task.
struct Tally {
    rx: mpsc::UnboundedReceiver<Report>,
    size: usize,
    opened: usize,
    synced: Vec<bool>,
    synced_count: usize,
    /// Per epoch and proxy: when it ACKed that change.
    acked: Vec<Vec<Option<Instant>>>,
    acked_count: Vec<usize>,
}

impl Tally {
    fn new(rx: mpsc::UnboundedReceiver<Report>, size: usize, epochs: usize) -> Tally {
        Tally {
            rx,
            size,
            opened: 0,
            synced: vec![false; size],
            synced_count: 0,
            acked: vec![vec![None; size]; epochs],
            acked_count: vec![0; epochs],
        }
    }

    fn done(&self, stage: Stage) -> bool {
        match stage {
            Stage::Open(n) => self.opened >= n,
            Stage::Sync => self.synced_count == self.size,
            Stage::Change(epoch) => self.acked_count[epoch] == self.size,
        }
    }

    /// Take reports until `stage` is reached.
    ///
    /// # Panics
    /// When a proxy fails, legate exits, or `limit` passes (naming the
    /// proxies still missing).
    async fn wait(&mut self, legate: &mut Legate, stage: Stage, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.done(stage) {
            legate.check_alive();
            assert!(Instant::now() < deadline, "{}", self.missing(stage, limit));
            let Ok(report) = tokio::time::timeout(Duration::from_secs(1), self.rx.recv()).await else { continue };
            match report.expect("the main task holds a sender") {
                Report::Opened => self.opened += 1,
                Report::Synced(proxy) => {
                    self.synced[proxy] = true;
                    self.synced_count += 1;
                }
                Report::Acked { proxy, epoch, at } => {
                    self.acked[epoch][proxy] = Some(at);
                    self.acked_count[epoch] += 1;
                }
                Report::Failed(proxy, error) => panic!("proxy sim-{proxy} failed ({stage:?}): {error}"),
            }
        }
    }

    /// What a timed-out wait still lacked.
    fn missing(&self, stage: Stage, limit: Duration) -> String {
        let (what, lacking): (String, Vec<usize>) = match stage {
            Stage::Open(n) => (format!("{n} open streams ({} open)", self.opened), Vec::new()),
            Stage::Sync => ("the first config".into(), (0..self.size).filter(|&p| !self.synced[p]).collect()),
            Stage::Change(epoch) => {
                (format!("change {epoch}"), (0..self.size).filter(|&p| self.acked[epoch][p].is_none()).collect())
            }
        };
        let shown: Vec<String> = lacking.iter().take(10).map(|p| format!("sim-{p}")).collect();
        format!(
            "timed out after {:.0} s waiting for {what}: {} of {} proxies missing (first: {})",
            limit.as_secs_f64(),
            lacking.len(),
            self.size,
            shown.join(", ")
        )
    }
}

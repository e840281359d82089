//! Replicas and reconnects with real Envoy: an Envoy whose legate goes away
//! moves to another replica (or the restarted one) and applies nothing it
//! already has; one that comes back to changed files loses what no longer
//! exists.
//!
//! Needs Envoy (`scripts/ensure-envoy.sh` installs it, or `ENVOY_BIN`); fails without it.

mod common;

use std::time::Duration;

use common::{free_port, Envoy, Gateway};

/// How long a pushed change gets to reach Envoy.
const PUSH: Duration = Duration::from_secs(15);

/// Envoy reconnects with backoff (up to a few seconds) after losing legate.
const RECONNECT: Duration = Duration::from_secs(30);

const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";

fn policy(listen: u16, services: &[(&str, u16)]) -> String {
    let mut text = format!("listeners:\n  - name: public\n    port: {listen}\n    address: 127.0.0.1\nservices:\n");
    for (name, port) in services {
        text += &format!("  - name: {name}\n    url: http://127.0.0.1:{port}\n");
    }
    text += "routes:\n";
    for (name, _) in services {
        text += &format!("  - name: {name}\n    match: {{ prefix: /{name} }}\n    service: {name}\n");
    }
    text
}

/// Envoy's own count of applied updates, per type, and of listener changes.
fn applied(envoy: &Envoy) -> [u64; 7] {
    envoy.stats([
        "cluster_manager.cds.update_success",
        "listener_manager.lds.update_success",
        "http.public.rds.public.update_success",
        "cluster.alpha.update_success",
        "listener_manager.listener_modified",
        "listener_manager.listener_removed",
        "listener_manager.total_listeners_draining",
    ])
}

/// The node `id` in a legate's `/api/status`, if connected there.
fn node_at(admin_port: u16, id: &str) -> Option<serde_json::Value> {
    let status = common::get(&format!("http://127.0.0.1:{admin_port}/api/status")).ok()?.try_json()?;
    status["nodes"].as_array()?.iter().find(|n| n["id"] == id).cloned()
}

/// The replica `id` is connected to, among `replicas` (name, admin port),
/// once exactly one lists it with `acked` as its ACKed listeners version.
fn connected_replica<'a>(
    gw: &Gateway,
    replicas: &[(&'a str, u16)],
    id: &str,
    acked: &serde_json::Value,
) -> (&'a str, u16) {
    gw.wait(&format!("{id} on exactly one replica, with listeners {acked}"), RECONNECT, || {
        let on: Vec<_> = replicas
            .iter()
            .filter(|(_, admin)| {
                node_at(*admin, id).is_some_and(|n| acked.is_null() || n["resources"][LDS]["acked_version"] == *acked)
            })
            .collect();
        let others = replicas.iter().filter(|(_, admin)| node_at(*admin, id).is_some()).count();
        (on.len() == 1 && others == 1).then(|| *on[0])
    })
}

/// No update applied and nothing pushed by the replica now serving it.
fn assert_nothing_reapplied(envoy: &Envoy, before: [u64; 7], replica: (&str, u16)) {
    // Give any (wrong) push time to arrive and be applied.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(applied(envoy), before, "Envoy re-applied config after failing over to {}", replica.0);
    let metrics = common::must_get(&format!("http://127.0.0.1:{}/metrics", replica.1)).body;
    for kind in ["cds", "eds", "lds", "rds"] {
        let series = format!("legate_pushes_total{{type=\"{kind}\"}} 0");
        assert!(metrics.contains(&series), "{series} expected on {}:\n{metrics}", replica.0);
    }
    let [connected] = envoy.stats(["control_plane.connected_state"]);
    assert_eq!(connected, 1);
}

/// Three replicas on one folder. The one Envoy's stream is on crashes
/// (SIGKILL): Envoy moves to another and applies nothing. That one is
/// stopped (SIGTERM): it ends the stream itself, exits, and Envoy moves to
/// the last, again applying nothing. The last serves edits.
#[test]
fn an_envoy_moves_between_replicas_on_crash_and_on_stop_with_nothing_reapplied() {
    let mut gw = Gateway::new();
    let (alpha, listen) = (gw.echo("alpha"), free_port());
    gw.write("gateway.yaml", &policy(listen, &[("alpha", alpha)]));
    gw.serve();
    let (xds2, admin2) = gw.replica("legate-2");
    let (xds3, admin3) = gw.replica("legate-3");
    let envoy = gw.envoy_via("envoy-ha", "default", &[gw.xds_port, xds2, xds3]);
    let url = format!("http://127.0.0.1:{listen}/alpha");
    gw.wait("the route", PUSH, || common::get(&url).ok().filter(|r| r.status == 200));
    let mut replicas = vec![("legate", gw.admin_port), ("legate-2", admin2), ("legate-3", admin3)];
    let first = connected_replica(&gw, &replicas, "envoy-ha", &serde_json::Value::Null);
    let acked = node_at(first.1, "envoy-ha").expect("connected")["resources"][LDS]["acked_version"].clone();
    assert!(acked.is_string(), "no ACKed listeners on {}", first.0);
    let before = applied(&envoy);

    // A crash.
    gw.kill(first.0);
    replicas.retain(|r| *r != first);
    let second = connected_replica(&gw, &replicas, "envoy-ha", &acked);
    assert_eq!(node_at(second.1, "envoy-ha").expect("connected")["protocol"], common::xds_protocol());
    assert_nothing_reapplied(&envoy, before, second);
    assert_eq!(common::must_get(&url).status, 200);

    // An orderly stop: the replica ends its streams (UNAVAILABLE, so Envoy
    // moves at once) and exits by itself rather than being killed.
    gw.stop(second.0);
    let log = std::fs::read_to_string(gw.log(second.0)).expect("the replica's log");
    assert!(log.contains("legate stopped"), "{} did not stop by itself on SIGTERM:\n{log}", second.0);
    replicas.retain(|r| *r != second);
    let third = connected_replica(&gw, &replicas, "envoy-ha", &acked);
    assert_nothing_reapplied(&envoy, before, third);
    assert_eq!(common::must_get(&url).status, 200);

    // The last replica serves edits.
    let beta = gw.echo("beta");
    gw.write("gateway.yaml", &policy(listen, &[("alpha", alpha), ("beta", beta)]));
    let beta_url = format!("http://127.0.0.1:{listen}/beta");
    gw.wait("the new route via the last replica", PUSH, || common::get(&beta_url).ok().filter(|r| r.status == 200));
}

/// Delta in particular: the reconnecting Envoy lists what it holds
/// (`initial_resource_versions`), and legate must remove what is gone.
#[test]
fn delta_envoy_back_on_a_legate_restarted_with_changed_files_loses_stale_resources() {
    let mut gw = Gateway::new();
    let (alpha, beta, listen) = (gw.echo("alpha"), gw.echo("beta"), free_port());
    gw.write("gateway.yaml", &policy(listen, &[("alpha", alpha), ("beta", beta)]));
    gw.serve();
    let envoy = gw.envoy_on("envoy-d", "default", &[gw.xds_port], "delta");
    let base = format!("http://127.0.0.1:{listen}");
    gw.wait("beta", PUSH, || common::get(&format!("{base}/beta")).ok().filter(|r| r.status == 200));
    let [alpha_updates] = envoy.stats(["cluster.alpha.update_success"]);

    // legate goes down; meanwhile beta is replaced by gamma.
    gw.stop("legate");
    let gamma = gw.echo("gamma");
    gw.write("gateway.yaml", &policy(listen, &[("alpha", alpha), ("gamma", gamma)]));
    gw.serve();

    gw.wait("gamma after the restart", RECONNECT, || {
        common::get(&format!("{base}/gamma")).ok().filter(|r| r.status == 200)
    });
    gw.wait("beta's route gone", PUSH, || common::get(&format!("{base}/beta")).ok().filter(|r| r.status == 404));
    let clusters = gw.wait("beta's cluster removed", PUSH, || {
        let text = envoy.admin("/clusters").body;
        (!text.lines().any(|l| l.starts_with("beta::"))).then_some(text)
    });
    assert!(clusters.lines().any(|l| l.starts_with("gamma::")), "{clusters}");
    let [after] = envoy.stats(["cluster.alpha.update_success"]);
    assert_eq!(after, alpha_updates, "alpha's endpoints did not change and were not sent again");
    assert_eq!(common::must_get(&format!("{base}/alpha")).status, 200);
}

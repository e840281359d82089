//! What the long-running parts share: the published snapshot, the last
//! reload's outcome, the connected fleet and the metrics.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::policy::Diagnostic;
use crate::snapshot::Snapshot;
use crate::xds::fleet::Fleet;

/// The outcome of the last attempt to load the policy folder.
#[derive(Debug, Clone)]
pub struct Reload {
    /// Whether it was valid (and published).
    pub ok: bool,
    /// When it happened.
    pub at: SystemTime,
    /// Every problem, when it was not.
    pub errors: Vec<Diagnostic>,
    /// What a valid policy may still want fixed (a route that can never
    /// match, say).
    pub warnings: Vec<Diagnostic>,
}

/// Shared by the xDS server, the watcher and the admin API.
#[derive(Debug)]
pub struct State {
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
    reload: Mutex<Option<Reload>>,
    routes: Mutex<Vec<crate::status::RouteRow>>,
    aggregations: std::sync::RwLock<Arc<crate::aggregator::Table>>,
    /// Connected proxies.
    pub fleet: Fleet,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Set once legate is shutting down.
    stopping: watch::Sender<bool>,
}

impl Default for State {
    fn default() -> Self {
        State {
            snapshot: watch::channel(None).0,
            reload: Mutex::new(None),
            routes: Mutex::default(),
            aggregations: std::sync::RwLock::default(),
            fleet: Fleet::default(),
            metrics: Metrics::default(),
            stopping: watch::channel(false).0,
        }
    }
}

impl State {
    /// Keep the route table of the policy just published, for the status page.
    pub fn record_routes(&self, rows: Vec<crate::status::RouteRow>) {
        *self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = rows;
    }

    /// The route table of the published policy.
    #[must_use]
    pub fn routes(&self) -> Vec<crate::status::RouteRow> {
        self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Answer the aggregations of the policy about to be published (before
    /// Envoys can route to a new one).
    pub fn record_aggregations(&self, table: crate::aggregator::Table) {
        *self.aggregations.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(table);
    }

    /// The aggregations being answered.
    #[must_use]
    pub fn aggregations(&self) -> Arc<crate::aggregator::Table> {
        Arc::clone(&self.aggregations.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// A new, empty state behind an `Arc`.
    #[must_use]
    pub fn new() -> Arc<State> {
        Arc::new(State::default())
    }

    /// Publish a valid snapshot to every stream. Returns false when it is
    /// identical to the current one (nothing is pushed).
    pub fn publish(&self, mut snapshot: Snapshot) -> bool {
        self.snapshot.send_if_modified(|cur| {
            if let Some(c) = cur.as_ref() {
                if c.version() == snapshot.version() {
                    return false;
                }
                snapshot.reuse(c);
            }
            *cur = Some(Arc::new(snapshot));
            true
        })
    }

    /// The snapshot being served, once one is.
    #[must_use]
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    /// Shut down: every proxy stream ends, so that proxies move to another
    /// replica at once rather than when this process is gone.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`State::stop`] is called.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// Follow published snapshots.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.snapshot.subscribe()
    }

    /// Record a reload outcome (and count it): its errors when it was
    /// rejected, its warnings when it was valid.
    ///
    /// # Panics
    /// If the lock was poisoned.
    pub fn record_reload(&self, errors: Vec<Diagnostic>, warnings: Vec<Diagnostic>) {
        self.metrics.reload(errors.is_empty());
        *self.reload.lock().expect("reload lock") =
            Some(Reload { ok: errors.is_empty(), at: SystemTime::now(), errors, warnings });
    }

    /// The last reload outcome.
    ///
    /// # Panics
    /// If the lock was poisoned.
    #[must_use]
    pub fn last_reload(&self) -> Option<Reload> {
        self.reload.lock().expect("reload lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::State;
    use crate::snapshot::{Kind, Snapshot};

    fn snapshot(yaml: &str) -> Snapshot {
        let policy = crate::policy::load_texts(&[("gateway.yaml".to_owned(), yaml.to_owned())]).expect("valid");
        crate::translate::translate(&policy)
    }

    #[test]
    fn a_new_snapshot_shares_what_did_not_change_with_its_wire_encodings() {
        let state = State::new();
        assert!(state.publish(snapshot(include_str!("../tests/fixtures/xds/base.yaml"))));
        let before = state.current().expect("published");
        let a_entry = before.all().resources(Kind::Cluster)["a"].sotw_entry().as_ptr();
        assert!(state.publish(snapshot(include_str!("../tests/fixtures/xds/c-added.yaml"))));
        let after = state.current().expect("published");
        let (old, new) = (before.all().resources(Kind::Cluster), after.all().resources(Kind::Cluster));
        assert!(Arc::ptr_eq(&old["a"], &new["a"]), "unchanged: the same resource");
        assert_eq!(new["a"].sotw_entry().as_ptr(), a_entry, "and not encoded again");
        assert!(!old.contains_key("c"));
        let (old_rds, new_rds) = (before.all().resources(Kind::Route), after.all().resources(Kind::Route));
        assert!(!Arc::ptr_eq(&old_rds["public"], &new_rds["public"]), "changed: a new resource");
        assert_eq!(after.view("default").resources(Kind::Cluster).len(), 3, "views see the new snapshot");
    }
}

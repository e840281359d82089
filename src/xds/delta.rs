//! The per-stream delta (incremental) xDS state machine, without I/O.
//!
//! A [`DeltaTracker`] keeps, per type, what the proxy subscribes to and what
//! it holds (name → resource version), and answers with only what differs:
//! new or changed resources, and the names of those that went away. Versions
//! are per resource ([`Resource::version`]), content hashes, so a proxy that
//! reconnects, to this replica or another, and reports what it holds in
//! `initial_resource_versions` is sent nothing it already has.
//!
//! The rules follow the xDS protocol's incremental variant:
//! - subscriptions are deltas (`resource_names_subscribe` /
//!   `_unsubscribe`), applied even when the request's nonce is stale;
//! - `*` subscribes to every resource of the type; a first LDS or CDS request
//!   naming nothing does too (the legacy wildcard);
//! - a subscribed name that does not exist is reported once in
//!   `removed_resources`, so the proxy need not wait for it, and sent when it
//!   appears;
//! - ACK and NACK are told apart by `error_detail` and matched by nonce; a
//!   NACKed response is not sent again.
//!
//! Order is the same as for SotW ([`super::tracker`]): one response in flight
//! (endpoints may follow clusters, secrets clusters and listeners), clusters
//! before listeners before routes, and clusters (and endpoints, route
//! configurations and secrets that left the snapshot) removed only once the
//! routes that used them are replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::tracker::{waiting, Acks, Event, Header, NodeInfo, ProtocolError, TypeStatus};
use super::wire::Push;
use crate::snapshot::{version_of_pairs, Kind, Resource, View};

/// The wildcard subscription name.
const WILDCARD: &str = "*";

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the proxy holds: resource name → version. Its own report on
    /// (re)connecting, then everything sent (a NACKed resource counts as
    /// held: it is not sent again until it changes).
    held: BTreeMap<String, Held>,
    /// Subscribed names already reported as not existing.
    reported_absent: BTreeSet<String>,
    acks: Acks,
}

/// A resource version a proxy holds.
#[derive(Debug)]
enum Held {
    /// One this stream sent: shared with the snapshot, compared by pointer first.
    Sent(Arc<Resource>),
    /// As the proxy reported it on (re)connecting.
    Reported(String),
}

impl Held {
    fn version(&self) -> &str {
        match self {
            Held::Sent(r) => r.version(),
            Held::Reported(v) => v,
        }
    }

    /// Whether the proxy has exactly `r`.
    fn is(&self, r: &Arc<Resource>) -> bool {
        match self {
            Held::Sent(s) => Arc::ptr_eq(s, r) || s.hash == r.hash,
            Held::Reported(v) => v == r.version(),
        }
    }
}

/// What must change at the proxy for one type.
#[derive(Debug, Default)]
struct Diff<'v> {
    /// New or changed resources, in name order.
    put: Vec<&'v Arc<Resource>>,
    /// Names the proxy holds that must go.
    removed: Vec<String>,
    /// Subscribed names that don't exist and haven't been reported.
    absent: Vec<String>,
    /// Some removal waits for clusters, listeners or routes.
    held_back: bool,
}

impl Diff<'_> {
    fn is_empty(&self) -> bool {
        self.put.is_empty() && self.removed.is_empty() && self.absent.is_empty()
    }
}

/// The subscription and ACK/NACK/nonce state of one delta ADS stream.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    header: Header,
    types: [TypeState; Kind::ALL.len()],
}

impl DeltaTracker {
    /// A tracker for a new stream.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The node, once the first request has named it.
    #[must_use]
    pub fn node(&self) -> Option<&NodeInfo> {
        self.header.node.as_ref()
    }

    /// Status of every type the proxy has asked for. The ACKed version is
    /// that of the set the proxy holds, so it equals the SotW version of the
    /// same resources.
    pub fn status(&self) -> impl Iterator<Item = (Kind, TypeStatus)> + '_ {
        Kind::ALL.into_iter().filter_map(|k| {
            let t = &self.types[k as usize];
            t.subscribed.then(|| (k, t.acks.status()))
        })
    }

    /// Take in one request.
    ///
    /// # Errors
    /// When the request breaks the protocol: no node on the first request,
    /// no type URL, or a nonce this stream never sent.
    pub fn on_request(&mut self, req: DeltaDiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        let (kind, nonce) = match self.header.begin(req.node.as_ref(), req.type_url, &req.response_nonce)? {
            Ok(known) => known,
            Err(unserved) => return Ok(unserved),
        };
        let t = &mut self.types[kind as usize];

        // Subscriptions are deltas: they count whatever the nonce.
        let first = !t.subscribed;
        let changed = first || !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty();
        if first {
            t.subscribed = true;
            t.wildcard = kind.is_wildcard() && req.resource_names_subscribe.is_empty();
            t.held =
                req.initial_resource_versions.iter().map(|(n, v)| (n.clone(), Held::Reported(v.clone()))).collect();
            if !t.held.is_empty() {
                // What a reconnecting proxy holds is what it last applied.
                t.acks.acked_version = Some(version_of_pairs(t.held.iter().map(|(n, h)| (n.as_str(), h.version()))));
            }
        }
        for name in req.resource_names_subscribe {
            if name == WILDCARD {
                t.wildcard = true;
                continue;
            }
            // Asked for anew: send it (again) unless the proxy says it has it.
            if !req.initial_resource_versions.contains_key(&name) {
                t.held.remove(&name);
            }
            t.reported_absent.remove(&name);
            t.names.insert(name);
        }
        for name in req.resource_names_unsubscribe {
            if name == WILDCARD {
                t.wildcard = false;
                let names = &t.names;
                t.held.retain(|n, _| names.contains(n));
                continue;
            }
            t.names.remove(&name);
            t.reported_absent.remove(&name);
            if !t.wildcard {
                // The proxy drops what it unsubscribes from.
                t.held.remove(&name);
            }
        }

        let Some(n) = nonce else {
            return Ok(Event::Subscribed(kind));
        };
        if !t.acks.awaits(n) {
            return Ok(if changed { Event::Subscribed(kind) } else { Event::Stale(kind) });
        }
        // An ACK takes the set sent (a delta ACK names no version).
        Ok(t.acks.answer(kind, n, req.error_detail, None, now))
    }

    /// The next response to send for `view`, if any is due; call again after
    /// sending, as another may be due at once.
    pub fn next_response(&mut self, view: &View, now: Instant) -> Option<Push> {
        self.header.dirty.see(view);
        // What removals wait for is the same for every type: work it out
        // once, and only if some type needs a look.
        let mut holds = None;
        for kind in Kind::ALL {
            if self.waiting(kind) || !self.header.dirty.needs_look(kind) {
                continue;
            }
            let (hold_clusters, hold_named) = *holds.get_or_insert_with(|| self.holds(view));
            let diff = self.diff_with(kind, view, hold_clusters, hold_named);
            if diff.is_empty() {
                self.header.dirty.settle(kind, diff.held_back);
                continue;
            }
            let nonce = self.header.sending(kind);
            let t = &mut self.types[kind as usize];
            for r in &diff.put {
                t.held.insert(r.name.clone(), Held::Sent(Arc::clone(r)));
                t.reported_absent.remove(&r.name);
            }
            for name in &diff.removed {
                t.held.remove(name);
                if t.names.contains(name) {
                    // Still subscribed: this removal reports it absent.
                    t.reported_absent.insert(name.clone());
                }
            }
            t.reported_absent.extend(diff.absent.iter().cloned());
            let version = version_of_pairs(t.held.iter().map(|(n, h)| (n.as_str(), h.version())));
            let resp = Push {
                delta: true,
                kind,
                version: version.clone(),
                nonce: nonce.to_string(),
                resources: diff.put.into_iter().cloned().collect(),
                removed: diff.removed.into_iter().chain(diff.absent).collect(),
            };
            t.acks.sent(nonce, version, now);
            return Some(resp);
        }
        None
    }

    /// See [`waiting`].
    fn waiting(&self, kind: Kind) -> bool {
        waiting(kind, |k| self.types[k as usize].acks.in_flight.is_some())
    }

    /// Which removals must wait for `view`: (clusters, named resources).
    ///
    /// Removals that could break what the proxy runs now wait: clusters its
    /// current routes may use go once it has the new listeners and routes;
    /// named resources (endpoints, route configurations, secrets) that left
    /// the snapshot go after that and after the clusters, since the proxy
    /// normally unsubscribes from them itself once what used them is gone.
    fn holds(&self, view: &View) -> (bool, bool) {
        let routes_done = self.routes_caught_up(view);
        let clusters_done = routes_done && {
            let cds = &self.types[Kind::Cluster as usize];
            cds.acks.in_flight.is_none() && self.diff_with(Kind::Cluster, view, false, true).is_empty()
        };
        (!routes_done, !clusters_done)
    }

    /// What must change at the proxy for `kind` to match `view`, holding
    /// back cluster removals and removals of named resources as told (see
    /// [`DeltaTracker::holds`]).
    fn diff_with<'v>(&self, kind: Kind, view: &'v View, hold_clusters: bool, hold_named: bool) -> Diff<'v> {
        let t = &self.types[kind as usize];
        let mut diff = Diff::default();
        if !t.subscribed {
            return diff;
        }
        let all = view.resources(kind);
        let sendable = |(name, r): (&String, &'v Arc<Resource>)| t.held.get(name).is_none_or(|h| !h.is(r)).then_some(r);
        diff.put = if t.wildcard {
            all.iter().filter_map(sendable).collect()
        } else {
            t.names.iter().filter_map(|n| all.get_key_value(n)).filter_map(sendable).collect()
        };
        let held_back = |name: &str| {
            if kind == Kind::Cluster {
                hold_clusters
            } else {
                hold_named && (!t.wildcard || t.names.contains(name))
            }
        };
        for name in t.held.keys().filter(|n| !all.contains_key(*n) || !(t.wildcard || t.names.contains(*n))) {
            if held_back(name) {
                diff.held_back = true;
            } else {
                diff.removed.push(name.clone());
            }
        }
        diff.absent = t
            .names
            .iter()
            .filter(|n| !all.contains_key(*n) && !t.held.contains_key(*n) && !t.reported_absent.contains(*n))
            .cloned()
            .collect();
        diff
    }

    /// True when the proxy has the listeners and routes of `view` and took
    /// them (after a NACK it still runs its old routes).
    fn routes_caught_up(&self, view: &View) -> bool {
        [Kind::Listener, Kind::Route].into_iter().all(|k| {
            let t = &self.types[k as usize];
            !t.subscribed || (t.acks.nack.is_none() && self.diff_with(k, view, true, true).is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryResponse;
    use envoy_types::pb::google::rpc::Status;

    use super::*;

    const CDS: Kind = Kind::Cluster;
    const EDS: Kind = Kind::Endpoint;
    const LDS: Kind = Kind::Listener;
    const RDS: Kind = Kind::Route;

    const BASE: &str = include_str!("../../tests/fixtures/xds/base.yaml");
    const B_REPLACED_BY_C: &str = include_str!("../../tests/fixtures/xds/b-replaced-by-c.yaml");
    const C_ADDED: &str = include_str!("../../tests/fixtures/xds/c-added.yaml");
    const FLEETS: &str = include_str!("../../tests/fixtures/xds/fleets.yaml");

    fn view(yaml: &str, cluster: &str) -> Arc<View> {
        let policy = crate::policy::load_texts(&[("gateway.yaml".to_owned(), yaml.to_owned())])
            .unwrap_or_else(|e| panic!("test policy is invalid:\n{e}"));
        crate::translate::translate(&policy).view(cluster)
    }

    fn request(kind: Kind, subscribe: &[&str], unsubscribe: &[&str], nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: kind.type_url().to_owned(),
            resource_names_subscribe: subscribe.iter().map(|&n| n.to_owned()).collect(),
            resource_names_unsubscribe: unsubscribe.iter().map(|&n| n.to_owned()).collect(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    fn hello(kind: Kind, subscribe: &[&str], cluster: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node { id: "envoy-1".into(), cluster: cluster.into(), ..Default::default() }),
            ..request(kind, subscribe, &[], "")
        }
    }

    /// A first request from a proxy that already holds `held`.
    fn reconnect(kind: Kind, subscribe: &[&str], held: &HashMap<String, String>) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest { initial_resource_versions: held.clone(), ..hello(kind, subscribe, "default") }
    }

    fn ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
        request(kind_of(resp), &[], &[], &resp.nonce)
    }

    fn nack(resp: &DeltaDiscoveryResponse, message: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            error_detail: Some(Status { code: 3, message: message.to_owned(), details: vec![] }),
            ..ack(resp)
        }
    }

    fn kind_of(resp: &DeltaDiscoveryResponse) -> Kind {
        Kind::from_type_url(&resp.type_url).expect("a served type")
    }

    fn put(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.resources.iter().map(|r| r.name.as_str()).collect()
    }

    fn removed(resp: &DeltaDiscoveryResponse) -> Vec<&str> {
        resp.removed_resources.iter().map(String::as_str).collect()
    }

    fn next(t: &mut DeltaTracker, v: &View) -> Option<DeltaDiscoveryResponse> {
        t.next_response(v, Instant::now()).map(|p| p.to_delta())
    }

    fn feed(t: &mut DeltaTracker, req: DeltaDiscoveryRequest) -> Event {
        t.on_request(req, Instant::now()).expect("a valid request")
    }

    fn acked(t: &DeltaTracker, kind: Kind) -> Option<String> {
        t.status().find(|(k, _)| *k == kind).and_then(|(_, s)| s.acked_version)
    }

    /// What a proxy holds after `resp`s, as it reports on reconnecting.
    fn holdings(resps: &[&DeltaDiscoveryResponse]) -> HashMap<String, String> {
        let mut held = HashMap::new();
        for resp in resps {
            for r in &resp.resources {
                held.insert(r.name.clone(), r.version.clone());
            }
            for n in &resp.removed_resources {
                held.remove(n);
            }
        }
        held
    }

    /// A tracker that has sent, and had ACKed, everything in `v`.
    fn synced(v: &View) -> (DeltaTracker, [DeltaDiscoveryResponse; 4]) {
        let mut t = DeltaTracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let cds = next(&mut t, v).expect("CDS");
        feed(&mut t, ack(&cds));
        feed(&mut t, request(EDS, &["a", "b"], &[], ""));
        let eds = next(&mut t, v).expect("EDS");
        feed(&mut t, ack(&eds));
        feed(&mut t, request(LDS, &[], &[], ""));
        let lds = next(&mut t, v).expect("LDS");
        feed(&mut t, ack(&lds));
        feed(&mut t, request(RDS, &["public"], &[], ""));
        let rds = next(&mut t, v).expect("RDS");
        feed(&mut t, ack(&rds));
        assert_eq!(next(&mut t, v), None, "nothing left to send");
        (t, [cds, eds, lds, rds])
    }

    #[test]
    fn legacy_wildcard_gets_every_cluster_with_versions_and_a_nonce() {
        let v = view(BASE, "default");
        let mut t = DeltaTracker::new();
        assert_eq!(feed(&mut t, hello(CDS, &[], "default")), Event::Subscribed(CDS));
        let resp = next(&mut t, &v).expect("CDS");
        assert_eq!(put(&resp), ["a", "b"]);
        assert!(resp.resources.iter().all(|r| r.version.len() == 16 && r.resource.is_some()));
        assert_eq!(resp.resources[0].version, v.resources(CDS)["a"].version());
        assert!(removed(&resp).is_empty());
        assert_eq!(resp.nonce, "1");
        assert_eq!(next(&mut t, &v), None, "one response in flight");

        let Event::Ack { version, .. } = feed(&mut t, ack(&resp)) else { panic!("expected an ACK") };
        assert_eq!(version, v.version(CDS), "the ACKed set has the SotW version of the same resources");
        assert_eq!(acked(&t, CDS).as_deref(), Some(v.version(CDS)));
    }

    #[test]
    fn explicit_wildcard_and_leaving_it() {
        let v = view(C_ADDED, "default");
        let mut t = DeltaTracker::new();
        feed(&mut t, hello(CDS, &["*"], "default"));
        let all = next(&mut t, &v).expect("CDS");
        assert_eq!(put(&all), ["a", "b", "c"]);
        feed(&mut t, ack(&all));

        // Leaving the wildcard for one name: the rest is dropped by the proxy, not resent.
        feed(&mut t, request(CDS, &["a"], &["*"], ""));
        let a = next(&mut t, &v).expect("a name asked for is sent, even if held");
        assert_eq!((put(&a), removed(&a)), (vec!["a"], vec![]), "the proxy drops the rest itself");
        feed(&mut t, ack(&a));
        assert_eq!(next(&mut t, &v), None);
        let changed = view(
            &C_ADDED
                .replace(r#"endpoints: ["10.0.0.1:80"]"#, "url: http://a.example")
                .replace(r#"endpoints: ["10.0.0.3:80"]"#, "url: http://c.example"),
            "default",
        );
        let resp = next(&mut t, &changed).expect("a change to `a`");
        assert_eq!(put(&resp), ["a"], "`c` changed too but is no longer subscribed");
    }

    #[test]
    fn a_change_sends_only_what_changed() {
        let (mut t, _) = synced(&view(BASE, "default"));
        let new = view(C_ADDED, "default");
        let cds = next(&mut t, &new).expect("CDS");
        assert_eq!((put(&cds), removed(&cds)), (vec!["c"], vec![]), "only the new cluster");
        assert_eq!(cds.system_version_info, new.version(CDS));
        feed(&mut t, request(EDS, &["c"], &[], ""));
        let eds = next(&mut t, &new).expect("endpoints of `c` before the CDS ACK");
        assert_eq!(put(&eds), ["c"]);
        feed(&mut t, ack(&eds));
        feed(&mut t, ack(&cds));
        let rds = next(&mut t, &new).expect("RDS");
        assert_eq!(put(&rds), ["public"]);
        feed(&mut t, ack(&rds));
        assert_eq!(next(&mut t, &new), None, "the listener did not change");
        for kind in [CDS, EDS, LDS, RDS] {
            assert_eq!(acked(&t, kind).as_deref(), Some(new.version(kind)), "{kind}");
        }
    }

    #[test]
    fn removed_clusters_go_only_after_the_routes_that_used_them() {
        let (mut t, _) = synced(&view(BASE, "default"));
        let new = view(B_REPLACED_BY_C, "default");
        let cds = next(&mut t, &new).expect("CDS");
        assert_eq!((put(&cds), removed(&cds)), (vec!["c"], vec![]), "`b` stays while routes may use it");
        feed(&mut t, request(EDS, &["c"], &[], ""));
        let eds = next(&mut t, &new).expect("EDS for `c`");
        assert_eq!((put(&eds), removed(&eds)), (vec!["c"], vec![]), "`b`'s endpoints stay while `b` does");
        feed(&mut t, ack(&eds));
        feed(&mut t, ack(&cds));
        let lds = next(&mut t, &new).expect("LDS");
        assert_eq!(put(&lds), ["public"]);
        feed(&mut t, ack(&lds));
        let rds = next(&mut t, &new).expect("RDS");
        assert_eq!(next(&mut t, &new), None, "`b` is not removed before the new routes are ACKed");
        feed(&mut t, ack(&rds));
        let removal = next(&mut t, &new).expect("CDS removing `b`");
        assert_eq!((put(&removal), removed(&removal)), (vec![], vec!["b"]));
        assert_eq!(removal.system_version_info, new.version(CDS));
        assert_eq!(next(&mut t, &new), None, "endpoints wait for the cluster's removal to be ACKed");
        feed(&mut t, ack(&removal));
        // Envoy drops the endpoints subscription of a removed cluster.
        feed(&mut t, request(EDS, &[], &["b"], ""));
        assert_eq!(next(&mut t, &new), None);
        assert_eq!(acked(&t, CDS).as_deref(), Some(new.version(CDS)));
    }

    #[test]
    fn endpoints_left_subscribed_after_their_cluster_went_are_removed_last() {
        let (mut t, _) = synced(&view(BASE, "default"));
        let without_b = BASE.replace("prefix: /b", "prefix: /a2").replace("service: b", "service: a");
        let new = view(&without_b.replace("  - name: b\n    endpoints: [\"10.0.0.2:80\"]\n", ""), "default");
        let rds = next(&mut t, &new).expect("RDS without `b`");
        feed(&mut t, ack(&rds));
        let cds = next(&mut t, &new).expect("CDS removing `b`");
        assert_eq!(removed(&cds), ["b"]);
        assert_eq!(next(&mut t, &new), None);
        feed(&mut t, ack(&cds));
        // A proxy that did not unsubscribe is told `b`'s endpoints are gone.
        let eds = next(&mut t, &new).expect("EDS removal");
        assert_eq!((kind_of(&eds), removed(&eds)), (EDS, vec!["b"]));
        feed(&mut t, ack(&eds));
        assert_eq!(next(&mut t, &new), None);
    }

    #[test]
    fn a_nack_is_recorded_not_answered_and_keeps_removals_back() {
        let (mut t, _) = synced(&view(BASE, "default"));
        let new = view(B_REPLACED_BY_C, "default");
        let cds = next(&mut t, &new).expect("CDS");
        feed(&mut t, request(EDS, &["c"], &[], ""));
        let eds = next(&mut t, &new).expect("EDS");
        feed(&mut t, ack(&eds));
        feed(&mut t, ack(&cds));
        let lds = next(&mut t, &new).expect("LDS");
        feed(&mut t, ack(&lds));
        let rds = next(&mut t, &new).expect("RDS");
        let before = acked(&t, RDS);
        let Event::Nack { kind, nack: n } = feed(&mut t, nack(&rds, "route rejected")) else {
            panic!("expected a NACK")
        };
        assert_eq!((kind, n.message.as_str()), (RDS, "route rejected"));
        assert_eq!(n.version, rds.system_version_info, "the NACK names the set rejected");
        assert_eq!(acked(&t, RDS), before, "a NACK is not an ACK");
        for _ in 0..3 {
            assert_eq!(next(&mut t, &new), None, "not resent, and `b` kept for the old routes");
        }
        let fixed = view(&B_REPLACED_BY_C.replace("prefix: /c", "prefix: /c2"), "default");
        let rds = next(&mut t, &fixed).expect("the fixed routes");
        assert_eq!(put(&rds), ["public"]);
        feed(&mut t, ack(&rds));
        let removal = next(&mut t, &fixed).expect("now `b` goes");
        assert_eq!(removed(&removal), ["b"]);
    }

    #[test]
    fn a_stale_nonce_is_no_ack_but_its_subscriptions_count() {
        let (mut t, [.., rds]) = synced(&view(FLEETS, "ops"));
        let new = view(&FLEETS.replace("prefix: /", "prefix: /v2/"), "ops");
        let first = next(&mut t, &new).expect("RDS change");
        // An old nonce, with a subscription change riding on it.
        assert_eq!(feed(&mut t, request(RDS, &[], &[], &rds.nonce)), Event::Stale(RDS));
        assert_eq!(feed(&mut t, request(RDS, &[], &["internal"], &rds.nonce)), Event::Subscribed(RDS));
        assert_eq!(next(&mut t, &new), None, "`first` is still in flight");
        feed(&mut t, ack(&first));
        assert_eq!(acked(&t, RDS).as_deref().map(str::len), Some(16), "set versions are 16 hex digits");
        // `internal` was unsubscribed: a later change to it is not sent.
        let later = view(&FLEETS.replace("prefix: /", "prefix: /v3/"), "ops");
        let resp = next(&mut t, &later).expect("RDS");
        assert_eq!(put(&resp), ["public"]);
    }

    #[test]
    fn a_nonce_never_sent_or_a_missing_node_is_a_protocol_error() {
        let mut t = DeltaTracker::new();
        let err = t.on_request(request(CDS, &[], &[], ""), Instant::now()).expect_err("no node");
        assert!(err.0.contains("node.id"), "{err}");
        feed(&mut t, hello(CDS, &[], "default"));
        next(&mut t, &view(BASE, "default")).expect("CDS");
        for bad in ["2", "0", "x"] {
            let err = t.on_request(request(CDS, &[], &[], bad), Instant::now()).expect_err(bad);
            assert_eq!(err.0, format!("response_nonce `{bad}` was never sent on this stream"));
        }
        let err = t.on_request(DeltaDiscoveryRequest::default(), Instant::now()).expect_err("no type");
        assert_eq!(err.0, "request without a type_url");
    }

    #[test]
    fn reconnect_with_what_is_current_gets_nothing() {
        let v = view(BASE, "default");
        let (_, [cds, eds, lds, rds]) = synced(&v);
        let mut t = DeltaTracker::new();
        feed(&mut t, reconnect(CDS, &[], &holdings(&[&cds])));
        feed(
            &mut t,
            DeltaDiscoveryRequest {
                initial_resource_versions: holdings(&[&eds]),
                ..request(EDS, &["a", "b"], &[], "")
            },
        );
        feed(
            &mut t,
            DeltaDiscoveryRequest { initial_resource_versions: holdings(&[&lds]), ..request(LDS, &[], &[], "") },
        );
        feed(
            &mut t,
            DeltaDiscoveryRequest {
                initial_resource_versions: holdings(&[&rds]),
                ..request(RDS, &["public"], &[], "")
            },
        );
        assert_eq!(next(&mut t, &v), None, "no churn for a proxy that is up to date");
        for kind in [CDS, EDS, LDS, RDS] {
            assert_eq!(acked(&t, kind).as_deref(), Some(v.version(kind)), "{kind}");
        }
    }

    #[test]
    fn reconnect_to_a_changed_config_sends_what_differs_and_removes_what_is_gone() {
        let (_, [cds, ..]) = synced(&view(BASE, "default"));
        // legate restarted with `b` gone, `a` changed and `c` new.
        let new = view(&B_REPLACED_BY_C.replace("10.0.0.1", "10.0.0.7"), "default");
        let mut t = DeltaTracker::new();
        let mut held = holdings(&[&cds]);
        held.insert("gone-long-ago".into(), "0123456789abcdef".into());
        feed(&mut t, reconnect(CDS, &[], &held));
        let resp = next(&mut t, &new).expect("CDS");
        assert_eq!(put(&resp), ["c"], "`a` is unchanged as a cluster (its endpoints changed)");
        assert_eq!(removed(&resp), ["b", "gone-long-ago"], "no routes subscribed: nothing holds `b` back");
        feed(&mut t, ack(&resp));
        assert_eq!(acked(&t, CDS).as_deref(), Some(new.version(CDS)));
    }

    #[test]
    fn a_name_asked_for_before_it_exists_is_reported_absent_then_sent_when_it_appears() {
        let v = view(BASE, "default");
        let mut t = DeltaTracker::new();
        feed(&mut t, hello(EDS, &["a", "c"], "default"));
        let first = next(&mut t, &v).expect("EDS");
        assert_eq!((put(&first), removed(&first)), (vec!["a"], vec!["c"]), "`c` does not exist (yet)");
        feed(&mut t, ack(&first));
        assert_eq!(next(&mut t, &v), None, "reported once");
        let with_c = view(C_ADDED, "default");
        let resp = next(&mut t, &with_c).expect("`c` appeared");
        assert_eq!((put(&resp), removed(&resp)), (vec!["c"], vec![]));
        feed(&mut t, ack(&resp));
        // And gone again: a removal, once.
        let resp = next(&mut t, &v).expect("`c` went");
        assert_eq!((put(&resp), removed(&resp)), (vec![], vec!["c"]));
        feed(&mut t, ack(&resp));
        assert_eq!(next(&mut t, &v), None);
    }

    #[test]
    fn unsubscribe_then_subscribe_again_resends() {
        let (mut t, _) = synced(&view(BASE, "default"));
        let v = view(BASE, "default");
        feed(&mut t, request(EDS, &[], &["b"], ""));
        assert_eq!(next(&mut t, &v), None, "unsubscribing needs no response");
        feed(&mut t, request(EDS, &["b"], &[], ""));
        let resp = next(&mut t, &v).expect("asked for again, it is sent again");
        assert_eq!(put(&resp), ["b"]);
    }

    #[test]
    fn another_fleets_listener_is_not_sent_even_when_asked_for() {
        let edge = view(FLEETS, "edge");
        let mut t = DeltaTracker::new();
        feed(&mut t, hello(LDS, &[], "edge"));
        let lds = next(&mut t, &edge).expect("LDS");
        assert_eq!(put(&lds), ["public"]);
        feed(&mut t, ack(&lds));
        feed(&mut t, request(RDS, &["public", "internal"], &[], ""));
        let rds = next(&mut t, &edge).expect("RDS");
        assert_eq!((put(&rds), removed(&rds)), (vec!["public"], vec!["internal"]));
    }

    #[test]
    fn responses_go_in_make_before_break_order() {
        let v = view(BASE, "default");
        let mut t = DeltaTracker::new();
        feed(&mut t, hello(RDS, &["public"], "default"));
        feed(&mut t, request(LDS, &[], &[], ""));
        feed(&mut t, request(EDS, &["a", "b"], &[], ""));
        feed(&mut t, request(CDS, &[], &[], ""));
        let order: Vec<Kind> = std::iter::from_fn(|| {
            let resp = next(&mut t, &v)?;
            feed(&mut t, ack(&resp));
            Some(kind_of(&resp))
        })
        .collect();
        assert_eq!(order, [CDS, EDS, LDS, RDS]);
    }
}

//! The per-stream SotW state machine, without I/O.
//!
//! A [`Tracker`] is fed every request on one ADS stream ([`Tracker::on_request`])
//! and asked what to send next against the node's current [`View`]
//! ([`Tracker::next_response`]). It tells ACK from NACK by `error_detail`,
//! ignores stale nonces, never answers a NACK by resending the same thing,
//! and keeps at most one response in flight so that pushes follow
//! make-before-break order: clusters, endpoints, listeners, routes, and only
//! then the removal of clusters the old routes used.
//!
//! The one exception: endpoints may go out while clusters wait for their
//! ACK. Envoy warms a new EDS cluster before it ACKs the CDS response that
//! added it, and warming needs the endpoints; waiting for that ACK would
//! stall every new service until Envoy's initial fetch timeout (15 s).

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;

use super::wire::Push;

use crate::snapshot::{version_of, Kind, Resources, View};

/// Who is at the other end of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `node.id`
    pub id: String,
    /// `node.cluster`: selects the fleet's listeners.
    pub cluster: String,
}

/// A rejected push, as Envoy reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    /// The version Envoy rejected.
    pub version: String,
    /// Envoy's error message.
    pub message: String,
    /// When the NACK arrived.
    pub at: SystemTime,
}

/// A request that breaks the protocol; the stream ends with this message
/// as an `INVALID_ARGUMENT` status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProtocolError(pub String);

/// What one request meant.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// First request for a type, or a change of subscribed names.
    Subscribed(Kind),
    /// The response with this nonce was applied.
    Ack {
        /// Type.
        kind: Kind,
        /// Version applied.
        version: String,
        /// Time from push to ACK.
        latency: Duration,
    },
    /// The response with this nonce was rejected.
    Nack {
        /// Type.
        kind: Kind,
        /// What was rejected and why.
        nack: Nack,
    },
    /// A request answering an older response; ignored, as the xDS protocol says.
    Stale(Kind),
    /// A type legate does not serve (yet); ignored.
    Unserved(String),
}

#[derive(Debug, Default)]
struct TypeState {
    subscribed: bool,
    wildcard: bool,
    names: BTreeSet<String>,
    /// Version the client said it has when it (re)connected, before anything was sent.
    initial_version: Option<String>,
    /// What the last response of this type carried (for named types, only
    /// the names still subscribed: a name requested again is sent again).
    sent: Option<Resources>,
    acks: Acks,
}

/// The ACK/NACK/nonce state of one ADS stream.
#[derive(Debug, Default)]
pub struct Tracker {
    header: Header,
    types: [TypeState; Kind::ALL.len()],
}

/// What `/api/status` shows for one type on one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeStatus {
    /// Last version the proxy ACKed.
    pub acked_version: Option<String>,
    /// Last NACK, cleared by a later ACK.
    pub nack: Option<Nack>,
}

impl Tracker {
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

    /// Status of every type the proxy has asked for.
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
    pub fn on_request(&mut self, req: DiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        let (kind, nonce) = match self.header.begin(req.node.as_ref(), req.type_url, &req.response_nonce)? {
            Ok(known) => known,
            Err(unserved) => return Ok(unserved),
        };
        let t = &mut self.types[kind as usize];
        if nonce.is_some_and(|n| !t.acks.is_latest(n)) {
            return Ok(Event::Stale(kind));
        }

        // Subscription: the names asked for, or everything.
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wildcard = kind.is_wildcard() && (names.is_empty() || names.contains("*"));
        if !t.subscribed && nonce.is_none() && !req.version_info.is_empty() {
            // A reconnect: the proxy already has this version.
            t.initial_version = Some(req.version_info.clone());
            t.acks.acked_version = Some(req.version_info.clone());
        }
        if !wildcard {
            // Envoy drops what it unsubscribes from; forget that it was sent.
            if let Some(sent) = &mut t.sent {
                sent.retain(|name, _| names.contains(name));
            }
        }
        t.subscribed = true;
        t.wildcard = wildcard;
        t.names = names;

        let Some(n) = nonce else {
            return Ok(Event::Subscribed(kind));
        };
        // The answer to our latest response of this type; an ACK says
        // which version the proxy now runs.
        Ok(t.acks.answer(kind, n, req.error_detail, Some(req.version_info), now))
    }

    /// The next response to send for `view`, if any is due. At most one is
    /// in flight (the next waits for its ACK or NACK), except that endpoints
    /// may follow clusters before the clusters' ACK. Call again after
    /// sending: another may be due at once.
    pub fn next_response(&mut self, view: &View, now: Instant) -> Option<Push> {
        self.header.dirty.see(view);
        for kind in Kind::ALL {
            if self.waiting(kind) {
                continue;
            }
            if !self.header.dirty.needs_look(kind) {
                continue;
            }
            let Some(desired) = self.desired(kind, view) else { continue };
            let t = &mut self.types[kind as usize];
            if t.sent.is_none() {
                if let Some(initial) = t.initial_version.as_ref().filter(|v| **v == version_of(&desired)) {
                    // Reconnected with exactly this: nothing to send.
                    t.acks.sent_version = initial.clone();
                    t.sent = Some(desired);
                    self.header.dirty.touch(kind);
                    continue;
                }
            }
            if !needs_send(kind, t.sent.as_ref(), &desired) {
                // Clusters kept for the old routes wait on listeners and routes.
                let all = view.resources(kind);
                let held_back = t.sent.as_ref().is_some_and(|sent| sent.keys().any(|n| !all.contains_key(n)));
                self.header.dirty.settle(kind, kind == Kind::Cluster && held_back);
                continue;
            }
            // Hashed only when sending: every request passes through here.
            let version = version_of(&desired);
            let nonce = self.header.sending(kind);
            let resp = Push {
                delta: false,
                kind,
                version: version.clone(),
                nonce: nonce.to_string(),
                resources: desired.values().cloned().collect(),
                removed: Vec::new(),
            };
            t.sent = Some(desired);
            t.acks.sent(nonce, version, now);
            return Some(resp);
        }
        None
    }

    /// True when a response of `kind` must wait for an ACK or NACK: any
    /// response in flight holds back every other, but clusters and listeners
    /// do not hold back what they are waiting for: Envoy ACKs new EDS
    /// clusters only once it has their endpoints, and warms a listener or
    /// cluster with TLS only once it has its secrets.
    fn waiting(&self, kind: Kind) -> bool {
        waiting(kind, |k| self.types[k as usize].acks.in_flight.is_some())
    }

    /// What the client should have of `kind` now, or `None` if it has not asked.
    fn desired(&self, kind: Kind, view: &View) -> Option<Resources> {
        let t = &self.types[kind as usize];
        if !t.subscribed {
            return None;
        }
        let all = view.resources(kind);
        let mut want: Resources = if t.wildcard {
            all.clone()
        } else {
            t.names.iter().filter_map(|n| all.get_key_value(n)).map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        if kind == Kind::Cluster && !self.routes_caught_up(view) {
            // Make before break: keep clusters the proxy's current routes may
            // still use until the new listeners and routes are in place.
            if let Some(sent) = &t.sent {
                for (name, r) in sent {
                    want.entry(name.clone()).or_insert_with(|| r.clone());
                }
            }
        }
        Some(want)
    }

    /// True when listeners and routes sent match `view` and the proxy took
    /// them: after a NACK it still runs its old routes, which may use the
    /// clusters that would otherwise be removed.
    fn routes_caught_up(&self, view: &View) -> bool {
        [Kind::Listener, Kind::Route].into_iter().all(|k| {
            let t = &self.types[k as usize];
            if !t.subscribed {
                return true;
            }
            let Some(desired) = self.desired(k, view) else { return true };
            !needs_send(k, t.sent.as_ref(), &desired) && t.acks.nack.is_none()
        })
    }
}

/// What a stream knows beyond its types: the node, the nonces it has
/// sent, and which types need comparing again. Shared by SotW and delta.
#[derive(Debug, Default)]
pub(super) struct Header {
    pub(super) node: Option<NodeInfo>,
    nonces: u64,
    pub(super) dirty: Dirty,
}

impl Header {
    /// The checks every request passes: a node on the first, a served type
    /// (`Err(Event::Unserved)` for another Envoy type, which is ignored), a
    /// nonce this stream sent. Returns the type and the nonce.
    pub(super) fn begin(
        &mut self,
        node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
        type_url: String,
        nonce: &str,
    ) -> Result<Result<(Kind, Option<u64>), Event>, ProtocolError> {
        identify(&mut self.node, node)?;
        let kind = match served_kind(type_url)? {
            Ok(kind) => kind,
            Err(unserved) => return Ok(Err(unserved)),
        };
        let nonce = parse_nonce(nonce, self.nonces)?;
        self.dirty.touch(kind);
        Ok(Ok((kind, nonce)))
    }

    /// A response of `kind` is going out: its nonce.
    pub(super) fn sending(&mut self, kind: Kind) -> u64 {
        self.dirty.touch(kind);
        self.nonces += 1;
        self.nonces
    }
}

/// One type's response awaiting an answer, and what the proxy last took or
/// refused. Shared by SotW and delta.
#[derive(Debug, Default)]
pub(super) struct Acks {
    last_nonce: Option<u64>,
    /// The last response of this type, until its ACK or NACK.
    pub(super) in_flight: Option<InFlight>,
    /// The version of the last response sent.
    pub(super) sent_version: String,
    pub(super) acked_version: Option<String>,
    pub(super) nack: Option<Nack>,
}

#[derive(Debug)]
pub(super) struct InFlight {
    nonce: u64,
    version: String,
    at: Instant,
}

impl Acks {
    /// A response with `nonce` and `version` went out.
    pub(super) fn sent(&mut self, nonce: u64, version: String, now: Instant) {
        self.last_nonce = Some(nonce);
        self.sent_version.clone_from(&version);
        self.in_flight = Some(InFlight { nonce, version, at: now });
    }

    /// Whether `nonce` is that of the latest response of this type.
    pub(super) fn is_latest(&self, nonce: u64) -> bool {
        self.last_nonce == Some(nonce)
    }

    /// Whether `nonce` is that of the response awaiting its answer.
    pub(super) fn awaits(&self, nonce: u64) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.nonce == nonce)
    }

    /// The proxy answered response `nonce`: a NACK if `error`, else an ACK,
    /// of `running` (what SotW proxies say they run) or the version sent.
    pub(super) fn answer(
        &mut self,
        kind: Kind,
        nonce: u64,
        error: Option<envoy_types::pb::google::rpc::Status>,
        running: Option<String>,
        now: Instant,
    ) -> Event {
        let flight = self.in_flight.take_if(|f| f.nonce == nonce);
        let (version, latency) = flight.map_or_else(
            || (self.sent_version.clone(), Duration::ZERO),
            |f| (f.version, now.saturating_duration_since(f.at)),
        );
        if let Some(status) = error {
            let nack = Nack { version, message: status.message, at: SystemTime::now() };
            self.nack = Some(nack.clone());
            return Event::Nack { kind, nack };
        }
        let version = running.unwrap_or(version);
        self.acked_version = Some(version.clone());
        self.nack = None;
        Event::Ack { kind, version, latency }
    }

    /// As `/api/status` shows it.
    pub(super) fn status(&self) -> TypeStatus {
        TypeStatus { acked_version: self.acked_version.clone(), nack: self.nack.clone() }
    }
}

/// True when a response of `kind` must wait, given which types have one
/// `in_flight`: see [`holds_back`].
pub(super) fn waiting(kind: Kind, in_flight: impl Fn(Kind) -> bool) -> bool {
    Kind::ALL.into_iter().any(|k| in_flight(k) && holds_back(k, kind))
}

/// Which types a stream must compare against the view again. A type is
/// looked at when the view's version of it changed, when a request or a
/// response of it went by, or when it holds back a removal (clusters for
/// old routes; in delta, resources that left the snapshot) and clusters,
/// listeners or routes moved. Otherwise it is skipped: a change to one
/// route costs each stream one comparison of route configurations, not of
/// every type, however many clusters the policy has.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    clean: [bool; Kind::ALL.len()],
    seen: [String; Kind::ALL.len()],
    held_back: [bool; Kind::ALL.len()],
}

impl Dirty {
    /// Something about `kind` changed.
    pub(super) fn touch(&mut self, kind: Kind) {
        self.clean[kind as usize] = false;
        if matches!(kind, Kind::Cluster | Kind::Listener | Kind::Route) {
            for k in Kind::ALL {
                if self.held_back[k as usize] {
                    self.clean[k as usize] = false;
                }
            }
        }
    }

    /// Note the view about to be compared: types whose version changed are touched.
    pub(super) fn see(&mut self, view: &View) {
        for k in Kind::ALL {
            if self.seen[k as usize] != view.version(k) {
                view.version(k).clone_into(&mut self.seen[k as usize]);
                self.touch(k);
            }
        }
    }

    /// Whether `kind` must be compared.
    pub(super) fn needs_look(&self, kind: Kind) -> bool {
        !self.clean[kind as usize]
    }

    /// `kind` was compared and needs nothing sent; `held_back` if it waits
    /// on clusters, listeners or routes for a removal.
    pub(super) fn settle(&mut self, kind: Kind, held_back: bool) {
        self.clean[kind as usize] = true;
        self.held_back[kind as usize] = held_back;
    }
}

/// Take the node from a stream's first request; later requests need not
/// repeat it (`set_node_on_first_message_only`).
fn identify(
    known: &mut Option<NodeInfo>,
    node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
) -> Result<(), ProtocolError> {
    if known.is_none() {
        let Some(node) = node.filter(|n| !n.id.is_empty()) else {
            return Err(ProtocolError("the first request on a stream must carry node.id".into()));
        };
        *known = Some(NodeInfo { id: node.id.clone(), cluster: node.cluster.clone() });
    }
    Ok(())
}

/// The kind a request's type URL names; `Err(Event::Unserved)` for another
/// Envoy type, which is ignored.
fn served_kind(type_url: String) -> Result<Result<Kind, Event>, ProtocolError> {
    if type_url.is_empty() {
        return Err(ProtocolError("request without a type_url".into()));
    }
    match Kind::from_type_url(&type_url) {
        Some(kind) => Ok(Ok(kind)),
        None if type_url.starts_with("type.googleapis.com/envoy.") => Ok(Err(Event::Unserved(type_url))),
        None => Err(ProtocolError(format!("unknown type_url `{type_url}`"))),
    }
}

/// A request's `response_nonce`: none, or one of the `sent` nonces (1..=sent).
fn parse_nonce(nonce: &str, sent: u64) -> Result<Option<u64>, ProtocolError> {
    if nonce.is_empty() {
        return Ok(None);
    }
    match nonce.parse::<u64>() {
        Ok(n) if n >= 1 && n <= sent => Ok(Some(n)),
        _ => Err(ProtocolError(format!("response_nonce `{nonce}` was never sent on this stream"))),
    }
}

/// True when a response of `in_flight` still waiting for its ACK holds back
/// one of `kind`: every one does, except that endpoints may follow clusters
/// and secrets may follow clusters and listeners (see [`Tracker::waiting`]).
/// The same order rules serve SotW and delta streams.
pub(super) fn holds_back(in_flight: Kind, kind: Kind) -> bool {
    let may_follow = match kind {
        Kind::Endpoint => in_flight == Kind::Cluster,
        Kind::Secret => matches!(in_flight, Kind::Cluster | Kind::Listener),
        _ => false,
    };
    !may_follow
}

/// Wildcard types must match exactly (a missing listener is a removal);
/// named types need a response when a wanted resource is new or changed.
fn needs_send(kind: Kind, sent: Option<&Resources>, desired: &Resources) -> bool {
    let Some(sent) = sent else {
        return kind.is_wildcard() || !desired.is_empty();
    };
    let differs = |(name, r): (&String, &std::sync::Arc<crate::snapshot::Resource>)| {
        sent.get(name).is_none_or(|s| !std::sync::Arc::ptr_eq(s, r) && s.hash != r.hash)
    };
    if kind.is_wildcard() {
        sent.len() != desired.len() || desired.iter().any(differs)
    } else {
        desired.iter().any(differs)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
    use envoy_types::pb::google::rpc::Status;
    use prost::Message;

    use super::*;

    const CDS: Kind = Kind::Cluster;
    const EDS: Kind = Kind::Endpoint;
    const LDS: Kind = Kind::Listener;
    const RDS: Kind = Kind::Route;

    /// Two services, each routed from `public`.
    const BASE: &str = include_str!("../../tests/fixtures/xds/base.yaml");

    /// BASE with `b` (and its route) replaced by `c`, and the listener moved.
    const B_REPLACED_BY_C: &str = include_str!("../../tests/fixtures/xds/b-replaced-by-c.yaml");

    /// BASE with a new EDS service `c` and a route to it.
    const C_ADDED: &str = include_str!("../../tests/fixtures/xds/c-added.yaml");

    /// `public` for everyone, `internal` only for the `ops` fleet.
    const FLEETS: &str = include_str!("../../tests/fixtures/xds/fleets.yaml");

    fn view(yaml: &str, cluster: &str) -> Arc<View> {
        let policy = crate::policy::load_texts(&[("gateway.yaml".to_owned(), yaml.to_owned())])
            .unwrap_or_else(|e| panic!("test policy is invalid:\n{e}"));
        crate::translate::translate(&policy).view(cluster)
    }

    fn request(kind: Kind, names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.to_owned(),
            resource_names: names.iter().map(|&n| n.to_owned()).collect(),
            type_url: kind.type_url().to_owned(),
            response_nonce: nonce.to_owned(),
            ..Default::default()
        }
    }

    /// The first request of a stream: carries the node.
    fn hello(kind: Kind, names: &[&str], cluster: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            node: Some(Node { id: "envoy-1".into(), cluster: cluster.into(), ..Default::default() }),
            ..request(kind, names, "", "")
        }
    }

    fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
        let kind = Kind::from_type_url(&resp.type_url).expect("a served type");
        request(kind, names, &resp.version_info, &resp.nonce)
    }

    /// Envoy's NACK: the version it still runs, the nonce it rejects, why.
    fn nack(resp: &DiscoveryResponse, names: &[&str], kept: &str, message: &str) -> DiscoveryRequest {
        let kind = Kind::from_type_url(&resp.type_url).expect("a served type");
        DiscoveryRequest {
            error_detail: Some(Status { code: 3, message: message.to_owned(), details: vec![] }),
            ..request(kind, names, kept, &resp.nonce)
        }
    }

    fn kind_of(resp: &DiscoveryResponse) -> Kind {
        Kind::from_type_url(&resp.type_url).expect("a served type")
    }

    /// The resource names a response carries, decoded from the wire.
    fn names(resp: &DiscoveryResponse) -> Vec<String> {
        resp.resources
            .iter()
            .map(|any| {
                let bytes = any.value.as_slice();
                match kind_of(resp) {
                    CDS => Cluster::decode(bytes).expect("a Cluster").name,
                    EDS => ClusterLoadAssignment::decode(bytes).expect("a ClusterLoadAssignment").cluster_name,
                    LDS => Listener::decode(bytes).expect("a Listener").name,
                    RDS => RouteConfiguration::decode(bytes).expect("a RouteConfiguration").name,
                    Kind::Secret => {
                        envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(bytes)
                            .expect("a Secret")
                            .name
                    }
                }
            })
            .collect()
    }

    fn status(t: &Tracker, kind: Kind) -> TypeStatus {
        t.status().find(|(k, _)| *k == kind).map(|(_, s)| s).expect("subscribed")
    }

    fn next(t: &mut Tracker, v: &View) -> Option<DiscoveryResponse> {
        t.next_response(v, Instant::now()).map(|p| p.to_sotw())
    }

    /// Take in a request that must be fine.
    fn feed(t: &mut Tracker, req: DiscoveryRequest) -> Event {
        t.on_request(req, Instant::now()).expect("a valid request")
    }

    /// A tracker that has been sent, and has ACKed, everything in `v`:
    /// CDS, EDS for `a` and `b`, LDS, RDS for `public`.
    fn synced(v: &View) -> (Tracker, [DiscoveryResponse; 4]) {
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let cds = next(&mut t, v).expect("CDS");
        feed(&mut t, ack(&cds, &[]));
        feed(&mut t, request(EDS, &["a", "b"], "", ""));
        let eds = next(&mut t, v).expect("EDS");
        feed(&mut t, ack(&eds, &["a", "b"]));
        feed(&mut t, request(LDS, &[], "", ""));
        let lds = next(&mut t, v).expect("LDS");
        feed(&mut t, ack(&lds, &[]));
        feed(&mut t, request(RDS, &["public"], "", ""));
        let rds = next(&mut t, v).expect("RDS");
        feed(&mut t, ack(&rds, &["public"]));
        assert_eq!(next(&mut t, v), None, "nothing left to send");
        (t, [cds, eds, lds, rds])
    }

    #[test]
    fn first_request_gets_every_cluster_with_a_nonce() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        assert_eq!(feed(&mut t, hello(CDS, &[], "default")), Event::Subscribed(CDS));
        assert_eq!(t.node(), Some(&NodeInfo { id: "envoy-1".into(), cluster: "default".into() }));

        let resp = next(&mut t, &v).expect("a CDS response");
        assert_eq!(kind_of(&resp), CDS);
        assert_eq!(names(&resp), ["a", "b"]);
        assert_eq!(resp.version_info, v.version(CDS));
        assert!(!resp.nonce.is_empty(), "every response carries a nonce");
        assert_eq!(next(&mut t, &v), None, "one response, then wait for the ACK");
    }

    #[test]
    fn named_types_get_exactly_the_names_asked_for() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(EDS, &["b", "no-such-cluster"], "default"));
        let resp = next(&mut t, &v).expect("an EDS response");
        assert_eq!(names(&resp), ["b"]);
    }

    #[test]
    fn ack_clears_the_in_flight_response_and_records_the_version() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        feed(&mut t, request(LDS, &[], "", ""));
        let cds = next(&mut t, &v).expect("CDS");
        assert_eq!(next(&mut t, &v), None, "LDS waits for the CDS ACK");
        assert_eq!(status(&t, CDS).acked_version, None);

        let event = feed(&mut t, ack(&cds, &[]));
        let Event::Ack { kind, version, .. } = event else { panic!("expected an ACK, got {event:?}") };
        assert_eq!((kind, version.as_str()), (CDS, v.version(CDS)));
        assert_eq!(status(&t, CDS), TypeStatus { acked_version: Some(v.version(CDS).to_owned()), nack: None });

        let lds = next(&mut t, &v).expect("LDS once CDS is ACKed");
        assert_eq!(kind_of(&lds), LDS);
        assert_ne!(lds.nonce, cds.nonce, "a fresh nonce per response");
    }

    #[test]
    fn nack_is_recorded_and_not_answered_by_resending() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let cds = next(&mut t, &v).expect("CDS");

        let event = feed(&mut t, nack(&cds, &[], "", "cluster a: bad lb policy"));
        let Event::Nack { kind, nack: n } = event else { panic!("expected a NACK, got {event:?}") };
        assert_eq!(kind, CDS);
        assert_eq!(n.version, cds.version_info, "the NACK names the version rejected, not the one kept");
        assert_eq!(n.message, "cluster a: bad lb policy");
        let s = status(&t, CDS);
        assert_eq!(s.acked_version, None, "a NACK is not an ACK");
        assert_eq!(s.nack.as_ref().map(|n| n.message.as_str()), Some("cluster a: bad lb policy"));

        for _ in 0..3 {
            assert_eq!(next(&mut t, &v), None, "the rejected resources are not sent again");
        }

        // The next change is sent, and its ACK clears the NACK.
        let changed = view(C_ADDED, "default");
        let again = next(&mut t, &changed).expect("a new CDS after a change");
        assert_eq!(names(&again), ["a", "b", "c"]);
        feed(&mut t, ack(&again, &[]));
        assert_eq!(status(&t, CDS).nack, None);
        assert_eq!(status(&t, CDS).acked_version.as_deref(), Some(changed.version(CDS)));
    }

    #[test]
    fn stale_nonce_is_ignored() {
        let old = view(BASE, "default");
        let new = view(C_ADDED, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let first = next(&mut t, &old).expect("CDS");
        feed(&mut t, ack(&first, &[]));
        let second = next(&mut t, &new).expect("CDS after a change");

        // Envoy answers `first` again (say its request crossed `second`): stale.
        assert_eq!(feed(&mut t, ack(&first, &[])), Event::Stale(CDS));
        assert_eq!(feed(&mut t, nack(&first, &[], "", "late")), Event::Stale(CDS));
        assert_eq!(status(&t, CDS), TypeStatus { acked_version: Some(first.version_info), nack: None });
        feed(&mut t, request(LDS, &[], "", ""));
        assert_eq!(next(&mut t, &new), None, "`second` is still in flight");

        let Event::Ack { version, .. } = feed(&mut t, ack(&second, &[])) else { panic!("expected an ACK") };
        assert_eq!(version, second.version_info);
        assert_eq!(next(&mut t, &new).map(|r| kind_of(&r)), Some(LDS));
    }

    #[test]
    fn a_nonce_never_sent_is_a_protocol_error() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let cds = next(&mut t, &v).expect("CDS");
        assert_eq!(cds.nonce, "1");
        for bad in ["2", "0", "banana"] {
            let err = t.on_request(request(CDS, &[], "", bad), Instant::now()).expect_err(bad);
            assert_eq!(err.0, format!("response_nonce `{bad}` was never sent on this stream"));
        }
    }

    #[test]
    fn first_request_without_node_is_a_protocol_error() {
        let mut t = Tracker::new();
        let err = t.on_request(request(CDS, &[], "", ""), Instant::now()).expect_err("no node");
        assert!(err.0.contains("node.id"), "{err}");
        assert_eq!(t.node(), None);

        let mut t = Tracker::new();
        let nameless = DiscoveryRequest { node: Some(Node::default()), ..request(CDS, &[], "", "") };
        assert!(t.on_request(nameless, Instant::now()).is_err(), "a node without an id is no node");

        // Later requests need not repeat the node (set_node_on_first_message_only).
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        assert_eq!(feed(&mut t, request(LDS, &[], "", "")), Event::Subscribed(LDS));
    }

    #[test]
    fn missing_or_unknown_type_url_is_a_protocol_error_but_other_envoy_types_are_ignored() {
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let empty = DiscoveryRequest { type_url: String::new(), ..request(CDS, &[], "", "") };
        assert_eq!(t.on_request(empty, Instant::now()).expect_err("empty").0, "request without a type_url");

        let foreign = DiscoveryRequest { type_url: "example.com/Foo".into(), ..request(CDS, &[], "", "") };
        assert!(t.on_request(foreign, Instant::now()).expect_err("unknown").0.contains("example.com/Foo"));

        let ecds = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
        let req = DiscoveryRequest { type_url: ecds.into(), ..request(CDS, &[], "", "") };
        assert_eq!(feed(&mut t, req), Event::Unserved(ecds.into()));
    }

    #[test]
    fn reconnect_with_current_versions_gets_nothing() {
        let v = view(BASE, "default");
        let (_, [cds, eds, lds, rds]) = synced(&v);

        // A new stream (say legate restarted) whose Envoy already has all of it.
        let mut t = Tracker::new();
        feed(&mut t, DiscoveryRequest { version_info: cds.version_info, ..hello(CDS, &[], "default") });
        feed(&mut t, request(LDS, &[], &lds.version_info, ""));
        feed(&mut t, request(EDS, &["a", "b"], &eds.version_info, ""));
        feed(&mut t, request(RDS, &["public"], &rds.version_info, ""));
        assert_eq!(next(&mut t, &v), None, "no churn for a proxy that is up to date");
        assert_eq!(status(&t, LDS).acked_version.as_deref(), Some(v.version(LDS)));

        // Only what then changes is sent.
        let changed = view(C_ADDED, "default");
        let resp = next(&mut t, &changed).expect("the change");
        assert_eq!((kind_of(&resp), names(&resp)), (CDS, vec!["a".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn reconnect_with_an_old_version_gets_the_current_one() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, DiscoveryRequest { version_info: "0123456789abcdef".into(), ..hello(CDS, &[], "default") });
        let resp = next(&mut t, &v).expect("the current clusters");
        assert_eq!(resp.version_info, v.version(CDS));
    }

    #[test]
    fn rds_subscription_change_is_answered_with_the_new_set() {
        let v = view(FLEETS, "ops");
        let mut t = Tracker::new();
        feed(&mut t, hello(RDS, &["public"], "ops"));
        let first = next(&mut t, &v).expect("RDS");
        assert_eq!(names(&first), ["public"]);
        feed(&mut t, ack(&first, &["public"]));

        // A new listener needs its route configuration: complete set back.
        feed(&mut t, ack(&first, &["public", "internal"]));
        let both = next(&mut t, &v).expect("RDS for the new name");
        assert_eq!(names(&both), ["internal", "public"]);
        assert_ne!(both.version_info, first.version_info);
        feed(&mut t, ack(&both, &["public", "internal"]));

        // The same names again, or fewer: nothing new to send.
        feed(&mut t, ack(&both, &["public", "internal"]));
        assert_eq!(next(&mut t, &v), None);
        feed(&mut t, ack(&both, &["public"]));
        assert_eq!(next(&mut t, &v), None, "dropping a name needs no response");

        // Asked for again, it is sent again: Envoy dropped it.
        feed(&mut t, ack(&both, &["public", "internal"]));
        let again = next(&mut t, &v).expect("a name requested again is sent again");
        assert_eq!(names(&again), ["internal", "public"]);
    }

    #[test]
    fn responses_go_in_make_before_break_order_one_at_a_time() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(RDS, &["public"], "default"));
        feed(&mut t, request(LDS, &[], "", ""));
        feed(&mut t, request(EDS, &["a", "b"], "", ""));
        feed(&mut t, request(CDS, &[], "", ""));

        let cds = next(&mut t, &v).expect("CDS first");
        assert_eq!(kind_of(&cds), CDS);
        // Endpoints may follow clusters before the clusters' ACK: Envoy
        // warms new EDS clusters, with these endpoints, before it ACKs them.
        let eds = next(&mut t, &v).expect("EDS next");
        assert_eq!(kind_of(&eds), EDS);
        assert_eq!(next(&mut t, &v), None, "LDS waits for clusters and endpoints");
        feed(&mut t, ack(&cds, &[]));
        assert_eq!(next(&mut t, &v), None, "LDS waits for the EDS ACK");
        feed(&mut t, ack(&eds, &["a", "b"]));

        let lds = next(&mut t, &v).expect("LDS third");
        assert_eq!(kind_of(&lds), LDS);
        assert_eq!(next(&mut t, &v), None, "RDS waits for the LDS ACK");
        feed(&mut t, ack(&lds, &[]));

        let rds = next(&mut t, &v).expect("RDS last");
        assert_eq!(kind_of(&rds), RDS);
        assert_eq!(next(&mut t, &v), None);
        feed(&mut t, ack(&rds, &["public"]));
        assert_eq!(next(&mut t, &v), None, "all sent");
    }

    #[test]
    fn only_endpoints_overtake_an_unacked_cds() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(EDS, &["a"], "default"));
        feed(&mut t, request(LDS, &[], "", ""));
        let eds = next(&mut t, &v).expect("EDS");
        assert_eq!(kind_of(&eds), EDS);
        feed(&mut t, request(CDS, &[], "", ""));
        assert_eq!(next(&mut t, &v), None, "nothing overtakes an un-ACKed EDS response");
    }

    #[test]
    fn endpoints_of_a_new_cluster_are_sent_before_its_cds_ack() {
        // Envoy holds the CDS ACK while a new EDS cluster warms, and asks for
        // its endpoints meanwhile; legate must answer or both wait 15 s.
        let (mut t, [_, eds, ..]) = synced(&view(BASE, "default"));
        let new = view(C_ADDED, "default");
        let cds = next(&mut t, &new).expect("CDS with the new cluster");
        assert_eq!(names(&cds), ["a", "b", "c"]);
        assert_eq!(next(&mut t, &new), None, "EDS has nothing new until `c` is asked for");

        feed(&mut t, ack(&eds, &["a", "b", "c"]));
        let endpoints = next(&mut t, &new).expect("endpoints for the warming cluster");
        assert_eq!(names(&endpoints), ["a", "b", "c"]);
        assert_eq!(next(&mut t, &new), None, "routes wait for the clusters and endpoints");

        feed(&mut t, ack(&endpoints, &["a", "b", "c"]));
        feed(&mut t, ack(&cds, &[]));
        let rds = next(&mut t, &new).expect("the route to `c`");
        assert_eq!(kind_of(&rds), RDS);
    }

    #[test]
    fn removed_clusters_go_only_after_the_routes_that_used_them() {
        let (mut t, [_, eds, ..]) = synced(&view(BASE, "default"));
        let new = view(B_REPLACED_BY_C, "default");

        let cds = next(&mut t, &new).expect("CDS");
        assert_eq!(names(&cds), ["a", "b", "c"], "`b` stays while routes may still use it");
        feed(&mut t, ack(&eds, &["a", "b", "c"]));
        let endpoints = next(&mut t, &new).expect("EDS for `c`");
        feed(&mut t, ack(&cds, &[]));
        feed(&mut t, ack(&endpoints, &["a", "b", "c"]));

        let lds = next(&mut t, &new).expect("LDS");
        assert_eq!(kind_of(&lds), LDS);
        assert_eq!(next(&mut t, &new), None);
        feed(&mut t, ack(&lds, &[]));
        let rds = next(&mut t, &new).expect("RDS");
        assert_eq!(kind_of(&rds), RDS);
        assert_eq!(next(&mut t, &new), None, "`b` is not removed before the new routes are ACKed");
        feed(&mut t, ack(&rds, &["public"]));

        let removal = next(&mut t, &new).expect("CDS without `b`");
        assert_eq!(kind_of(&removal), CDS);
        assert_eq!(names(&removal), ["a", "c"]);
        assert_eq!(removal.version_info, new.version(CDS), "ends on the snapshot's own version");
        feed(&mut t, ack(&removal, &[]));
        assert_eq!(next(&mut t, &new), None);
    }

    #[test]
    fn clusters_stay_while_the_new_routes_are_rejected() {
        let (mut t, [_, eds, ..]) = synced(&view(BASE, "default"));
        let new = view(B_REPLACED_BY_C, "default");
        let cds = next(&mut t, &new).expect("CDS");
        feed(&mut t, ack(&eds, &["a", "b", "c"]));
        let endpoints = next(&mut t, &new).expect("EDS for `c`");
        feed(&mut t, ack(&cds, &[]));
        feed(&mut t, ack(&endpoints, &["a", "b", "c"]));
        let lds = next(&mut t, &new).expect("LDS");
        feed(&mut t, ack(&lds, &[]));
        let rds = next(&mut t, &new).expect("RDS");
        feed(&mut t, nack(&rds, &["public"], "old", "route rejected"));
        assert_eq!(next(&mut t, &new), None, "the old routes still run and may use `b`: keep it");

        // The next good change is ACKed: now `b` can go.
        let fixed = view(&B_REPLACED_BY_C.replace("prefix: /c", "prefix: /c2"), "default");
        let rds = next(&mut t, &fixed).expect("the fixed routes");
        assert_eq!(kind_of(&rds), RDS);
        feed(&mut t, ack(&rds, &["public"]));
        let removal = next(&mut t, &fixed).expect("CDS without `b`");
        assert_eq!(names(&removal), ["a", "c"]);
    }

    #[test]
    fn listeners_with_fleets_reach_only_listed_node_clusters() {
        let edge = view(FLEETS, "edge");
        let ops = view(FLEETS, "ops");
        let keys = |v: &View, k: Kind| v.resources(k).keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&edge, LDS), ["public"]);
        assert_eq!(keys(&edge, RDS), ["public"]);
        assert_eq!(keys(&ops, LDS), ["internal", "public"]);
        assert_eq!(keys(&ops, RDS), ["internal", "public"]);
        assert_eq!(keys(&edge, CDS), keys(&ops, CDS), "clusters go to every fleet");
        assert_ne!(edge.version(LDS), ops.version(LDS));

        let mut t = Tracker::new();
        feed(&mut t, hello(LDS, &[], "edge"));
        let lds = next(&mut t, &edge).expect("LDS");
        assert_eq!(names(&lds), ["public"]);
        feed(&mut t, ack(&lds, &[]));
        feed(&mut t, request(RDS, &["public", "internal"], "", ""));
        let rds = next(&mut t, &edge).expect("RDS");
        assert_eq!(names(&rds), ["public"], "another fleet's routes are not sent even when asked for");
    }

    #[test]
    fn ack_measures_push_to_ack_latency() {
        let v = view(BASE, "default");
        let mut t = Tracker::new();
        feed(&mut t, hello(CDS, &[], "default"));
        let sent_at = Instant::now();
        let cds = t.next_response(&v, sent_at).expect("CDS").to_sotw();
        let event = t.on_request(ack(&cds, &[]), sent_at + Duration::from_millis(7)).expect("ACK");
        let Event::Ack { latency, .. } = event else { panic!("expected an ACK, got {event:?}") };
        assert_eq!(latency, Duration::from_millis(7));
    }
}

//! The per-stream SotW state machine, without I/O.
//!
//! A [`Tracker`] is fed every request on one ADS stream ([`Tracker::on_request`])
//! and asked what to send next against the node's current [`View`]
//! ([`Tracker::next_response`]). It tells ACK from NACK by `error_detail`,
//! ignores stale nonces, never answers a NACK by resending the same thing,
//! and keeps at most one response in flight so that pushes follow
//! make-before-break order: clusters, endpoints, listeners, routes, and only
//! then the removal of clusters the old routes used.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

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
    /// What the last response of this type carried.
    sent: Option<Resources>,
    sent_version: String,
    last_nonce: Option<u64>,
    acked_version: Option<String>,
    nack: Option<Nack>,
}

#[derive(Debug)]
struct InFlight {
    nonce: u64,
    version: String,
    at: Instant,
}

/// The ACK/NACK/nonce state of one ADS stream.
#[derive(Debug, Default)]
pub struct Tracker {
    node: Option<NodeInfo>,
    types: [TypeState; 4],
    in_flight: Option<InFlight>,
    nonces: u64,
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
        self.node.as_ref()
    }

    /// Status of every type the proxy has asked for.
    pub fn status(&self) -> impl Iterator<Item = (Kind, TypeStatus)> + '_ {
        Kind::ALL
            .into_iter()
            .zip(&self.types)
            .filter(|(_, t)| t.subscribed)
            .map(|(k, t)| (k, TypeStatus { acked_version: t.acked_version.clone(), nack: t.nack.clone() }))
    }

    /// Take in one request.
    ///
    /// # Errors
    /// When the request breaks the protocol: no node on the first request,
    /// no type URL, or a nonce this stream never sent.
    pub fn on_request(&mut self, req: DiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        if self.node.is_none() {
            let Some(node) = req.node.as_ref().filter(|n| !n.id.is_empty()) else {
                return Err(ProtocolError("the first request on a stream must carry node.id".into()));
            };
            self.node = Some(NodeInfo { id: node.id.clone(), cluster: node.cluster.clone() });
        }
        if req.type_url.is_empty() {
            return Err(ProtocolError("request without a type_url".into()));
        }
        let Some(kind) = Kind::from_type_url(&req.type_url) else {
            if req.type_url.starts_with("type.googleapis.com/envoy.") {
                return Ok(Event::Unserved(req.type_url));
            }
            return Err(ProtocolError(format!("unknown type_url `{}`", req.type_url)));
        };
        let nonce = if req.response_nonce.is_empty() {
            None
        } else {
            match req.response_nonce.parse::<u64>() {
                Ok(n) if n >= 1 && n <= self.nonces => Some(n),
                _ => {
                    return Err(ProtocolError(format!(
                        "response_nonce `{}` was never sent on this stream",
                        req.response_nonce
                    )))
                }
            }
        };
        let t = &mut self.types[kind as usize];
        if let Some(n) = nonce {
            if t.last_nonce != Some(n) {
                return Ok(Event::Stale(kind));
            }
        }

        // Subscription: the names asked for, or everything.
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let wildcard = kind.is_wildcard() && (names.is_empty() || names.contains("*"));
        if !t.subscribed && nonce.is_none() && !req.version_info.is_empty() {
            // A reconnect: the proxy already has this version.
            t.initial_version = Some(req.version_info.clone());
            t.acked_version = Some(req.version_info.clone());
        }
        t.subscribed = true;
        t.wildcard = wildcard;
        t.names = names;

        let Some(n) = nonce else {
            return Ok(Event::Subscribed(kind));
        };
        // The answer to our latest response of this type.
        let flight = self.in_flight.take_if(|f| f.nonce == n);
        let (version, latency) = flight.map_or_else(
            || (t.sent_version.clone(), Duration::ZERO),
            |f| (f.version, now.saturating_duration_since(f.at)),
        );
        let t = &mut self.types[kind as usize];
        if let Some(status) = req.error_detail {
            let nack = Nack { version, message: status.message, at: SystemTime::now() };
            t.nack = Some(nack.clone());
            return Ok(Event::Nack { kind, nack });
        }
        t.acked_version = Some(req.version_info.clone());
        t.nack = None;
        Ok(Event::Ack { kind, version: req.version_info, latency })
    }

    /// The next response to send for `view`, if any is due. At most one is
    /// in flight: the next waits for its ACK or NACK.
    pub fn next_response(&mut self, view: &View, now: Instant) -> Option<DiscoveryResponse> {
        if self.in_flight.is_some() {
            return None;
        }
        for kind in Kind::ALL {
            let Some(desired) = self.desired(kind, view) else { continue };
            let t = &mut self.types[kind as usize];
            let version = version_of(&desired);
            if t.sent.is_none() && t.initial_version.as_deref() == Some(version.as_str()) {
                // Reconnected with exactly this: nothing to send.
                t.sent = Some(desired);
                t.sent_version = version;
                continue;
            }
            if !needs_send(kind, t.sent.as_ref(), &desired) {
                continue;
            }
            self.nonces += 1;
            let nonce = self.nonces;
            let resp = DiscoveryResponse {
                version_info: version.clone(),
                resources: desired.values().map(|r| r.any.clone()).collect(),
                type_url: kind.type_url().to_owned(),
                nonce: nonce.to_string(),
                ..Default::default()
            };
            t.sent = Some(desired);
            t.sent_version = version.clone();
            t.last_nonce = Some(nonce);
            self.in_flight = Some(InFlight { nonce, version, at: now });
            return Some(resp);
        }
        None
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

    /// True when listeners and routes sent match `view`.
    fn routes_caught_up(&self, view: &View) -> bool {
        [Kind::Listener, Kind::Route].into_iter().all(|k| {
            let t = &self.types[k as usize];
            if !t.subscribed {
                return true;
            }
            let Some(desired) = self.desired(k, view) else { return true };
            !needs_send(k, t.sent.as_ref(), &desired)
        })
    }
}

/// Wildcard types must match exactly (a missing listener is a removal);
/// named types need a response when a wanted resource is new or changed.
fn needs_send(kind: Kind, sent: Option<&Resources>, desired: &Resources) -> bool {
    let Some(sent) = sent else {
        return kind.is_wildcard() || !desired.is_empty();
    };
    let differs = |(name, r): (&String, &std::sync::Arc<crate::snapshot::Resource>)| {
        sent.get(name).is_none_or(|s| s.hash != r.hash)
    };
    if kind.is_wildcard() {
        sent.len() != desired.len() || desired.iter().any(differs)
    } else {
        desired.iter().any(differs)
    }
}

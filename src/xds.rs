//! The ADS server: one task per stream, each driving a [`Tracker`] (SotW)
//! or a [`DeltaTracker`] (incremental) against the latest published
//! snapshot, and sending [`Push`]es of its shared, pre-encoded resources. It
//! knows nothing about policy files.

pub mod delta;
pub mod fleet;
pub mod tracker;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::TypeLabel;
use crate::snapshot::{Kind, View};
use crate::state::State;
use delta::DeltaTracker;
use tracker::{Event, Tracker};
use wire::{AdsServer, Push, PushStream, Streams};

pub use tracker::{NodeInfo, ProtocolError, TypeStatus};

/// One variant of the ADS protocol as a stream task drives it: the state
/// machine of [`Tracker`] (SotW) or [`DeltaTracker`] (incremental). Both
/// answer with a [`Push`], which encodes as that variant's response.
pub trait Protocol: Default + Send + 'static {
    /// What the proxy sends.
    type Request: prost::Message + Default + Send + 'static;
    /// `sotw` or `delta`, for logs and `/api/status`.
    const NAME: &'static str;
    /// Take in one request.
    ///
    /// # Errors
    /// When the request breaks the protocol; the stream ends.
    fn on_request(&mut self, req: Self::Request, now: Instant) -> Result<Event, ProtocolError>;
    /// The next response due against `view`.
    fn next_response(&mut self, view: &View, now: Instant) -> Option<Push>;
    /// The node, once known.
    fn node(&self) -> Option<&NodeInfo>;
    /// Per subscribed type: what the proxy ACKed or NACKed.
    fn status(&self) -> Vec<(Kind, TypeStatus)>;
}

impl Protocol for Tracker {
    type Request = DiscoveryRequest;
    const NAME: &'static str = "sotw";
    fn on_request(&mut self, req: DiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        Tracker::on_request(self, req, now)
    }
    fn next_response(&mut self, view: &View, now: Instant) -> Option<Push> {
        Tracker::next_response(self, view, now)
    }
    fn node(&self) -> Option<&NodeInfo> {
        Tracker::node(self)
    }
    fn status(&self) -> Vec<(Kind, TypeStatus)> {
        Tracker::status(self).collect()
    }
}

impl Protocol for DeltaTracker {
    type Request = DeltaDiscoveryRequest;
    const NAME: &'static str = "delta";
    fn on_request(&mut self, req: DeltaDiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        DeltaTracker::on_request(self, req, now)
    }
    fn next_response(&mut self, view: &View, now: Instant) -> Option<Push> {
        DeltaTracker::next_response(self, view, now)
    }
    fn node(&self) -> Option<&NodeInfo> {
        DeltaTracker::node(self)
    }
    fn status(&self) -> Vec<(Kind, TypeStatus)> {
        DeltaTracker::status(self).collect()
    }
}

/// The `AggregatedDiscoveryService` implementation.
#[derive(Debug, Clone)]
pub struct Ads {
    state: Arc<State>,
    streams: Arc<AtomicU64>,
}

impl Ads {
    /// A server publishing `state`'s snapshots.
    #[must_use]
    pub fn new(state: Arc<State>) -> Self {
        Ads { state, streams: Arc::default() }
    }

    /// As a tonic service.
    #[must_use]
    pub fn into_service(self) -> AdsServer<Ads> {
        AdsServer::new(self, 16 << 20)
    }

    /// Start a stream's task; its responses are the returned stream.
    fn open<P: Protocol>(&self, request: Request<Streaming<P::Request>>) -> PushStream {
        let id = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let (tx, rx) = mpsc::channel(4);
        let state = Arc::clone(&self.state);
        let span = info_span!("ads", stream = id, %peer, protocol = P::NAME);
        tokio::spawn(run_stream::<P>(id, request.into_inner(), tx, state).instrument(span));
        Box::pin(ReceiverStream::new(rx))
    }
}

impl Streams for Ads {
    fn sotw(&self, request: Request<Streaming<DiscoveryRequest>>) -> PushStream {
        self.open::<Tracker>(request)
    }

    fn delta(&self, request: Request<Streaming<DeltaDiscoveryRequest>>) -> PushStream {
        self.open::<DeltaTracker>(request)
    }
}

async fn run_stream<P: Protocol>(
    id: u64,
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Result<Push, Status>>,
    state: Arc<State>,
) {
    let mut snapshots = state.subscribe();
    let mut stopped = std::pin::pin!(state.stopped());
    let mut tracker = P::default();
    let connected_at = SystemTime::now();
    let mut counted = false;
    'stream: loop {
        if let Some(node) = tracker.node().cloned() {
            if !counted {
                counted = true;
                state.metrics.connected_proxies.inc();
                info!(node = %node.id, cluster = %node.cluster, "proxy connected");
            }
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                let view = snapshot.view(&node.cluster);
                while let Some(push) = tracker.next_response(&view, Instant::now()) {
                    let kind = push.kind.short();
                    debug!(r#type = kind, version = %push.version, resources = push.resources.len(), removed = push.removed.len(), "push");
                    state.metrics.pushes.get_or_create(&TypeLabel { r#type: kind }).inc();
                    if tx.send(Ok(push)).await.is_err() {
                        break 'stream;
                    }
                }
            }
            state.fleet.update(id, &node, connected_at, P::NAME, tracker.status());
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => {
                    if !handle(&state, &mut tracker, req, &tx).await {
                        break;
                    }
                }
                Ok(None) => break,
                Err(status) if is_disconnect(&status) => {
                    debug!(error = %status.message(), "stream closed by the proxy");
                    break;
                }
                Err(status) => {
                    warn!(error = %status.message(), "unreadable ADS request; closing stream");
                    state.metrics.stream_errors.inc();
                    let _ = tx.send(Err(Status::invalid_argument(format!("unreadable request: {}", status.message())))).await;
                    break;
                }
            },
            changed = snapshots.changed() => if changed.is_err() { break },
            () = &mut stopped => {
                // UNAVAILABLE: Envoy reconnects at once, to another replica if it has one.
                let _ = tx.send(Err(Status::unavailable("legate is shutting down"))).await;
                break;
            }
        }
    }
    if counted {
        state.metrics.connected_proxies.dec();
        info!(node = tracker.node().map_or("", |n| n.id.as_str()), "proxy disconnected");
    }
    state.fleet.remove(id);
}

/// A proxy going away (Envoy restarting, a connection reset) rather than
/// sending something unreadable: tonic reports undecodable messages as
/// INTERNAL, connection failures as h2 errors.
fn is_disconnect(status: &Status) -> bool {
    status.message().starts_with("h2 protocol error")
        || matches!(status.code(), tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown)
}

/// Apply one request; false when the stream must end.
async fn handle<P: Protocol>(
    state: &State,
    tracker: &mut P,
    req: P::Request,
    tx: &mpsc::Sender<Result<Push, Status>>,
) -> bool {
    match tracker.on_request(req, Instant::now()) {
        Ok(Event::Ack { kind, latency, .. }) => {
            state.metrics.push_to_ack.observe(latency.as_secs_f64());
            debug!(r#type = kind.short(), "ack");
        }
        Ok(Event::Nack { kind, nack }) => {
            state.metrics.nacks.get_or_create(&TypeLabel { r#type: kind.short() }).inc();
            let node = tracker.node().map_or("", |n| n.id.as_str());
            warn!(node, r#type = kind.short(), version = %nack.version, error = %nack.message, "proxy rejected config (NACK)");
        }
        Ok(Event::Stale(kind)) => debug!(r#type = kind.short(), "stale nonce ignored"),
        Ok(Event::Subscribed(kind)) => debug!(r#type = kind.short(), "subscribed"),
        Ok(Event::Unserved(url)) => debug!(type_url = %url, "type not served; ignored"),
        Err(e) => {
            warn!(error = %e, "ADS protocol error; closing stream");
            state.metrics.stream_errors.inc();
            let _ = tx.send(Err(Status::invalid_argument(e.0))).await;
            return false;
        }
    }
    true
}

//! The ADS server: one task per stream, each driving a [`Tracker`] against
//! the latest published snapshot. It knows nothing about policy files.

pub mod delta;
pub mod fleet;
pub mod tracker;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, info_span, warn, Instrument};

use crate::metrics::TypeLabel;
use crate::snapshot::{Kind, View};
use crate::state::State;
use delta::DeltaTracker;
use tracker::{Event, Tracker};

pub use tracker::{NodeInfo, ProtocolError, TypeStatus};

/// One variant of the ADS protocol as a stream task drives it: the state
/// machine of [`Tracker`] (SotW) or [`DeltaTracker`] (incremental).
pub trait Protocol: Default + Send + 'static {
    /// What the proxy sends.
    type Request: Send + 'static;
    /// What legate sends.
    type Response: Send + 'static;
    /// `sotw` or `delta`, for logs and `/api/status`.
    const NAME: &'static str;
    /// Take in one request.
    ///
    /// # Errors
    /// When the request breaks the protocol; the stream ends.
    fn on_request(&mut self, req: Self::Request, now: Instant) -> Result<Event, ProtocolError>;
    /// The next response due against `view`.
    fn next_response(&mut self, view: &View, now: Instant) -> Option<Self::Response>;
    /// The node, once known.
    fn node(&self) -> Option<&NodeInfo>;
    /// Per subscribed type: what the proxy ACKed or NACKed.
    fn status(&self) -> Vec<(Kind, TypeStatus)>;
    /// A response's type URL, version and resource count, for logs and metrics.
    fn describe(resp: &Self::Response) -> (&str, &str, usize);
}

impl Protocol for Tracker {
    type Request = DiscoveryRequest;
    type Response = DiscoveryResponse;
    const NAME: &'static str = "sotw";
    fn on_request(&mut self, req: DiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        Tracker::on_request(self, req, now)
    }
    fn next_response(&mut self, view: &View, now: Instant) -> Option<DiscoveryResponse> {
        Tracker::next_response(self, view, now)
    }
    fn node(&self) -> Option<&NodeInfo> {
        Tracker::node(self)
    }
    fn status(&self) -> Vec<(Kind, TypeStatus)> {
        Tracker::status(self).collect()
    }
    fn describe(resp: &DiscoveryResponse) -> (&str, &str, usize) {
        (&resp.type_url, &resp.version_info, resp.resources.len())
    }
}

impl Protocol for DeltaTracker {
    type Request = DeltaDiscoveryRequest;
    type Response = DeltaDiscoveryResponse;
    const NAME: &'static str = "delta";
    fn on_request(&mut self, req: DeltaDiscoveryRequest, now: Instant) -> Result<Event, ProtocolError> {
        DeltaTracker::on_request(self, req, now)
    }
    fn next_response(&mut self, view: &View, now: Instant) -> Option<DeltaDiscoveryResponse> {
        DeltaTracker::next_response(self, view, now)
    }
    fn node(&self) -> Option<&NodeInfo> {
        DeltaTracker::node(self)
    }
    fn status(&self) -> Vec<(Kind, TypeStatus)> {
        DeltaTracker::status(self).collect()
    }
    fn describe(resp: &DeltaDiscoveryResponse) -> (&str, &str, usize) {
        (&resp.type_url, &resp.system_version_info, resp.resources.len() + resp.removed_resources.len())
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
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<Ads> {
        AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(16 << 20)
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.open::<Tracker>(request)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.open::<DeltaTracker>(request)))
    }
}

impl Ads {
    /// Start a stream's task; its responses are the returned stream.
    fn open<P: Protocol>(&self, request: Request<Streaming<P::Request>>) -> ResponseStream<P::Response>
    where
        P::Request: prost::Message + Default,
    {
        let id = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let (tx, rx) = mpsc::channel(4);
        let state = Arc::clone(&self.state);
        let span = info_span!("ads", stream = id, %peer, protocol = P::NAME);
        tokio::spawn(run_stream::<P>(id, request.into_inner(), tx, state).instrument(span));
        Box::pin(ReceiverStream::new(rx))
    }
}

async fn run_stream<P: Protocol>(
    id: u64,
    mut inbound: Streaming<P::Request>,
    tx: mpsc::Sender<Result<P::Response, Status>>,
    state: Arc<State>,
) where
    P::Request: prost::Message + Default,
{
    let mut snapshots = state.subscribe();
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
                while let Some(resp) = tracker.next_response(&view, Instant::now()) {
                    let (type_url, version, resources) = P::describe(&resp);
                    let kind = Kind::from_type_url(type_url).map_or("?", |k| k.short());
                    debug!(r#type = kind, version, resources, "push");
                    state.metrics.pushes.get_or_create(&TypeLabel { r#type: kind }).inc();
                    if tx.send(Ok(resp)).await.is_err() {
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
    tx: &mpsc::Sender<Result<P::Response, Status>>,
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

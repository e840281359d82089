//! The ADS server: one task per stream, each driving a [`Tracker`] against
//! the latest published snapshot. It knows nothing about policy files.

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
use crate::state::State;
use tracker::{Event, Tracker};

pub use tracker::{NodeInfo, ProtocolError};

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
        let id = self.streams.fetch_add(1, Ordering::Relaxed) + 1;
        let peer = request.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        let (tx, rx) = mpsc::channel(4);
        let state = Arc::clone(&self.state);
        let span = info_span!("ads", stream = id, %peer);
        tokio::spawn(run_stream(id, request.into_inner(), tx, state).instrument(span));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("incremental (delta) xDS is not supported by this legate yet; use SotW ADS"))
    }
}

async fn run_stream(
    id: u64,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    state: Arc<State>,
) {
    let mut snapshots = state.subscribe();
    let mut tracker = Tracker::new();
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
                    let kind = crate::snapshot::Kind::from_type_url(&resp.type_url).map_or("?", |k| k.short());
                    debug!(r#type = kind, version = %resp.version_info, resources = resp.resources.len(), "push");
                    state.metrics.pushes.get_or_create(&TypeLabel { r#type: kind }).inc();
                    if tx.send(Ok(resp)).await.is_err() {
                        break 'stream;
                    }
                }
            }
            state.fleet.update(id, &node, connected_at, &tracker);
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
async fn handle(
    state: &State,
    tracker: &mut Tracker,
    req: DiscoveryRequest,
    tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>,
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

//! Protocol tests: a real tonic ADS client against legate's ADS server, in
//! process. They check what an Envoy would see on the wire (first fetch,
//! ACK, NACK, stale nonces, subscription changes, pushes, reconnects) and
//! that garbage or protocol violations end only the offending stream, with a
//! gRPC status that says what was wrong. The second half does the same for
//! incremental (delta) xDS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status, Streaming};

use legate::snapshot::{Kind, Snapshot};
use legate::state::State;

/// How long anything expected may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen for something that must not arrive.
const QUIET: Duration = Duration::from_millis(500);

const ADS_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

const CDS: Kind = Kind::Cluster;
const EDS: Kind = Kind::Endpoint;
const LDS: Kind = Kind::Listener;
const RDS: Kind = Kind::Route;

/// Two services routed from one listener.
const BASE: &str = include_str!("fixtures/xds/base.yaml");

/// BASE plus service `c` and a route to it.
const C_ADDED: &str = include_str!("fixtures/xds/c-added.yaml");

/// BASE with `b` and its route replaced by `c`.
const B_REPLACED_BY_C: &str = include_str!("fixtures/xds/b-replaced-by-c.yaml");

/// `public` for every fleet, `internal` for `ops` only.
const FLEETS: &str = include_str!("fixtures/xds/fleets.yaml");

fn snapshot(yaml: &str) -> Snapshot {
    let policy = legate::policy::load_texts(&[("gateway.yaml".to_owned(), yaml.to_owned())])
        .unwrap_or_else(|e| panic!("test policy is invalid:\n{e}"));
    legate::translate::translate(&policy)
}

/// legate's ADS server on an ephemeral port, serving `yaml`.
async fn serve(yaml: &str) -> (SocketAddr, Arc<State>) {
    let state = State::new();
    assert!(state.publish(snapshot(yaml)));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    let ads = legate::xds::Ads::new(Arc::clone(&state)).into_service();
    tokio::spawn(async move {
        Server::builder()
            .add_service(ads)
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("ADS server");
    });
    (addr, state)
}

async fn channel(addr: SocketAddr) -> Channel {
    let endpoint = Channel::from_shared(format!("http://{addr}")).expect("endpoint URI");
    timeout(WAIT, endpoint.connect()).await.expect("connect timed out").expect("connect to the ADS server")
}

/// One ADS stream, as an Envoy would hold it: SotW ([`Ads`]) or delta ([`Delta`]).
struct Client<Req, Resp> {
    tx: mpsc::Sender<Req>,
    rx: Streaming<Resp>,
}

type Ads = Client<DiscoveryRequest, DiscoveryResponse>;
type Delta = Client<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

/// What a test needs to know of a response to check or report it.
trait Answer: std::fmt::Debug {
    fn type_url(&self) -> &str;
    /// A line saying what it carries.
    fn describe(&self) -> String;
}

impl Answer for DiscoveryResponse {
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn describe(&self) -> String {
        format!("{} response, version {}: {:?}", short(self), self.version_info, names(self))
    }
}

impl Answer for DeltaDiscoveryResponse {
    fn type_url(&self) -> &str {
        &self.type_url
    }
    fn describe(&self) -> String {
        format!("{} delta response: put {:?}, removed {:?}", self.type_url, put(self), self.removed_resources)
    }
}

impl Ads {
    async fn open(addr: SocketAddr) -> Ads {
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(16);
        let call = client.stream_aggregated_resources(ReceiverStream::new(rx));
        let rx = timeout(WAIT, call).await.expect("opening the stream timed out").expect("open the ADS stream");
        Client { tx, rx: rx.into_inner() }
    }
}

impl Delta {
    async fn open(addr: SocketAddr) -> Delta {
        let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await);
        let (tx, rx) = mpsc::channel(16);
        let call = client.delta_aggregated_resources(ReceiverStream::new(rx));
        let rx = timeout(WAIT, call).await.expect("opening the stream timed out").expect("open the delta stream");
        Client { tx, rx: rx.into_inner() }
    }
}

impl<Req, Resp: Answer + Default + prost::Message + 'static> Client<Req, Resp> {
    async fn send(&self, req: Req) {
        self.tx.send(req).await.expect("the request stream is open");
    }

    /// The next response; fails the test if none comes in time or the stream ends.
    async fn recv(&mut self) -> Resp {
        match timeout(WAIT, self.rx.message()).await {
            Err(_) => panic!("no response within {WAIT:?}"),
            Ok(Err(status)) => panic!("the stream failed: {status:?}"),
            Ok(Ok(None)) => panic!("the stream ended"),
            Ok(Ok(Some(resp))) => resp,
        }
    }

    /// The next response, which must be of `kind`.
    async fn recv_kind(&mut self, kind: Kind) -> Resp {
        let resp = self.recv().await;
        assert_eq!(resp.type_url(), kind.type_url(), "expected a {kind} response, got a {}", resp.describe());
        resp
    }

    /// Nothing arrives for a while, and the stream stays open.
    async fn quiet(&mut self) {
        match timeout(QUIET, self.rx.message()).await {
            Err(_) => {}
            Ok(Ok(Some(resp))) => panic!("unexpected {}", resp.describe()),
            Ok(other) => panic!("the stream ended: {other:?}"),
        }
    }

    /// The status the server ends the stream with.
    async fn ended(&mut self) -> Status {
        loop {
            match timeout(WAIT, self.rx.message()).await {
                Err(_) => panic!("the stream did not end within {WAIT:?}"),
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => panic!("the stream ended without an error status"),
                Ok(Err(status)) => return status,
            }
        }
    }
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

fn node(id: &str, cluster: &str) -> Option<Node> {
    Some(Node { id: id.to_owned(), cluster: cluster.to_owned(), ..Default::default() })
}

/// The first request on a stream, which names the node.
fn hello(id: &str, cluster: &str, kind: Kind, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest { node: node(id, cluster), ..request(kind, names, "", "") }
}

fn ack(resp: &DiscoveryResponse, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: resp.version_info.clone(),
        resource_names: names.iter().map(|&n| n.to_owned()).collect(),
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    }
}

fn kind(resp: &DiscoveryResponse) -> Kind {
    Kind::from_type_url(&resp.type_url).unwrap_or_else(|| panic!("unknown type {}", resp.type_url))
}

fn short(resp: &DiscoveryResponse) -> &'static str {
    kind(resp).short()
}

/// Names of the resources in a response, decoded as the type it says.
fn names(resp: &DiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|any| {
            assert_eq!(any.type_url, resp.type_url, "every resource is of the response's type");
            let bytes = any.value.as_slice();
            match kind(resp) {
                Kind::Cluster => Cluster::decode(bytes).expect("a Cluster").name,
                Kind::Endpoint => ClusterLoadAssignment::decode(bytes).expect("a ClusterLoadAssignment").cluster_name,
                Kind::Listener => Listener::decode(bytes).expect("a Listener").name,
                Kind::Route => RouteConfiguration::decode(bytes).expect("a RouteConfiguration").name,
                Kind::Secret => {
                    envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret::decode(bytes)
                        .expect("a Secret")
                        .name
                }
            }
        })
        .collect()
}

/// Wait until `/api/status` satisfies `ok`; returns that document.
async fn status_until(state: &State, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let poll = async {
        loop {
            let doc = legate::admin::status_json(state);
            if ok(&doc) {
                return doc;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    match timeout(WAIT, poll).await {
        Ok(doc) => doc,
        Err(_) => panic!("/api/status never showed {what}: {:#}", legate::admin::status_json(state)),
    }
}

/// `nodes[id].resources[kind]` in an `/api/status` document.
fn node_resource<'a>(doc: &'a serde_json::Value, id: &str, kind: Kind) -> Option<&'a serde_json::Value> {
    doc["nodes"].as_array()?.iter().find(|n| n["id"] == id)?["resources"].get(kind.type_url())
}

/// Everything in BASE fetched the way Envoy does it, all ACKed.
async fn sync_base(ads: &mut Ads, id: &str) -> [DiscoveryResponse; 4] {
    ads.send(hello(id, "default", CDS, &[])).await;
    ads.send(request(LDS, &[], "", "")).await;
    let cds = ads.recv_kind(CDS).await;
    // Envoy asks for endpoints of the new EDS clusters before it ACKs them.
    ads.send(request(EDS, &["a", "b"], "", "")).await;
    let eds = ads.recv_kind(EDS).await;
    ads.send(ack(&cds, &[])).await;
    ads.send(ack(&eds, &["a", "b"])).await;
    let lds = ads.recv_kind(LDS).await;
    ads.send(request(RDS, &["public"], "", "")).await;
    ads.send(ack(&lds, &[])).await;
    let rds = ads.recv_kind(RDS).await;
    ads.send(ack(&rds, &["public"])).await;
    ads.quiet().await;
    [cds, eds, lds, rds]
}

#[tokio::test]
async fn first_fetch_wildcard_then_by_name() {
    let (addr, state) = serve(BASE).await;
    let current = state.current().expect("published");
    let view = current.view("default");
    let mut ads = Ads::open(addr).await;

    let [cds, eds, lds, rds] = sync_base(&mut ads, "envoy-1").await;
    assert_eq!(names(&cds), ["a", "b"]);
    assert_eq!(names(&eds), ["a", "b"]);
    assert_eq!(names(&lds), ["public"]);
    assert_eq!(names(&rds), ["public"]);
    for resp in [&cds, &eds, &lds, &rds] {
        assert_eq!(resp.version_info, view.version(kind(resp)), "{} version is the snapshot's", short(resp));
        assert!(!resp.nonce.is_empty());
    }
    let nonces: std::collections::BTreeSet<_> = [&cds, &eds, &lds, &rds].map(|r| r.nonce.clone()).into();
    assert_eq!(nonces.len(), 4, "a fresh nonce per response");

    // A single name: exactly that resource.
    let mut other = Ads::open(addr).await;
    other.send(hello("envoy-2", "default", EDS, &["b", "not-a-cluster"])).await;
    assert_eq!(names(&other.recv_kind(EDS).await), ["b"]);
}

#[tokio::test]
async fn acks_are_recorded_per_node() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    let [cds, eds, lds, rds] = sync_base(&mut ads, "envoy-1").await;

    let doc = status_until(&state, "the RDS ACK", |d| {
        node_resource(d, "envoy-1", RDS).is_some_and(|r| r["acked_version"] == rds.version_info.as_str())
    })
    .await;
    let node = &doc["nodes"][0];
    assert_eq!(node["cluster"], "default");
    for resp in [&cds, &eds, &lds, &rds] {
        let r = node_resource(&doc, "envoy-1", kind(resp)).expect("every subscribed type is listed");
        assert_eq!(r["acked_version"], resp.version_info.as_str());
        assert!(r["nack"].is_null());
    }
    let metrics = state.metrics.render();
    assert!(metrics.contains("legate_connected_proxies 1"), "{metrics}");
    assert!(metrics.contains("legate_push_to_ack_seconds_count 4"), "{metrics}");
}

#[tokio::test]
async fn nack_is_recorded_and_not_answered_by_resending() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    ads.send(hello("envoy-1", "default", CDS, &[])).await;
    let cds = ads.recv_kind(CDS).await;

    let rejected = "Proto constraint validation failed (ClusterValidationError.LbPolicy: value must be one of the defined enum values)";
    ads.send(DiscoveryRequest {
        error_detail: Some(RpcStatus {
            code: Code::InvalidArgument as i32,
            message: rejected.to_owned(),
            details: vec![],
        }),
        ..request(CDS, &[], "", &cds.nonce)
    })
    .await;

    // No resend loop: Envoy would just reject the same thing again.
    ads.quiet().await;

    let doc =
        status_until(&state, "the NACK", |d| node_resource(d, "envoy-1", CDS).is_some_and(|r| !r["nack"].is_null()))
            .await;
    let r = node_resource(&doc, "envoy-1", CDS).expect("CDS status");
    assert_eq!(r["nack"]["version"], cds.version_info.as_str(), "the version rejected: {doc:#}");
    assert_eq!(r["nack"]["message"], rejected);
    assert!(r["nack"]["at"].as_str().is_some_and(|at| !at.is_empty()));
    assert!(r["acked_version"].is_null(), "nothing was accepted: {doc:#}");

    let metrics = state.metrics.render();
    assert!(metrics.contains(r#"legate_nacks_total{type="cds"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"legate_nacks_total{type="lds"} 0"#), "{metrics}");

    // The next change is pushed, and its ACK clears the NACK.
    assert!(state.publish(snapshot(C_ADDED)));
    let fixed = ads.recv_kind(CDS).await;
    assert_eq!(names(&fixed), ["a", "b", "c"]);
    ads.send(ack(&fixed, &[])).await;
    status_until(&state, "the NACK cleared", |d| {
        node_resource(d, "envoy-1", CDS)
            .is_some_and(|r| r["nack"].is_null() && r["acked_version"] == fixed.version_info.as_str())
    })
    .await;
}

#[tokio::test]
async fn stale_nonce_is_ignored() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    ads.send(hello("envoy-1", "default", CDS, &[])).await;
    let first = ads.recv_kind(CDS).await;
    ads.send(ack(&first, &[])).await;
    assert!(state.publish(snapshot(C_ADDED)));
    let second = ads.recv_kind(CDS).await;
    assert_ne!(first.nonce, second.nonce);

    // Answers to `first` after `second` was sent: stale, ignored, stream kept.
    ads.send(ack(&first, &[])).await;
    ads.send(DiscoveryRequest {
        error_detail: Some(RpcStatus { code: 3, message: "late".into(), details: vec![] }),
        ..ack(&first, &[])
    })
    .await;
    ads.send(request(LDS, &[], "", "")).await;
    ads.quiet().await; // LDS waits for the ACK of `second`.

    ads.send(ack(&second, &[])).await;
    assert_eq!(names(&ads.recv_kind(LDS).await), ["public"]);
    let doc = status_until(&state, "the ACK of the second CDS", |d| {
        node_resource(d, "envoy-1", CDS).is_some_and(|r| r["acked_version"] == second.version_info.as_str())
    })
    .await;
    assert!(node_resource(&doc, "envoy-1", CDS).is_some_and(|r| r["nack"].is_null()), "the stale NACK is ignored");
    assert!(state.metrics.render().contains(r#"legate_nacks_total{type="cds"} 0"#));
}

#[tokio::test]
async fn rds_subscription_change_gets_the_new_set() {
    let (addr, _state) = serve(FLEETS).await;
    let mut ads = Ads::open(addr).await;
    ads.send(hello("envoy-ops", "ops", RDS, &["public"])).await;
    let first = ads.recv_kind(RDS).await;
    assert_eq!(names(&first), ["public"]);
    ads.send(ack(&first, &["public"])).await;
    ads.quiet().await;

    // A new listener's route configuration is asked for: the complete set comes back.
    ads.send(ack(&first, &["public", "internal"])).await;
    let both = ads.recv_kind(RDS).await;
    assert_eq!(names(&both), ["internal", "public"]);
    ads.send(ack(&both, &["public", "internal"])).await;

    // Same names, or fewer: nothing new to send.
    ads.send(ack(&both, &["public", "internal"])).await;
    ads.send(ack(&both, &["public"])).await;
    ads.quiet().await;

    // Asked for again after being dropped: sent again.
    ads.send(ack(&both, &["public", "internal"])).await;
    assert_eq!(names(&ads.recv_kind(RDS).await), ["internal", "public"]);
}

#[tokio::test]
async fn listeners_with_fleets_reach_only_their_fleet() {
    let (addr, _state) = serve(FLEETS).await;
    let mut edge = Ads::open(addr).await;
    let mut ops = Ads::open(addr).await;
    edge.send(hello("envoy-edge", "edge", LDS, &[])).await;
    ops.send(hello("envoy-ops", "ops", LDS, &[])).await;
    assert_eq!(names(&edge.recv_kind(LDS).await), ["public"]);
    assert_eq!(names(&ops.recv_kind(LDS).await), ["internal", "public"]);
}

#[tokio::test]
async fn a_new_snapshot_is_pushed_to_connected_proxies() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    let [_, eds, ..] = sync_base(&mut ads, "envoy-1").await;

    assert!(state.publish(snapshot(C_ADDED)));
    let cds = ads.recv_kind(CDS).await;
    assert_eq!(names(&cds), ["a", "b", "c"]);
    // As Envoy does: ask for the new cluster's endpoints before ACKing it.
    ads.send(ack(&eds, &["a", "b", "c"])).await;
    let endpoints = ads.recv_kind(EDS).await;
    assert_eq!(names(&endpoints), ["a", "b", "c"]);
    ads.send(ack(&endpoints, &["a", "b", "c"])).await;
    ads.send(ack(&cds, &[])).await;
    let rds = ads.recv_kind(RDS).await;
    assert_eq!(rds.version_info, state.current().expect("published").view("default").version(RDS));
    ads.send(ack(&rds, &["public"])).await;
    ads.quiet().await;

    // Publishing the same thing again pushes nothing.
    assert!(!state.publish(snapshot(C_ADDED)));
    ads.quiet().await;
}

#[tokio::test]
async fn reconnect_with_current_versions_gets_nothing() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    let [cds, eds, lds, rds] = sync_base(&mut ads, "envoy-1").await;
    drop(ads);

    // Same Envoy, new stream (say legate restarted): it already has all of it.
    let mut again = Ads::open(addr).await;
    again
        .send(DiscoveryRequest { version_info: cds.version_info.clone(), ..hello("envoy-1", "default", CDS, &[]) })
        .await;
    again.send(request(LDS, &[], &lds.version_info, "")).await;
    again.send(request(EDS, &["a", "b"], &eds.version_info, "")).await;
    again.send(request(RDS, &["public"], &rds.version_info, "")).await;
    again.quiet().await;

    let doc = status_until(&state, "the reconnected node alone", |d| {
        d["nodes"].as_array().is_some_and(|n| n.len() == 1)
            && node_resource(d, "envoy-1", RDS).is_some_and(|r| r["acked_version"] == rds.version_info.as_str())
    })
    .await;
    assert_eq!(node_resource(&doc, "envoy-1", CDS).expect("CDS")["acked_version"], cds.version_info.as_str());

    // The stream is live: a change still arrives.
    assert!(state.publish(snapshot(C_ADDED)));
    assert_eq!(names(&again.recv_kind(CDS).await), ["a", "b", "c"]);
}

/// Bytes in, bytes out: lets a test put anything on the ADS stream.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A new ADS stream that carries `frames` as raw gRPC messages.
async fn raw_stream(addr: SocketAddr, frames: Vec<Bytes>) -> (mpsc::Sender<Bytes>, Streaming<Bytes>) {
    raw_stream_at(addr, ADS_PATH, frames).await
}

/// [`raw_stream`] on the method at `path`.
async fn raw_stream_at(
    addr: SocketAddr,
    path: &'static str,
    frames: Vec<Bytes>,
) -> (mpsc::Sender<Bytes>, Streaming<Bytes>) {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await);
    timeout(WAIT, grpc.ready()).await.expect("ready timed out").expect("channel ready");
    let (tx, rx) = mpsc::channel(frames.len().max(1));
    for f in frames {
        tx.send(f).await.expect("queue a frame");
    }
    let request = tonic::Request::new(ReceiverStream::new(rx));
    let call = grpc.streaming(request, PathAndQuery::from_static(path), RawCodec);
    let resp = timeout(WAIT, call).await.expect("the call timed out").expect("the stream opens");
    (tx, resp.into_inner())
}

#[tokio::test]
async fn garbage_ends_that_stream_with_a_clear_status_and_others_keep_working() {
    let (addr, state) = serve(BASE).await;
    let mut bystander = Ads::open(addr).await;
    bystander.send(hello("envoy-ok", "default", CDS, &[])).await;
    let cds = bystander.recv_kind(CDS).await;
    bystander.send(ack(&cds, &[])).await;

    // Field 1 with wire type 7, which does not exist: not a DiscoveryRequest.
    let (_tx, mut garbage) = raw_stream(addr, vec![Bytes::from_static(&[0x0f, 0xff, 0xff, 0xff])]).await;
    let status = match timeout(WAIT, garbage.message()).await.expect("the garbage stream did not end") {
        Err(status) => status,
        Ok(other) => panic!("expected an error status, got {other:?}"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("unreadable request"), "{status:?}");
    assert!(status.message().contains("decode"), "says it could not be decoded: {status:?}");

    // A well-formed request through the same raw path still works.
    let good = Bytes::from(hello("envoy-raw", "default", CDS, &[]).encode_to_vec());
    let (_tx, mut raw) = raw_stream(addr, vec![good]).await;
    let bytes = timeout(WAIT, raw.message()).await.expect("no response").expect("a response").expect("a message");
    let resp = DiscoveryResponse::decode(bytes).expect("a DiscoveryResponse");
    assert_eq!(names(&resp), ["a", "b"]);

    // The other stream is unaffected: it still gets pushes.
    assert!(state.publish(snapshot(C_ADDED)));
    assert_eq!(names(&bystander.recv_kind(CDS).await), ["a", "b", "c"]);
    let metrics = state.metrics.render();
    assert!(metrics.contains("legate_stream_errors_total 1"), "{metrics}");
}

#[tokio::test]
async fn protocol_violations_end_only_that_stream_with_invalid_argument() {
    let (addr, state) = serve(BASE).await;
    let mut bystander = Ads::open(addr).await;
    bystander.send(hello("envoy-ok", "default", CDS, &[])).await;
    let first = bystander.recv_kind(CDS).await;
    bystander.send(ack(&first, &[])).await;

    // An ACK of a nonce this stream never sent.
    let mut ads = Ads::open(addr).await;
    ads.send(hello("envoy-1", "default", CDS, &[])).await;
    let cds = ads.recv_kind(CDS).await;
    ads.send(request(CDS, &[], &cds.version_info, "99")).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "response_nonce `99` was never sent on this stream");

    // A nonce before any response.
    let mut ads = Ads::open(addr).await;
    ads.send(DiscoveryRequest { node: node("envoy-2", "default"), ..request(CDS, &[], "", "1") }).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("never sent"), "{status:?}");

    // A first request without a node.
    let mut ads = Ads::open(addr).await;
    ads.send(request(CDS, &[], "", "")).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "the first request on a stream must carry node.id");

    // No type URL.
    let mut ads = Ads::open(addr).await;
    ads.send(DiscoveryRequest { node: node("envoy-3", "default"), ..Default::default() }).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "request without a type_url");

    // A type URL that is not a type.
    let mut ads = Ads::open(addr).await;
    ads.send(DiscoveryRequest { type_url: "example.com/Nope".into(), ..hello("envoy-4", "default", CDS, &[]) }).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("example.com/Nope"), "{status:?}");

    // The well-behaved stream still works, and only it is listed.
    assert!(state.publish(snapshot(C_ADDED)));
    assert_eq!(names(&bystander.recv_kind(CDS).await), ["a", "b", "c"]);
    let doc = status_until(&state, "only the well-behaved node", |d| {
        d["nodes"].as_array().is_some_and(|n| n.len() == 1 && n[0]["id"] == "envoy-ok")
    })
    .await;
    assert_eq!(doc["nodes"][0]["cluster"], "default");
    let metrics = state.metrics.render();
    assert!(metrics.contains("legate_stream_errors_total 5"), "{metrics}");
    assert!(metrics.contains("legate_connected_proxies 1"), "{metrics}");
}

#[tokio::test]
async fn types_legate_does_not_serve_are_ignored() {
    let (addr, _state) = serve(BASE).await;
    let mut ads = Ads::open(addr).await;
    let ecds = DiscoveryRequest {
        type_url: "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig".into(),
        ..hello("envoy-1", "default", CDS, &["filter"])
    };
    ads.send(ecds).await;
    ads.quiet().await;
    ads.send(request(CDS, &[], "", "")).await;
    assert_eq!(names(&ads.recv_kind(CDS).await), ["a", "b"]);
}

// ------------------------------------------------------------ delta xDS

fn delta(kind: Kind, subscribe: &[&str], unsubscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: kind.type_url().to_owned(),
        resource_names_subscribe: subscribe.iter().map(|&n| n.to_owned()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|&n| n.to_owned()).collect(),
        ..Default::default()
    }
}

fn delta_hello(id: &str, kind: Kind, subscribe: &[&str]) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest { node: node(id, "default"), ..delta(kind, subscribe, &[]) }
}

fn delta_ack(resp: &DeltaDiscoveryResponse) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        response_nonce: resp.nonce.clone(),
        ..delta(Kind::from_type_url(&resp.type_url).expect("a served type"), &[], &[])
    }
}

/// Names of the resources a delta response puts, checked against the
/// resources themselves (name, type, version).
fn put(resp: &DeltaDiscoveryResponse) -> Vec<String> {
    resp.resources
        .iter()
        .map(|r| {
            let any = r.resource.as_ref().expect("a resource body");
            assert_eq!(any.type_url, resp.type_url, "every resource is of the response's type");
            assert_eq!(r.version.len(), 16, "every resource has its own version (64 bits of a SHA-256)");
            let named = names(&DiscoveryResponse {
                type_url: resp.type_url.clone(),
                resources: vec![any.clone()],
                ..Default::default()
            });
            assert_eq!(named, std::slice::from_ref(&r.name), "the resource is the one named");
            r.name.clone()
        })
        .collect()
}

/// What the proxy holds after `resps`: name → version.
fn holdings(resps: &[&DeltaDiscoveryResponse]) -> std::collections::HashMap<String, String> {
    let mut held = std::collections::HashMap::new();
    for resp in resps {
        held.extend(resp.resources.iter().map(|r| (r.name.clone(), r.version.clone())));
        for n in &resp.removed_resources {
            held.remove(n);
        }
    }
    held
}

/// Everything in BASE fetched the way Envoy does it over delta, all ACKed.
async fn delta_sync_base(ads: &mut Delta, id: &str) -> [DeltaDiscoveryResponse; 4] {
    ads.send(delta_hello(id, CDS, &[])).await;
    ads.send(delta(LDS, &[], &[])).await;
    let cds = ads.recv_kind(CDS).await;
    ads.send(delta(EDS, &["a", "b"], &[])).await;
    let eds = ads.recv_kind(EDS).await;
    ads.send(delta_ack(&cds)).await;
    ads.send(delta_ack(&eds)).await;
    let lds = ads.recv_kind(LDS).await;
    ads.send(delta(RDS, &["public"], &[])).await;
    ads.send(delta_ack(&lds)).await;
    let rds = ads.recv_kind(RDS).await;
    ads.send(delta_ack(&rds)).await;
    ads.quiet().await;
    [cds, eds, lds, rds]
}

#[tokio::test]
async fn delta_first_fetch_has_per_resource_versions_and_acks_show_in_status() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    let [cds, eds, lds, rds] = delta_sync_base(&mut ads, "envoy-d").await;
    let view = state.current().expect("published").view("default");
    assert_eq!(put(&cds), ["a", "b"]);
    assert_eq!(put(&eds), ["a", "b"]);
    assert_eq!(put(&lds), ["public"]);
    assert_eq!(put(&rds), ["public"]);
    assert_eq!(cds.resources[1].version, view.resources(CDS)["b"].version());
    let nonces: std::collections::BTreeSet<_> = [&cds, &eds, &lds, &rds].iter().map(|r| r.nonce.clone()).collect();
    assert_eq!(nonces.len(), 4, "a fresh nonce per response");

    let doc = status_until(&state, "the delta node's ACKs", |d| {
        node_resource(d, "envoy-d", RDS).is_some_and(|r| r["acked_version"] == view.version(RDS))
    })
    .await;
    assert_eq!(doc["nodes"][0]["protocol"], "delta");
    for kind in [CDS, EDS, LDS] {
        let r = node_resource(&doc, "envoy-d", kind).expect("listed");
        assert_eq!(r["acked_version"], view.version(kind), "{kind}: the same version SotW would show");
    }
}

#[tokio::test]
async fn delta_pushes_only_what_changed_and_removes_clusters_after_their_routes() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    delta_sync_base(&mut ads, "envoy-d").await;

    assert!(state.publish(snapshot(B_REPLACED_BY_C)));
    let cds = ads.recv_kind(CDS).await;
    assert_eq!((put(&cds), cds.removed_resources.clone()), (vec!["c".to_owned()], vec![]), "`b` stays for now");
    ads.send(delta(EDS, &["c"], &[])).await;
    let eds = ads.recv_kind(EDS).await;
    assert_eq!(put(&eds), ["c"]);
    ads.send(delta_ack(&eds)).await;
    ads.send(delta_ack(&cds)).await;
    let lds = ads.recv_kind(LDS).await;
    assert_eq!(put(&lds), ["public"], "the port changed");
    ads.send(delta_ack(&lds)).await;
    let rds = ads.recv_kind(RDS).await;
    assert_eq!(put(&rds), ["public"]);
    ads.quiet().await;
    ads.send(delta_ack(&rds)).await;
    let removal = ads.recv_kind(CDS).await;
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["b"], "removed once the routes that used it are replaced");
    // As Envoy does: dropping the cluster drops its endpoints' subscription, then the ACK.
    ads.send(delta(EDS, &[], &["b"])).await;
    ads.send(delta_ack(&removal)).await;
    ads.quiet().await;

    let view = state.current().expect("published").view("default");
    status_until(&state, "the new clusters ACKed", |d| {
        node_resource(d, "envoy-d", CDS).is_some_and(|r| r["acked_version"] == view.version(CDS))
    })
    .await;
}

#[tokio::test]
async fn delta_nack_is_recorded_and_not_answered_by_resending() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    ads.send(delta_hello("envoy-d", CDS, &[])).await;
    let cds = ads.recv_kind(CDS).await;
    let acked_before = cds.system_version_info.clone();
    ads.send(DeltaDiscoveryRequest {
        error_detail: Some(RpcStatus { code: 3, message: "cluster a: bad".into(), details: vec![] }),
        ..delta_ack(&cds)
    })
    .await;
    ads.quiet().await;
    let doc =
        status_until(&state, "the NACK", |d| node_resource(d, "envoy-d", CDS).is_some_and(|r| !r["nack"].is_null()))
            .await;
    let r = node_resource(&doc, "envoy-d", CDS).expect("listed");
    assert_eq!(r["nack"]["message"], "cluster a: bad");
    assert_eq!(r["nack"]["version"], acked_before.as_str());
    assert!(r["acked_version"].is_null(), "{r}");
    assert!(state.metrics.render().contains("legate_nacks_total{type=\"cds\"} 1"));

    // The next change is sent, and its ACK clears the NACK.
    assert!(state.publish(snapshot(C_ADDED)));
    let next = ads.recv_kind(CDS).await;
    assert_eq!(put(&next), ["c"]);
    ads.send(delta_ack(&next)).await;
    status_until(&state, "the NACK cleared", |d| node_resource(d, "envoy-d", CDS).is_some_and(|r| r["nack"].is_null()))
        .await;
}

#[tokio::test]
async fn delta_stale_nonce_acks_nothing_but_its_subscription_change_counts() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    let [_, eds, ..] = delta_sync_base(&mut ads, "envoy-d").await;
    assert!(state.publish(snapshot(&BASE.replace("10.0.0.1", "10.0.0.7").replace("10.0.0.2", "10.0.0.8"))));
    let changed = ads.recv_kind(EDS).await;
    assert_eq!(put(&changed), ["a", "b"]);
    // An answer to the old EDS response, unsubscribing `b`: no ACK, but `b` is dropped.
    ads.send(DeltaDiscoveryRequest { response_nonce: eds.nonce.clone(), ..delta(EDS, &[], &["b"]) }).await;
    ads.quiet().await;
    ads.send(delta_ack(&changed)).await;
    assert!(state.publish(snapshot(&BASE.replace("10.0.0.1", "10.0.0.5").replace("10.0.0.2", "10.0.0.6"))));
    let next = ads.recv_kind(EDS).await;
    assert_eq!(put(&next), ["a"], "`b` was unsubscribed by the stale-nonce request");
}

#[tokio::test]
async fn delta_wildcard_subscribe_unsubscribe_and_names_before_they_exist() {
    let (addr, state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    ads.send(delta_hello("envoy-d", CDS, &["*"])).await;
    let cds = ads.recv_kind(CDS).await;
    assert_eq!(put(&cds), ["a", "b"], "`*` is every cluster");
    ads.send(delta_ack(&cds)).await;

    // Endpoints for `c`, which does not exist yet: said so, then sent when it appears.
    ads.send(delta(EDS, &["a", "c"], &[])).await;
    let eds = ads.recv_kind(EDS).await;
    assert_eq!((put(&eds), eds.removed_resources.clone()), (vec!["a".to_owned()], vec!["c".to_owned()]));
    ads.send(delta_ack(&eds)).await;
    ads.quiet().await;
    assert!(state.publish(snapshot(C_ADDED)));
    let cds = ads.recv_kind(CDS).await;
    assert_eq!(put(&cds), ["c"]);
    let eds = ads.recv_kind(EDS).await;
    assert_eq!((put(&eds), eds.removed_resources.clone()), (vec!["c".to_owned()], vec![]), "sent once it exists");
    ads.send(delta_ack(&cds)).await;
    ads.send(delta_ack(&eds)).await;

    // Unsubscribed: not sent; subscribed again: sent again.
    ads.send(delta(EDS, &[], &["c"])).await;
    ads.quiet().await;
    ads.send(delta(EDS, &["c"], &[])).await;
    let again = ads.recv_kind(EDS).await;
    assert_eq!(put(&again), ["c"]);
    ads.send(delta_ack(&again)).await;

    // Leaving the wildcard for one name.
    ads.send(delta(CDS, &["a"], &["*"])).await;
    let a = ads.recv_kind(CDS).await;
    assert_eq!(put(&a), ["a"]);
}

#[tokio::test]
async fn delta_reconnect_sends_only_what_differs_and_removes_what_is_gone() {
    let (addr, _state) = serve(BASE).await;
    let mut ads = Delta::open(addr).await;
    let [cds, eds, lds, rds] = delta_sync_base(&mut ads, "envoy-d").await;
    drop(ads);

    // Another replica (or a restarted legate) with the same files: nothing to send.
    let (same, same_state) = serve(BASE).await;
    let mut again = Delta::open(same).await;
    again
        .send(DeltaDiscoveryRequest {
            initial_resource_versions: holdings(&[&cds]),
            ..delta_hello("envoy-d", CDS, &[])
        })
        .await;
    again.send(DeltaDiscoveryRequest { initial_resource_versions: holdings(&[&lds]), ..delta(LDS, &[], &[]) }).await;
    again
        .send(DeltaDiscoveryRequest { initial_resource_versions: holdings(&[&eds]), ..delta(EDS, &["a", "b"], &[]) })
        .await;
    again
        .send(DeltaDiscoveryRequest { initial_resource_versions: holdings(&[&rds]), ..delta(RDS, &["public"], &[]) })
        .await;
    again.quiet().await;
    let view = same_state.current().expect("published").view("default");
    status_until(&same_state, "the reconnected node's versions", |d| {
        [CDS, EDS, LDS, RDS]
            .iter()
            .all(|&k| node_resource(d, "envoy-d", k).is_some_and(|r| r["acked_version"] == view.version(k)))
    })
    .await;

    // A replica with changed files: `b` gone, `c` new; only that moves.
    let (changed, _) = serve(B_REPLACED_BY_C).await;
    let mut moved = Delta::open(changed).await;
    moved
        .send(DeltaDiscoveryRequest {
            initial_resource_versions: holdings(&[&cds]),
            ..delta_hello("envoy-d", CDS, &[])
        })
        .await;
    let cds2 = moved.recv_kind(CDS).await;
    assert_eq!(put(&cds2), ["c"], "`a` is unchanged and not resent");
    assert_eq!(cds2.removed_resources, ["b"], "what no longer exists is removed");
}

#[tokio::test]
async fn delta_protocol_violations_and_garbage_end_only_that_stream() {
    let (addr, state) = serve(BASE).await;
    let mut bystander = Delta::open(addr).await;
    bystander.send(delta_hello("envoy-ok", CDS, &[])).await;
    let first = bystander.recv_kind(CDS).await;
    bystander.send(delta_ack(&first)).await;

    let mut ads = Delta::open(addr).await;
    ads.send(delta_hello("envoy-1", CDS, &[])).await;
    ads.recv_kind(CDS).await;
    ads.send(DeltaDiscoveryRequest { response_nonce: "99".into(), ..delta(CDS, &[], &[]) }).await;
    let status = ads.ended().await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "response_nonce `99` was never sent on this stream");

    let mut ads = Delta::open(addr).await;
    ads.send(delta(CDS, &[], &[])).await;
    let status = ads.ended().await;
    assert_eq!(status.message(), "the first request on a stream must carry node.id");

    let (_tx, mut garbage) = raw_stream_at(addr, DELTA_PATH, vec![Bytes::from_static(&[0x0f, 0xff, 0xff, 0xff])]).await;
    let status = match timeout(WAIT, garbage.message()).await.expect("the garbage stream did not end") {
        Err(status) => status,
        Ok(other) => panic!("expected an error status, got {other:?}"),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("unreadable request"), "{status:?}");

    assert!(state.publish(snapshot(C_ADDED)));
    assert_eq!(put(&bystander.recv_kind(CDS).await), ["c"]);
    assert!(state.metrics.render().contains("legate_stream_errors_total 3"));
}

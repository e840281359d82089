//! Responses as they go on the wire, and the gRPC service that sends them.
//!
//! Every resource of a snapshot is encoded once ([`Resource`]); each stream's
//! response is a [`Push`]: shared handles to those resources plus the few
//! bytes that are the stream's own (version, nonce, type, removed names).
//! A `Push` encodes itself as a `DiscoveryResponse` or
//! `DeltaDiscoveryResponse` by writing each resource's pre-encoded entry
//! (built once per snapshot and protocol, on first use), so a push to N
//! proxies neither copies nor re-encodes resources per stream, and a queued
//! response costs a vector of pointers.
//!
//! tonic's generated ADS server fixes the response types to the prost
//! structs, so [`AdsServer`] is the same dispatch written for [`Push`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::Message;
use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic_prost::ProstCodec;

use crate::snapshot::{Kind, Resource};

/// One response to one stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    /// Delta (`DeltaDiscoveryResponse`) or SotW (`DiscoveryResponse`).
    pub delta: bool,
    /// The type.
    pub kind: Kind,
    /// `version_info` (SotW) or `system_version_info` (delta).
    pub version: String,
    /// This response's nonce.
    pub nonce: String,
    /// The resources it carries, shared with every other stream.
    pub resources: Vec<Arc<Resource>>,
    /// Delta only: names removed or reported absent.
    pub removed: Vec<String>,
}

// Field numbers, the same in DiscoveryResponse and DeltaDiscoveryResponse
// (resources are `Any` in one and `Resource` in the other, both field 2).
const VERSION: u32 = 1;
const TYPE_URL: u32 = 4;
const NONCE: u32 = 5;
const REMOVED: u32 = 6;

impl Push {
    fn entry<'r>(&self, r: &'r Resource) -> &'r [u8] {
        if self.delta {
            r.delta_entry()
        } else {
            r.sotw_entry()
        }
    }

    /// The prost message this encodes as, for tests and tools.
    ///
    /// # Panics
    /// If the encoding were not a valid `DiscoveryResponse` (a bug).
    #[must_use]
    pub fn to_sotw(&self) -> DiscoveryResponse {
        assert!(!self.delta, "a delta push is not a DiscoveryResponse");
        DiscoveryResponse::decode(self.encode_to_vec().as_slice()).expect("a Push encodes a DiscoveryResponse")
    }

    /// The prost message this encodes as, for tests and tools.
    ///
    /// # Panics
    /// If the encoding were not a valid `DeltaDiscoveryResponse` (a bug).
    #[must_use]
    pub fn to_delta(&self) -> DeltaDiscoveryResponse {
        assert!(self.delta, "a SotW push is not a DeltaDiscoveryResponse");
        DeltaDiscoveryResponse::decode(self.encode_to_vec().as_slice())
            .expect("a Push encodes a DeltaDiscoveryResponse")
    }
}

impl Message for Push {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.version.is_empty() {
            encoding::string::encode(VERSION, &self.version, buf);
        }
        for r in &self.resources {
            buf.put_slice(self.entry(r));
        }
        encoding::string::encode(TYPE_URL, &self.kind.type_url().to_owned(), buf);
        encoding::string::encode(NONCE, &self.nonce, buf);
        for name in &self.removed {
            encoding::string::encode(REMOVED, name, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Only ever sent, never read: skip whatever it is.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let version = if self.version.is_empty() { 0 } else { encoding::string::encoded_len(VERSION, &self.version) };
        let resources: usize = self.resources.iter().map(|r| self.entry(r).len()).sum();
        let type_url = encoding::key_len(TYPE_URL)
            + encoding::encoded_len_varint(self.kind.type_url().len() as u64)
            + self.kind.type_url().len();
        version
            + resources
            + type_url
            + encoding::string::encoded_len(NONCE, &self.nonce)
            + encoding::string::encoded_len_repeated(REMOVED, &self.removed)
    }

    fn clear(&mut self) {
        self.version.clear();
        self.nonce.clear();
        self.resources.clear();
        self.removed.clear();
    }
}

/// Field 2 of a response holding `msg`: key, length, message.
pub(crate) fn entry(msg: &impl Message) -> Vec<u8> {
    let mut buf = Vec::with_capacity(msg.encoded_len() + 8);
    encoding::message::encode(2, msg, &mut buf);
    buf
}

/// What the ADS gRPC service calls for each stream.
pub trait Streams: Send + Sync + 'static {
    /// A SotW stream: requests in, pushes out.
    fn sotw(&self, request: tonic::Request<tonic::Streaming<DiscoveryRequest>>) -> PushStream;
    /// A delta stream.
    fn delta(&self, request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>) -> PushStream;
}

/// The responses of one stream.
pub type PushStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Push, tonic::Status>> + Send>>;

const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// `envoy.service.discovery.v3.AggregatedDiscoveryService` over [`Push`].
#[derive(Debug)]
pub struct AdsServer<S> {
    streams: Arc<S>,
    max_decoding_message_size: usize,
}

impl<S> Clone for AdsServer<S> {
    fn clone(&self) -> Self {
        AdsServer { streams: Arc::clone(&self.streams), max_decoding_message_size: self.max_decoding_message_size }
    }
}

impl<S: Streams> AdsServer<S> {
    /// Serve `streams`, reading requests of up to `max_decoding_message_size` bytes.
    pub fn new(streams: S, max_decoding_message_size: usize) -> Self {
        AdsServer { streams: Arc::new(streams), max_decoding_message_size }
    }
}

impl<S> NamedService for AdsServer<S> {
    const NAME: &'static str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
}

/// One method of the service.
struct Method<S, F>(Arc<S>, F);

impl<S, R, F> StreamingService<R> for Method<S, F>
where
    S: Streams,
    R: Send + 'static,
    F: Fn(&S, tonic::Request<tonic::Streaming<R>>) -> PushStream,
{
    type Response = Push;
    type ResponseStream = PushStream;
    type Future = std::future::Ready<Result<tonic::Response<PushStream>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<R>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new((self.1)(&self.0, request))))
    }
}

impl<S, B> Service<http::Request<B>> for AdsServer<S>
where
    S: Streams,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let streams = Arc::clone(&self.streams);
        let limit = Some(self.max_decoding_message_size);
        match req.uri().path() {
            SOTW_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Push, DiscoveryRequest>::default())
                    .apply_max_message_size_config(limit, None);
                Ok(grpc.streaming(Method(streams, S::sotw), req).await)
            }),
            DELTA_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::<Push, DeltaDiscoveryRequest>::default())
                    .apply_max_message_size_config(limit, None);
                Ok(grpc.streaming(Method(streams, S::delta), req).await)
            }),
            _ => Box::pin(async move { Ok(tonic::Status::unimplemented("no such method").into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Vec<Arc<Resource>> {
        let yaml = include_str!("../../tests/fixtures/xds/base.yaml");
        let policy = crate::policy::load_texts(&[("gateway.yaml".to_owned(), yaml.to_owned())]).expect("valid");
        let snapshot = crate::translate::translate(&policy);
        snapshot.all().resources(Kind::Cluster).values().cloned().collect()
    }

    #[test]
    fn a_sotw_push_encodes_exactly_as_prost_would() {
        let push = Push {
            delta: false,
            kind: Kind::Cluster,
            version: "v1".into(),
            nonce: "7".into(),
            resources: resources(),
            removed: vec![],
        };
        let bytes = push.encode_to_vec();
        assert_eq!(bytes.len(), push.encoded_len());
        let decoded = push.to_sotw();
        assert_eq!(decoded.encode_to_vec(), bytes, "byte for byte what prost makes of the same response");
        assert_eq!(decoded.resources, push.resources.iter().map(|r| r.any.clone()).collect::<Vec<_>>());
        assert_eq!((decoded.version_info.as_str(), decoded.nonce.as_str()), ("v1", "7"));
        assert_eq!(decoded.type_url, Kind::Cluster.type_url());
    }

    #[test]
    fn a_delta_push_carries_names_versions_and_removals() {
        let push = Push {
            delta: true,
            kind: Kind::Cluster,
            version: "v2".into(),
            nonce: "8".into(),
            resources: resources(),
            removed: vec!["gone".into(), "never-was".into()],
        };
        let bytes = push.encode_to_vec();
        assert_eq!(bytes.len(), push.encoded_len());
        let decoded = push.to_delta();
        let names: Vec<_> = decoded.resources.iter().map(|r| (r.name.as_str(), r.version.as_str())).collect();
        let expected: Vec<_> = push.resources.iter().map(|r| (r.name.as_str(), r.version())).collect();
        assert_eq!(names, expected);
        assert_eq!(decoded.resources[0].resource.as_ref(), Some(&push.resources[0].any));
        assert_eq!(decoded.removed_resources, ["gone", "never-was"]);
        assert_eq!((decoded.system_version_info.as_str(), decoded.nonce.as_str()), ("v2", "8"));
        let mut again = Vec::new();
        decoded.encode(&mut again).expect("encode");
        assert_eq!(again.len(), bytes.len());
    }

    #[test]
    fn entries_are_encoded_once_and_shared() {
        let r = resources().remove(0);
        let first = r.sotw_entry().as_ptr();
        assert_eq!(r.sotw_entry().as_ptr(), first, "the same bytes, not a new encoding");
        assert_eq!(r.delta_entry().as_ptr(), r.delta_entry().as_ptr());
    }
}

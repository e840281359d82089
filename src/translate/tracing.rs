//! `defaults.tracing` → Envoy's OpenTelemetry tracer on every HTTP
//! connection manager, exporting over OTLP/gRPC to the collector through a
//! cluster legate adds for it (`otel:<host>:<port>`, HTTP/2).
//!
//! `x-request-id` needs nothing here: Envoy generates it at the edge for
//! every request (replacing one a client sent) and passes it upstream.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    grpc_service::{EnvoyGrpc, TargetSpecifier},
    GrpcService, Http2ProtocolOptions,
};
use envoy_types::pb::envoy::config::trace::v3::{tracing::http, tracing::Http, OpenTelemetryConfig};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options::{explicit_http_config::ProtocolConfig, ExplicitHttpConfig, UpstreamProtocolOptions},
    HttpProtocolOptions,
};
use envoy_types::pb::envoy::r#type::v3::Percent;

use super::any;
use crate::policy::{Policy, Service, Tracing};

fn cluster_name(t: &Tracing) -> String {
    format!("otel:{}:{}", t.collector.host, t.collector.port)
}

/// The collector, as a service the cluster code builds.
pub(super) fn collector_service(policy: &Policy) -> Option<Service> {
    let t = policy.tracing.as_ref()?;
    Some(Service::internal(cluster_name(t), t.collector.clone(), false, std::time::Duration::from_secs(5)))
}

/// OTLP is gRPC: the collector's cluster speaks HTTP/2.
pub(super) fn http2(cluster: &mut Cluster) {
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
            protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions::default())),
        })),
        ..Default::default()
    };
    cluster
        .typed_extension_protocol_options
        .insert("envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(), any(&options));
}

/// The HCM's `tracing`.
pub(super) fn hcm_tracing(policy: &Policy) -> Option<http_connection_manager::Tracing> {
    let t = policy.tracing.as_ref()?;
    let config = OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                cluster_name: cluster_name(t),
                ..Default::default()
            })),
            ..Default::default()
        }),
        service_name: t.service_name.clone(),
        ..Default::default()
    };
    Some(http_connection_manager::Tracing {
        random_sampling: Some(Percent { value: t.sampling }),
        provider: Some(Http {
            name: "envoy.tracers.opentelemetry".into(),
            config_type: Some(http::ConfigType::TypedConfig(any(&config))),
        }),
        ..Default::default()
    })
}

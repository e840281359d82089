//! `services` → CDS clusters and EDS load assignments.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, transport_socket, Address, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;

use super::{ads, any, proto_duration, resilience};
use crate::policy::{Discovery, LoadBalancing, Policy, Service};

/// One cluster per service, named after it, and one per remote JWKS host.
pub(super) fn clusters(policy: &Policy, jwks: &[Service]) -> Vec<Cluster> {
    policy.services.values().chain(jwks).map(cluster).collect()
}

/// Load assignments for the EDS clusters (those with IP endpoints).
pub(super) fn load_assignments(policy: &Policy, jwks: &[Service]) -> Vec<ClusterLoadAssignment> {
    policy.services.values().chain(jwks).filter(|s| s.discovery == Discovery::Eds).map(load_assignment).collect()
}

fn cluster(s: &Service) -> Cluster {
    let Service {
        name,
        endpoints: _,
        discovery,
        tls,
        connect_timeout,
        timeout: _,
        load_balancing,
        hash_key: _,
        retries: _,
        circuit_breaker,
        outlier_detection,
        health_check,
        request_headers: _,
        response_headers: _,
        auth: _,
        rate_limit: _,
        ip_restriction: _,
    } = s;
    let (kind, eds, inline) = match discovery {
        Discovery::Eds => {
            (DiscoveryType::Eds, Some(EdsClusterConfig { eds_config: Some(ads()), service_name: String::new() }), None)
        }
        Discovery::StrictDns => (DiscoveryType::StrictDns, None, Some(load_assignment(s))),
        Discovery::LogicalDns => (DiscoveryType::LogicalDns, None, Some(load_assignment(s))),
    };
    let lb = match load_balancing {
        LoadBalancing::RoundRobin => LbPolicy::RoundRobin,
        LoadBalancing::LeastRequest => LbPolicy::LeastRequest,
        LoadBalancing::Random => LbPolicy::Random,
        LoadBalancing::RingHash => LbPolicy::RingHash,
    };
    // SNI carries a host name; RFC 6066 does not allow an IP address there.
    let sni = s.endpoints.first().filter(|e| e.host.parse::<std::net::IpAddr>().is_err()).map(|e| e.host.clone());
    Cluster {
        name: name.clone(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(kind.into())),
        eds_cluster_config: eds,
        load_assignment: inline,
        connect_timeout: Some(proto_duration(*connect_timeout)),
        lb_policy: lb.into(),
        dns_lookup_family: if *discovery == Discovery::Eds { 0 } else { DnsLookupFamily::V4Preferred.into() },
        circuit_breakers: circuit_breaker.as_ref().map(resilience::circuit_breakers),
        outlier_detection: outlier_detection.as_ref().map(resilience::outlier_detection),
        health_checks: health_check.iter().map(resilience::health_check).collect(),
        transport_socket: tls.then(|| TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(&UpstreamTlsContext {
                sni: sni.unwrap_or_default(),
                ..Default::default()
            }))),
        }),
        ..Default::default()
    }
}

fn load_assignment(s: &Service) -> ClusterLoadAssignment {
    let lb_endpoints = s
        .endpoints
        .iter()
        .map(|e| LbEndpoint {
            host_identifier: Some(HostIdentifier::Endpoint(EnvoyEndpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: e.host.clone(),
                        port_specifier: Some(PortSpecifier::PortValue(u32::from(e.port))),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: s.name.clone(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

//! `services` → CDS clusters and EDS load assignments.

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, DnsLookupFamily, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{
    address, socket_address::PortSpecifier, transport_socket, Address, SocketAddress, TransportSocket,
};
use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint::HostIdentifier, ClusterLoadAssignment, Endpoint as EnvoyEndpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context::{CombinedCertificateValidationContext, ValidationContextType},
    secret,
    subject_alt_name_matcher::SanType,
    CertificateValidationContext, CommonTlsContext, SdsSecretConfig, Secret, SubjectAltNameMatcher, UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};

use envoy_types::pb::google::protobuf::UInt32Value;

use super::{ads, any, proto_duration, resilience};
use crate::policy::{Backend, Discovery, HostRewrite, LoadBalancing, Policy, Service, UpstreamTls, Verify};

/// The SDS secret holding the Mozilla roots, which https services'
/// certificates chain to unless their `tls.ca` says otherwise.
pub(super) const ROOTS_SECRET: &str = "legate:mozilla-roots";

/// One cluster per service, named after it, and one per remote JWKS host.
pub(super) fn clusters(policy: &Policy, jwks: &[Service]) -> Vec<Cluster> {
    let named = auto_host_services(policy);
    policy.services.values().chain(jwks).map(|s| cluster(s, named.contains(s.name.as_str()))).collect()
}

/// Services some route sends to with `auto_host`: their endpoints carry
/// the host name Envoy sends as Host.
fn auto_host_services(policy: &Policy) -> std::collections::BTreeSet<&str> {
    let mut out = std::collections::BTreeSet::new();
    for r in policy.routes.iter().filter(|r| r.host_rewrite == Some(HostRewrite::Endpoint)) {
        match &r.backend {
            Backend::Service(s) => {
                out.insert(s.as_str());
            }
            Backend::Split(targets) => out.extend(targets.iter().map(|(s, _)| s.as_str())),
            Backend::Aggregation(_) | Backend::Respond { .. } => {}
        }
    }
    out
}

/// Load assignments for the EDS clusters (those with IP endpoints).
pub(super) fn load_assignments(policy: &Policy, jwks: &[Service]) -> Vec<ClusterLoadAssignment> {
    let named = auto_host_services(policy);
    policy
        .services
        .values()
        .chain(jwks)
        .filter(|s| s.discovery == Discovery::Eds)
        .map(|s| load_assignment(s, named.contains(s.name.as_str())))
        .collect()
}

fn cluster(s: &Service, host_names: bool) -> Cluster {
    let Service {
        name,
        endpoints: _,
        discovery,
        tls,
        connect_timeout,
        timeout: _,
        idle_timeout: _,
        max_request_body: _,
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
        Discovery::StrictDns => (DiscoveryType::StrictDns, None, Some(load_assignment(s, host_names))),
        Discovery::LogicalDns => (DiscoveryType::LogicalDns, None, Some(load_assignment(s, host_names))),
    };
    let lb = match load_balancing {
        LoadBalancing::RoundRobin => LbPolicy::RoundRobin,
        LoadBalancing::LeastRequest => LbPolicy::LeastRequest,
        LoadBalancing::Random => LbPolicy::Random,
        LoadBalancing::RingHash => LbPolicy::RingHash,
    };
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
        transport_socket: tls.as_ref().map(transport_socket),
        ..Default::default()
    }
}

/// TLS to a service: SNI (a host name: RFC 6066 allows no IP address
/// there), and unless `verify: false`, a certificate that chains to its CAs
/// (an SDS secret shared by the clusters that trust the same ones) and
/// holds its name.
fn transport_socket(tls: &UpstreamTls) -> TransportSocket {
    let is_ip = |n: &str| n.parse::<std::net::IpAddr>().is_ok();
    let sni = tls.name.clone().filter(|n| !is_ip(n)).unwrap_or_default();
    let secret = match &tls.verify {
        Verify::Roots => Some(ROOTS_SECRET.to_owned()),
        Verify::Ca { secret, .. } => Some(secret.clone()),
        Verify::Off => None,
    };
    let common_tls_context = secret.map(|secret| CommonTlsContext {
        validation_context_type: Some(ValidationContextType::CombinedValidationContext(
            CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_typed_subject_alt_names: tls
                        .name
                        .iter()
                        .map(|n| SubjectAltNameMatcher {
                            san_type: if is_ip(n) { SanType::IpAddress } else { SanType::Dns }.into(),
                            matcher: Some(StringMatcher {
                                match_pattern: Some(MatchPattern::Exact(n.clone())),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }),
                validation_context_sds_secret_config: Some(SdsSecretConfig { name: secret, sds_config: Some(ads()) }),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&UpstreamTlsContext {
            sni,
            common_tls_context,
            ..Default::default()
        }))),
    }
}

/// The CA secrets `services` verify their certificates against, once each.
pub(super) fn ca_secrets<'a>(services: impl Iterator<Item = &'a Service>) -> Vec<Secret> {
    let mut out: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
    for t in services.filter_map(|s| s.tls.as_ref()) {
        match &t.verify {
            Verify::Roots => out.insert(ROOTS_SECRET, roots_pem()),
            Verify::Ca { secret, pem } => out.insert(secret, pem),
            Verify::Off => None,
        };
    }
    out.into_iter()
        .map(|(name, pem)| Secret {
            name: name.to_owned(),
            r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(data_source::Specifier::InlineString(pem.to_owned())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .collect()
}

/// The Mozilla roots as PEM, made once.
fn roots_pem() -> &'static str {
    static PEM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        let mut out = String::new();
        for cert in webpki_root_certs::TLS_SERVER_ROOT_CERTS {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            for line in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    });
    &PEM
}

/// A service's endpoints, with their weights; with `host_names`, each
/// with the name a route's `auto_host` sends as Host: its host, and its
/// port unless the scheme's default (as Kong and nginx send it).
fn load_assignment(s: &Service, host_names: bool) -> ClusterLoadAssignment {
    let default_port = if s.tls.is_some() { 443 } else { 80 };
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
                hostname: match (host_names, e.host.contains(':')) {
                    (false, _) => String::new(),
                    (true, _) if e.port == default_port => e.host.clone(),
                    (true, false) => format!("{}:{}", e.host, e.port),
                    (true, true) => format!("[{}]:{}", e.host, e.port),
                },
                ..Default::default()
            })),
            load_balancing_weight: (e.weight != 1).then_some(UInt32Value { value: e.weight }),
            ..Default::default()
        })
        .collect();
    ClusterLoadAssignment {
        cluster_name: s.name.clone(),
        endpoints: vec![LocalityLbEndpoints { lb_endpoints, ..Default::default() }],
        ..Default::default()
    }
}

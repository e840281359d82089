//! `listeners[].tls` → SDS secrets (the PEM inline, pushed over ADS, so an
//! Envoy needs no access to legate's files), TLS filter chains chosen by
//! SNI, and the plain-HTTP listener that redirects to https.

use envoy_types::pb::envoy::config::core::v3::{data_source, transport_socket, DataSource, TransportSocket};
use envoy_types::pb::envoy::config::listener::v3::{listener_filter, FilterChainMatch, ListenerFilter};
use envoy_types::pb::envoy::config::route::v3::{
    redirect_action::{RedirectResponseCode, SchemeRewriteSpecifier},
    route,
    route_match::PathSpecifier,
    RedirectAction, Route, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, tls_parameters::TlsProtocol, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    TlsCertificate, TlsParameters,
};

use super::{ads, any};
use crate::policy::{Certificate, Listener, ListenerTls, Policy, TlsVersion};

/// Every listener's certificates as SDS secrets.
pub(super) fn secrets(policy: &Policy) -> Vec<Secret> {
    let inline = |pem: &str| DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.to_owned())),
        ..Default::default()
    };
    policy
        .listeners
        .values()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| &t.certificates)
        .map(|c| Secret {
            name: c.secret.clone(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                certificate_chain: Some(inline(&c.cert_pem)),
                private_key: Some(inline(&c.key_pem)),
                ..Default::default()
            })),
        })
        .collect()
}

/// The filter-chain match and TLS transport socket of one certificate.
pub(super) fn chain_tls(tls: &ListenerTls, cert: &Certificate) -> (Option<FilterChainMatch>, TransportSocket) {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: match tls.min_version {
                    TlsVersion::V1_2 => TlsProtocol::TlSv12,
                    TlsVersion::V1_3 => TlsProtocol::TlSv13,
                }
                .into(),
                ..Default::default()
            }),
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: cert.secret.clone(),
                sds_config: Some(ads()),
            }],
            alpn_protocols: tls.alpn.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let matcher =
        (!cert.hosts.is_empty()).then(|| FilterChainMatch { server_names: cert.hosts.clone(), ..Default::default() });
    let socket = TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(&context))),
    };
    (matcher, socket)
}

/// The TLS inspector, which reads SNI for choosing a certificate.
pub(super) fn tls_inspector() -> ListenerFilter {
    ListenerFilter {
        name: "envoy.filters.listener.tls_inspector".into(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(any(&TlsInspector::default()))),
        ..Default::default()
    }
}

/// The name of the plain-HTTP listener that redirects to `l`: `:` cannot
/// occur in a listener name, so it never clashes with one.
pub(super) fn redirect_name(l: &Listener) -> String {
    format!("{}:http-redirect", l.name)
}

/// The redirect listener's routes, inline: every request answered with 301
/// to the same host and path on https and the TLS listener's port.
pub(super) fn redirect_routes(l: &Listener) -> RouteConfiguration {
    RouteConfiguration {
        name: redirect_name(l),
        virtual_hosts: vec![VirtualHost {
            name: redirect_name(l),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "https-redirect".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Redirect(RedirectAction {
                    scheme_rewrite_specifier: Some(SchemeRewriteSpecifier::HttpsRedirect(true)),
                    // Without it the Location keeps the plain port.
                    port_redirect: u32::from(l.port),
                    response_code: RedirectResponseCode::MovedPermanently.into(),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

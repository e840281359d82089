//! `listeners` → LDS listeners, each with an HTTP connection manager whose
//! routes come over RDS (a RouteConfiguration named after the listener).

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier, Address, SocketAddress};
use envoy_types::pb::envoy::config::listener::v3::{filter, Filter, FilterChain, Listener as EnvoyListener};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_connection_manager::{RouteSpecifier, ServerHeaderTransformation, UpgradeConfig},
    HttpConnectionManager, HttpFilter, Rds,
};
use envoy_types::pb::google::protobuf::BoolValue;

use super::{
    access_log, ads, any, api_keys, auth, basic_auth, body_limit, cors, ip_restriction, local_reply, query, ratelimit,
    tls, tracing,
};
use crate::policy::{Listener, Policy};

/// One Envoy listener per policy listener, and one more for each
/// `http_redirect_port`.
pub(super) fn listeners(policy: &Policy) -> Vec<EnvoyListener> {
    policy.listeners.values().flat_map(|l| std::iter::once(listener(policy, l)).chain(redirect_listener(l))).collect()
}

fn socket_address(address: &str, port: u16) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: address.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            // `::` means every address, IPv4 included (Envoy binds it IPv6-only otherwise).
            ipv4_compat: address.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.is_unspecified()),
            ..Default::default()
        })),
    })
}

fn hcm_filter(config: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

fn listener(policy: &Policy, l: &Listener) -> EnvoyListener {
    let Listener { name, address, port, hosts: _, fleets: _, tls: tls_config, http_redirect_port: _ } = l;
    let manager = hcm(policy, name);
    let (filter_chains, listener_filters) = match tls_config {
        None => (vec![FilterChain { filters: vec![hcm_filter(&manager)], ..Default::default() }], Vec::new()),
        Some(t) => {
            // One chain per certificate, chosen by SNI; the same HTTP handling in each.
            let chains: Vec<FilterChain> = t
                .certificates
                .iter()
                .map(|c| {
                    let (filter_chain_match, socket) = tls::chain_tls(t, c);
                    FilterChain {
                        filter_chain_match,
                        filters: vec![hcm_filter(&manager)],
                        transport_socket: Some(socket),
                        ..Default::default()
                    }
                })
                .collect();
            (chains, vec![tls::tls_inspector()])
        }
    };
    EnvoyListener {
        name: name.clone(),
        address: socket_address(address, *port),
        filter_chains,
        listener_filters,
        ..Default::default()
    }
}

/// The plain-HTTP listener of `http_redirect_port`, answering 301 to https.
fn redirect_listener(l: &Listener) -> Option<EnvoyListener> {
    let port = l.http_redirect_port?;
    let manager = HttpConnectionManager {
        stat_prefix: tls::redirect_name(l).replace(':', "_"),
        route_specifier: Some(RouteSpecifier::RouteConfig(tls::redirect_routes(l))),
        http_filters: vec![router()],
        ..Default::default()
    };
    Some(EnvoyListener {
        name: tls::redirect_name(l),
        address: socket_address(&l.address, port),
        filter_chains: vec![FilterChain { filters: vec![hcm_filter(&manager)], ..Default::default() }],
        ..Default::default()
    })
}

fn router() -> HttpFilter {
    super::http_filter("envoy.filters.http.router", any(&Router::default()))
}

fn hcm(policy: &Policy, listener: &str) -> HttpConnectionManager {
    // Order matters: CORS preflights answered first, identity headers
    // stripped, then the token verified (its claims are rate-limit keys),
    // then the limits, then routing.
    let mut http_filters = cors::http_filters(policy, listener);
    http_filters.extend(ip_restriction::http_filters(policy, listener));
    http_filters.extend(auth::http_filters(policy, listener));
    http_filters.extend(api_keys::http_filters(policy, listener));
    http_filters.extend(basic_auth::http_filters(policy, listener));
    http_filters.extend(ratelimit::http_filters(policy, listener));
    http_filters.extend(query::http_filters(policy, listener));
    http_filters.extend(body_limit::http_filters(policy, listener));
    http_filters.push(router());
    HttpConnectionManager {
        stat_prefix: listener.to_owned(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: listener.to_owned(),
        })),
        http_filters,
        local_reply_config: Some(local_reply::config()),
        access_log: access_log::access_logs(policy),
        tracing: tracing::hcm_tracing(policy),
        // An edge proxy: the peer address is the client, and paths are
        // normalized before routing so `/a/../admin` cannot dodge a route.
        use_remote_address: Some(BoolValue { value: true }),
        normalize_path: Some(BoolValue { value: true }),
        merge_slashes: true,
        // Envoy overwrites `Server` after the route's header changes by
        // default, so `response_headers` could neither remove nor set it.
        server_header_transformation: ServerHeaderTransformation::PassThrough.into(),
        // WebSocket handshakes pass through to the service on any route, as
        // Kong's and Traefik's routes pass them (Envoy refuses upgrades
        // unless told).
        upgrade_configs: vec![UpgradeConfig { upgrade_type: "websocket".into(), ..Default::default() }],
        ..Default::default()
    }
}

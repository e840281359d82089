//! `legate bootstrap`: the Envoy bootstrap that connects a proxy to legate
//! over ADS. Everything else Envoy needs arrives over that stream.

use serde_json::{json, Value};

/// The header every request of a proxy to legate carries (ADS, rate limits,
/// access logs), with the proxy's `node.id`: legate's rate-limit service
/// counts `scope: local` limits per proxy by it.
pub const NODE_HEADER: &str = "x-legate-node";

/// A node id as a header value: bytes outside visible ASCII (which a header
/// value may not hold) percent-encoded.
#[must_use]
pub fn node_header_value(node_id: &str) -> String {
    const UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b' ');
    percent_encoding::utf8_percent_encode(node_id, UNSAFE).to_string()
}

/// What the bootstrap says about the proxy and where legate runs.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// `node.id`, unique per proxy.
    pub node_id: String,
    /// `node.cluster`: the fleet the proxy belongs to.
    pub node_cluster: String,
    /// legate replicas as `host:port`.
    pub xds_addrs: Vec<(String, u16)>,
    /// Their aggregators as `host:port`.
    pub aggregator_addrs: Vec<(String, u16)>,
    /// Envoy's admin port on 127.0.0.1.
    pub admin_port: u16,
    /// Incremental (delta) xDS instead of state of the world.
    pub delta: bool,
}

/// The bootstrap as YAML that `envoy -c` accepts unchanged.
#[must_use]
pub fn bootstrap_yaml(o: &BootstrapOptions) -> String {
    let header = format!(
        "# Envoy bootstrap for node {} (fleet {}), made by `legate bootstrap`.\n# Listeners, routes, clusters and endpoints arrive over ADS from legate.\n",
        o.node_id, o.node_cluster
    );
    header + &serde_yaml::to_string(&bootstrap(o)).unwrap_or_default()
}

fn bootstrap(o: &BootstrapOptions) -> Value {
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let endpoints = |addrs: &[(String, u16)]| -> Vec<Value> {
        addrs
            .iter()
            .map(|(host, port)| json!({ "endpoint": { "address": { "socket_address": { "address": host, "port_value": port } } } }))
            .collect()
    };
    json!({
        "node": { "id": o.node_id, "cluster": o.node_cluster },
        "admin": { "address": { "socket_address": { "address": "127.0.0.1", "port_value": o.admin_port } } },
        // Envoy refuses a regex whose RE2 program is larger than 100
        // instructions unless told otherwise, so a route with a dozen hosts
        // (one regex over `:authority`) or a long header regex that legate
        // validated would be NACKed. RE2 matches in linear time whatever
        // the size; Envoy Gateway's bootstrap lifts the limit the same way.
        "layered_runtime": { "layers": [{ "name": "legate", "static_layer": {
            "re2.max_program_size.error_level": 4_294_967_295_u64,
            "re2.max_program_size.warn_level": 1000
        } }] },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if o.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": "legate_xds" } }],
                "set_node_on_first_message_only": true
            },
            "cds_config": ads,
            "lds_config": ads
        },
        "static_resources": {
            "clusters": [{
                "name": "legate_xds",
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "explicit_http_config": { "http2_protocol_options": {
                            "connection_keepalive": { "interval": "30s", "timeout": "5s" }
                        } },
                        // Which proxy is asking, on every request to legate.
                        "http_filters": [{
                            "name": "envoy.filters.http.header_mutation",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                                "mutations": { "request_mutations": [{ "append": {
                                    // A substitution format string: `%%` is one `%`.
                                    "header": { "key": NODE_HEADER, "value": node_header_value(&o.node_id).replace('%', "%%") },
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
                                } }] }
                            }
                        }, {
                            "name": "envoy.filters.http.upstream_codec",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"
                            }
                        }]
                    }
                },
                "load_assignment": { "cluster_name": "legate_xds", "endpoints": [{ "lb_endpoints": endpoints(&o.xds_addrs) }] }
            }, {
                // Routes of `aggregations` lead here. A replica that is down
                // is skipped: its connections fail fast and Envoy retries
                // another (the route's retry policy).
                "name": crate::aggregator::CLUSTER,
                "type": "STRICT_DNS",
                "connect_timeout": "1s",
                "outlier_detection": { "consecutive_local_origin_failure": 2, "split_external_local_origin_errors": true },
                "load_assignment": {
                    "cluster_name": crate::aggregator::CLUSTER,
                    "endpoints": [{ "lb_endpoints": endpoints(&o.aggregator_addrs) }]
                }
            }]
        }
    })
}

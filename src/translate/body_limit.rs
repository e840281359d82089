//! `max_request_body` → Envoy's buffer filter, off on every route but those
//! with a limit (its per-route `BufferPerRoute`). The body is read whole
//! before it goes upstream (as nginx, and so Kong, read it by default); a
//! larger one is answered 413 with the JSON error body.

use envoy_types::pb::envoy::extensions::filters::http::buffer::v3::{buffer_per_route, Buffer, BufferPerRoute};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::{Any, UInt32Value};

use super::any;
use crate::policy::{Policy, Route};

const FILTER: &str = "envoy.filters.http.buffer";

/// The buffer filter, off unless a route turns it on, when a route on
/// `listener` limits its body.
pub(super) fn http_filters(policy: &Policy, listener: &str) -> Vec<HttpFilter> {
    if !super::listener_needs(policy, listener, |r| r.max_request_body.is_some()) {
        return Vec::new();
    }
    // The listener-wide size is never used: every route that turns the
    // filter on brings its own.
    let config = Buffer { max_request_bytes: Some(UInt32Value { value: u32::MAX }) };
    vec![HttpFilter { disabled: true, ..super::http_filter(FILTER, any(&config)) }]
}

/// The route's limit.
pub(super) fn per_route(route: &Route) -> Option<(String, Any)> {
    let bytes = route.max_request_body?;
    let config = BufferPerRoute {
        r#override: Some(buffer_per_route::Override::Buffer(Buffer {
            max_request_bytes: Some(UInt32Value { value: bytes }),
        })),
    };
    Some((FILTER.to_owned(), any(&config)))
}

//! The words a policy key takes from a fixed set: validation checks values
//! against these lists, and the JSON Schema offers them to editors, so the
//! two can't disagree.

/// `services[].load_balancing`.
pub(crate) const LB_POLICIES: &[&str] = &["round_robin", "least_request", "random", "ring_hash"];
/// `retries.on`.
pub(crate) const RETRY_ON: &[&str] = &["5xx", "gateway-error", "reset", "connect-failure", "retriable-4xx"];
/// `rate_limits[].scope`.
pub(crate) const SCOPES: &[&str] = &["local", "global"];
/// The windows of `rate_limits[].limits`.
pub(crate) const WINDOWS: &[&str] = &["second", "minute", "hour", "day", "month", "year"];
/// `listeners[].tls.min_version`.
pub(crate) const TLS_VERSIONS: &[&str] = &["1.2", "1.3"];
/// `listeners[].tls.alpn`.
pub(crate) const ALPN: &[&str] = &["h2", "http/1.1"];

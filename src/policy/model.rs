//! The validated policy: every reference resolved, every duration and regex
//! checked. `translate` reads only this.

use std::collections::BTreeMap;
use std::time::Duration;

/// A whole, valid policy folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// By name.
    pub listeners: BTreeMap<String, Listener>,
    /// By name.
    pub services: BTreeMap<String, Service>,
    /// In match order: the first route that matches a request wins.
    pub routes: Vec<Route>,
}

/// Where Envoy listens.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Unique name; also the name of its RouteConfiguration.
    pub name: String,
    /// IP address to bind.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Virtual-host domains.
    pub hosts: Vec<String>,
    /// Only Envoys whose node.cluster is listed get this listener; `None` is all.
    pub fleets: Option<Vec<String>>,
}

/// An upstream service; becomes an Envoy cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    /// Unique name; also the cluster name.
    pub name: String,
    /// Where it runs.
    pub endpoints: Vec<Endpoint>,
    /// How Envoy finds the endpoints.
    pub discovery: Discovery,
    /// Talk TLS to the upstream (`https://` URLs).
    pub tls: bool,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Default request timeout of routes to this service.
    pub timeout: Option<Duration>,
    /// Load-balancing policy.
    pub load_balancing: LoadBalancing,
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

/// How Envoy resolves a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// IP endpoints pushed over EDS.
    Eds,
    /// Every DNS answer is an endpoint (several names or addresses).
    StrictDns,
    /// One DNS name, connect to the first answer.
    LogicalDns,
}

/// `load_balancing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadBalancing {
    /// `round_robin` (the default).
    #[default]
    RoundRobin,
    /// `least_request`.
    LeastRequest,
    /// `random`.
    Random,
    /// `ring_hash`.
    RingHash,
}

/// A route: a match and where matching requests go.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Unique name.
    pub name: String,
    /// The listener it is served on.
    pub listener: String,
    /// Path match.
    pub path: PathMatch,
    /// HTTP methods; empty means all.
    pub methods: Vec<String>,
    /// Header matches, all must hold.
    pub headers: Vec<ValueMatch>,
    /// Query-parameter matches, all must hold.
    pub query: Vec<ValueMatch>,
    /// Destination.
    pub backend: Backend,
    /// Path rewrite before forwarding.
    pub rewrite: Option<PathRewrite>,
    /// Host header rewrite before forwarding.
    pub host_rewrite: Option<String>,
    /// Request timeout (route, else service).
    pub timeout: Option<Duration>,
    /// Request header changes (route merged over service and defaults).
    pub request_headers: HeaderOps,
    /// Response header changes.
    pub response_headers: HeaderOps,
}

/// How a route matches the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Path starts with.
    Prefix(String),
    /// Path equals.
    Exact(String),
    /// Path matches the whole RE2 regex.
    Regex(String),
}

/// A header or query-parameter condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueMatch {
    /// Header or parameter name.
    pub name: String,
    /// What the value must be.
    pub rule: ValueRule,
}

/// What a matched value must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueRule {
    /// Equal to.
    Exact(String),
    /// Matching this RE2 regex.
    Regex(String),
    /// Present (true) or absent (false).
    Present(bool),
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// One service.
    Service(String),
    /// Weighted split between services.
    Split(Vec<(String, u32)>),
}

/// A path rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRewrite {
    /// Replace the matched prefix.
    Prefix(String),
    /// Regex substitution on the path.
    Regex {
        /// RE2 pattern.
        pattern: String,
        /// Replacement, with `\1` style groups.
        substitution: String,
    },
}

/// Headers to add (overwriting) and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Set these headers, replacing any value.
    pub add: std::collections::BTreeMap<String, String>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

impl HeaderOps {
    /// `over` applied on top of `self`: its adds win, removes accumulate.
    #[must_use]
    pub fn merged(&self, over: &HeaderOps) -> HeaderOps {
        let mut add = self.add.clone();
        add.extend(over.add.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut remove = self.remove.clone();
        for r in &over.remove {
            if !remove.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                remove.push(r.clone());
            }
        }
        // A header the more specific level adds is not removed by a general one.
        remove.retain(|r| !over.add.keys().any(|k| k.eq_ignore_ascii_case(r)));
        HeaderOps { add, remove }
    }
}

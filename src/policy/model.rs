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
    pub routes: Vec<std::sync::Arc<Route>>,
    /// JWT providers by name (`auth.jwt`).
    pub jwt_providers: BTreeMap<String, JwtProvider>,
    /// API key sets by name (`auth.api_keys`).
    pub api_keys: BTreeMap<String, ApiKeySet>,
    /// Basic user sets by name (`auth.basic`).
    pub basic_users: BTreeMap<String, BasicUserSet>,
    /// Rate-limit policies by name (`rate_limits`).
    pub rate_limits: BTreeMap<String, RateLimit>,
    /// Access logging (`defaults.access_log`).
    pub access_log: AccessLogging,
    /// Tracing (`defaults.tracing`); `None` is off.
    pub tracing: Option<Tracing>,
    /// Aggregations by name; each also has a route (with
    /// [`Backend::Aggregation`]) in `routes`.
    pub aggregations: BTreeMap<String, Aggregation>,
    /// Files besides the policy files that the policy was built from (JWKS
    /// files, certificates and keys): a change to one of them is a change to
    /// the policy.
    pub read_files: Vec<std::path::PathBuf>,
    /// Problems that do not stop the policy from loading (an expired
    /// certificate, say), with where they are.
    pub warnings: Vec<super::Diagnostic>,
}

impl Policy {
    /// Every header some provider's `claims_to_headers` sets, lowercased and
    /// sorted: stripped from every incoming request so that only a verified
    /// token can set them.
    #[must_use]
    pub fn identity_headers(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .jwt_providers
            .values()
            .flat_map(|p| p.claims_to_headers.values().map(|h| h.to_ascii_lowercase()))
            .chain(self.api_keys.values().filter_map(|s| s.client_header.as_ref().map(|h| h.to_ascii_lowercase())))
            .chain(self.basic_users.values().filter_map(|s| s.client_header.as_ref().map(|h| h.to_ascii_lowercase())))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// `auth.jwt[]`: who issues tokens and how to check them.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtProvider {
    /// Unique name, referred to by `auth:`.
    pub name: String,
    /// Required `iss` claim.
    pub issuer: String,
    /// Accepted `aud` values; empty accepts any.
    pub audiences: Vec<String>,
    /// Where the verification keys come from.
    pub jwks: Jwks,
    /// Where the token may be in a request, in the order Envoy looks.
    pub from: Vec<TokenSource>,
    /// Claim name → request header set from it for the upstream.
    pub claims_to_headers: BTreeMap<String, String>,
    /// Tolerance for `exp` and `nbf`.
    pub clock_skew: Duration,
    /// Refuse tokens without `exp`.
    pub require_expiration: bool,
    /// Refuse tokens with longer than this left to live (and without `exp`).
    pub max_lifetime: Option<Duration>,
    /// Pass the token on to the upstream.
    pub forward_token: bool,
}

/// A provider's verification keys.
#[derive(Debug, Clone, PartialEq)]
pub enum Jwks {
    /// A JWKS document (from a file or inline), checked to have usable keys.
    Local(String),
    /// Fetched by Envoy from a URL.
    Remote(RemoteJwks),
}

/// A JWKS Envoy fetches (and caches) itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The full URL.
    pub uri: String,
    /// Its host and port.
    pub endpoint: Endpoint,
    /// `https`.
    pub tls: bool,
    /// How long Envoy keeps the keys before fetching again.
    pub cache: Duration,
}

/// Where a provider looks for the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header, after a prefix such as `Bearer `.
    Header {
        /// Header name.
        name: String,
        /// What comes before the token in its value.
        prefix: String,
    },
    /// A query parameter.
    Query(String),
}

/// Who may use a route.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (`auth: none`, or no `auth` anywhere).
    #[default]
    Public,
    /// A valid token from any one of these providers.
    AnyOf(Vec<String>),
    /// A key of any one of these API key sets.
    ApiKeys(Vec<String>),
    /// HTTP Basic credentials of a user of any one of these user sets.
    Basic(Vec<String>),
}

/// `auth.basic[]`: users who may call with HTTP Basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicUserSet {
    /// Unique name (among JWT providers and key sets), referred to by `auth:`.
    pub name: String,
    /// User name → `{SHA}` hash of the password.
    pub users: BTreeMap<String, String>,
    /// The request header that tells the upstream which user called.
    pub client_header: Option<String>,
    /// Pass the Authorization header on to the upstream.
    pub forward_credentials: bool,
}

/// `auth.api_keys[]`: the clients that may call with a key, and where the
/// key is in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeySet {
    /// Unique name (among JWT providers too), referred to by `auth:`.
    pub name: String,
    /// Client name → key.
    pub keys: BTreeMap<String, String>,
    /// Where Envoy looks for the key, in order.
    pub from: Vec<KeySource>,
    /// The request header that tells the upstream which client called.
    pub client_header: Option<String>,
    /// Pass the key on to the upstream.
    pub forward_key: bool,
}

/// One place an API key may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
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
    /// TLS termination.
    pub tls: Option<ListenerTls>,
    /// A plain-HTTP port that redirects to this (TLS) listener.
    pub http_redirect_port: Option<u16>,
}

/// A listener's TLS: its certificates and protocol settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Chosen by SNI; the one without `hosts` (if any) for every other name.
    pub certificates: Vec<Certificate>,
    /// The oldest TLS version accepted.
    pub min_version: TlsVersion,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

/// `tls.min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 (the default).
    V1_2,
    /// TLS 1.3.
    V1_3,
}

/// A certificate chain and its private key, as PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The SDS secret name it is served under.
    pub secret: String,
    /// SNI names it is served for; empty for every name.
    pub hosts: Vec<String>,
    /// PEM certificate chain.
    pub cert_pem: String,
    /// PEM private key. Never printed: `Debug` redacts it.
    pub key_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("secret", &self.secret)
            .field("hosts", &self.hosts)
            .field("cert_pem", &format_args!("<{} bytes>", self.cert_pem.len()))
            .field("key_pem", &format_args!("[redacted]"))
            .finish()
    }
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
    /// Talk TLS to the upstream (`https://` URLs, or `tls:`), and how.
    pub tls: Option<UpstreamTls>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Default request timeout of routes to this service.
    pub timeout: Option<Duration>,
    /// Default idle timeout of routes to this service.
    pub idle_timeout: Option<Duration>,
    /// Default largest request body of routes to this service, in bytes.
    pub max_request_body: Option<u32>,
    /// Load-balancing policy.
    pub load_balancing: LoadBalancing,
    /// What `ring_hash` hashes.
    pub hash_key: HashKey,
    /// Retries of requests to it.
    pub retries: Option<Retries>,
    /// Envoy's circuit-breaker thresholds; `None` leaves Envoy's defaults.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Passive health: eject hosts that keep failing.
    pub outlier_detection: Option<OutlierDetection>,
    /// Active health checks.
    pub health_check: Option<HealthCheck>,
    /// Request header changes of routes to it (under the route's own).
    pub request_headers: HeaderOps,
    /// Response header changes of routes to it (under the route's own).
    pub response_headers: HeaderOps,
    /// Default `auth` of routes to this service.
    pub auth: Option<Auth>,
    /// Default `rate_limit` of routes to this service.
    pub rate_limit: Option<Vec<String>>,
    /// Default `ip_restriction` of routes to this service (`Some(None)`: `none`).
    pub ip_restriction: Option<Option<IpRestriction>>,
}

/// `ip_restriction`: which client addresses may use a route. A client must
/// be in `allow` (when it is not empty) and not in `deny`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRestriction {
    /// Allowed address ranges; empty allows every address not denied.
    pub allow: Vec<Cidr>,
    /// Refused address ranges.
    pub deny: Vec<Cidr>,
}

/// An address range such as `10.0.0.0/8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub address: std::net::IpAddr,
    /// Leading bits that must match.
    pub prefix_len: u32,
}

impl Service {
    /// A cluster legate adds for itself (a JWKS host, a trace collector):
    /// one endpoint, pushed over EDS when it is an IP address, else
    /// resolved by DNS; no policy of its own.
    #[must_use]
    pub fn internal(name: String, endpoint: Endpoint, tls: bool, connect_timeout: Duration) -> Service {
        let is_ip = endpoint.host.parse::<std::net::IpAddr>().is_ok();
        let tls = tls.then(|| UpstreamTls { name: Some(endpoint.host.clone()), verify: Verify::Roots });
        Service {
            name,
            endpoints: vec![endpoint],
            discovery: if is_ip { Discovery::Eds } else { Discovery::LogicalDns },
            tls,
            connect_timeout,
            timeout: None,
            idle_timeout: None,
            max_request_body: None,
            load_balancing: LoadBalancing::RoundRobin,
            hash_key: HashKey::ClientIp,
            retries: None,
            circuit_breaker: None,
            outlier_detection: None,
            health_check: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            auth: None,
            rate_limit: None,
            ip_restriction: None,
        }
    }
}

/// TLS from Envoy to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTls {
    /// Who the service must prove to be: a DNS name (also sent as SNI) or
    /// an IP address (matched against the certificate's IP addresses, no
    /// SNI). `None` only when the certificate is not checked.
    pub name: Option<String>,
    /// How the certificate is checked.
    pub verify: Verify,
}

/// What a service's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// The Mozilla roots legate ships (`webpki-root-certs`).
    Roots,
    /// The CAs of a PEM file (`tls.ca`), pushed as the SDS secret `secret`.
    Ca {
        /// SDS secret name: `ca:` and the file's path.
        secret: String,
        /// The file's certificates.
        pem: String,
    },
    /// Nothing: any certificate is accepted (`tls.verify: false`).
    Off,
}

/// One upstream address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Its share of requests, relative to the service's other endpoints'.
    pub weight: u32,
}

/// The Host header a route sends upstream instead of the client's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// This name.
    Literal(String),
    /// The chosen endpoint's host, with its port unless the scheme's default.
    Endpoint,
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

/// What `ring_hash` load balancing hashes to pick an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address (the default).
    #[default]
    ClientIp,
    /// A request header's value.
    Header(String),
}

/// `retries`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Envoy `retry_on` conditions.
    pub on: Vec<String>,
    /// Timeout of each try.
    pub per_try_timeout: Option<Duration>,
    /// Methods that are retried.
    pub methods: Vec<String>,
}

/// `circuit_breaker`: each `None` keeps Envoy's default (1024).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitBreaker {
    /// Connections to the service, all Envoy workers together.
    pub max_connections: Option<u32>,
    /// Requests waiting for a connection.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight.
    pub max_requests: Option<u32>,
    /// Retries in flight.
    pub max_retries: Option<u32>,
}

/// `outlier_detection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// 5xx answers in a row that eject a host.
    pub consecutive_5xx: u32,
    /// How often ejections are reviewed.
    pub interval: Duration,
    /// How long a first ejection lasts (longer for repeat offenders).
    pub base_ejection_time: Duration,
    /// At most this share of hosts is ejected at once.
    pub max_ejection_percent: u32,
}

/// `health_check`: active HTTP checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path to GET; 200 is healthy.
    pub path: String,
    /// Time between checks.
    pub interval: Duration,
    /// Time a check may take.
    pub timeout: Duration,
    /// Failures in a row that make a host unhealthy.
    pub unhealthy_threshold: u32,
    /// Successes in a row that make it healthy again.
    pub healthy_threshold: u32,
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
    /// Host names (`*.example.com` wildcards allowed), one of which the
    /// request's Host must be; empty for any (the listener's).
    pub hosts: Vec<String>,
    /// Destination.
    pub backend: Backend,
    /// Path rewrite before forwarding.
    pub rewrite: Option<PathRewrite>,
    /// Host header rewrite before forwarding.
    pub host_rewrite: Option<HostRewrite>,
    /// Request timeout (route, else service).
    pub timeout: Option<Duration>,
    /// Stream idle timeout (route, else service); `None`: the listener's.
    pub idle_timeout: Option<Duration>,
    /// Largest request body in bytes (route, else service); larger gets 413.
    pub max_request_body: Option<u32>,
    /// Request header changes (route merged over service and defaults).
    pub request_headers: HeaderOps,
    /// Query parameter changes (the route's own).
    pub request_query: HeaderOps,
    /// The header that carries Envoy's request id to the service, and
    /// whether the answer carries it back.
    pub request_id: Option<(String, bool)>,
    /// Response header changes.
    pub response_headers: HeaderOps,
    /// Who may use it (route, else service, else defaults).
    pub auth: Auth,
    /// Retries (from its service).
    pub retries: Option<Retries>,
    /// CORS, answered at Envoy.
    pub cors: Option<Cors>,
    /// The rate-limit policies that apply, all of them (route, else service,
    /// else defaults); empty for none.
    pub rate_limits: Vec<String>,
    /// Which client addresses may use it (route, else service, else defaults).
    pub ip_restriction: Option<IpRestriction>,
}

/// `rate_limits[]`: how many requests per window, counted per what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// Unique name, referred to by `rate_limit:`.
    pub name: String,
    /// Each window with its limit, shortest window first; all are enforced.
    pub limits: Vec<(Window, u64)>,
    /// What is counted separately.
    pub key: RateKey,
    /// Each Envoy alone, or one count across the fleet.
    pub scope: Scope,
    /// Send x-ratelimit-* headers (and Retry-After on 429).
    pub headers: bool,
    /// Count and report, never reject.
    pub shadow: bool,
    /// Global only: reject when the rate-limit service can't be reached.
    pub fail_closed: bool,
}

/// `defaults.access_log`: on, `off`, or not written (off, unless `legate
/// serve --access-log` turns central logging on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogging {
    /// Not in the policy.
    #[default]
    Unset,
    /// `access_log: off`: never, whatever `serve`'s flags say.
    Off,
    /// As written.
    On(AccessLog),
}

impl AccessLogging {
    /// The logger, when logging is on.
    #[must_use]
    pub fn on(&self) -> Option<&AccessLog> {
        match self {
            AccessLogging::On(a) => Some(a),
            AccessLogging::Unset | AccessLogging::Off => None,
        }
    }
}

/// `defaults.access_log`: each Envoy logs every request where `path` says
/// and sends it to legate's access-log service too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog {
    /// JSON lines or text.
    pub format: LogFormat,
    /// `stdout`, `stderr`, a file on the Envoy's machine, or `legate` (only
    /// to legate's central log).
    pub path: String,
}

/// `defaults.tracing`: Envoy's OpenTelemetry tracer.
#[derive(Debug, Clone, PartialEq)]
pub struct Tracing {
    /// The OTLP/gRPC collector.
    pub collector: Endpoint,
    /// The service name spans carry.
    pub service_name: String,
    /// Percent of requests traced (0-100).
    pub sampling: f64,
}

/// An access-log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object a line.
    Json,
    /// Envoy's default text format.
    Text,
}

/// `routes[].cors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// Allowed origins: exact (`https://app.example.com`, or `*`) or regex.
    pub origins: Vec<ValueRule>,
    /// Allowed methods; empty: the request's own (browsers' simple methods).
    pub methods: Vec<String>,
    /// Allowed request headers.
    pub headers: Vec<String>,
    /// Response headers scripts may read.
    pub expose_headers: Vec<String>,
    /// How long browsers may cache a preflight answer.
    pub max_age: Option<Duration>,
    /// Allow cookies and credentials.
    pub credentials: bool,
}

/// A rate-limit window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Window {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// A calendar month (UTC) when counted globally; 30 days locally.
    Month,
    /// A calendar year (UTC) when counted globally; 365 days locally.
    Year,
}

impl Window {
    /// Every window, shortest first.
    pub const ALL: [Window; 6] =
        [Window::Second, Window::Minute, Window::Hour, Window::Day, Window::Month, Window::Year];

    /// Its name in policy files.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
            Window::Year => "year",
        }
    }

    /// Its (nominal) length in seconds: a month is 30 days, a year 365.
    #[must_use]
    pub fn seconds(self) -> u64 {
        match self {
            Window::Second => 1,
            Window::Minute => 60,
            Window::Hour => 3600,
            Window::Day => 86_400,
            Window::Month => 30 * 86_400,
            Window::Year => 365 * 86_400,
        }
    }

    /// The window `now` (seconds since the epoch) falls in: its number, and
    /// the seconds until the next one starts. Months and years follow the
    /// UTC calendar; the others are aligned to the epoch.
    #[must_use]
    pub fn at(self, now: u64) -> (u64, u64) {
        let start_of = |y: i64, m: u32| u64::try_from(days_from_civil(y, m, 1)).unwrap_or(0) * 86_400;
        match self {
            Window::Month | Window::Year => {
                let (y, m) = civil_from_days(i64::try_from(now / 86_400).unwrap_or(i64::MAX));
                let (index, next) = if self == Window::Month {
                    let next = if m == 12 { start_of(y + 1, 1) } else { start_of(y, m + 1) };
                    (u64::try_from(y).unwrap_or(0) * 12 + u64::from(m - 1), next)
                } else {
                    (u64::try_from(y).unwrap_or(0), start_of(y + 1, 1))
                };
                (index, next.saturating_sub(now))
            }
            _ => {
                let w = self.seconds();
                (now / w, (now / w + 1) * w - now)
            }
        }
    }

    /// The window of this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Window> {
        Window::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// (year, month) of a day counted from 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, u32::try_from(m).unwrap_or(1))
}

/// Days from 1970-01-01 to a date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::Window;

    #[test]
    fn calendar_windows_start_on_the_first_of_the_month_and_year() {
        // 2024-02-29T12:00:00Z
        let now = 1_709_208_000;
        let (month, reset) = Window::Month.at(now);
        assert_eq!(month, 2024 * 12 + 1);
        assert_eq!(reset, 1_709_251_200 - now, "until 2024-03-01T00:00:00Z");
        let (year, reset) = Window::Year.at(now);
        assert_eq!(year, 2024);
        assert_eq!(reset, 1_735_689_600 - now, "until 2025-01-01T00:00:00Z");
        // December rolls over to January of the next year.
        let dec = 1_734_048_000; // 2024-12-13T00:00:00Z
        assert_eq!(Window::Month.at(dec), (2024 * 12 + 11, 1_735_689_600 - dec));
        assert_eq!(Window::Minute.at(125), (2, 55));
    }
}

/// What a rate limit counts separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateKey {
    /// The client's address.
    ClientIp,
    /// A request header's value (requests without it: by client address).
    Header(String),
    /// A claim of the verified JWT.
    Claim(String),
    /// One counter for the whole route.
    Route,
}

/// Where a rate limit is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// By each Envoy alone.
    Local,
    /// By legate's rate-limit service, once for the fleet.
    Global,
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
    /// legate's aggregator, which answers this aggregation.
    Aggregation(String),
    /// Envoy answers itself with this status and message (as its other
    /// errors, in legate's JSON); no service is called.
    Respond {
        /// The status code.
        status: u32,
        /// The `message` of the JSON body.
        message: String,
    },
}

/// `aggregations[]`: one client request answered by legate's aggregator
/// from several service calls made in parallel.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    /// Unique name (among routes and aggregations).
    pub name: String,
    /// The path as written, like `/api/dashboard/{userId}`.
    pub path: String,
    /// Its segments: literal text or a parameter.
    pub segments: Vec<Segment>,
    /// The whole answer is ready by then; calls still running get their default.
    pub timeout: Duration,
    /// In file order; the answer's keys.
    pub calls: Vec<Call>,
    /// Request headers passed on to every call (lowercase): the verified
    /// identity headers, the request id and trace context, forwarded tokens.
    pub forward_headers: Vec<String>,
}

/// One segment of an aggregation path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Must be this text.
    Literal(String),
    /// Any one non-empty segment, bound to this name.
    Param(String),
}

/// One service call of an aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The key of its result in the answer.
    pub name: String,
    /// The service called.
    pub service: String,
    /// The path and query to call, as parts to fill in.
    pub path: Vec<TemplatePart>,
    /// A field of the JSON answer to keep instead of all of it (dotted path;
    /// numbers index arrays).
    pub pick: Vec<String>,
    /// Answered in its place when the call fails, times out, answers
    /// non-2xx or non-JSON, or lacks the picked field.
    pub default: serde_json::Value,
    /// How long this call may take (at most the aggregation's timeout).
    pub timeout: Duration,
}

/// A piece of a call's path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    /// Copied as written.
    Text(String),
    /// A path parameter's value, percent-encoded as a query value when it
    /// stands in the query string, else as one path segment.
    Param {
        /// The parameter.
        name: String,
        /// It stands after the `?`.
        in_query: bool,
    },
    /// The client request's query parameter of this name (empty when
    /// absent), encoded like a `Param`.
    Query {
        /// The parameter.
        name: String,
        /// It stands after the `?`.
        in_query: bool,
    },
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
    /// Set these headers where absent.
    pub default: std::collections::BTreeMap<String, String>,
    /// Set these headers where present.
    pub replace: std::collections::BTreeMap<String, String>,
    /// Add one more value to these headers.
    pub append: std::collections::BTreeMap<String, String>,
    /// Remove these headers.
    pub remove: Vec<String>,
}

/// When a header (or query) change sets its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetWhen {
    /// Only where the request has it (`replace`).
    Present,
    /// Always, replacing any value (`add`).
    Always,
    /// Only where the request lacks it (`default`).
    Absent,
    /// As one more value (`append`).
    Append,
}

impl HeaderOps {
    /// Each kind of set with its values, in the order Envoy applies them
    /// (after the removals): `replace`, `add`, `default`, `append`.
    #[must_use]
    pub fn sets(&self) -> [(SetWhen, &std::collections::BTreeMap<String, String>); 4] {
        [
            (SetWhen::Present, &self.replace),
            (SetWhen::Always, &self.add),
            (SetWhen::Absent, &self.default),
            (SetWhen::Append, &self.append),
        ]
    }

    /// Whether it changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.sets().iter().all(|(_, m)| m.is_empty())
    }

    /// `over` applied on top of `self`: what it says of a header wins
    /// whole (a general level's `add` of a header the specific one
    /// `replace`s is dropped), removes accumulate.
    #[must_use]
    pub fn merged(&self, over: &HeaderOps) -> HeaderOps {
        let named = |name: &str| over.sets().iter().any(|(_, m)| m.keys().any(|k| k.eq_ignore_ascii_case(name)));
        let layer = |mine: &std::collections::BTreeMap<String, String>,
                     theirs: &std::collections::BTreeMap<String, String>| {
            let mut out: std::collections::BTreeMap<String, String> =
                mine.iter().filter(|(k, _)| !named(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
            out.extend(theirs.iter().map(|(k, v)| (k.clone(), v.clone())));
            out
        };
        let mut remove = self.remove.clone();
        for r in &over.remove {
            if !remove.iter().any(|x| x.eq_ignore_ascii_case(r)) {
                remove.push(r.clone());
            }
        }
        // A header the more specific level sets is not removed by a general one.
        remove.retain(|r| !named(r));
        HeaderOps {
            add: layer(&self.add, &over.add),
            default: layer(&self.default, &over.default),
            replace: layer(&self.replace, &over.replace),
            append: layer(&self.append, &over.append),
            remove,
        }
    }
}

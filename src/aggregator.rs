//! legate's aggregator: answers `aggregations` behind Envoy.
//!
//! Envoy matches the client request, authenticates and rate-limits it, and
//! forwards it here (cluster [`CLUSTER`] from the bootstrap) with the
//! aggregation's name in [`NAME_HEADER`]. The aggregator calls every service
//! of the aggregation at once, directly at the service's endpoints, and
//! answers one JSON object keyed by call name. A call that fails, times out,
//! answers non-2xx or non-JSON gives its `default` instead; the answer is
//! always 200, with the calls that fell back named in [`PARTIAL_HEADER`].
//!
//! Calls go straight to the endpoints rather than back through Envoy: one
//! network hop instead of two, no second route that a client could reach to
//! skip the aggregation's auth, and each call's cost is bounded by its own
//! timeout, which is what protects the answer (docs/policy.md says more).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::value::RawValue;
use tracing::debug;

use crate::policy::{Aggregation, Call, Policy, Segment, TemplatePart, UpstreamTls, Verify};
use crate::state::State;

/// The bootstrap cluster through which Envoy reaches the aggregator.
pub const CLUSTER: &str = "legate_aggregator";
/// The request header (set by Envoy's route) naming the aggregation.
pub const NAME_HEADER: &str = "x-legate-aggregation";
/// The response header naming the calls that were answered by their default.
pub const PARTIAL_HEADER: &str = "x-legate-partial";
/// How much longer than an aggregation's timeout Envoy waits for the answer.
pub const ENVOY_MARGIN: Duration = Duration::from_secs(1);
/// The aggregator's port unless `--aggregator-addr` says otherwise.
pub const DEFAULT_PORT: u16 = 18002;
/// The most of a call's answer that is read; a longer one counts as failed.
const MAX_BODY: usize = 8 << 20;

/// Characters escaped in a value put into a path segment.
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|');
/// Characters escaped in a value put into a query string.
const QUERY_VALUE: &AsciiSet = &SEGMENT.add(b'&').add(b'=').add(b'+').add(b';');

/// What the aggregator needs of the published policy: the aggregations and
/// where each service they call runs.
#[derive(Debug, Default)]
pub struct Table {
    aggregations: BTreeMap<String, Aggregation>,
    services: HashMap<String, Upstream>,
}

#[derive(Debug)]
struct Upstream {
    scheme: &'static str,
    /// `host:port` of each endpoint.
    authorities: Vec<String>,
    /// Round-robin position.
    next: AtomicUsize,
    /// Its own client, for TLS checked otherwise than against the Mozilla
    /// roots and the url's host (`tls.ca`, `server_name`, `verify: false`).
    client: Option<HttpClient>,
}

impl Table {
    /// The aggregations of `policy` and the services they call.
    #[must_use]
    pub fn new(policy: &Policy) -> Table {
        let mut services = HashMap::new();
        for a in policy.aggregations.values() {
            for c in &a.calls {
                let Some(s) = policy.services.get(&c.service) else { continue };
                services.entry(s.name.clone()).or_insert_with(|| Upstream {
                    scheme: if s.tls.is_some() { "https" } else { "http" },
                    client: s.tls.as_ref().and_then(|t| own_client(t, s.endpoints.first().map(|e| e.host.as_str()))),
                    authorities: s
                        .endpoints
                        .iter()
                        .map(|e| {
                            if e.host.contains(':') {
                                format!("[{}]:{}", e.host, e.port)
                            } else {
                                format!("{}:{}", e.host, e.port)
                            }
                        })
                        .collect(),
                    next: AtomicUsize::new(0),
                });
            }
        }
        Table { aggregations: policy.aggregations.clone(), services }
    }

    /// Whether the policy has no aggregations to answer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.aggregations.is_empty()
    }

    /// Where a call to `service` goes, and the client for it when the
    /// service needs its own.
    fn target(&self, service: &str, path_and_query: &str) -> Option<(Uri, Option<&HttpClient>)> {
        let up = self.services.get(service)?;
        let n = up.next.fetch_add(1, Ordering::Relaxed);
        let authority = up.authorities.get(n % up.authorities.len().max(1))?;
        let uri = format!("{}://{authority}{path_and_query}", up.scheme).parse().ok()?;
        Some((uri, up.client.as_ref()))
    }
}

/// A client of its own for a service whose certificate is checked against
/// other CAs or another name than the shared client's (the Mozilla roots,
/// the endpoint's host); `None` when the shared one does.
fn own_client(tls: &UpstreamTls, host: Option<&str>) -> Option<HttpClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .ok()?;
    let config = match &tls.verify {
        Verify::Roots if tls.name.as_deref() == host => return None,
        Verify::Roots => builder.with_root_certificates(mozilla_roots()),
        Verify::Ca { pem, .. } => {
            use rustls::pki_types::{pem::PemObject as _, CertificateDer};
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(pem.as_bytes()).filter_map(Result::ok));
            builder.with_root_certificates(roots)
        }
        Verify::Off => builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
    }
    .with_no_client_auth();
    Some(https_client(config, tls.name.clone()))
}

fn mozilla_roots() -> rustls::RootCertStore {
    rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() }
}

/// A pooled client that speaks http, or https with `tls` (and `server_name`
/// as SNI and the name checked, instead of the URL's host).
fn https_client(tls: rustls::ClientConfig, server_name: Option<String>) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http();
    // A name validation accepted (a host name or an IP address).
    let name = server_name.and_then(|n| rustls::pki_types::ServerName::try_from(n).ok());
    let builder = match name {
        Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name)),
        None => builder,
    };
    let https = builder.enable_http1().wrap_connector(http);
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(https)
}

/// `verify: false`: any certificate is accepted, but the handshake's
/// signatures are still checked (as Envoy does), so the connection is at
/// least with whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The aggregator's HTTP service.
#[derive(Debug, Clone)]
pub struct Aggregator {
    state: Arc<State>,
    client: HttpClient,
}

impl Aggregator {
    /// An aggregator answering from the aggregations `state` publishes.
    ///
    /// # Panics
    /// If rustls has no usable crypto provider (it is compiled in).
    #[must_use]
    pub fn new(state: Arc<State>) -> Aggregator {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("rustls protocol versions")
            .with_root_certificates(mozilla_roots())
            .with_no_client_auth();
        Aggregator { state, client: https_client(tls, None) }
    }

    /// The HTTP router: every request is an aggregation to answer.
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(answer).with_state(Arc::new(self))
    }
}

/// Why a call gave its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Timeout,
    Unreachable,
    Status,
    NotJson,
    NoField,
}

impl Failure {
    fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unreachable => "error",
            Failure::Status => "status",
            Failure::NotJson => "not_json",
            Failure::NoField => "no_field",
        }
    }
}

async fn answer(Extract(agg): Extract<Arc<Aggregator>>, req: Request) -> Response {
    let table = agg.state.aggregations();
    let name = req.headers().get(NAME_HEADER).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Some(aggregation) = table.aggregations.get(name) else {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("no aggregation named `{name}` is loaded"));
    };
    let Some(params) = path_params(&aggregation.segments, req.uri().path()) else {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("the path does not match `{}`", aggregation.path));
    };
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes()).into_owned().collect();
    let headers: Vec<(HeaderName, HeaderValue)> = aggregation
        .forward_headers
        .iter()
        .filter_map(|h| Some((HeaderName::from_bytes(h.as_bytes()).ok()?, req.headers().get(h)?.clone())))
        .collect();

    let results = futures::future::join_all(aggregation.calls.iter().map(|c| {
        let path = fill(&c.path, &params, &query);
        call(&agg.client, &table, c, path, &headers)
    }))
    .await;

    let mut body = String::with_capacity(256);
    let mut failed = Vec::new();
    body.push('{');
    for (i, (c, result)) in aggregation.calls.iter().zip(&results).enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::to_string(&c.name).unwrap_or_default());
        body.push(':');
        let outcome = match result {
            Ok(v) => {
                body.push_str(v);
                "ok"
            }
            Err(f) => {
                debug!(aggregation = %aggregation.name, call = %c.name, reason = f.label(), "call answered by its default");
                body.push_str(&c.default.to_string());
                failed.push(c.name.as_str());
                f.label()
            }
        };
        agg.state.metrics.aggregation_call(&aggregation.name, &c.name, outcome);
    }
    body.push('}');
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let (false, Ok(v)) = (failed.is_empty(), HeaderValue::from_str(&failed.join(","))) {
        resp.headers_mut().insert(PARTIAL_HEADER, v);
    }
    resp
}

/// The JSON error body every Envoy-generated error has too.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error": code, "message": message, "status": status.as_u16() });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// The path's parameter values (percent-decoded), when it matches.
fn path_params<'a>(segments: &'a [Segment], path: &str) -> Option<Vec<(&'a str, String)>> {
    let parts: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    if parts.len() != segments.len() {
        return None;
    }
    let mut out = Vec::new();
    for (s, p) in segments.iter().zip(parts) {
        match s {
            Segment::Literal(l) if l == p => {}
            Segment::Param(name) if !p.is_empty() => {
                out.push((name.as_str(), percent_encoding::percent_decode_str(p).decode_utf8_lossy().into_owned()));
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A call's path and query with every placeholder filled in and encoded.
fn fill(template: &[TemplatePart], params: &[(&str, String)], query: &[(String, String)]) -> String {
    let mut out = String::new();
    for part in template {
        let (value, in_query) = match part {
            TemplatePart::Text(t) => {
                out.push_str(t);
                continue;
            }
            TemplatePart::Param { name, in_query } => {
                (params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()), *in_query)
            }
            TemplatePart::Query { name, in_query } => {
                (query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()), *in_query)
            }
        };
        let set = if in_query { QUERY_VALUE } else { SEGMENT };
        out.extend(utf8_percent_encode(value.unwrap_or_default(), set));
    }
    out
}

/// One call: its JSON answer (or the picked part), or why not.
async fn call(
    client: &HttpClient,
    table: &Table,
    c: &Call,
    path: String,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<String, Failure> {
    let Some((uri, own)) = table.target(&c.service, &path) else { return Err(Failure::Unreachable) };
    let client = own.unwrap_or(client);
    let mut req = hyper::Request::get(uri).body(Empty::<Bytes>::new()).map_err(|_| Failure::Unreachable)?;
    let h: &mut HeaderMap = req.headers_mut();
    for (k, v) in headers {
        h.insert(k.clone(), v.clone());
    }
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let fetch = async {
        let resp = client.request(req).await.map_err(|_| Failure::Unreachable)?;
        if !resp.status().is_success() {
            return Err(Failure::Status);
        }
        let body = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|_| Failure::Unreachable)?;
        Ok(body.to_bytes())
    };
    let body = tokio::time::timeout(c.timeout, fetch).await.map_err(|_| Failure::Timeout)??;
    if body.iter().all(u8::is_ascii_whitespace) {
        return if c.pick.is_empty() { Ok("null".to_owned()) } else { Err(Failure::NoField) };
    }
    if c.pick.is_empty() {
        // Checked as JSON, then passed on as it came: no re-encoding.
        let raw: &RawValue = serde_json::from_slice(&body).map_err(|_| Failure::NotJson)?;
        return Ok(raw.get().to_owned());
    }
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|_| Failure::NotJson)?;
    let mut at = &value;
    for key in &c.pick {
        at = match at {
            serde_json::Value::Object(m) => m.get(key),
            serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        }
        .ok_or(Failure::NoField)?;
    }
    Ok(at.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<Segment> {
        path.trim_start_matches('/')
            .split('/')
            .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(p) => Segment::Param(p.to_owned()),
                None => Segment::Literal(s.to_owned()),
            })
            .collect()
    }

    #[test]
    fn params_are_taken_from_whole_segments_and_decoded() {
        let s = segs("/api/dashboard/{userId}");
        assert_eq!(path_params(&s, "/api/dashboard/a%20b"), Some(vec![("userId", "a b".to_owned())]));
        assert_eq!(path_params(&s, "/api/dashboard/"), None);
        assert_eq!(path_params(&s, "/api/dashboard/a/b"), None);
        assert_eq!(path_params(&s, "/api/other/a"), None);
    }

    #[test]
    fn values_are_encoded_for_where_they_stand() {
        let t = vec![
            TemplatePart::Text("/users/".into()),
            TemplatePart::Param { name: "id".into(), in_query: false },
            TemplatePart::Text("?q=".into()),
            TemplatePart::Param { name: "id".into(), in_query: true },
            TemplatePart::Text("&limit=".into()),
            TemplatePart::Query { name: "limit".into(), in_query: true },
            TemplatePart::Text("&missing=".into()),
            TemplatePart::Query { name: "nope".into(), in_query: true },
        ];
        let params = vec![("id", "a/b&c=d ?".to_owned())];
        let query = vec![("limit".to_owned(), "5".to_owned())];
        assert_eq!(fill(&t, &params, &query), "/users/a%2Fb&c=d%20%3F?q=a%2Fb%26c%3Dd%20%3F&limit=5&missing=");
    }
}

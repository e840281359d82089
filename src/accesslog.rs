//! legate's access-log service: Envoy's `envoy.service.accesslog.v3`
//! `AccessLogService`, served on the xDS port. Every proxy streams its HTTP
//! access-log entries here (when `defaults.access_log` is on); legate writes
//! each as one JSON line, tagged with the proxy's node id and cluster, to
//! `--access-log PATH` (`-` for stdout), so the fleet's log is in one place.

use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::config::core::v3::{address, Address, RequestMethod};
use envoy_types::pb::envoy::data::accesslog::v3::HttpAccessLogEntry;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::{
    stream_access_logs_message::LogEntries, StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use futures::StreamExt;
use serde_json::{json, Value};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// Where the central log goes; `None` drops entries (still counted).
pub type Sink = Option<Arc<Mutex<Box<dyn Write + Send>>>>;

/// Open `--access-log PATH` (`-` is stdout), appending.
///
/// # Errors
/// When the file cannot be opened.
pub fn open_sink(path: &str) -> anyhow::Result<Sink> {
    let out: Box<dyn Write + Send> = if path == "-" {
        Box::new(std::io::stdout())
    } else {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open the access log `{path}`: {e}"))?;
        Box::new(std::io::BufWriter::new(f))
    };
    Ok(Some(Arc::new(Mutex::new(out))))
}

/// The gRPC service.
#[derive(Clone)]
pub struct Service {
    sink: Sink,
    state: Arc<crate::state::State>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("accesslog::Service").field("writing", &self.sink.is_some()).finish()
    }
}

impl Service {
    /// A service writing to `sink`, counting in `state`'s metrics.
    #[must_use]
    pub fn new(sink: Sink, state: Arc<crate::state::State>) -> Service {
        Service { sink, state }
    }

    /// As a tonic service.
    #[must_use]
    pub fn into_service(self) -> AccessLogServiceServer<Service> {
        AccessLogServiceServer::new(self)
    }
}

fn ip(a: Option<&Address>) -> String {
    match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => s.address.clone(),
        _ => String::new(),
    }
}

fn method(m: i32) -> &'static str {
    RequestMethod::try_from(m).map_or("", |m| match m {
        RequestMethod::Get => "GET",
        RequestMethod::Head => "HEAD",
        RequestMethod::Post => "POST",
        RequestMethod::Put => "PUT",
        RequestMethod::Delete => "DELETE",
        RequestMethod::Connect => "CONNECT",
        RequestMethod::Options => "OPTIONS",
        RequestMethod::Trace => "TRACE",
        RequestMethod::Patch => "PATCH",
        RequestMethod::MethodUnspecified => "",
    })
}

/// One entry as the central log's JSON object (fields documented in
/// docs/observability.md).
#[must_use]
pub fn entry_json(node: &str, cluster: &str, e: &HttpAccessLogEntry) -> Value {
    let c = e.common_properties.clone().unwrap_or_default();
    let req = e.request.clone().unwrap_or_default();
    let resp = e.response.clone().unwrap_or_default();
    let time = c.start_time.as_ref().map_or(String::new(), |t| {
        let at = std::time::UNIX_EPOCH
            + std::time::Duration::new(u64::try_from(t.seconds).unwrap_or(0), u32::try_from(t.nanos).unwrap_or(0));
        humantime::format_rfc3339_millis(at).to_string()
    });
    let duration_ms = c.duration.as_ref().map(|d| d.seconds * 1000 + i64::from(d.nanos) / 1_000_000);
    let user_id = c
        .metadata
        .as_ref()
        .and_then(|m| m.filter_metadata.get("envoy.filters.http.jwt_authn"))
        .and_then(|s| s.fields.get("jwt_payload"))
        .and_then(|p| match &p.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StructValue(p)) => p.fields.get("sub"),
            _ => None,
        })
        .and_then(|v| match &v.kind {
            Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => Some(s.clone()),
            _ => None,
        });
    let details = resp.response_code_details;
    let auth = if details.starts_with("jwt_authn_access_denied") {
        "denied"
    } else if user_id.is_some() {
        "verified"
    } else {
        "none"
    };
    let rate_limited = c.response_flags.as_ref().is_some_and(|f| f.rate_limited);
    json!({
        "time": time,
        "node": node,
        "node_cluster": cluster,
        "request_id": req.request_id,
        "method": method(req.request_method),
        "path": if req.original_path.is_empty() { req.path } else { req.original_path },
        "status": resp.response_code.map(|c| c.value),
        "duration_ms": duration_ms,
        "service": c.upstream_cluster,
        "route": c.route_name,
        "client_ip": ip(c.downstream_remote_address.as_ref()),
        "user_id": user_id,
        "auth": auth,
        "rate_limited": rate_limited,
        "details": details,
    })
}

type Stream = Pin<Box<dyn futures::Stream<Item = Result<StreamAccessLogsMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AccessLogService for Service {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut stream: Stream = Box::pin(request.into_inner());
        // The node comes with the first message of a stream only.
        let (mut node, mut cluster) = (String::new(), String::new());
        while let Some(msg) = stream.next().await {
            let msg = msg?;
            if let Some(n) = msg.identifier.and_then(|i| i.node) {
                (node, cluster) = (n.id, n.cluster);
            }
            let Some(LogEntries::HttpLogs(logs)) = msg.log_entries else { continue };
            let n = logs.log_entry.len();
            self.state.metrics.access_log_entries.inc_by(u64::try_from(n).unwrap_or(0));
            let Some(sink) = &self.sink else { continue };
            let mut text = String::new();
            for e in &logs.log_entry {
                text.push_str(&entry_json(&node, &cluster, e).to_string());
                text.push('\n');
            }
            let mut out = sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                warn!("cannot write the access log: {e}");
            }
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

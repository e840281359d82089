//! `legate echo`: a small upstream for demos and tests. Answers every
//! request with JSON `{service, method, path, query, headers, body}`;
//! `GET /status/NNN` answers with that status and `GET /delay/MS` waits first
//! (also as the last two segments of a longer path). For resilience tests it
//! can also answer every request with one status (`--status`), fail its
//! first requests (`--fail-first N`), or be slow (`--delay MS`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::{to_bytes, Body};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use tokio::net::TcpListener;

/// How an echo upstream answers.
#[derive(Debug, Clone, Default)]
pub struct EchoOptions {
    /// The `service` it names in every answer.
    pub name: String,
    /// Answer every request with this status (the body is still the echo).
    pub status: Option<u16>,
    /// Answer the first this many requests with 503.
    pub fail_first: u64,
    /// Wait this long before every answer.
    pub delay: Duration,
}

/// Serve on `listener` until `shutdown` resolves.
///
/// # Errors
/// When serving fails.
pub async fn serve_on(
    listener: TcpListener,
    opts: EchoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let opts = Arc::new(opts);
    let seen = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().fallback(move |req: Request| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        answer(Arc::clone(&opts), n, req)
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.context("echo server failed")
}

/// Bind `addr` and serve.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    opts: EchoOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    serve_on(listener, opts, shutdown).await
}

/// The answer to the `n`th request (from 0).
async fn answer(opts: Arc<EchoOptions>, n: u64, req: Request) -> Response {
    let service = opts.name.clone();
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let mut status = opts.status.and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::OK);
    if n < opts.fail_first {
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if !opts.delay.is_zero() {
        tokio::time::sleep(opts.delay).await;
    }
    // `/status/NNN` and `/delay/MS` also work behind a route prefix that is
    // not rewritten away (`/api/orders/status/503`).
    let mut segs = path.trim_end_matches('/').rsplit('/');
    let (arg, op) = (segs.next().map(str::parse::<u64>), segs.next());
    match (op, arg) {
        (Some("status"), Some(Ok(code))) => {
            status =
                u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()).unwrap_or(StatusCode::BAD_REQUEST);
        }
        (Some("delay"), Some(Ok(ms))) => tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await,
        _ => {}
    }
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_owned())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let body =
        to_bytes(Body::new(body), 1 << 20).await.map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let out = json!({
        "service": service,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        "query": parts.uri.query().unwrap_or(""),
        "headers": headers,
        "body": body,
    });
    (status, Json(out)).into_response()
}

//! `legate serve`: load the folder, serve ADS and the admin API, watch for
//! changes, stop cleanly on SIGINT/SIGTERM.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{error, info};

use crate::aggregator::Aggregator;
use crate::ratelimit::{self, Counters};
use crate::state::State;
use crate::watch::{self, Watch};
use crate::xds::Ads;
use crate::{accesslog, admin};

/// Where `serve` reads and listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The policy folder.
    pub config_dir: PathBuf,
    /// ADS (gRPC) address.
    pub xds_addr: SocketAddr,
    /// Admin HTTP address.
    pub admin_addr: SocketAddr,
    /// Redis for global rate-limit counters; `None` counts in memory.
    pub redis_url: Option<String>,
    /// Where the fleet's access log goes (`-` for stdout); `None` drops it.
    pub access_log: Option<String>,
    /// Where the aggregator answers Envoy.
    pub aggregator_addr: SocketAddr,
}

/// How long in-flight gRPC calls get to finish once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Run until `shutdown` resolves.
///
/// # Errors
/// When an address cannot be bound or the folder cannot be watched.
pub async fn serve(
    opts: ServeOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = State::new();
    let sink = match &opts.access_log {
        Some(path) => accesslog::open_sink(path)?,
        None => None,
    };
    let counters = match &opts.redis_url {
        Some(url) => Counters::redis(url).await?,
        None => Counters::memory(),
    };
    // Watch first, then load: an edit made in between would be missed.
    let watch = Watch::start(&opts.config_dir)?;
    let dir = opts.config_dir.clone();
    let overrides = watch::Overrides { central_access_log: opts.access_log.is_some() };
    let (read_files, cache) = {
        let state = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            let mut cache = watch::Cache::default();
            (watch::reload(&dir, &state, &mut cache, overrides).unwrap_or_default(), cache)
        })
        .await?
    };
    let sockets = Sockets {
        xds: listen(opts.xds_addr).with_context(|| format!("cannot listen for xDS on {}", opts.xds_addr))?,
        admin: Some(
            listen(opts.admin_addr)
                .with_context(|| format!("cannot listen for the admin API on {}", opts.admin_addr))?,
        ),
        // Bound only for a policy with aggregations, so that replicas
        // without any can share a host on the default address.
        aggregator: if state.aggregations().is_empty() {
            AggregatorSocket::WhenNeeded(opts.aggregator_addr)
        } else {
            AggregatorSocket::Bound(
                listen(opts.aggregator_addr).map_err(|e| aggregator_bind_error(opts.aggregator_addr, &e))?,
            )
        },
    };
    info!(
        xds = %sockets.xds.local_addr()?,
        admin = %sockets.admin.as_ref().map_or(opts.admin_addr, |a| a.local_addr().unwrap_or(opts.admin_addr)),
        aggregator = %sockets.aggregator,
        config = %opts.config_dir.display(),
        "legate serving"
    );

    let watcher = tokio::spawn(watch.run(Arc::clone(&state), read_files, cache, overrides));
    tokio::select! {
        r = serve_state(state, sockets, counters, sink, shutdown) => r?,
        r = watcher => r.context("policy watcher failed")?,
    }
    info!("legate stopped");
    Ok(())
}

/// Where one legate listens: ADS with the rate-limit and access-log
/// services, the admin API (if any), and the aggregator.
#[derive(Debug)]
pub struct Sockets {
    /// gRPC: ADS, rate limits, access logs.
    pub xds: TcpListener,
    /// The admin HTTP API.
    pub admin: Option<TcpListener>,
    /// Where Envoy sends `aggregations` requests.
    pub aggregator: AggregatorSocket,
}

/// The aggregator's socket: bound, or an address to bind once the policy
/// has aggregations (a live edit may add the first).
#[derive(Debug)]
pub enum AggregatorSocket {
    /// Listening.
    Bound(TcpListener),
    /// Bound when a published policy first has aggregations.
    WhenNeeded(SocketAddr),
}

impl std::fmt::Display for AggregatorSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AggregatorSocket::Bound(l) => match l.local_addr() {
                Ok(a) => write!(f, "{a}"),
                Err(_) => write!(f, "bound"),
            },
            AggregatorSocket::WhenNeeded(a) => write!(f, "{a} once the policy has aggregations"),
        }
    }
}

/// Why the aggregator could not listen, with the flag that moves it.
fn aggregator_bind_error(addr: SocketAddr, e: &std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot listen for the aggregator on {addr}: {e}; the policy has aggregations, and the aggregator \
         answers them there (another legate on this host? give each its own --aggregator-addr)"
    )
}

/// The aggregator, served on `socket`; when it is not bound yet, from the
/// first published policy with aggregations. A bind that fails then is
/// logged (naming `--aggregator-addr`) and tried again on the next publish;
/// what is already served goes on.
async fn run_aggregator(state: Arc<State>, socket: AggregatorSocket) -> std::io::Result<()> {
    let listener = match socket {
        AggregatorSocket::Bound(l) => l,
        AggregatorSocket::WhenNeeded(addr) => {
            let mut published = state.subscribe();
            loop {
                if !state.aggregations().is_empty() {
                    match listen(addr) {
                        Ok(l) => {
                            info!(aggregator = %addr, "aggregator listening: the policy has aggregations now");
                            break l;
                        }
                        Err(e) => error!("{:#}", aggregator_bind_error(addr, &e)),
                    }
                }
                if published.changed().await.is_err() {
                    return Ok(());
                }
            }
        }
    };
    axum::serve(listener, Aggregator::new(state).router()).await
}

/// Serve whatever `state` holds on `sockets` until `shutdown` resolves;
/// loading and watching the policy is the caller's.
///
/// # Errors
/// When a server fails.
pub async fn serve_state(
    state: Arc<State>,
    sockets: Sockets,
    counters: Counters,
    sink: accesslog::Sink,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admin_task =
        sockets.admin.map(|admin| tokio::spawn(axum::serve(admin, admin::router(Arc::clone(&state))).into_future()));
    let admin_task = async move {
        match admin_task {
            Some(t) => t.await,
            None => std::future::pending().await,
        }
    };
    let aggregator_task = tokio::spawn(run_aggregator(Arc::clone(&state), sockets.aggregator));
    // On shutdown, end every proxy stream (they never end by themselves), and
    // give in-flight calls a moment before leaving regardless: Envoy's
    // access-log streams, too, stay open for as long as they may.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = {
        let state = Arc::clone(&state);
        async move {
            shutdown.await;
            info!("shutting down: closing proxy streams");
            state.stop();
            let _ = stop_tx.send(());
        }
    };
    let deadline = async move {
        if stop_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .add_service(Ads::new(Arc::clone(&state)).into_service())
        .add_service(ratelimit::Service::new(Arc::new(counters), Arc::clone(&state)).into_service())
        .add_service(accesslog::Service::new(sink, Arc::clone(&state)).into_service())
        .serve_with_incoming_shutdown(no_delay(TcpListenerStream::new(sockets.xds)), shutdown);
    tokio::select! {
        r = grpc => r.context("xDS server failed")?,
        () = deadline => {}
        r = admin_task => r?.context("admin API failed")?,
        r = aggregator_task => r?.context("aggregator failed")?,
    }
    Ok(())
}

/// Pending connections a listener queues: a fleet reconnects all at once
/// after a restart, and the default (128) resets connections beyond it.
const BACKLOG: u32 = 4096;

/// A listener on `addr` with a [`BACKLOG`]-long accept queue.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepted connections with Nagle's algorithm off: small xDS and
/// rate-limit messages go out at once. (tonic ignores its own `tcp_nodelay`
/// for an incoming stream given to it.)
fn no_delay(
    incoming: TcpListenerStream,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> + Send + 'static {
    use futures::StreamExt;
    incoming.map(|conn| {
        conn.inspect(|c| {
            // A socket that refuses it is served all the same.
            let _ = c.set_nodelay(true);
        })
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
}

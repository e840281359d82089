//! legate's rate-limit service: Envoy's
//! `envoy.service.ratelimit.v3.RateLimitService`, served on the xDS port.
//! It counts every rate limit, local and global.
//!
//! Fixed windows (aligned to the epoch, so every replica agrees on where a
//! window starts), counted in memory or in Redis (`--redis-url`) so several
//! legate replicas share one count. The policy travels in the descriptor
//! itself ([`LimitSpec`], written by `translate`), so the service keeps no
//! copy of the configuration. A `scope: local` limit is counted per proxy,
//! named by the [`NODE_HEADER`] its bootstrap adds to every request to
//! legate. (Envoy's own local limiter is a token bucket refilled
//! continuously, which lets up to twice the limit through in one window.)

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit as CurrentLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::policy::{RateLimit, Window};
use crate::state::State;

/// The descriptor entry key whose value is a [`LimitSpec`].
pub const SPEC_KEY: &str = "legate_limit";

pub use crate::bootstrap::NODE_HEADER;

/// A rate-limit policy as one descriptor value:
/// `NAME|minute=100,hour=5000|headers,shadow,local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSpec {
    /// The policy name.
    pub name: String,
    /// Windows and limits.
    pub limits: Vec<(Window, u64)>,
    /// Send x-ratelimit-* headers.
    pub headers: bool,
    /// Count, never reject.
    pub shadow: bool,
    /// `scope: local`: each proxy has counts of its own.
    pub local: bool,
}

impl LimitSpec {
    /// The spec of a policy.
    #[must_use]
    pub fn of(l: &RateLimit) -> LimitSpec {
        LimitSpec {
            name: l.name.clone(),
            limits: l.limits.clone(),
            headers: l.headers,
            shadow: l.shadow,
            local: l.scope == crate::policy::Scope::Local,
        }
    }

    /// As a descriptor value.
    #[must_use]
    pub fn encode(&self) -> String {
        let limits: Vec<String> = self.limits.iter().map(|(w, n)| format!("{}={n}", w.name())).collect();
        let flags: Vec<&str> = [(self.headers, "headers"), (self.shadow, "shadow"), (self.local, "local")]
            .into_iter()
            .filter_map(|(on, f)| on.then_some(f))
            .collect();
        format!("{}|{}|{}", self.name, limits.join(","), flags.join(","))
    }

    /// From a descriptor value; `None` if it isn't one.
    #[must_use]
    pub fn decode(text: &str) -> Option<LimitSpec> {
        let mut parts = text.split('|');
        let (name, limits, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || name.is_empty() {
            return None;
        }
        let limits = limits
            .split(',')
            .map(|l| {
                let (w, n) = l.split_once('=')?;
                Some((Window::from_name(w)?, n.parse().ok().filter(|n| *n > 0)?))
            })
            .collect::<Option<Vec<_>>>()?;
        let flags: Vec<&str> = flags.split(',').collect();
        Some(LimitSpec {
            name: name.to_owned(),
            limits,
            headers: flags.contains(&"headers"),
            shadow: flags.contains(&"shadow"),
            local: flags.contains(&"local"),
        })
    }
}

/// Why a count could not be taken.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(String);

/// Where counts live.
pub enum Counters {
    /// In this process: counts are per legate replica.
    Memory(MemoryCounters),
    /// In Redis: replicas sharing it share counts.
    Redis(redis::aio::ConnectionManager),
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Counters::Memory(_) => "Counters::Memory",
            Counters::Redis(_) => "Counters::Redis",
        })
    }
}

impl Counters {
    /// Counters in memory.
    #[must_use]
    pub fn memory() -> Counters {
        Counters::Memory(MemoryCounters::default())
    }

    /// Counters in Redis at `url`, checked with a PING now.
    ///
    /// # Errors
    /// When Redis cannot be reached, with a message saying what to do.
    pub async fn redis(url: &str) -> anyhow::Result<Counters> {
        let unreachable = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "cannot reach Redis at {url} ({e}); global rate limits count there. Start Redis, fix \
                 --redis-url, or leave it out to count in memory"
            )
        };
        let client = redis::Client::open(url).map_err(|e| unreachable(&e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(2))
            .set_response_timeout(Duration::from_secs(1))
            .set_number_of_retries(1);
        let mut conn = tokio::time::timeout(Duration::from_secs(5), client.get_connection_manager_with_config(config))
            .await
            .map_err(|e| unreachable(&e))?
            .map_err(|e| unreachable(&e))?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| unreachable(&e))?;
        Ok(Counters::Redis(conn))
    }

    /// Add `hits` to the counter `key` of a window of `ttl` seconds; the new count.
    async fn add(&self, key: &str, hits: u64, ttl: u64) -> Result<u64, StoreError> {
        match self {
            Counters::Memory(m) => Ok(m.add(key, hits, ttl)),
            Counters::Redis(conn) => {
                let mut conn = conn.clone();
                let (count,): (u64,) = redis::pipe()
                    .atomic()
                    .incr(key, hits)
                    .expire(key, i64::try_from(ttl).unwrap_or(i64::MAX))
                    .ignore()
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| StoreError(format!("Redis: {e}")))?;
                Ok(count)
            }
        }
    }
}

const SHARDS: usize = 32;

/// Sharded in-memory counters that expire with their window.
pub struct MemoryCounters {
    shards: Vec<Mutex<HashMap<String, (u64, u64)>>>,
}

impl Default for MemoryCounters {
    fn default() -> Self {
        MemoryCounters { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect() }
    }
}

impl MemoryCounters {
    fn add(&self, key: &str, hits: u64, ttl: u64) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let shard = &self.shards[usize::try_from(h.finish() % SHARDS as u64).unwrap_or(0)];
        let now = now_secs();
        let mut map = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Drop finished windows now and then, so memory follows live keys.
        if map.len() > 4096 && map.len().is_power_of_two() {
            map.retain(|_, (expires, _)| *expires > now);
        }
        let entry = map.entry(key.to_owned()).or_insert((now + ttl, 0));
        if entry.0 <= now {
            *entry = (now + ttl, 0);
        }
        entry.1 += hits;
        entry.1
    }
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Service {
    counters: Arc<Counters>,
    state: Arc<State>,
    last_warning: Arc<AtomicU64>,
}

impl Service {
    /// A service counting in `counters`, with its metrics in `state`.
    #[must_use]
    pub fn new(counters: Arc<Counters>, state: Arc<State>) -> Service {
        Service { counters, state, last_warning: Arc::default() }
    }

    /// As a tonic service.
    #[must_use]
    pub fn into_service(self) -> RateLimitServiceServer<Service> {
        RateLimitServiceServer::new(self)
    }

    /// The decision for one request from the proxy `node` (its
    /// [`NODE_HEADER`]) at `now` (seconds since the epoch).
    ///
    /// # Errors
    /// When a counter cannot be read.
    pub async fn decide(
        &self,
        req: &RateLimitRequest,
        node: Option<&str>,
        now: u64,
    ) -> Result<RateLimitResponse, StoreError> {
        let mut resp = RateLimitResponse { overall_code: Code::Ok.into(), ..Default::default() };
        // The status that most limits the client, for the headers.
        let mut tightest: Option<(u64, u64, u64, bool)> = None; // (limit, remaining, reset, over)
        let mut shadowed = Vec::new();
        for d in &req.descriptors {
            let spec = d.entries.iter().find(|e| e.key == SPEC_KEY).and_then(|e| LimitSpec::decode(&e.value));
            let Some(spec) = spec else {
                resp.statuses.push(DescriptorStatus { code: Code::Ok.into(), ..Default::default() });
                continue;
            };
            let mut key: Vec<String> =
                d.entries.iter().filter(|e| e.key != SPEC_KEY).map(|e| format!("{}={}", e.key, e.value)).collect();
            if spec.local {
                // A proxy whose bootstrap predates the header shares one
                // count with the others like it: never more than the limit.
                key.push(format!("node={}", node.unwrap_or_default()));
                if node.is_none() {
                    self.warn_now_and_then(&format!(
                        "a proxy without the {NODE_HEADER} header asks for the local limit `{}`; it is counted with \
                         every other such proxy. Make its bootstrap again with `legate bootstrap`",
                        spec.name
                    ));
                }
            }
            let hits = d.hits_addend.as_ref().map_or(u64::from(req.hits_addend), |h| h.value).max(1);
            let mut worst: Option<(Window, u64, u64, u64, bool)> = None;
            for (window, limit) in &spec.limits {
                let (index, reset) = window.at(now);
                let counter = format!("legate:rl:{}:{}:{index}:{}", spec.name, window.name(), key.join("|"));
                let count = self.counters.add(&counter, hits, reset + 1).await?;
                let remaining = limit.saturating_sub(count);
                let over = count > *limit;
                let tighter = worst
                    .is_none_or(|(_, _, r, _, o)| (over, std::cmp::Reverse(remaining)) > (o, std::cmp::Reverse(r)));
                if tighter {
                    worst = Some((*window, *limit, remaining, reset, over));
                }
            }
            let Some((window, limit, remaining, reset, over)) = worst else { continue };
            let enforced = over && !spec.shadow;
            if over && spec.shadow {
                shadowed.push(spec.name.clone());
            }
            if enforced {
                resp.overall_code = Code::OverLimit.into();
            }
            resp.statuses.push(DescriptorStatus {
                code: if enforced { Code::OverLimit } else { Code::Ok }.into(),
                current_limit: Some(CurrentLimit {
                    name: spec.name.clone(),
                    requests_per_unit: u32::try_from(limit).unwrap_or(u32::MAX),
                    unit: unit(window).into(),
                }),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: i64::try_from(reset).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                ..Default::default()
            });
            if spec.headers {
                let candidate = (limit, remaining, reset, enforced);
                if tightest
                    .is_none_or(|t| (candidate.3, std::cmp::Reverse(candidate.1)) > (t.3, std::cmp::Reverse(t.1)))
                {
                    tightest = Some(candidate);
                }
            }
        }
        if let Some((limit, remaining, reset, over)) = tightest {
            let h = |k: &str, v: u64| HeaderValue { key: k.to_owned(), value: v.to_string(), ..Default::default() };
            resp.response_headers_to_add = vec![
                h("x-ratelimit-limit", limit),
                h("x-ratelimit-remaining", remaining),
                h("x-ratelimit-reset", reset),
            ];
            if over {
                resp.response_headers_to_add.push(h("retry-after", reset.max(1)));
            }
        }
        if !shadowed.is_empty() {
            // Upstreams (and logs) can see what a dry-run limit would have done.
            resp.request_headers_to_add.push(HeaderValue {
                key: "x-ratelimit-shadow".into(),
                value: shadowed.join(","),
                ..Default::default()
            });
        }
        Ok(resp)
    }

    /// Log `message`, at most once per 10 s: what happens on every request
    /// (a store outage, say) must not flood the log.
    fn warn_now_and_then(&self, message: &str) {
        let now = now_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 10
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!("{message}");
        }
    }
}

fn unit(w: Window) -> Unit {
    match w {
        Window::Second => Unit::Second,
        Window::Minute => Unit::Minute,
        Window::Hour => Unit::Hour,
        Window::Day => Unit::Day,
        Window::Month => Unit::Month,
        Window::Year => Unit::Year,
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let node = request.metadata().get(NODE_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let req = request.into_inner();
        match self.decide(&req, node.as_deref(), now_secs()).await {
            Ok(resp) => {
                let result = if resp.overall_code == i32::from(Code::OverLimit) { "over_limit" } else { "ok" };
                self.state.metrics.rate_limit_decision(result);
                Ok(Response::new(resp))
            }
            Err(e) => {
                self.state.metrics.rate_limit_decision("error");
                self.warn_now_and_then(&format!(
                    "rate-limit counters unavailable ({e}); Envoy fails open, or closed for fail_closed limits"
                ));
                Err(Status::unavailable(format!("rate-limit counters unavailable: {e}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
        rate_limit_descriptor::Entry, RateLimitDescriptor,
    };

    fn request(spec: &str, client: &str) -> RateLimitRequest {
        let entry = |k: &str, v: &str| Entry { key: k.into(), value: v.into() };
        RateLimitRequest {
            domain: "legate".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![entry(SPEC_KEY, spec), entry("route", "r"), entry("remote_address", client)],
                ..Default::default()
            }],
            hits_addend: 0,
        }
    }

    fn service() -> Service {
        Service::new(Arc::new(Counters::memory()), State::new())
    }

    #[test]
    fn specs_round_trip_and_reject_garbage() {
        let spec = LimitSpec {
            name: "per-client".into(),
            limits: vec![(Window::Minute, 100), (Window::Hour, 5000)],
            headers: true,
            shadow: false,
            local: false,
        };
        assert_eq!(spec.encode(), "per-client|minute=100,hour=5000|headers");
        assert_eq!(LimitSpec::decode(&spec.encode()), Some(spec));
        assert_eq!(LimitSpec::decode("q|day=10,month=100,year=1000|").map(|s| s.limits.len()), Some(3));
        for bad in ["", "x", "x|minute=0|", "x|week=1|", "x|minute=a|", "|minute=1|", "x|minute=1||"] {
            assert_eq!(LimitSpec::decode(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn n_per_window_then_over_limit_with_headers_and_per_client() {
        let svc = service();
        let now = 1_800_000_010; // 10 s into a minute (1_800_000_000 is a whole hour)
        for i in 1..=3u32 {
            let r = svc.decide(&request("p|minute=3|headers", "1.1.1.1"), None, now).await.expect("decision");
            assert_eq!(r.overall_code, i32::from(Code::Ok), "request {i}");
            let remaining = &r.response_headers_to_add.iter().find(|h| h.key == "x-ratelimit-remaining").unwrap().value;
            assert_eq!(remaining, &(3 - i).to_string());
        }
        let r = svc.decide(&request("p|minute=3|headers", "1.1.1.1"), None, now).await.expect("decision");
        assert_eq!(r.overall_code, i32::from(Code::OverLimit));
        let header = |k: &str| r.response_headers_to_add.iter().find(|h| h.key == k).map(|h| h.value.clone());
        assert_eq!(header("retry-after").as_deref(), Some("50"));
        assert_eq!(header("x-ratelimit-reset").as_deref(), Some("50"));
        // Another client, and the next window, start afresh.
        let other = svc.decide(&request("p|minute=3|headers", "2.2.2.2"), None, now).await.expect("decision");
        assert_eq!(other.overall_code, i32::from(Code::Ok));
        let later = svc.decide(&request("p|minute=3|headers", "1.1.1.1"), None, now + 60).await.expect("decision");
        assert_eq!(later.overall_code, i32::from(Code::Ok));
    }

    #[tokio::test]
    async fn every_window_is_enforced_and_shadow_never_rejects() {
        let svc = service();
        let now = 1_800_000_000; // a whole hour
                                 // 2 per hour: the third request in a new minute is still refused.
        for (t, want) in [(0, Code::Ok), (1, Code::Ok), (61, Code::OverLimit)] {
            let r = svc.decide(&request("p|minute=5,hour=2|", "c"), None, now + t).await.expect("decision");
            assert_eq!(r.overall_code, i32::from(want), "at +{t}s");
        }
        for _ in 0..5 {
            let r = svc.decide(&request("s|minute=1|shadow", "c"), None, now).await.expect("decision");
            assert_eq!(r.overall_code, i32::from(Code::Ok));
        }
        let r = svc.decide(&request("s|minute=1|shadow", "c"), None, now).await.expect("decision");
        assert_eq!(r.request_headers_to_add.first().map(|h| h.value.as_str()), Some("s"));
    }

    #[tokio::test]
    async fn a_month_is_a_calendar_month() {
        let svc = service();
        let last_day = 1_709_208_000; // 2024-02-29T12:00:00Z
        for want in [Code::Ok, Code::Ok, Code::OverLimit] {
            let r = svc.decide(&request("m|month=2|headers", "c"), None, last_day).await.expect("decision");
            assert_eq!(r.overall_code, i32::from(want));
        }
        let r = svc.decide(&request("m|month=2|headers", "c"), None, last_day).await.expect("decision");
        let reset = r.response_headers_to_add.iter().find(|h| h.key == "x-ratelimit-reset").map(|h| h.value.clone());
        assert_eq!(reset.as_deref(), Some("43200"), "twelve hours to 2024-03-01");
        let march = svc.decide(&request("m|month=2|headers", "c"), None, last_day + 43_200).await.expect("decision");
        assert_eq!(march.overall_code, i32::from(Code::Ok), "a new month starts afresh");
    }

    #[tokio::test]
    async fn descriptors_that_are_not_legates_are_allowed() {
        let svc = service();
        let mut req = request("not a spec", "c");
        req.descriptors[0].entries.retain(|e| e.key != SPEC_KEY);
        let r = svc.decide(&req, None, 0).await.expect("decision");
        assert_eq!(r.overall_code, i32::from(Code::Ok));
    }
}

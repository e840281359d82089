//! Prometheus metrics (SPEC §4), served as text on the admin API.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// `{result="ok"|"error"|...}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, `error`, ...
    pub result: &'static str,
}

/// `{type="cds"|"eds"|"lds"|"rds"}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// Short xDS type name.
    pub r#type: &'static str,
}

/// `{aggregation, call, result}`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    /// The aggregation's name.
    pub aggregation: String,
    /// The call's name.
    pub call: String,
    /// `ok`, or why the call gave its default.
    pub result: &'static str,
}

/// Every metric legate exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Proxies with an open ADS stream.
    pub connected_proxies: Gauge,
    /// Policy reloads by result.
    pub config_reloads: Family<ResultLabel, Counter>,
    /// Responses sent, by type.
    pub pushes: Family<TypeLabel, Counter>,
    /// NACKs received, by type.
    pub nacks: Family<TypeLabel, Counter>,
    /// Seconds from a push to its ACK.
    pub push_to_ack: Histogram,
    /// Protocol errors that ended a stream.
    pub stream_errors: Counter,
    /// Global rate-limit decisions, by result.
    pub rate_limit_decisions: Family<ResultLabel, Counter>,
    /// Access-log entries received from proxies.
    pub access_log_entries: Counter,
    /// Seconds to load, validate and translate the policy folder.
    pub reload_duration: Histogram,
    /// Aggregation calls, by outcome.
    pub aggregation_calls: Family<CallLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("legate");
        let connected_proxies = Gauge::default();
        let config_reloads = Family::<ResultLabel, Counter>::default();
        let pushes = Family::<TypeLabel, Counter>::default();
        let nacks = Family::<TypeLabel, Counter>::default();
        let push_to_ack = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        let stream_errors = Counter::default();
        let rate_limit_decisions = Family::<ResultLabel, Counter>::default();
        let access_log_entries = Counter::default();
        let reload_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let aggregation_calls = Family::<CallLabel, Counter>::default();
        registry.register(
            "aggregation_calls",
            "Aggregation service calls: ok, or why the call's default was answered \
             (timeout, error, status, not_json, no_field)",
            aggregation_calls.clone(),
        );
        registry.register(
            "reload_duration_seconds",
            "Time to load, validate and translate the policy folder",
            reload_duration.clone(),
        );
        registry.register("access_log_entries", "Access-log entries received from proxies", access_log_entries.clone());
        registry.register("connected_proxies", "Envoy proxies with an open ADS stream", connected_proxies.clone());
        registry.register("config_reloads", "Policy reloads by result", config_reloads.clone());
        registry.register("pushes", "xDS responses sent, by type", pushes.clone());
        registry.register("nacks", "xDS responses rejected by a proxy, by type", nacks.clone());
        registry.register("push_to_ack_seconds", "Time from an xDS push to its ACK", push_to_ack.clone());
        registry.register("stream_errors", "ADS streams ended for breaking the protocol", stream_errors.clone());
        registry.register(
            "rate_limit_decisions",
            "Global rate-limit decisions: ok, over_limit, or error (counters unreachable)",
            rate_limit_decisions.clone(),
        );
        for result in ["ok", "over_limit", "error"] {
            let _ = rate_limit_decisions.get_or_create(&ResultLabel { result });
        }
        // Every series exists from the start, at 0, so dashboards and alerts see it.
        for result in ["ok", "error"] {
            let _ = config_reloads.get_or_create(&ResultLabel { result });
        }
        for kind in crate::snapshot::Kind::ALL {
            let _ = pushes.get_or_create(&TypeLabel { r#type: kind.short() });
            let _ = nacks.get_or_create(&TypeLabel { r#type: kind.short() });
        }
        Metrics {
            registry,
            connected_proxies,
            config_reloads,
            pushes,
            nacks,
            push_to_ack,
            stream_errors,
            rate_limit_decisions,
            access_log_entries,
            reload_duration,
            aggregation_calls,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Count a global rate-limit decision (`ok`, `over_limit`, `error`).
    pub fn rate_limit_decision(&self, result: &'static str) {
        self.rate_limit_decisions.get_or_create(&ResultLabel { result }).inc();
    }

    /// Count an aggregation call by its outcome.
    pub fn aggregation_call(&self, aggregation: &str, call: &str, result: &'static str) {
        let label = CallLabel { aggregation: aggregation.to_owned(), call: call.to_owned(), result };
        self.aggregation_calls.get_or_create(&label).inc();
    }

    /// Count a reload.
    pub fn reload(&self, ok: bool) {
        self.config_reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }
}

//! Every Prometheus metric ddbcache exports, in one place (the README's metrics table mirrors this
//! file). Each server owns its own registry, so several proxies in one process (tests) don't mix.

use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// One exported metric family, as [`Metrics::families`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub name: String,
    /// `counter`, `gauge` or `histogram`, as in the `# TYPE` line.
    pub kind: &'static str,
    pub labels: Vec<String>,
    pub help: String,
}

/// The two caches, as label values.
pub(crate) const CACHES: [&str; 2] = ["item", "query"];

pub struct Metrics {
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) in_flight: IntGauge,
    pub(crate) upstream_duration: HistogramVec,
    pub(crate) upstream_errors: IntCounterVec,
    pub(crate) cache_hits: IntCounterVec,
    pub(crate) cache_misses: IntCounterVec,
    pub(crate) cache_bypasses: IntCounterVec,
    pub(crate) cache_unstored: IntCounterVec,
    pub(crate) cache_consistent_reads: IntCounterVec,
    pub(crate) schema_fetches: IntCounterVec,
    pub(crate) cache_negative_hits: IntCounterVec,
    pub(crate) cache_evictions: IntCounterVec,
    pub(crate) cache_coalesced: IntCounterVec,
    pub(crate) invalidations: IntCounterVec,
    pub(crate) cache_entries: IntGaugeVec,
    pub(crate) cache_bytes: IntGaugeVec,
    pub(crate) cache_capacity: IntGaugeVec,
    pub(crate) ready: IntGauge,
    /// Time from a request's arrival to its response, for every request ddbcache answers.
    pub(crate) request_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                &registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let latency_buckets = vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            requests: counter(
                "ddbcache_requests_total",
                "Requests answered on the data port, by DynamoDB operation and HTTP status.",
                &["operation", "status"],
            ),
            in_flight: reg(
                &registry,
                IntGauge::new(
                    "ddbcache_requests_in_flight",
                    "Requests being handled on the data port.",
                )
                .expect("valid metric"),
            ),
            upstream_duration: reg(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ddbcache_upstream_request_duration_seconds",
                        "Time from sending a request upstream to having its whole response.",
                    )
                    .buckets(latency_buckets.clone()),
                    &["operation"],
                )
                .expect("valid metric"),
            ),
            upstream_errors: counter(
                "ddbcache_upstream_errors_total",
                "Upstream calls that got no response, by kind (connect, timeout, io, signing).",
                &["kind"],
            ),
            cache_hits: counter(
                "ddbcache_cache_hits_total",
                "Reads answered from a cache.",
                &["cache"],
            ),
            cache_misses: counter(
                "ddbcache_cache_misses_total",
                "Cacheable reads that went upstream.",
                &["cache"],
            ),
            cache_bypasses: counter(
                "ddbcache_cache_bypasses_total",
                "Cacheable reads that went around the cache, by reason (consistent_read, cache_off, not_understood, not_proven_valid, foreign_table, key_mismatch).",
                &["cache", "reason"],
            ),
            cache_unstored: counter(
                "ddbcache_cache_unstored_total",
                "Misses answered but not stored, by reason (raced, in_doubt, recent_write, schema, answer).",
                &["cache", "reason"],
            ),
            cache_consistent_reads: counter(
                "ddbcache_cache_consistent_reads_total",
                "Misses sent with ConsistentRead because what they read was written within the consistency window.",
                &["cache"],
            ),
            schema_fetches: counter(
                "ddbcache_schema_fetches_total",
                "DescribeTable calls ddbcache made to learn a table's key schema, by outcome (known, failed).",
                &["outcome"],
            ),
            cache_negative_hits: counter(
                "ddbcache_cache_negative_hits_total",
                "Hits that answered 'no such item' (a subset of hits).",
                &["cache"],
            ),
            cache_evictions: counter(
                "ddbcache_cache_evictions_total",
                "Entries evicted to stay within capacity.",
                &["cache"],
            ),
            cache_coalesced: counter(
                "ddbcache_cache_coalesced_total",
                "Misses that waited for another request's upstream call instead of making their own.",
                &["cache"],
            ),
            invalidations: counter(
                "ddbcache_cache_invalidations_total",
                "Invalidations, by cause (write, control, flush).",
                &["cause"],
            ),
            cache_entries: gauge_vec(
                "ddbcache_cache_entries",
                "Entries held (including expired ones not yet reclaimed).",
                &["cache"],
            ),
            cache_bytes: gauge_vec(
                "ddbcache_cache_bytes",
                "Bytes held, as weighed against capacity.",
                &["cache"],
            ),
            cache_capacity: gauge_vec(
                "ddbcache_cache_capacity_bytes",
                "Configured capacity.",
                &["cache"],
            ),
            ready: reg(
                &registry,
                IntGauge::new(
                    "ddbcache_ready",
                    "1 once credentials loaded and the upstream answered, until draining starts.",
                )
                .expect("valid metric"),
            ),
            request_duration: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ddbcache_request_duration_seconds",
                        "Time from a request's arrival on the data port to its response.",
                    )
                    .buckets(latency_buckets),
                )
                .expect("valid metric"),
            ),
            registry,
        };
        for cache in CACHES {
            // Export zeros from the start, so rate() works from the first scrape.
            for c in [
                &m.cache_hits,
                &m.cache_misses,
                &m.cache_evictions,
                &m.cache_coalesced,
                &m.cache_negative_hits,
            ] {
                c.with_label_values(&[cache]);
            }
        }
        m
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).unwrap_or_default()
    }

    /// Every metric family exported, observed or not: a labelled family appears in `/metrics`
    /// only once it has a child, so the rendered text alone does not list them all. The
    /// documentation tests compare this with the README's metrics table.
    pub fn families(&self) -> Vec<Family> {
        // Destructured so that a new metric cannot be left out of this list.
        let Metrics {
            registry: _,
            requests,
            in_flight,
            upstream_duration,
            upstream_errors,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_unstored,
            cache_consistent_reads,
            schema_fetches,
            cache_negative_hits,
            cache_evictions,
            cache_coalesced,
            invalidations,
            cache_entries,
            cache_bytes,
            cache_capacity,
            ready,
            request_duration,
        } = self;
        let collectors: [&dyn Collector; 19] = [
            requests,
            in_flight,
            upstream_duration,
            upstream_errors,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_unstored,
            cache_consistent_reads,
            schema_fetches,
            cache_negative_hits,
            cache_evictions,
            cache_coalesced,
            invalidations,
            cache_entries,
            cache_bytes,
            cache_capacity,
            ready,
            request_duration,
        ];
        collectors
            .into_iter()
            .flat_map(|c| c.desc().into_iter().zip(c.collect()))
            .map(|(desc, family)| Family {
                name: desc.fq_name.clone(),
                kind: match family.get_field_type() {
                    MetricType::COUNTER => "counter",
                    MetricType::GAUGE => "gauge",
                    MetricType::HISTOGRAM => "histogram",
                    MetricType::SUMMARY => "summary",
                    MetricType::UNTYPED => "untyped",
                },
                labels: desc.variable_labels.clone(),
                help: desc.help.clone(),
            })
            .collect()
    }

    pub(crate) fn eviction_counter(&self, cache: &str) -> IntCounter {
        self.cache_evictions.with_label_values(&[cache])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_its_prefix() {
        let m = Metrics::new();
        m.requests.with_label_values(&["GetItem", "200"]).inc();
        m.upstream_duration
            .with_label_values(&["GetItem"])
            .observe(0.001);
        let text = m.render();
        for name in [
            "ddbcache_requests_total{operation=\"GetItem\",status=\"200\"} 1",
            "ddbcache_cache_hits_total{cache=\"item\"} 0",
            "ddbcache_upstream_request_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "missing {name}");
        }
    }
}

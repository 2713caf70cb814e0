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

/// `collector`, registered in `registry`.
fn registered<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

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
    pub(crate) cache_stale_answers: IntCounterVec,
    pub(crate) cache_stale_age: Histogram,
    pub(crate) cache_refreshes: IntCounterVec,
    pub(crate) schema_fetches: IntCounterVec,
    pub(crate) cache_negative_hits: IntCounterVec,
    pub(crate) cache_evictions: IntCounterVec,
    pub(crate) cache_coalesced: IntCounterVec,
    pub(crate) invalidations: IntCounterVec,
    pub(crate) cache_entries: IntGaugeVec,
    pub(crate) cache_bytes: IntGaugeVec,
    pub(crate) cache_capacity: IntGaugeVec,
    pub(crate) ready: IntGauge,
    pub(crate) connections_open: IntGaugeVec,
    pub(crate) connections_closed: IntCounterVec,
    pub(crate) buffered_bytes: IntGauge,
    pub(crate) buffer_refusals: IntCounter,
    /// Time from a request's arrival to its response, for every request ddbcache answers.
    pub(crate) request_duration: Histogram,
    /// The fleet bus and the stream readers (`crate::fleet`).
    pub(crate) fleet: FleetMetrics,
    /// The shared tier (`crate::fleet::shared`).
    pub(crate) shared: SharedMetrics,
    /// The upstream's circuit breakers and read failover (`crate::upstream::breaker`).
    pub(crate) breaker: BreakerMetrics,
}

/// The metrics of the upstream's circuit breakers, and of the reads sent to a replica region
/// while one is open.
pub(crate) struct BreakerMetrics {
    pub(crate) state: IntGaugeVec,
    pub(crate) transitions: IntCounterVec,
    pub(crate) failover_reads: IntCounterVec,
}

impl BreakerMetrics {
    fn new(registry: &Registry) -> BreakerMetrics {
        BreakerMetrics {
            state: registered(
                registry,
                IntGaugeVec::new(
                    Opts::new(
                        "ddbcache_upstream_breaker_state",
                        "The circuit breaker of an upstream endpoint: 0 closed, 1 open (calls answered at once), 2 half-open (one probe call out).",
                    ),
                    &["endpoint"],
                )
                .expect("valid metric"),
            ),
            transitions: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "ddbcache_upstream_breaker_transitions_total",
                        "Changes of an endpoint's circuit breaker, by the state entered (open, half_open, closed).",
                    ),
                    &["endpoint", "to"],
                )
                .expect("valid metric"),
            ),
            failover_reads: registered(
                registry,
                IntCounterVec::new(
                    Opts::new(
                        "ddbcache_upstream_failover_reads_total",
                        "Eventually consistent reads sent to a replica region while the breaker of their own was open, by region and outcome (answered; failed: the client got the 503).",
                    ),
                    &["region", "outcome"],
                )
                .expect("valid metric"),
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 3] {
        let BreakerMetrics {
            state,
            transitions,
            failover_reads,
        } = self;
        [state, transitions, failover_reads]
    }
}

/// The metrics of the shared tier: what the caches asked of it and what came of it.
pub(crate) struct SharedMetrics {
    pub(crate) hits: IntCounterVec,
    pub(crate) lookups: IntCounterVec,
    pub(crate) fills: IntCounterVec,
    pub(crate) lease_waits: IntCounterVec,
    pub(crate) confirms: IntCounterVec,
    pub(crate) duration: Histogram,
    pub(crate) up: IntGauge,
}

impl SharedMetrics {
    fn new(registry: &Registry, latency_buckets: &[f64]) -> SharedMetrics {
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter_vec = |name: &str, help: &str, labels: &[&str], values: &[&str]| {
            let c = reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            );
            // Zeros from the start, so rate() works from the first scrape.
            for v in values {
                c.with_label_values(&[v]);
            }
            c
        };
        SharedMetrics {
            hits: counter_vec(
                "ddbcache_cache_shared_hits_total",
                "Reads answered from the shared tier (an entry another sidecar, or this one, kept in Redis), by cache.",
                &["cache"],
                &CACHES,
            ),
            lookups: counter_vec(
                "ddbcache_shared_lookups_total",
                "Keys looked up in the shared tier, by outcome (hit, miss, refused: an entry that does not open or match its key, error: no answer within fleet.shared.timeout).",
                &["outcome"],
                &["hit", "miss", "refused", "error"],
            ),
            fills: counter_vec(
                "ddbcache_shared_fills_total",
                "Entries offered to the shared tier, by outcome (stored; raced, in_doubt, recent, gone: refused by Redis; error).",
                &["outcome"],
                &["stored", "raced", "in_doubt", "recent", "gone", "error"],
            ),
            lease_waits: counter_vec(
                "ddbcache_shared_lease_waits_total",
                "Misses that waited for another sidecar's fill lease, by how the wait ended (filled, gave_up).",
                &["outcome"],
                &["filled", "gave_up"],
            ),
            confirms: counter_vec(
                "ddbcache_shared_confirms_total",
                "Hits confirmed against the versions in Redis (fleet.shared.consistency = strict), by outcome (current, stale, error).",
                &["outcome"],
                &["current", "stale", "error"],
            ),
            duration: reg(
                registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ddbcache_shared_duration_seconds",
                        "Time of one shared-tier round trip (lookup, fill or confirm), as the sidecar saw it.",
                    )
                    .buckets(latency_buckets.to_vec()),
                )
                .expect("valid metric"),
            ),
            up: reg(
                registry,
                IntGauge::new(
                    "ddbcache_shared_up",
                    "1 while the shared tier has a connection to Redis; 0 while lookups go straight upstream.",
                )
                .expect("valid metric"),
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 7] {
        let SharedMetrics {
            hits,
            lookups,
            fills,
            lease_waits,
            confirms,
            duration,
            up,
        } = self;
        [hits, lookups, fills, lease_waits, confirms, duration, up]
    }
}

/// The metrics of the fleet bus and of the DynamoDB Streams readers.
pub(crate) struct FleetMetrics {
    pub(crate) link_up: IntGauge,
    pub(crate) link_losses: IntCounter,
    pub(crate) publish_queue: IntGauge,
    pub(crate) published: IntCounter,
    pub(crate) publish_failures: IntCounterVec,
    pub(crate) publish_duration: Histogram,
    pub(crate) queue_overflows: IntCounter,
    pub(crate) received: IntCounterVec,
    pub(crate) invalidation_lag: Histogram,
    pub(crate) stream_records: IntCounterVec,
    pub(crate) stream_lag: Histogram,
    pub(crate) stream_lease_held: IntGaugeVec,
    pub(crate) stream_readable: IntGaugeVec,
    pub(crate) stream_errors: IntCounterVec,
}

impl FleetMetrics {
    fn new(registry: &Registry, latency_buckets: &[f64]) -> FleetMetrics {
        fn reg<C: Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let counter = |name: &str, help: &str| {
            reg(registry, IntCounter::new(name, help).expect("valid metric"))
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            reg(registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            reg(
                registry,
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            reg(
                registry,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let m = FleetMetrics {
            link_up: gauge(
                "ddbcache_fleet_link_up",
                "1 while subscribed to the fleet bus; 0 while the link is down (reads bypass the cache).",
            ),
            link_losses: counter(
                "ddbcache_fleet_link_losses_total",
                "Times the fleet bus subscription was lost (each ends with the whole cache dropped on resubscription).",
            ),
            publish_queue: gauge(
                "ddbcache_fleet_publish_queue",
                "Invalidations waiting to be published again (reads bypass the cache while any wait).",
            ),
            published: counter(
                "ddbcache_fleet_published_total",
                "Invalidations published on the fleet bus.",
            ),
            publish_failures: counter_vec(
                "ddbcache_fleet_publish_failures_total",
                "Publishes that failed, by kind (timeout, error, no_connection); the message is queued for retry.",
                &["kind"],
            ),
            publish_duration: histogram(
                "ddbcache_fleet_publish_duration_seconds",
                "Time a write waited for its invalidation to be published (what the bus adds to a write).",
                latency_buckets.to_vec(),
            ),
            queue_overflows: counter(
                "ddbcache_fleet_publish_queue_overflows_total",
                "Times the retry queue overflowed and collapsed into one 'invalidate everything'.",
            ),
            received: counter_vec(
                "ddbcache_fleet_received_total",
                "Messages received on the fleet bus, by outcome (applied, own, invalid).",
                &["outcome"],
            ),
            invalidation_lag: histogram(
                "ddbcache_fleet_invalidation_lag_seconds",
                "Time from a peer publishing an invalidation (its clock) to this sidecar applying it.",
                latency_buckets.to_vec(),
            ),
            stream_records: counter_vec(
                "ddbcache_stream_records_total",
                "DynamoDB Stream records read, by table.",
                &["table"],
            ),
            stream_lag: histogram(
                "ddbcache_stream_lag_seconds",
                "Time from a stream record's ApproximateCreationDateTime to its invalidation here.",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0],
            ),
            stream_lease_held: gauge_vec(
                "ddbcache_stream_lease_held",
                "1 while this sidecar holds the fleet's lease on a table's stream (and so reads it).",
                &["table"],
            ),
            stream_readable: gauge_vec(
                "ddbcache_stream_readable",
                "1 while a table's stream is found and read; 0 when it is not enabled or not readable.",
                &["table"],
            ),
            stream_errors: counter_vec(
                "ddbcache_stream_errors_total",
                "Stream calls that failed, by kind (throttled, expired_iterator, trimmed, not_enabled, denied, upstream, redis, other).",
                &["kind"],
            ),
        };
        for outcome in ["applied", "own", "invalid"] {
            m.received.with_label_values(&[outcome]);
        }
        for kind in ["timeout", "error", "no_connection"] {
            m.publish_failures.with_label_values(&[kind]);
        }
        m
    }

    fn collectors(&self) -> [&dyn Collector; 14] {
        let FleetMetrics {
            link_up,
            link_losses,
            publish_queue,
            published,
            publish_failures,
            publish_duration,
            queue_overflows,
            received,
            invalidation_lag,
            stream_records,
            stream_lag,
            stream_lease_held,
            stream_readable,
            stream_errors,
        } = self;
        [
            link_up,
            link_losses,
            publish_queue,
            published,
            publish_failures,
            publish_duration,
            queue_overflows,
            received,
            invalidation_lag,
            stream_records,
            stream_lag,
            stream_lease_held,
            stream_readable,
            stream_errors,
        ]
    }
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
                "Upstream calls that got no response, by kind (connect, timeout, backstop, io, signing, breaker_open: refused at once by the endpoint's circuit breaker).",
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
                "Misses answered but not stored, by reason (raced, in_doubt, recent_write, schema, answer, checksum, shape).",
                &["cache", "reason"],
            ),
            cache_consistent_reads: counter(
                "ddbcache_cache_consistent_reads_total",
                "Misses sent with ConsistentRead because what they read was written within the consistency window.",
                &["cache"],
            ),
            cache_stale_answers: counter(
                "ddbcache_cache_stale_answers_total",
                "Reads DynamoDB failed that an expired, never invalidated entry answered (stale-if-error), by cache and reason (unavailable, server_error, throttled, breaker).",
                &["cache", "reason"],
            ),
            cache_stale_age: reg(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "ddbcache_cache_stale_age_seconds",
                        "How long past their TTL the entries stale-if-error answered were.",
                    )
                    .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0]),
                )
                .expect("valid metric"),
            ),
            cache_refreshes: counter(
                "ddbcache_cache_refreshes_total",
                "Background refreshes of entries in the last part of their TTL (refresh-ahead), by cache and outcome (stored, unstored, failed, busy, budget).",
                &["cache", "outcome"],
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
            connections_open: gauge_vec(
                "ddbcache_connections_open",
                "Client connections open, by port (data, admin).",
                &["port"],
            ),
            connections_closed: counter(
                "ddbcache_connections_closed_total",
                "Client connections ddbcache closed itself, by port and reason (header_timeout, idle_timeout, tls_handshake).",
                &["port", "reason"],
            ),
            buffered_bytes: reg(
                &registry,
                IntGauge::new(
                    "ddbcache_request_buffer_bytes",
                    "Request body bytes reserved for buffering right now (bounded by server.max_buffered_bytes).",
                )
                .expect("valid metric"),
            ),
            buffer_refusals: reg(
                &registry,
                IntCounter::new(
                    "ddbcache_request_buffer_refusals_total",
                    "Requests answered 503 because server.max_buffered_bytes stayed full for server.buffer_wait.",
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
                    .buckets(latency_buckets.clone()),
                )
                .expect("valid metric"),
            ),
            fleet: FleetMetrics::new(&registry, &latency_buckets),
            shared: SharedMetrics::new(&registry, &latency_buckets),
            breaker: BreakerMetrics::new(&registry),
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
            cache_stale_answers,
            cache_stale_age,
            cache_refreshes,
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
            fleet,
            shared,
            breaker,
            connections_open,
            connections_closed,
            buffered_bytes,
            buffer_refusals,
        } = self;
        let collectors: [&dyn Collector; 26] = [
            requests,
            in_flight,
            upstream_duration,
            upstream_errors,
            cache_hits,
            cache_misses,
            cache_bypasses,
            cache_unstored,
            cache_consistent_reads,
            cache_stale_answers,
            cache_stale_age,
            cache_refreshes,
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
            connections_open,
            connections_closed,
            buffered_bytes,
            buffer_refusals,
        ];
        collectors
            .into_iter()
            .chain(fleet.collectors())
            .chain(shared.collectors())
            .chain(breaker.collectors())
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

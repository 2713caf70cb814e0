//! The last phase: every request counted and logged, and the counters the read paths bump. Each
//! labelled counter is resolved once, here: a labelled lookup per request would take the metric
//! family's lock and hash its labels.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use prometheus::IntCounter;
use strum::VariantArray;
use tracing::debug;

use crate::cache::Kind;
use crate::metrics::Metrics;
use crate::protocol::Operation;

use super::policy::{BypassReason, Failure, Refreshed, Unstored};
use super::respond::{Body, Outcome};

/// The proxy's counters, by label.
pub(crate) struct Counters {
    /// `ddbcache_requests_total{operation, status="200"}` per operation (indexed by the
    /// operation), resolved on first use: most requests end here.
    ok_requests: Box<[OnceLock<IntCounter>]>,
    /// `ddbcache_cache_bypasses_total{cache, reason}`, by kind then reason.
    bypasses: [Box<[IntCounter]>; 2],
    /// `ddbcache_cache_unstored_total{cache, reason}`, by kind then reason.
    unstored: [Box<[IntCounter]>; 2],
    /// `ddbcache_cache_consistent_reads_total{cache}`, by kind.
    consistent_reads: [IntCounter; 2],
    /// `ddbcache_cache_stale_answers_total{cache, reason}`, by kind then failure.
    stale_answers: [Box<[IntCounter]>; 2],
    /// `ddbcache_cache_refreshes_total{cache, outcome}`, by kind then outcome.
    refreshes: [Box<[IntCounter]>; 2],
    metrics: Arc<Metrics>,
}

fn index(kind: Kind) -> usize {
    match kind {
        Kind::Item => 0,
        Kind::Query => 1,
    }
}

impl Counters {
    /// Resolves every handle, which also exports zeros from the start (so rate() works from the
    /// first scrape).
    pub(crate) fn new(metrics: Arc<Metrics>) -> Counters {
        let labelled = |family: &prometheus::IntCounterVec, kind: Kind, labels: &[&'static str]| {
            labels
                .iter()
                .map(|l| family.with_label_values(&[kind.label(), l]))
                .collect::<Box<[IntCounter]>>()
        };
        let failures: Vec<&'static str> = Failure::VARIANTS.iter().map(|f| f.into()).collect();
        let refreshed: Vec<&'static str> = Refreshed::VARIANTS.iter().map(|r| r.into()).collect();
        let stale_answers =
            [Kind::Item, Kind::Query].map(|k| labelled(&metrics.cache_stale_answers, k, &failures));
        let refreshes =
            [Kind::Item, Kind::Query].map(|k| labelled(&metrics.cache_refreshes, k, &refreshed));
        let by_kind = |kind: Kind| {
            let bypasses = BypassReason::VARIANTS
                .iter()
                .map(|r| {
                    metrics
                        .cache_bypasses
                        .with_label_values(&[kind.label(), r.into()])
                })
                .collect();
            let unstored = Unstored::VARIANTS
                .iter()
                .map(|r| {
                    metrics
                        .cache_unstored
                        .with_label_values(&[kind.label(), r.into()])
                })
                .collect();
            let consistent = metrics
                .cache_consistent_reads
                .with_label_values(&[kind.label()]);
            (bypasses, unstored, consistent)
        };
        let (item, query) = (by_kind(Kind::Item), by_kind(Kind::Query));
        Counters {
            ok_requests: Operation::ALL.iter().map(|_| OnceLock::new()).collect(),
            bypasses: [item.0, query.0],
            unstored: [item.1, query.1],
            consistent_reads: [item.2, query.2],
            stale_answers,
            refreshes,
            metrics,
        }
    }

    pub(crate) fn bypass(&self, kind: Kind, reason: BypassReason) {
        self.bypasses[index(kind)][reason as usize].inc();
    }

    pub(crate) fn unstored(&self, kind: Kind, reason: Unstored) {
        self.unstored[index(kind)][reason as usize].inc();
    }

    /// An expired entry answered a read DynamoDB failed, `past` after its TTL ended.
    pub(crate) fn stale_answer(&self, kind: Kind, failure: Failure, past: Duration) {
        self.stale_answers[index(kind)][failure as usize].inc();
        self.metrics.cache_stale_age.observe(past.as_secs_f64());
    }

    pub(crate) fn refreshed(&self, kind: Kind, outcome: Refreshed) {
        self.refreshes[index(kind)][outcome as usize].inc();
    }

    pub(crate) fn consistent_read(&self, kind: Kind) {
        self.consistent_reads[index(kind)].inc();
    }

    /// Counts a request in flight until the returned guard is dropped, however the request ends.
    pub(crate) fn in_flight(&self) -> impl Drop + '_ {
        struct InFlight<'a>(&'a Metrics);
        impl Drop for InFlight<'_> {
            fn drop(&mut self) {
                self.0.in_flight.dec();
            }
        }
        self.metrics.in_flight.inc();
        InFlight(&self.metrics)
    }

    /// Counts one of ddbcache's own DescribeTable calls, by whether it gave the key schema.
    pub(crate) fn schema_fetch(&self, known: bool) {
        self.metrics
            .schema_fetches
            .with_label_values(&[if known { "known" } else { "failed" }])
            .inc();
    }

    /// Counts and logs a finished request.
    pub(crate) fn request(
        &self,
        op: Option<Operation>,
        response: &Response<Body>,
        outcome: Outcome,
        started: Instant,
    ) {
        let op_name = op.map_or("Unknown", Operation::name);
        match op {
            Some(op) if response.status() == StatusCode::OK => self.ok_requests[op as usize]
                .get_or_init(|| self.metrics.requests.with_label_values(&[op_name, "200"]))
                .inc(),
            _ => self
                .metrics
                .requests
                .with_label_values(&[op_name, response.status().as_str()])
                .inc(),
        }
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        debug!(
            op = op_name,
            status = response.status().as_u16(),
            outcome = outcome.label(),
            micros = started.elapsed().as_micros() as u64,
            "request"
        );
    }
}

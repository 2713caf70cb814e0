//! The way upstream: a request sent as the client sent it (re-signed by the upstream client), or
//! asking for an uncompressed answer the caches can store — how long its answer is waited for,
//! and whether it goes at all, decided here for every upstream call of the request path.
//!
//! A slow answer is still DynamoDB's answer, so by default ddbcache sets no limit of its own on
//! what a client waits for: the client's own timeout governs. A client that hangs up drops its
//! request, and with it the upstream call of a read (single-flight waiters on the same key then
//! take their turn and send their own). A write is sent from a task of its own and waited for to
//! its end ([`Forwarder::see_through`]), `upstream.backstop` at most once no client waits for it;
//! so are ddbcache's own calls made for a request ([`Forwarder::send_own`]). `upstream.timeout`,
//! when set, answers every request a retryable 503 that long after its admission.
//!
//! A hung upstream is a circuit breaker's to cut short, not a per-request timeout's: every call
//! passes [`Forwarder::call`], which asks the breaker of the endpoint it goes to
//! ([`crate::upstream::breaker`]) first and tells it how the call ended. While a breaker is open,
//! calls to its endpoint are answered DynamoDB's retryable 503 at once, writes included (a write
//! refused at once was never sent, so it is not in doubt), with an error that says so
//! ([`UpstreamError::refused_at_once`]) — except an eventually consistent read of a table that
//! fails over ([`super::failover`]): it is sent to a replica region whose breaker is closed,
//! signed for it, and its answer marked and counted.

use std::borrow::Cow;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::FutureExt;
use http::StatusCode;
use prometheus::Histogram;
use tracing::{debug, warn};

use super::failover::{self, Failover};
use super::front_door;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protocol::region::Region;
use crate::protocol::table::TableId;
use crate::protocol::{OpClass, Operation, ProtocolError};
use crate::upstream::breaker::{Breakers, Verdict};
use crate::upstream::{error_chain, FromReplica, Upstream, UpstreamError, UpstreamResponse};

use super::admit::Inbound;

/// Whether a forwarded request asks the upstream for an uncompressed answer (what the caches
/// store) or keeps the client's `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    AsClientAsked,
}

/// Sends requests upstream and returns whole answers.
pub(crate) struct Forwarder {
    upstream: Arc<Upstream>,
    /// `upstream.timeout`: a request's upstream time, counted from its admission; none by
    /// default.
    timeout: Option<Duration>,
    /// `upstream.backstop`: how long an answer no client waits for is waited for.
    backstop: Duration,
    /// A circuit breaker per endpoint; none unless `upstream.breaker_failures` is set.
    breakers: Option<Breakers>,
    /// The tables whose reads fail over, and their replica regions; none unless a table's do.
    failover: Option<Failover>,
    /// `ddbcache_upstream_request_duration_seconds{operation}`, indexed by the operation and
    /// resolved on first use: a labelled lookup per call would take the family's lock and hash.
    durations: Box<[OnceLock<Histogram>]>,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub(crate) fn new(
        upstream: Arc<Upstream>,
        config: &Arc<Config>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Forwarder {
            upstream,
            timeout: config.upstream.timeout,
            backstop: config.upstream.backstop,
            breakers: Breakers::new(&config.upstream, &metrics.breaker),
            failover: Failover::new(config),
            durations: Operation::ALL.iter().map(|_| OnceLock::new()).collect(),
            metrics,
        }
    }

    /// Sends a request its client waits for, and returns the whole answer; no answer at all
    /// (unreachable, connection lost, `upstream.timeout` passed, refused by the endpoint's
    /// breaker) is a retryable error for the client. Waited for as long as the client waits,
    /// unless `upstream.timeout` is set (or, for a cacheable read, until its endpoint's breaker
    /// opens: [`Forwarder::call`]).
    pub(crate) async fn send(
        &self,
        inb: &Inbound,
        encoding: Encoding,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call(inb, encoding, self.deadline(inb)).await
    }

    /// A call of ddbcache's own made for a request (its `DescribeTable`): waited for as a
    /// request is, and `upstream.backstop` at most, whether a client waits for it or not.
    pub(crate) async fn send_own(
        &self,
        inb: &Inbound,
        encoding: Encoding,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let give_up = async {
            tokio::select! {
                timed_out = self.deadline(inb) => timed_out,
                nobody = self.backstop_after(async {}) => nobody,
            }
        };
        self.call(inb, encoding, give_up).await
    }

    /// A write, seen through: waited for to its end while its client waits, and for
    /// `upstream.backstop` more once `abandoned` resolves (its client hung up, or was answered at
    /// its deadline). Only then does ddbcache stop waiting without an answer, and what the write
    /// touched is in doubt.
    pub(crate) async fn see_through(
        &self,
        inb: &Inbound,
        abandoned: impl Future<Output = ()>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.call(inb, Encoding::AsClientAsked, self.backstop_after(abandoned))
            .await
    }

    /// `answer`, or the client's retryable 503 at the request's deadline (`upstream.timeout`
    /// from its admission; never when unset). For a write whose upstream call goes on without it.
    pub(crate) async fn by_deadline<T>(
        &self,
        inb: &Inbound,
        answer: impl Future<Output = T>,
    ) -> Result<T, ProtocolError> {
        tokio::select! {
            answered = answer => Ok(answered),
            timed_out = self.deadline(inb) => Err(self.failed(inb, timed_out).into()),
        }
    }

    /// The refusal `inb` would get now from its endpoint's breaker (open, or half-open with its
    /// probe out), counted; `None` when it would go (it may be the probe). For a write, which
    /// does nothing before its call if that is refused.
    pub(crate) fn refusing(&self, inb: &Inbound) -> Option<UpstreamError> {
        let breakers = self.breakers.as_ref()?;
        let endpoint = self.upstream.endpoint_url(inb.op, inb.region.as_str());
        Some(self.refused_at_once(breakers.refusing(&endpoint)?))
    }

    /// What a DescribeTable of `table` said of its replica regions (for its reads' failover).
    pub(crate) fn learned_replicas(&self, table: &TableId, replicas: Vec<Region>) {
        if let Some(failover) = &self.failover {
            failover.learned(table, replicas);
        }
    }

    /// Resolves at the request's deadline — one `upstream.timeout` from its admission, whether it
    /// spends it waiting for another request's fill or on its own call — with the error to
    /// report; never when `upstream.timeout` is unset: the client decides how long it waits.
    async fn deadline(&self, inb: &Inbound) -> UpstreamError {
        let Some(timeout) = self.timeout else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until((inb.admitted + timeout).into()).await;
        UpstreamError::Timeout {
            endpoint: self.upstream.endpoint().to_string(),
            timeout,
        }
    }

    /// Resolves `upstream.backstop` after `abandoned` does, with the error to report.
    async fn backstop_after(&self, abandoned: impl Future<Output = ()>) -> UpstreamError {
        abandoned.await;
        tokio::time::sleep(self.backstop).await;
        UpstreamError::Backstop {
            endpoint: self.upstream.endpoint().to_string(),
            backstop: self.backstop,
        }
    }

    /// Every upstream call of the request path: let through by its endpoint's breaker (or, while
    /// that is open, failed over or refused at once), sent, waited for until the answer or until
    /// `give_up` resolves (with why), then counted, by the breaker too. `give_up` is polled
    /// first, so a request whose time ran out while it waited for another's fill is not sent at
    /// all (and says nothing of the endpoint).
    ///
    /// A cacheable read let through a closed breaker also gives up when that breaker opens: it
    /// is then refused as the reads after it are (and answered stale where that is allowed),
    /// rather than waiting on an endpoint judged down, and so are the reads waiting for its
    /// fill. Writes, ddbcache's own calls and the probe wait as before.
    async fn call(
        &self,
        inb: &Inbound,
        encoding: Encoding,
        give_up: impl Future<Output = UpstreamError>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut give_up = pin!(give_up);
        if let Some(gave_up) = give_up.as_mut().now_or_never() {
            return Err(self.failed(inb, gave_up));
        }
        let (permit, watched) = match &self.breakers {
            None => (None, None),
            Some(breakers) => {
                let endpoint = self.upstream.endpoint_url(inb.op, inb.region.as_str());
                match breakers.admit(&endpoint) {
                    Ok(permit) => {
                        let read = matches!(inb.op.class(), OpClass::ItemRead | OpClass::QueryRead);
                        let watched = (read && !permit.is_probe()).then_some((breakers, endpoint));
                        (Some(permit), watched)
                    }
                    Err(refused) => return self.refused(inb, encoding, refused, give_up).await,
                }
            }
        };
        let give_up = async {
            let Some((breakers, endpoint)) = &watched else {
                return give_up.await;
            };
            tokio::select! {
                gave_up = give_up => gave_up,
                refused = breakers.opened(endpoint) => refused,
            }
        };
        // The exchange's future (endpoint, signing, the pooled client's call, the body) is most
        // of a forwarded request's: on the heap, so that the futures of every path that may
        // forward stay small (a future is moved whole at each await that creates it).
        let result = Box::pin(self.exchange(inb, &inb.region, encoding, pin!(give_up))).await;
        if let Some(permit) = permit {
            permit.settle(Verdict::of(&result));
        }
        result.map_err(|e| self.failed(inb, e))
    }

    /// A call its endpoint's breaker refused: failed over when it may be, else the refusal.
    async fn refused(
        &self,
        inb: &Inbound,
        encoding: Encoding,
        refused: UpstreamError,
        give_up: Pin<&mut impl Future<Output = UpstreamError>>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        if let Some(answer) = self.fail_over(inb, encoding, give_up).await {
            return Ok(answer);
        }
        Err(self.refused_at_once(refused))
    }

    /// Counts a refusal of the breaker (not logged: the breaker logged when it opened).
    fn refused_at_once(&self, refused: UpstreamError) -> UpstreamError {
        self.metrics
            .upstream_errors
            .with_label_values(&[refused.kind()])
            .inc();
        refused
    }

    /// An eventually consistent read of a table that fails over, sent to the first of its replica
    /// regions whose breaker is closed ([`Failover::route`]), signed for it. Its answer, when a
    /// 200, is marked ([`failover::HEADER_FAILOVER`]) and says whether the cache may keep it;
    /// `None` otherwise (the client then gets the refusal its own region's breaker gave).
    async fn fail_over(
        &self,
        inb: &Inbound,
        encoding: Encoding,
        give_up: Pin<&mut impl Future<Output = UpstreamError>>,
    ) -> Option<UpstreamResponse> {
        let (failover, breakers) = (self.failover.as_ref()?, self.breakers.as_ref()?);
        let endpoint = |region: &Region| self.upstream.endpoint_url(inb.op, region.as_str());
        let route = failover.route(inb.op, &inb.region, &inb.json, |region| {
            breakers.is_closed(&endpoint(region))
        })?;
        let permit = breakers.admit(&endpoint(&route.region)).ok()?;
        // On the heap, as in `call`: awaited in place, the exchange would make every call's
        // future (this path is one of its branches) as large as itself.
        let result = Box::pin(self.exchange(inb, &route.region, encoding, give_up)).await;
        permit.settle(Verdict::of(&result));
        let outcome = match result {
            Ok(mut answer) if answer.status == StatusCode::OK => {
                answer.from_replica = Some(FromReplica {
                    region: route.region.clone(),
                    storable: route.storable,
                });
                failover::mark(&mut answer);
                Some(answer)
            }
            Ok(answer) => {
                debug!(op = inb.op.name(), region = %route.region, status = %answer.status,
                    "a replica region did not answer a read failed over to it");
                None
            }
            Err(e) => {
                self.failed(inb, e);
                None
            }
        };
        let label = if outcome.is_some() {
            "answered"
        } else {
            "failed"
        };
        self.metrics
            .breaker
            .failover_reads
            .with_label_values(&[route.region.as_str(), label])
            .inc();
        outcome
    }

    /// One exchange with `region`'s endpoint, signed for it, until its answer or until `give_up`
    /// resolves; an answer's time is observed.
    async fn exchange(
        &self,
        inb: &Inbound,
        region: &Region,
        encoding: Encoding,
        give_up: Pin<&mut impl Future<Output = UpstreamError>>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        // A signature in the query string is the client's: when ddbcache signs, the upstream
        // gets ddbcache's signature instead, in the headers.
        let path = if inb.admission.query_signed && self.upstream.signer().is_some() {
            front_door::without_query_auth(inb.path.as_str())
        } else {
            Cow::Borrowed(inb.path.as_str())
        };
        let send = self.upstream.exchange(
            inb.op,
            region.as_str(),
            &path,
            &inb.headers,
            inb.body.clone(),
            encoding == Encoding::Identity,
        );
        let result = tokio::select! {
            biased;
            gave_up = give_up => Err(gave_up),
            answered = send => answered,
        };
        if let Ok(r) = &result {
            self.durations[inb.op as usize]
                .get_or_init(|| {
                    self.metrics
                        .upstream_duration
                        .with_label_values(&[inb.op.name()])
                })
                .observe(r.elapsed.as_secs_f64());
        }
        result
    }

    /// Counts and logs a call that got no answer.
    fn failed(&self, inb: &Inbound, e: UpstreamError) -> UpstreamError {
        self.metrics
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        warn!(op = inb.op.name(), error = %error_chain(&e), "upstream call failed");
        e
    }
}

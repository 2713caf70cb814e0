//! The way upstream: a request sent as the client sent it (re-signed by the upstream client), or
//! asking for an uncompressed answer the caches can store — and how long its answer is waited for,
//! decided here for every upstream call of the request path.
//!
//! A slow answer is still DynamoDB's answer, so by default ddbcache sets no limit of its own on
//! what a client waits for: the client's own timeout governs. A client that hangs up drops its
//! request, and with it the upstream call of a read (single-flight waiters on the same key then
//! take their turn and send their own). A write is sent from a task of its own and waited for to
//! its end ([`Forwarder::see_through`]), `upstream.backstop` at most once no client waits for it;
//! so are ddbcache's own calls made for a request ([`Forwarder::send_own`]). `upstream.timeout`,
//! when set, answers every request a retryable 503 that long after its admission.
//!
//! A hung upstream is a circuit breaker's to cut short, not a per-request timeout's: a breaker per
//! endpoint belongs in [`Forwarder::call`], which every upstream call of the request path passes,
//! with the future that decides when it stops waiting.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::front_door;
use crate::config::UpstreamConfig;
use crate::metrics::Metrics;
use crate::protocol::ProtocolError;
use crate::upstream::{error_chain, Upstream, UpstreamError, UpstreamResponse};

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
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub(crate) fn new(
        upstream: Arc<Upstream>,
        config: &UpstreamConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Forwarder {
            upstream,
            timeout: config.timeout,
            backstop: config.backstop,
            metrics,
        }
    }

    /// Sends a request its client waits for, and returns the whole answer; no answer at all
    /// (unreachable, connection lost, `upstream.timeout` passed) is a retryable error for the
    /// client. Waited for as long as the client waits, unless `upstream.timeout` is set.
    pub(crate) async fn send(
        &self,
        inb: &Inbound,
        encoding: Encoding,
    ) -> Result<UpstreamResponse, ProtocolError> {
        self.call(inb, encoding, self.deadline(inb)).await
    }

    /// A call of ddbcache's own made for a request (its `DescribeTable`): waited for as a
    /// request is, and `upstream.backstop` at most, whether a client waits for it or not.
    pub(crate) async fn send_own(
        &self,
        inb: &Inbound,
        encoding: Encoding,
    ) -> Result<UpstreamResponse, ProtocolError> {
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
    ) -> Result<UpstreamResponse, ProtocolError> {
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
            timed_out = self.deadline(inb) => Err(self.failed(inb, timed_out)),
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

    /// Every upstream call of the request path: sent, and waited for until the answer or until
    /// `give_up` resolves (with why), then counted. `give_up` is polled first, so a request whose
    /// time ran out while it waited for another's fill is not sent at all. A circuit breaker per
    /// endpoint would sit here: refusing before the send, learning from the result.
    async fn call(
        &self,
        inb: &Inbound,
        encoding: Encoding,
        give_up: impl Future<Output = UpstreamError>,
    ) -> Result<UpstreamResponse, ProtocolError> {
        // A signature in the query string is the client's: when ddbcache signs, the upstream
        // gets ddbcache's signature instead, in the headers.
        let path = if inb.admission.query_signed && self.upstream.signer().is_some() {
            front_door::without_query_auth(&inb.path)
        } else {
            Cow::Borrowed(inb.path.as_str())
        };
        let send = self.upstream.exchange(
            inb.op,
            inb.region.as_str(),
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
        match result {
            Ok(r) => {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[inb.op.name()])
                    .observe(r.elapsed.as_secs_f64());
                Ok(r)
            }
            Err(e) => Err(self.failed(inb, e)),
        }
    }

    /// Counts and logs a call that got no answer, and says what the client sees.
    fn failed(&self, inb: &Inbound, e: UpstreamError) -> ProtocolError {
        self.metrics
            .upstream_errors
            .with_label_values(&[e.kind()])
            .inc();
        warn!(op = inb.op.name(), error = %error_chain(&e), "upstream call failed");
        e.to_protocol()
    }
}

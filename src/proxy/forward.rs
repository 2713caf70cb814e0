//! The way upstream: a request sent as the client sent it (re-signed by the upstream client), or
//! asking for an uncompressed answer the caches can store, within the request's upstream time.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::front_door;
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
    /// `upstream.timeout`: a request's upstream time, counted from its admission.
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Forwarder {
    pub(crate) fn new(upstream: Arc<Upstream>, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Forwarder {
            upstream,
            timeout,
            metrics,
        }
    }

    /// How long a request may take upstream: one `upstream.timeout` from its admission, whether
    /// it spends it waiting for another request's fill or on its own upstream call.
    fn deadline(&self, inb: &Inbound) -> Instant {
        inb.admitted + self.timeout
    }

    /// Sends a request upstream and returns the whole answer; no answer at all (unreachable,
    /// timed out, connection lost) is a retryable error for the client.
    pub(crate) async fn send(
        &self,
        inb: &Inbound,
        encoding: Encoding,
    ) -> Result<UpstreamResponse, ProtocolError> {
        // A signature in the query string is the client's: when ddbcache signs, the upstream
        // gets ddbcache's signature instead, in the headers.
        let path = if inb.admission.query_signed && self.upstream.signer().is_some() {
            front_door::without_query_auth(&inb.path)
        } else {
            Cow::Borrowed(inb.path.as_str())
        };
        let deadline = self.deadline(inb);
        let timed_out = || UpstreamError::Timeout {
            endpoint: self.upstream.endpoint().to_string(),
            timeout: self.timeout,
        };
        let send = self.upstream.send(
            inb.op,
            inb.region.as_str(),
            &path,
            &inb.headers,
            inb.body.clone(),
            encoding == Encoding::Identity,
        );
        // A request that spent its time waiting for another's fill is not sent at all.
        let result = if Instant::now() >= deadline {
            Err(timed_out())
        } else {
            tokio::time::timeout_at(deadline.into(), send)
                .await
                .unwrap_or_else(|_| Err(timed_out()))
        };
        match result {
            Ok(r) => {
                self.metrics
                    .upstream_duration
                    .with_label_values(&[inb.op.name()])
                    .observe(r.elapsed.as_secs_f64());
                Ok(r)
            }
            Err(e) => {
                self.metrics
                    .upstream_errors
                    .with_label_values(&[e.kind()])
                    .inc();
                warn!(op = inb.op.name(), error = %error_chain(&e), "upstream call failed");
                Err(e.to_protocol())
            }
        }
    }
}

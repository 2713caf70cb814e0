//! The request pipeline. [`Proxy::handle`] is the life of one request, phase by phase, each in a
//! file named for it:
//!
//! 1. admit ([`admit`]): a body within the limit, gzip undone for reading, and what DynamoDB's
//!    front door answers before any operation runs (`protocol::front_door`);
//! 2. classify ([`Proxy::dispatch`]): the operation's class picks the path;
//! 3. reads ([`reads`]: GetItem, Query, Scan; [`batch_get`]: BatchGetItem) parse the request, ask
//!    the [`policy`] whether the cache may be used, look up, forward a miss and fill; writes
//!    ([`writes`]: items, PartiQL, control plane) invalidate, forward, and invalidate again;
//! 4. respond ([`respond`]): a hit's stored bytes, the upstream's answer, or ddbcache's own error;
//!    then the request is counted and logged.
//!
//! Cache policy is decided in [`policy`] only; the cache itself ([`crate::cache`]) knows nothing of
//! HTTP, and the upstream client ([`crate::upstream`]) nothing of the cache.

mod admit;
mod batch_get;
mod budget;
mod policy;
mod reads;
pub mod respond;
mod tables;
mod writes;

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus::IntCounter;
use tracing::{debug, warn};

use crate::cache::{Cache, Kind};
use crate::config::Config;
use crate::fleet::{self, Fleet};
use crate::metrics::Metrics;
use crate::protocol::front_door;
use crate::protocol::{OpClass, Operation, ProtocolError};
use crate::upstream::{error_chain, Upstream, UpstreamError, UpstreamResponse};
use admit::Inbound;
use budget::BodyBudget;
use policy::{BypassReason, Unstored};
use respond::Outcome;
pub use respond::{Body, HEADER_OUTCOME};

/// What a phase hands back: the response and what the cache did, or an error ddbcache answers.
type Answered = Result<(Response<Body>, Outcome), ProtocolError>;

/// Whether a forwarded request asks the upstream for an uncompressed answer (what the caches
/// store) or keeps the client's `Accept-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Identity,
    AsClientAsked,
}

pub(crate) struct Proxy {
    config: Arc<Config>,
    upstream: Arc<Upstream>,
    cache: Option<Arc<Cache>>,
    metrics: Arc<Metrics>,
    /// How a request's region is chosen.
    regions: admit::Regions,
    /// The fleet bus: a gate on reads, and where writes are published.
    fleet: Fleet,
    /// The bound on request body bytes buffered at once.
    budget: BodyBudget,
    /// `ddbcache_requests_total{operation, status="200"}` per operation (indexed by the
    /// operation), resolved on first use: most requests end here, and a labelled lookup per request
    /// would take the metric family's lock and hash both labels.
    ok_requests: Box<[OnceLock<IntCounter>]>,
}

impl Proxy {
    pub(crate) fn new(
        config: Arc<Config>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Proxy> {
        let cache = config
            .cache
            .enabled
            .then(|| Arc::new(Cache::new(&config, metrics.clone())));
        let fleet = Fleet::new(&config, cache.as_ref(), &metrics)?;
        // Export zeros from the start, so rate() works from the first scrape.
        for kind in [Kind::Item, Kind::Query] {
            for reason in BypassReason::ALL {
                metrics
                    .cache_bypasses
                    .with_label_values(&[kind.label(), reason.label()]);
            }
            for reason in Unstored::ALL {
                metrics
                    .cache_unstored
                    .with_label_values(&[kind.label(), reason.label()]);
            }
            metrics
                .cache_consistent_reads
                .with_label_values(&[kind.label()]);
        }
        let regions = admit::Regions::new(&config.upstream);
        Ok(Proxy {
            budget: BodyBudget::new(&config.server, &metrics),
            config,
            upstream,
            cache,
            metrics,
            regions,
            fleet,
            ok_requests: Operation::ALL.iter().map(|_| OnceLock::new()).collect(),
        })
    }

    /// Starts the fleet's background work (bus, stream readers); it stops when dropped.
    pub(crate) fn start_fleet(&self) -> fleet::Background {
        fleet::start(
            &self.config,
            &self.fleet,
            self.cache.as_ref(),
            &self.metrics,
            &self.upstream,
        )
    }

    /// The cache, unless `cache.enabled` is off.
    pub(crate) fn cache(&self) -> Option<&Arc<Cache>> {
        self.cache.as_ref()
    }

    /// One request's whole life.
    pub(crate) async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        self.metrics.in_flight.inc();
        let _in_flight = scopeguard(|| self.metrics.in_flight.dec());

        let admitted = admit::admit(req, &self.budget, &self.regions).await;
        let (op, mut response, outcome) = match admitted {
            Ok(inbound) => {
                let (mut response, outcome) = self
                    .dispatch(&inbound)
                    .await
                    .unwrap_or_else(|e| (respond::error(&e), Outcome::NotCacheable));
                // An answer ddbcache composed gets what DynamoDB would have added to it.
                if !respond::is_relayed(&response) {
                    inbound.admission.decorate(response.headers_mut());
                }
                (Some(inbound.op), response, outcome)
            }
            Err(turned) => (turned.op, turned.response, Outcome::NotCacheable),
        };
        respond::mark(response.headers_mut(), outcome, self.config.cache.header);
        self.record(op, &response, outcome, started);
        response
    }

    /// Classification: which path the request takes. The front door has proven the body a JSON
    /// object, or left a GetItem's to be proven by whichever path takes it.
    async fn dispatch(self: &Arc<Self>, inb: &Inbound) -> Answered {
        let Some(cache) = &self.cache else {
            if let Some(refused) = unproven_json(inb) {
                return Ok((refused, Outcome::NotCacheable));
            }
            return self.pass_through(inb).await;
        };
        let class = inb.op.class();
        if let (OpClass::ItemRead | OpClass::QueryRead, Some(reason)) =
            (class, policy::fleet_read(&self.fleet))
        {
            if let Some(refused) = unproven_json(inb) {
                return Ok((refused, Outcome::NotCacheable));
            }
            let kind = match class {
                OpClass::ItemRead => Kind::Item,
                _ => Kind::Query,
            };
            return self.bypass(kind, reason, inb).await;
        }
        match class {
            OpClass::ItemRead if inb.op == Operation::GetItem => self.get_item(cache, inb).await,
            OpClass::ItemRead => self.batch_get_item(cache, inb).await,
            OpClass::QueryRead => self.query(cache, inb).await,
            OpClass::ItemWrite => self.item_write(cache, inb).await,
            OpClass::PartiQl => self.partiql(cache, inb).await,
            OpClass::Control => self.control(cache, inb).await,
            OpClass::Unknown => self.unknown(cache, inb).await,
            OpClass::Other => self.pass_through(inb).await,
        }
    }

    /// Forwards a request the cache has nothing to do with.
    async fn pass_through(&self, inb: &Inbound) -> Answered {
        let upstream = self.forward(inb, Encoding::AsClientAsked).await?;
        Ok((respond::relayed(upstream), Outcome::NotCacheable))
    }

    /// Forwards a cacheable operation around the cache, counting why.
    async fn bypass(&self, kind: Kind, reason: BypassReason, inb: &Inbound) -> Answered {
        self.metrics
            .cache_bypasses
            .with_label_values(&[kind.label(), reason.label()])
            .inc();
        let upstream = self.forward(inb, Encoding::AsClientAsked).await?;
        Ok((respond::relayed(upstream), Outcome::Bypass))
    }

    /// Counts a miss whose answer was not stored, and why.
    fn count_unstored(&self, kind: Kind, reason: Unstored) {
        self.metrics
            .cache_unstored
            .with_label_values(&[kind.label(), reason.label()])
            .inc();
    }

    /// How long a request may take upstream: one `upstream.timeout` from its admission,
    /// whether it spends it waiting for another request's fill or on its own upstream call.
    fn upstream_deadline(&self, inb: &Inbound) -> Instant {
        inb.admitted + self.config.upstream.timeout
    }

    /// Sends a request upstream and returns the whole answer; no answer at all (unreachable,
    /// timed out, connection lost) is a retryable error for the client.
    async fn forward(
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
        let deadline = self.upstream_deadline(inb);
        let timed_out = || UpstreamError::Timeout {
            endpoint: self.upstream.endpoint().to_string(),
            timeout: self.config.upstream.timeout,
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

    /// Counts and logs a finished request.
    fn record(
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

/// Runs `f` when dropped (the in-flight gauge must come down however the request ends).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}

/// The front door's answer to a body that is not a JSON object, where it left proving that to
/// the read ([`front_door::Admission::json_proven`]: a GetItem). Every path a GetItem takes that
/// does not read its body in one strict pass asks this first.
pub(super) fn unproven_json(inb: &Inbound) -> Option<Response<Body>> {
    if inb.admission.json_proven {
        return None;
    }
    front_door::prove_json(&inb.json, &inb.admission).map(respond::local)
}

//! The request pipeline. [`Proxy::handle`] is the life of one request, in five steps, each in a
//! file named for it:
//!
//! 1. admit ([`admit`]): a body within the limit, gzip undone for reading, and what DynamoDB's
//!    front door answers before any operation runs (`protocol::front_door`); then table aliases
//!    ([`aliases`]): a request naming one is rewritten to name the real table, and its answer is
//!    given the request's names back at the end;
//! 2. plan ([`policy`]): a read is parsed and proven (`protocol::reads::parse_read`) and the
//!    policy decides whether and how it uses the cache — a [`policy::Plan`], or a bypass with its
//!    reason; a write's scope is read (`protocol::writes`);
//! 3. look up and forward: [`reads`] (GetItem, Query, Scan) and [`batch_get`] (BatchGetItem)
//!    carry a plan out — look up, forward a miss ([`forward`]), keep what the policy says;
//!    [`writes`] forwards a write between the cache's two invalidations and publishes it;
//! 4. respond ([`respond`]): a hit's stored bytes, the upstream's answer, or ddbcache's own error;
//! 5. record ([`record`]): counted and logged.
//!
//! Each path gets a [`Cached`] (the cache, the way upstream, the counters, the fleet) and the
//! request, nothing else of the proxy. Cache policy is decided in [`policy`] only; the cache itself
//! ([`crate::cache`]) knows nothing of HTTP, and the upstream client ([`crate::upstream`])
//! nothing of the cache.

mod admit;
mod aliases;
mod batch_get;
mod budget;
mod failover;
mod forward;
pub mod front_door;
pub mod headers;
mod policy;
mod reads;
mod record;
pub mod respond;
mod tables;
mod writes;

use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::aliases::Aliases;
use crate::cache::Cache;
use crate::config::Config;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::protocol::reads as read_parse;
use crate::protocol::{OpClass, ProtocolError};
use crate::upstream::Upstream;
use admit::Inbound;
use budget::BodyBudget;
use forward::{Encoding, Forwarder};
use policy::{Bypass, Planned, SchemaAction};
use record::Counters;
use respond::Outcome;
pub use respond::{Body, HEADER_OUTCOME};

/// What a phase hands back: the response and what the cache did, or an error ddbcache answers.
type Answered = Result<(Response<Body>, Outcome), ProtocolError>;

/// What the cache's paths work with.
#[derive(Clone)]
pub(crate) struct Cached {
    /// What background work re-plans with (a refresh plans its read again).
    config: Arc<Config>,
    cache: Arc<Cache>,
    upstream: Arc<Forwarder>,
    counters: Arc<Counters>,
    /// Where writes are published for the fleet, and the gate on hits.
    fleet: Fleet,
}

pub(crate) struct Proxy {
    config: Arc<Config>,
    upstream: Arc<Forwarder>,
    counters: Arc<Counters>,
    /// The cache's paths, unless `cache.enabled` is off.
    cached: Option<Cached>,
    /// How a request's region is chosen.
    regions: admit::Regions,
    /// The bound on request body bytes buffered at once.
    budget: BodyBudget,
    /// Table aliases: the real table of a name a request uses.
    aliases: Arc<Aliases>,
}

impl Proxy {
    pub(crate) fn new(
        config: Arc<Config>,
        upstream: Arc<Upstream>,
        cache: Option<Arc<Cache>>,
        fleet: Fleet,
        aliases: Arc<Aliases>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        let forwarder = Arc::new(Forwarder::new(upstream, &config, metrics.clone()));
        let counters = Arc::new(Counters::new(metrics.clone()));
        let cached = cache.map(|cache| Cached {
            config: config.clone(),
            cache,
            upstream: forwarder.clone(),
            counters: counters.clone(),
            fleet,
        });
        Proxy {
            budget: BodyBudget::new(&config.server, &metrics),
            regions: admit::Regions::new(&config.upstream),
            config,
            upstream: forwarder,
            counters,
            cached,
            aliases,
        }
    }

    /// One request's whole life. The future owns its proxy, so that the connection can hold it
    /// as it is, with no future around it to move it once more.
    pub(crate) async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let _in_flight = self.counters.in_flight();

        let admitted = admit::admit(req, &self.budget, &self.regions, started).await;
        // The admitted request is borrowed where it lies, not moved out of its `Result`.
        let (op, mut response, outcome) = match admitted {
            Ok(ref inbound) => {
                // A request naming an alias is sent on the heap: each place that awaits a future
                // holds it in this one, which every request's task then carries and moves.
                let answered = match aliases::apply(&self.aliases, inbound) {
                    Ok(None) => self.dispatch(inbound).await,
                    Ok(Some(aliased)) => Box::pin(self.aliased(aliased)).await,
                    Err(refused) => Err(refused),
                };
                let (mut response, outcome) =
                    answered.unwrap_or_else(|e| (respond::error(&e), Outcome::NotCacheable));
                // An answer ddbcache composed gets what DynamoDB would have added to it.
                if !respond::is_relayed(&response) {
                    inbound.admission.decorate(response.headers_mut());
                }
                (Some(inbound.op), response, outcome)
            }
            Err(turned) => (turned.op, turned.response, Outcome::NotCacheable),
        };
        respond::mark(response.headers_mut(), outcome, self.config.cache.header);
        self.counters.request(op, &response, outcome, started);
        response
    }

    /// A request rewritten to name the real tables its aliases stand for; its answer is given
    /// the request's names back.
    async fn aliased(&self, (named, renamed): (Inbound, aliases::Renamed)) -> Answered {
        let (response, outcome) = self.dispatch(&named).await?;
        Ok((
            aliases::answer_back(response, named.op, &renamed).await,
            outcome,
        ))
    }

    /// Which path the request takes. The front door has proven the body a JSON object, or left a
    /// GetItem's to be proven by whichever path takes it.
    async fn dispatch(&self, inb: &Inbound) -> Answered {
        let Some(cx) = &self.cached else {
            if let Some(refused) = unproven_json(inb) {
                return Ok((refused, Outcome::NotCacheable));
            }
            return Box::pin(self.pass_through(inb)).await;
        };
        // Every path but the read's is on the heap: a future is moved whole at each await that
        // creates it (and, awaited in place, its caller's holds it twice), so a hit's would
        // otherwise be many times the largest path's.
        match inb.op.class() {
            OpClass::ItemRead | OpClass::QueryRead => self.read(cx, inb).await,
            OpClass::ItemWrite => Box::pin(writes::item_write(cx, inb)).await,
            OpClass::PartiQl => Box::pin(writes::partiql(cx, inb)).await,
            OpClass::Control => Box::pin(writes::control(cx, inb)).await,
            OpClass::Unknown => Box::pin(writes::unknown(cx, inb)).await,
            OpClass::Other => Box::pin(self.pass_through(inb)).await,
        }
    }

    /// A cacheable read: parsed and proven, planned, then served as planned or around the cache.
    async fn read(&self, cx: &Cached, inb: &Inbound) -> Answered {
        // The usual GetItem is read, and its body proven to be JSON, in one pass; any other read
        // that the front door left unproven answers as the front door would have.
        let read = read_parse::parse_read(inb.op, &inb.json);
        if !matches!(read, Ok(read_parse::Parsed::Proven(_))) {
            if let Some(refused) = unproven_json(inb) {
                return Ok((refused, Outcome::NotCacheable));
            }
        }
        // Borrowed where it lies, not moved out of its `Result`.
        let parsed = match read {
            Ok(ref parsed) => parsed,
            Err(e) => return Err(e),
        };
        let planned = policy::plan(
            &self.config,
            &cx.cache,
            &cx.fleet,
            inb.op,
            &inb.region,
            parsed,
        );
        // A hit is answered without waiting for anything; whatever waits does so on the heap.
        match planned {
            Ok(Planned::One(plan)) => match reads::hit_now(cx, inb, &plan) {
                Some(answered) => Ok(answered),
                None => Box::pin(reads::serve(cx, inb, plan)).await,
            },
            Ok(Planned::Batch(plan)) => Box::pin(batch_get::serve(cx, inb, plan)).await,
            Err(bypass) => Box::pin(self.bypass(cx, bypass, inb)).await,
        }
    }

    /// Forwards a request the cache has nothing to do with.
    async fn pass_through(&self, inb: &Inbound) -> Answered {
        let upstream = self.upstream.send(inb, Encoding::AsClientAsked).await?;
        Ok((respond::relayed(upstream), Outcome::NotCacheable))
    }

    /// Forwards a cacheable read around the cache, counting why, and tells the cache what the
    /// read showed of its table's key schema.
    async fn bypass(&self, cx: &Cached, bypass: Bypass<'_>, inb: &Inbound) -> Answered {
        cx.counters.bypass(bypass.kind, bypass.reason);
        match bypass.then {
            Some(SchemaAction::Contradicted(table)) => cx.cache.contradicted(&table),
            Some(SchemaAction::Fetch { table, as_sent }) => {
                tables::prefetch(cx, &table, as_sent, inb)
            }
            None => {}
        }
        let upstream = self.upstream.send(inb, Encoding::AsClientAsked).await?;
        Ok((respond::relayed(upstream), Outcome::Bypass))
    }
}

/// The front door's answer to a body that is not a JSON object, where it left proving that to
/// the read ([`front_door::Admission::json_proven`]: a GetItem). Every path a GetItem takes that
/// does not read its body in one strict pass asks this first.
fn unproven_json(inb: &Inbound) -> Option<Response<Body>> {
    if inb.admission.json_proven {
        return None;
    }
    front_door::prove_json(&inb.json, &inb.admission).map(respond::local)
}

//! The outage scenario: what a client reading through ddbcache gets while DynamoDB is down
//! (README "When DynamoDB is down"). Zipf-distributed GetItems, `--outage-rate` a second sent on
//! time whatever became of the earlier ones, run for `--outage-run`, and in its middle the
//! upstream fails for `--outage`: a [`FaultRelay`] between ddbcache and dynalite
//! refuses connections or swallows them (`--outage-fault`). The item TTL is a third of the
//! outage, so entries read before it expire during it, and each configuration runs in a ddbcache
//! of its own:
//!
//! - neither breaker nor stale-if-error (the default: hits until their TTL ends, then errors);
//! - the circuit breaker only;
//! - the breaker and stale-if-error;
//! - stale-if-error without the breaker.
//!
//! Every read is counted by the phase it started in (before, during, after the outage) and by
//! what answered it: a hit, a stale answer, DynamoDB (a miss), or an error (ddbcache's 503, or no
//! answer within the client's timeout). Reads that began and ended while ddbcache's
//! `/metrics` said the breaker was open, with no change of its state between, have a latency
//! figure of their own: what the breaker is for is answering them at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde_json::json;

use super::{Bench, START_WITHIN, TABLE};
use crate::client::{CacheOutcome, Reply, TransportError};
use crate::compare::relay::{Fault, FaultRelay};
use crate::compare::report::{table, Check, Section, Spread};
use crate::run;
use crate::workload::{Dist, KeySampler, Keyspace, RequestShape, Workload};

/// How long a client waits for an answer: longer than `upstream.breaker_hang_up` (1 s), so that
/// against a blackhole the hang-ups of waiting clients count as failures and open the breaker.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Failures in a row that open the breaker, where it is on.
const BREAKER_FAILURES: &str = "5";
/// How long an expired entry may answer for a failed read, where stale-if-error is on: longer than
/// any run.
const STALE_IF_ERROR: &str = "1h";
/// How often the breaker's state is read from `/metrics`.
const BREAKER_POLL: Duration = Duration::from_millis(50);

/// One configuration of ddbcache under the outage.
#[derive(Clone, Copy, Debug)]
struct Variant {
    key: &'static str,
    label: &'static str,
    breaker: bool,
    stale: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant {
        key: "default",
        label: "neither (the default)",
        breaker: false,
        stale: false,
    },
    Variant {
        key: "breaker",
        label: "breaker",
        breaker: true,
        stale: false,
    },
    Variant {
        key: "breaker+stale",
        label: "breaker + stale-if-error",
        breaker: true,
        stale: true,
    },
    Variant {
        key: "stale",
        label: "stale-if-error, no breaker",
        breaker: false,
        stale: true,
    },
];

/// The part of a run a read started in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Before,
    During,
    After,
}

const PHASES: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

impl Phase {
    fn index(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::During => "during",
            Phase::After => "after",
        }
    }
}

/// When, from the start of a run, the upstream is down.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    run: Duration,
    down: Duration,
    up: Duration,
}

impl Timeline {
    /// An outage of `outage` in the middle of a run of `run`.
    fn centred(run: Duration, outage: Duration) -> Timeline {
        let down = run.saturating_sub(outage) / 2;
        Timeline {
            run,
            down,
            up: down + outage,
        }
    }

    fn phase(&self, at: Duration) -> Phase {
        if at < self.down {
            Phase::Before
        } else if at < self.up {
            Phase::During
        } else {
            Phase::After
        }
    }
}

/// What answered a read.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Hit,
    Stale,
    /// Answered by DynamoDB, through ddbcache.
    Upstream,
    /// No item: an error status with its DynamoDB error name, or no answer at all.
    Error(String),
}

impl Answer {
    fn of(result: &Result<Reply, TransportError>) -> Answer {
        match result {
            Ok(reply) if reply.status.is_success() => match reply.cache {
                Some(CacheOutcome::Hit) => Answer::Hit,
                Some(CacheOutcome::Stale) => Answer::Stale,
                _ => Answer::Upstream,
            },
            Ok(reply) => Answer::Error(format!(
                "{} {}",
                reply.status.as_u16(),
                reply.error_type().unwrap_or_default()
            )),
            Err(e) => Answer::Error(e.kind().to_owned()),
        }
    }
}

/// The reads of one part of a run: what answered them, and their latency.
#[derive(Clone)]
struct Tally {
    hit: u64,
    stale: u64,
    upstream: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hit: 0,
            stale: 0,
            upstream: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new(3).expect("3 significant figures"),
        }
    }

    fn add(&mut self, answer: &Answer, took: Duration) {
        match answer {
            Answer::Hit => self.hit += 1,
            Answer::Stale => self.stale += 1,
            Answer::Upstream => self.upstream += 1,
            Answer::Error(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
        let _ = self.latency.record(took.as_micros().max(1) as u64);
    }

    fn merge(&mut self, other: &Tally) {
        self.hit += other.hit;
        self.stale += other.stale;
        self.upstream += other.upstream;
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_default() += n;
        }
        let _ = self.latency.add(&other.latency);
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    fn reads(&self) -> u64 {
        self.hit + self.stale + self.upstream + self.failed()
    }

    /// `part` as a percentage of the reads; NaN without reads.
    fn percent(&self, part: u64) -> f64 {
        match self.reads() {
            0 => f64::NAN,
            n => 100.0 * part as f64 / n as f64,
        }
    }

    /// Reads answered with an item (or its absence), from any source.
    fn answered_percent(&self) -> f64 {
        self.percent(self.hit + self.stale + self.upstream)
    }

    fn p50_ms(&self) -> f64 {
        self.quantile_ms(0.5)
    }

    fn p99_ms(&self) -> f64 {
        self.quantile_ms(0.99)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        match self.reads() {
            0 => f64::NAN,
            _ => self.latency.value_at_quantile(q) as f64 / 1e3,
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "reads": self.reads(),
            "hit": self.hit,
            "stale": self.stale,
            "upstream": self.upstream,
            "errors": self.errors,
            "p50_us": self.latency.value_at_quantile(0.5),
            "p99_us": self.latency.value_at_quantile(0.99),
            "max_us": self.latency.max(),
        })
    }
}

/// The breaker's state as last read from `/metrics`, with a count of the changes seen (a read
/// that finds the same value at its start and at its end ran while nothing changed), and when in
/// the run it was first seen open.
struct BreakerWatch {
    /// (changes seen << 1) | open.
    state: AtomicU64,
    /// Milliseconds from the start of the run; `u64::MAX` until then.
    first_open_ms: AtomicU64,
}

/// How a read saw the breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// Not open throughout the read.
    NotOpen,
    /// Open throughout, within one client timeout of its first opening: the read may have
    /// joined a fill that was sent before the breaker opened and still waits on the endpoint.
    OpenEarly,
    /// Open throughout, and every read sent before it opened has ended since.
    OpenSettled,
}

impl BreakerWatch {
    fn new() -> BreakerWatch {
        BreakerWatch {
            state: AtomicU64::new(0),
            first_open_ms: AtomicU64::new(u64::MAX),
        }
    }

    fn now(&self) -> u64 {
        self.state.load(Ordering::Relaxed)
    }

    /// What `/metrics` said `at` this far into the run.
    fn set(&self, open: bool, at: Duration) {
        let was = self.now();
        if (was & 1 == 1) != open {
            self.state
                .store((((was >> 1) + 1) << 1) | open as u64, Ordering::Relaxed);
        }
        if open {
            let _ = self.first_open_ms.compare_exchange(
                u64::MAX,
                at.as_millis() as u64,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// How a read due `due` into the run, that saw `start` and `end`, saw the breaker.
    fn seen(&self, due: Duration, start: u64, end: u64) -> Seen {
        if start != end || start & 1 == 0 {
            return Seen::NotOpen;
        }
        let first = self.first_open_ms.load(Ordering::Relaxed);
        if (due.as_millis() as u64) < first.saturating_add(CLIENT_TIMEOUT.as_millis() as u64) {
            Seen::OpenEarly
        } else {
            Seen::OpenSettled
        }
    }
}

/// Whether `/metrics` says some endpoint's breaker is open (state 1; half-open is 2).
fn breaker_open_in(metrics: &str) -> bool {
    metrics
        .lines()
        .filter(|l| l.starts_with("ddbcache_upstream_breaker_state{"))
        .any(|l| l.rsplit(' ').next() == Some("1"))
}

/// What one run counted.
#[derive(Clone)]
struct Counts {
    phases: [Tally; 3],
    /// Reads that ran wholly while the breaker was open.
    breaker_open: Tally,
    /// Those of them sent more than a client timeout after it first opened.
    breaker_settled: Tally,
    /// Per second of the run: reads answered, reads failed.
    seconds: Vec<[u64; 2]>,
}

impl Counts {
    fn new() -> Counts {
        Counts {
            phases: [Tally::new(), Tally::new(), Tally::new()],
            breaker_open: Tally::new(),
            breaker_settled: Tally::new(),
            seconds: Vec::new(),
        }
    }

    fn add(&mut self, phase: Phase, second: usize, seen: Seen, answer: &Answer, took: Duration) {
        self.phases[phase.index()].add(answer, took);
        if seen != Seen::NotOpen {
            self.breaker_open.add(answer, took);
        }
        if seen == Seen::OpenSettled {
            self.breaker_settled.add(answer, took);
        }
        if self.seconds.len() <= second {
            self.seconds.resize(second + 1, [0, 0]);
        }
        self.seconds[second][matches!(answer, Answer::Error(_)) as usize] += 1;
    }

    fn during(&self) -> &Tally {
        &self.phases[Phase::During.index()]
    }
}

/// The scenario's durations and rate, from the settings.
struct Plan {
    timeline: Timeline,
    fault: Fault,
    /// Reads per second.
    rate: f64,
    /// Item TTL, and how long the breaker stays open: a third of the outage.
    ttl: Duration,
}

impl Plan {
    fn new(run: Duration, outage: Duration, fault: Fault, rate: f64) -> Plan {
        Plan {
            timeline: Timeline::centred(run, outage),
            fault,
            rate,
            ttl: (outage / 3).max(Duration::from_secs(1)),
        }
    }
}

pub(super) async fn outage(bench: &mut Bench) -> anyhow::Result<Section> {
    let settings = bench.settings.clone();
    let plan = Plan::new(
        settings.outage_run,
        settings.outage,
        settings.outage_fault,
        settings.outage_rate,
    );
    let servers = bench.servers().await?;
    bench.preload(TABLE, settings.keys).await?;
    let dynalite: SocketAddr = servers
        .direct
        .url
        .trim_start_matches("http://")
        .parse()
        .context("dynalite's address")?;
    let mut counts: Vec<Vec<Counts>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for run in 0..settings.runs {
        for (variant, counts) in VARIANTS.iter().zip(&mut counts) {
            let c = run_once(bench, &plan, *variant, dynalite, run).await?;
            let during = c.during();
            eprintln!(
                "compare: outage {} run {}: during the outage {:.1}% answered ({:.1}% stale), \
                 p99 {:.1} ms; breaker open: {} reads, p99 {:.2} ms ({:.2} ms later)",
                variant.key,
                run + 1,
                during.answered_percent(),
                during.percent(during.stale),
                during.p99_ms(),
                c.breaker_open.reads(),
                c.breaker_open.p99_ms(),
                c.breaker_settled.p99_ms(),
            );
            bench.raw.push(json!({
                "scenario": "outage",
                "target": variant.key,
                "run": run + 1,
                "fault": plan.fault.name(),
                "phases": PHASES.iter().map(|p| (p.name(), c.phases[p.index()].to_json()))
                    .collect::<BTreeMap<_, _>>(),
                "breaker_open": c.breaker_open.to_json(),
                "breaker_open_settled": c.breaker_settled.to_json(),
                "per_second_answered_failed": c.seconds,
            }));
            counts.push(c);
        }
    }
    Ok(section(bench, &plan, &counts))
}

/// One run of one variant: a ddbcache of its own behind a relay of its own, Zipf reads for the
/// whole run, the upstream down in its middle.
async fn run_once(
    bench: &mut Bench,
    plan: &Plan,
    variant: Variant,
    dynalite: SocketAddr,
    run: usize,
) -> anyhow::Result<Counts> {
    let relay = FaultRelay::start(dynalite).await?;
    let ttl = format!("{}ms", plan.ttl.as_millis());
    let env = [
        ("DDBCACHE_ITEM_TTL", ttl.as_str()),
        (
            "DDBCACHE_STALE_IF_ERROR",
            if variant.stale { STALE_IF_ERROR } else { "0s" },
        ),
        (
            "DDBCACHE_UPSTREAM_BREAKER_FAILURES",
            if variant.breaker {
                BREAKER_FAILURES
            } else {
                "0"
            },
        ),
        ("DDBCACHE_UPSTREAM_BREAKER_OPEN", ttl.as_str()),
    ];
    let name = format!(
        "ddbcache-outage-{}-{}",
        variant.key.replace('+', "-"),
        run + 1
    );
    let (target, _) = bench
        .start_ddbcache(&name, ("outage", variant.label), &relay.url(), &env, None)
        .await?;
    let admin = target.admin.clone().context("a ddbcache")?;
    let s = &bench.settings;
    let workload = Arc::new(Workload::new(
        TABLE,
        Keyspace {
            keys: s.keys,
            rows_per_pk: 1,
            item_bytes: s.item_bytes,
        },
        RequestShape {
            batch_size: 1,
            query_limit: 1,
            scan_limit: 1,
            consistent_read: false,
        },
        "get=100".parse()?,
        KeySampler::new(s.keys, Dist::Zipf, 0.99)?,
    ));
    // A connection per read in flight: up to rate × client timeout of them against a blackhole.
    let in_flight = (plan.rate * CLIENT_TIMEOUT.as_secs_f64()).ceil() as usize;
    let client = bench.client(&target.url, in_flight, CLIENT_TIMEOUT).await?;
    let watch = Arc::new(BreakerWatch::new());
    let timeline = plan.timeline;
    let start = Instant::now();

    let poller = {
        let watch = watch.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(metrics) = run::admin_text(&admin, "/metrics").await {
                    watch.set(breaker_open_in(&metrics), start.elapsed());
                }
                tokio::time::sleep(BREAKER_POLL).await;
            }
        })
    };
    let outage = async {
        tokio::time::sleep_until((start + timeline.down).into()).await;
        relay.fail(plan.fault);
        tokio::time::sleep_until((start + timeline.up).into()).await;
        relay.heal();
    };
    // An open loop: read k is due at start + k / rate, whatever happened to the reads before it,
    // as an application's requests keep coming while DynamoDB is down. A closed loop would send
    // fewer reads while they hang, and so count a hung upstream as a smaller share of them.
    let period = Duration::from_secs_f64(1.0 / plan.rate);
    let counts = Arc::new(parking_lot::Mutex::new(Counts::new()));
    let reads = async {
        let mut rng = SmallRng::seed_from_u64(run as u64);
        let mut reads = tokio::task::JoinSet::new();
        for k in 0u64.. {
            let due = period.mul_f64(k as f64);
            if due >= timeline.run {
                break;
            }
            tokio::time::sleep_until((start + due).into()).await;
            let (op, body) = workload.next_request(&mut rng);
            let (client, watch, counts) = (client.clone(), watch.clone(), counts.clone());
            reads.spawn(async move {
                let seen = watch.now();
                let result = client.call(op, body).await;
                // From when the read was due: a read the generator sent late is charged for it.
                let took = start.elapsed().saturating_sub(due);
                let seen = watch.seen(due, seen, watch.now());
                counts.lock().add(
                    timeline.phase(due),
                    due.as_secs() as usize,
                    seen,
                    &Answer::of(&result),
                    took,
                );
            });
            while reads.try_join_next().is_some() {}
        }
        reads.join_all().await;
    };
    tokio::join!(reads, outage);
    poller.abort();
    bench.procs.stop(&target.proc, START_WITHIN).await?;
    drop(relay);
    let counts = counts.lock().clone();
    Ok(counts)
}

fn section(bench: &Bench, plan: &Plan, counts: &[Vec<Counts>]) -> Section {
    let s = &bench.settings;
    let t = plan.timeline;
    let during = |c: &Counts| c.during().clone();
    let median = |runs: &[Counts], figure: &dyn Fn(&Counts) -> f64| {
        Spread(runs.iter().map(figure).collect())
    };
    let rows: Vec<Vec<String>> = VARIANTS
        .iter()
        .zip(counts)
        .map(|(v, runs)| {
            vec![
                v.label.to_owned(),
                median(runs, &|c| during(c).answered_percent()).show(1),
                median(runs, &|c| {
                    let d = during(c);
                    d.percent(d.hit)
                })
                .show(1),
                median(runs, &|c| {
                    let d = during(c);
                    d.percent(d.stale)
                })
                .show(1),
                median(runs, &|c| {
                    let d = during(c);
                    d.percent(d.upstream)
                })
                .show(1),
                median(runs, &|c| during(c).p99_ms()).show(1),
                if v.breaker {
                    format!(
                        "{} / {}",
                        median(runs, &|c| c.breaker_open.p50_ms()).show(2),
                        median(runs, &|c| c.breaker_open.p99_ms()).show(2)
                    )
                } else {
                    "—".to_owned()
                },
                if v.breaker {
                    median(runs, &|c| c.breaker_settled.p99_ms()).show(2)
                } else {
                    "—".to_owned()
                },
                median(runs, &|c| c.phases[Phase::After.index()].answered_percent()).show(1),
                median(runs, &|c| during(c).reads() as f64).show(0),
            ]
        })
        .collect();
    let errors: Vec<String> = VARIANTS
        .iter()
        .zip(counts)
        .map(|(v, runs)| {
            let mut all = Tally::new();
            for c in runs {
                all.merge(c.during());
            }
            let kinds: Vec<String> = all
                .errors
                .iter()
                .map(|(kind, n)| format!("{kind} ×{n}"))
                .collect();
            format!(
                "- {}: {}",
                v.label,
                if kinds.is_empty() {
                    "none".to_owned()
                } else {
                    kinds.join(", ")
                }
            )
        })
        .collect();
    let body = format!(
        "GetItem of Zipf-chosen keys (s = 0.99) over {keys} items, {rate} a second (an open loop: \
         each read is sent when due, whatever became of those before it; latency counted from \
         then; client timeout {timeout:?}), for {run:?}; from {down:?} to {up:?} the upstream is \
         down: a TCP relay between ddbcache and dynalite {fault}. Item TTL {ttl:?} (a third of the \
         outage), so what was read before the outage expires during it; where on, the breaker \
         opens after {failures} failures in a row and stays open {ttl:?}, and stale-if-error \
         keeps expired entries for {stale}. Each configuration runs in a ddbcache of its own, \
         cache empty at the start; reads are counted by the phase they started in. *Breaker \
         open*: the reads that began and ended while ddbcache's `/metrics` said the breaker was \
         open (read every {poll:?}); *later*: those of them sent more than a client timeout after \
         it first opened, when no read sent before it opened can still be waiting.\n\n{table}\nErrors during the outage, all runs:\n\n{errors}\n",
        keys = s.keys,
        rate = plan.rate,
        timeout = CLIENT_TIMEOUT,
        run = t.run,
        down = t.down,
        up = t.up,
        fault = match plan.fault {
            Fault::Refuse => "refuses connections and resets the open ones",
            Fault::Blackhole => "accepts connections and never answers",
        },
        ttl = plan.ttl,
        failures = BREAKER_FAILURES,
        stale = STALE_IF_ERROR,
        poll = BREAKER_POLL,
        table = table(
            &[
                "configuration",
                "answered % (outage)",
                "hits %",
                "stale %",
                "from DynamoDB %",
                "p99 ms (outage)",
                "p50 / p99 ms (breaker open)",
                "p99 ms (open, later)",
                "answered % (after)",
                "reads (outage)",
            ],
            &rows,
        ),
        errors = errors.join("\n"),
    );
    let figure = |i: usize, f: &dyn Fn(&Counts) -> f64| Spread(counts[i].iter().map(f).collect());
    let answered = |c: &Counts| c.during().answered_percent();
    Section {
        title: format!(
            "Outage: the upstream down {:?} of {:?}",
            t.up - t.down,
            t.run
        ),
        body,
        checks: vec![
            Check::info(
                "reads answered during the outage, stale-if-error off / on (breaker on)",
                format!(
                    "{:.1}% / {:.1}%",
                    figure(1, &answered).median(),
                    figure(2, &answered).median()
                ),
            ),
            Check::info(
                "p99 of reads while the breaker is open, all / after the first client timeout \
                 (stale-if-error on)",
                format!(
                    "{:.2} ms / {:.2} ms",
                    figure(2, &|c| c.breaker_open.p99_ms()).median(),
                    figure(2, &|c| c.breaker_settled.p99_ms()).median()
                ),
            ),
            Check::info(
                "p99 of reads during the outage, no breaker / breaker (stale-if-error on)",
                format!(
                    "{:.1} ms / {:.1} ms",
                    figure(3, &|c| c.during().p99_ms()).median(),
                    figure(2, &|c| c.during().p99_ms()).median()
                ),
            ),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::StatusCode;

    fn reply(status: u16, cache: Option<CacheOutcome>, body: &'static str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            body: Bytes::from_static(body.as_bytes()),
            cache,
        }
    }

    #[test]
    fn answers_are_told_apart_by_status_and_cache_header() {
        let ok = |cache| Answer::of(&Ok(reply(200, cache, "{}")));
        assert_eq!(ok(Some(CacheOutcome::Hit)), Answer::Hit);
        assert_eq!(ok(Some(CacheOutcome::Stale)), Answer::Stale);
        assert_eq!(ok(Some(CacheOutcome::Miss)), Answer::Upstream);
        let refused = reply(
            503,
            Some(CacheOutcome::Miss),
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ServiceUnavailable","message":"x"}"#,
        );
        assert_eq!(
            Answer::of(&Ok(refused)),
            Answer::Error("503 ServiceUnavailable".to_owned())
        );
        assert_eq!(
            Answer::of(&Err(TransportError::Timeout)),
            Answer::Error("transport: timeout".to_owned())
        );
    }

    #[test]
    fn the_outage_sits_in_the_middle_and_reads_count_where_they_began() {
        let t = Timeline::centred(Duration::from_secs(90), Duration::from_secs(30));
        assert_eq!(
            (t.down, t.up),
            (Duration::from_secs(30), Duration::from_secs(60))
        );
        assert_eq!(t.phase(Duration::from_millis(29_999)), Phase::Before);
        assert_eq!(t.phase(Duration::from_secs(30)), Phase::During);
        assert_eq!(t.phase(Duration::from_millis(59_999)), Phase::During);
        assert_eq!(t.phase(Duration::from_secs(60)), Phase::After);
        let plan = Plan::new(
            Duration::from_secs(90),
            Duration::from_secs(30),
            Fault::Refuse,
            500.0,
        );
        assert!(
            plan.ttl < t.up - t.down,
            "entries must expire during the outage"
        );
    }

    #[test]
    fn shares_latency_and_seconds_add_up() {
        let mut a = Counts::new();
        let ms = Duration::from_millis;
        a.add(Phase::During, 31, Seen::OpenEarly, &Answer::Hit, ms(1));
        a.add(Phase::During, 31, Seen::OpenSettled, &Answer::Stale, ms(1));
        a.add(Phase::During, 32, Seen::NotOpen, &Answer::Upstream, ms(2));
        a.add(
            Phase::During,
            33,
            Seen::NotOpen,
            &Answer::Error("transport: timeout".to_owned()),
            ms(2000),
        );
        a.add(Phase::After, 61, Seen::NotOpen, &Answer::Hit, ms(1));
        let d = a.during();
        assert_eq!((d.reads(), d.failed()), (4, 1));
        assert_eq!(d.answered_percent(), 75.0);
        assert_eq!(d.percent(d.stale), 25.0);
        assert!(d.p99_ms() >= 1999.0, "{}", d.p99_ms());
        assert_eq!((a.breaker_open.reads(), a.breaker_settled.reads()), (2, 1));
        assert!(a.breaker_open.p99_ms() < 1.1);
        assert_eq!(a.phases[Phase::After.index()].reads(), 1);
        assert_eq!(a.seconds[31], [2, 0]);
        assert_eq!(a.seconds[33], [0, 1]);
        let mut all = Tally::new();
        all.merge(d);
        all.merge(d);
        assert_eq!((all.reads(), all.errors["transport: timeout"]), (8, 2));
        assert!(Tally::new().answered_percent().is_nan());
    }

    #[test]
    fn a_read_counts_as_breaker_open_only_if_nothing_changed_while_it_ran() {
        let metrics = "# TYPE ddbcache_upstream_breaker_state gauge\n\
            ddbcache_upstream_breaker_state{endpoint=\"http://127.0.0.1:1\"} 1\n";
        assert!(breaker_open_in(metrics));
        assert!(!breaker_open_in(&metrics.replace("} 1", "} 2")));
        assert!(!breaker_open_in("ddbcache_up 1\n"));

        let watch = BreakerWatch::new();
        let secs = Duration::from_secs;
        let closed = watch.now();
        watch.set(true, secs(10));
        let opened = watch.now();
        assert_eq!(watch.seen(secs(11), closed, opened), Seen::NotOpen);
        watch.set(true, secs(11));
        assert_eq!(watch.seen(secs(11), opened, watch.now()), Seen::OpenEarly);
        // One client timeout after the first opening, reads sent before it have all ended.
        assert_eq!(watch.seen(secs(12), opened, watch.now()), Seen::OpenSettled);
        // Closed and open again in between: a probe ran, the read may have waited for it.
        watch.set(false, secs(15));
        watch.set(true, secs(16));
        assert_eq!(watch.seen(secs(17), opened, watch.now()), Seen::NotOpen);
        assert_eq!(
            watch.seen(secs(17), watch.now(), watch.now()),
            Seen::OpenSettled
        );
    }
}

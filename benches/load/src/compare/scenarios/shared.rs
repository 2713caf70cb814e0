//! The shared scenario: what the shared tier (`[fleet.shared]`, README "Running a fleet") saves a
//! fleet and what it costs. Several ddbcache processes on one Redis, in front of one dynalite,
//! with GetItem requests spread uniformly across them at a fixed rate, keys Zipf-distributed over
//! a table, and an item TTL scaled down with the key count and the rate so that each key is asked
//! for about as often per TTL as in README's TTL model ("The shared tier"): seconds here, minutes
//! in production.
//!
//! - hit ratio per tier (`x-ddbcache: hit` is L1, `hit-shared` is L2) and upstream GetItem calls
//!   per 1,000 requests (the sidecars' `ddbcache_upstream_request_duration_seconds_count`) for
//!   (a) one sidecar alone, (b) N sidecars on the bus without the tier, (c) N with it; each
//!   measured over two TTLs after one TTL of unmeasured load;
//! - in (b) and (c), one sidecar restarted while the load goes on: its hit ratio over its first
//!   10 s against its own over the steady window;
//! - L2 hit latency: keys outside the Zipf range are read through one sidecar (filling Redis),
//!   then through another (an L2 hit each), then again (an L1 hit each), one at a time, next to
//!   Redis's own `PING` round trip from this process;
//! - Redis memory per entry (`MEMORY USAGE` of the entries and of the version keys, and
//!   `used_memory` growth over the entries);
//! - strict consistency's cost: hits of a sidecar with `consistency = "strict"` (each confirmed
//!   in Redis) against one with the default, side by side, at `--concurrency` and at 1 in flight.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use parking_lot::RwLock;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::fleet::{start_redis, wait_for_metric, wait_subscribed, Histogram};
use super::{
    ratio, rps, server_us, spread, Bench, Sample, Scenario, Target, HIT_TTL, START_WITHIN, TABLE,
};
use crate::client::{CacheOutcome, DynamoClient, Reply, TransportError};
use crate::compare::report::{table, Check, Section};
use crate::run;
use crate::workload::{json_string, Dist, KeySampler, Op};

/// The table the fleet reads: `--shared-keys` Zipf-chosen items, then [`PROBE_KEYS`] more that
/// only the latency probes read.
const SHARED_TABLE: &str = "bench_shared";
const PROBE_KEYS: u64 = 1000;
/// Probe keys read through one sidecar before the other reads them.
const PROBE_CHUNK: usize = 100;
/// Zipf exponent of the fleet's keys (the load generator's default).
const ZIPF_S: f64 = 0.99;
/// How long a restarted sidecar's hit ratio is followed.
const RESTART_WINDOW: Duration = Duration::from_secs(10);
/// Requests in flight at most while the fleet is driven at its rate.
const WORKERS: usize = 32;

const UPSTREAM_GETS: &str =
    "ddbcache_upstream_request_duration_seconds_count{operation=\"GetItem\"} ";
const SHARED_DURATION: &str = "ddbcache_shared_duration_seconds";
const STORED_FILLS: &str = "ddbcache_shared_fills_total{outcome=\"stored\"} ";
const LEASE_WAITS: &str = "ddbcache_shared_lease_waits_total{outcome=\"filled\"} ";

pub(super) async fn shared(bench: &mut Bench) -> anyhow::Result<Section> {
    let direct = bench.servers().await?.direct;
    let redis_url = start_redis(bench).await?;
    let redis_port: u16 = redis_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the Redis URL's port")?;
    let s = bench.settings.clone();
    bench
        .preload(SHARED_TABLE, s.shared_keys + PROBE_KEYS)
        .await?;
    let key_file = bench.work.join("shared-key");
    let key: String = (0..32)
        .map(|_| format!("{:02x}", rand::rng().random::<u8>()))
        .collect();
    std::fs::write(&key_file, key).context("writing the tier's key file")?;
    let fleet = FleetSpec {
        upstream: direct.url.clone(),
        redis: redis_url.clone(),
        key_file,
    };

    let alone = phase(bench, &fleet, "(a) one sidecar", 1, Tier::Off).await?;
    let mut sidecars = alone.1;
    stop_all(bench, &mut sidecars).await?;
    let without = phase(
        bench,
        &fleet,
        "(b) without the tier",
        s.shared_sidecars,
        Tier::Off,
    )
    .await?;
    let mut sidecars = without.1;
    stop_all(bench, &mut sidecars).await?;
    let memory_before = Redis::connect(redis_port)?.used_memory()?;
    let with = phase(
        bench,
        &fleet,
        "(c) with the tier",
        s.shared_sidecars,
        Tier::Bus,
    )
    .await?;
    let mut sidecars = with.1;
    let memory = entry_memory(redis_port, memory_before)?;
    let latency = probe_latency(bench, &sidecars[0], &sidecars[1], redis_port).await?;
    stop_all(bench, &mut sidecars).await?;
    let phases = [alone.0, without.0, with.0];
    let strict = strict_cost(bench, &fleet).await?;

    for p in &phases {
        bench.raw.push(json!({
            "scenario": "shared",
            "target": p.label,
            "sidecars": p.sidecars,
            "rps": p.rps,
            "steady": p.steady.to_json(),
            "upstream_gets": p.upstream,
            "restart": p.restart.as_ref().map(|r| json!({
                "steady": r.steady.to_json(),
                "first_10s": r.first.to_json(),
                "back_after_ms": r.back_after.as_millis() as u64,
            })),
        }));
    }
    bench.raw.push(json!({
        "scenario": "shared",
        "target": "latency",
        "l1_hit_us": latency.l1.summary(),
        "l2_hit_us": latency.l2.summary(),
        "ping_us": latency.ping.summary(),
        "not_l2": latency.not_l2,
        "body_bytes": latency.body_bytes,
        "lease_waits": latency.lease_waits,
    }));
    bench.raw.push(json!({
        "scenario": "shared",
        "target": "memory",
        "entries": memory.entries,
        "sampled": memory.sampled,
        "memory_usage_mean": memory.usage_mean,
        "value_bytes_mean": memory.value_mean,
        "used_memory_per_entry": memory.used_per_entry,
        "version_keys": memory.versions,
        "version_usage_mean": memory.version_usage_mean,
        "leases": memory.leases,
    }));
    Ok(section(bench, &phases, &latency, &memory, &strict))
}

/// What every sidecar of the scenario is started with.
struct FleetSpec {
    upstream: String,
    redis: String,
    key_file: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Off,
    Bus,
    Strict,
}

impl FleetSpec {
    /// The `DDBCACHE_*` settings of a sidecar: on the bus when there are several, with the tier
    /// (sealed with the scenario's key) as `tier` says.
    fn env(&self, ttl: &str, capacity: &str, bus: bool, tier: Tier) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("DDBCACHE_ITEM_TTL", ttl.to_owned()),
            ("DDBCACHE_ITEM_CAPACITY", capacity.to_owned()),
        ];
        if bus {
            env.push(("DDBCACHE_FLEET_REDIS_URL", self.redis.clone()));
        }
        if tier != Tier::Off {
            env.push(("DDBCACHE_FLEET_SHARED", "true".to_owned()));
            env.push((
                "DDBCACHE_FLEET_SHARED_KEY_FILE",
                self.key_file.display().to_string(),
            ));
        }
        if tier == Tier::Strict {
            env.push(("DDBCACHE_FLEET_SHARED_CONSISTENCY", "strict".to_owned()));
        }
        env
    }
}

/// Starts a sidecar and waits until it serves hits: subscribed to the bus, and with the tier
/// connected when it has one.
async fn start_sidecar(
    bench: &mut Bench,
    fleet: &FleetSpec,
    name: &str,
    env: &[(&'static str, String)],
) -> anyhow::Result<Target> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (target, _) = bench
        .start_ddbcache(
            name,
            ("shared", "shared-tier sidecar"),
            &fleet.upstream,
            &env,
            None,
        )
        .await?;
    if env.iter().any(|(k, _)| *k == "DDBCACHE_FLEET_REDIS_URL") {
        wait_subscribed(bench, &target).await?;
    }
    if env.iter().any(|(k, _)| *k == "DDBCACHE_FLEET_SHARED") {
        wait_for_metric(
            bench,
            &target,
            "ddbcache_shared_up 1",
            "connected to the shared tier",
        )
        .await?;
    }
    Ok(target)
}

async fn stop_all(bench: &mut Bench, sidecars: &mut Vec<Target>) -> anyhow::Result<()> {
    for target in sidecars.drain(..) {
        bench.procs.stop(&target.proc, START_WITHIN).await?;
    }
    Ok(())
}

/// Answers of one sidecar (or several) by where they came from.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    l1: u64,
    l2: u64,
    miss: u64,
    /// Answered, without an outcome header of a hit or a miss.
    other: u64,
    errors: u64,
}

impl Tally {
    fn answered(&self) -> u64 {
        self.l1 + self.l2 + self.miss + self.other
    }

    fn pct(&self, n: u64) -> f64 {
        100.0 * n as f64 / self.answered().max(1) as f64
    }

    fn hit_pct(&self) -> f64 {
        self.pct(self.l1 + self.l2)
    }

    fn minus(&self, before: &Tally) -> Tally {
        Tally {
            l1: self.l1 - before.l1,
            l2: self.l2 - before.l2,
            miss: self.miss - before.miss,
            other: self.other - before.other,
            errors: self.errors - before.errors,
        }
    }

    fn plus(&self, other: &Tally) -> Tally {
        Tally {
            l1: self.l1 + other.l1,
            l2: self.l2 + other.l2,
            miss: self.miss + other.miss,
            other: self.other + other.other,
            errors: self.errors + other.errors,
        }
    }

    fn to_json(self) -> serde_json::Value {
        json!({"l1": self.l1, "l2": self.l2, "miss": self.miss, "other": self.other,
               "errors": self.errors})
    }
}

#[derive(Default)]
struct Counters {
    l1: AtomicU64,
    l2: AtomicU64,
    miss: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn count(&self, result: &Result<Reply, TransportError>) {
        let counter = match result {
            Ok(reply) if reply.status.is_success() => match reply.cache {
                Some(CacheOutcome::Hit) => &self.l1,
                Some(CacheOutcome::HitShared) => &self.l2,
                Some(CacheOutcome::Miss) => &self.miss,
                _ => &self.other,
            },
            _ => &self.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn tally(&self) -> Tally {
        Tally {
            l1: self.l1.load(Ordering::Relaxed),
            l2: self.l2.load(Ordering::Relaxed),
            miss: self.miss.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The sidecars the load is spread over: a slot each, empty while its sidecar restarts.
struct Fleet {
    slots: RwLock<Vec<Option<Arc<DynamoClient>>>>,
    counters: Vec<Counters>,
}

impl Fleet {
    fn tallies(&self) -> Vec<Tally> {
        self.counters.iter().map(Counters::tally).collect()
    }

    /// A live sidecar chosen uniformly, and its slot.
    fn pick(&self, rng: &mut SmallRng) -> Option<(usize, Arc<DynamoClient>)> {
        let slots = self.slots.read();
        let live: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].is_some()).collect();
        let slot = *live.get(rng.random_range(0..live.len().max(1)))?;
        Some((slot, slots[slot].clone()?))
    }
}

/// GetItem requests at a fixed rate (request `i` is sent at `i / rate` seconds, or as soon as one
/// of [`WORKERS`] is free), each to a live sidecar, keys Zipf-distributed.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    fn start(fleet: Arc<Fleet>, keys: u64, rate: f64) -> anyhow::Result<Load> {
        let sampler = Arc::new(KeySampler::new(keys, Dist::Zipf, ZIPF_S)?);
        let table = Arc::new(json_string(SHARED_TABLE));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let start = tokio::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            let (fleet, sampler, table) = (fleet.clone(), sampler.clone(), table.clone());
            let (stop, next) = (stop.clone(), next.clone());
            tasks.spawn(async move {
                let mut rng = SmallRng::seed_from_u64(worker as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                    let Some((slot, client)) = fleet.pick(&mut rng) else {
                        continue;
                    };
                    let key = sampler.sample(&mut rng);
                    let result = client.call(Op::GetItem, get_item(&table, key)).await;
                    fleet.counters[slot].count(&result);
                }
            });
        }
        Ok(Load { stop, tasks })
    }

    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The GetItem body of key number `key` (as `preload` wrote it: one item per partition).
fn get_item(table_json: &str, key: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"TableName":{table_json},"Key":{{"pk":{{"S":"p{key:010}"}},"sk":{{"S":"s000000"}}}}}}"#
    ))
}

/// One configuration's figures.
struct Phase {
    label: &'static str,
    sidecars: usize,
    tier: bool,
    /// Answers over the steady window, all sidecars.
    steady: Tally,
    /// Upstream GetItem calls over the steady window, all sidecars.
    upstream: f64,
    rps: f64,
    restart: Option<Restart>,
}

impl Phase {
    fn upstream_per_1000(&self) -> f64 {
        1000.0 * self.upstream / self.steady.answered().max(1) as f64
    }
}

/// The sidecar restarted while the load went on.
struct Restart {
    /// Its answers over the steady window, before the restart.
    steady: Tally,
    /// Its answers over its first [`RESTART_WINDOW`] back.
    first: Tally,
    /// From leaving the fleet (stopped) to serving again.
    back_after: Duration,
}

/// Runs `sidecars` sidecars under the load: one TTL unmeasured, two measured; then, with more
/// than one, restarts the first while the load goes on and follows it for [`RESTART_WINDOW`].
/// Returns the sidecars still running.
async fn phase(
    bench: &mut Bench,
    spec: &FleetSpec,
    label: &'static str,
    sidecars: usize,
    tier: Tier,
) -> anyhow::Result<(Phase, Vec<Target>)> {
    let s = bench.settings.clone();
    let ttl = format!("{}ms", s.shared_ttl.as_millis());
    let capacity = s.item_capacity.to_string();
    let env = spec.env(&ttl, &capacity, sidecars > 1, tier);
    let mut targets = Vec::new();
    let mut clients = Vec::new();
    for i in 0..sidecars {
        let target = start_sidecar(bench, spec, &format!("ddbcache-shared-{i}"), &env).await?;
        clients.push(Some(
            bench
                .client(&target.url, WORKERS, Duration::from_secs(10))
                .await?,
        ));
        targets.push(target);
    }
    let fleet = Arc::new(Fleet {
        slots: RwLock::new(clients),
        counters: (0..sidecars).map(|_| Counters::default()).collect(),
    });
    eprintln!(
        "compare: shared {label}: {sidecars} sidecar(s), {} req/s, TTL {ttl}, {} s",
        s.shared_rate,
        3 * s.shared_ttl.as_secs()
    );
    let load = Load::start(fleet.clone(), s.shared_keys, s.shared_rate)?;
    tokio::time::sleep(s.shared_ttl).await;
    let (before, upstream_before, from) = (
        fleet.tallies(),
        upstream_gets(&targets).await?,
        Instant::now(),
    );
    tokio::time::sleep(2 * s.shared_ttl).await;
    let (after, upstream_after, took) = (
        fleet.tallies(),
        upstream_gets(&targets).await?,
        from.elapsed(),
    );
    let steady = after
        .iter()
        .zip(&before)
        .fold(Tally::default(), |sum, (a, b)| sum.plus(&a.minus(b)));
    let mut restart = None;
    if sidecars > 1 {
        eprintln!("compare: shared {label}: restarting one sidecar");
        let down = Instant::now();
        fleet.slots.write()[0] = None;
        bench.procs.stop(&targets[0].proc, START_WITHIN).await?;
        let target = start_sidecar(bench, spec, "ddbcache-shared-0-restarted", &env).await?;
        let client = bench
            .client(&target.url, WORKERS, Duration::from_secs(10))
            .await?;
        let back = fleet.counters[0].tally();
        fleet.slots.write()[0] = Some(client);
        let back_after = down.elapsed();
        targets[0] = target;
        tokio::time::sleep(RESTART_WINDOW).await;
        restart = Some(Restart {
            steady: after[0].minus(&before[0]),
            first: fleet.counters[0].tally().minus(&back),
            back_after,
        });
    }
    load.stop().await;
    for target in &targets {
        bench.procs.check_alive(&target.proc)?;
    }
    let phase = Phase {
        label,
        sidecars,
        tier: tier != Tier::Off,
        steady,
        upstream: upstream_after - upstream_before,
        rps: steady.answered() as f64 / took.as_secs_f64(),
        restart,
    };
    eprintln!(
        "compare: shared {label}: hit {:.1}% (L1 {:.1}%, L2 {:.1}%), {:.1} upstream reads per 1000",
        phase.steady.hit_pct(),
        phase.steady.pct(phase.steady.l1),
        phase.steady.pct(phase.steady.l2),
        phase.upstream_per_1000()
    );
    Ok((phase, targets))
}

/// Upstream GetItem calls of all `targets` so far.
async fn upstream_gets(targets: &[Target]) -> anyhow::Result<f64> {
    let mut sum = 0.0;
    for target in targets {
        sum += metric(target, UPSTREAM_GETS).await?;
    }
    Ok(sum)
}

/// The value of one line of a sidecar's `/metrics`, 0 if absent.
async fn metric(target: &Target, prefix: &str) -> anyhow::Result<f64> {
    let admin = target.admin.as_deref().context("a ddbcache")?;
    Ok(run::admin_text(admin, "/metrics")
        .await?
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Latencies in µs, one request (or PING) at a time.
#[derive(Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn push(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e6);
    }

    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
    }

    fn summary(&self) -> serde_json::Value {
        json!({"n": self.0.len(), "p50": self.quantile(0.5), "p99": self.quantile(0.99)})
    }
}

struct LatencyProbe {
    l1: Latencies,
    l2: Latencies,
    ping: Latencies,
    /// Second reads that were not answered from the tier (its fill had not landed, or expired).
    not_l2: u64,
    /// Lookups of the reading sidecar that waited for a fill lease (none expected).
    lease_waits: f64,
    /// The GetItem answer's body, as the sidecars store it (before sealing).
    body_bytes: usize,
    /// The reading sidecar's own histogram of those lookups (seconds), interpolated.
    lookup_p50: f64,
    lookup_p99: f64,
}

/// The probe keys, in chunks: read through `filler` (a miss each, filling Redis), then, once
/// its fills are stored, through `reader` (an L2 hit each), then again (an L1 hit each), and as
/// many PINGs to Redis; one at a time, no other load.
async fn probe_latency(
    bench: &Bench,
    filler: &Target,
    reader: &Target,
    redis_port: u16,
) -> anyhow::Result<LatencyProbe> {
    eprintln!("compare: shared: L2 hit latency over {PROBE_KEYS} keys");
    let keys = bench.settings.shared_keys;
    let table = json_string(SHARED_TABLE);
    let fill = bench
        .client(&filler.url, 1, Duration::from_secs(10))
        .await?;
    let read = bench
        .client(&reader.url, 1, Duration::from_secs(10))
        .await?;
    let mut redis = Redis::connect(redis_port)?;
    let reader_admin = reader.admin.clone().context("a ddbcache")?;
    let lookups_before = Histogram::scrape(&reader_admin, SHARED_DURATION).await?;
    let waits_before = metric(reader, LEASE_WAITS).await?;
    let mut probe = LatencyProbe {
        l1: Latencies::default(),
        l2: Latencies::default(),
        ping: Latencies::default(),
        not_l2: 0,
        lease_waits: 0.0,
        body_bytes: 0,
        lookup_p50: f64::NAN,
        lookup_p99: f64::NAN,
    };
    let probe_keys: Vec<u64> = (keys..keys + PROBE_KEYS).collect();
    for chunk in probe_keys.chunks(PROBE_CHUNK) {
        let stored = metric(filler, STORED_FILLS).await?;
        for &key in chunk {
            answer(&fill, &table, key).await?;
        }
        // Fills reach Redis after their answers: wait until this chunk's are stored.
        let want = stored + chunk.len() as f64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(filler, STORED_FILLS).await? < want {
            if Instant::now() > deadline {
                bail!("the filling sidecar stored fewer than {want} entries in Redis");
            }
            tokio::task::yield_now().await;
        }
        for (pass, latencies) in [
            (CacheOutcome::HitShared, &mut probe.l2),
            (CacheOutcome::Hit, &mut probe.l1),
        ] {
            for &key in chunk {
                let sent = Instant::now();
                let (outcome, body_bytes) = answer(&read, &table, key).await?;
                let took = sent.elapsed();
                probe.body_bytes = body_bytes;
                if outcome == Some(pass) {
                    latencies.push(took);
                } else if pass == CacheOutcome::HitShared {
                    probe.not_l2 += 1;
                }
            }
        }
        for _ in chunk {
            probe.ping.push(redis.ping()?);
        }
    }
    let lookups = Histogram::scrape(&reader_admin, SHARED_DURATION)
        .await?
        .minus(&lookups_before);
    probe.lookup_p50 = lookups.quantile(0.5);
    probe.lookup_p99 = lookups.quantile(0.99);
    probe.lease_waits = metric(reader, LEASE_WAITS).await? - waits_before;
    Ok(probe)
}

/// One GetItem of key number `key` that must find its item; its outcome header and body length.
async fn answer(
    client: &DynamoClient,
    table_json: &str,
    key: u64,
) -> anyhow::Result<(Option<CacheOutcome>, usize)> {
    let reply = client
        .call(Op::GetItem, get_item(table_json, key))
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.kind(), e.detail()))?;
    if !reply.status.is_success() || !reply.body.windows(7).any(|w| w == b"\"Item\":") {
        bail!(
            "GetItem of key {key} answered {}: {}",
            reply.status,
            reply.error_message()
        );
    }
    Ok((reply.cache, reply.body.len()))
}

/// What Redis holds for the tier.
struct EntryMemory {
    entries: u64,
    sampled: u64,
    /// `MEMORY USAGE` of the sampled entries, mean.
    usage_mean: f64,
    /// Their values' length (`STRLEN`: the sealed, stamped body), mean.
    value_mean: f64,
    /// Item and partition version keys (`{ns}:s:<stripe>`, at most 65,535 in all), and the mean
    /// `MEMORY USAGE` of a sample of them.
    versions: u64,
    version_usage_mean: f64,
    /// Fill leases held when it was measured (they last `fleet.shared.lease_ttl` at most).
    leases: u64,
    /// Growth of `used_memory` while the tier filled, over the entries: with the version keys,
    /// leases and Redis's own tables.
    used_per_entry: f64,
}

/// Counts the tier's keys in Redis by kind and weighs up to 2,000 of each: under the hash tag of
/// `fleet.channel` (default `ddbcache`), `d:` entries, `s:` item version stripes, `l:` leases.
fn entry_memory(port: u16, used_before: u64) -> anyhow::Result<EntryMemory> {
    let mut redis = Redis::connect(port)?;
    let used = redis.used_memory()?;
    let entries = redis.scan("{ddbcache}:d:*")?;
    if entries.is_empty() {
        bail!("Redis holds no entries of the tier");
    }
    let versions = redis.scan("{ddbcache}:s:*")?;
    let leases = redis.scan("{ddbcache}:l:*")?.len() as u64;
    let (sampled, usage_mean, value_mean) = redis.weigh(&entries[..entries.len().min(2000)])?;
    Ok(EntryMemory {
        entries: entries.len() as u64,
        sampled,
        usage_mean,
        value_mean,
        versions: versions.len() as u64,
        version_usage_mean: redis.weigh(&versions[..versions.len().min(2000)])?.1,
        leases,
        used_per_entry: used.saturating_sub(used_before) as f64 / entries.len() as f64,
    })
}

/// Hits of a sidecar with strict consistency against one with the default, both with the tier and
/// a long TTL (every request a hit), side by side.
struct Strict {
    at_concurrency: Vec<Vec<Sample>>,
    one: Vec<Vec<Sample>>,
}

async fn strict_cost(bench: &mut Bench, spec: &FleetSpec) -> anyhow::Result<Strict> {
    let (keys, concurrency) = (bench.settings.keys, bench.settings.concurrency);
    let capacity = bench.settings.item_capacity.to_string();
    let mut targets = Vec::new();
    for (name, key, label, tier) in [
        (
            "ddbcache-shared-bus",
            "shared-bus",
            "consistency = \"bus\"",
            Tier::Bus,
        ),
        (
            "ddbcache-shared-strict",
            "shared-strict",
            "consistency = \"strict\"",
            Tier::Strict,
        ),
    ] {
        let env = spec.env(HIT_TTL, &capacity, true, tier);
        let target = start_sidecar(bench, spec, name, &env).await?;
        targets.push(Target {
            key,
            label,
            ..target
        });
    }
    bench.preload(TABLE, keys).await?;
    for target in &targets {
        bench.warm(target, TABLE, keys).await?;
    }
    let at_concurrency = bench
        .side_by_side(Scenario::Shared, &targets, TABLE, keys, concurrency)
        .await?;
    let one = bench
        .side_by_side(Scenario::Shared, &targets, TABLE, keys, 1)
        .await?;
    stop_all(bench, &mut targets).await?;
    Ok(Strict {
        at_concurrency,
        one,
    })
}

/// A Redis reply (RESP2).
#[derive(Debug)]
enum Resp {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Resp>),
}

/// A plain, blocking Redis connection for PING and the memory figures: the one thing this program
/// asks Redis is simple, and a PING timed this way is Redis's own round trip and nothing more.
struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Redis {
    fn connect(port: u16) -> anyhow::Result<Redis> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting to Redis")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Redis {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    fn call(&mut self, args: &[&str]) -> anyhow::Result<Resp> {
        let mut command = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            command.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.writer.write_all(&command)?;
        match self.read()? {
            Resp::Error(e) => bail!("Redis answered {:?}: {e}", args.first()),
            reply => Ok(reply),
        }
    }

    /// One PING's round trip.
    fn ping(&mut self) -> anyhow::Result<Duration> {
        let sent = Instant::now();
        match self.call(&["PING"])? {
            Resp::Simple(pong) if pong == "PONG" => Ok(sent.elapsed()),
            other => bail!("PING answered {other:?}"),
        }
    }

    /// Every key matching `pattern` (SCAN, so Redis is never blocked).
    fn scan(&mut self, pattern: &str) -> anyhow::Result<Vec<String>> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let reply = self.call(&["SCAN", cursor.as_str(), "MATCH", pattern, "COUNT", "1000"])?;
            let Resp::Array(mut parts) = reply else {
                bail!("SCAN answered {reply:?}");
            };
            let (Some(Resp::Array(found)), Some(Resp::Bulk(Some(next)))) =
                (parts.pop(), parts.pop())
            else {
                bail!("SCAN answered an unexpected shape");
            };
            for key in found {
                if let Resp::Bulk(Some(key)) = key {
                    keys.push(String::from_utf8(key)?);
                }
            }
            cursor = String::from_utf8(next)?;
            if cursor == "0" {
                return Ok(keys);
            }
        }
    }

    /// Of `keys` still there (entries expire while they are weighed): how many, their mean
    /// `MEMORY USAGE`, and the mean length of those that are strings (`STRLEN`).
    fn weigh(&mut self, keys: &[String]) -> anyhow::Result<(u64, f64, f64)> {
        let (mut n, mut usage, mut len) = (0u64, 0.0, 0.0);
        for key in keys {
            match self.call(&["MEMORY", "USAGE", key])? {
                Resp::Integer(bytes) => usage += bytes as f64,
                Resp::Bulk(None) => continue,
                other => bail!("MEMORY USAGE answered {other:?}"),
            }
            n += 1;
            if let Ok(Resp::Integer(l)) = self.call(&["STRLEN", key]) {
                len += l as f64;
            }
        }
        Ok((n, usage / n as f64, len / n as f64))
    }

    /// `used_memory` from `INFO memory`.
    fn used_memory(&mut self) -> anyhow::Result<u64> {
        let Resp::Bulk(Some(info)) = self.call(&["INFO", "memory"])? else {
            bail!("INFO answered no text");
        };
        String::from_utf8_lossy(&info)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory has no used_memory")
    }

    fn read(&mut self) -> anyhow::Result<Resp> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line
            .split_at_checked(1)
            .context("Redis closed the connection")?;
        Ok(match kind {
            "+" => Resp::Simple(rest.to_owned()),
            "-" => Resp::Error(rest.to_owned()),
            ":" => Resp::Integer(rest.parse()?),
            "$" => {
                let len: i64 = rest.parse()?;
                if len < 0 {
                    Resp::Bulk(None)
                } else {
                    let mut data = vec![0u8; len as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(len as usize);
                    Resp::Bulk(Some(data))
                }
            }
            "*" => {
                let len: i64 = rest.parse()?;
                let mut items = Vec::new();
                for _ in 0..len.max(0) {
                    items.push(self.read()?);
                }
                Resp::Array(items)
            }
            _ => bail!("not a RESP reply: {line:?}"),
        })
    }
}

fn section(
    bench: &Bench,
    phases: &[Phase; 3],
    latency: &LatencyProbe,
    memory: &EntryMemory,
    strict: &Strict,
) -> Section {
    let s = &bench.settings;
    let rows: Vec<Vec<String>> = phases
        .iter()
        .map(|p| {
            let t = &p.steady;
            vec![
                p.label.to_owned(),
                p.sidecars.to_string(),
                if p.tier { "on" } else { "off" }.to_owned(),
                format!("{:.0}", p.rps),
                format!("{:.1}", t.pct(t.l1)),
                format!("{:.1}", t.pct(t.l2)),
                format!("{:.1}", t.hit_pct()),
                format!("{:.1}", p.upstream_per_1000()),
                format!("{:.1}", 1000.0 * t.miss as f64 / t.answered().max(1) as f64),
                t.errors.to_string(),
            ]
        })
        .collect();
    let restart_rows: Vec<Vec<String>> = phases
        .iter()
        .filter_map(|p| {
            let r = p.restart.as_ref()?;
            Some(vec![
                p.label.to_owned(),
                format!("{:.1}", r.steady.hit_pct()),
                format!(
                    "{:.1} (L1 {:.1}, L2 {:.1})",
                    r.first.hit_pct(),
                    r.first.pct(r.first.l1),
                    r.first.pct(r.first.l2)
                ),
                format!("{:.2}", r.first.hit_pct() / r.steady.hit_pct()),
                r.first.answered().to_string(),
                format!("{:.1} s", r.back_after.as_secs_f64()),
            ])
        })
        .collect();
    let lat = |name: &str, l: &Latencies| {
        vec![
            name.to_owned(),
            l.0.len().to_string(),
            format!("{:.0}", l.quantile(0.5)),
            format!("{:.0}", l.quantile(0.99)),
        ]
    };
    let l2_added = latency.l2.quantile(0.5) - latency.l1.quantile(0.5);
    let ping50 = latency.ping.quantile(0.5);
    let strict_rows = |samples: &[Vec<Sample>]| -> Vec<Vec<String>> {
        [
            "consistency = \"bus\" (default)",
            "consistency = \"strict\"",
        ]
        .iter()
        .zip(samples)
        .map(|(label, s)| {
            vec![
                label.to_string(),
                spread(s, rps).show(0),
                spread(s, |s| s.latency_us(0.5)).show(0),
                spread(s, |s| s.latency_us(0.99)).show(0),
                spread(s, server_us).show(1),
            ]
        })
        .collect()
    };
    let (a, b, c) = (&phases[0], &phases[1], &phases[2]);
    let strict_p50_added = spread(&strict.one[1], |s| s.latency_us(0.5)).median()
        - spread(&strict.one[0], |s| s.latency_us(0.5)).median();
    let body = format!(
        "{n} ddbcache processes on one Redis (`redis-server`, in memory only) in front of one \
         dynalite, all pinned with the other servers. GetItem at {rate} req/s in all (request i \
         sent at i/rate s, at most {WORKERS} in flight), each to a sidecar chosen uniformly, keys \
         Zipf (s = {ZIPF_S}) over {keys} items of {item} B; item TTL {ttl:?}, so each key is asked \
         for about {per_key:.1} times per TTL in all (the TTL model of 1M keys at 10,000 req/s with \
         a 5-minute TTL is 3). Every configuration is started afresh and measured over {measured:?} \
         after {ttl:?} of unmeasured load. L1 is a sidecar's own cache (`x-ddbcache: hit`), L2 the \
         tier (`hit-shared`); upstream reads are the sidecars' `ddbcache_upstream_request_duration_\
         seconds_count{{operation=\"GetItem\"}}`. The tier's entries are sealed with a key file, as \
         the Kubernetes fleet overlay runs it.\n\n{phases}\n\
         **Restart**: while the load goes on, one sidecar is stopped (its requests go to the \
         others), started again and, once it serves, followed for {window:?}.\n\n{restarts}\n\
         **L2 hit latency**, one request at a time, no other load: {probe} keys outside the Zipf \
         range, in chunks of {PROBE_CHUNK}, read through one sidecar (filling Redis), then, once \
         their fills were stored, through another (an L2 hit each), then again (an L1 hit each); \
         as many `PING`s from this process to Redis over one connection. Second reads that were \
         not L2 hits: {not_l2}; lease waits among them: {waits}. The reading sidecar's own \
         `{SHARED_DURATION}` for those lookups (interpolated within its buckets): p50 {lk50:.0} µs, \
         p99 {lk99:.0} µs.\n\n{latencies}\n\
         **Redis memory** after (c): {entries} entries of GetItem answers of {body} B (the body a \
         sidecar keeps); their values in Redis (`STRLEN`: stamped and sealed) {value:.0} B; \
         `MEMORY USAGE` of {sampled} of them, mean {usage:.0} B; `used_memory` grew by \
         {per_entry:.0} B per entry while (c) filled the tier (version keys, leases and Redis's \
         own tables included; entries expire after the TTL, version keys do not). Beside the \
         entries: {versions} item version keys (`MEMORY USAGE` mean {version_usage:.0} B; at most \
         65,535 for the whole fleet, one per stripe of items) and {leases} fill leases.\n\n\
         **Strict consistency**: two more sidecars with the tier and a long TTL (every request a \
         hit), one with `consistency = \"strict\"` (each hit confirmed against the versions in \
         Redis), GetItem over {hkeys} cached items, runs interleaved.\n\n\
         {conc} in flight:\n\n{strict_c}\n1 in flight:\n\n{strict_1}",
        n = s.shared_sidecars,
        rate = s.shared_rate,
        keys = s.shared_keys,
        item = s.item_bytes,
        ttl = s.shared_ttl,
        per_key = s.shared_rate * s.shared_ttl.as_secs_f64() / s.shared_keys as f64,
        measured = 2 * s.shared_ttl,
        phases = table(
            &[
                "configuration",
                "sidecars",
                "tier",
                "req/s",
                "L1 hit %",
                "L2 hit %",
                "hit %",
                "upstream reads per 1000",
                "misses per 1000",
                "errors",
            ],
            &rows,
        ),
        window = RESTART_WINDOW,
        restarts = table(
            &[
                "configuration",
                "its steady hit %",
                "first 10 s hit %",
                "first 10 s ÷ steady",
                "requests in its first 10 s",
                "out of the fleet for",
            ],
            &restart_rows,
        ),
        probe = PROBE_KEYS,
        not_l2 = latency.not_l2,
        waits = latency.lease_waits,
        lk50 = latency.lookup_p50 * 1e6,
        lk99 = latency.lookup_p99 * 1e6,
        latencies = table(
            &["", "samples", "p50 µs", "p99 µs"],
            &[
                lat("L1 hit (GetItem through the sidecar)", &latency.l1),
                lat("L2 hit (GetItem through the sidecar)", &latency.l2),
                lat("Redis PING", &latency.ping),
            ],
        ),
        entries = memory.entries,
        sampled = memory.sampled,
        usage = memory.usage_mean,
        value = memory.value_mean,
        per_entry = memory.used_per_entry,
        body = latency.body_bytes,
        versions = memory.versions,
        version_usage = memory.version_usage_mean,
        leases = memory.leases,
        hkeys = s.keys,
        conc = s.concurrency,
        strict_c = table(
            &["", "req/s", "p50 µs", "p99 µs", "server CPU µs/req"],
            &strict_rows(&strict.at_concurrency),
        ),
        strict_1 = table(
            &["", "req/s", "p50 µs", "p99 µs", "server CPU µs/req"],
            &strict_rows(&strict.one),
        ),
    );
    let mut checks = vec![
        Check::ratio(
            "upstream reads per 1000, N sidecars with the tier ÷ one sidecar",
            c.upstream_per_1000() / a.upstream_per_1000(),
            true,
            1.15,
        ),
        Check::info(
            "upstream reads per 1000, N sidecars without the tier ÷ one sidecar",
            format!("{:.2}", b.upstream_per_1000() / a.upstream_per_1000()),
        ),
    ];
    if let Some(r) = &c.restart {
        checks.push(Check::ratio(
            "restarted sidecar's first-10 s hit ratio ÷ its steady state (with the tier)",
            r.first.hit_pct() / r.steady.hit_pct(),
            false,
            0.9,
        ));
    }
    if let Some(r) = &b.restart {
        checks.push(Check::info(
            "the same without the tier",
            format!("{:.2}", r.first.hit_pct() / r.steady.hit_pct()),
        ));
    }
    checks.extend([
        Check {
            measure:
                "L2 hit p50 − L1 hit p50 (what the tier adds to a hit), against Redis PING p50"
                    .to_owned(),
            value: format!("{l2_added:.0} µs"),
            target: format!("≤ {:.0} µs (PING {ping50:.0} + 150)", ping50 + 150.0),
            met: Some(l2_added <= ping50 + 150.0),
        },
        Check::info(
            "Redis memory per entry: MEMORY USAGE (mean), beyond the answer; per version key",
            format!(
                "{:.0} B, {:.0} B beyond {} B answers; {:.0} B",
                memory.usage_mean,
                memory.usage_mean - latency.body_bytes as f64,
                latency.body_bytes,
                memory.version_usage_mean
            ),
        ),
        // CPU per hit rather than req/s: on a machine other work shares, req/s at saturation
        // follows the stalls of the moment more than the work a hit costs.
        Check::info(
            format!(
                "strict server CPU per hit ÷ default ({} in flight)",
                s.concurrency
            ),
            format!(
                "{:.2}",
                ratio(
                    &strict.at_concurrency[1],
                    &strict.at_concurrency[0],
                    server_us
                )
            ),
        ),
        Check::info(
            "strict hit p50 − default hit p50 (1 in flight)",
            format!("{strict_p50_added:.0} µs"),
        ),
    ]);
    Section {
        title: "Shared tier: one cache for the fleet".to_owned(),
        body,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_nested_resp_replies() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"*2\r\n$1\r\n0\r\n*2\r\n$3\r\nabc\r\n$-1\r\n")
                .unwrap();
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b":42\r\n").unwrap();
        });
        let mut redis = Redis::connect(port).unwrap();
        let Resp::Array(parts) = redis.call(&["SCAN", "0"]).unwrap() else {
            panic!("not an array");
        };
        assert!(matches!(&parts[0], Resp::Bulk(Some(c)) if c == b"0"));
        assert!(matches!(&parts[1], Resp::Array(keys) if keys.len() == 2));
        assert!(matches!(
            redis.call(&["STRLEN", "k"]).unwrap(),
            Resp::Integer(42)
        ));
        server.join().unwrap();
    }

    #[test]
    fn tallies_give_ratios_per_tier() {
        let t = Tally {
            l1: 60,
            l2: 30,
            miss: 10,
            other: 0,
            errors: 3,
        };
        assert_eq!(t.answered(), 100);
        assert!((t.hit_pct() - 90.0).abs() < 1e-9);
        assert!((t.pct(t.l2) - 30.0).abs() < 1e-9);
        let later = t.plus(&t);
        assert_eq!(later.minus(&t).l1, 60);
    }
}

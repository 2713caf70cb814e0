//! The fleet scenario: what the invalidation bus (`[fleet]`, README "Running a fleet") costs and
//! how far behind a peer is. Two ddbcache processes share one Redis (Debian's `redis-server`,
//! started here on a free port) in front of the same dynalite as the bus-less hit server:
//!
//! - hit throughput with and without the bus (the bus adds one atomic load to a hit);
//! - write latency (PutItem, one at a time) with and without the bus (a write waits for its
//!   PUBLISH);
//! - the invalidation lag the peer records for those writes
//!   (`ddbcache_fleet_invalidation_lag_seconds`, from the publisher's clock to the peer's
//!   invalidation; quantiles interpolated within the histogram's buckets, as Prometheus does);
//! - probes of the guarantee: the peer holds a key, a write to it goes through the other sidecar,
//!   and right after the acknowledgement the key is read through the peer. A read that still
//!   returns the old item is a read within the bus lag; the time until the peer answers the new
//!   one is measured.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_json::json;

use super::{ratio, rps, spread, Bench, Sample, Scenario, Target, START_WITHIN, TABLE};
use crate::client::{CacheOutcome, DynamoClient};
use crate::compare::report::{table, Check, Section};
use crate::run;
use crate::workload::{json_string, Op};

/// The table the writes and probes go to, so that the read scenarios' table stays cached.
const WRITE_TABLE: &str = "bench_fleet";
/// Its items: every write overwrites one of them.
const WRITE_KEYS: u64 = 1000;
/// The longest a probe waits for the peer to answer the new item before calling it stale.
const PROBE_LIMIT: Duration = Duration::from_secs(5);

const LAG: &str = "ddbcache_fleet_invalidation_lag_seconds";
const PUBLISH: &str = "ddbcache_fleet_publish_duration_seconds";

pub(super) async fn fleet(bench: &mut Bench) -> anyhow::Result<Section> {
    let servers = bench.servers().await?;
    let redis = start_redis(bench).await?;
    let capacity = bench.settings.item_capacity.to_string();
    let env = [
        ("DDBCACHE_ITEM_CAPACITY", capacity.as_str()),
        ("DDBCACHE_FLEET_REDIS_URL", redis.as_str()),
    ];
    let mut sidecars = Vec::new();
    for (name, key, label) in [
        ("ddbcache-bus", "bus", "ddbcache with the bus"),
        ("ddbcache-peer", "peer", "its peer on the bus"),
    ] {
        let (target, _) = bench
            .start_ddbcache(name, (key, label), &servers.direct.url, &env, None)
            .await?;
        wait_subscribed(bench, &target).await?;
        sidecars.push(target);
    }
    let (bus, peer) = (sidecars[0].clone(), sidecars[1].clone());
    let no_bus = Target {
        key: "no-bus",
        label: "ddbcache without a bus",
        ..servers.hit.clone()
    };

    // Hits, with and without the bus.
    let (keys, concurrency) = (bench.settings.keys, bench.settings.concurrency);
    bench.preload(TABLE, keys).await?;
    bench.warm(&no_bus, TABLE, keys).await?;
    bench.warm(&bus, TABLE, keys).await?;
    let hit_targets = [no_bus.clone(), bus.clone()];
    let hits = bench
        .side_by_side(Scenario::Fleet, &hit_targets, TABLE, keys, concurrency)
        .await?;

    // Writes, one at a time, with and without the bus; the peer records the lag of each.
    bench.preload(WRITE_TABLE, WRITE_KEYS).await?;
    let peer_admin = peer.admin.clone().context("the peer is a ddbcache")?;
    let bus_admin = bus.admin.clone().context("the bus sidecar is a ddbcache")?;
    let lag_before = Histogram::scrape(&peer_admin, LAG).await?;
    let publish_before = Histogram::scrape(&bus_admin, PUBLISH).await?;
    let write_targets = [no_bus.clone(), bus.clone()];
    let mut writes: Vec<Vec<Sample>> = vec![Vec::new(), Vec::new()];
    for run in 0..bench.settings.runs {
        for (target, samples) in write_targets.iter().zip(&mut writes) {
            let mut spec = bench.spec(target, WRITE_TABLE, WRITE_KEYS, 1);
            spec.mix = "put=100".parse()?;
            spec.admin = None;
            samples.push(bench.measure(Scenario::Fleet, target, run, &spec).await?);
        }
    }
    let lag = Histogram::scrape(&peer_admin, LAG)
        .await?
        .minus(&lag_before);
    let publish = Histogram::scrape(&bus_admin, PUBLISH)
        .await?
        .minus(&publish_before);

    let probes = probe(bench, &bus, &peer, bench.settings.fleet_probes).await?;
    bench.raw.push(json!({
        "scenario": "fleet",
        "target": "probes",
        "probes": probes.count,
        "old_within_lag": probes.old,
        "stale": probes.stale,
        "until_new_us": probes.until_new.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(),
        "lag_seconds": { "count": lag.count, "p50": lag.quantile(0.5), "p99": lag.quantile(0.99) },
    }));

    Ok(section(bench, &hits, &writes, &lag, &publish, &probes))
}

/// Starts `redis-server`, in memory only, on a free port; its URL.
pub(super) async fn start_redis(bench: &mut Bench) -> anyhow::Result<String> {
    let port = bench.procs.free_port()?;
    let port_arg = port.to_string();
    let args = [
        "--port",
        port_arg.as_str(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ];
    let program = bench.settings.redis_server.clone();
    let proc = bench
        .procs
        .spawn("redis", &program, &args, &[])
        .with_context(|| {
            format!(
                "the fleet scenario needs {} (scripts/setup.sh redis, or --redis-server)",
                program.display()
            )
        })?;
    bench.procs.wait_port(&proc, port, START_WITHIN).await?;
    Ok(format!("redis://127.0.0.1:{port}"))
}

/// Waits until a sidecar has subscribed to the bus: until then it serves no hits.
pub(super) async fn wait_subscribed(bench: &mut Bench, target: &Target) -> anyhow::Result<()> {
    wait_for_metric(
        bench,
        target,
        "ddbcache_fleet_link_up 1",
        "subscribed to the bus",
    )
    .await
}

/// Waits until a sidecar's `/metrics` has the line `line` (`what` names it, for the error).
pub(super) async fn wait_for_metric(
    bench: &mut Bench,
    target: &Target,
    line: &str,
    what: &str,
) -> anyhow::Result<()> {
    let admin = target.admin.clone().context("a ddbcache")?;
    let shows = async || {
        run::admin_text(&admin, "/metrics")
            .await
            .is_ok_and(|m| m.lines().any(|l| l == line))
    };
    bench
        .procs
        .wait_until(&target.proc, START_WITHIN, what, shows)
        .await
}

/// What the probes found.
struct Probes {
    count: u64,
    /// First reads through the peer, right after the acknowledgement, that returned the old item.
    old: u64,
    /// Probes whose peer still answered the old item after [`PROBE_LIMIT`].
    stale: u64,
    /// Per probe whose first read was old: from the acknowledgement to the peer answering the new
    /// item.
    until_new: Vec<Duration>,
}

/// `count` times: the peer caches a key, a write to it goes through `bus`, and the key is read
/// through the peer as soon as the write is acknowledged, until it answers the new item.
async fn probe(bench: &Bench, bus: &Target, peer: &Target, count: u64) -> anyhow::Result<Probes> {
    let writer = bench.client(&bus.url, 1, Duration::from_secs(10)).await?;
    let reader = bench.client(&peer.url, 1, Duration::from_secs(10)).await?;
    let mut probes = Probes {
        count,
        old: 0,
        stale: 0,
        until_new: Vec::new(),
    };
    let table = json_string(WRITE_TABLE);
    for i in 0..count {
        let key = format!(
            r#"{{"pk":{{"S":"probe{:06}"}},"sk":{{"S":"s"}}}}"#,
            i % WRITE_KEYS
        );
        let get = Bytes::from(format!(r#"{{"TableName":{table},"Key":{key}}}"#));
        // Cached by the peer: a miss fills, the next read is a hit.
        let mut held = false;
        for _ in 0..10 {
            if call(&reader, Op::GetItem, get.clone()).await?.1 == Some(CacheOutcome::Hit) {
                held = true;
                break;
            }
        }
        if !held {
            bail!("the peer never served probe key {i} from its cache");
        }
        let version = format!("probe-{i}");
        let put = format!(
            r#"{{"TableName":{table},"Item":{{"pk":{{"S":"probe{:06}"}},"sk":{{"S":"s"}},"v":{{"S":"{version}"}}}}}}"#,
            i % WRITE_KEYS
        );
        call(&writer, Op::PutItem, Bytes::from(put)).await?;
        let acked = Instant::now();
        let mut first = true;
        loop {
            let (body, _) = call(&reader, Op::GetItem, get.clone()).await?;
            let new = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .is_some_and(|v| v["Item"]["v"]["S"] == version.as_str());
            if new {
                if !first {
                    probes.until_new.push(acked.elapsed());
                }
                break;
            }
            if first {
                probes.old += 1;
                first = false;
            }
            if acked.elapsed() > PROBE_LIMIT {
                probes.stale += 1;
                break;
            }
        }
    }
    Ok(probes)
}

/// One request that must succeed: the body and the cache outcome.
async fn call(
    client: &DynamoClient,
    op: Op,
    body: Bytes,
) -> anyhow::Result<(Bytes, Option<CacheOutcome>)> {
    let reply = client
        .call(op, body)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {}", e.kind(), e.detail()))?;
    if !reply.status.is_success() {
        bail!(
            "{} answered {}: {}",
            op.name(),
            reply.status,
            reply.error_message()
        );
    }
    Ok((reply.body, reply.cache))
}

/// A Prometheus histogram of one ddbcache: cumulative counts by upper bound.
pub(super) struct Histogram {
    buckets: Vec<(f64, f64)>,
    count: f64,
    sum: f64,
}

impl Histogram {
    pub(super) async fn scrape(admin: &str, name: &str) -> anyhow::Result<Histogram> {
        Ok(Histogram::parse(
            &run::admin_text(admin, "/metrics").await?,
            name,
        ))
    }

    fn parse(text: &str, name: &str) -> Histogram {
        let bucket = format!("{name}_bucket{{le=\"");
        let mut h = Histogram {
            buckets: Vec::new(),
            count: 0.0,
            sum: 0.0,
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(&bucket) {
                if let Some((le, value)) = rest.split_once("\"} ") {
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().unwrap_or(f64::NAN)
                    };
                    h.buckets.push((le, value.parse().unwrap_or(0.0)));
                }
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                h.count = v.parse().unwrap_or(0.0);
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                h.sum = v.parse().unwrap_or(0.0);
            }
        }
        h
    }

    /// What was observed since `before` (same buckets).
    pub(super) fn minus(&self, before: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| {
                    let was = before
                        .buckets
                        .iter()
                        .find(|(b, _)| b == le)
                        .map_or(0.0, |b| b.1);
                    (*le, n - was)
                })
                .collect(),
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }

    fn mean(&self) -> f64 {
        self.sum / self.count.max(1.0)
    }

    /// The `q` quantile in seconds, interpolated linearly within its bucket (Prometheus's
    /// `histogram_quantile`); the highest finite bound when it falls in `+Inf`.
    pub(super) fn quantile(&self, q: f64) -> f64 {
        let rank = q * self.count;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, n) in &self.buckets {
            if n >= rank && n > below {
                if le.is_infinite() {
                    return lower;
                }
                return lower + (le - lower) * (rank - below) / (n - below);
            }
            (lower, below) = (le, n);
        }
        f64::NAN
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

fn section(
    bench: &Bench,
    hits: &[Vec<Sample>],
    writes: &[Vec<Sample>],
    lag: &Histogram,
    publish: &Histogram,
    probes: &Probes,
) -> Section {
    let s = &bench.settings;
    let p50 = |s: &Sample| s.latency_us(0.5);
    let p99 = |s: &Sample| s.latency_us(0.99);
    let rows = |samples: &[Vec<Sample>]| -> Vec<Vec<String>> {
        ["without a bus", "with the bus"]
            .iter()
            .zip(samples)
            .map(|(label, s)| {
                vec![
                    label.to_string(),
                    spread(s, rps).show(0),
                    spread(s, p50).show(0),
                    spread(s, p99).show(0),
                ]
            })
            .collect()
    };
    let write_p50_added = spread(&writes[1], p50).median() - spread(&writes[0], p50).median();
    let write_p99_added = spread(&writes[1], p99).median() - spread(&writes[0], p99).median();
    let mut until_new = probes.until_new.clone();
    until_new.sort();
    let longest = until_new
        .last()
        .map_or_else(|| "none".to_owned(), |d| format!("{d:?}"));
    let body = format!(
        "Two ddbcache processes on one Redis (`redis-server`, pinned with the servers) in front of \
         the same dynalite as a ddbcache without a bus.\n\n\
         **Hits**: GetItem over {keys} cached items, {concurrency} in flight.\n\n{hits}\n\
         **Writes**: PutItem over {wkeys} items, one at a time; with the bus each write waits for \
         its PUBLISH before it is answered.\n\n{writes}\n\
         **Invalidation lag** the peer recorded for those writes \
         (`{LAG}`: publisher's clock at publication to the peer's invalidation; quantiles \
         interpolated within the histogram's buckets): {lag_n} messages, p50 {lag50}, p99 {lag99}, \
         mean {lag_mean}. Time writes waited for their publish (`{PUBLISH}`): p50 {pub50}, p99 \
         {pub99}.\n\n\
         **Probes** of the guarantee: {probes} times, the peer held a key, a PutItem of it went \
         through the other sidecar, and the key was read through the peer as soon as the write \
         was acknowledged. First reads that returned the old item (within the bus lag): {old}; \
         peers still answering the old item after {limit:?} (stale): {stale}; longest time from \
         the acknowledgement to the new item: {longest}.\n",
        keys = s.keys,
        concurrency = s.concurrency,
        hits = table(&["", "req/s", "p50 µs", "p99 µs"], &rows(hits)),
        wkeys = WRITE_KEYS,
        writes = table(&["", "writes/s", "p50 µs", "p99 µs"], &rows(writes)),
        lag_n = lag.count,
        lag50 = ms(lag.quantile(0.5)),
        lag99 = ms(lag.quantile(0.99)),
        lag_mean = ms(lag.mean()),
        pub50 = ms(publish.quantile(0.5)),
        pub99 = ms(publish.quantile(0.99)),
        probes = probes.count,
        old = probes.old,
        limit = PROBE_LIMIT,
        stale = probes.stale,
    );
    Section {
        title: "Fleet bus: cost and lag".to_owned(),
        body,
        checks: vec![
            Check::ratio(
                "hit req/s with the bus ÷ without",
                ratio(&hits[1], &hits[0], rps),
                false,
                0.95,
            ),
            Check::info(
                "write p50 added by the bus (1 in flight)",
                format!("{write_p50_added:.0} µs"),
            ),
            Check::info(
                "write p99 added by the bus (1 in flight)",
                format!("{write_p99_added:.0} µs"),
            ),
            Check::info(
                "invalidation lag at the peer, p50 / p99",
                format!("{} / {}", ms(lag.quantile(0.5)), ms(lag.quantile(0.99))),
            ),
            Check {
                measure: "probes stale after the bus lag".to_owned(),
                value: probes.stale.to_string(),
                target: "0".to_owned(),
                met: Some(probes.stale == 0),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets_as_prometheus_does() {
        let text = "x_bucket{le=\"0.001\"} 0\nx_bucket{le=\"0.002\"} 50\nx_bucket{le=\"0.005\"} 100\nx_bucket{le=\"+Inf\"} 100\nx_sum 0.25\nx_count 100\n";
        let h = Histogram::parse(text, "x");
        assert_eq!(h.count, 100.0);
        assert!((h.quantile(0.5) - 0.002).abs() < 1e-12);
        assert!((h.quantile(0.25) - 0.0015).abs() < 1e-12);
        assert!((h.quantile(0.99) - 0.00494).abs() < 1e-9);
        let before = Histogram::parse("x_bucket{le=\"0.001\"} 0\nx_bucket{le=\"0.002\"} 50\nx_bucket{le=\"0.005\"} 50\nx_bucket{le=\"+Inf\"} 50\nx_count 50\n", "x");
        let since = h.minus(&before);
        assert_eq!(since.count, 50.0);
        assert!(since.quantile(0.5) > 0.002 && since.quantile(0.5) <= 0.005);
    }
}

//! What the fleet tests share (tests/fleet.rs, tests/shared.rs): sidecars on one Redis, a
//! workload of writers and readers that counts stale reads, and tables with DynamoDB Streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, StreamSpecification, StreamViewType};
use aws_sdk_dynamodb::Client;
use ddbcache::config::{Config, StreamTables};

use super::*;

pub const SIDECARS: usize = 3;

/// A small deterministic generator (xorshift64*): which key and which sidecar.
pub struct Picks(u64);

impl Picks {
    pub fn seeded(seed: u64) -> Picks {
        Picks(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}
pub const WAIT: Duration = Duration::from_secs(20);

/// Starts `n` sidecars on one bus, and waits until each has subscribed.
pub async fn start_fleet(
    engine: &str,
    redis: &RedisServer,
    n: usize,
    edit: impl Fn(&mut Config),
) -> Vec<TestProxy> {
    let mut proxies = Vec::new();
    for _ in 0..n {
        let proxy = start_proxy_with(engine, |c| {
            c.fleet.redis_url = Some(redis.url());
            c.fleet.ping_interval = Duration::from_millis(200);
            c.fleet.ping_timeout = Duration::from_millis(500);
            edit(c);
        })
        .await;
        proxy.wait_ready().await;
        proxy
            .wait_metric("ddbcache_fleet_link_up", WAIT, |v| v == 1.0)
            .await;
        proxies.push(proxy);
    }
    proxies
}

pub async fn clients(proxies: &[TestProxy]) -> Arc<Vec<Client>> {
    let mut clients = Vec::new();
    for p in proxies {
        clients.push(sdk_client(&p.endpoint).await);
    }
    Arc::new(clients)
}

pub fn version_of(item: Option<&HashMap<String, AttributeValue>>) -> u64 {
    item.and_then(|i| i.get("v"))
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Writers and readers over a few keys. Each key belongs to one writer, which writes increasing
/// versions of it one at a time; `acked[k]` is the highest version acknowledged so far, and when.
/// A reader notes `acked[k]` before it sends its GetItem: an answer older than that is stale.
///
/// The guarantee across sidecars holds within the bus lag: a peer applies a write's message a
/// little after the writer got Redis's answer, and a read that reaches the peer in between (on a
/// machine so loaded that the peer's bus thread waits for a CPU) can still find the old entry.
/// Such reads are counted apart (`within_lag`, with the longest such delay after the
/// acknowledgement); a stale read that started later than [`BUS_LAG_BOUND`] after it is a
/// failure.
pub struct Workload {
    pub table: String,
    /// Keys are `<prefix><n>`.
    pub prefix: String,
    /// How long after an acknowledgement an older answer is counted apart rather than stale.
    pub lag_bound: Duration,
    pub acked: Vec<Mutex<(u64, Instant)>>,
    pub stop: AtomicBool,
    pub reads: AtomicU64,
    pub writes: AtomicU64,
    pub stale: AtomicU64,
    pub within_lag: AtomicU64,
    pub within_lag_longest_us: AtomicU64,
}

/// Longer than any bus lag seen on a loaded 2-core machine running the whole suite (p99 about
/// 250ms), far shorter than the TTL that would bound staleness without the bus.
pub const BUS_LAG_BOUND: Duration = Duration::from_secs(1);

pub const KEYS: usize = 24;

impl Workload {
    pub fn new(table: &str) -> Arc<Workload> {
        Workload::with(table, "k", BUS_LAG_BOUND)
    }

    /// A workload over keys `<prefix><n>` whose older answers are stale past `lag_bound` after
    /// the acknowledgement (the stream's lag, for writes made around every sidecar).
    pub fn with(table: &str, prefix: &str, lag_bound: Duration) -> Arc<Workload> {
        Arc::new(Workload {
            table: table.to_string(),
            prefix: prefix.to_string(),
            lag_bound,
            acked: (0..KEYS).map(|_| Mutex::new((0, Instant::now()))).collect(),
            stop: AtomicBool::new(false),
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            within_lag: AtomicU64::new(0),
            within_lag_longest_us: AtomicU64::new(0),
        })
    }

    /// Writes `rounds` versions of each of its keys (or until stopped), each through a random
    /// sidecar.
    pub async fn writer(
        self: Arc<Self>,
        clients: Arc<Vec<Client>>,
        id: usize,
        of: usize,
        rounds: u64,
    ) {
        let mut rng = Picks::seeded(id as u64 + 1);
        for version in 1..=rounds {
            for k in (id..KEYS).step_by(of) {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let client = &clients[rng.below(clients.len())];
                let put = client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(&format!("{}{k}", self.prefix)))
                    .item("sk", s("s"))
                    .item("v", n(&version.to_string()))
                    .send()
                    .await;
                if put.is_ok() {
                    *self.acked[k].lock().unwrap() = (version, Instant::now());
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads random keys through random sidecars until stopped, counting stale answers.
    pub async fn reader(self: Arc<Self>, clients: Arc<Vec<Client>>, id: usize) {
        let mut rng = Picks::seeded(1000 + id as u64);
        while !self.stop.load(Ordering::Relaxed) {
            let k = rng.below(KEYS);
            let sidecar = rng.below(clients.len());
            let (floor, acked_at) = *self.acked[k].lock().unwrap();
            let after_ack = acked_at.elapsed();
            let got = clients[sidecar]
                .get_item()
                .table_name(&self.table)
                .key("pk", s(&format!("{}{k}", self.prefix)))
                .key("sk", s("s"))
                .send()
                .await;
            let Ok(got) = got else { continue };
            self.reads.fetch_add(1, Ordering::Relaxed);
            let version = version_of(got.item());
            if version < floor && after_ack < self.lag_bound {
                self.within_lag.fetch_add(1, Ordering::Relaxed);
                self.within_lag_longest_us
                    .fetch_max(after_ack.as_micros() as u64, Ordering::Relaxed);
                eprintln!("within the bus lag: k{k} through sidecar {sidecar}: read v{version}, sent {after_ack:?} after v{floor} was acknowledged");
            } else if version < floor {
                self.stale.fetch_add(1, Ordering::Relaxed);
                eprintln!("STALE: k{k} through sidecar {sidecar}: read v{version}, sent {after_ack:?} after v{floor} was acknowledged");
            }
        }
    }
}

/// Sum of one series over every sidecar.
pub async fn total(proxies: &[TestProxy], series: &str) -> f64 {
    let mut sum = 0.0;
    for p in proxies {
        sum += p.metric(series).await;
    }
    sum
}

/// p50 and p99 of a Prometheus histogram summed over the sidecars, as bucket upper bounds, with
/// the count and mean.
pub async fn histogram_summary(proxies: &[TestProxy], name: &str) -> String {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let (mut count, mut sum) = (0.0, 0.0);
    for p in proxies {
        let (_, _, body) = http_get(&format!("{}/metrics", p.admin)).await;
        for line in String::from_utf8_lossy(&body).lines() {
            if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                let (le, value) = rest.split_once("\"} ").unwrap();
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                let value: f64 = value.parse().unwrap();
                match buckets.iter_mut().find(|(b, _)| *b == le) {
                    Some(b) => b.1 += value,
                    None => buckets.push((le, value)),
                }
            } else if let Some(v) = line.strip_prefix(&format!("{name}_count ")) {
                count += v.parse::<f64>().unwrap();
            } else if let Some(v) = line.strip_prefix(&format!("{name}_sum ")) {
                sum += v.parse::<f64>().unwrap();
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= q * count)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    format!(
        "{name}: {count} observations, mean {:.3} ms, p50 <= {} ms, p99 <= {} ms",
        if count > 0.0 { sum / count * 1e3 } else { 0.0 },
        quantile(0.5) * 1e3,
        quantile(0.99) * 1e3,
    )
}

pub async fn create_fleet_table(proxies: &[TestProxy], prefix: &str) -> String {
    let table = unique_table(prefix);
    let client = sdk_client(&proxies[0].endpoint).await;
    create_table(&client, &table).await;
    table
}

pub async fn create_streamed_table(direct: &Client, prefix: &str) -> String {
    let table = unique_table(prefix);
    create_table_request(direct, &table)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::KeysOnly)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("CreateTable with a stream");
    wait_active(direct, &table).await;
    table
}

pub async fn put_direct(direct: &Client, table: &str, pk: &str, version: u64) {
    direct
        .put_item()
        .table_name(table)
        .item("pk", s(pk))
        .item("sk", s("s"))
        .item("v", n(&version.to_string()))
        .send()
        .await
        .expect("PutItem directly to the engine");
}

/// GetItem through a sidecar: the item's version and whether it was a hit.
pub async fn get_through(proxy: &TestProxy, table: &str, pk: &str) -> (u64, bool) {
    let got = get_item(&proxy.endpoint, table, pk, None).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    (got.version, got.cache == "hit")
}

/// Caches `pk` in every given sidecar (a miss, then a hit proves it is held).
pub async fn cache_everywhere(proxies: &[&TestProxy], table: &str, pk: &str, version: u64) {
    for p in proxies {
        let deadline = Instant::now() + WAIT;
        loop {
            let (v, hit) = get_through(p, table, pk).await;
            if hit && v == version {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{pk} never cached at v{version} (v{v})"
            );
        }
    }
}

/// Waits until every given sidecar answers `pk` at `version`; the time it took.
pub async fn until_everywhere(
    proxies: &[&TestProxy],
    table: &str,
    pk: &str,
    version: u64,
    since: Instant,
) -> Duration {
    for p in proxies {
        loop {
            let (v, _) = get_through(p, table, pk).await;
            if v >= version {
                break;
            }
            assert!(
                since.elapsed() < WAIT,
                "{pk} still at v{v} through {} {:?} after the write: the stream did not invalidate it",
                p.endpoint,
                since.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    since.elapsed()
}

/// Which sidecar holds the table's stream lease (waiting until exactly one does).
pub async fn lease_holder(proxies: &[&TestProxy], table: &str) -> usize {
    let series = format!("ddbcache_stream_lease_held{{table=\"{table}\"}}");
    let deadline = Instant::now() + WAIT;
    loop {
        let mut holders = Vec::new();
        for (i, p) in proxies.iter().enumerate() {
            if p.metric(&series).await == 1.0 {
                holders.push(i);
            }
        }
        if holders.len() == 1 {
            return holders[0];
        }
        assert!(Instant::now() < deadline, "lease holders: {holders:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Writes a probe key directly until the stream reader has read a record: it is then reading
/// (and has a checkpoint).
pub async fn until_stream_read(direct: &Client, proxies: &[&TestProxy], table: &str) {
    let series = format!("ddbcache_stream_records_total{{table=\"{table}\"}}");
    let deadline = Instant::now() + WAIT;
    let mut version = 0;
    loop {
        version += 1;
        put_direct(direct, table, "probe", version).await;
        for _ in 0..20 {
            let mut read = 0.0;
            for p in proxies {
                read += p.metric(&series).await;
            }
            if read > 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            Instant::now() < deadline,
            "the stream reader never read a record"
        );
    }
}

pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn streams_config(table: &str) -> impl Fn(&mut Config) + '_ {
    move |c: &mut Config| {
        c.streams.tables = StreamTables::Named(vec![table.to_string()]);
        c.streams.lease_ttl = Duration::from_secs(1);
    }
}

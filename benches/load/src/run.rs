//! One measured run: drive a workload against an endpoint and report what happened. `run` prints
//! one; `compare` repeats them against several targets, reading each server's CPU time when the
//! measurement starts and when it ends through the `sample` hook.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::client::{self, DynamoClient};
use crate::driver::{self, DriveOptions};
use crate::report::{CacheCounters, Report, RunInfo};
use crate::workload::{Dist, KeySampler, Keyspace, Mix, RequestShape, Workload};

/// Everything that defines a run.
#[derive(Clone)]
pub struct RunSpec {
    pub endpoint: String,
    pub table: String,
    pub keyspace: Keyspace,
    pub mix: Mix,
    pub dist: Dist,
    pub zipf_s: f64,
    pub shape: RequestShape,
    /// Closed loop: requests in flight. Open loop: connections.
    pub concurrency: usize,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
    /// Measure for this long, or for `requests` requests.
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// ddbcache's admin address: report the hit ratio from `/metrics` deltas.
    pub admin: Option<String>,
    pub seed: Option<u64>,
    /// A progress line per second on stderr.
    pub progress: bool,
    /// The runtime's worker threads as `--threads` gave them, for the report.
    pub threads: usize,
}

impl RunSpec {
    /// GetItem only, keys uniform over `keys`, closed loop: the workload `compare` measures.
    pub fn get_items(endpoint: &str, table: &str, keys: u64, item_bytes: usize) -> RunSpec {
        RunSpec {
            endpoint: endpoint.to_owned(),
            table: table.to_owned(),
            keyspace: Keyspace {
                keys,
                rows_per_pk: 1,
                item_bytes,
            },
            mix: "get=100".parse().expect("a valid mix"),
            dist: Dist::Uniform,
            zipf_s: 0.99,
            shape: RequestShape {
                batch_size: 10,
                query_limit: 10,
                scan_limit: 25,
                consistent_read: false,
            },
            concurrency: 32,
            rate: None,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            warmup: Duration::ZERO,
            admin: None,
            seed: None,
            progress: false,
            threads: 1,
        }
    }

    fn info(&self) -> RunInfo {
        RunInfo {
            endpoint: self.endpoint.clone(),
            table: self.table.clone(),
            mix: self.mix.describe(),
            dist: match self.dist {
                Dist::Uniform => "uniform".to_owned(),
                Dist::Zipf => format!("zipf s={}", self.zipf_s),
                Dist::Seq => "sequential".to_owned(),
            },
            keys: self.keyspace.keys,
            item_bytes: self.keyspace.item_bytes,
            mode: if self.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            concurrency: self.concurrency,
            rate: self.rate,
            threads: self.threads,
            warmup: self.warmup,
        }
    }
}

/// A run's report, and what `sample` read when measurement started and when it ended.
pub struct Measured<S> {
    pub report: Report,
    pub before: S,
    pub after: S,
}

/// Drives `spec` through `client`. `sample` is called when the warm-up ends and again after
/// the last measured response.
pub async fn measure<S: Send + 'static>(
    spec: &RunSpec,
    client: Arc<DynamoClient>,
    sample: impl Fn() -> S + Send + Sync + 'static,
) -> anyhow::Result<Measured<S>> {
    if spec.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(rate) = spec.rate {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("--rate must be a positive number of requests per second");
        }
    }
    let sampler = KeySampler::new(spec.keyspace.keys, spec.dist, spec.zipf_s)?;
    let workload = Arc::new(Workload::new(
        &spec.table,
        spec.keyspace,
        spec.shape.clone(),
        spec.mix.clone(),
        sampler,
    ));

    // Give the runtime a moment so the first due time is not already late.
    let start = Instant::now() + Duration::from_millis(20);
    let measure_start = start + spec.warmup;
    let sample = Arc::new(sample);
    let at_start = {
        let admin = spec.admin.clone();
        let sample = Arc::clone(&sample);
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_start.into()).await;
            let before = sample();
            let counters = match admin {
                Some(admin) => Some(scrape(&admin).await?),
                None => None,
            };
            anyhow::Ok((before, counters))
        })
    };
    let outcome = driver::drive(
        client,
        workload,
        DriveOptions {
            concurrency: spec.concurrency,
            rate: spec.rate,
            duration: spec.duration,
            requests: spec.requests,
            warmup: spec.warmup,
            start,
            seed: spec.seed.unwrap_or_else(rand::random),
            progress: spec.progress,
        },
    )
    .await?;
    let after = sample();
    let (before, counters_before) = at_start.await??;
    let admin = match (counters_before, &spec.admin) {
        (Some(before), Some(admin)) => Some(CacheCounters::delta(&before, &scrape(admin).await?)),
        _ => None,
    };
    Ok(Measured {
        report: Report {
            info: spec.info(),
            record: outcome.record,
            elapsed: outcome.elapsed,
            admin,
        },
        before,
        after,
    })
}

/// Reads the cache counters from ddbcache's admin port.
async fn scrape(admin: &str) -> anyhow::Result<CacheCounters> {
    let text = admin_text(admin, "/metrics").await?;
    Ok(CacheCounters::parse(&text))
}

/// `GET` of an admin endpoint (`/metrics`, `/cache`), as text.
pub async fn admin_text(admin: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let (status, body) =
        client::http_call(http::Method::GET, &url, Duration::from_secs(10)).await?;
    if !status.is_success() {
        bail!("GET {url}: HTTP {status}");
    }
    String::from_utf8(body.to_vec()).with_context(|| format!("{url} is not UTF-8"))
}

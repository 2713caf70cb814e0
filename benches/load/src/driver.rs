//! The two ways of applying load.
//!
//! **Closed loop** (`--concurrency N`): N workers each send a request, wait for its response, and
//! send the next. Throughput is whatever the target sustains; latency is send-to-response. This
//! is the right tool to find the maximum throughput and to compare targets at the same
//! concurrency, but it under-reports tail latency: while one request is stuck, its worker sends
//! nothing, so the slow period is sampled once ("coordinated omission").
//!
//! **Open loop** (`--rate R`): request k is due at `start + k / R`, whatever happened before. A
//! ticker thread releases permits at the due times (`std::thread::sleep`, precise to tens of µs,
//! unlike tokio's 1 ms timer wheel); `--concurrency` workers, each one keep-alive connection,
//! take them in order. Latency is measured from the *intended* start, so a request that waited
//! for a free connection behind a slow one is charged for the wait, as a real client at that
//! rate would be. The time from the actual send is reported too (`from send`). Requests still
//! waiting when the run ends are reported as `missed`: the target did not sustain the rate.
//!
//! Both record a warm-up phase (`--warmup`) separately and drop it from the report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use tokio::sync::Semaphore;

use crate::client::{DynamoClient, Reply, TransportError};
use crate::report::Record;
use crate::workload::{Op, Workload};

pub struct DriveOptions {
    /// Closed loop: requests in flight. Open loop: connections (workers).
    pub concurrency: usize,
    /// Open loop target, requests per second.
    pub rate: Option<f64>,
    /// Measure for this long ...
    pub duration: Option<Duration>,
    /// ... or for this many requests.
    pub requests: Option<u64>,
    pub warmup: Duration,
    /// When the first request is due; warm-up ends at `start + warmup`.
    pub start: Instant,
    pub seed: u64,
    /// Print a progress line on stderr every second.
    pub progress: bool,
}

pub struct Outcome {
    pub record: Record,
    /// From the end of warm-up to the last measured response.
    pub elapsed: Duration,
}

#[derive(Default)]
struct WorkerStats {
    warmup: Record,
    measured: Record,
}

impl WorkerStats {
    /// Records one answer: `latency` as the user saw it, `service` from sending to answer, and
    /// for a measured request how far into the measurement it ended.
    fn record(
        &mut self,
        measured: Option<Duration>,
        op: Op,
        latency: Duration,
        service: Duration,
        result: &Result<Reply, TransportError>,
    ) {
        let record = if measured.is_some() {
            &mut self.measured
        } else {
            &mut self.warmup
        };
        record.record(op, latency, service, result);
        if let Some(done_at) = measured {
            record.last_done = record.last_done.max(done_at);
        }
    }
}

struct Shared {
    client: Arc<DynamoClient>,
    workload: Arc<Workload>,
    measure_start: Instant,
    /// Duration mode: nothing is sent at or after this instant.
    end: Option<Instant>,
    /// Requests mode (closed loop): measured requests still to hand out.
    requests: Option<u64>,
    claimed: AtomicU64,
}

/// Runs the load and returns what the measurement phase recorded.
pub async fn drive(
    client: Arc<DynamoClient>,
    workload: Arc<Workload>,
    opts: DriveOptions,
) -> anyhow::Result<Outcome> {
    let workers = opts.concurrency.max(1);
    let measure_start = opts.start + opts.warmup;
    let shared = Arc::new(Shared {
        client,
        workload,
        measure_start,
        end: opts.duration.map(|d| measure_start + d),
        requests: opts.requests,
        claimed: AtomicU64::new(0),
    });
    let stats: Vec<Arc<Mutex<WorkerStats>>> = (0..workers)
        .map(|_| Arc::new(Mutex::new(WorkerStats::default())))
        .collect();

    let finished = Arc::new(AtomicBool::new(false));
    let progress = opts.progress.then(|| {
        tokio::spawn(progress_lines(
            stats.clone(),
            opts.start,
            measure_start,
            Arc::clone(&finished),
        ))
    });

    tokio::time::sleep_until(opts.start.into()).await;
    let mut handles = Vec::with_capacity(workers);
    let mut ticker = None;
    match opts.rate {
        None => {
            for (i, s) in stats.iter().enumerate() {
                let rng = SmallRng::seed_from_u64(opts.seed.wrapping_add(i as u64));
                handles.push(tokio::spawn(closed_worker(
                    Arc::clone(&shared),
                    Arc::clone(s),
                    rng,
                )));
            }
        }
        Some(rate) => {
            let schedule = Arc::new(Schedule::new(&opts, rate));
            for (i, s) in stats.iter().enumerate() {
                let rng = SmallRng::seed_from_u64(opts.seed.wrapping_add(i as u64));
                handles.push(tokio::spawn(open_worker(
                    Arc::clone(&shared),
                    Arc::clone(&schedule),
                    Arc::clone(s),
                    rng,
                )));
            }
            let schedule = Arc::clone(&schedule);
            ticker = Some(tokio::task::spawn_blocking(move || {
                schedule.release_on_time(workers)
            }));
        }
    }
    for handle in handles {
        handle.await?;
    }
    if let Some(ticker) = ticker {
        ticker.await?;
    }
    finished.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        progress.abort();
    }

    let mut record = Record::default();
    for s in &stats {
        record.merge(&s.lock().measured);
    }
    let elapsed = if record.last_done > Duration::ZERO {
        record.last_done
    } else {
        opts.duration.unwrap_or(Duration::ZERO)
    };
    Ok(Outcome { record, elapsed })
}

async fn closed_worker(shared: Arc<Shared>, stats: Arc<Mutex<WorkerStats>>, mut rng: SmallRng) {
    loop {
        let start = Instant::now();
        if shared.end.is_some_and(|end| start >= end) {
            break;
        }
        let measured = start >= shared.measure_start;
        if measured {
            if let Some(n) = shared.requests {
                if shared.claimed.fetch_add(1, Ordering::Relaxed) >= n {
                    break;
                }
            }
        }
        let (op, body) = shared.workload.next_request(&mut rng);
        let result = shared.client.call(op, body).await;
        let done = Instant::now();
        stats.lock().record(
            measured.then(|| done - shared.measure_start),
            op,
            done - start,
            done - start,
            &result,
        );
        back_off_if_unreachable(&result).await;
    }
}

/// A refused connection fails in microseconds; without a pause every worker would spin.
async fn back_off_if_unreachable<T>(result: &Result<T, TransportError>) {
    if let Err(TransportError::Connect(_)) = result {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Open-loop due times, and the permits that release them.
struct Schedule {
    t0: Instant,
    /// Seconds between two due times.
    interval: f64,
    /// Requests due before the end of warm-up.
    warmup_count: u64,
    /// Requests scheduled in all (warm-up included).
    total: u64,
    next: AtomicU64,
    permits: Semaphore,
}

impl Schedule {
    fn new(opts: &DriveOptions, rate: f64) -> Schedule {
        let interval = 1.0 / rate;
        let warmup_count = (opts.warmup.as_secs_f64() / interval).ceil() as u64;
        let measured = match (opts.requests, opts.duration) {
            (Some(n), _) => n,
            (None, Some(d)) => (d.as_secs_f64() / interval).ceil() as u64,
            (None, None) => 0,
        };
        Schedule {
            t0: opts.start,
            interval,
            warmup_count,
            total: warmup_count + measured,
            next: AtomicU64::new(0),
            permits: Semaphore::new(0),
        }
    }

    fn due(&self, idx: u64) -> Instant {
        self.t0 + Duration::from_secs_f64(idx as f64 * self.interval)
    }

    /// Runs on its own thread: releases request k once `due(k)` has passed, then one extra
    /// permit per worker so every worker wakes up, finds the schedule exhausted, and exits.
    fn release_on_time(&self, workers: usize) {
        // Sleeping less than this just burns CPU the target needs; at high rates the ticker
        // releases several due requests per wake-up instead.
        const MIN_SLEEP: Duration = Duration::from_micros(200);
        let mut released = 0u64;
        while released < self.total {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(self.t0).as_secs_f64();
            let due = ((elapsed / self.interval).floor() as u64 + 1).min(self.total);
            if due > released {
                self.permits.add_permits((due - released) as usize);
                released = due;
            }
            if released < self.total {
                let wait = self.due(released).saturating_duration_since(Instant::now());
                std::thread::sleep(wait.max(MIN_SLEEP));
            }
        }
        self.permits.add_permits(workers);
    }
}

async fn open_worker(
    shared: Arc<Shared>,
    schedule: Arc<Schedule>,
    stats: Arc<Mutex<WorkerStats>>,
    mut rng: SmallRng,
) {
    loop {
        match schedule.permits.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let idx = schedule.next.fetch_add(1, Ordering::Relaxed);
        if idx >= schedule.total {
            break;
        }
        let intended = schedule.due(idx);
        let measured = idx >= schedule.warmup_count;
        let sent = Instant::now();
        if shared.end.is_some_and(|end| sent >= end) {
            if measured {
                stats.lock().measured.missed += 1;
            }
            continue;
        }
        let (op, body) = shared.workload.next_request(&mut rng);
        let result = shared.client.call(op, body).await;
        let done = Instant::now();
        stats.lock().record(
            measured.then(|| done.saturating_duration_since(shared.measure_start)),
            op,
            done.saturating_duration_since(intended),
            done - sent,
            &result,
        );
        back_off_if_unreachable(&result).await;
    }
}

/// One line per second on stderr: phase, rate over the last second, errors so far, and p99 so
/// far in the current phase.
async fn progress_lines(
    stats: Vec<Arc<Mutex<WorkerStats>>>,
    start: Instant,
    measure_start: Instant,
    finished: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    let mut last_count = 0u64;
    let mut last_at = start;
    loop {
        tick.tick().await;
        if finished.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let mut count = 0u64;
        let mut errors = 0u64;
        let mut missed = 0u64;
        let mut warmup: Option<Histogram<u64>> = None;
        let mut measured: Option<Histogram<u64>> = None;
        for s in &stats {
            let s = s.lock();
            count += s.warmup.completed() + s.measured.completed();
            errors += s.warmup.error_count() + s.measured.error_count();
            missed += s.measured.missed;
            merge_into(&mut warmup, &s.warmup.latency);
            merge_into(&mut measured, &s.measured.latency);
        }
        // The phase is the one that has latencies to show: right at the end of warm-up the
        // measurement has not completed anything yet.
        let measuring = now >= measure_start && measured.as_ref().is_some_and(|h| !h.is_empty());
        let phase = if measuring { measured } else { warmup };
        let rate = (count - last_count) as f64 / now.duration_since(last_at).as_secs_f64();
        last_count = count;
        last_at = now;
        let p99 = phase
            .filter(|h| !h.is_empty())
            .map(|h| format!("{} us", h.value_at_quantile(0.99)))
            .unwrap_or_else(|| "-".to_owned());
        let missed = if missed > 0 {
            format!("  missed {missed}")
        } else {
            String::new()
        };
        eprintln!(
            "[{:>4.0}s] {:<7} {:>9.0} req/s  errors {errors}  p99 {p99}{missed}",
            now.duration_since(start).as_secs_f64(),
            if measuring { "measure" } else { "warm-up" },
            rate
        );
    }
}

fn merge_into(sum: &mut Option<Histogram<u64>>, h: &Histogram<u64>) {
    match sum {
        Some(sum) => {
            let _ = sum.add(h);
        }
        None => *sum = Some(h.clone()),
    }
}

//! What a run measured, and how it is shown.
//!
//! Each worker owns a [`Record`] (behind an uncontended lock the progress line also reads); at
//! the end they are merged into one and turned into a [`Report`], printed as a table or as one
//! JSON object (`--json`). Latencies are HDR histograms in microseconds with three significant
//! digits, so p99.9 and max are exact to 0.1%.
//!
//! With `--admin`, ddbcache's `/metrics` is read when measurement starts and when it ends; the
//! hit ratio is computed from the deltas of `ddbcache_cache_hits_total` and
//! `ddbcache_cache_misses_total`, so warm-up traffic and earlier runs do not count.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::client::{CacheOutcome, Reply, TransportError};
use crate::workload::Op;

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing: memory follows the largest latency seen rather than a fixed bound.
    Histogram::new(3).expect("3 significant digits is a valid histogram precision")
}

/// Counts and latencies of one operation.
#[derive(Clone)]
pub struct OpRecord {
    pub ok: u64,
    pub errors: u64,
    pub latency: Histogram<u64>,
}

impl Default for OpRecord {
    fn default() -> Self {
        OpRecord {
            ok: 0,
            errors: 0,
            latency: new_histogram(),
        }
    }
}

/// Occurrences of one kind of error, with the first message seen.
#[derive(Clone, Debug)]
pub struct ErrorCount {
    pub count: u64,
    pub sample: String,
}

/// Everything measured over one phase (warm-up or measurement) by one worker, or merged.
#[derive(Clone)]
pub struct Record {
    /// Latency in µs. Closed loop: from send to full response. Open loop: from the intended
    /// start time, so queueing behind a slow response is counted (no coordinated omission).
    pub latency: Histogram<u64>,
    /// Open loop only: from the actual send, i.e. the latency that hides queueing.
    pub service: Histogram<u64>,
    pub ops: [OpRecord; 6],
    pub errors: BTreeMap<String, ErrorCount>,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub cache_bypass: u64,
    /// GetItem answers without an `Item` (the key was never written: check `preload`).
    pub get_not_found: u64,
    /// Open loop: scheduled requests that were never sent because the run ended first.
    pub missed: u64,
    /// Time of the last completion, relative to the start of measurement.
    pub last_done: Duration,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            latency: new_histogram(),
            service: new_histogram(),
            ops: Default::default(),
            errors: BTreeMap::new(),
            cache_hit: 0,
            cache_miss: 0,
            cache_bypass: 0,
            get_not_found: 0,
            missed: 0,
            last_done: Duration::ZERO,
        }
    }
}

impl Record {
    /// Records one finished request. `latency` is what the report shows, `service` the time
    /// since the actual send (equal to `latency` in closed loop).
    pub fn record(
        &mut self,
        op: Op,
        latency: Duration,
        service: Duration,
        result: &Result<Reply, TransportError>,
    ) {
        let us = latency.as_micros().min(u64::MAX as u128) as u64;
        let _ = self.latency.record(us);
        let _ = self
            .service
            .record(service.as_micros().min(u64::MAX as u128) as u64);
        let per_op = &mut self.ops[op.index()];
        let _ = per_op.latency.record(us);
        match result {
            Ok(reply) if reply.status.is_success() => {
                per_op.ok += 1;
                match reply.cache {
                    Some(CacheOutcome::Hit | CacheOutcome::HitShared) => self.cache_hit += 1,
                    Some(CacheOutcome::Miss) => self.cache_miss += 1,
                    Some(CacheOutcome::Bypass) => self.cache_bypass += 1,
                    Some(CacheOutcome::Stale) | None => {}
                }
                if op == Op::GetItem && !contains(&reply.body, b"\"Item\"") {
                    self.get_not_found += 1;
                }
            }
            Ok(reply) => {
                per_op.errors += 1;
                let (kind, message) = dynamodb_error(reply);
                self.count_error(kind, message);
            }
            Err(e) => {
                per_op.errors += 1;
                self.count_error(e.kind().to_owned(), e.detail());
            }
        }
    }

    fn count_error(&mut self, kind: String, sample: String) {
        self.errors
            .entry(kind)
            .or_insert(ErrorCount { count: 0, sample })
            .count += 1;
    }

    pub fn merge(&mut self, other: &Record) {
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.ok += theirs.ok;
            mine.errors += theirs.errors;
            let _ = mine.latency.add(&theirs.latency);
        }
        for (kind, e) in &other.errors {
            self.errors
                .entry(kind.clone())
                .or_insert(ErrorCount {
                    count: 0,
                    sample: e.sample.clone(),
                })
                .count += e.count;
        }
        self.cache_hit += other.cache_hit;
        self.cache_miss += other.cache_miss;
        self.cache_bypass += other.cache_bypass;
        self.get_not_found += other.get_not_found;
        self.missed += other.missed;
        self.last_done = self.last_done.max(other.last_done);
    }

    pub fn completed(&self) -> u64 {
        self.latency.len()
    }

    pub fn error_count(&self) -> u64 {
        self.ops.iter().map(|o| o.errors).sum()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `("400 ValidationException", message)` from an error response.
fn dynamodb_error(reply: &Reply) -> (String, String) {
    let kind = reply
        .error_type()
        .unwrap_or_else(|| "(no __type)".to_owned());
    (
        format!("{} {kind}", reply.status.as_u16()),
        reply.error_message(),
    )
}

/// Cache counters read from ddbcache's `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct CacheCounters {
    /// cache label ("item", "query") -> (hits, misses)
    pub by_cache: BTreeMap<String, (f64, f64)>,
}

impl CacheCounters {
    /// Parses the Prometheus text format, keeping `ddbcache_cache_hits_total` and
    /// `ddbcache_cache_misses_total`.
    pub fn parse(text: &str) -> CacheCounters {
        let mut out = CacheCounters::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (name, labels) = match series.find('{') {
                Some(i) => (&series[..i], &series[i..]),
                None => (series, ""),
            };
            let is_hit = match name {
                "ddbcache_cache_hits_total" => true,
                "ddbcache_cache_misses_total" => false,
                _ => continue,
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let cache = label(labels, "cache").unwrap_or("all").to_owned();
            let entry = out.by_cache.entry(cache).or_default();
            if is_hit {
                entry.0 += value;
            } else {
                entry.1 += value;
            }
        }
        out
    }

    /// `after - before`, per cache.
    pub fn delta(before: &CacheCounters, after: &CacheCounters) -> CacheCounters {
        let mut out = CacheCounters::default();
        for (cache, (hits, misses)) in &after.by_cache {
            let (h0, m0) = before.by_cache.get(cache).copied().unwrap_or_default();
            out.by_cache.insert(cache.clone(), (hits - h0, misses - m0));
        }
        out
    }

    pub fn totals(&self) -> (f64, f64) {
        self.by_cache
            .values()
            .fold((0.0, 0.0), |(h, m), (dh, dm)| (h + dh, m + dm))
    }
}

fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let inner = labels.strip_prefix('{')?.strip_suffix('}')?;
    inner.split(',').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

fn ratio(hits: f64, misses: f64) -> Option<f64> {
    (hits + misses > 0.0).then(|| hits / (hits + misses))
}

/// How the run was driven, for the report header.
pub struct RunInfo {
    pub endpoint: String,
    pub table: String,
    pub mix: String,
    pub dist: String,
    pub keys: u64,
    pub item_bytes: usize,
    /// "closed" or "open"
    pub mode: &'static str,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub threads: usize,
    pub warmup: Duration,
}

pub struct Report {
    pub info: RunInfo,
    pub record: Record,
    pub elapsed: Duration,
    pub admin: Option<CacheCounters>,
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

impl Report {
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.record.completed() as f64 / secs
        } else {
            0.0
        }
    }

    pub fn to_json(&self) -> Value {
        let r = &self.record;
        let info = &self.info;
        let ops: serde_json::Map<String, Value> = Op::ALL
            .iter()
            .filter(|op| r.ops[op.index()].ok + r.ops[op.index()].errors > 0)
            .map(|op| {
                let o = &r.ops[op.index()];
                let lat = &o.latency;
                (
                    op.name().to_owned(),
                    json!({
                        "ok": o.ok,
                        "errors": o.errors,
                        "p50_us": lat.value_at_quantile(0.5),
                        "p99_us": lat.value_at_quantile(0.99),
                    }),
                )
            })
            .collect();
        let errors: serde_json::Map<String, Value> = r
            .errors
            .iter()
            .map(|(k, e)| (k.clone(), json!({"count": e.count, "sample": e.sample})))
            .collect();
        let mut out = json!({
            "endpoint": info.endpoint,
            "table": info.table,
            "mode": info.mode,
            "concurrency": info.concurrency,
            "rate": info.rate,
            "threads": info.threads,
            "mix": info.mix,
            "dist": info.dist,
            "keys": info.keys,
            "item_bytes": info.item_bytes,
            "warmup_s": info.warmup.as_secs_f64(),
            "elapsed_s": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "requests": r.completed(),
            "ok": r.completed() - r.error_count(),
            "errors": r.error_count(),
            "throughput_rps": (self.throughput() * 10.0).round() / 10.0,
            "latency_us": percentiles(&r.latency),
            "operations": ops,
            "errors_by_type": errors,
            "get_not_found": r.get_not_found,
            "cache_header": {"hit": r.cache_hit, "miss": r.cache_miss, "bypass": r.cache_bypass},
        });
        if info.mode == "open" {
            out["service_latency_us"] = percentiles(&r.service);
            out["missed"] = json!(r.missed);
        }
        if let Some(admin) = &self.admin {
            let (hits, misses) = admin.totals();
            let per_cache: serde_json::Map<String, Value> = admin
                .by_cache
                .iter()
                .map(|(c, (h, m))| {
                    (
                        c.clone(),
                        json!({"hits": h, "misses": m, "hit_ratio": ratio(*h, *m)}),
                    )
                })
                .collect();
            out["admin"] = json!({
                "hits": hits,
                "misses": misses,
                "hit_ratio": ratio(hits, misses),
                "caches": per_cache,
            });
        }
        out
    }

    pub fn to_table(&self) -> String {
        use std::fmt::Write as _;
        let r = &self.record;
        let info = &self.info;
        let mut s = String::new();
        let mode = match info.rate {
            Some(rate) => format!(
                "open loop at {rate:.0} req/s over {} connections",
                info.concurrency
            ),
            None => format!("closed loop, {} concurrent requests", info.concurrency),
        };
        let _ = writeln!(s, "endpoint     {}  (table {})", info.endpoint, info.table);
        let _ = writeln!(
            s,
            "workload     mix {}  keys {} ({})  item {} B",
            info.mix, info.keys, info.dist, info.item_bytes
        );
        let _ = writeln!(
            s,
            "driver       {mode}, {} runtime thread(s), warm-up {:.1}s excluded",
            if info.threads == 0 {
                "default".to_owned()
            } else {
                info.threads.to_string()
            },
            info.warmup.as_secs_f64()
        );
        let _ = writeln!(
            s,
            "requests     {} in {:.2}s = {:.0} req/s  ({} errors)",
            r.completed(),
            self.elapsed.as_secs_f64(),
            self.throughput(),
            r.error_count()
        );
        let line = |h: &Histogram<u64>| {
            if h.is_empty() {
                return "-".to_owned();
            }
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {:.0}) us",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                h.mean()
            )
        };
        let _ = writeln!(s, "latency      {}", line(&r.latency));
        if info.mode == "open" {
            let _ = writeln!(s, "  from send  {}", line(&r.service));
            if r.missed > 0 {
                let _ = writeln!(
                    s,
                    "  missed     {} scheduled requests never sent: the target did not keep up",
                    r.missed
                );
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<14}{:>10}{:>9}{:>10}{:>10}",
            "operation", "ok", "errors", "p50 us", "p99 us"
        );
        for op in Op::ALL {
            let o = &r.ops[op.index()];
            if o.ok + o.errors == 0 {
                continue;
            }
            let _ = writeln!(
                s,
                "{:<14}{:>10}{:>9}{:>10}{:>10}",
                op.name(),
                o.ok,
                o.errors,
                o.latency.value_at_quantile(0.5),
                o.latency.value_at_quantile(0.99)
            );
        }
        if !r.errors.is_empty() {
            let _ = writeln!(s);
            let _ = writeln!(s, "errors");
            for (kind, e) in &r.errors {
                let _ = writeln!(s, "  {:<44}{:>9}  e.g. {}", kind, e.count, e.sample);
            }
        }
        if r.get_not_found > 0 {
            let _ = writeln!(
                s,
                "\nnote: {} GetItem answers had no Item (was the table preloaded with --keys {}?)",
                r.get_not_found, info.keys
            );
        }
        if r.cache_hit + r.cache_miss + r.cache_bypass > 0 {
            let total = (r.cache_hit + r.cache_miss + r.cache_bypass) as f64;
            let _ = writeln!(
                s,
                "\nx-ddbcache   hit {}  miss {}  bypass {}  (hit {:.1}%)",
                r.cache_hit,
                r.cache_miss,
                r.cache_bypass,
                100.0 * r.cache_hit as f64 / total
            );
        }
        if let Some(admin) = &self.admin {
            let (hits, misses) = admin.totals();
            let pct = |h: f64, m: f64| {
                ratio(h, m)
                    .map(|x| format!("{:.2}%", 100.0 * x))
                    .unwrap_or_else(|| "n/a".to_owned())
            };
            let _ = write!(
                s,
                "admin        hits {hits:.0}  misses {misses:.0}  hit ratio {}",
                pct(hits, misses)
            );
            for (cache, (h, m)) in &admin.by_cache {
                let _ = write!(s, "  [{cache}: {}]", pct(*h, *m));
            }
            let _ = writeln!(s);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cache_counters_and_deltas() {
        let before = CacheCounters::parse(
            "# HELP x\n# TYPE ddbcache_cache_hits_total counter\n\
             ddbcache_cache_hits_total{cache=\"item\"} 10\n\
             ddbcache_cache_misses_total{cache=\"item\"} 5\n\
             ddbcache_cache_hits_total{cache=\"query\"} 0\n\
             ddbcache_requests_total{operation=\"GetItem\",status=\"hit\"} 99\n",
        );
        let after = CacheCounters::parse(
            "ddbcache_cache_hits_total{cache=\"item\"} 100\n\
             ddbcache_cache_misses_total{cache=\"item\"} 15\n\
             ddbcache_cache_hits_total{cache=\"query\"} 30\n\
             ddbcache_cache_misses_total{cache=\"query\"} 10\n",
        );
        let d = CacheCounters::delta(&before, &after);
        assert_eq!(d.by_cache["item"], (90.0, 10.0));
        assert_eq!(d.by_cache["query"], (30.0, 10.0));
        assert_eq!(d.totals(), (120.0, 20.0));
    }

    #[test]
    fn error_kind_uses_status_and_type_suffix() {
        let reply = Reply {
            status: http::StatusCode::BAD_REQUEST,
            body: bytes::Bytes::from_static(
                br#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"Requested resource not found"}"#,
            ),
            cache: None,
        };
        let (kind, message) = dynamodb_error(&reply);
        assert_eq!(kind, "400 ResourceNotFoundException");
        assert_eq!(message, "Requested resource not found");
    }
}

//! The scenarios of a comparison. Each is a function that measures what it needs on a [`Bench`]
//! and returns its section of the report with its targets checked; a new one is a variant of
//! [`Scenario`] and one function here, built from the `Bench` helpers: the servers, `preload`,
//! `warm`, `measure` and `side_by_side`. The fleet scenario, which brings its own servers (Redis,
//! two sidecars on one bus), has a file of its own.

mod fleet;
mod outage;
mod shared;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ddbcache::config::Config;
use serde_json::{json, Value};

use super::procs::{self, Proc, Procs};
use super::report::{mib, table, Check, Section, Spread};
use super::Settings;
use crate::client::{ClientOptions, DynamoClient};
use crate::report::Report;
use crate::run::{self, RunSpec};
use crate::workload::{Dist, Keyspace};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Bare server, ddbcache hit, ddbcache with its cache off, dynalite, a bare forwarder in
    /// front of dynalite: --concurrency in flight.
    Throughput,
    /// The same five, one request at a time: what each hop adds.
    Latency,
    /// Instructions per answer of the bare server and per hit, under callgrind.
    Instructions,
    /// Resident memory of a ddbcache whose item cache is full.
    Memory,
    /// Hit cost at each of --scale-keys cached items (run it last: a million items slow
    /// dynalite down).
    Scale,
    /// Query hit ratio under writes: Zipf over partitions, 90% Query / 10% UpdateItem, this
    /// build and (with --before) an earlier one.
    Writes,
    /// The fleet bus: hit throughput and write latency with and without it, the invalidation
    /// lag at a peer, and reads through the peer right after writes (needs redis-server).
    Fleet,
    /// The shared tier: hit ratio per tier and upstream reads of one sidecar, N without the tier
    /// and N with it; a restart; L2 hit latency; Redis bytes per entry; strict consistency's cost
    /// (needs redis-server).
    Shared,
    /// Reads while the upstream is down in the middle of a run: answered share and latency with
    /// the circuit breaker and stale-if-error on and off.
    Outage,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Throughput => "throughput",
            Scenario::Latency => "latency",
            Scenario::Instructions => "instructions",
            Scenario::Memory => "memory",
            Scenario::Scale => "scale",
            Scenario::Writes => "writes",
            Scenario::Fleet => "fleet",
            Scenario::Shared => "shared",
            Scenario::Outage => "outage",
        }
    }

    pub async fn run(self, bench: &mut Bench) -> anyhow::Result<Section> {
        match self {
            Scenario::Throughput => throughput(bench).await,
            Scenario::Latency => latency(bench).await,
            Scenario::Instructions => instructions(bench).await,
            Scenario::Memory => memory(bench).await,
            Scenario::Scale => scale(bench).await,
            Scenario::Writes => writes(bench).await,
            Scenario::Fleet => fleet::fleet(bench).await,
            Scenario::Shared => shared::shared(bench).await,
            Scenario::Outage => outage::outage(bench).await,
        }
    }
}

/// The item TTL of the cache-on ddbcache: longer than any comparison runs.
const HIT_TTL: &str = "24h";

/// The table the throughput, latency and instruction runs read.
const TABLE: &str = "bench";
/// How long a server may take to start; callgrind's start-up is slow.
const START_WITHIN: Duration = Duration::from_secs(120);

/// A server runs are aimed at.
#[derive(Clone, Debug)]
pub struct Target {
    /// Short name, in the raw JSON.
    pub key: &'static str,
    /// Name in the tables.
    pub label: &'static str,
    pub url: String,
    pub proc: Proc,
    /// ddbcache's admin address.
    pub admin: Option<String>,
}

/// One measured run.
pub struct Sample {
    pub report: Report,
    pub server_cpu_s: f64,
    pub generator_cpu_s: f64,
}

impl Sample {
    fn per_request_us(&self, cpu_s: f64) -> f64 {
        cpu_s / self.report.record.completed().max(1) as f64 * 1e6
    }

    fn latency_us(&self, quantile: f64) -> f64 {
        self.report.record.latency.value_at_quantile(quantile) as f64
    }
}

/// A figure of each sample of a target.
fn spread(samples: &[Sample], figure: impl Fn(&Sample) -> f64) -> Spread {
    Spread(samples.iter().map(figure).collect())
}

fn rps(s: &Sample) -> f64 {
    s.report.throughput()
}

fn server_us(s: &Sample) -> f64 {
    s.per_request_us(s.server_cpu_s)
}

/// The long-lived servers, started on first use.
#[derive(Clone)]
struct Servers {
    fixed: Target,
    direct: Target,
    hit: Target,
    miss: Target,
    /// `serve-forward` in front of dynalite: what one more hop costs.
    forward: Target,
}

pub struct Bench {
    settings: Settings,
    procs: Procs,
    work: PathBuf,
    servers: Option<Servers>,
    /// Tables in dynalite, with their item counts.
    preloaded: Vec<(String, u64)>,
    /// (ddbcache pid, table) whose every key is cached.
    warmed: BTreeSet<(u32, String)>,
    raw: Vec<Value>,
}

impl Bench {
    pub fn new(settings: Settings, procs: Procs, work: PathBuf) -> Bench {
        Bench {
            settings,
            procs,
            work,
            servers: None,
            preloaded: Vec::new(),
            warmed: BTreeSet::new(),
            raw: Vec::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// One JSON object per measured run, for the report's raw section.
    pub fn raw(&self) -> &[Value] {
        &self.raw
    }

    async fn servers(&mut self) -> anyhow::Result<Servers> {
        if let Some(servers) = &self.servers {
            return Ok(servers.clone());
        }
        let direct = self.start_dynalite().await?;
        let fixed = self.start_fixed("fixed", None).await?;
        let capacity = self.settings.item_capacity.to_string();
        let compression = self.settings.compression.clone();
        let (hit, _) = self
            .start_ddbcache(
                "ddbcache-hit",
                ("hit", "ddbcache, cache hit"),
                &direct.url,
                &[
                    ("DDBCACHE_ITEM_CAPACITY", &capacity),
                    // Entries must outlive the whole comparison: warming a million keys takes
                    // longer than the default TTL, and an expired entry is a miss.
                    ("DDBCACHE_ITEM_TTL", HIT_TTL),
                    ("DDBCACHE_CACHE_COMPRESSION", &compression),
                ],
                None,
            )
            .await?;
        let (miss, _) = self
            .start_ddbcache(
                "ddbcache-miss",
                ("miss", "ddbcache, cache off (miss path)"),
                &direct.url,
                &[("DDBCACHE_CACHE_ENABLED", "false")],
                None,
            )
            .await?;
        let forward = self.start_forward("forward", &direct.url, None).await?;
        let servers = Servers {
            fixed,
            direct,
            hit,
            miss,
            forward,
        };
        self.servers = Some(servers.clone());
        Ok(servers)
    }

    async fn start_dynalite(&mut self) -> anyhow::Result<Target> {
        let port = self.procs.free_port()?;
        let dynalite = self.settings.dynalite.clone();
        let node = self.settings.node.clone();
        let port_arg = port.to_string();
        let args = [
            dynalite.as_os_str(),
            "--host".as_ref(),
            "127.0.0.1".as_ref(),
            "--port".as_ref(),
            port_arg.as_ref(),
            "--createTableMs".as_ref(),
            "0".as_ref(),
            "--deleteTableMs".as_ref(),
            "0".as_ref(),
            "--updateTableMs".as_ref(),
            "0".as_ref(),
        ];
        let proc = self.procs.spawn("dynalite", node, &args, &[])?;
        self.procs.wait_port(&proc, port, START_WITHIN).await?;
        Ok(Target {
            key: "direct",
            label: "dynalite direct",
            url: format!("http://127.0.0.1:{port}"),
            proc,
            admin: None,
        })
    }

    /// `serve-fixed`, this program's baseline server; under callgrind when `callgrind` names the
    /// profile to write.
    async fn start_fixed(
        &mut self,
        name: &str,
        callgrind: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let item_bytes = self.settings.item_bytes.to_string();
        let args = ["serve-fixed", "--item-bytes", &item_bytes];
        self.start_baseline(
            name,
            &args,
            ("fixed", "bare hyper (serve-fixed)"),
            callgrind,
        )
        .await
    }

    /// `serve-forward`, this program's forwarding proxy, in front of `upstream`; under callgrind
    /// when `callgrind` names the profile to write.
    async fn start_forward(
        &mut self,
        name: &str,
        upstream: &str,
        callgrind: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let args = ["serve-forward", "--upstream", upstream];
        let target = ("forward", "bare hyper forwarder (serve-forward)");
        self.start_baseline(name, &args, target, callgrind).await
    }

    /// This program with `args` (a baseline server's subcommand) on a free port.
    async fn start_baseline(
        &mut self,
        name: &str,
        args: &[&str],
        (key, label): (&'static str, &'static str),
        callgrind: Option<&Path>,
    ) -> anyhow::Result<Target> {
        let port = self.procs.free_port()?;
        let mut argv = vec![std::env::current_exe()?.into_os_string()];
        argv.extend(args.iter().map(Into::into));
        argv.extend(["--addr".into(), format!("127.0.0.1:{port}").into()]);
        let proc = self.spawn_maybe_under_callgrind(name, argv, &[], callgrind)?;
        self.procs.wait_port(&proc, port, START_WITHIN).await?;
        Ok(Target {
            key,
            label,
            url: format!("http://127.0.0.1:{port}"),
            proc,
            admin: None,
        })
    }

    /// A ddbcache in front of `upstream`, configured by `DDBCACHE_*` variables only; returns the
    /// config it runs with, as ddbcache itself resolves it.
    async fn start_ddbcache(
        &mut self,
        name: &str,
        target: (&'static str, &'static str),
        upstream: &str,
        overrides: &[(&str, &str)],
        callgrind: Option<&Path>,
    ) -> anyhow::Result<(Target, Config)> {
        let binary = self.settings.ddbcache.clone();
        self.start_ddbcache_binary(&binary, name, target, upstream, overrides, callgrind)
            .await
    }

    /// [`Bench::start_ddbcache`] with another ddbcache binary.
    async fn start_ddbcache_binary(
        &mut self,
        binary: &Path,
        name: &str,
        (key, label): (&'static str, &'static str),
        upstream: &str,
        overrides: &[(&str, &str)],
        callgrind: Option<&Path>,
    ) -> anyhow::Result<(Target, Config)> {
        let port = self.procs.free_port()?;
        let admin_port = self.procs.free_port()?;
        let mut env: Vec<(String, String)> = [
            ("DDBCACHE_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("DDBCACHE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
            ("DDBCACHE_UPSTREAM_ENDPOINT", upstream.to_owned()),
            ("DDBCACHE_UPSTREAM_SIGN", "false".to_owned()),
            ("DDBCACHE_LOG_LEVEL", "warn".to_owned()),
            ("DDBCACHE_SHUTDOWN_GRACE", "5s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let config = Config::from_toml_and_env("", None, |var| {
            env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone())
        })
        .context("the config given to ddbcache")?;
        let args = vec![
            binary.as_os_str().to_owned(),
            "--config".into(),
            "/dev/null".into(),
        ];
        let proc = self.spawn_maybe_under_callgrind(name, args, &env, callgrind)?;
        let admin = format!("http://127.0.0.1:{admin_port}");
        self.procs.wait_ready(&proc, &admin, START_WITHIN).await?;
        let target = Target {
            key,
            label,
            url: format!("http://127.0.0.1:{port}"),
            proc,
            admin: Some(admin),
        };
        Ok((target, config))
    }

    fn spawn_maybe_under_callgrind(
        &mut self,
        name: &str,
        mut command: Vec<std::ffi::OsString>,
        env: &[(String, String)],
        callgrind: Option<&Path>,
    ) -> anyhow::Result<Proc> {
        if let Some(out) = callgrind {
            let mut valgrind = vec![
                "--tool=callgrind".into(),
                format!("--callgrind-out-file={}", out.display()).into(),
            ];
            valgrind.append(&mut command);
            return self.procs.spawn(name, "valgrind", &valgrind, env);
        }
        let program = command.remove(0);
        self.procs.spawn(name, program, &command, env)
    }

    async fn client(
        &self,
        url: &str,
        connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Arc<DynamoClient>> {
        Ok(Arc::new(
            DynamoClient::new(ClientOptions {
                endpoint: url.to_owned(),
                region: "us-east-1".to_owned(),
                sign: false,
                timeout,
                max_connections: connections,
            })
            .await?,
        ))
    }

    /// Creates `table` in dynalite with `keys` items, unless it already has them.
    async fn preload(&mut self, table: &str, keys: u64) -> anyhow::Result<()> {
        if self.preloaded.iter().any(|(t, n)| t == table && *n >= keys) {
            return Ok(());
        }
        let direct = self.servers().await?.direct;
        eprintln!("compare: preloading {keys} items into dynalite (table {table})");
        let client = self.client(&direct.url, 8, Duration::from_secs(30)).await?;
        let keyspace = Keyspace {
            keys,
            rows_per_pk: 1,
            item_bytes: self.settings.item_bytes,
        };
        crate::preload::preload(client, table, keyspace, 8).await?;
        self.preloaded.retain(|(t, _)| t != table);
        self.preloaded.push((table.to_owned(), keys));
        Ok(())
    }

    /// Reads keys `0..keys` of `table` once each through `target`, so a ddbcache caches them
    /// all; fails if any read failed or found nothing.
    async fn warm(&mut self, target: &Target, table: &str, keys: u64) -> anyhow::Result<()> {
        if !self.warmed.insert((target.proc.pid, table.to_owned())) {
            return Ok(());
        }
        eprintln!(
            "compare: warming {}: reading {keys} keys of {table} once each",
            target.proc.name
        );
        let mut spec = self.spec(target, table, keys, self.settings.concurrency);
        spec.admin = None;
        spec.dist = Dist::Seq;
        spec.duration = None;
        spec.requests = Some(keys);
        spec.warmup = Duration::ZERO;
        let client = self
            .client(&target.url, spec.concurrency, Duration::from_secs(60))
            .await?;
        let record = run::measure(&spec, client, || ()).await?.report.record;
        if record.error_count() > 0 || record.get_not_found > 0 {
            let errors: Vec<String> = record
                .errors
                .iter()
                .map(|(kind, e)| format!("{kind} x{} (e.g. {})", e.count, e.sample))
                .collect();
            bail!(
                "warming {} through {}: {} errors [{}], {} keys not found",
                table,
                target.proc.name,
                record.error_count(),
                errors.join("; "),
                record.get_not_found
            );
        }
        Ok(())
    }

    /// Drops everything a ddbcache has cached.
    async fn flush(&mut self, target: &Target) -> anyhow::Result<()> {
        let admin = target.admin.as_deref().context("flush needs a ddbcache")?;
        let url = format!("{admin}/cache/flush");
        let (status, _) =
            crate::client::http_call(http::Method::POST, &url, Duration::from_secs(10)).await?;
        if !status.is_success() {
            bail!("POST {url}: HTTP {status}");
        }
        self.warmed.retain(|(pid, _)| *pid != target.proc.pid);
        Ok(())
    }

    /// The measured workload: GetItem of uniformly chosen keys of `table`, closed loop.
    fn spec(&self, target: &Target, table: &str, keys: u64, concurrency: usize) -> RunSpec {
        let mut spec = RunSpec::get_items(&target.url, table, keys, self.settings.item_bytes);
        spec.concurrency = concurrency;
        spec.duration = Some(self.settings.duration);
        spec.warmup = self.settings.warmup;
        spec.admin = target.admin.clone();
        spec
    }

    /// One measured run of `spec` against `target`, with the server's and this process's CPU
    /// time over the measured period; recorded for the raw section.
    async fn measure(
        &mut self,
        scenario: Scenario,
        target: &Target,
        run: usize,
        spec: &RunSpec,
    ) -> anyhow::Result<Sample> {
        let client = self
            .client(&target.url, spec.concurrency, Duration::from_secs(10))
            .await?;
        let pid = target.proc.pid;
        let measured = run::measure(spec, client, move || {
            (procs::cpu_seconds(pid), procs::own_cpu_seconds())
        })
        .await?;
        self.procs.check_alive(&target.proc)?;
        let sample = Sample {
            server_cpu_s: measured.after.0 - measured.before.0,
            generator_cpu_s: measured.after.1 - measured.before.1,
            report: measured.report,
        };
        let errors = sample.report.record.error_count();
        eprintln!(
            "compare: {} {} run {}: {:.0} req/s, p99 {} µs{}",
            scenario.name(),
            target.key,
            run + 1,
            sample.report.throughput(),
            sample.latency_us(0.99),
            if errors > 0 {
                format!(", {errors} errors")
            } else {
                String::new()
            }
        );
        let report = sample.report.to_json();
        let mut raw = json!({
            "scenario": scenario.name(),
            "target": target.key,
            "run": run + 1,
            "server_cpu_s": (sample.server_cpu_s * 1000.0).round() / 1000.0,
            "generator_cpu_s": (sample.generator_cpu_s * 1000.0).round() / 1000.0,
        });
        for field in [
            "keys",
            "concurrency",
            "requests",
            "throughput_rps",
            "latency_us",
            "errors",
            "errors_by_type",
            "cache_header",
            "admin",
        ] {
            raw[field] = report[field].clone();
        }
        self.raw.push(raw);
        Ok(sample)
    }

    /// `--runs` runs of each target, the targets' runs interleaved so that a slow spell of the
    /// machine does not fall on one target only; the samples per target, in `targets` order.
    async fn side_by_side(
        &mut self,
        scenario: Scenario,
        targets: &[Target],
        table: &str,
        keys: u64,
        concurrency: usize,
    ) -> anyhow::Result<Vec<Vec<Sample>>> {
        let mut samples: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::new()).collect();
        for run in 0..self.settings.runs {
            for (target, samples) in targets.iter().zip(&mut samples) {
                let spec = self.spec(target, table, keys, concurrency);
                samples.push(self.measure(scenario, target, run, &spec).await?);
            }
        }
        Ok(samples)
    }

    /// The bare server, a hit, a miss, dynalite and the bare forwarder, side by side at
    /// `concurrency` in flight.
    async fn side_by_side_targets(
        &mut self,
        scenario: Scenario,
        concurrency: usize,
    ) -> anyhow::Result<(Vec<Vec<Sample>>, String)> {
        let servers = self.servers().await?;
        let keys = self.settings.keys;
        self.preload(TABLE, keys).await?;
        self.warm(&servers.hit, TABLE, keys).await?;
        let targets = [
            servers.fixed.clone(),
            servers.hit.clone(),
            servers.miss.clone(),
            servers.direct.clone(),
            servers.forward.clone(),
        ];
        let samples = self
            .side_by_side(scenario, &targets, TABLE, keys, concurrency)
            .await?;
        let rows: Vec<Vec<String>> = targets
            .iter()
            .zip(&samples)
            .map(|(target, s)| {
                vec![
                    target.label.to_owned(),
                    spread(s, rps).show(0),
                    spread(s, |s| s.latency_us(0.5)).show(0),
                    spread(s, |s| s.latency_us(0.99)).show(0),
                    spread(s, |s| s.latency_us(0.999)).show(0),
                    s.iter()
                        .map(|s| s.report.record.error_count())
                        .sum::<u64>()
                        .to_string(),
                    spread(s, server_us).show(1),
                    spread(s, |s| s.per_request_us(s.generator_cpu_s)).show(1),
                ]
            })
            .collect();
        let mut body = format!(
            "GetItem over {keys} items, {concurrency} in flight.\n\n{}",
            table(
                &[
                    "target",
                    "req/s",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "errors",
                    "server CPU µs/req",
                    "generator CPU µs/req",
                ],
                &rows,
            )
        );
        let hit_ratios: Vec<String> = samples[1]
            .iter()
            .filter_map(|s| s.report.admin.as_ref())
            .map(|a| {
                let (hits, misses) = a.totals();
                format!("{:.2}%", 100.0 * hits / (hits + misses).max(1.0))
            })
            .collect();
        body.push_str(&format!(
            "\nHit ratio of the hit runs (ddbcache's /metrics deltas): {}.\n",
            hit_ratios.join(", ")
        ));
        Ok((samples, body))
    }
}

/// Ratio of two targets' medians of `figure`.
fn ratio(a: &[Sample], b: &[Sample], figure: impl Fn(&Sample) -> f64 + Copy) -> f64 {
    spread(a, figure).median() / spread(b, figure).median()
}

async fn throughput(bench: &mut Bench) -> anyhow::Result<Section> {
    let concurrency = bench.settings.concurrency;
    let (samples, body) = bench
        .side_by_side_targets(Scenario::Throughput, concurrency)
        .await?;
    let (fixed, hit) = (&samples[0], &samples[1]);
    let c = format!("({concurrency} in flight)");
    Ok(Section {
        title: format!("Throughput: {concurrency} requests in flight"),
        body,
        checks: vec![
            Check::ratio(
                format!("hit req/s ÷ bare hyper req/s {c}"),
                ratio(hit, fixed, rps),
                false,
                0.9,
            ),
            Check::ratio(
                format!("hit p99 ÷ bare hyper p99 {c}"),
                ratio(hit, fixed, |s| s.latency_us(0.99)),
                true,
                1.5,
            ),
            Check::info(
                format!("server CPU per hit ÷ per bare answer {c}"),
                format!("{:.2}", ratio(hit, fixed, server_us)),
            ),
        ],
    })
}

async fn latency(bench: &mut Bench) -> anyhow::Result<Section> {
    let (samples, body) = bench.side_by_side_targets(Scenario::Latency, 1).await?;
    let p50 = |s: &Sample| s.latency_us(0.5);
    let direct = spread(&samples[3], p50).median();
    let miss_overhead = spread(&samples[2], p50).median() - direct;
    let hop = spread(&samples[4], p50).median() - direct;
    Ok(Section {
        title: "Latency: one request at a time".to_owned(),
        body,
        checks: vec![
            Check::ratio(
                "hit p50 ÷ bare hyper p50 (1 in flight)",
                ratio(&samples[1], &samples[0], p50),
                true,
                1.25,
            ),
            Check {
                measure: "miss p50 − dynalite direct p50 (1 in flight)".to_owned(),
                value: format!("{miss_overhead:.0} µs"),
                target: "≤ 50 µs".to_owned(),
                met: Some(miss_overhead <= 50.0),
            },
            Check::info(
                "bare hyper forwarder p50 − dynalite direct p50 (1 in flight): one hop's cost",
                format!("{hop:.0} µs"),
            ),
        ],
    })
}

/// Instructions per answer, from two callgrind runs per target that differ only in the number
/// of measured requests: start-up, warm-up and shutdown cancel out of the difference. The same
/// difference, function by function (`callgrind_annotate --inclusive=yes`), splits a request's
/// instructions into the phases of [`PHASES`].
async fn instructions(bench: &mut Bench) -> anyhow::Result<Section> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        bail!("the instructions scenario needs valgrind (or leave it out of --scenarios)");
    }
    let servers = bench.servers().await?;
    let keys = bench.settings.callgrind_keys;
    let (n1, n2) = bench.settings.callgrind_requests;
    bench.preload(TABLE, keys).await?;
    let mut rows = Vec::new();
    let mut per_request = Vec::new();
    let mut per_function = Vec::new();
    for key in MEASURED {
        let mut counts = Vec::new();
        let mut functions = Vec::new();
        let mut label = "";
        for requests in [n1, n2] {
            let out = bench.work.join(format!("callgrind.{key}.{requests}.out"));
            let name = format!("{key}-callgrind-{requests}");
            let target = match key {
                "fixed" => bench.start_fixed(&name, Some(&out)).await?,
                "forward" => {
                    bench
                        .start_forward(&name, &servers.direct.url, Some(&out))
                        .await?
                }
                "hit" => {
                    let (target, _) = bench
                        .start_ddbcache(
                            &name,
                            ("hit", "ddbcache, cache hit"),
                            &servers.direct.url,
                            &[],
                            Some(&out),
                        )
                        .await?;
                    bench.warm(&target, TABLE, keys).await?;
                    target
                }
                _ => {
                    bench
                        .start_ddbcache(
                            &name,
                            ("forwarded", "ddbcache, cache off (forwarded)"),
                            &servers.direct.url,
                            &[("DDBCACHE_CACHE_ENABLED", "false")],
                            Some(&out),
                        )
                        .await?
                        .0
                }
            };
            label = target.label;
            eprintln!("compare: instructions {key}: {requests} requests under callgrind");
            let mut spec = bench.spec(&target, TABLE, keys, bench.settings.concurrency);
            spec.duration = None;
            spec.requests = Some(requests);
            spec.warmup = Duration::ZERO;
            spec.admin = None;
            let client = bench
                .client(&target.url, spec.concurrency, Duration::from_secs(120))
                .await?;
            let record = run::measure(&spec, client, || ()).await?.report.record;
            if record.error_count() > 0 {
                bail!(
                    "{} answered {} errors under callgrind",
                    target.proc.name,
                    record.error_count()
                );
            }
            let status = bench.procs.stop(&target.proc, START_WITHIN).await?;
            let ir = callgrind_total(&out).with_context(|| {
                format!(
                    "{} ({status}); its log: {}",
                    out.display(),
                    target.proc.log.display()
                )
            })?;
            functions.push((by_function(&out, true)?, by_function(&out, false)?));
            if let Some(dir) = &bench.settings.callgrind_keep {
                std::fs::create_dir_all(dir)?;
                std::fs::copy(&out, dir.join(out.file_name().expect("a file name")))?;
            }
            bench.raw.push(json!({
                "scenario": "instructions", "target": key, "requests": requests, "ir": ir,
            }));
            counts.push(ir);
        }
        let ir = (counts[1] as f64 - counts[0] as f64) / (n2 - n1) as f64;
        per_request.push(ir);
        per_function.push(Profile {
            inclusive: per_request_by_function(&functions[0].0, &functions[1].0, n2 - n1),
            exclusive: per_request_by_function(&functions[0].1, &functions[1].1, n2 - n1),
        });
        rows.push(vec![
            label.to_owned(),
            format!("{ir:.0}"),
            counts[0].to_string(),
            counts[1].to_string(),
        ]);
    }
    // Each server's connection task must be found by name, or the phases would count it as
    // "other tasks": a renamed function fails the run rather than the table.
    for (profile, key) in per_function.iter().zip(MEASURED) {
        if !CONNECTIONS
            .iter()
            .any(|n| profile.inclusive.contains_key(*n))
        {
            bail!("no function of CONNECTIONS in the {key} profile: was one renamed?");
        }
    }
    // The bare forwarder is an anchor for the forwarded request's total; its phases are hyper's.
    let phases = phase_rows(&per_request[..3], &per_function[..3]);
    let body = format!(
        "`valgrind --tool=callgrind` of each server, started afresh for {n1} and for {n2} \
         GetItem requests over {keys} items ({} in flight; a hit server first reads every key \
         once; the forwarded one is a ddbcache with its cache off, in front of dynalite, as is \
         the bare forwarder): Ir per \
         request = (Ir at {n2} − Ir at {n1}) ÷ {}. Instruction counts do not depend on the \
         machine's noise, nor on the cores being shared.\n\n{}\n\
         By phase: the same difference per function, inclusive of what each calls \
         (`callgrind_annotate --inclusive=yes`; timers from each function's own instructions), \
         grouped as `PHASES` in `benches/load/src/compare/scenarios.rs` says; *HTTP, runtime and \
         the rest* is what no phase claims: accepting and reading the connection, hyper's parsing \
         and encoding, tokio's scheduling (the kernel's share is not counted).\n\n{}",
        bench.settings.concurrency,
        n2 - n1,
        table(
            &[
                "target",
                "instructions per request",
                &format!("Ir, {n1} requests"),
                &format!("Ir, {n2} requests"),
            ],
            &rows,
        ),
        table(&["phase", "bare hyper", "hit", "forwarded"], &phases,)
    );
    Ok(Section {
        title: "Instructions per request".to_owned(),
        body,
        checks: vec![
            Check::ratio(
                "instructions per hit ÷ per bare answer",
                per_request[1] / per_request[0],
                true,
                1.5,
            ),
            Check::ratio(
                "instructions per forwarded request ÷ per hit",
                per_request[2] / per_request[1],
                true,
                1.6,
            ),
            Check::info(
                "instructions per forwarded request ÷ per request through the bare forwarder",
                format!("{:.2}", per_request[2] / per_request[3]),
            ),
        ],
    })
}

/// A phase of a request: the functions whose inclusive instructions it is, less those of the
/// functions they call that another phase claims, plus the instructions spent in the bodies of
/// functions whose names start with one of `own` (exclusive counts: for what is spread over many
/// small functions, such as timers). Names are matched in full, as callgrind reports them
/// (demangled, without hashes). What the compiler inlines is counted in its caller, so a phase
/// moves a little with inlining; what no phase claims is in the last rows.
struct Phase {
    name: &'static str,
    functions: &'static [&'static str],
    less: &'static [&'static str],
    own: &'static [&'static str],
}

const HANDLE: &str = "ddbcache::proxy::Proxy::handle::{{closure}}";
const ADMISSION: &[&str] = &[
    "core::ptr::drop_in_place<ddbcache::proxy::admit::Inbound>",
    "ddbcache::proxy::budget::BodyBudget::reserve::{{closure}}",
    "<hyper::body::incoming::Incoming as http_body::Body>::poll_frame",
];
const FRONT_DOOR: &[&str] = &[
    "ddbcache::proxy::front_door::examine",
    "ddbcache::proxy::unproven_json",
];
const PARSE: &[&str] = &["ddbcache_protocol::reads::parse_read"];
const POLICY: &[&str] = &["ddbcache::proxy::policy::plan"];
/// A hit is found by `Cache::hit_now` (the index, generations and expiry, inlined into it);
/// the entry's bytes are shared by `Entry::response_parts`.
const CACHE: &[&str] = &[
    "ddbcache::cache::Cache::hit_now",
    "ddbcache::cache::Cache::confirmed::{{closure}}",
    "ddbcache::cache::entries::Entry::response_parts",
];
const RESPONSE: &[&str] = &[
    "ddbcache::proxy::reads::hit",
    "ddbcache::proxy::respond::mark",
    "ddbcache::proxy::respond::relayed",
    "ddbcache::proxy::respond::is_relayed",
    "ddbcache::proxy::front_door::Admission::decorate",
];
const METRICS: &[&str] = &["ddbcache::proxy::record::Counters::request"];
/// The forward (which drives its upstream connection itself), and every task but the client
/// connections' (`Core::poll'2` is a task's poll as callgrind names it inside the worker's): the
/// accept loop and background work.
const UPSTREAM: &[&str] = &[
    "ddbcache::proxy::forward::Forwarder::send::{{closure}}",
    "tokio::runtime::task::core::Core<T,S>::poll'2",
];
/// The instructions scenario's servers, in the order of its tables: the bare server, a hit, a
/// forwarded request, the bare forwarder.
const MEASURED: [&str; 4] = ["fixed", "hit", "forwarded", "forward"];
/// A client connection's task: ddbcache's, and the baseline servers'.
const CONNECTIONS: &[&str] = &[
    "ddbcache::connection::serve::{{closure}}",
    "ddbcache_load::fixed_server::serve_connections::{{closure}}::{{closure}}",
];

/// The phases of a request, in the order it goes through them.
const PHASES: &[Phase] = &[
    Phase {
        name: "admission and the body budget (body read, reservation, dropped at the end)",
        functions: ADMISSION,
        less: &[],
        own: &[],
    },
    Phase {
        name: "front door (`front_door::examine`, JSON proven where no read proves it)",
        functions: FRONT_DOOR,
        less: &[],
        own: &[],
    },
    Phase {
        name: "parse and prove (`reads::parse_read`)",
        functions: PARSE,
        less: &[],
        own: &[],
    },
    Phase {
        name: "policy (`policy::plan`: table, TTLs, key schema, cache key)",
        functions: POLICY,
        less: &[],
        own: &[],
    },
    Phase {
        name: "cache (index, generations, expiry, the entry's bytes)",
        functions: CACHE,
        less: &[],
        own: &[],
    },
    Phase {
        name: "response (headers, request id, `x-ddbcache`)",
        functions: RESPONSE,
        less: &["ddbcache::cache::entries::Entry::response_parts"],
        own: &[],
    },
    Phase {
        name: "metrics and logging",
        functions: METRICS,
        less: &[],
        own: &[],
    },
    Phase {
        name: "upstream client (the forward and its connection; other tasks)",
        functions: UPSTREAM,
        less: CONNECTIONS,
        own: &[],
    },
    Phase {
        name: "the pipeline between phases (`Proxy::handle` less the above: inlined code, futures moved)",
        functions: &[HANDLE],
        less: &[
            ADMISSION[0], ADMISSION[1], ADMISSION[2], FRONT_DOOR[0], FRONT_DOOR[1], PARSE[0],
            POLICY[0], CACHE[0], CACHE[1], CACHE[2], RESPONSE[0], RESPONSE[1],
            RESPONSE[2], RESPONSE[3], RESPONSE[4], METRICS[0], UPSTREAM[0],
        ],
        own: &[],
    },
    Phase {
        name: "timers (connection watchdog, body timeout: tokio's timer wheel, wake-ups)",
        functions: &[],
        less: &[],
        own: &[
            "tokio::time::",
            "<tokio::time::",
            "tokio::runtime::time::",
            "<tokio::runtime::time::",
            "tokio::runtime::time::entry::_::<impl core::ops::drop::Drop",
            "ddbcache::connection::Activity::",
            "ddbcache::connection::sleep_until",
            "<ddbcache::connection::InFlight",
            "tokio::sync::notify::",
            "<tokio::sync::notify::",
            "tokio::sync::watch::",
        ],
    },
];

/// Rows of the phase table: per phase, the instructions per request of each target (the bare
/// server, the hit, the forwarded request), then the rest and the whole.
fn phase_rows(totals: &[f64], per_function: &[Profile]) -> Vec<Vec<String>> {
    let sum = |f: &BTreeMap<String, f64>, names: &[&str]| -> f64 {
        names
            .iter()
            .map(|n| f.get(*n).copied().unwrap_or(0.0))
            .sum()
    };
    let own = |f: &BTreeMap<String, f64>, prefixes: &[&str]| -> f64 {
        f.iter()
            .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(_, ir)| ir)
            .sum()
    };
    let mut rows = Vec::new();
    let mut claimed = vec![0.0; totals.len()];
    for phase in PHASES {
        let mut row = vec![phase.name.to_owned()];
        for (i, f) in per_function.iter().enumerate() {
            let ir = (sum(&f.inclusive, phase.functions) - sum(&f.inclusive, phase.less)).max(0.0)
                + own(&f.exclusive, phase.own);
            claimed[i] += ir;
            row.push(format!("{ir:.0}"));
        }
        rows.push(row);
    }
    let mut rest = vec!["HTTP, runtime and the rest".to_owned()];
    let mut whole = vec!["**the whole request**".to_owned()];
    for (total, claimed) in totals.iter().zip(&claimed) {
        rest.push(format!("{:.0}", total - claimed));
        whole.push(format!("**{total:.0}**"));
    }
    rows.push(rest);
    rows.push(whole);
    rows
}

/// Instructions per function per request, inclusive of its callees and in its own body.
struct Profile {
    inclusive: BTreeMap<String, f64>,
    exclusive: BTreeMap<String, f64>,
}

/// Instructions per function, inclusive of its callees or not, from `callgrind_annotate`; a
/// function reported under several files is summed.
fn by_function(path: &Path, inclusive: bool) -> anyhow::Result<BTreeMap<String, u64>> {
    let output = Command::new("callgrind_annotate")
        .arg(if inclusive {
            "--inclusive=yes"
        } else {
            "--inclusive=no"
        })
        .args(["--threshold=100", "--show-percs=no", "--auto=no"])
        .arg(path)
        .output()
        .context("running callgrind_annotate (it comes with valgrind)")?;
    if !output.status.success() {
        bail!(
            "callgrind_annotate {}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(parse_annotate(&String::from_utf8_lossy(&output.stdout)))
}

/// The function lines of `callgrind_annotate`'s output: `1,234  file:function [object]`.
fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut functions = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(char::is_whitespace) else {
            continue;
        };
        let Ok(count) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let Some((_file, function)) = rest.split_once(':') else {
            continue;
        };
        let function = match function.rfind(" [") {
            Some(i) if function.ends_with(']') => &function[..i],
            _ => function,
        };
        *functions.entry(function.to_owned()).or_insert(0) += count;
    }
    functions
}

/// Per function, (Ir at N2 − Ir at N1) ÷ (N2 − N1).
fn per_request_by_function(
    first: &BTreeMap<String, u64>,
    second: &BTreeMap<String, u64>,
    requests: u64,
) -> BTreeMap<String, f64> {
    second
        .iter()
        .map(|(name, ir)| {
            let before = first.get(name).copied().unwrap_or(0);
            (name.clone(), (*ir as f64 - before as f64) / requests as f64)
        })
        .collect()
}

/// The `summary:` (or `totals:`) count of a callgrind profile: instructions executed (Ir).
fn callgrind_total(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).context("reading the callgrind profile")?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("the callgrind profile has no summary line")
}

/// A ddbcache with a small item cache reads more distinct items than fit.
async fn memory(bench: &mut Bench) -> anyhow::Result<Section> {
    let servers = bench.servers().await?;
    let (capacity, keys) = (bench.settings.mem_capacity, bench.settings.mem_keys);
    let mem_table = "bench_mem";
    bench.preload(mem_table, keys).await?;
    let capacity_arg = capacity.to_string();
    let (target, config) = bench
        .start_ddbcache(
            "ddbcache-mem",
            ("mem", "ddbcache, small cache"),
            &servers.direct.url,
            &[
                ("DDBCACHE_ITEM_CAPACITY", &capacity_arg),
                // The query cache stays empty; a small capacity keeps it out of the sizing rule.
                ("DDBCACHE_QUERY_CAPACITY", "1MiB"),
            ],
            None,
        )
        .await?;
    let pid = target.proc.pid;
    let rss_start = procs::memory_bytes(pid, "VmRSS").unwrap_or(0);
    bench.warm(&target, mem_table, keys).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let admin = target.admin.clone().unwrap_or_default();
    let stats: Value = serde_json::from_str(&run::admin_text(&admin, "/cache").await?)
        .context("/cache is not JSON")?;
    let metrics = run::admin_text(&admin, "/metrics").await?;
    let evictions = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ddbcache_cache_evictions_total{cache=\"item\"} "))
        .unwrap_or("n/a")
        .to_owned();
    let rss = procs::memory_bytes(pid, "VmRSS").unwrap_or(0) as f64;
    let hwm = procs::memory_bytes(pid, "VmHWM").unwrap_or(0) as f64;
    bench.procs.stop(&target.proc, START_WITHIN).await?;
    let item = &stats["item"];
    let bound = 1.1 * capacity as f64 + (30u64 << 20) as f64;
    let rule = config.container_memory_bytes() as f64;
    let rows = vec![vec![
        mib(rss_start as f64),
        mib(rss),
        mib(hwm),
        item["entries"].to_string(),
        mib(item["bytes"].as_f64().unwrap_or(f64::NAN)),
        mib(item["capacity_bytes"].as_f64().unwrap_or(f64::NAN)),
        evictions,
    ]];
    let body = format!(
        "A ddbcache with item capacity {} read {keys} distinct items once each (more than fit, \
         so it evicted as it went).\n\n{}",
        mib(capacity as f64),
        table(
            &[
                "RSS at start",
                "RSS full",
                "peak RSS",
                "entries",
                "bytes weighed",
                "capacity",
                "evictions",
            ],
            &rows,
        )
    );
    let check = |measure: String, bound: f64| Check {
        measure,
        value: mib(rss),
        target: format!("≤ {}", mib(bound)),
        met: Some(rss <= bound),
    };
    Ok(Section {
        title: "Memory with a full cache".to_owned(),
        body,
        checks: vec![
            check(
                format!(
                    "RSS with a full item cache of {}: ≤ 1.1 × capacity + 30 MiB",
                    mib(capacity as f64)
                ),
                bound,
            ),
            check(
                format!(
                    "the same: ≤ the container memory check-config gives ({})",
                    ddbcache::config::CONTAINER_MEMORY_RULE
                ),
                rule,
            ),
        ],
    })
}

/// The hit path at several cache sizes: beyond the CPU caches each hit reads cold memory.
async fn scale(bench: &mut Bench) -> anyhow::Result<Section> {
    let servers = bench.servers().await?;
    let mut rows = Vec::new();
    let mut by_size: Vec<(u64, Vec<Sample>, f64)> = Vec::new();
    for keys in bench.settings.scale_keys.clone() {
        let table_name = format!("bench_{keys}");
        bench.preload(&table_name, keys).await?;
        bench.flush(&servers.hit).await?;
        bench.warm(&servers.hit, &table_name, keys).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let admin = servers.hit.admin.clone().unwrap_or_default();
        let stats: Value = serde_json::from_str(&run::admin_text(&admin, "/cache").await?)?;
        let rss = procs::memory_bytes(servers.hit.proc.pid, "VmRSS").unwrap_or(0) as f64;
        let mut samples = Vec::new();
        for run in 0..bench.settings.runs {
            let spec = bench.spec(&servers.hit, &table_name, keys, bench.settings.concurrency);
            samples.push(
                bench
                    .measure(Scenario::Scale, &servers.hit, run, &spec)
                    .await?,
            );
        }
        // A hit-cost figure is only one if the runs were hits.
        let hit_ratio = |s: &Sample| {
            s.report.admin.as_ref().map_or(f64::NAN, |a| {
                let (hits, misses) = a.totals();
                100.0 * hits / (hits + misses).max(1.0)
            })
        };
        rows.push(vec![
            stats["item"]["entries"].to_string(),
            spread(&samples, hit_ratio).show(2),
            spread(&samples, rps).show(0),
            spread(&samples, |s| s.latency_us(0.5)).show(0),
            spread(&samples, |s| s.latency_us(0.99)).show(0),
            spread(&samples, server_us).show(1),
            mib(rss),
        ]);
        by_size.push((keys, samples, rss));
    }
    let mut checks = Vec::new();
    if let (Some(small), Some(large)) = (by_size.first(), by_size.last()) {
        if by_size.len() > 1 {
            checks.push(Check::ratio(
                format!(
                    "server CPU per hit at {} items ÷ at {} items",
                    large.0, small.0
                ),
                ratio(&large.1, &small.1, server_us),
                true,
                1.15,
            ));
        }
    }
    if let Some((_, _, rss)) = by_size.iter().find(|(keys, _, _)| *keys == 1_000_000) {
        checks.push(Check {
            measure: format!(
                "RSS with 1000000 cached items of {} B (bodies stored: {})",
                bench.settings.item_bytes, bench.settings.compression
            ),
            value: mib(*rss),
            target: "≤ 330.0 MiB".to_owned(),
            met: Some(*rss <= (330u64 << 20) as f64),
        });
    }
    let body = format!(
        "Each table was preloaded, the cache flushed, every key read once, then measured as above \
         ({} in flight).\n\n{}",
        bench.settings.concurrency,
        table(
            &[
                "items cached",
                "hit ratio %",
                "req/s",
                "p50 µs",
                "p99 µs",
                "server CPU µs/req",
                "RSS",
            ],
            &rows,
        )
    );
    Ok(Section {
        title: "Hit cost by cache size".to_owned(),
        body,
        checks,
    })
}

/// The table the `writes` scenario queries and updates, one item per partition.
const WRITES_TABLE: &str = "bench_writes";

/// The query cache under writes: Zipf-distributed partitions, 90% Query (one partition each) and
/// 10% UpdateItem. A write to a partition should end only that partition's Query entries, so the
/// hot partitions' entries survive writes to the others. Every run starts from an empty cache, is
/// warmed by a fixed number of requests and measured over a fixed number more, so a faster build
/// does not get a warmer cache from doing more requests in the same time.
async fn writes(bench: &mut Bench) -> anyhow::Result<Section> {
    let servers = bench.servers().await?;
    let partitions = bench.settings.write_partitions;
    let (warm_requests, measured_requests) = bench.settings.write_requests;
    bench.preload(WRITES_TABLE, partitions).await?;
    let (this, _) = bench
        .start_ddbcache(
            "ddbcache-writes",
            ("writes", "ddbcache, this build"),
            &servers.direct.url,
            &[],
            None,
        )
        .await?;
    let mut targets = vec![this];
    if let Some(before) = bench.settings.before.clone() {
        let (earlier, _) = bench
            .start_ddbcache_binary(
                &before,
                "ddbcache-before",
                ("before", "ddbcache, earlier build (--before)"),
                &servers.direct.url,
                &[],
                None,
            )
            .await?;
        targets.push(earlier);
    }
    let concurrency = bench.settings.concurrency;
    let spec = |target: &Target, requests: u64| {
        let mut spec = bench.spec(target, WRITES_TABLE, partitions, concurrency);
        spec.mix = "query=90,update=10".parse().expect("a valid mix");
        spec.dist = Dist::Zipf;
        spec.duration = None;
        spec.requests = Some(requests);
        spec.warmup = Duration::ZERO;
        spec
    };
    let specs: Vec<(RunSpec, RunSpec)> = targets
        .iter()
        .map(|target| {
            let mut warm = spec(target, warm_requests);
            warm.admin = None;
            (warm, spec(target, measured_requests))
        })
        .collect();
    let mut samples: Vec<Vec<Sample>> = targets.iter().map(|_| Vec::new()).collect();
    for run in 0..bench.settings.runs {
        for ((target, (warm, measured)), samples) in targets.iter().zip(&specs).zip(&mut samples) {
            bench.flush(target).await?;
            let client = bench
                .client(&target.url, concurrency, Duration::from_secs(30))
                .await?;
            run::measure(warm, client, || ()).await?;
            samples.push(
                bench
                    .measure(Scenario::Writes, target, run, measured)
                    .await?,
            );
        }
    }
    for target in &targets {
        bench.procs.stop(&target.proc, START_WITHIN).await?;
    }
    let rows: Vec<Vec<String>> = targets
        .iter()
        .zip(&samples)
        .map(|(target, s)| {
            vec![
                target.label.to_owned(),
                spread(s, query_hit_percent).show(1),
                spread(s, rps).show(0),
                spread(s, |s| s.latency_us(0.99)).show(0),
                s.iter()
                    .map(|s| s.report.record.error_count())
                    .sum::<u64>()
                    .to_string(),
            ]
        })
        .collect();
    let body = format!(
        "Zipf (s = 0.99) over {partitions} partitions of one item, 90% Query of one partition, \
         10% UpdateItem, {concurrency} in flight. Each run: cache flushed, {warm_requests} \
         requests unmeasured, then {measured_requests} measured.\n\n{}",
        table(
            &["target", "query hit ratio %", "req/s", "p99 µs", "errors"],
            &rows,
        )
    );
    let mut checks = vec![Check {
        measure: "query hit ratio under writes (90% Query / 10% UpdateItem, Zipf)".to_owned(),
        value: format!("{:.1}%", spread(&samples[0], query_hit_percent).median()),
        target: "reference".to_owned(),
        met: None,
    }];
    if let Some(before) = samples.get(1) {
        checks.push(Check {
            measure: "the same with the earlier build (--before)".to_owned(),
            value: format!("{:.1}%", spread(before, query_hit_percent).median()),
            target: "reference".to_owned(),
            met: None,
        });
    }
    Ok(Section {
        title: "Query cache under writes".to_owned(),
        body,
        checks,
    })
}

/// The query cache's hit ratio over a run, from ddbcache's `/metrics` deltas.
fn query_hit_percent(s: &Sample) -> f64 {
    let Some((hits, misses)) = s
        .report
        .admin
        .as_ref()
        .and_then(|a| a.by_cache.get("query").copied())
    else {
        return f64::NAN;
    };
    100.0 * hits / (hits + misses).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_callgrind_annotates_functions_and_splits_a_request_into_phases() {
        let text = "--------\nIr  file:function\n--------\n\
            1,000  ???:ddbcache::proxy::Proxy::handle::{{closure}} [/bin/ddbcache]\n\
            300  ???:ddbcache::proxy::front_door::examine [/bin/ddbcache]\n\
            50  /src/x.rs:ddbcache::proxy::front_door::examine [/bin/ddbcache]\n\
            20  ???:tokio::time::sleep::Sleep::new_timeout [/bin/ddbcache]\n";
        let functions = parse_annotate(text);
        assert_eq!(functions[HANDLE], 1000);
        assert_eq!(functions["ddbcache::proxy::front_door::examine"], 350);
        let first = BTreeMap::new();
        let profile = Profile {
            inclusive: per_request_by_function(&first, &functions, 10),
            exclusive: per_request_by_function(&first, &functions, 10),
        };
        let rows = phase_rows(&[150.0], &[profile]);
        let row = |name: &str| rows.iter().find(|r| r[0].starts_with(name)).unwrap()[1].clone();
        assert_eq!(row("front door"), "35");
        assert_eq!(row("timers"), "2");
        // The pipeline is what `Proxy::handle` spends outside the other phases.
        assert_eq!(row("the pipeline"), "65");
        assert_eq!(row("HTTP, runtime"), "48");
    }

    #[test]
    fn reads_the_instruction_count_of_a_callgrind_profile() {
        let path = std::env::temp_dir().join(format!("callgrind-test-{}.out", std::process::id()));
        std::fs::write(
            &path,
            "# callgrind format\nversion: 1\ncmd: ddbcache\nevents: Ir\nsummary: 73952936\n\nfn=main\n3 12\ntotals: 73952936\n",
        )
        .unwrap();
        assert_eq!(callgrind_total(&path).unwrap(), 73_952_936);
        std::fs::write(&path, "events: Ir\n").unwrap();
        assert!(callgrind_total(&path).is_err());
        std::fs::remove_file(path).unwrap();
    }
}

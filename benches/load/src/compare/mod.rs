//! `ddbcache-load compare`: ddbcache against the limits around it, side by side, in one run on one
//! machine; writes `benches/RESULTS.md`.
//!
//! It starts every process it needs on free loopback ports (dynalite, the bare `serve-fixed`
//! server, ddbcache with its cache on and off), pins them to the servers' CPUs and itself, the
//! load generator, to another (`taskset`), and then runs the chosen scenarios, each a function
//! in `scenarios` that measures what it needs and returns a section of the report with its
//! targets checked. Every target is measured `--runs` times, runs of different targets
//! interleaved, and shown as the median with the spread (min–max), since single runs on a small
//! shared machine vary by 10–20%. Instruction counts come from callgrind, which does not depend on
//! the machine's noise. `benches/README.md` says how to read the result.

mod procs;
mod relay;
mod report;
mod scenarios;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;

pub use scenarios::Scenario;

use self::procs::Procs;
use self::scenarios::Bench;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Short runs on small tables: a smoke test of the whole comparison, not for conclusions.
    #[arg(long)]
    pub quick: bool,
    /// What to measure, in this order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "throughput,latency,instructions,memory,writes"
    )]
    pub scenarios: Vec<Scenario>,
    /// Measured runs of each target; the report shows their median and min–max [5; --quick 2].
    #[arg(long)]
    pub runs: Option<usize>,
    /// Measured time of each run [5s; --quick 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Unmeasured load before each run [1s; --quick 200ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Requests in flight in the throughput runs (closed loop, one connection each).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Items in the table the throughput and latency runs read [10000; --quick 1000].
    #[arg(long)]
    pub keys: Option<u64>,
    /// Size of each item, as DynamoDB counts it.
    #[arg(long, default_value_t = 200)]
    pub item_bytes: usize,
    /// Item cache capacity of the cache-on ddbcache; must hold the largest --scale-keys.
    #[arg(long, default_value = "1GiB", value_parser = size)]
    pub item_capacity: u64,
    /// How the cache-on ddbcache stores bodies (`cache.compression`).
    #[arg(long, default_value = "none", value_parser = ["none", "lz4"])]
    pub compression: String,
    /// Cache sizes of the `scale` scenario [1000,100000,1000000; --quick 1000,10000].
    #[arg(long, value_delimiter = ',')]
    pub scale_keys: Vec<u64>,
    /// Item cache capacity of the `memory` scenario's ddbcache [64MiB; --quick 8MiB].
    #[arg(long, value_parser = size)]
    pub mem_capacity: Option<u64>,
    /// Distinct items the `memory` scenario reads, enough to overfill it [300000; --quick 40000].
    #[arg(long)]
    pub mem_keys: Option<u64>,
    /// Requests of the two callgrind runs per target, N1,N2: Ir/request = (Ir2 − Ir1)/(N2 − N1),
    /// so start-up and warm-up cancel out [2000,12000; --quick 300,1300].
    #[arg(long, value_delimiter = ',')]
    pub callgrind_requests: Vec<u64>,
    /// Items the callgrind runs read (each is read once first, to fill the cache) [1000; --quick 200].
    #[arg(long)]
    pub callgrind_keys: Option<u64>,
    /// Where to keep the instructions scenario's callgrind profiles (for `callgrind_annotate`);
    /// they are deleted with the run's other files otherwise.
    #[arg(long)]
    pub callgrind_keep: Option<PathBuf>,
    /// Partitions (one item each) the `writes` scenario reads and writes [10000; --quick 1000].
    #[arg(long)]
    pub write_partitions: Option<u64>,
    /// Requests of each `writes` run, WARM,MEASURED: unmeasured from an empty cache, then
    /// measured [20000,30000; --quick 1000,3000].
    #[arg(long, value_delimiter = ',')]
    pub write_requests: Vec<u64>,
    /// An earlier ddbcache binary the `writes` scenario also runs, for a before/after figure.
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// CPUs of the servers (taskset -c list).
    #[arg(long, default_value = "1")]
    pub server_cpus: String,
    /// CPUs of the load generator (this process).
    #[arg(long, default_value = "0")]
    pub load_cpus: String,
    /// Leave placement to the scheduler instead of pinning.
    #[arg(long)]
    pub no_pin: bool,
    /// The ddbcache binary [the one next to this program, e.g. target/release/ddbcache].
    #[arg(long)]
    pub ddbcache: Option<PathBuf>,
    /// dynalite's cli.js [scripts/upstream/node_modules/dynalite/cli.js, from scripts/setup.sh].
    #[arg(long)]
    pub dynalite: Option<PathBuf>,
    /// The Node.js that runs dynalite.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// The Redis server of the `fleet` scenario's bus (Debian's, from scripts/setup.sh redis).
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Writes through one sidecar of the `fleet` scenario, each followed at once by reads
    /// through its peer [300; --quick 50].
    #[arg(long)]
    pub fleet_probes: Option<u64>,
    /// Sidecars of the `shared` scenario's fleet.
    #[arg(long, default_value_t = 4)]
    pub shared_sidecars: usize,
    /// Items the `shared` scenario's requests choose from (Zipf) [10000; --quick 2000].
    #[arg(long)]
    pub shared_keys: Option<u64>,
    /// Item TTL of the `shared` scenario's sidecars; each configuration runs for three [30s;
    /// --quick 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub shared_ttl: Option<Duration>,
    /// Requests per second across the `shared` scenario's fleet [800; --quick 400].
    #[arg(long)]
    pub shared_rate: Option<f64>,
    /// Length of each run of the `outage` scenario [90s; --quick 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub outage_run: Option<Duration>,
    /// How long the upstream is down, in the middle of each `outage` run [30s; --quick 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub outage: Option<Duration>,
    /// Reads per second of the `outage` scenario, sent on time whatever became of the earlier
    /// ones (an open loop) [500].
    #[arg(long, default_value_t = 500.0)]
    pub outage_rate: f64,
    /// How the upstream fails in the `outage` scenario.
    #[arg(long, value_enum, default_value = "blackhole")]
    pub outage_fault: relay::Fault,
    /// Where the report goes [benches/RESULTS.md].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A Markdown file of notes to include in the report, under "Notes on this run".
    #[arg(long)]
    pub notes: Option<PathBuf>,
}

/// The comparison's settings, defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub scenarios: Vec<Scenario>,
    pub runs: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub keys: u64,
    pub item_bytes: usize,
    pub item_capacity: u64,
    pub compression: String,
    pub scale_keys: Vec<u64>,
    pub mem_capacity: u64,
    pub mem_keys: u64,
    pub callgrind_requests: (u64, u64),
    pub callgrind_keys: u64,
    pub callgrind_keep: Option<PathBuf>,
    pub write_partitions: u64,
    pub write_requests: (u64, u64),
    pub before: Option<PathBuf>,
    /// (servers, load generator) CPU lists, when pinning.
    pub pin: Option<(String, String)>,
    pub ddbcache: PathBuf,
    pub dynalite: PathBuf,
    pub node: PathBuf,
    pub redis_server: PathBuf,
    pub fleet_probes: u64,
    pub shared_sidecars: usize,
    pub shared_keys: u64,
    pub shared_ttl: Duration,
    pub shared_rate: f64,
    pub outage_run: Duration,
    pub outage: Duration,
    pub outage_rate: f64,
    pub outage_fault: relay::Fault,
    pub out: PathBuf,
    pub notes: Option<PathBuf>,
    /// The command line, for the report.
    pub command: String,
}

/// The repository this program was built from: where the default paths point.
fn repository() -> &'static Path {
    let load = Path::new(env!("CARGO_MANIFEST_DIR"));
    load.ancestors().nth(2).unwrap_or(load)
}

fn size(v: &str) -> Result<u64, String> {
    ddbcache::config::parse_size(v)
}

impl Settings {
    fn resolve(args: CompareArgs) -> anyhow::Result<Settings> {
        let quick = args.quick;
        let pick = |given: Option<u64>, full: u64, smoke: u64| {
            given.unwrap_or(if quick { smoke } else { full })
        };
        let (n1, n2) = match args.callgrind_requests.as_slice() {
            [] if quick => (300, 1300),
            [] => (2000, 12000),
            [n1, n2] if n2 > n1 => (*n1, *n2),
            _ => bail!("--callgrind-requests takes two counts N1,N2 with N2 > N1"),
        };
        if !args.no_pin && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            bail!("pinning the servers and the load generator apart needs two CPUs (or --no-pin)");
        }
        let write_requests = match args.write_requests.as_slice() {
            [] if quick => (1_000, 3_000),
            [] => (20_000, 30_000),
            [warm, measured] if *measured > 0 => (*warm, *measured),
            _ => bail!("--write-requests takes two counts WARM,MEASURED with MEASURED > 0"),
        };
        if let Some(before) = &args.before {
            if !before.is_file() {
                bail!("no ddbcache binary at {} (--before)", before.display());
            }
        }
        let seconds = |full: u64, smoke: u64| Duration::from_secs(if quick { smoke } else { full });
        let outage_run = args.outage_run.unwrap_or(seconds(90, 15));
        let outage = args.outage.unwrap_or(seconds(30, 5));
        if outage.is_zero() || outage >= outage_run {
            bail!("--outage must be longer than nothing and shorter than --outage-run");
        }
        if args.outage_rate.is_nan() || args.outage_rate < 1.0 {
            bail!("--outage-rate must be at least 1 read a second");
        }
        let runs = args.runs.unwrap_or(if quick { 2 } else { 5 });
        if args.shared_sidecars < 2 {
            bail!("--shared-sidecars must be at least 2");
        }
        let shared_rate = args
            .shared_rate
            .unwrap_or(if quick { 400.0 } else { 800.0 });
        if shared_rate.is_nan() || shared_rate <= 0.0 {
            bail!("--shared-rate must be above 0");
        }
        if runs == 0 || args.concurrency == 0 {
            bail!("--runs and --concurrency must be at least 1");
        }
        let keys = pick(args.keys, 10_000, 1_000);
        let callgrind_keys = pick(args.callgrind_keys, 1_000, 200);
        if callgrind_keys > keys {
            bail!("--callgrind-keys ({callgrind_keys}) must not exceed --keys ({keys})");
        }
        let scale_keys = match args.scale_keys {
            given if !given.is_empty() => given,
            _ if quick => vec![1_000, 10_000],
            _ => vec![1_000, 100_000, 1_000_000],
        };
        let ddbcache = match args.ddbcache {
            Some(path) => path,
            None => std::env::current_exe()?
                .parent()
                .context("this program's directory")?
                .join("ddbcache"),
        };
        if !ddbcache.is_file() {
            bail!(
                "no ddbcache binary at {} (build both with `cargo build --release --workspace`, \
                 or give --ddbcache)",
                ddbcache.display()
            );
        }
        let dynalite = args
            .dynalite
            .unwrap_or_else(|| repository().join("scripts/upstream/node_modules/dynalite/cli.js"));
        if !dynalite.is_file() {
            bail!(
                "no dynalite at {} (install it with scripts/setup.sh node, or give --dynalite)",
                dynalite.display()
            );
        }
        Ok(Settings {
            quick,
            scenarios: args.scenarios,
            runs,
            duration: args.duration.unwrap_or(if quick {
                Duration::from_secs(1)
            } else {
                Duration::from_secs(5)
            }),
            warmup: args.warmup.unwrap_or(if quick {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(1)
            }),
            concurrency: args.concurrency,
            keys,
            item_bytes: args.item_bytes,
            item_capacity: args.item_capacity,
            compression: args.compression.clone(),
            scale_keys,
            mem_capacity: args
                .mem_capacity
                .unwrap_or(if quick { 8 << 20 } else { 64 << 20 }),
            mem_keys: pick(args.mem_keys, 300_000, 40_000),
            callgrind_requests: (n1, n2),
            callgrind_keys,
            callgrind_keep: args.callgrind_keep,
            write_partitions: pick(args.write_partitions, 10_000, 1_000),
            write_requests,
            before: args.before,
            pin: (!args.no_pin).then_some((args.server_cpus, args.load_cpus)),
            ddbcache,
            dynalite,
            node: args.node,
            redis_server: args.redis_server,
            fleet_probes: pick(args.fleet_probes, 300, 50),
            shared_sidecars: args.shared_sidecars,
            shared_keys: pick(args.shared_keys, 10_000, 2_000),
            shared_ttl: args.shared_ttl.unwrap_or(if quick {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(30)
            }),
            shared_rate,
            outage_run,
            outage,
            outage_rate: args.outage_rate,
            outage_fault: args.outage_fault,
            out: args
                .out
                .unwrap_or_else(|| repository().join("benches/RESULTS.md")),
            notes: args.notes,
            command: std::env::args().collect::<Vec<_>>().join(" "),
        })
    }
}

/// Runs the comparison and writes the report; every process it started is stopped on the way
/// out, whether it succeeds, fails, or is interrupted.
pub async fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(args)?;
    let notes = match &settings.notes {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        ),
        None => None,
    };
    if let Some((_, load_cpus)) = &settings.pin {
        procs::pin_self(load_cpus)?;
    }
    let work = std::env::temp_dir().join(format!("ddbcache-compare-{}", std::process::id()));
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let procs = Procs::new(work.clone(), settings.pin.as_ref().map(|(s, _)| s.clone()));
    let mut bench = Bench::new(settings.clone(), procs, work.clone());

    let outcome = tokio::select! {
        outcome = run_scenarios(&mut bench) => outcome,
        _ = ddbcache::server::shutdown_signal() => Err(anyhow::anyhow!("interrupted")),
    };
    let sections = match outcome {
        Ok(sections) => sections,
        Err(e) => {
            drop(bench);
            eprintln!(
                "compare: failed; the servers' logs are in {}",
                work.display()
            );
            return Err(e);
        }
    };
    let text = report::render(&settings, &sections, bench.raw(), notes.as_deref());
    drop(bench);
    std::fs::write(&settings.out, text)
        .with_context(|| format!("writing {}", settings.out.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("compare: wrote {}", settings.out.display());
    Ok(())
}

async fn run_scenarios(bench: &mut Bench) -> anyhow::Result<Vec<report::Section>> {
    let mut sections = Vec::new();
    for scenario in bench.settings().scenarios.clone() {
        eprintln!("compare: scenario {}", scenario.name());
        let section = scenario
            .run(bench)
            .await
            .with_context(|| format!("scenario {}", scenario.name()))?;
        sections.push(section);
    }
    Ok(sections)
}

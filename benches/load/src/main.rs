//! `ddbcache-load`: a load generator for any DynamoDB endpoint (real DynamoDB, DynamoDB Local,
//! dynalite, or ddbcache in front of one of them), the bare HTTP server used as the baseline, and
//! `compare`, which measures ddbcache against that baseline and writes `benches/RESULTS.md`.
//!
//! ```text
//! ddbcache-load preload --endpoint http://127.0.0.1:4567 --table bench --keys 100000
//! ddbcache-load run --endpoint http://127.0.0.1:8000 --table bench --keys 100000 \
//!     --mix get=80,put=10,query=5,update=5 --dist zipf --concurrency 32 --duration 10s \
//!     --admin http://127.0.0.1:9000
//! ddbcache-load serve-fixed --addr 127.0.0.1:8100
//! ddbcache-load compare --quick
//! ```
//!
//! This file only parses arguments and builds the runtime; `workload` decides what to send,
//! `client` sends it, `driver` paces it, `run` measures one run, `report` shows what happened,
//! `preload` fills the table, `fixed_server` is the baseline server of a hit, `forward_server`
//! that of a forwarded request, and `compare` the side-by-side benchmark.

mod client;
mod compare;
mod driver;
mod fixed_server;
mod forward_server;
mod preload;
mod report;
mod run;
mod workload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{ClientOptions, DynamoClient};
use crate::run::RunSpec;
use crate::workload::{Dist, Keyspace, Mix, RequestShape};

#[derive(Parser)]
#[command(
    name = "ddbcache-load",
    version,
    about = "DynamoDB load generator and baseline server"
)]
struct Cli {
    /// Tokio runtime: 0 = multi-threaded with one worker per available core (how ddbcache
    /// runs), 1 = single-threaded (current-thread) runtime, N = multi-threaded with N workers.
    /// Use with `taskset` to give the generator and the server under test their own cores.
    #[arg(long, global = true, default_value_t = 0)]
    threads: usize,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive an endpoint with a mix of DynamoDB requests and report throughput and latency.
    Run(RunArgs),
    /// Create the table (on-demand, pk/sk strings) and write --keys items.
    Preload(PreloadArgs),
    /// Answer every request with the same GetItem response: the HTTP stack's own limit.
    ServeFixed(ServeFixedArgs),
    /// Forward every request to --upstream with hyper-util's pooled client: the cost of a hop.
    ServeForward(ServeForwardArgs),
    /// Measure ddbcache against the bare server and dynalite, side by side, and write
    /// benches/RESULTS.md. Starts every process it needs on free loopback ports.
    Compare(Box<compare::CompareArgs>),
}

#[derive(Args, Clone)]
struct TargetArgs {
    /// DynamoDB endpoint: ddbcache, a local engine, or https://dynamodb.REGION.amazonaws.com.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    endpoint: String,
    #[arg(long, default_value = "ddbcache-bench")]
    table: String,
    /// Sign requests with SigV4 (credentials from the AWS default chain); needed for real
    /// DynamoDB. Without it a fixed fake Authorization header is sent.
    #[arg(long)]
    sign: bool,
    /// Region for SigV4 signing.
    #[arg(long, default_value = "us-east-1")]
    region: String,
    /// Give up on a request after this long (counted as "transport: timeout").
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[derive(Args, Clone)]
struct KeyspaceArgs {
    /// Number of distinct items (keys 0..KEYS).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Items per partition key: a Query returns up to this many items.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    rows_per_pk: u64,
    /// Item size as DynamoDB counts it (attribute names + values), for preload and PutItem.
    #[arg(long, default_value_t = 200)]
    item_bytes: usize,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    keyspace: KeyspaceArgs,
    /// Operation weights (get, batchget, query, scan, put, update).
    #[arg(long, default_value = "get=80,put=10,query=5,update=5")]
    mix: Mix,
    /// Key distribution.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    dist: Dist,
    /// Zipf exponent for --dist zipf (0 = uniform; 0.99 is the YCSB default).
    #[arg(long, default_value_t = 0.99)]
    zipf_s: f64,
    /// Closed loop: requests in flight. Open loop (--rate): connections.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Open loop: send at this many requests per second, latency measured from each request's
    /// intended start.
    #[arg(long)]
    rate: Option<f64>,
    /// Measure for this long (after warm-up).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "requests")]
    duration: Option<Duration>,
    /// Measure this many requests instead of a duration.
    #[arg(long)]
    requests: Option<u64>,
    /// Load applied before measuring, not reported.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Keys per BatchGetItem (distinct, at most 100).
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Limit of each Query.
    #[arg(long, default_value_t = 10)]
    query_limit: u32,
    /// Limit of each Scan page.
    #[arg(long, default_value_t = 25)]
    scan_limit: u32,
    /// Send ConsistentRead: true on reads (ddbcache bypasses its cache for those).
    #[arg(long)]
    consistent_read: bool,
    /// ddbcache admin address: report the cache hit ratio from /metrics deltas.
    #[arg(long)]
    admin: Option<String>,
    /// Create and fill the table first (as `preload`).
    #[arg(long)]
    preload: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// Seed of the key and operation choices (default: random).
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct PreloadArgs {
    #[command(flatten)]
    target: TargetArgs,
    #[command(flatten)]
    keyspace: KeyspaceArgs,
    /// Concurrent BatchWriteItem requests.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

#[derive(Args)]
struct ServeFixedArgs {
    #[arg(long, default_value = "127.0.0.1:8100")]
    addr: SocketAddr,
    /// Size of the item in the fixed GetItem response.
    #[arg(long, default_value_t = 200)]
    item_bytes: usize,
}

#[derive(Args)]
struct ServeForwardArgs {
    #[arg(long, default_value = "127.0.0.1:8101")]
    addr: SocketAddr,
    /// Where requests go: an engine's URL.
    #[arg(long)]
    upstream: http::Uri,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `compare` drives its load from this process, on one thread pinned to its own core.
    let threads = match cli.command {
        Command::Compare(_) => 1,
        _ => cli.threads,
    };
    let runtime = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run(args, threads).await,
            Command::Preload(args) => {
                let client = connect(&args.target, args.concurrency).await?;
                preload::preload(
                    client,
                    &args.target.table,
                    keyspace(&args.keyspace),
                    args.concurrency,
                )
                .await
            }
            Command::ServeFixed(args) => fixed_server::serve(args.addr, args.item_bytes).await,
            Command::ServeForward(args) => forward_server::serve(args.addr, args.upstream).await,
            Command::Compare(args) => compare::compare(*args).await,
        }
    })
}

async fn connect(target: &TargetArgs, connections: usize) -> anyhow::Result<Arc<DynamoClient>> {
    Ok(Arc::new(
        DynamoClient::new(ClientOptions {
            endpoint: target.endpoint.clone(),
            region: target.region.clone(),
            sign: target.sign,
            timeout: target.timeout,
            max_connections: connections,
        })
        .await?,
    ))
}

fn keyspace(args: &KeyspaceArgs) -> Keyspace {
    Keyspace {
        keys: args.keys,
        rows_per_pk: args.rows_per_pk,
        item_bytes: args.item_bytes,
    }
}

async fn run(args: RunArgs, threads: usize) -> anyhow::Result<()> {
    let spec = RunSpec {
        endpoint: args.target.endpoint.clone(),
        table: args.target.table.clone(),
        keyspace: keyspace(&args.keyspace),
        mix: args.mix,
        dist: args.dist,
        zipf_s: args.zipf_s,
        shape: RequestShape {
            batch_size: args.batch_size,
            query_limit: args.query_limit,
            scan_limit: args.scan_limit,
            consistent_read: args.consistent_read,
        },
        concurrency: args.concurrency,
        rate: args.rate,
        duration: match (args.duration, args.requests) {
            (None, None) => Some(Duration::from_secs(10)),
            (d, _) => d,
        },
        requests: args.requests,
        warmup: args.warmup,
        admin: args.admin,
        seed: args.seed,
        progress: !args.quiet,
        threads,
    };
    let client = connect(&args.target, args.concurrency.max(1)).await?;
    if args.preload {
        preload::preload(
            Arc::clone(&client),
            &spec.table,
            spec.keyspace,
            args.concurrency.clamp(1, 16),
        )
        .await?;
    }
    let report = run::measure(&spec, client, || ()).await?.report;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(())
}

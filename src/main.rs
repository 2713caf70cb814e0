//! The `ddbcache` command: parse arguments, load config, start logging, run the server.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ddbcache::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "ddbcache",
    version,
    about = "A caching proxy sidecar for Amazon DynamoDB",
    after_help = "Environment overrides (DDBCACHE_*) are listed in config/ddbcache.toml."
)]
struct Cli {
    /// Config file (TOML). Default: $DDBCACHE_CONFIG, else config/ddbcache.toml if it exists,
    /// else built-in defaults.
    #[arg(long, short, global = true, env = ddbcache::config::CONFIG_ENV)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Print the effective config (file + environment) and the container memory it needs, and
    /// exit; fails on an invalid config.
    CheckConfig {
        /// One JSON object for programs: sizes in bytes, durations in seconds, and `derived`
        /// figures (effective endpoints, `container_memory_bytes`).
        #[arg(long)]
        json: bool,
    },
    /// Add ddbcache to Kubernetes manifests as a native sidecar (sized for this config), or
    /// remove it with --uninject; with --serve, run the mutating admission webhook that does the
    /// same to pods as they are created.
    Inject(Box<ddbcache::inject::InjectArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.or_else(|| {
        let default = PathBuf::from("config/ddbcache.toml");
        default.exists().then_some(default)
    });
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "ddbcache: {}",
                ddbcache::upstream::error_chain(&e).trim_end()
            );
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig { json: true } => print(&format!("{:#}\n", config.to_json())),
        Command::CheckConfig { json: false } => {
            let memory = config.container_memory_bytes();
            print(&format!(
                "{}\n# Container memory for this config: {memory} bytes ({}Mi), from {}.\n{}",
                config.to_toml(),
                memory.div_ceil(1 << 20),
                ddbcache::config::CONTAINER_MEMORY_RULE,
                config.shared_redis_advice().unwrap_or_default()
            ))
        }
        Command::Inject(args) => {
            if args.serves() {
                init_tracing(&config);
            }
            ddbcache::inject::main(*args, &config)
        }
        Command::Run => run(config),
    }
}

/// Writes `text` to standard output; a reader that stopped early (`| grep -q`) is not an error.
fn print(text: &str) -> ExitCode {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ddbcache: cannot write the config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Config) -> ExitCode {
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.server.effective_worker_threads())
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ddbcache: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(ddbcache::server::run(
        config,
        ddbcache::server::shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ddbcache: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colour codes only for a person at a terminal, not for a log pipeline or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

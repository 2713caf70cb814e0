//! Typed configuration: `config/ddbcache.toml` (or any file given with `--config`), then `DDBCACHE_*`
//! environment overrides, then validation.
//!
//! Every key has a default, so an empty file is a valid config. Unknown keys are errors: a typo in a
//! sidecar's config should fail at start, not silently fall back to a default. `config/ddbcache.toml`
//! documents every key; `ENV_OVERRIDES` below is the one list of environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration, as read from TOML.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: ListenConfig,
    pub upstream: UpstreamConfig,
    pub server: ServerConfig,
    pub log: LogConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    /// Per-table overrides, keyed by table name.
    pub tables: BTreeMap<String, TableOverrides>,
    /// The invalidation bus shared by a fleet of sidecars (off without `redis_url`).
    pub fleet: FleetConfig,
    /// DynamoDB Streams read to invalidate writes made elsewhere (off without `tables`).
    pub streams: StreamsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Data port: where applications send DynamoDB requests.
    pub addr: SocketAddr,
    /// Admin port: /metrics, /healthz, /readyz, /cache.
    pub admin_addr: SocketAddr,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            addr: ([127, 0, 0, 1], 8000).into(),
            admin_addr: ([127, 0, 0, 1], 9000).into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Full endpoint URL; `{region}` in it stands for the request's region. When absent,
    /// `https://dynamodb.{region}.amazonaws.com`.
    pub endpoint: Option<String>,
    /// Endpoint of DynamoDB Streams calls (`{region}` as in `endpoint`). When absent: `endpoint`
    /// if that is set (local engines serve both), else `https://streams.dynamodb.{region}.amazonaws.com`.
    pub streams_endpoint: Option<String>,
    /// The region of a request whose signature names none (or an invalid one), and of every
    /// request when `pin_region` is set or the endpoint is one fixed URL that ddbcache signs for.
    pub region: String,
    /// Send and sign every request for `region`, whatever region its client signed for: for
    /// engines that keep one set of tables whatever the region (dynalite, DynamoDB Local).
    pub pin_region: bool,
    /// Re-sign requests with SigV4 using the standard AWS credential chain.
    pub sign: bool,
    pub connect_timeout_ms: u64,
    /// Whole-request timeout for one upstream call.
    pub timeout_ms: u64,
    /// Idle keep-alive connections kept per upstream host.
    pub max_idle_per_host: usize,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            streams_endpoint: None,
            region: "us-east-1".into(),
            pin_region: false,
            sign: true,
            connect_timeout_ms: 1000,
            timeout_ms: 3000,
            max_idle_per_host: 64,
        }
    }
}

impl UpstreamConfig {
    /// Where requests go, `{region}` standing for the request's region.
    pub fn endpoint_template(&self) -> String {
        match &self.endpoint {
            Some(e) => e.trim_end_matches('/').to_string(),
            None => format!("https://dynamodb.{REGION_PLACEHOLDER}.amazonaws.com"),
        }
    }

    /// Where DynamoDB Streams requests go, `{region}` standing for the request's region.
    pub fn streams_endpoint_template(&self) -> String {
        match (&self.streams_endpoint, &self.endpoint) {
            (Some(e), _) => e.trim_end_matches('/').to_string(),
            (None, Some(_)) => self.endpoint_template(),
            (None, None) => format!("https://streams.dynamodb.{REGION_PLACEHOLDER}.amazonaws.com"),
        }
    }

    /// The endpoint URL of requests of `region` (the configured one).
    pub fn endpoint_url(&self) -> String {
        self.endpoint_template()
            .replace(REGION_PLACEHOLDER, &self.region)
    }

    /// The endpoint URL of DynamoDB Streams requests of `region` (the configured one).
    pub fn streams_endpoint_url(&self) -> String {
        self.streams_endpoint_template()
            .replace(REGION_PLACEHOLDER, &self.region)
    }

    /// Whether a request is sent to, and signed for, the region its client signed for (else
    /// every request is `region`'s). Not when pinned, and not when ddbcache signs for a fixed
    /// endpoint: one URL serves one region, and a signature for another would be refused.
    pub fn follows_client_region(&self) -> bool {
        let fixed = self
            .endpoint
            .as_deref()
            .is_some_and(|e| !e.contains(REGION_PLACEHOLDER));
        let signs_for_one_url = self.sign && fixed;
        !(self.pin_region || signs_for_one_url)
    }
}

/// What an endpoint's URL says where the request's region goes.
pub const REGION_PLACEHOLDER: &str = "{region}";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies larger than this are answered with 413.
    #[serde(with = "size")]
    pub max_body_bytes: u64,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    #[serde(with = "humantime_serde_compat")]
    pub shutdown_grace: Duration,
    /// Runtime worker threads; 0: as many as the CPUs the process may use (cgroup quotas count).
    pub worker_threads: usize,
    /// Open connections per port; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, from its first byte.
    #[serde(with = "humantime_serde_compat")]
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body, once its headers arrived.
    #[serde(with = "humantime_serde_compat")]
    pub body_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(with = "humantime_serde_compat")]
    pub idle_timeout: Duration,
    /// Request body bytes buffered at once across all requests.
    #[serde(with = "size")]
    pub max_buffered_bytes: u64,
    /// How long a request waits for room within `max_buffered_bytes` before a retryable 503.
    #[serde(with = "humantime_serde_compat")]
    pub buffer_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            worker_threads: 0,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_buffered_bytes: 64 * 1024 * 1024,
            buffer_wait: Duration::from_secs(1),
        }
    }
}

impl ServerConfig {
    /// The runtime's worker threads: `worker_threads`, or the CPUs this process may use.
    pub fn effective_worker_threads(&self) -> usize {
        match self.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Who may use the admin port's mutating endpoints (`POST /cache/flush`). Probes and metrics
/// stay open to anyone who can reach the port.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token that mutating requests must present. Never printed by `check-config`.
    #[serde(serialize_with = "redacted", skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A file holding the token (a mounted Kubernetes Secret); read on every mutating request, so
    /// a rotated Secret takes effect without a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
}

fn redacted<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_str("(set, not shown)"),
        None => s.serialize_none(),
    }
}

/// TLS on the data port (off unless `cert_file` and `key_file` are set).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<std::path::PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
    /// PEM CA certificates; when set, clients must present a certificate they signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<std::path::PathBuf>,
    /// How often the files are checked for changes (a renewed certificate is picked up).
    #[serde(with = "humantime_serde_compat")]
    pub reload_interval: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval: Duration::from_secs(10),
        }
    }
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `ddbcache=debug,hyper=info`, ...
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Master switch: false turns ddbcache into a pure pass-through proxy.
    pub enabled: bool,
    /// Add `x-ddbcache: hit|miss|bypass` to responses of cacheable operations.
    pub header: bool,
    pub item: ItemCacheConfig,
    pub query: QueryCacheConfig,
    /// After a write, misses on what it touched read with `ConsistentRead` (or are not stored)
    /// for this long: an eventually consistent read may reach a replica that lacks the write.
    #[serde(with = "humantime_serde_compat")]
    pub consistency_window: Duration,
    /// After a write whose outcome is unknown (no answer, or a 5xx), misses on what it touched are
    /// not stored for this long: it may still land. Default: 4 × `upstream.timeout_ms`.
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub in_doubt_window: Option<Duration>,
    /// How stored bodies are kept: `none`, or `lz4` (more entries per byte, a decompression per
    /// hit).
    pub compression: Compression,
}

/// How the caches keep stored response bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// As the upstream sent them: a hit answers with the stored bytes, copying nothing.
    #[default]
    None,
    /// LZ4-compressed, where that makes a body smaller: a hit decompresses into a new buffer.
    Lz4,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            header: true,
            item: ItemCacheConfig::default(),
            query: QueryCacheConfig::default(),
            consistency_window: Duration::from_secs(1),
            in_doubt_window: None,
            compression: Compression::None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItemCacheConfig {
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
    /// TTL of "no such item" answers.
    #[serde(with = "humantime_serde_compat")]
    pub negative_ttl: Duration,
    #[serde(with = "size")]
    pub capacity: u64,
}

impl Default for ItemCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(300),
            capacity: 256 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryCacheConfig {
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
    #[serde(with = "size")]
    pub capacity: u64,
}

impl Default for QueryCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            capacity: 256 * 1024 * 1024,
        }
    }
}

/// `[fleet]`: the Redis (or Valkey, ElastiCache, MemoryDB) the sidecars of a fleet publish their
/// writes on. Off when `redis_url` is unset.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). Printed without its
    /// password.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_redacted_url"
    )]
    pub redis_url: Option<String>,
    /// Namespace of the bus channel and of the stream leases: fleets sharing one Redis differ here.
    pub channel: String,
    /// How long a write waits for its invalidation to be published before it is answered anyway
    /// (the message is then retried from a queue, and this sidecar serves no hits until it went).
    #[serde(with = "humantime_serde_compat")]
    pub publish_timeout: Duration,
    /// Messages the retry queue holds; past it they collapse into one "invalidate everything".
    pub publish_queue: usize,
    /// How often the subscription connection is pinged to detect a dead link.
    #[serde(with = "humantime_serde_compat")]
    pub ping_interval: Duration,
    /// A ping (or a connection attempt) not answered within this marks the link down.
    #[serde(with = "humantime_serde_compat")]
    pub ping_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            channel: "ddbcache".into(),
            publish_timeout: Duration::from_millis(50),
            publish_queue: 1024,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(1),
        }
    }
}

impl FleetConfig {
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }
}

/// A URL with the password of its user part replaced, for printing.
pub fn redacted_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{scheme}://{name}:****@{host}")
        }
        Some((_, host)) => format!("{scheme}://****@{host}"),
        None => url.to_string(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(
    v: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(url) => s.serialize_str(&redacted_url(url)),
        None => s.serialize_none(),
    }
}

/// Which tables' streams are read: a list, or `"*"` for every table ddbcache has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StreamTables {
    #[default]
    None,
    All,
    Named(Vec<String>),
}

impl Serialize for StreamTables {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            StreamTables::None => Vec::<String>::new().serialize(s),
            StreamTables::All => s.serialize_str("*"),
            StreamTables::Named(names) => names.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StreamTables {
    /// A list of names, `"*"`, or (as an environment variable gives it) a comma-separated string.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            List(Vec<String>),
        }
        let names = match Raw::deserialize(d)? {
            Raw::One(s) if s.trim() == "*" => return Ok(StreamTables::All),
            Raw::One(s) => s.split(',').map(|t| t.trim().to_string()).collect(),
            Raw::List(l) if l.len() == 1 && l[0] == "*" => return Ok(StreamTables::All),
            Raw::List(l) => l,
        };
        let names: Vec<String> = names.into_iter().filter(|t| !t.is_empty()).collect();
        Ok(if names.is_empty() {
            StreamTables::None
        } else {
            StreamTables::Named(names)
        })
    }
}

/// `[streams]`: DynamoDB Streams read to invalidate what was written around every sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// `["orders", ...]`, or `"*"` for every table ddbcache has seen. Empty: no stream is read.
    pub tables: StreamTables,
    /// Longest wait between two GetRecords on a shard that had nothing new (the wait doubles from
    /// 50ms up to this while a shard stays empty).
    #[serde(with = "humantime_serde_compat")]
    pub poll_interval: Duration,
    /// With `[fleet]`: how long a sidecar's lease on a table's stream lasts without renewal, and so
    /// how long the others wait before taking over from one that died.
    #[serde(with = "humantime_serde_compat")]
    pub lease_ttl: Duration,
    /// How often the stream's shards are listed again (new shards, a re-enabled stream).
    #[serde(with = "humantime_serde_compat")]
    pub describe_interval: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            tables: StreamTables::None,
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
            describe_interval: Duration::from_secs(30),
        }
    }
}

/// Per-table TTLs; an absent key inherits the cache's. `0s` turns that cache off for the table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableOverrides {
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub item_ttl: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<Duration>,
    #[serde(with = "opt_duration", skip_serializing_if = "Option::is_none")]
    pub query_ttl: Option<Duration>,
}

/// A configuration problem, naming the file, variable or key and what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config{}", in_file(path.as_deref()))]
    Toml {
        path: Option<PathBuf>,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid value for {var} ({key})")]
    Env {
        var: &'static str,
        key: &'static str,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("invalid config: {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

fn in_file(path: Option<&Path>) -> String {
    path.map(|p| format!(" file {}", p.display()))
        .unwrap_or_default()
}

/// The environment variable naming the config file to read (`--config` wins over it).
pub const CONFIG_ENV: &str = "DDBCACHE_CONFIG";

/// Environment variables that override config keys: `(variable, dotted key)`. A variable's value
/// is put into the file's TOML at that key before the whole is deserialized, so it is read by
/// the same parsers as the file (a size takes `256MiB`, a flag `true` or `false`). An empty
/// variable counts as unset and returns the key to its built-in default.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("DDBCACHE_LISTEN_ADDR", "listen.addr"),
    ("DDBCACHE_ADMIN_ADDR", "listen.admin_addr"),
    ("DDBCACHE_UPSTREAM_ENDPOINT", "upstream.endpoint"),
    ("DDBCACHE_UPSTREAM_REGION", "upstream.region"),
    ("DDBCACHE_UPSTREAM_PIN_REGION", "upstream.pin_region"),
    ("DDBCACHE_UPSTREAM_SIGN", "upstream.sign"),
    (
        "DDBCACHE_UPSTREAM_CONNECT_TIMEOUT_MS",
        "upstream.connect_timeout_ms",
    ),
    ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "upstream.timeout_ms"),
    ("DDBCACHE_MAX_BODY_BYTES", "server.max_body_bytes"),
    ("DDBCACHE_SHUTDOWN_GRACE", "server.shutdown_grace"),
    ("DDBCACHE_WORKER_THREADS", "server.worker_threads"),
    ("DDBCACHE_MAX_CONNECTIONS", "server.max_connections"),
    ("DDBCACHE_HEADER_TIMEOUT", "server.header_timeout"),
    ("DDBCACHE_BODY_TIMEOUT", "server.body_timeout"),
    ("DDBCACHE_IDLE_TIMEOUT", "server.idle_timeout"),
    ("DDBCACHE_MAX_BUFFERED_BYTES", "server.max_buffered_bytes"),
    ("DDBCACHE_ADMIN_TOKEN", "admin.token"),
    ("DDBCACHE_ADMIN_TOKEN_FILE", "admin.token_file"),
    ("DDBCACHE_TLS_CERT_FILE", "tls.cert_file"),
    ("DDBCACHE_TLS_KEY_FILE", "tls.key_file"),
    ("DDBCACHE_TLS_CLIENT_CA_FILE", "tls.client_ca_file"),
    ("DDBCACHE_LOG_FORMAT", "log.format"),
    ("DDBCACHE_LOG_LEVEL", "log.level"),
    ("DDBCACHE_CACHE_ENABLED", "cache.enabled"),
    ("DDBCACHE_CACHE_HEADER", "cache.header"),
    ("DDBCACHE_ITEM_TTL", "cache.item.ttl"),
    ("DDBCACHE_ITEM_NEGATIVE_TTL", "cache.item.negative_ttl"),
    ("DDBCACHE_ITEM_CAPACITY", "cache.item.capacity"),
    ("DDBCACHE_QUERY_TTL", "cache.query.ttl"),
    ("DDBCACHE_QUERY_CAPACITY", "cache.query.capacity"),
    ("DDBCACHE_CONSISTENCY_WINDOW", "cache.consistency_window"),
    ("DDBCACHE_IN_DOUBT_WINDOW", "cache.in_doubt_window"),
    ("DDBCACHE_CACHE_COMPRESSION", "cache.compression"),
    ("DDBCACHE_FLEET_REDIS_URL", "fleet.redis_url"),
    ("DDBCACHE_FLEET_CHANNEL", "fleet.channel"),
    ("DDBCACHE_FLEET_PUBLISH_TIMEOUT", "fleet.publish_timeout"),
    ("DDBCACHE_FLEET_PUBLISH_QUEUE", "fleet.publish_queue"),
    ("DDBCACHE_STREAMS_TABLES", "streams.tables"),
];

/// Memory the process needs beyond what the caches' capacities, buffered bodies and connections
/// count (the runtime, TLS, answers in flight), in [`Config::container_memory_bytes`].
const BASE_MEMORY_BYTES: u64 = 30 << 20;

/// Memory one open connection may hold (its task and hyper's read and write buffers; about 25KiB
/// measured with a request's worth of buffers).
const CONNECTION_MEMORY_BYTES: u64 = 32 << 10;

/// [`Config::container_memory_bytes`] in words, for what `check-config` prints.
pub const CONTAINER_MEMORY_RULE: &str = "(item capacity + query capacity) x 1.25 + \
     server.max_buffered_bytes + 2 ports x server.max_connections x 32KiB + 30MiB";

impl Config {
    /// Reads a TOML config file (without environment overrides).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = read_file(path)?;
        Self::parse(&text, Some(path))
    }

    /// Parses TOML config text (without environment overrides).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::parse(text, None)
    }

    fn parse(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Toml {
            path: path.map(Path::to_path_buf),
            source: Box::new(source),
        })
    }

    /// The config that `text` (a file's contents, `path` naming it in errors) and the `DDBCACHE_*`
    /// variables of `env` describe, not yet validated. `env` is a function so that tests need not
    /// touch the process environment.
    pub fn from_toml_and_env(
        text: &str,
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let toml_error = |source| ConfigError::Toml {
            path: path.map(Path::to_path_buf),
            source: Box::new(source),
        };
        // The file alone first, so that its errors point at its lines.
        Self::parse(text, path)?;
        let mut table: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        for &(var, key) in ENV_OVERRIDES {
            let Some(raw) = env(var) else { continue };
            let raw = raw.trim();
            if raw.is_empty() {
                remove_key(&mut table, key);
                continue;
            }
            let value = env_value(raw, lookup(&defaults, key));
            // Each variable alone over the defaults, so that a bad value names its variable.
            let mut alone = toml::Table::new();
            insert_key(&mut alone, key, value.clone());
            toml::Value::Table(alone)
                .try_into::<Config>()
                .map_err(|source| ConfigError::Env {
                    var,
                    key,
                    source: Box::new(source),
                })?;
            insert_key(&mut table, key, value);
        }
        toml::Value::Table(table).try_into().map_err(toml_error)
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        for (key, endpoint) in [
            ("upstream.endpoint", self.upstream.endpoint_url()),
            (
                "upstream.streams_endpoint",
                self.upstream.streams_endpoint_url(),
            ),
        ] {
            match endpoint.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http") | Some("https"))
                        && uri.authority().is_some() => {}
                _ => {
                    return invalid(
                        key,
                        &format!("`{endpoint}` is not an http:// or https:// URL"),
                    )
                }
            }
        }
        if crate::protocol::region::Region::parse(&self.upstream.region).is_none() {
            return invalid("upstream.region", "must be a region name such as us-east-1");
        }
        if self.upstream.timeout_ms == 0 {
            return invalid("upstream.timeout_ms", "must be greater than 0");
        }
        if self.upstream.connect_timeout_ms == 0 {
            return invalid("upstream.connect_timeout_ms", "must be greater than 0");
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes", "must be greater than 0");
        }
        // The first of `durations` that is zero, as the error.
        let nonzero = |durations: &[(&'static str, Duration)]| match durations
            .iter()
            .find(|(_, d)| d.is_zero())
        {
            Some((key, _)) => invalid(key, "must be greater than 0s"),
            None => Ok(()),
        };
        nonzero(&[
            ("server.header_timeout", self.server.header_timeout),
            ("server.body_timeout", self.server.body_timeout),
            ("server.idle_timeout", self.server.idle_timeout),
            ("tls.reload_interval", self.tls.reload_interval),
        ])?;
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be greater than 0");
        }
        if self.server.max_buffered_bytes < self.server.max_body_bytes {
            return invalid(
                "server.max_buffered_bytes",
                "must be at least server.max_body_bytes (one largest body must fit)",
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return invalid("tls.key_file", "tls.cert_file and tls.key_file go together");
        }
        if self.tls.client_ca_file.is_some() && !self.tls.enabled() {
            return invalid("tls.client_ca_file", "needs tls.cert_file and tls.key_file");
        }
        if self.listen.addr == self.listen.admin_addr && self.listen.addr.port() != 0 {
            return invalid(
                "listen.admin_addr",
                "must differ from listen.addr (the admin port is separate)",
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid("log.level", "not a valid tracing filter (try `info`)");
        }
        if let Some(url) = &self.fleet.redis_url {
            if !(url.starts_with("redis://") || url.starts_with("rediss://"))
                || redis::Client::open(url.as_str()).is_err()
            {
                return invalid(
                    "fleet.redis_url",
                    "not a redis:// or rediss:// URL like redis://host:6379",
                );
            }
        }
        if self.fleet.channel.is_empty() {
            return invalid("fleet.channel", "must not be empty");
        }
        nonzero(&[
            ("fleet.publish_timeout", self.fleet.publish_timeout),
            ("fleet.ping_interval", self.fleet.ping_interval),
            ("fleet.ping_timeout", self.fleet.ping_timeout),
            ("streams.poll_interval", self.streams.poll_interval),
            ("streams.describe_interval", self.streams.describe_interval),
        ])?;
        if self.fleet.publish_queue == 0 {
            return invalid("fleet.publish_queue", "must be at least 1");
        }
        if self.streams.lease_ttl < Duration::from_secs(1) {
            return invalid("streams.lease_ttl", "must be at least 1s");
        }
        Ok(())
    }

    /// The effective config: file (if any), then the process environment, then validation.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => read_file(p)?,
            None => String::new(),
        };
        let config = Self::from_toml_and_env(&text, path, |k| std::env::var(k).ok())?;
        config.validate()?;
        Ok(config)
    }

    /// The effective config as TOML, as `check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// The effective config as `check-config --json` prints it, for programs: the keys of the
    /// TOML form with sizes in bytes and durations in seconds, plus `derived` figures.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let secs = |d: Duration| serde_json::json!(d.as_secs_f64());
        v["server"]["max_body_bytes"] = self.server.max_body_bytes.into();
        v["server"]["shutdown_grace"] = secs(self.server.shutdown_grace);
        v["server"]["header_timeout"] = secs(self.server.header_timeout);
        v["server"]["body_timeout"] = secs(self.server.body_timeout);
        v["server"]["idle_timeout"] = secs(self.server.idle_timeout);
        v["server"]["buffer_wait"] = secs(self.server.buffer_wait);
        v["server"]["max_buffered_bytes"] = self.server.max_buffered_bytes.into();
        v["tls"]["reload_interval"] = secs(self.tls.reload_interval);
        v["cache"]["item"]["ttl"] = secs(self.cache.item.ttl);
        v["cache"]["item"]["negative_ttl"] = secs(self.cache.item.negative_ttl);
        v["cache"]["item"]["capacity"] = self.cache.item.capacity.into();
        v["cache"]["query"]["ttl"] = secs(self.cache.query.ttl);
        v["cache"]["query"]["capacity"] = self.cache.query.capacity.into();
        v["cache"]["consistency_window"] = secs(self.cache.consistency_window);
        v["cache"]["in_doubt_window"] = secs(self.in_doubt_window());
        for (table, o) in &self.tables {
            for (key, ttl) in [
                ("item_ttl", o.item_ttl),
                ("negative_ttl", o.negative_ttl),
                ("query_ttl", o.query_ttl),
            ] {
                if let Some(ttl) = ttl {
                    v["tables"][table][key] = secs(ttl);
                }
            }
        }
        v["fleet"]["publish_timeout"] = secs(self.fleet.publish_timeout);
        v["fleet"]["ping_interval"] = secs(self.fleet.ping_interval);
        v["fleet"]["ping_timeout"] = secs(self.fleet.ping_timeout);
        v["streams"]["poll_interval"] = secs(self.streams.poll_interval);
        v["streams"]["lease_ttl"] = secs(self.streams.lease_ttl);
        v["streams"]["describe_interval"] = secs(self.streams.describe_interval);
        v["derived"] = serde_json::json!({
            "endpoint_url": self.upstream.endpoint_url(),
            "streams_endpoint_url": self.upstream.streams_endpoint_url(),
            "container_memory_bytes": self.container_memory_bytes(),
            "container_memory_rule": CONTAINER_MEMORY_RULE,
        });
        v
    }

    /// The memory a container running this config needs ([`CONTAINER_MEMORY_RULE`]). A capacity bounds the bytes the cache weighs (each entry's key, response
    /// body and a fixed per-entry estimate); the quarter on top covers what that leaves out (the
    /// caches' own tables, allocator slack). Request bodies being read are bounded by
    /// `server.max_buffered_bytes`, connections by `server.max_connections` per port, and the
    /// 30MiB is the process itself. This is the one
    /// home of the sizing rule: `check-config` prints it and the deployment lint checks limits
    /// against it.
    pub fn container_memory_bytes(&self) -> u64 {
        let capacity = self
            .cache
            .item
            .capacity
            .saturating_add(self.cache.query.capacity);
        let connections = 2 * self.server.max_connections as u64 * CONNECTION_MEMORY_BYTES;
        capacity
            .saturating_add(capacity / 4)
            .saturating_add(self.server.max_buffered_bytes)
            .saturating_add(connections)
            .saturating_add(BASE_MEMORY_BYTES)
    }

    /// How long what a write with an unknown outcome touched stays in doubt.
    pub fn in_doubt_window(&self) -> Duration {
        self.cache
            .in_doubt_window
            .unwrap_or(Duration::from_millis(self.upstream.timeout_ms) * 4)
    }

    /// TTLs in force for one table (None = that cache is off for the table).
    pub fn table_ttls(&self, table: &str) -> TableTtls {
        let o = self.tables.get(table);
        let pick = |over: Option<Duration>, default: Duration| {
            let d = over.unwrap_or(default);
            (!d.is_zero()).then_some(d)
        };
        TableTtls {
            item: pick(o.and_then(|o| o.item_ttl), self.cache.item.ttl),
            negative: pick(o.and_then(|o| o.negative_ttl), self.cache.item.negative_ttl),
            query: pick(o.and_then(|o| o.query_ttl), self.cache.query.ttl),
        }
    }
}

/// The TTLs that apply to one table; `None` means "do not cache".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableTtls {
    pub item: Option<Duration>,
    pub negative: Option<Duration>,
    pub query: Option<Duration>,
}

fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// An environment value as the TOML value its key takes: a flag or a number when the key's
/// default is one, else a string (which the key's own parser reads, as it reads the file's).
fn env_value(raw: &str, default: Option<&toml::Value>) -> toml::Value {
    match default {
        Some(toml::Value::Boolean(_)) => match raw {
            "true" => return toml::Value::Boolean(true),
            "false" => return toml::Value::Boolean(false),
            _ => {}
        },
        Some(toml::Value::Integer(_)) => {
            if let Ok(n) = raw.parse() {
                return toml::Value::Integer(n);
            }
        }
        _ => {}
    }
    toml::Value::String(raw.to_string())
}

fn lookup<'a>(table: &'a toml::Table, key: &str) -> Option<&'a toml::Value> {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        node = node.get(part)?.as_table()?;
    }
    node.get(last)
}

fn insert_key(table: &mut toml::Table, key: &str, value: toml::Value) {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        let entry = node
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        // A section given a plain value was already rejected by the file's own parse.
        let Some(inner) = entry.as_table_mut() else {
            return;
        };
        node = inner;
    }
    node.insert(last.to_string(), value);
}

fn remove_key(table: &mut toml::Table, key: &str) {
    let (parents, last) = key.rsplit_once('.').unwrap_or(("", key));
    let mut node = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        match node.get_mut(part).and_then(toml::Value::as_table_mut) {
            Some(t) => node = t,
            None => return,
        }
    }
    node.remove(last);
}

/// `5m`, `30s`, `1h 30m`, `250ms`, `0s`.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .map_err(|e| format!("`{v}` is not a duration like 30s or 5m ({e})"))
}

/// `256MiB`, `1GiB`, `64MB`, `1048576` (bytes).
pub fn parse_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{v}` is not a size like 256MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{v}` (use B, KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    Ok((num * mult as f64) as u64)
}

fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, mult) in UNITS {
        if bytes >= mult && bytes.is_multiple_of(mult) {
            return format!("{}{unit}", bytes / mult);
        }
    }
    format!("{bytes}B")
}

/// Sizes accept a number of bytes or a string with a unit.
mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_size(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => Ok(n),
            Raw::Str(s) => super::parse_size(&s).map_err(serde::de::Error::custom),
        }
    }
}

mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => super::humantime_serde_compat::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_and_streams_sections() {
        let c = Config::from_toml(
            "[fleet]\nredis_url = \"redis://u:secret@r:6379\"\n[streams]\ntables = \"*\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert!(c.fleet.enabled());
        assert_eq!(c.streams.tables, StreamTables::All);
        assert!(!c.to_toml().contains("secret"), "{}", c.to_toml());
        let c = with_env("", &[("DDBCACHE_STREAMS_TABLES", "a, b")]).unwrap();
        assert_eq!(
            c.streams.tables,
            StreamTables::Named(vec!["a".into(), "b".into()])
        );
        let c = Config::from_toml("[streams]\ntables = [\"orders\"]\n").unwrap();
        assert_eq!(c.streams.tables, StreamTables::Named(vec!["orders".into()]));
        assert!(!Config::default().fleet.enabled());
        let mut bad = Config::default();
        bad.fleet.redis_url = Some("http://r:6379".into());
        assert!(bad.validate().is_err());
        assert_eq!(redacted_url("rediss://:pw@h:6380"), "rediss://:****@h:6380");
    }

    fn with_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml_and_env(text, None, |k| {
            vars.iter()
                .find(|(var, _)| *var == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn chain(e: &dyn std::error::Error) -> String {
        crate::upstream::error_chain(e)
    }

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.listen.addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.cache.item.capacity, 256 << 20);
        c.validate().unwrap();
    }

    #[test]
    fn shipped_config_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ddbcache.toml");
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn unknown_key_is_named_and_the_toml_error_kept() {
        let err = Config::from_toml("[upstream]\ntimeout = 5\n").unwrap_err();
        let source = std::error::Error::source(&err).expect("the TOML error is the source");
        assert!(
            source.to_string().contains("unknown field `timeout`"),
            "{source}"
        );
        assert!(chain(&err).contains("line 2"), "{}", chain(&err));
    }

    #[test]
    fn bad_size_names_the_key() {
        let err =
            chain(&Config::from_toml("[cache.item]\ncapacity = \"12 parsecs\"\n").unwrap_err());
        assert!(err.contains("capacity"), "{err}");
        assert!(err.contains("parsecs"), "{err}");
    }

    #[test]
    fn env_overrides_file() {
        let c = with_env(
            "[upstream]\nregion = \"eu-west-1\"\n",
            &[
                ("DDBCACHE_UPSTREAM_REGION", "ap-south-1"),
                ("DDBCACHE_ITEM_CAPACITY", "1GiB"),
                ("DDBCACHE_CACHE_ENABLED", "false"),
                ("DDBCACHE_UPSTREAM_TIMEOUT_MS", "250"),
                ("DDBCACHE_SHUTDOWN_GRACE", "5s"),
                ("DDBCACHE_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(c.upstream.region, "ap-south-1");
        assert_eq!(c.cache.item.capacity, 1 << 30);
        assert!(!c.cache.enabled);
        assert_eq!(c.upstream.timeout_ms, 250);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn env_values_take_what_the_file_takes() {
        // A size in bytes, as the file allows.
        let c = with_env("", &[("DDBCACHE_MAX_BODY_BYTES", "1048576")]).unwrap();
        assert_eq!(c.server.max_body_bytes, 1 << 20);
        // A flag is `true` or `false`, as in the file.
        assert!(with_env("", &[("DDBCACHE_UPSTREAM_SIGN", "yes")]).is_err());
    }

    #[test]
    fn empty_env_value_returns_the_key_to_its_default() {
        let c = with_env(
            "[upstream]\nendpoint = \"http://127.0.0.1:4567\"\n",
            &[("DDBCACHE_UPSTREAM_ENDPOINT", "")],
        )
        .unwrap();
        assert_eq!(c.upstream.endpoint, None);
    }

    #[test]
    fn bad_env_value_names_the_variable_and_key() {
        let err = with_env("", &[("DDBCACHE_UPSTREAM_SIGN", "maybe")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Env {
                    var: "DDBCACHE_UPSTREAM_SIGN",
                    ..
                }
            ),
            "{err:?}"
        );
        let text = chain(&err);
        assert!(text.contains("upstream.sign"), "{text}");
        assert!(text.contains("maybe"), "{text}");
        let err = chain(&with_env("", &[("DDBCACHE_ITEM_TTL", "soon")]).unwrap_err());
        assert!(err.contains("DDBCACHE_ITEM_TTL"), "{err}");
    }

    #[test]
    fn every_override_names_a_key() {
        // Unknown keys are errors, so a dotted key that names nothing fails here.
        let defaults = toml::Table::try_from(Config::default()).unwrap();
        for &(var, key) in ENV_OVERRIDES {
            let example = match lookup(&defaults, key) {
                Some(toml::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                // Keys without a default value.
                None if key == "cache.in_doubt_window" => "12s".to_string(),
                None => "http://127.0.0.1:4567".to_string(),
            };
            with_env("", &[(var, &example)]).unwrap_or_else(|e| panic!("{var}: {}", chain(&e)));
        }
    }

    #[test]
    fn a_zero_timeout_or_interval_fails_validation_naming_it() {
        type Zero = fn(&mut Config);
        let zeroed: [(&str, Zero); 9] = [
            ("server.header_timeout", |c| {
                c.server.header_timeout = Duration::ZERO
            }),
            ("server.body_timeout", |c| {
                c.server.body_timeout = Duration::ZERO
            }),
            ("server.idle_timeout", |c| {
                c.server.idle_timeout = Duration::ZERO
            }),
            ("tls.reload_interval", |c| {
                c.tls.reload_interval = Duration::ZERO
            }),
            ("fleet.publish_timeout", |c| {
                c.fleet.publish_timeout = Duration::ZERO
            }),
            ("fleet.ping_interval", |c| {
                c.fleet.ping_interval = Duration::ZERO
            }),
            ("fleet.ping_timeout", |c| {
                c.fleet.ping_timeout = Duration::ZERO
            }),
            ("streams.poll_interval", |c| {
                c.streams.poll_interval = Duration::ZERO
            }),
            ("streams.describe_interval", |c| {
                c.streams.describe_interval = Duration::ZERO
            }),
        ];
        for (key, zero) in zeroed {
            let mut c = Config::default();
            zero(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("greater than 0s"),
                "{key}: {err}"
            );
        }
    }

    #[test]
    fn bad_endpoint_fails_validation() {
        let mut c = Config::default();
        c.upstream.endpoint = Some("ftp://x".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.endpoint"), "{err}");
    }

    #[test]
    fn endpoints_follow_the_clients_region_unless_pinned_or_fixed_and_signed() {
        let mut u = UpstreamConfig::default();
        assert_eq!(
            u.endpoint_template(),
            "https://dynamodb.{region}.amazonaws.com"
        );
        assert_eq!(u.endpoint_url(), "https://dynamodb.us-east-1.amazonaws.com");
        assert_eq!(
            u.streams_endpoint_url(),
            "https://streams.dynamodb.us-east-1.amazonaws.com"
        );
        assert!(u.follows_client_region());
        u.pin_region = true;
        assert!(!u.follows_client_region());
        u.pin_region = false;
        u.endpoint = Some("https://dynamodb.eu-west-1.amazonaws.com/".into());
        assert!(
            !u.follows_client_region(),
            "one URL is one region to sign for"
        );
        assert_eq!(
            u.streams_endpoint_template(),
            "https://dynamodb.eu-west-1.amazonaws.com"
        );
        u.sign = false;
        assert!(
            u.follows_client_region(),
            "unsigned, the client's signature decides"
        );
        u.sign = true;
        u.endpoint = Some("https://ddb.{region}.example.com".into());
        assert!(u.follows_client_region());
        assert_eq!(u.endpoint_url(), "https://ddb.us-east-1.example.com");
        let mut c = Config::default();
        c.upstream.region = "us-east-1.evil.com".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.region"), "{err}");
    }

    #[test]
    fn per_table_overrides_and_zero_means_off() {
        let c =
            Config::from_toml("[tables.orders]\nitem_ttl = \"30s\"\nquery_ttl = \"0s\"\n").unwrap();
        let t = c.table_ttls("orders");
        assert_eq!(t.item, Some(Duration::from_secs(30)));
        assert_eq!(t.query, None);
        assert_eq!(t.negative, Some(Duration::from_secs(300)));
        assert_eq!(c.table_ttls("other").item, Some(Duration::from_secs(300)));
    }

    #[test]
    fn effective_config_round_trips() {
        let c = Config::from_toml("[tables.t]\nitem_ttl = \"1m\"\n").unwrap();
        let again = Config::from_toml(&c.to_toml()).unwrap();
        assert_eq!(again.table_ttls("t"), c.table_ttls("t"));
        assert_eq!(again.cache.item.capacity, c.cache.item.capacity);
    }

    #[test]
    fn container_memory_follows_the_capacities() {
        let c = with_env(
            "",
            &[
                ("DDBCACHE_ITEM_CAPACITY", "64MiB"),
                ("DDBCACHE_QUERY_CAPACITY", "64MiB"),
                ("DDBCACHE_MAX_BUFFERED_BYTES", "16MiB"),
                ("DDBCACHE_MAX_CONNECTIONS", "128"),
            ],
        )
        .unwrap();
        // 128MiB × 1.25 + 16MiB of bodies + 2 ports × 128 connections × 32KiB + 30MiB.
        assert_eq!(c.container_memory_bytes(), 214 << 20);
    }

    #[test]
    fn json_has_numbers_for_sizes_and_durations() {
        let c = Config::from_toml(
            "[server]\nshutdown_grace = \"250ms\"\n[tables.t]\nquery_ttl = \"1m\"\n",
        )
        .unwrap();
        let v = c.to_json();
        assert_eq!(v["server"]["shutdown_grace"], 0.25);
        assert_eq!(v["cache"]["item"]["capacity"], 256u64 << 20);
        assert_eq!(v["tables"]["t"]["query_ttl"], 60.0);
        assert_eq!(v["listen"]["admin_addr"], "127.0.0.1:9000");
        assert_eq!(
            v["derived"]["container_memory_bytes"],
            c.container_memory_bytes()
        );
        // Every size and duration is converted: no string left that reads as one.
        fn strings(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
            match v {
                serde_json::Value::String(s) => out.push((path, s.clone())),
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        strings(v, format!("{path}.{k}"), out);
                    }
                }
                _ => {}
            }
        }
        let mut found = Vec::new();
        strings(&v, String::new(), &mut found);
        for (path, s) in found {
            assert!(
                parse_size(&s).is_err() && parse_duration(&s).is_err(),
                "{path} = {s:?} is still a string in --json"
            );
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("lots").is_err());
        assert_eq!(format_size(256 << 20), "256MiB");
    }
}

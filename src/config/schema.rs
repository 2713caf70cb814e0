//! The config's sections: one struct per `[section]` of `config/ddbcache.toml`, each key a field
//! with its doc, its unit (`units::duration`, `units::size`, or their `positive_` forms, which
//! validation holds to more than zero) and, in the section's `Default`, its default. Nothing else
//! names a key's unit or rule: rendering and validation follow these declarations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::units;

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
    /// Endpoint of Kinesis Data Streams calls, for `[streams] source = "kinesis"` (`{region}` as
    /// in `endpoint`). When absent: https://kinesis.{region}.amazonaws.com.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kinesis_endpoint: Option<String>,
    /// The region of a request whose signature names none (or an invalid one), and of every
    /// request when `pin_region` is set or the endpoint is one fixed URL that ddbcache signs for.
    pub region: String,
    /// Send and sign every request for `region`, whatever region its client signed for: for
    /// engines that keep one set of tables whatever the region (dynalite, DynamoDB Local).
    pub pin_region: bool,
    /// Re-sign requests with SigV4 using the standard AWS credential chain.
    pub sign: bool,
    /// Time allowed to open a connection to the upstream (old spelling: `connect_timeout_ms`, in
    /// whole milliseconds).
    #[serde(with = "units::positive_duration")]
    pub connect_timeout: Duration,
    /// How long a request may take upstream, counted from its admission (a miss waiting for
    /// another request's answer to the same key counts its wait); past it the client gets a
    /// retryable 503. Unset (the default), ddbcache sets no limit of its own: a request waits as
    /// long as its client does, and a client that hangs up ends its read. A write cut short by it
    /// is still seen through, but its client's SDK sends it again while the first attempt may
    /// still land: an `UpdateItem` `ADD` can be applied twice. (Old spelling: `timeout_ms`, in
    /// whole milliseconds.)
    #[serde(
        with = "units::opt_positive_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// How long ddbcache goes on waiting for an upstream answer that no client waits for any
    /// more: a write whose client hung up (or got its 503 at `timeout`), and ddbcache's own calls
    /// (`DescribeTable`, stream reads, the readiness probe at most).
    #[serde(with = "units::positive_duration")]
    pub backstop: Duration,
    /// Idle keep-alive connections kept per upstream host.
    pub max_idle_per_host: usize,
    /// Without `endpoint`: whether DynamoDB requests go to the account-based endpoint
    /// `https://{account}.ddb.{region}.amazonaws.com`, as the AWS SDKs send them since late 2024.
    /// `preferred`: when the account is known; `disabled`: never; `required`: always, and a request
    /// whose account is unknown fails. Unset: as the SDKs decide (`AWS_ACCOUNT_ID_ENDPOINT_MODE`,
    /// or the profile's `account_id_endpoint_mode`), else `preferred`. Never with `endpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_endpoints: Option<AccountEndpoints>,
    /// The AWS account (12 digits) of account-based endpoints, for credentials that do not carry
    /// one (those from `AWS_ACCOUNT_ID`, a profile's `aws_account_id`, SSO and assumed roles such
    /// as IRSA do, and win).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// Failures in a row of one endpoint's calls that open its circuit breaker: no connection,
    /// a connection lost, a call given up at `timeout` or `backstop`, a call whose client hung up
    /// after waiting `breaker_hang_up` for it, a 5xx answer (throttling is an answer, not a
    /// failure). While open, calls to the endpoint are answered a retryable 503 at once, for
    /// `breaker_open`; then one probe call goes through, and its outcome closes the breaker or
    /// opens it again. 0 (the default): no breaker.
    pub breaker_failures: u32,
    /// How long an open breaker answers at once before it lets one probe call through.
    #[serde(with = "units::positive_duration")]
    pub breaker_open: Duration,
    /// A call whose client hung up after waiting this long for it, unanswered, counts as a
    /// failure of its endpoint: with no `timeout`, a hung upstream fails no call by itself, its
    /// clients give up on it.
    #[serde(with = "units::duration")]
    pub breaker_hang_up: Duration,
}

/// `upstream.account_endpoints`: the SDKs' `AWS_ACCOUNT_ID_ENDPOINT_MODE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountEndpoints {
    /// The account's endpoint when the account is known, else the regional one.
    #[default]
    Preferred,
    /// Always the regional endpoint.
    Disabled,
    /// Always the account's endpoint: without a known account, requests fail.
    Required,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            streams_endpoint: None,
            kinesis_endpoint: None,
            region: "us-east-1".into(),
            pin_region: false,
            sign: true,
            connect_timeout: Duration::from_secs(1),
            timeout: None,
            backstop: Duration::from_secs(60),
            max_idle_per_host: 64,
            account_endpoints: None,
            account_id: None,
            breaker_failures: 0,
            breaker_open: Duration::from_secs(10),
            breaker_hang_up: Duration::from_secs(1),
        }
    }
}

impl UpstreamConfig {
    /// Where requests go, `{region}` standing for the request's region; `None`: AWS's endpoints.
    pub fn endpoint_template(&self) -> Option<String> {
        self.endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/').to_string())
    }

    /// Where DynamoDB Streams requests go, `{region}` standing for the request's region; `None`:
    /// AWS's endpoints.
    pub fn streams_endpoint_template(&self) -> Option<String> {
        match &self.streams_endpoint {
            Some(e) => Some(e.trim_end_matches('/').to_string()),
            None => self.endpoint_template(),
        }
    }

    /// Where Kinesis Data Streams calls go, `{region}` standing for the region; `None`: AWS's.
    pub fn kinesis_endpoint_template(&self) -> Option<String> {
        self.kinesis_endpoint
            .as_deref()
            .map(|e| e.trim_end_matches('/').to_string())
    }

    /// The endpoint URL of requests of `region` (the configured one), the account-based one
    /// aside.
    pub fn endpoint_url(&self) -> String {
        url_for(self.endpoint_template(), "dynamodb", &self.region)
    }

    /// The endpoint URL of DynamoDB Streams requests of `region` (the configured one).
    pub fn streams_endpoint_url(&self) -> String {
        url_for(
            self.streams_endpoint_template(),
            "streams.dynamodb",
            &self.region,
        )
    }

    /// The endpoint URL of Kinesis Data Streams calls of `region` (the configured one).
    pub fn kinesis_endpoint_url(&self) -> String {
        url_for(self.kinesis_endpoint_template(), "kinesis", &self.region)
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

/// A configured URL filled in for `region`, or AWS's endpoint of `service` there.
fn url_for(template: Option<String>, service: &str, region: &str) -> String {
    match template {
        Some(t) => t.replace(REGION_PLACEHOLDER, region),
        None => crate::protocol::region::partition_of(region).endpoint(service, region),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Request bodies larger than this are answered with 413.
    #[serde(with = "units::positive_size")]
    pub max_body_bytes: u64,
    /// How long in-flight requests may run after SIGTERM before the process exits anyway.
    #[serde(with = "units::duration")]
    pub shutdown_grace: Duration,
    /// Runtime worker threads; 0: as many as the CPUs the process may use (cgroup quotas count).
    pub worker_threads: usize,
    /// Open connections per port; further clients wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections the kernel queues per port, handshake done, until they are accepted (capped
    /// by the kernel's `net.core.somaxconn`).
    pub listen_backlog: u32,
    /// Time a client has to send a request's headers, from its first byte.
    #[serde(with = "units::positive_duration")]
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body, once its headers arrived.
    #[serde(with = "units::positive_duration")]
    pub body_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is closed.
    #[serde(with = "units::positive_duration")]
    pub idle_timeout: Duration,
    /// Request body bytes buffered at once across all requests.
    #[serde(with = "units::size")]
    pub max_buffered_bytes: u64,
    /// How long a request waits for room within `max_buffered_bytes` before a retryable 503.
    #[serde(with = "units::duration")]
    pub buffer_wait: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            worker_threads: 0,
            max_connections: 1024,
            listen_backlog: 4096,
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
    #[serde(with = "units::positive_duration")]
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
    #[serde(with = "units::duration")]
    pub consistency_window: Duration,
    /// After a write whose outcome is unknown (no answer, or a 5xx), misses on what it touched are
    /// not stored for this long: it may still land. Default: `upstream.backstop`.
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub in_doubt_window: Option<Duration>,
    /// How stored bodies are kept: `none`, or `lz4` (more entries per byte, a decompression per
    /// hit).
    pub compression: Compression,
    /// How long past its TTL an entry may still answer a read that DynamoDB fails (a 5xx, no
    /// answer, throttling, the circuit breaker open), marked as stale; `0s` (the default): never.
    /// Only expiry makes an entry stale-servable: one a write, a stream record or a control-plane
    /// call ended never is.
    #[serde(with = "units::duration")]
    pub stale_if_error: Duration,
    /// A hit on an entry in the last part of its TTL (this fraction of it: 0.2 is the last fifth)
    /// refreshes it in the background, so a hot key never takes the miss; `0` (the default): never.
    pub refresh_ahead: f64,
    /// At most this many background refreshes start per second (each is an upstream read).
    pub refresh_budget: u32,
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
            stale_if_error: Duration::ZERO,
            refresh_ahead: 0.0,
            refresh_budget: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ItemCacheConfig {
    #[serde(with = "units::duration")]
    pub ttl: Duration,
    /// TTL of "no such item" answers.
    #[serde(with = "units::duration")]
    pub negative_ttl: Duration,
    #[serde(with = "units::size")]
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
    #[serde(with = "units::duration")]
    pub ttl: Duration,
    #[serde(with = "units::size")]
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
    /// PEM certificates to trust for a `rediss://` URL instead of the Mozilla roots (a private
    /// CA's, as a Kubernetes Secret would mount it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Namespace of the bus channel and of the stream leases: fleets sharing one Redis differ here.
    pub channel: String,
    /// How long a write waits for its invalidation to be published before it is answered anyway
    /// (the message is then retried from a queue, and this sidecar serves no hits until it went).
    #[serde(with = "units::positive_duration")]
    pub publish_timeout: Duration,
    /// Messages the retry queue holds; past it they collapse into one "invalidate everything".
    pub publish_queue: usize,
    /// How often the subscription connection is pinged to detect a dead link.
    #[serde(with = "units::positive_duration")]
    pub ping_interval: Duration,
    /// A ping (or a connection attempt) not answered within this marks the link down.
    #[serde(with = "units::positive_duration")]
    pub ping_timeout: Duration,
    /// The shared second tier: entries kept in the fleet's Redis for every sidecar.
    pub shared: SharedConfig,
}

/// `[fleet.shared]`: a second tier of entries in the fleet's Redis, behind each sidecar's own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedConfig {
    /// Keep entries in Redis for the whole fleet (needs `fleet.redis_url` and the cache).
    pub enabled: bool,
    /// How long a read waits for one answer of the shared tier before it goes upstream.
    #[serde(with = "units::positive_duration")]
    pub timeout: Duration,
    /// How long a sidecar that finds another's fill lease on a missing entry waits for that fill
    /// before reading upstream itself (`0s`: it does not wait).
    #[serde(with = "units::duration")]
    pub lease_wait: Duration,
    /// How long a fill lease lasts when its holder never fills (it died, or its read failed).
    #[serde(with = "units::positive_duration")]
    pub lease_ttl: Duration,
    /// `bus`: a sidecar's own hits are current within the bus lag. `strict`: every hit is
    /// confirmed against the versions in Redis first, in one round trip.
    pub consistency: Consistency,
    /// A file holding a 32-byte key (raw, 64 hex digits, or base64): entries are sealed with it
    /// and refused when they do not open, and keys in Redis are keyed hashes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<std::path::PathBuf>,
}

/// How current a sidecar's own hits are, with the shared tier on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Current within the bus lag (about 2 ms): a peer's write reaches this sidecar as a message.
    #[default]
    Bus,
    /// Every hit is confirmed against the versions in Redis: no window at all, a round trip per
    /// hit.
    Strict,
}

impl Default for SharedConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            timeout: Duration::from_millis(5),
            lease_wait: Duration::from_millis(100),
            lease_ttl: Duration::from_secs(2),
            consistency: Consistency::Bus,
            key_file: None,
        }
    }
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_ca_file: None,
            channel: "ddbcache".into(),
            publish_timeout: Duration::from_millis(50),
            publish_queue: 1024,
            ping_interval: Duration::from_secs(1),
            ping_timeout: Duration::from_secs(1),
            shared: SharedConfig::default(),
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

/// Which change stream `[streams]` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSource {
    /// The table's DynamoDB Stream.
    #[default]
    Dynamodb,
    /// The Kinesis data stream the table streams its changes to (Kinesis Data Streams for
    /// DynamoDB).
    Kinesis,
}

/// `[streams]`: the tables' change streams, read to invalidate what was written around every
/// sidecar.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamsConfig {
    /// `["orders", ...]`, or `"*"` for every table ddbcache has seen. Empty: no stream is read.
    pub tables: StreamTables,
    /// `dynamodb`: the tables' DynamoDB Streams; `kinesis`: the Kinesis data streams they stream
    /// their changes to.
    pub source: StreamSource,
    /// With `source = "kinesis"`: the Kinesis data stream (name or ARN) of a table, by table name.
    /// A table not named here is asked for its active destination
    /// (DescribeKinesisStreamingDestination).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub kinesis_streams: BTreeMap<String, String>,
    /// Longest wait between two GetRecords on a shard that had nothing new (the wait doubles from
    /// 50ms up to this while a shard stays empty).
    #[serde(with = "units::positive_duration")]
    pub poll_interval: Duration,
    /// With `[fleet]`: how long a sidecar's lease on a table's stream lasts without renewal, and so
    /// how long the others wait before taking over from one that died.
    #[serde(with = "units::duration")]
    pub lease_ttl: Duration,
    /// How often the stream's shards are listed again (new shards, a re-enabled stream).
    #[serde(with = "units::positive_duration")]
    pub describe_interval: Duration,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            tables: StreamTables::None,
            source: StreamSource::Dynamodb,
            kinesis_streams: BTreeMap::new(),
            poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(10),
            describe_interval: Duration::from_secs(30),
        }
    }
}

/// `[aliases]`: the name applications use for a table → the table that serves it, as
/// `alias = "table"` (in every region) or `"region/alias" = "table"` (in that region only). As an
/// environment variable: `alias=table,region/alias=table`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct TableAliases(pub BTreeMap<String, String>);

impl TableAliases {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each alias as `(region, alias, table)` (no region: every region), or what is wrong with
    /// one.
    pub fn entries(&self) -> Result<Vec<(Option<String>, String, String)>, String> {
        self.0
            .iter()
            .map(|(key, table)| {
                let (region, alias) = parse_alias_key(key)?;
                if !is_table_name(table) {
                    return Err(format!(
                        "`{table}` (the table of `{key}`) is not a table name"
                    ));
                }
                Ok((region, alias, table.clone()))
            })
            .collect()
    }
}

/// `alias` or `region/alias`.
pub fn parse_alias_key(key: &str) -> Result<(Option<String>, String), String> {
    let (region, alias) = match key.split_once('/') {
        Some((region, alias)) => {
            if crate::protocol::region::Region::parse(region).is_none() {
                return Err(format!("`{region}` (in `{key}`) is not a region name"));
            }
            (Some(region.to_string()), alias)
        }
        None => (None, key),
    };
    if !is_table_name(alias) {
        return Err(format!("`{alias}` is not a table name"));
    }
    Ok((region, alias.to_string()))
}

/// A name DynamoDB allows for a table: 1 to 255 letters, digits, `_`, `-` and `.` (what an
/// alias may be too, so that it can stand wherever a table name does).
pub fn is_table_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl<'de> Deserialize<'de> for TableAliases {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Map(BTreeMap<String, String>),
            List(String),
        }
        match Raw::deserialize(d)? {
            Raw::Map(map) => Ok(TableAliases(map)),
            Raw::List(list) => list
                .split(',')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .map(|pair| match pair.split_once('=') {
                    Some((alias, table)) => {
                        Ok((alias.trim().to_string(), table.trim().to_string()))
                    }
                    None => Err(serde::de::Error::custom(format!(
                        "`{pair}` is not alias=table"
                    ))),
                })
                .collect::<Result<_, _>>()
                .map(TableAliases),
        }
    }
}

/// Per-table settings. TTLs: an absent key inherits the cache's, `0s` turns that cache off for
/// the table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TableOverrides {
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub item_ttl: Option<Duration>,
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub negative_ttl: Option<Duration>,
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub query_ttl: Option<Duration>,
    /// `cache.stale_if_error` for this table.
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub stale_if_error: Option<Duration>,
    /// `cache.refresh_ahead` for this table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_ahead: Option<f64>,
    /// While the breaker of the table's own region is open, send its eventually consistent reads
    /// (GetItem, BatchGetItem, Query, Scan) to a replica region, signed for it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub failover: bool,
    /// The table's replica regions, in order of preference. Empty: those its DescribeTable lists.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<String>,
    /// Store answers read from a replica region like any other (off: a replica may lag behind
    /// the table's own region by an unbounded time).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub store_failover: bool,
}

#[cfg(test)]
mod tests {
    use super::super::Config;
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
        let c = Config::from_toml("[streams]\ntables = [\"orders\"]\n").unwrap();
        assert_eq!(c.streams.tables, StreamTables::Named(vec!["orders".into()]));
        assert_eq!(c.streams.source, StreamSource::Dynamodb);
        let c = Config::from_toml(
            "[streams]\nsource = \"kinesis\"\n[streams.kinesis_streams]\norders = \"cdc\"\n",
        )
        .unwrap();
        assert_eq!(c.streams.source, StreamSource::Kinesis);
        assert_eq!(c.streams.kinesis_streams["orders"], "cdc");
        assert!(c.to_toml().contains("[streams.kinesis_streams]"));
        assert!(!Config::default().fleet.enabled());
        let mut bad = Config::default();
        bad.fleet.redis_url = Some("http://r:6379".into());
        assert!(bad.validate().is_err());
        assert_eq!(redacted_url("rediss://:pw@h:6380"), "rediss://:****@h:6380");
    }

    #[test]
    fn account_endpoints_and_account_ids() {
        let c = Config::from_toml(
            "[upstream]\naccount_endpoints = \"required\"\naccount_id = \"111122223333\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.upstream.account_endpoints,
            Some(AccountEndpoints::Required)
        );
        assert!(c.to_toml().contains("account_endpoints = \"required\""));
        assert_eq!(Config::default().upstream.account_endpoints, None);
        for bad in ["11112222333", "1111222233334", "abcdefghijkl"] {
            let text = format!("[upstream]\naccount_id = \"{bad}\"\n");
            let err = Config::from_toml(&text).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains("upstream.account_id"), "{err}");
        }
        assert!(Config::from_toml("[upstream]\naccount_endpoints = \"always\"\n").is_err());
    }

    #[test]
    fn endpoints_follow_the_clients_region_unless_pinned_or_fixed_and_signed() {
        let mut u = UpstreamConfig::default();
        assert_eq!(u.endpoint_template(), None);
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
            u.streams_endpoint_template().as_deref(),
            Some("https://dynamodb.eu-west-1.amazonaws.com")
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
        u.endpoint = None;
        u.region = "cn-north-1".into();
        assert_eq!(
            u.streams_endpoint_url(),
            "https://streams.dynamodb.cn-north-1.amazonaws.com.cn"
        );
    }
}

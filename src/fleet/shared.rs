//! The shared tier: a second tier of entries in the fleet's Redis, behind every sidecar's own
//! cache (`cache::Tier`). A sidecar that misses asks Redis before it reads upstream, so N sidecars
//! are one cache, not N cold ones.
//!
//! Coherence follows "Scaling Memcache at Facebook" (NSDI 2013), with versions instead of deletes:
//! - **Versions.** Every entry depends on the same cells as an in-process entry — everything, its
//!   table, and its item's or partition's stripe (or its table's writes) — and Redis keeps a
//!   version for each (`{ns}:g`, `{ns}:e:<table>`, `{ns}:w:<table>`, `{ns}:s:<stripe>`), with the
//!   marks writes leave on it (recently written until, in doubt until). An entry is stored with
//!   the digest of its versions as they were when its read *started* (its stamp); a lookup
//!   returns it only while that digest is still current, and a fill stores only if it still is.
//! - **Invalidation before the answer.** A write's versions are changed, and its marks set, by
//!   the same script that publishes it on the bus (`change`), before the write is answered.
//! - **Versions never come back.** A version is not a counter but a random token, so a version
//!   key that Redis lost (a restart without persistence, `FLUSHALL`, eviction) and makes again
//!   never equals an old stamp: a missing version matches nothing. A Redis process that is not
//!   the one entries were stamped under (a restart that loaded an old snapshot, a failover to a
//!   replica that lagged) is recognised by its `run_id` on every new connection, and changes the
//!   global version; so does a sidecar whose link to the fleet was down (it may have written
//!   without reaching Redis) when it comes back.
//! - **Leases.** A lookup that misses takes the key's fill lease if it is free; a sidecar that
//!   finds it taken waits briefly for that fill instead of reading upstream too, so a cold key
//!   costs the fleet one upstream read.
//! - **Sealed entries.** With `fleet.shared.key_file`, entries are sealed (XChaCha20-Poly1305,
//!   bound to their key and stamp) and key names are keyed hashes: an entry altered or planted
//!   in Redis does not open and is refused, and no key names item data.
//!
//! Every call is one round trip, bounded by `fleet.shared.timeout`; past it (or with no
//! connection) the read goes on without the tier, and nothing is stored in it.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tracing::{info, warn};

use crate::cache::{
    Address, Dependency, Restrictions, SharedEntry, Tier, TierAnswer, TierFill, TierFuture,
};
use crate::config::{Compression, Config, Consistency};
use crate::metrics::Metrics;
use crate::protocol::table::TableId;
use crate::protocol::writes::WriteScope;
use crate::wait::{within, Backoff};

/// Stripes of items and partitions, as in the in-process generations: a write costs one version
/// key per item, and the fleet's version keys stay few.
const STRIPES: u16 = u16::MAX;

/// The entry format's version (the first byte after the stamp).
const FORMAT: u8 = 1;
const FLAG_COMPRESSED: u8 = 1;
const FLAG_SEALED: u8 = 2;

/// Bodies shorter than this are stored as they are.
const COMPRESS_FROM: usize = 64;

/// Reads the versions of an entry's three cells (making a missing one with a fresh token), the
/// marks on them, and the entry; returns it while its stamp is current, and otherwise the stamp a
/// fill must match and, when asked, takes the key's fill lease.
/// KEYS: entry, lease, global, table epoch, scope. ARGV: fresh token, take lease (0/1), lease
/// token, lease ttl (ms).
const LOOKUP: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local vs, recent, doubt = {}, 0, 0
for i = 3, 5 do
  local h = redis.call('HMGET', KEYS[i], 'v', 'r', 'd')
  local v = h[1]
  if not v then
    v = ARGV[1] .. ':' .. i
    redis.call('HSET', KEYS[i], 'v', v)
  end
  vs[#vs + 1] = v
  if h[2] and tonumber(h[2]) > now then recent = 1 end
  if h[3] and tonumber(h[3]) > now then doubt = 1 end
end
local stamp = string.sub(redis.sha1hex(table.concat(vs, '|')), 1, 16)
local e = redis.call('GET', KEYS[1])
if e and string.sub(e, 1, 16) == stamp then
  return {1, stamp, recent, doubt, e, redis.call('PTTL', KEYS[1])}
end
local lease = 0
if ARGV[2] == '1' then
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then lease = 1 else lease = 2 end
end
return {0, stamp, recent, doubt, lease}
"#;

/// Stores an entry if its stamp is still current, nothing it depends on is in doubt, and it was
/// not written recently unless the read was consistent; gives up the lease either way.
/// KEYS: entry, lease, global, table epoch, scope. ARGV: stamp, value, ttl (ms), consistent
/// (0/1), lease token ('' when none).
const FILL: &str = r#"
local function release()
  if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local vs, recent, doubt = {}, false, false
for i = 3, 5 do
  local h = redis.call('HMGET', KEYS[i], 'v', 'r', 'd')
  if not h[1] then release() return 'gone' end
  vs[#vs + 1] = h[1]
  if h[2] and tonumber(h[2]) > now then recent = true end
  if h[3] and tonumber(h[3]) > now then doubt = true end
end
if string.sub(redis.sha1hex(table.concat(vs, '|')), 1, 16) ~= ARGV[1] then release() return 'raced' end
if doubt then release() return 'in_doubt' end
if recent and ARGV[4] ~= '1' then release() return 'recent' end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
release()
return 'stored'
"#;

/// Whether the versions of three cells still digest to a stamp. KEYS: global, table epoch,
/// scope. ARGV: stamp.
const CONFIRM: &str = r#"
local vs = {}
for i = 1, 3 do
  local v = redis.call('HGET', KEYS[i], 'v')
  if not v then return 0 end
  vs[#vs + 1] = v
end
if string.sub(redis.sha1hex(table.concat(vs, '|')), 1, 16) == ARGV[1] then return 1 end
return 0
"#;

/// A write, a control-plane call or a stream record: new tokens for the versions of what it
/// changed, its marks on them, then its message on the bus — one round trip, before the write
/// is answered. KEYS: the version keys. ARGV: fresh token, recent (ms), doubt (ms, 0: none),
/// channel, message ('' for none).
const CHANGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local recent, doubt = tonumber(ARGV[2]), tonumber(ARGV[3])
for i, k in ipairs(KEYS) do
  redis.call('HSET', k, 'v', ARGV[1] .. ':' .. i)
  if recent > 0 then
    local r = tonumber(redis.call('HGET', k, 'r') or '0')
    if now + recent > r then redis.call('HSET', k, 'r', now + recent) end
  end
  if doubt > 0 then
    local d = tonumber(redis.call('HGET', k, 'd') or '0')
    if now + doubt > d then redis.call('HSET', k, 'd', now + doubt) end
  end
end
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return #KEYS
"#;

/// On a new connection: when the Redis process is not the one the fleet's versions were
/// written under (a restart, a failover), the global version changes. KEYS: run id key, global.
/// ARGV: this process's run id, fresh token.
const INCARNATION: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'v', ARGV[2])
return 1
"#;

/// Gives up a fill lease this sidecar holds. KEYS: lease. ARGV: token.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// The scripts, by name, as loaded on the current connection.
#[derive(Clone, Default)]
struct Shas {
    lookup: String,
    fill: String,
    confirm: String,
    change: String,
    release: String,
}

/// A connection and the scripts loaded on it.
#[derive(Clone)]
struct Link {
    conn: MultiplexedConnection,
    shas: Shas,
}

/// The shared tier's handle: cheap to clone.
#[derive(Clone)]
pub(crate) struct SharedTier {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    /// The current connection, kept by [`SharedTier::run`]; `None` while there is none.
    link: RwLock<Option<Link>>,
    names: Names,
    seal: Option<XChaCha20Poly1305>,
    compress: bool,
    timeout: Duration,
    lease_wait: Duration,
    lease_ttl: Duration,
    strict: bool,
    /// The marks a change leaves: recently written for the consistency window, in doubt for the
    /// in-doubt window.
    recent: Duration,
    doubt: Duration,
    /// The bus channel a change's message goes to.
    channel: String,
    metrics: Arc<Metrics>,
}

/// Why a shared-tier call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedError {
    #[error("no connection to redis")]
    NoConnection,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("an answer of an unexpected shape")]
    Shape,
}

impl From<crate::wait::TimedOut> for SharedError {
    fn from(t: crate::wait::TimedOut) -> Self {
        SharedError::Timeout(t.0)
    }
}

impl SharedTier {
    /// The shared tier of `config.fleet`, when it is on.
    pub(crate) fn new(
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> anyhow::Result<Option<SharedTier>> {
        let fleet = &config.fleet;
        if !fleet.shared.enabled || fleet.redis_url.is_none() {
            return Ok(None);
        }
        let secret = match &fleet.shared.key_file {
            Some(path) => Some(read_key(path)?),
            None => None,
        };
        let seal = secret.as_ref().map(|s| {
            XChaCha20Poly1305::new(&blake3::derive_key("ddbcache shared tier sealing", s).into())
        });
        let names = Names {
            ns: format!("{{{}}}", fleet.channel),
            key: match &secret {
                Some(s) => blake3::derive_key("ddbcache shared tier names", s),
                None => blake3::derive_key("ddbcache shared tier names", b"no key"),
            },
        };
        metrics.shared.up.set(0);
        Ok(Some(SharedTier {
            inner: Arc::new(Inner {
                client: super::redis_client(fleet)?,
                link: RwLock::new(None),
                names,
                seal,
                compress: config.cache.compression == Compression::Lz4,
                timeout: fleet.shared.timeout,
                lease_wait: fleet.shared.lease_wait,
                lease_ttl: fleet.shared.lease_ttl,
                strict: fleet.shared.consistency == Consistency::Strict,
                recent: config.cache.consistency_window,
                doubt: config.in_doubt_window(),
                channel: format!("{}:invalidations", fleet.channel),
                metrics: metrics.clone(),
            }),
        }))
    }

    /// Keeps a connection: connect, check which Redis process it is, load the scripts, then
    /// ping it until it fails; then start again. Runs until the server stops.
    pub(crate) async fn run(self) {
        let inner = &self.inner;
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let link = match self.connect().await {
                Ok(link) => link,
                Err(e) => {
                    warn!(error = %e, "shared tier: cannot connect; reads go upstream");
                    backoff.wait().await;
                    continue;
                }
            };
            backoff.reset();
            *inner.link.write() = Some(link.clone());
            inner.metrics.shared.up.set(1);
            info!("shared tier: connected");
            loop {
                tick.tick().await;
                let mut conn = link.conn.clone();
                let ping = redis::cmd("PING");
                let answered = within(
                    inner.timeout.max(Duration::from_secs(1)),
                    ping.query_async::<Value>(&mut conn),
                )
                .await;
                if !matches!(answered, Ok(Ok(_))) {
                    break;
                }
                if inner.link.read().is_none() {
                    // A call saw the connection fail.
                    break;
                }
            }
            *inner.link.write() = None;
            inner.metrics.shared.up.set(0);
            warn!("shared tier: connection lost; reads go upstream until it is back");
        }
    }

    async fn connect(&self) -> Result<Link, SharedError> {
        let inner = &self.inner;
        let limit = inner.timeout.max(Duration::from_secs(1));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(limit))
            .set_response_timeout(Some(limit));
        let mut conn = within(
            limit,
            inner
                .client
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await??;
        let load = |script: &'static str| {
            let mut conn = conn.clone();
            async move {
                within(
                    limit,
                    redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(script)
                        .query_async::<String>(&mut conn),
                )
                .await?
                .map_err(SharedError::from)
            }
        };
        let shas = Shas {
            lookup: load(LOOKUP).await?,
            fill: load(FILL).await?,
            confirm: load(CONFIRM).await?,
            change: load(CHANGE).await?,
            release: load(RELEASE).await?,
        };
        // Which Redis process this is: entries stamped under another one may be older than what
        // its data now says (a restart from a snapshot, a failover to a replica that lagged).
        let server: String = within(
            limit,
            redis::cmd("INFO").arg("server").query_async(&mut conn),
        )
        .await??;
        let run_id = server
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(str::trim)
            .ok_or(SharedError::Shape)?
            .to_string();
        let changed: i64 = within(
            limit,
            redis::cmd("EVAL")
                .arg(INCARNATION)
                .arg(2)
                .arg(inner.names.run())
                .arg(inner.names.global())
                .arg(&run_id)
                .arg(token())
                .query_async(&mut conn),
        )
        .await??;
        if changed == 1 {
            info!(run_id, "shared tier: a Redis process the fleet had not stamped under; every shared entry before it is dead");
        }
        Ok(Link { conn, shas })
    }

    fn link(&self) -> Result<Link, SharedError> {
        self.inner
            .link
            .read()
            .clone()
            .ok_or(SharedError::NoConnection)
    }

    /// Runs a pipeline within the tier's time budget; a failed connection is dropped for the
    /// keeper to replace.
    async fn query(
        &self,
        limit: Duration,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, SharedError> {
        let started = Instant::now();
        let mut link = self.link()?;
        let result = within(limit, pipe.query_async::<Vec<Value>>(&mut link.conn)).await;
        self.inner
            .metrics
            .shared
            .duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(Ok(values)) => Ok(values),
            Ok(Err(e)) => {
                let no_script =
                    e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript);
                if e.is_unrecoverable_error() || no_script {
                    *self.inner.link.write() = None;
                }
                Err(e.into())
            }
            Err(t) => Err(t.into()),
        }
    }

    /// A change's new versions and marks, and its bus message, in one round trip (the bus's
    /// publish when the shared tier is on). `limit`: how long the caller waits.
    pub(crate) async fn change(
        &self,
        scope: &WriteScope,
        message: &[u8],
        limit: Duration,
    ) -> Result<(), SharedError> {
        let link = self.link()?;
        let inner = &self.inner;
        let keys = inner.names.changed(scope);
        let mut pipe = redis::pipe();
        pipe.cmd("EVALSHA")
            .arg(&link.shas.change)
            .arg(keys.len())
            .arg(&keys)
            .arg(token())
            .arg(inner.recent.as_millis() as u64)
            .arg(if scope.in_doubt {
                inner.doubt.as_millis() as u64
            } else {
                0
            })
            .arg(&inner.channel)
            .arg(message);
        self.query(limit, &pipe).await.map(drop)
    }

    /// Changes the global version: every shared entry before now is dead. A sidecar whose link
    /// was down does this when it is back, before it serves again: it may have acknowledged
    /// writes whose invalidation never reached Redis.
    pub(crate) async fn resync(&self, limit: Duration) -> Result<(), SharedError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(self.inner.names.global())
            .arg("v")
            .arg(token());
        self.query(limit, &pipe).await.map(drop)
    }

    fn count_lookup(&self, outcome: &str) {
        self.inner
            .metrics
            .shared
            .lookups
            .with_label_values(&[outcome])
            .inc();
    }

    /// What a lookup script's answer for one key means.
    fn answer(&self, at: &Address<'_>, keys: KeyNames, lease: &str, value: Value) -> TierAnswer {
        let Some(reply) = Reply::parse(value) else {
            self.count_lookup("error");
            return TierAnswer::Unavailable;
        };
        let restrictions = Restrictions {
            recently_written: reply.recent,
            in_doubt: reply.doubt,
        };
        if let Some((value, pttl)) = reply.entry {
            match self.inner.open(&keys.digest, &reply.stamp, &value) {
                Some((body, item)) => {
                    self.count_lookup("hit");
                    return TierAnswer::Hit(SharedEntry {
                        body,
                        item,
                        ttl: Duration::from_millis(pttl.max(0) as u64),
                        stamp: stamp_number(&reply.stamp),
                    });
                }
                None => {
                    self.count_lookup("refused");
                    warn!(
                        cache = at.kind.label(),
                        "shared tier: an entry that does not open or match its key; refused"
                    );
                }
            }
        } else {
            self.count_lookup("miss");
        }
        TierAnswer::Miss {
            restrictions,
            leased_elsewhere: reply.lease == 2,
            fill: Box::new(SharedFill {
                tier: self.clone(),
                keys,
                stamp: reply.stamp,
                lease: (reply.lease == 1).then(|| lease.to_string()),
            }),
        }
    }
}

impl Tier for SharedTier {
    fn lookup<'a>(&'a self, at: &'a [Address<'a>], lease: bool) -> TierFuture<'a, Vec<TierAnswer>> {
        Box::pin(async move {
            let Ok(link) = self.link() else {
                for _ in at {
                    self.count_lookup("error");
                }
                return at.iter().map(|_| TierAnswer::Unavailable).collect();
            };
            let inner = &self.inner;
            let fresh = token();
            let lease_token = token();
            let keys: Vec<KeyNames> = at.iter().map(|a| inner.names.of(a)).collect();
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("EVALSHA")
                    .arg(&link.shas.lookup)
                    .arg(5)
                    .arg(&k.entry)
                    .arg(&k.lease)
                    .arg(&k.versions)
                    .arg(&fresh)
                    .arg(if lease { "1" } else { "0" })
                    .arg(&lease_token)
                    .arg(inner.lease_ttl.as_millis() as u64);
            }
            match self.query(inner.timeout, &pipe).await {
                Ok(values) if values.len() == at.len() => at
                    .iter()
                    .zip(keys)
                    .zip(values)
                    .map(|((a, k), v)| self.answer(a, k, &lease_token, v))
                    .collect(),
                Ok(_) | Err(_) => {
                    for _ in at {
                        self.count_lookup("error");
                    }
                    at.iter().map(|_| TierAnswer::Unavailable).collect()
                }
            }
        })
    }

    fn confirm<'a>(&'a self, at: Address<'a>, stamp: u64) -> TierFuture<'a, bool> {
        Box::pin(async move {
            let confirms = &self.inner.metrics.shared.confirms;
            let Ok(link) = self.link() else {
                confirms.with_label_values(&["error"]).inc();
                return false;
            };
            let keys = self.inner.names.of(&at);
            let mut pipe = redis::pipe();
            pipe.cmd("EVALSHA")
                .arg(&link.shas.confirm)
                .arg(3)
                .arg(&keys.versions)
                .arg(format!("{stamp:016x}"));
            match self.query(self.inner.timeout, &pipe).await.as_deref() {
                Ok([Value::Int(1)]) => {
                    confirms.with_label_values(&["current"]).inc();
                    true
                }
                Ok([Value::Int(_)]) => {
                    confirms.with_label_values(&["stale"]).inc();
                    false
                }
                _ => {
                    confirms.with_label_values(&["error"]).inc();
                    false
                }
            }
        })
    }

    fn lease_wait(&self) -> Duration {
        self.inner.lease_wait
    }

    fn strict(&self) -> bool {
        self.inner.strict
    }
}

/// The right to fill one shared entry.
struct SharedFill {
    tier: SharedTier,
    keys: KeyNames,
    stamp: String,
    /// The lease token, when this fill holds the key's lease.
    lease: Option<String>,
}

impl TierFill for SharedFill {
    fn stamp(&self) -> u64 {
        stamp_number(&self.stamp)
    }

    fn store(
        mut self: Box<Self>,
        body: Bytes,
        item: Option<Range<usize>>,
        ttl: Duration,
        consistent: bool,
    ) -> TierFuture<'static, ()> {
        let lease = self.lease.take().unwrap_or_default();
        let tier = self.tier.clone();
        let value = tier
            .inner
            .seal_entry(&self.keys.digest, &self.stamp, &body, item);
        let mut pipe = redis::pipe();
        let fills = tier.inner.metrics.shared.fills.clone();
        let Ok(link) = tier.link() else {
            return Box::pin(async move {
                fills.with_label_values(&["error"]).inc();
            });
        };
        pipe.cmd("EVALSHA")
            .arg(&link.shas.fill)
            .arg(5)
            .arg(&self.keys.entry)
            .arg(&self.keys.lease)
            .arg(&self.keys.versions)
            .arg(&self.stamp)
            .arg(value)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(if consistent { "1" } else { "0" })
            .arg(lease);
        Box::pin(async move {
            let outcome = match tier.query(tier.inner.timeout, &pipe).await.as_deref() {
                Ok([Value::BulkString(s)]) => String::from_utf8_lossy(s).into_owned(),
                Ok([Value::SimpleString(s)]) => s.clone(),
                _ => "error".to_string(),
            };
            let outcome = match outcome.as_str() {
                "stored" | "raced" | "in_doubt" | "recent" | "gone" => outcome.as_str(),
                _ => "error",
            };
            fills.with_label_values(&[outcome]).inc();
        })
    }
}

impl Drop for SharedFill {
    fn drop(&mut self) {
        // Not filled (the read failed, or its answer was not to be kept): let the next sidecar
        // take the lease now rather than when it expires.
        let Some(lease) = self.lease.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tier = self.tier.clone();
        let key = self.keys.lease.clone();
        handle.spawn(async move {
            let Ok(link) = tier.link() else { return };
            let mut pipe = redis::pipe();
            pipe.cmd("EVALSHA")
                .arg(&link.shas.release)
                .arg(1)
                .arg(key)
                .arg(lease);
            let _ = tier.query(tier.inner.timeout, &pipe).await;
        });
    }
}

/// A lookup script's answer for one key.
struct Reply {
    stamp: String,
    recent: bool,
    doubt: bool,
    /// The entry's value and milliseconds left, when it is current.
    entry: Option<(Vec<u8>, i64)>,
    /// 0: not asked; 1: taken; 2: another sidecar holds it.
    lease: i64,
}

impl Reply {
    fn parse(value: Value) -> Option<Reply> {
        let Value::Array(parts) = value else {
            return None;
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let found = int(parts.first()?)? == 1;
        let stamp = text(parts.get(1)?)?;
        let recent = int(parts.get(2)?)? == 1;
        let doubt = int(parts.get(3)?)? == 1;
        if found {
            let Value::BulkString(value) = parts.get(4)? else {
                return None;
            };
            return Some(Reply {
                stamp,
                recent,
                doubt,
                entry: Some((value.clone(), int(parts.get(5)?)?)),
                lease: 0,
            });
        }
        Some(Reply {
            stamp,
            recent,
            doubt,
            entry: None,
            lease: int(parts.get(4)?)?,
        })
    }
}

impl Inner {
    /// An entry's value: its stamp, then the format, flags and (sealed, when there is a key) the
    /// key's digest, the item's place, the body's checksum and the body.
    fn seal_entry(
        &self,
        digest: &[u8; 32],
        stamp: &str,
        body: &[u8],
        item: Option<Range<usize>>,
    ) -> Vec<u8> {
        let mut flags = 0;
        let compressed = (self.compress && body.len() >= COMPRESS_FROM)
            .then(|| lz4_flex::block::compress_prepend_size(body))
            .filter(|c| c.len() < body.len());
        let stored: &[u8] = match &compressed {
            Some(c) => {
                flags |= FLAG_COMPRESSED;
                c
            }
            None => body,
        };
        let (start, end) = item.map_or((0, 0), |r| (r.start as u32, r.end as u32));
        let mut plain = Vec::with_capacity(32 + 12 + stored.len());
        plain.extend_from_slice(digest);
        plain.extend_from_slice(&start.to_le_bytes());
        plain.extend_from_slice(&end.to_le_bytes());
        plain.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        plain.extend_from_slice(stored);
        let mut out = Vec::with_capacity(16 + 2 + 24 + plain.len() + 16);
        out.extend_from_slice(stamp.as_bytes());
        out.push(FORMAT);
        match &self.seal {
            Some(cipher) => {
                out.push(flags | FLAG_SEALED);
                let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
                let aad = [stamp.as_bytes(), digest].concat();
                let sealed = cipher
                    .encrypt(
                        &nonce,
                        Payload {
                            msg: &plain,
                            aad: &aad,
                        },
                    )
                    .expect("sealing a buffer in memory does not fail");
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
            }
            None => {
                out.push(flags);
                out.extend_from_slice(&plain);
            }
        }
        out
    }

    /// The body and item of an entry's value, if it opens (sealed with this sidecar's key, when
    /// it has one), names the key it is stored under, and its body matches its checksum.
    fn open(
        &self,
        digest: &[u8; 32],
        stamp: &str,
        value: &[u8],
    ) -> Option<(Bytes, Option<Range<usize>>)> {
        let rest = value.strip_prefix(stamp.as_bytes())?;
        let (&format, rest) = rest.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        if format != FORMAT {
            return None;
        }
        let opened;
        let plain: &[u8] = match (&self.seal, flags & FLAG_SEALED != 0) {
            (Some(cipher), true) => {
                if rest.len() < 24 {
                    return None;
                }
                let (nonce, sealed) = rest.split_at(24);
                let aad = [stamp.as_bytes(), digest].concat();
                opened = cipher
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: sealed,
                            aad: &aad,
                        },
                    )
                    .ok()?;
                &opened
            }
            (None, false) => rest,
            // Sealed where this sidecar has no key, or plain where it has one: not ours.
            _ => return None,
        };
        if plain.len() < 44 || plain[..32] != digest[..] {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes(plain[at..at + 4].try_into().expect("4 bytes"));
        let (start, end, crc) = (word(32) as usize, word(36) as usize, word(40));
        let stored = &plain[44..];
        let body = if flags & FLAG_COMPRESSED != 0 {
            lz4_flex::block::decompress_size_prepended(stored).ok()?
        } else {
            stored.to_vec()
        };
        if crc32fast::hash(&body) != crc {
            return None;
        }
        let item = match (start, end) {
            (0, 0) => None,
            (s, e) if s < e && e <= body.len() => Some(s..e),
            _ => return None,
        };
        Some((Bytes::from(body), item))
    }
}

/// The Redis key names of one entry, and the digest of its cache key.
struct KeyNames {
    entry: String,
    lease: String,
    /// Global, table epoch, scope.
    versions: [String; 3],
    digest: [u8; 32],
}

/// How keys are named in Redis: under one hash tag (`{channel}`, so that a script's keys are
/// in one slot of a cluster), hashed with a key of the fleet's (derived from the sealing key when
/// there is one), so that names carry no table names or item data.
struct Names {
    ns: String,
    key: [u8; 32],
}

impl Names {
    fn run(&self) -> String {
        format!("{}:run", self.ns)
    }

    fn global(&self) -> String {
        format!("{}:g", self.ns)
    }

    fn hash(&self, parts: &[&[u8]]) -> blake3::Hash {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            // Length-prefixed: no two sequences of parts hash alike.
            h.update(&(p.len() as u64).to_le_bytes());
            h.update(p);
        }
        h.finalize()
    }

    fn table(&self, kind: &str, table: &TableId) -> String {
        let h = self.hash(&[b"table", table.as_str().as_bytes()]);
        format!("{}:{kind}:{}", self.ns, &h.to_hex()[..16])
    }

    fn stripe(&self, of: &[u8], table: &TableId, key: &[u8]) -> String {
        let h = self.hash(&[of, table.as_str().as_bytes(), key]);
        let n = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]) % STRIPES;
        format!("{}:s:{n}", self.ns)
    }

    /// The names an entry at `at` is stored and versioned under.
    fn of(&self, at: &Address<'_>) -> KeyNames {
        let digest = *self.hash(&[b"entry", at.key.bytes()]).as_bytes();
        let hex = blake3::Hash::from(digest).to_hex();
        let scope = match at.dependency {
            Dependency::Item(key) => self.stripe(b"item", at.table, key),
            Dependency::Partition(p) => self.stripe(b"partition", at.table, p),
            Dependency::Table => self.table("w", at.table),
        };
        KeyNames {
            entry: format!("{}:d:{}", self.ns, &hex[..32]),
            lease: format!("{}:l:{}", self.ns, &hex[..32]),
            versions: [self.global(), self.table("e", at.table), scope],
            digest,
        }
    }

    /// The version keys a change changes: as the in-process generations bump for it.
    fn changed(&self, scope: &WriteScope) -> Vec<String> {
        let mut keys = Vec::new();
        if scope.everything {
            keys.push(self.global());
        }
        for item in &scope.items {
            keys.push(self.stripe(b"item", &item.table, &item.key));
            if let Some(p) = &item.partition {
                keys.push(self.stripe(b"partition", &item.table, p));
            }
            keys.push(self.table("w", &item.table));
        }
        for table in &scope.tables {
            keys.push(self.table("e", table));
            keys.push(self.table("w", table));
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }
}

/// A fresh random token (versions, leases).
fn token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A stamp (16 hex digits) as the number an in-process entry keeps.
fn stamp_number(stamp: &str) -> u64 {
    u64::from_str_radix(stamp, 16).unwrap_or(0)
}

/// Reads a 32-byte key: raw bytes, 64 hex digits, or base64.
fn read_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use base64::Engine as _;
    let raw = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("fleet.shared.key_file {}: {e}", path.display()))?;
    let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
    let key = if raw.len() == 32 {
        raw
    } else if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..32)
            .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits"))
            .collect()
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap_or_default()
    };
    if key.len() != 32 {
        anyhow::bail!(
            "fleet.shared.key_file {}: not a 32-byte key (raw, 64 hex digits, or base64)",
            path.display()
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKey;

    fn inner(seal: bool) -> Inner {
        let key = [7u8; 32];
        Inner {
            client: redis::Client::open("redis://127.0.0.1:1").unwrap(),
            link: RwLock::new(None),
            names: Names {
                ns: "{t}".into(),
                key,
            },
            seal: seal.then(|| XChaCha20Poly1305::new(&key.into())),
            compress: true,
            timeout: Duration::from_millis(5),
            lease_wait: Duration::ZERO,
            lease_ttl: Duration::from_secs(1),
            strict: false,
            recent: Duration::from_secs(1),
            doubt: Duration::from_secs(12),
            channel: "t:invalidations".into(),
            metrics: Arc::new(Metrics::new()),
        }
    }

    #[test]
    fn entries_open_only_with_their_key_stamp_and_digest() {
        let body = format!(r#"{{"Item":{{"pk":{{"S":"{}"}}}}}}"#, "x".repeat(200));
        let item = Some(8..body.len() - 1);
        for seal in [false, true] {
            let tier = inner(seal);
            let digest = [1u8; 32];
            let value = tier.seal_entry(&digest, "0123456789abcdef", body.as_bytes(), item.clone());
            let (opened, range) = tier.open(&digest, "0123456789abcdef", &value).unwrap();
            assert_eq!((&opened[..], range), (body.as_bytes(), item.clone()));
            // Another key's digest, another stamp, one flipped bit: refused.
            assert!(tier.open(&[2u8; 32], "0123456789abcdef", &value).is_none());
            assert!(tier.open(&digest, "fedcba9876543210", &value).is_none());
            let mut altered = value.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert!(tier.open(&digest, "0123456789abcdef", &altered).is_none());
            // Sealed entries do not open without the key, nor plain ones with it.
            assert!(inner(!seal)
                .open(&digest, "0123456789abcdef", &value)
                .is_none());
        }
        // With the key, the body is not in the value in plain text.
        let tier = inner(true);
        let value = tier.seal_entry(&[1u8; 32], "0123456789abcdef", body.as_bytes(), item);
        assert!(!value.windows(10).any(|w| w == b"xxxxxxxxxx"));
    }

    #[test]
    fn names_carry_no_table_or_key_and_changes_name_what_entries_depend_on() {
        let names = inner(true).names;
        let table = TableId::new("us-east-1", "orders");
        let key = CacheKey::item(&table, b"Spk\0customer-42", b"");
        let at = Address {
            kind: crate::cache::Kind::Item,
            table: &table,
            dependency: Dependency::Item(b"Spk\0customer-42"),
            key: &key,
        };
        let k = names.of(&at);
        for name in [&k.entry, &k.lease, &k.versions[1], &k.versions[2]] {
            assert!(name.starts_with("{t}:"), "{name}");
            assert!(
                !name.contains("orders") && !name.contains("customer"),
                "{name}"
            );
        }
        let scope = WriteScope {
            items: vec![crate::protocol::writes::ItemWrite {
                table: table.clone(),
                key: b"Spk\0customer-42".to_vec(),
                partition: None,
            }],
            ..Default::default()
        };
        let changed = names.changed(&scope);
        assert!(changed.contains(&k.versions[2]), "the item's stripe");
        assert!(!changed.contains(&k.versions[1]), "not the table's epoch");
        let whole = WriteScope {
            tables: vec![table],
            ..Default::default()
        };
        assert!(names.changed(&whole).contains(&k.versions[1]));
        assert_eq!(
            names.changed(&WriteScope::everything()),
            vec![k.versions[0].clone()]
        );
    }
}

//! Who reads a table's stream, and where it got to.
//!
//! DynamoDB serves at most two concurrent readers per stream shard, so a fleet must not have every
//! sidecar read. With `[fleet]`, one sidecar per table holds a lease in Redis (`SET NX PX`, renewed
//! at a third of its time) whose value is a fencing token: a sidecar whose lease ran out (a long
//! pause, a partition) can no longer write checkpoints, because each write checks the token in the
//! same script. Checkpoints (the last sequence number read per shard) live in Redis next to the
//! lease, so the sidecar that takes over resumes where the last one stopped instead of skipping
//! records. Without `[fleet]`, a single sidecar reads and keeps its checkpoints in memory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bus::Bus;
use crate::wait::{within, TimedOut};

/// A checkpoint value meaning "this shard was read to its end".
pub(crate) const END: &str = "END";
/// A checkpoint value meaning "started at LATEST, no record read yet": a later holder cannot know
/// where that was, so it reads the shard from its start.
pub(crate) const STARTED_AT_LATEST: &str = "LATEST";

/// Compare-and-renew: only the holder's token extends the lease.
const RENEW: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end";
/// Fenced checkpoint: written only while the lease still holds the writer's token.
const CHECKPOINT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then \
     redis.call('hset', KEYS[2], ARGV[2], ARGV[3]) return 1 else return 0 end";

#[derive(Debug, thiserror::Error)]
pub(crate) enum LeaseError {
    #[error("the fleet's Redis is not connected")]
    NoConnection,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the lease was lost (expired, or taken over)")]
    Lost,
    #[error("redis did not answer within {:?}", .0.0)]
    Timeout(#[from] TimedOut),
}

/// A held lease on one table's stream.
pub(crate) struct Lease {
    bus: Arc<Bus>,
    key: String,
    token: String,
    ttl: Duration,
    /// Past this instant the lease may have expired in Redis: stop reading.
    valid_until: Instant,
}

impl Lease {
    fn lease_key(bus: &Bus, table: &str) -> String {
        format!("{}streams:{table}:lease", bus.namespace())
    }

    /// Runs `cmd` on the fleet's connection for commands, answered within `limit`. The bus
    /// shares that connection and pings only its subscription, so a dead one (Redis restarted, or
    /// this one connection killed) shows only when a command on it fails: on a failure or no
    /// answer it is dropped, and the bus opens another at once. Else a sidecar that reads a
    /// stream and writes nothing would fail every renewal, and every acquisition, for good.
    async fn query<T: redis::FromRedisValue>(
        bus: &Bus,
        cmd: &redis::Cmd,
        limit: Duration,
    ) -> Result<T, LeaseError> {
        let mut conn = bus.connection().ok_or(LeaseError::NoConnection)?;
        let answered = within(limit, cmd.query_async::<T>(&mut conn)).await;
        if !matches!(answered, Ok(Ok(_))) {
            bus.forget_connection();
        }
        Ok(answered??)
    }

    /// Tries once to take the lease; `None` if another sidecar holds it.
    pub(crate) async fn try_acquire(
        bus: &Arc<Bus>,
        table: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LeaseError> {
        let key = Self::lease_key(bus, table);
        let started = Instant::now();
        // A fencing token that grows with every acquisition.
        let fence: u64 =
            Self::query(bus, redis::cmd("INCR").arg(format!("{key}:fence")), ttl).await?;
        let token = format!("{fence}:{}", bus.origin());
        let set: Option<String> = Self::query(
            bus,
            redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64),
            ttl,
        )
        .await?;
        Ok(set.map(|_| Lease {
            bus: bus.clone(),
            key,
            token,
            ttl,
            valid_until: started + ttl,
        }))
    }

    /// Whether the lease can still be relied on (with a margin for clock drift between here and
    /// Redis).
    pub(crate) fn valid(&self) -> bool {
        Instant::now() + self.ttl / 10 < self.valid_until
    }

    /// Extends the lease; `Lost` when another holder has it now.
    pub(crate) async fn renew(&mut self) -> Result<(), LeaseError> {
        let started = Instant::now();
        let renewed: i64 = Self::query(
            &self.bus,
            redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&self.key)
                .arg(&self.token)
                .arg(self.ttl.as_millis() as u64),
            self.ttl / 3,
        )
        .await?;
        if renewed == 1 {
            self.valid_until = started + self.ttl;
            Ok(())
        } else {
            Err(LeaseError::Lost)
        }
    }

    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Where a table's reading got to, per shard: in Redis under the lease, or in memory.
pub(crate) enum Checkpoints<'a> {
    Local(&'a mut HashMap<String, String>),
    Fleet { lease: Lease, key: String },
}

impl Checkpoints<'_> {
    /// Checkpoints of one stream, kept in Redis and written only under `lease`.
    pub(crate) fn fleet(lease: Lease, stream_arn: &str) -> Checkpoints<'static> {
        let key = format!("{}streams:{stream_arn}:checkpoints", lease.bus.namespace());
        Checkpoints::Fleet { lease, key }
    }

    /// Every shard's checkpoint.
    pub(crate) async fn load(&mut self) -> Result<HashMap<String, String>, LeaseError> {
        match self {
            Checkpoints::Local(map) => Ok((**map).clone()),
            Checkpoints::Fleet { lease, key } => {
                if !lease.valid() {
                    return Err(LeaseError::Lost);
                }
                Lease::query(&lease.bus, redis::cmd("HGETALL").arg(&*key), lease.ttl / 3).await
            }
        }
    }

    /// Records a shard's position; `Lost` when the lease is no longer this sidecar's.
    pub(crate) async fn save(&mut self, shard: &str, position: &str) -> Result<(), LeaseError> {
        match self {
            Checkpoints::Local(map) => {
                map.insert(shard.to_string(), position.to_string());
                Ok(())
            }
            Checkpoints::Fleet { lease, key } => {
                if !lease.valid() {
                    return Err(LeaseError::Lost);
                }
                let saved: i64 = Lease::query(
                    &lease.bus,
                    redis::cmd("EVAL")
                        .arg(CHECKPOINT)
                        .arg(2)
                        .arg(&lease.key)
                        .arg(&*key)
                        .arg(&lease.token)
                        .arg(shard)
                        .arg(position),
                    lease.ttl / 3,
                )
                .await?;
                if saved == 1 {
                    Ok(())
                } else {
                    Err(LeaseError::Lost)
                }
            }
        }
    }

    /// The lease these checkpoints are written under, if any.
    pub(crate) fn lease_mut(&mut self) -> Option<&mut Lease> {
        match self {
            Checkpoints::Local(_) => None,
            Checkpoints::Fleet { lease, .. } => Some(lease),
        }
    }
}

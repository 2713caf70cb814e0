//! The memory a container running a config needs: the one home of the sizing rule.
//! `check-config` prints it, the deployment lint (`scripts/lint_deploy.py`) checks memory limits
//! against it, and `benches/load` measures a process against it. With the shared tier on,
//! `check-config` also advises on the fleet's Redis, whose memory no sidecar config bounds.

use super::{Compression, Config};

/// Memory the process needs beyond what the caches' capacities, buffered bodies and connections
/// count (the runtime, TLS, answers in flight), in [`Config::container_memory_bytes`].
const BASE_MEMORY_BYTES: u64 = 30 << 20;

/// Memory one open connection may hold (its task and hyper's read and write buffers; about 25KiB
/// measured with a request's worth of buffers).
const CONNECTION_MEMORY_BYTES: u64 = 32 << 10;

/// [`Config::container_memory_bytes`] in words, for what `check-config` prints.
pub const CONTAINER_MEMORY_RULE: &str = "(item capacity + query capacity) x 1.25 + \
     server.max_buffered_bytes + 2 ports x server.max_connections x 32KiB + 30MiB";

/// Redis memory one shared-tier entry takes beyond the answer it holds: its stamp and seal, its
/// key and expiry, and Redis's own per-key tables. Measured by `ddbcache-load compare --scenarios
/// shared` (benches/README.md): an entry's `MEMORY USAGE` minus the answer's bytes (242 with
/// 246-byte answers), rounded up.
pub const SHARED_ENTRY_OVERHEAD_BYTES: u64 = 250;

/// Redis memory of one item (or partition) version key, measured alike, rounded up; there are at
/// most 65,535 of them for the whole fleet (one per stripe).
pub const SHARED_VERSION_KEY_BYTES: u64 = 128;

/// All the version keys the fleet's Redis may hold.
const SHARED_VERSION_KEYS_BYTES: u64 = u16::MAX as u64 * SHARED_VERSION_KEY_BYTES;

impl Config {
    /// What `check-config` advises for the fleet's Redis while the shared tier is on (`None`
    /// when it is off): `maxmemory-policy allkeys-lru`, and a `maxmemory` from the entries the
    /// fleet reads within a TTL and [`SHARED_ENTRY_OVERHEAD_BYTES`].
    pub fn shared_redis_advice(&self) -> Option<String> {
        if !self.fleet.shared.enabled {
            return None;
        }
        let ttl = format!("{:?}", self.cache.item.ttl);
        let bodies = match self.cache.compression {
            Compression::None => "as DynamoDB sent them",
            Compression::Lz4 => "lz4-compressed (cache.compression)",
        };
        let example = |entries: u64, body: u64| {
            (entries * (body + SHARED_ENTRY_OVERHEAD_BYTES) + SHARED_VERSION_KEYS_BYTES)
                .div_ceil(1 << 20)
        };
        Some(format!(
            "# The shared tier (fleet.shared) keeps entries in the fleet's Redis; give that Redis:\n\
             #   maxmemory-policy allkeys-lru   an evicted entry, version or lease costs a miss, \
             never a stale\n\
             #                                  answer; a full Redis under the default noeviction \
             refuses the\n\
             #                                  scripts that record writes and fills\n\
             #   maxmemory                      the distinct items and pages the fleet reads within \
             a TTL ({ttl}),\n\
             #                                  x (their answers' bytes, {bodies}, + {o} bytes)\n\
             #                                  + up to {v}MiB of version keys (65,535 x {vb} bytes)\n\
             #   e.g. 1,000,000 answers of 250 bytes: {m1}MiB; 10,000,000 of 1KiB: {m2}MiB.\n",
            o = SHARED_ENTRY_OVERHEAD_BYTES,
            v = SHARED_VERSION_KEYS_BYTES.div_ceil(1 << 20),
            vb = SHARED_VERSION_KEY_BYTES,
            m1 = example(1_000_000, 250),
            m2 = example(10_000_000, 1024),
        ))
    }

    /// The memory a container running this config needs ([`CONTAINER_MEMORY_RULE`]). A capacity
    /// bounds the bytes the cache weighs (its segments of entries and its index); the quarter on
    /// top covers what that leaves out (segments still answering hits after their eviction, the
    /// newest segment of each shard, the caches' other tables, allocator slack). Request bodies being read are bounded by `server.max_buffered_bytes`,
    /// connections by `server.max_connections` per port, and the 30MiB is the process itself.
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::with_env;
    use super::{SHARED_ENTRY_OVERHEAD_BYTES, SHARED_VERSION_KEY_BYTES};

    #[test]
    fn redis_advice_is_given_while_the_shared_tier_is_on() {
        let off = with_env("", &[("DDBCACHE_FLEET_REDIS_URL", "redis://bus:6379")]).unwrap();
        assert_eq!(off.shared_redis_advice(), None);
        let on = with_env(
            "",
            &[
                ("DDBCACHE_FLEET_REDIS_URL", "redis://bus:6379"),
                ("DDBCACHE_FLEET_SHARED", "true"),
                ("DDBCACHE_ITEM_TTL", "30s"),
            ],
        )
        .unwrap();
        let advice = on.shared_redis_advice().expect("advice with the tier on");
        assert!(advice.contains("maxmemory-policy allkeys-lru"), "{advice}");
        assert!(advice.contains("within a TTL (30s)"), "{advice}");
        let versions = 65_535 * SHARED_VERSION_KEY_BYTES;
        let million =
            (1_000_000 * (250 + SHARED_ENTRY_OVERHEAD_BYTES) + versions).div_ceil(1 << 20);
        assert!(advice.contains(&format!("{million}MiB")), "{advice}");
        assert!(
            advice.lines().all(|l| l.starts_with('#')),
            "TOML comments: {advice}"
        );
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
}

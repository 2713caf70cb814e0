//! The memory a container running a config needs: the one home of the sizing rule.
//! `check-config` prints it, the deployment lint (`scripts/lint_deploy.py`) checks memory limits
//! against it, and `benches/load` measures a process against it.

use super::Config;

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
    /// The memory a container running this config needs ([`CONTAINER_MEMORY_RULE`]). A capacity
    /// bounds the bytes the cache weighs (each entry's key, response body and a fixed per-entry
    /// estimate); the quarter on top covers what that leaves out (the caches' own tables,
    /// allocator slack). Request bodies being read are bounded by `server.max_buffered_bytes`,
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

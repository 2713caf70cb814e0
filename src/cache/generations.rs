//! Generations: how ddbcache invalidates in O(1) and refuses stale fills.
//!
//! Every entry is stamped with the generations in force when its read *started*. A lookup accepts
//! an entry only if its stamp equals the current generations, so:
//! - a write bumps its items' stripes (or its table's epoch when the items cannot be named) and its
//!   table's write counter, before it is forwarded and again after the upstream answers — every
//!   entry that could hold the old value is dead from then on, including one filled by a read that
//!   started before the write and answered after it;
//! - a control-plane call or a flush bumps a table's epoch; a full flush bumps the global epoch.
//!
//! Item entries look at their key's stripe (a per-key counter, hashed into a fixed array: two keys
//! sharing a stripe only cost each other a spurious miss). Query entries look at their table's write
//! counter: any write to a table may change any query on it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Number of item stripes. 64 Ki counters = 512 KiB; with a million cached items a write costs
/// about 15 innocent entries a miss.
const STRIPES: usize = 1 << 16;

/// The generations an entry was read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    global: u64,
    /// The table's epoch (item entries) or write counter (query entries).
    table: u64,
    /// The narrowest scope the entry depends on: its key's stripe for an item entry; 0 for a
    /// query entry, which depends on the whole table.
    scope: u64,
}

/// A table's generations.
#[derive(Default)]
pub struct TableGenerations {
    /// Bumped by control-plane calls and flushes: ends every entry of the table.
    epoch: AtomicU64,
    /// Bumped by every write to the table (and by what bumps `epoch`): ends its query entries.
    writes: AtomicU64,
}

pub struct Generations {
    global: AtomicU64,
    stripes: Box<[AtomicU64]>,
    tables: RwLock<HashMap<String, Arc<TableGenerations>>>,
    hasher: ahash::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

impl Generations {
    pub fn new() -> Self {
        Generations {
            global: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            tables: RwLock::new(HashMap::new()),
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn table(&self, name: &str) -> Arc<TableGenerations> {
        if let Some(t) = self.tables.read().get(name) {
            return t.clone();
        }
        self.tables
            .write()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    /// The stripe of an item: table and canonical key together.
    pub fn stripe(&self, table: &str, key: &[u8]) -> usize {
        let mut h = self.hasher.build_hasher();
        table.hash(&mut h);
        key.hash(&mut h);
        (h.finish() as usize) & (STRIPES - 1)
    }

    /// Stamp for an item read.
    pub fn item_stamp(&self, table: &TableGenerations, stripe: usize) -> Stamp {
        Stamp {
            global: self.global.load(Ordering::Acquire),
            table: table.epoch.load(Ordering::Acquire),
            scope: self.stripes[stripe].load(Ordering::Acquire),
        }
    }

    /// Stamp for a query read.
    pub fn query_stamp(&self, table: &TableGenerations) -> Stamp {
        Stamp {
            global: self.global.load(Ordering::Acquire),
            table: table.writes.load(Ordering::Acquire),
            scope: 0,
        }
    }

    /// A write to one item.
    pub fn bump_item(&self, table: &TableGenerations, stripe: usize) {
        self.stripes[stripe].fetch_add(1, Ordering::AcqRel);
        table.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// A write to a table whose items cannot be named, a control call or a flush.
    pub fn bump_table(&self, table: &TableGenerations) {
        table.epoch.fetch_add(1, Ordering::AcqRel);
        table.writes.fetch_add(1, Ordering::AcqRel);
    }

    pub fn bump_global(&self) {
        self.global.fetch_add(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_write_ends_item_and_query_stamps_of_its_table_only() {
        let g = Generations::new();
        let (t, other) = (g.table("t"), g.table("u"));
        let s = g.stripe("t", b"k");
        let item = g.item_stamp(&t, s);
        let query = g.query_stamp(&t);
        let other_query = g.query_stamp(&other);
        g.bump_item(&t, s);
        assert_ne!(g.item_stamp(&t, s), item);
        assert_ne!(g.query_stamp(&t), query);
        assert_eq!(g.query_stamp(&other), other_query);
    }

    #[test]
    fn table_and_global_bumps_end_everything_beneath() {
        let g = Generations::new();
        let t = g.table("t");
        let s = g.stripe("t", b"k");
        let before = g.item_stamp(&t, s);
        g.bump_table(&t);
        assert_ne!(g.item_stamp(&t, s), before);
        let before = g.item_stamp(&t, s);
        g.bump_global();
        assert_ne!(g.item_stamp(&t, s), before);
    }
}

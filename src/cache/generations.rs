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
    table: u64,
    part: u64,
}

/// Per-table state: generations and the learned key schema.
#[derive(Default)]
pub struct TableState {
    /// Bumped by control-plane calls and flushes: ends every entry of the table.
    epoch: AtomicU64,
    /// Bumped by every write to the table (and by what bumps `epoch`): ends its query entries.
    writes: AtomicU64,
    /// The table's key attribute names, sorted; learned from reads and DescribeTable answers.
    key_names: RwLock<Option<Arc<[String]>>>,
}

pub struct Generations {
    global: AtomicU64,
    stripes: Box<[AtomicU64]>,
    tables: RwLock<HashMap<String, Arc<TableState>>>,
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

    pub fn table(&self, name: &str) -> Arc<TableState> {
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
    pub fn item_stamp(&self, table: &TableState, stripe: usize) -> Stamp {
        Stamp {
            global: self.global.load(Ordering::Acquire),
            table: table.epoch.load(Ordering::Acquire),
            part: self.stripes[stripe].load(Ordering::Acquire),
        }
    }

    /// Stamp for a query read.
    pub fn query_stamp(&self, table: &TableState) -> Stamp {
        Stamp {
            global: self.global.load(Ordering::Acquire),
            table: table.writes.load(Ordering::Acquire),
            part: 0,
        }
    }

    /// A write to one item.
    pub fn bump_item(&self, table: &TableState, stripe: usize) {
        self.stripes[stripe].fetch_add(1, Ordering::AcqRel);
        table.writes.fetch_add(1, Ordering::AcqRel);
    }

    /// A write to a table whose items cannot be named, a control call or a flush.
    pub fn bump_table(&self, table: &TableState) {
        table.epoch.fetch_add(1, Ordering::AcqRel);
        table.writes.fetch_add(1, Ordering::AcqRel);
    }

    pub fn bump_global(&self) {
        self.global.fetch_add(1, Ordering::AcqRel);
    }

    pub fn key_names(&self, table: &str) -> Option<Arc<[String]>> {
        self.tables.read().get(table)?.key_names.read().clone()
    }

    pub fn set_key_names(&self, table: &str, names: Option<Vec<String>>) {
        let state = self.table(table);
        let mut slot = state.key_names.write();
        match names {
            Some(n) if slot.as_deref() != Some(&n[..]) => *slot = Some(n.into()),
            Some(_) => {}
            None => *slot = None,
        }
    }

    /// Forget every key schema (a full flush: tables may have been recreated).
    pub fn forget_schemas(&self) {
        for t in self.tables.read().values() {
            *t.key_names.write() = None;
        }
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

    #[test]
    fn key_names_are_remembered_and_forgotten() {
        let g = Generations::new();
        assert_eq!(g.key_names("t"), None);
        g.set_key_names("t", Some(vec!["pk".into()]));
        assert_eq!(g.key_names("t").as_deref(), Some(&["pk".to_string()][..]));
        g.forget_schemas();
        assert_eq!(g.key_names("t"), None);
    }
}

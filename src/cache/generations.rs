//! Generations: how ddbcache invalidates in O(1), refuses stale fills, and remembers which keys
//! were written recently or may have been written.
//!
//! State is kept in *cells*. A cell is a generation counter plus two deadlines: until when what it
//! covers was *recently written* (a miss then must read consistently, see the consistency window)
//! and until when it is *in doubt* (a write whose outcome is unknown may still land; a miss then
//! must not be stored). The cells:
//! - the global cell: everything;
//! - per table, the epoch cell (every entry of the table) and the writes cell (entries that any
//!   write to the table may change: Scans, GSI queries, queries whose partition is unknown);
//! - 64 Ki stripes shared by all tables, hashed from a table and a canonical item key (item
//!   entries) or partition key (Query entries on the base table or an LSI). Two keys sharing a
//!   stripe only cost each other a spurious miss.
//!
//! Every entry depends on the global cell, its table's epoch cell, and one scope cell (its item's
//! stripe, its partition's stripe, or its table's writes cell). It carries the [`Stamp`] of those
//! three generations as they were when its read *started*, and a lookup accepts it only while the
//! stamp is current. A write bumps (and marks) the cells of what it changed before it is forwarded
//! and again after the upstream answered, so every entry that could hold the old value is dead from
//! then on, including one filled by a read that started before the write and answered after it.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use crate::protocol::table::TableId;

/// Number of stripes. 64 Ki cells of 24 bytes = 1.5 MiB; with a million cached items a write
/// costs about 15 innocent entries a miss.
const STRIPES: usize = 1 << 16;

/// A generation counter and the deadlines of what it covers, in milliseconds since the
/// [`Generations`] were created.
#[derive(Default)]
struct Cell {
    generation: AtomicU64,
    recent_until: AtomicU64,
    doubt_until: AtomicU64,
}

impl Cell {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn mark(&self, marks: Marks) {
        if let Some(until) = marks.recent_until {
            self.recent_until.fetch_max(until, Ordering::AcqRel);
        }
        if let Some(until) = marks.doubt_until {
            self.doubt_until.fetch_max(until, Ordering::AcqRel);
        }
    }
}

/// Deadlines a write leaves on the cells it touched.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    recent_until: Option<u64>,
    doubt_until: Option<u64>,
}

/// What a miss may do, given the marks on the cells its entry depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restrictions {
    /// Written within the consistency window: an eventually consistent read may return what was
    /// there before, so the miss must read consistently (or not be stored).
    pub recently_written: bool,
    /// A write whose outcome is unknown may still land: the miss must not be stored.
    pub in_doubt: bool,
}

/// The one cell, besides the global and table epochs, an entry depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A stripe: of an item (item entries) or of a partition (Query entries on the base table or
    /// an LSI).
    Stripe(usize),
    /// The table's writes cell.
    TableWrites,
}

/// The generations an entry was read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    global: u64,
    epoch: u64,
    scope: Scope,
    scope_generation: u64,
}

impl Stamp {
    /// The stamp's generations in 8 bytes, for storing with an entry: generations only grow, so
    /// their sum changes exactly when one of them does.
    pub(crate) fn digest(&self) -> u64 {
        self.global
            .wrapping_add(self.epoch)
            .wrapping_add(self.scope_generation)
    }

    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }
}

/// A table's cells.
#[derive(Default)]
pub struct TableGenerations {
    /// Every entry of the table: bumped by control-plane calls, flushes, and writes whose items
    /// cannot be named.
    epoch: Cell,
    /// Entries any write may change: bumped by every write to the table.
    writes: Cell,
    /// The dictionary its compressed entries were compressed with (`store.rs`): set once, from
    /// the first body compressed for the table, so every entry an entry's table points to can be
    /// decompressed.
    pub(crate) dictionary: std::sync::OnceLock<Box<[u8]>>,
}

pub struct Generations {
    global: Cell,
    stripes: Box<[Cell]>,
    tables: RwLock<HashMap<TableId, Arc<TableGenerations>>>,
    hasher: ahash::RandomState,
}

impl Default for Generations {
    fn default() -> Self {
        Self::new()
    }
}

/// Stripe hashes of items and of partitions never meet on purpose: a partition key and an item
/// key of one table may have equal canonical bytes (a table keyed by its partition key alone).
#[derive(Hash)]
enum StripeOf<'a> {
    Item(&'a str, &'a [u8]),
    Partition(&'a str, &'a [u8]),
}

impl Generations {
    pub fn new() -> Self {
        Generations {
            global: Cell::default(),
            stripes: (0..STRIPES).map(|_| Cell::default()).collect(),
            tables: RwLock::new(HashMap::new()),
            hasher: ahash::RandomState::new(),
        }
    }

    pub fn table(&self, id: &TableId) -> Arc<TableGenerations> {
        if let Some(t) = self.tables.read().get(id) {
            return t.clone();
        }
        self.tables.write().entry(id.clone()).or_default().clone()
    }

    /// Every table identity seen so far.
    pub(crate) fn table_ids(&self) -> Vec<TableId> {
        self.tables.read().keys().cloned().collect()
    }

    fn stripe(&self, of: StripeOf<'_>) -> usize {
        (self.hasher.hash_one(of) as usize) & (STRIPES - 1)
    }

    /// The scope of an item entry.
    pub(crate) fn item_scope(&self, table: &TableId, key: &[u8]) -> Scope {
        Scope::Stripe(self.stripe(StripeOf::Item(table.as_str(), key)))
    }

    /// The scope of a Query entry on one partition of the base table or an LSI.
    pub(crate) fn partition_scope(&self, table: &TableId, partition: &[u8]) -> Scope {
        Scope::Stripe(self.stripe(StripeOf::Partition(table.as_str(), partition)))
    }

    fn cell<'a>(&'a self, table: &'a TableGenerations, scope: Scope) -> &'a Cell {
        match scope {
            Scope::Stripe(i) => &self.stripes[i],
            Scope::TableWrites => &table.writes,
        }
    }

    pub(crate) fn stamp(&self, table: &TableGenerations, scope: Scope) -> Stamp {
        Stamp {
            global: self.global.generation(),
            epoch: table.epoch.generation(),
            scope,
            scope_generation: self.cell(table, scope).generation(),
        }
    }

    /// The marks in force at `now` (milliseconds on the cache's clock) on what an entry of `scope`
    /// depends on.
    pub(crate) fn restrictions(
        &self,
        table: &TableGenerations,
        scope: Scope,
        now: u64,
    ) -> Restrictions {
        let cells = [&self.global, &table.epoch, self.cell(table, scope)];
        Restrictions {
            recently_written: cells
                .iter()
                .any(|c| c.recent_until.load(Ordering::Acquire) > now),
            in_doubt: cells
                .iter()
                .any(|c| c.doubt_until.load(Ordering::Acquire) > now),
        }
    }

    /// Marks ending `recent` and `doubt` after `now` (`None`: no such mark).
    pub(crate) fn marks(now: u64, recent: Option<Duration>, doubt: Option<Duration>) -> Marks {
        let until = |d: Duration| now + d.as_millis() as u64 + 1;
        Marks {
            recent_until: recent.filter(|d| !d.is_zero()).map(until),
            doubt_until: doubt.filter(|d| !d.is_zero()).map(until),
        }
    }

    /// A write to one item: its stripe, its partition's stripe (when known) and its table's
    /// writes cell.
    pub(crate) fn write_item(
        &self,
        table: &TableGenerations,
        id: &TableId,
        key: &[u8],
        partition: Option<&[u8]>,
        marks: Marks,
    ) {
        let item = Some(&self.stripes[self.stripe(StripeOf::Item(id.as_str(), key))]);
        let partition =
            partition.map(|p| &self.stripes[self.stripe(StripeOf::Partition(id.as_str(), p))]);
        for cell in [item, partition, Some(&table.writes)].into_iter().flatten() {
            cell.mark(marks);
            cell.bump();
        }
    }

    /// A write to a table whose items cannot be named, a control-plane call or a flush.
    pub(crate) fn write_table(&self, table: &TableGenerations, marks: Marks) {
        for cell in [&table.epoch, &table.writes] {
            cell.mark(marks);
            cell.bump();
        }
    }

    /// Everything.
    pub(crate) fn write_everything(&self, marks: Marks) {
        self.global.mark(marks);
        self.global.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Marks = Marks {
        recent_until: None,
        doubt_until: None,
    };

    #[test]
    fn item_write_ends_its_item_its_partition_and_table_wide_entries_only() {
        let g = Generations::new();
        let (t, other) = (
            g.table(&TableId::new("r", "t")),
            g.table(&TableId::new("r", "u")),
        );
        let item = g.item_scope(&TableId::new("r", "t"), b"k");
        let partition = g.partition_scope(&TableId::new("r", "t"), b"p");
        let other_partition = g.partition_scope(&TableId::new("r", "t"), b"q");
        let before = [
            g.stamp(&t, item),
            g.stamp(&t, partition),
            g.stamp(&t, Scope::TableWrites),
            g.stamp(&t, other_partition),
            g.stamp(&other, Scope::TableWrites),
        ];
        g.write_item(&t, &TableId::new("r", "t"), b"k", Some(b"p"), NONE);
        assert_ne!(g.stamp(&t, item), before[0]);
        assert_ne!(g.stamp(&t, partition), before[1]);
        assert_ne!(g.stamp(&t, Scope::TableWrites), before[2]);
        assert_eq!(g.stamp(&t, other_partition), before[3]);
        assert_eq!(g.stamp(&other, Scope::TableWrites), before[4]);
    }

    #[test]
    fn table_and_global_writes_end_everything_beneath() {
        let g = Generations::new();
        let t = g.table(&TableId::new("r", "t"));
        let item = g.item_scope(&TableId::new("r", "t"), b"k");
        let before = g.stamp(&t, item);
        g.write_table(&t, NONE);
        assert_ne!(g.stamp(&t, item), before);
        let before = g.stamp(&t, g.partition_scope(&TableId::new("r", "t"), b"p"));
        g.write_everything(NONE);
        assert_ne!(
            g.stamp(&t, g.partition_scope(&TableId::new("r", "t"), b"p")),
            before
        );
    }

    #[test]
    fn stamps_of_different_scopes_never_compare_equal() {
        let g = Generations::new();
        let t = g.table(&TableId::new("r", "t"));
        // Fresh cells all have generation 0: the scope itself must tell the stamps apart.
        assert_ne!(
            g.stamp(&t, Scope::TableWrites),
            g.stamp(&t, Scope::Stripe(0))
        );
    }

    #[test]
    fn marks_restrict_what_depends_on_the_marked_cells_until_they_end() {
        let g = Generations::new();
        let t = g.table(&TableId::new("r", "t"));
        let item = g.item_scope(&TableId::new("r", "t"), b"k");
        let other = g.item_scope(&TableId::new("r", "t"), b"other");
        assert_eq!(g.restrictions(&t, item, 0), Restrictions::default());
        g.write_item(
            &t,
            &TableId::new("r", "t"),
            b"k",
            None,
            Generations::marks(0, Some(Duration::from_secs(60)), None),
        );
        let r = g.restrictions(&t, item, 0);
        assert!(r.recently_written && !r.in_doubt);
        if other != item {
            assert_eq!(g.restrictions(&t, other, 0), Restrictions::default());
        }
        assert!(g.restrictions(&t, Scope::TableWrites, 0).recently_written);
        g.write_table(
            &t,
            Generations::marks(0, None, Some(Duration::from_secs(60))),
        );
        assert!(g.restrictions(&t, other, 0).in_doubt);
        // A mark that has ended restricts nothing.
        let u = g.table(&TableId::new("r", "u"));
        g.write_table(
            &u,
            Generations::marks(0, Some(Duration::from_millis(5)), None),
        );
        assert!(g.restrictions(&u, Scope::TableWrites, 5).recently_written);
        assert_eq!(
            g.restrictions(&u, Scope::TableWrites, 6),
            Restrictions::default()
        );
    }
}

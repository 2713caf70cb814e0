//! The second tier: entries kept outside the process and shared by every sidecar of a fleet
//! (`fleet::shared` keeps them in Redis). The cache asks it after a miss of its own, before the
//! read goes upstream, and offers it what it filled; the tier decides nothing about HTTP or
//! policy, and the proxy never sees it.
//!
//! A shared entry is current while the versions of what it depends on (the same cells as an
//! in-process entry: everything, the table, the item's or partition's stripe or the table's
//! writes) are the ones it was stamped with. Every sidecar's writes change those versions before
//! they are answered, so a lookup never returns an entry a write acknowledged anywhere has
//! ended, and a fill whose read started before such a write is refused.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use super::{Address, Restrictions};

/// What a tier's calls return: each is one round trip.
pub type TierFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A shared second tier behind the in-process caches.
pub trait Tier: Send + Sync {
    /// Looks keys up, in one round trip. For each: a current entry, or the right to fill it
    /// (stamped with the versions as they are now), with the marks on what it depends on and
    /// whether another sidecar holds the key's fill lease. `lease`: take the lease when it is
    /// free (a GetItem, Query or Scan miss; not a BatchGetItem's keys).
    fn lookup<'a>(&'a self, at: &'a [Address<'a>], lease: bool) -> TierFuture<'a, Vec<TierAnswer>>;

    /// Whether entries stamped `stamp` at `at` are still current (strict consistency).
    fn confirm<'a>(&'a self, at: Address<'a>, stamp: u64) -> TierFuture<'a, bool>;

    /// How long a miss waits for another sidecar's fill lease before it reads upstream itself.
    fn lease_wait(&self) -> Duration;

    /// Whether every hit of the in-process caches must be confirmed first.
    fn strict(&self) -> bool;
}

/// A tier's answer for one key.
pub enum TierAnswer {
    /// A current entry.
    Hit(SharedEntry),
    /// No current entry.
    Miss {
        /// The right to fill it, under the versions the lookup saw.
        fill: Box<dyn TierFill>,
        /// The marks (recently written, in doubt) on what it depends on, as every sidecar left
        /// them.
        restrictions: Restrictions,
        /// Another sidecar holds the key's fill lease: its fill may come soon.
        leased_elsewhere: bool,
    },
    /// The tier did not answer in time, or could not be reached: the read goes on without it.
    Unavailable,
}

/// A current shared entry: an answer as it was stored.
pub struct SharedEntry {
    pub body: Bytes,
    /// Where the `Item` sits in the body (item entries that have one).
    pub item: Option<Range<usize>>,
    /// How long it has left.
    pub ttl: Duration,
    /// The versions it was stamped with, as a digest ([`Tier::confirm`] takes it).
    pub stamp: u64,
}

/// The right to fill one shared entry, under the versions a lookup saw. Dropped without being
/// used, it gives up the key's fill lease if it held it.
pub trait TierFill: Send {
    /// The digest of the versions the fill is stamped with.
    fn stamp(&self) -> u64;

    /// Offers the answer a miss read: stored if the versions are still the stamp's, nothing
    /// that it depends on is in doubt, and it was not written recently unless `consistent` (the
    /// read was strongly consistent).
    fn store(
        self: Box<Self>,
        body: Bytes,
        item: Option<Range<usize>>,
        ttl: Duration,
        consistent: bool,
    ) -> TierFuture<'static, ()>;
}

//! Reading request bodies within bounds: each body within `server.max_body_bytes` and
//! `server.body_timeout`, and all bodies being buffered at once within `server.max_buffered_bytes`.
//!
//! A request must be read whole before anything else can happen to it (its key is in the body),
//! so without a shared bound two dozen slow clients each sending a body near the limit hold
//! hundreds of MiB between them. The budget is a semaphore counted in KiB: a body reserves what
//! its `Content-Length` declares (or, when chunked, grows its reservation as it arrives) and gives
//! it back when the request ends. A request that finds no room waits up to `server.buffer_wait`,
//! then gets a retryable 503 in DynamoDB's shape.
//!
//! Small bodies (up to [`SMALL_BODY`]: every GetItem, Query and Scan, most writes) always find
//! room: large ones may hold at most the budget less a reserve (an eighth of it, never so much
//! that one largest body would not fit), counted by a second semaphore they alone take. Without
//! it, four clients each stalling midway through a 16 MiB upload held the whole default budget,
//! and every small request behind them got a 503 for as long as the uploads lasted. A reserve
//! was chosen over refusing the newest upload to make room (which throws away bytes a client has
//! already sent, and punishes whoever came last rather than whoever stalls) and over finer tiers
//! by length (more to tune, for no request DynamoDB's own sizes need): it is decided where a body
//! is admitted, no body already admitted is ever taken back, and a small body's path is the one
//! non-waiting semaphore acquire it always was.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::protocol::ProtocolError;

/// The budget's unit: reservations are whole KiB.
const UNIT: u64 = 1024;
/// A chunked body grows its reservation by at least this much at a time.
const GROWTH: u64 = 64 * 1024;
/// Bodies up to this size are small: they may use the whole budget, reserve included.
const SMALL_BODY: u64 = 64 * 1024;
/// The reserve kept for small bodies is this fraction of the budget.
const RESERVE_SHARE: u64 = 8;

/// The shared bound on bytes being buffered, and the per-body limits.
pub(crate) struct BodyBudget {
    /// The whole budget, in units; every body takes its reservation here.
    slots: Arc<Semaphore>,
    /// The budget less the small bodies' reserve; large bodies take their reservation here too.
    large: Arc<Semaphore>,
    max_body: u64,
    body_timeout: Duration,
    wait: Duration,
    gauge: IntGauge,
    refusals: IntCounter,
}

/// Bytes reserved for one body, given back when dropped; and when the body must have arrived.
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    /// The same units again, from the large bodies' share, once the body is large.
    large: Option<OwnedSemaphorePermit>,
    gauge: IntGauge,
    deadline: Instant,
    /// Whether the body was waited for (room in the budget, or a frame not yet arrived).
    waited: bool,
}

impl Reservation {
    fn units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    fn large_units(&self) -> u64 {
        self.large.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    /// When the body must have arrived.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether reading the body waited for anything: when it did not, the body came with its
    /// headers.
    pub(crate) fn waited(&self) -> bool {
        self.waited
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.gauge.sub((self.units() * UNIT) as i64);
    }
}

impl BodyBudget {
    pub(crate) fn new(config: &ServerConfig, metrics: &Metrics) -> BodyBudget {
        let units = config.max_buffered_bytes.div_ceil(UNIT).max(1);
        let units = units
            .min(Semaphore::MAX_PERMITS as u64)
            .min(u32::MAX as u64);
        let largest = config.max_body_bytes.div_ceil(UNIT).max(1);
        let reserve = (units / RESERVE_SHARE).min(units.saturating_sub(largest));
        BodyBudget {
            slots: Arc::new(Semaphore::new(units as usize)),
            large: Arc::new(Semaphore::new((units - reserve) as usize)),
            max_body: config.max_body_bytes,
            body_timeout: config.body_timeout,
            wait: config.buffer_wait,
            gauge: metrics.buffered_bytes.clone(),
            refusals: metrics.buffer_refusals.clone(),
        }
    }

    /// The largest body accepted, `server.max_body_bytes`.
    pub(crate) fn max_body(&self) -> u64 {
        self.max_body
    }

    /// When a body whose headers arrived at `arrived` must have arrived whole:
    /// `server.body_timeout` on.
    pub(crate) fn deadline(&self, arrived: std::time::Instant) -> Instant {
        Instant::from_std(arrived) + self.body_timeout
    }

    /// Starts reading a body whose headers arrived at `arrived`: reserves what its
    /// `Content-Length` declares (waiting up to `server.buffer_wait` for room) and starts its
    /// `server.body_timeout`.
    pub(crate) async fn start(
        &self,
        declared: Option<u64>,
        arrived: std::time::Instant,
    ) -> Result<Reservation, ProtocolError> {
        let mut reservation = self.begin(arrived);
        self.reserve(&mut reservation, declared.unwrap_or(0))
            .await?;
        Ok(reservation)
    }

    /// [`BodyBudget::start`] when there is room at once (every body but when the budget is
    /// full), without building what waiting takes; `None` when it must be awaited.
    pub(crate) fn start_now(
        &self,
        declared: Option<u64>,
        arrived: std::time::Instant,
    ) -> Option<Reservation> {
        let mut reservation = self.begin(arrived);
        self.reserve_now(&mut reservation, declared.unwrap_or(0))
            .then_some(reservation)
    }

    fn begin(&self, arrived: std::time::Instant) -> Reservation {
        Reservation {
            permit: None,
            large: None,
            gauge: self.gauge.clone(),
            deadline: self.deadline(arrived),
            waited: false,
        }
    }

    /// The body's next frame, waited for within its timeout (a frame already in hand is taken
    /// without this: `now_or_never` of the body's own).
    pub(crate) async fn frame(
        &self,
        reservation: &mut Reservation,
        body: &mut Incoming,
    ) -> Result<Option<Result<Frame<Bytes>, hyper::Error>>, ProtocolError> {
        reservation.waited = true;
        tokio::time::timeout_at(reservation.deadline, body.frame())
            .await
            .map_err(|_| {
                ProtocolError::RequestTimeout(format!(
                    "request body not received within {:?}",
                    self.body_timeout
                ))
            })
    }

    /// Makes the reservation cover `total` bytes received so far, growing it by at least
    /// [`GROWTH`] at a time (a chunked body declares nothing up front) but not past
    /// [`SMALL_BODY`] while the body is still small.
    pub(crate) async fn cover(
        &self,
        reservation: &mut Reservation,
        total: u64,
    ) -> Result<(), ProtocolError> {
        match self.shortfall(reservation, total) {
            Some(bytes) => self.reserve(reservation, bytes).await,
            None => Ok(()),
        }
    }

    /// [`BodyBudget::cover`] when nothing need be waited for: `false` when it must be awaited.
    pub(crate) fn cover_now(&self, reservation: &mut Reservation, total: u64) -> bool {
        match self.shortfall(reservation, total) {
            Some(bytes) => self.reserve_now(reservation, bytes),
            None => true,
        }
    }

    /// What a reservation must grow by to cover `total` bytes, if anything.
    fn shortfall(&self, reservation: &Reservation, total: u64) -> Option<u64> {
        let held = reservation.units() * UNIT;
        if total <= held {
            return None;
        }
        let mut grown = total.max(held + GROWTH);
        if total <= SMALL_BODY {
            grown = grown.min(SMALL_BODY);
        }
        Some(grown - held)
    }

    /// Adds `bytes` (rounded up to whole units, capped at the largest body) to a reservation,
    /// waiting up to `server.buffer_wait` (and never past the body's deadline) for room. A body
    /// that becomes large takes its whole reservation from the large bodies' share as well,
    /// first: a large body never waits in the whole budget's queue holding none of its share.
    async fn reserve(
        &self,
        reservation: &mut Reservation,
        bytes: u64,
    ) -> Result<(), ProtocolError> {
        let (want, large_more) = self.units_for(reservation, bytes);
        let large = match large_more {
            Some(more) => Some(self.acquire(&self.large, more, reservation).await?),
            None => None,
        };
        let permit = self.acquire(&self.slots, want, reservation).await?;
        self.add(reservation, want, permit, large);
        Ok(())
    }

    /// [`BodyBudget::reserve`] when there is room at once; `false` (and nothing taken) when not.
    fn reserve_now(&self, reservation: &mut Reservation, bytes: u64) -> bool {
        let (want, large_more) = self.units_for(reservation, bytes);
        let large = match large_more {
            Some(more) => match self.large.clone().try_acquire_many_owned(more) {
                Ok(permit) => Some(permit),
                Err(_) => return false,
            },
            None => None,
        };
        // A large share taken without the rest goes back as it is dropped.
        let Ok(permit) = self.slots.clone().try_acquire_many_owned(want) else {
            return false;
        };
        self.add(reservation, want, permit, large);
        true
    }

    /// The units `bytes` more take of the whole budget, and of the large bodies' share when the
    /// body becomes (or is) large.
    fn units_for(&self, reservation: &Reservation, bytes: u64) -> (u32, Option<u32>) {
        let have = reservation.units();
        let cap = self.max_body.div_ceil(UNIT).max(1);
        let want = (bytes.div_ceil(UNIT).max(1)).min(cap.saturating_sub(have).max(1)) as u32;
        let large = ((have + want as u64) * UNIT > SMALL_BODY)
            .then(|| (have + want as u64 - reservation.large_units()) as u32);
        (want, large)
    }

    fn add(
        &self,
        reservation: &mut Reservation,
        want: u32,
        permit: OwnedSemaphorePermit,
        large: Option<OwnedSemaphorePermit>,
    ) {
        self.gauge.add((want as u64 * UNIT) as i64);
        merge(&mut reservation.permit, permit);
        if let Some(large) = large {
            merge(&mut reservation.large, large);
        }
    }

    /// `units` of `semaphore`, at once when they are free, else within `server.buffer_wait` and
    /// the body's deadline; a retryable refusal when they stay taken.
    async fn acquire(
        &self,
        semaphore: &Arc<Semaphore>,
        units: u32,
        reservation: &mut Reservation,
    ) -> Result<OwnedSemaphorePermit, ProtocolError> {
        if let Ok(permit) = semaphore.clone().try_acquire_many_owned(units) {
            return Ok(permit);
        }
        reservation.waited = true;
        let until = reservation.deadline.min(Instant::now() + self.wait);
        let acquire = semaphore.clone().acquire_many_owned(units);
        match tokio::time::timeout_at(until, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                self.refusals.inc();
                Err(ProtocolError::Overloaded(
                    "too many request bodies are being received at once; retry".into(),
                ))
            }
        }
    }
}

fn merge(held: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match held {
        Some(held) => held.merge(more),
        slot => *slot = Some(more),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    /// A budget that refuses at once when there is no room.
    fn budget(max_body: u64, max_buffered: u64) -> BodyBudget {
        let config = ServerConfig {
            max_body_bytes: max_body,
            max_buffered_bytes: max_buffered,
            buffer_wait: Duration::ZERO,
            ..ServerConfig::default()
        };
        BodyBudget::new(&config, &Metrics::new())
    }

    /// Large bodies holding their whole share of a 4 MiB budget: 3.5 MiB.
    async fn fill_large_share(budget: &BodyBudget) -> Vec<Reservation> {
        let mut large = Vec::new();
        for declared in [MIB, MIB, MIB, MIB / 2] {
            large.push(
                budget
                    .start(Some(declared), std::time::Instant::now())
                    .await
                    .expect("room for a large body"),
            );
        }
        large
    }

    #[tokio::test]
    async fn large_bodies_leave_an_eighth_of_the_budget_to_small_ones() {
        let budget = budget(MIB, 4 * MIB);
        let mut large = fill_large_share(&budget).await;
        assert!(
            budget
                .start(Some(SMALL_BODY + 1), std::time::Instant::now())
                .await
                .is_err(),
            "the reserve is kept from large bodies"
        );
        // The reserve, 512 KiB, holds eight of the largest small bodies, and no more.
        let mut small = Vec::new();
        for _ in 0..8 {
            small.push(
                budget
                    .start(Some(SMALL_BODY), std::time::Instant::now())
                    .await
                    .expect("room"),
            );
        }
        assert!(
            budget
                .start(Some(KIB), std::time::Instant::now())
                .await
                .is_err(),
            "the budget is full"
        );
        drop(large.pop());
        budget
            .start(Some(MIB / 2), std::time::Instant::now())
            .await
            .expect("a large body's share came back");
    }

    #[tokio::test]
    async fn a_chunked_body_counts_as_large_once_it_outgrows_a_small_one() {
        let budget = budget(MIB, 4 * MIB);
        let _large = fill_large_share(&budget).await;
        let mut chunked = budget.start(None, std::time::Instant::now()).await.unwrap();
        budget.cover(&mut chunked, 2 * KIB).await.unwrap();
        budget.cover(&mut chunked, SMALL_BODY).await.unwrap();
        assert!(budget.cover(&mut chunked, SMALL_BODY + 1).await.is_err());
    }

    #[tokio::test]
    async fn the_reserve_never_keeps_out_one_largest_body() {
        let budget = budget(MIB, MIB);
        let _whole = budget
            .start(Some(MIB), std::time::Instant::now())
            .await
            .expect("one largest body fits");
    }
}

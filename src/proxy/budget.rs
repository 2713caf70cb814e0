//! Reading request bodies within bounds: each body within `server.max_body_bytes` and
//! `server.body_timeout`, and all bodies being buffered at once within `server.max_buffered_bytes`.
//!
//! A request must be read whole before anything else can happen to it (its key is in the body),
//! so without a shared bound two dozen slow clients each sending a body near the limit hold
//! hundreds of MiB between them. The budget is a semaphore counted in KiB: a body reserves what
//! its `Content-Length` declares (or, when chunked, grows its reservation as it arrives) and gives
//! it back when the request ends. A request that finds no room waits up to `server.buffer_wait`,
//! then gets a retryable 503 in DynamoDB's shape; small requests (every GetItem) take one permit
//! without waiting while the budget has room.

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

/// The shared bound on bytes being buffered, and the per-body limits.
pub(crate) struct BodyBudget {
    slots: Arc<Semaphore>,
    max_body: u64,
    body_timeout: Duration,
    wait: Duration,
    gauge: IntGauge,
    refusals: IntCounter,
}

/// Bytes reserved for one body, given back when dropped; and when the body must have arrived.
pub(crate) struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    gauge: IntGauge,
    deadline: Instant,
}

impl Reservation {
    fn units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
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
            .min(u32::MAX as u64) as usize;
        BodyBudget {
            slots: Arc::new(Semaphore::new(units)),
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

    /// Starts reading a body: reserves what its `Content-Length` declares (waiting up to
    /// `server.buffer_wait` for room) and starts its `server.body_timeout`.
    pub(crate) async fn start(&self, declared: Option<u64>) -> Result<Reservation, ProtocolError> {
        let mut reservation = Reservation {
            permit: None,
            gauge: self.gauge.clone(),
            deadline: Instant::now() + self.body_timeout,
        };
        self.reserve(&mut reservation, declared.unwrap_or(0))
            .await?;
        Ok(reservation)
    }

    /// The body's next frame, within its timeout.
    pub(crate) async fn frame(
        &self,
        reservation: &Reservation,
        body: &mut Incoming,
    ) -> Result<Option<Result<Frame<Bytes>, hyper::Error>>, ProtocolError> {
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
    /// [`GROWTH`] at a time (a chunked body declares nothing up front).
    pub(crate) async fn cover(
        &self,
        reservation: &mut Reservation,
        total: u64,
    ) -> Result<(), ProtocolError> {
        let held = reservation.units() * UNIT;
        if total <= held {
            return Ok(());
        }
        self.reserve(reservation, (total - held).max(GROWTH)).await
    }

    /// Adds `bytes` (rounded up to whole units, capped at the largest body) to a reservation,
    /// waiting up to `server.buffer_wait` (and never past the body's deadline) for room.
    async fn reserve(
        &self,
        reservation: &mut Reservation,
        bytes: u64,
    ) -> Result<(), ProtocolError> {
        let have = reservation.units();
        let cap = self.max_body.div_ceil(UNIT).max(1);
        let want = (bytes.div_ceil(UNIT).max(1)).min(cap.saturating_sub(have).max(1)) as u32;
        let permit = match self.slots.clone().try_acquire_many_owned(want) {
            Ok(p) => p,
            Err(_) => {
                let until = reservation.deadline.min(Instant::now() + self.wait);
                let acquire = self.slots.clone().acquire_many_owned(want);
                match tokio::time::timeout_at(until, acquire).await {
                    Ok(Ok(p)) => p,
                    _ => {
                        self.refusals.inc();
                        return Err(ProtocolError::Overloaded(
                            "too many request bodies are being received at once; retry".into(),
                        ));
                    }
                }
            }
        };
        self.gauge.add((want as u64 * UNIT) as i64);
        match &mut reservation.permit {
            Some(held) => held.merge(permit),
            slot => *slot = Some(permit),
        }
        Ok(())
    }
}

//! The cache's clock: milliseconds on a monotonic clock, the time of entries' expiry, of the marks
//! writes leave (recently written, in doubt) and of key schema retries.
//!
//! The cache reads no clock of its own: it is given one, so that its tests move time instead of
//! sleeping, and so that every deadline it keeps is on one clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Milliseconds since some fixed moment; never goes backwards.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
}

/// The process's monotonic clock, counted from when this one was made.
pub struct MonotonicClock {
    origin_ms: u64,
}

impl MonotonicClock {
    pub fn new() -> Arc<MonotonicClock> {
        Arc::new(MonotonicClock {
            origin_ms: crate::clock::monotonic_ms(),
        })
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        crate::clock::monotonic_ms() - self.origin_ms
    }
}

/// A clock that moves only when told to: for tests of expiry and windows.
#[derive(Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> Arc<ManualClock> {
        Arc::new(ManualClock::default())
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as u64, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

//! Milliseconds on the monotonic clock, read without `Instant`'s arithmetic: the clock every
//! request reads twice or more (a connection's progress, an entry's expiry), where a millisecond
//! is precision enough.

/// Milliseconds on `CLOCK_MONOTONIC` (the clock `std::time::Instant` reads on Linux), from an
/// unspecified moment; never goes backwards.
pub fn monotonic_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    now.tv_sec as u64 * 1000 + now.tv_nsec as u64 / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn it_counts_milliseconds_as_instant_does() {
        // Each interval of one clock bracketed by the other's: what passed is the same, to the
        // millisecond (time passing is what is measured).
        let outer = Instant::now();
        let first = monotonic_ms();
        let inner = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let inner = inner.elapsed();
        let last = monotonic_ms();
        let outer = outer.elapsed();
        assert!(last - first <= outer.as_millis() as u64 + 1);
        assert!(last - first + 1 >= inner.as_millis() as u64);
        assert!(inner >= Duration::from_millis(20));
    }
}

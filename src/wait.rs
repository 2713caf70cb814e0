//! How ddbcache waits on what may not answer: [`Backoff`], the growing wait before retrying
//! something that failed (or, for a poll, found nothing), and [`within`], a bounded wait whose
//! running out is an error of the caller's own type. The accept loop, the upstream readiness probe,
//! the fleet bus's reconnections and the stream readers back off this way; the fleet's Redis calls
//! are bounded this way.

use std::future::Future;
use std::time::Duration;

/// Exponential backoff: a first wait, doubling on every retry up to a ceiling, and back to the
/// first after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first` (`max` if that is less), doubling up to `max`.
    pub(crate) fn new(first: Duration, max: Duration) -> Backoff {
        let first = first.min(max);
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// How long the next [`wait`](Self::wait) sleeps, for a log line that says when the retry
    /// comes.
    pub(crate) fn next(&self) -> Duration {
        self.next
    }

    /// Back to the first wait, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps the next wait, and doubles the one after (up to the ceiling).
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }
}

/// A bounded wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no answer within {0:?}")]
pub(crate) struct TimedOut(pub(crate) Duration);

/// The output of `f`, or [`TimedOut`] once `limit` has passed without one (`?` turns it into the
/// caller's error type).
pub(crate) async fn within<F: Future>(limit: Duration, f: F) -> Result<F::Output, TimedOut> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| TimedOut(limit))
}

#[cfg(test)]
mod tests {
    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// The waits `backoff` sleeps, as the paused clock measures them.
    async fn waits(backoff: &mut Backoff, n: usize) -> Vec<Duration> {
        let mut out = Vec::new();
        for _ in 0..n {
            let start = Instant::now();
            backoff.wait().await;
            out.push(start.elapsed());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn waits_double_up_to_the_ceiling_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(50 * MS, 300 * MS);
        assert_eq!(backoff.next(), 50 * MS);
        assert_eq!(
            waits(&mut backoff, 5).await,
            [50 * MS, 100 * MS, 200 * MS, 300 * MS, 300 * MS]
        );
        backoff.reset();
        assert_eq!(waits(&mut backoff, 2).await, [50 * MS, 100 * MS]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_wait_above_the_ceiling_is_the_ceiling() {
        let mut backoff = Backoff::new(50 * MS, 20 * MS);
        assert_eq!(waits(&mut backoff, 2).await, [20 * MS, 20 * MS]);
        backoff.reset();
        assert_eq!(backoff.next(), 20 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn within_gives_the_answer_or_times_out_at_its_limit() {
        assert_eq!(within(MS, async { 7 }).await, Ok(7));
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(within(250 * MS, never).await, Err(TimedOut(250 * MS)));
        assert_eq!(start.elapsed(), 250 * MS);
    }
}

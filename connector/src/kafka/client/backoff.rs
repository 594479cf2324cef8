//! Pacing retries, one policy for the whole client: the shared exponential backoff with
//! jitter (`connector_format::backoff`, which the host's restarts use too), never past
//! the operation's deadline, and never before the throttle a broker asked for has passed.
//!
//! A throttled broker (KIP-219, `protocol::throttle`) is not sent to until its throttle has
//! passed whatever this policy says: its connection holds queued requests until then. A
//! retry waits at least as long, so the time spent throttled does not count as its pause.

use std::time::{Duration, Instant};

use crate::kafka::network::poll;

/// The first pause and the longest, as the Java client's `retry.backoff.ms` and
/// `retry.backoff.max.ms` defaults.
const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(1);

/// The pauses between the attempts at one thing: each about twice the last, up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff(connector_format::backoff::Backoff);

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(FIRST, MAX)
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff(connector_format::backoff::Backoff::new(first, max))
    }

    /// When to try again after a failure at `now`: after the next pause, and not before
    /// `throttled_until`. `None` when that is not before `deadline` (no time for another
    /// attempt), or beyond what the clock can say.
    pub fn retry_at(
        &mut self,
        now: Instant,
        throttled_until: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Option<Instant> {
        let at = now
            .checked_add(self.0.next_delay())?
            .max(throttled_until.unwrap_or(now));
        match deadline {
            Some(deadline) if at >= deadline => None,
            _ => Some(at),
        }
    }

    /// Sleeps until the next attempt is due; false, at once, when it would not be due
    /// before `deadline`.
    pub fn sleep(&mut self, throttled_until: Option<Instant>, deadline: Instant) -> bool {
        let now = Instant::now();
        match self.retry_at(now, throttled_until, Some(deadline)) {
            Some(at) => {
                poll::sleep(at - now);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn never_retries_past_the_deadline() {
        let now = Instant::now();
        let mut b = Backoff::new(100 * MS, 100 * MS);
        assert_eq!(b.retry_at(now, None, Some(now + 50 * MS)), None);
        let at = b.retry_at(now, None, Some(now + 101 * MS)).unwrap();
        assert!(at <= now + 100 * MS);
        let mut b = Backoff::new(100 * MS, 100 * MS);
        let start = Instant::now();
        assert!(!b.sleep(None, start + 40 * MS));
        assert!(start.elapsed() < 40 * MS, "gave up without sleeping");
    }

    #[test]
    fn a_throttle_lengthens_the_pause_to_its_end() {
        let now = Instant::now();
        let mut b = Backoff::new(10 * MS, 10 * MS);
        let throttled = now + 500 * MS;
        assert_eq!(b.retry_at(now, Some(throttled), None), Some(throttled));
        assert_eq!(b.retry_at(now, Some(throttled), Some(now + 400 * MS)), None);
        // A throttle already over does not shorten or lengthen anything.
        let at = b.retry_at(now, Some(now - 5 * MS), None).unwrap();
        assert!(at >= now + 5 * MS && at <= now + 10 * MS);
    }
}

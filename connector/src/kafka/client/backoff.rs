//! Pacing retries, one policy for the whole client: exponential backoff with jitter,
//! never past the operation's deadline, and never before the throttle a broker asked for
//! has passed.
//!
//! Jitter keeps clients that failed together (a broker restart) from coming back in step.
//! A throttled broker (KIP-219, `protocol::throttle`) is not sent to until its throttle has
//! passed whatever this policy says: its connection holds queued requests until then. A
//! retry waits at least as long, so the time spent throttled does not count as its pause.

use std::time::{Duration, Instant};

use crate::kafka::network::poll;
use crate::kafka::protocol::jitter::random_up_to;

/// The first pause and the longest, as the Java client's `retry.backoff.ms` and
/// `retry.backoff.max.ms` defaults.
const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(1);

/// The pauses between the attempts at one thing: each about twice the last, up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(FIRST, MAX)
    }
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            failures: 0,
        }
    }

    /// The pause after one more failure: `first · 2^failures`, capped at `max`, drawn at
    /// random from the upper half of that. So every pause is at least the one before it
    /// until the cap, yet two clients failing together do not retry together.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .first
            .saturating_mul(1u32.checked_shl(self.failures).unwrap_or(u32::MAX))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_micros()).unwrap_or(u64::MAX);
        half.saturating_add(Duration::from_micros(random_up_to(spread)))
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
            .checked_add(self.next_delay())?
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
    fn each_pause_lies_in_the_upper_half_of_its_doubling_ceiling() {
        for _ in 0..200 {
            let mut b = Backoff::new(100 * MS, 10_000 * MS);
            for ceiling in [100, 200, 400, 800, 1600] {
                let d = b.next_delay();
                assert!(
                    d >= ceiling * MS / 2 && d <= ceiling * MS,
                    "{d:?} for {ceiling} ms"
                );
            }
        }
    }

    #[test]
    fn pauses_grow_until_the_cap_then_stay_under_it() {
        for _ in 0..200 {
            let mut b = Backoff::new(10 * MS, 300 * MS);
            let pauses: Vec<Duration> = (0..40).map(|_| b.next_delay()).collect();
            // 10, 20, 40, 80, 160 ms ceilings: each draw at least the one before.
            assert!(pauses[..5].windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
            assert!(
                pauses[5..].iter().all(|d| *d >= 150 * MS && *d <= 300 * MS),
                "{pauses:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_the_pauses() {
        let firsts: Vec<Duration> = (0..50).map(|_| Backoff::default().next_delay()).collect();
        let distinct = firsts.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct > 40, "{firsts:?}");
    }

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

    #[test]
    fn huge_numbers_do_not_overflow() {
        let mut b = Backoff::new(Duration::MAX, Duration::MAX);
        for _ in 0..70 {
            assert!(b.next_delay() >= Duration::MAX / 2);
        }
        let _ = random_up_to(u64::MAX);
        assert_eq!(random_up_to(0), 0);
    }
}

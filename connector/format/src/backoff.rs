//! Pauses between attempts, one policy for guest and host: exponential with jitter. The
//! connector paces its retries with it (never past a deadline, at least a broker's
//! throttle: `kafka/client/backoff.rs`), the host its restarts of a failed pipeline.
//!
//! Jitter keeps clients that failed together (a broker restart) from coming back in step.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The pauses between the attempts at one thing: each about twice the last, up to a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
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
}

thread_local! {
    /// xorshift64* state: jitter needs spread, not secrecy. Seeded once per thread from
    /// std's random hash keys (the WASI random source in the component) and the clock.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    // xorshift never leaves zero.
    h.finish() | 1
}

/// A draw from `0..=n`, near enough uniform for jitter.
pub fn random_up_to(n: u64) -> u64 {
    let x = RNG.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    });
    x.checked_rem(n.wrapping_add(1)).unwrap_or(x)
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
        let firsts: Vec<Duration> = (0..50)
            .map(|_| Backoff::new(100 * MS, 1000 * MS).next_delay())
            .collect();
        let distinct = firsts.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert!(distinct > 40, "{firsts:?}");
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

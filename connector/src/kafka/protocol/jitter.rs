//! Jitter: random spreads, so clients that acted together (a broker restart, sessions
//! begun together) do not act again in step. Spread, not secrecy.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

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

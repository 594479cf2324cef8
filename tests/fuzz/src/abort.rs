//! Naming the case when the process aborts (a failed allocation, a stack overflow), which
//! `catch_unwind` cannot catch: a SIGABRT handler writes the seed and case running then.

use std::sync::atomic::{AtomicU64, Ordering};

static SEED: AtomicU64 = AtomicU64::new(0);
static CASE: AtomicU64 = AtomicU64::new(u64::MAX);

/// Installs the handler for a run seeded with `seed`.
pub fn install(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
    let handler = on_abort as extern "C" fn(libc::c_int);
    // SAFETY: the handler only reads atomics and calls write(2), both async-signal-safe.
    unsafe { libc::signal(libc::SIGABRT, handler as libc::sighandler_t) };
}

/// Marks case `i` as running.
pub fn running(i: u64) {
    CASE.store(i, Ordering::Relaxed);
}

extern "C" fn on_abort(_: libc::c_int) {
    let mut buf = [0u8; 128];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        let n = bytes.len().min(buf.len() - len);
        buf[len..len + n].copy_from_slice(&bytes[..n]);
        len += n;
    };
    put(b"\nFAILED: the process aborted in seed ");
    put(digits(SEED.load(Ordering::Relaxed), &mut [0; 20]));
    put(b" case ");
    put(digits(CASE.load(Ordering::Relaxed), &mut [0; 20]));
    put(b" (rerun it with --seed and --case)\n");
    // SAFETY: writing a buffer we own to stderr.
    unsafe { libc::write(2, buf.as_ptr().cast(), len) };
}

/// `n` in decimal, without allocating.
fn digits(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut at = out.len();
    loop {
        at -= 1;
        out[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[at..];
        }
    }
}

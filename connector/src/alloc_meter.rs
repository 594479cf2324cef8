//! A global allocator that counts the bytes each thread holds, so tests and the fuzz driver
//! can measure the peak a decode of untrusted bytes allocates (`peak_during`). Counts are
//! per thread (tests run in parallel), kept in const thread-locals that never allocate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Meter;

thread_local! {
    static HELD: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(by: usize) {
    let held = HELD.with(|h| {
        h.set(h.get().saturating_add(by));
        h.get()
    });
    PEAK.with(|p| p.set(p.get().max(held)));
}

fn shrank(by: usize) {
    // Memory another thread allocated may be freed here: saturate.
    HELD.with(|h| h.set(h.get().saturating_sub(by)));
}

// SAFETY: every call goes to the system allocator as it is; only counters change besides.
unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        shrank(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Both blocks may be held at once while the contents move.
        grew(new_size);
        shrank(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the most bytes this thread held at once during
/// it, beyond what it held before (0 unless `Meter` is the global allocator).
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let start = HELD.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, PEAK.with(Cell::get).saturating_sub(start))
}

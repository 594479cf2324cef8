//! What one instance may consume, and the meters that enforce it: memory (a store limiter
//! summing every linear memory and table of the instance), CPU (time running guest code in
//! one call, checked on every epoch tick), handles (the size of its resource table),
//! sockets, log lines, and how long each call may take. A limit hit traps the instance
//! with an error that names the limit; nothing outside that instance notices.

use std::time::{Duration, Instant};

use wasmtime::{CallHook, ResourceLimiter, UpdateDeadline};

/// Per-instance limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes of linear memory and tables the instance may grow to, all of them together.
    pub memory: usize,
    /// Guest code time one call into the instance may take. Waiting on I/O and for a
    /// thread does not count; a guest that spins for this long is stopped.
    pub cpu: Duration,
    /// Open handles (sockets, streams, pollables) the instance may hold at once.
    pub handles: usize,
    /// Open sockets (host file descriptors) the instance may hold at once.
    pub sockets: usize,
    /// Log lines per second the instance may write, after a burst of ten times as many.
    pub log_lines: u32,
    /// How long each call into the instance may take, waiting included.
    pub deadlines: Deadlines,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            cpu: Duration::from_secs(10),
            handles: 1000,
            sockets: 100,
            log_lines: 100,
            deadlines: Deadlines::default(),
        }
    }
}

/// The least memory an instance may be given: less cannot hold a component's stack.
pub const MIN_MEMORY: usize = 1 << 20;

/// The most memory an instance may be given: a wasm32 linear memory is at most 4 GiB, and
/// so is each memory slot of the engine's pool (`EngineOptions::max_memory`).
pub const MAX_MEMORY: usize = 4 << 30;

/// `bytes` as a memory limit, or why it cannot be one (both bounds named, in MiB).
pub fn memory_limit(bytes: u128) -> Result<usize, String> {
    let mib = |b: usize| b >> 20;
    match usize::try_from(bytes) {
        Ok(b) if (MIN_MEMORY..=MAX_MEMORY).contains(&b) => Ok(b),
        _ => Err(format!(
            "an instance's memory must be from {} MiB to {} MiB (a wasm32 memory is at most 4 GiB), not {} MiB",
            mib(MIN_MEMORY),
            mib(MAX_MEMORY),
            bytes >> 20
        )),
    }
}

/// The longest each call into an instance may take, from the host's call to its return.
/// A call past its deadline stops the instance (the call is abandoned, so its state is
/// unknown) and fails its pipeline alone.
#[derive(Debug, Clone, PartialEq)]
pub struct Deadlines {
    pub validate: Duration,
    /// `open`: for a source, joining its group and finding its offsets.
    pub open: Duration,
    /// `read` (on top of the wait it is given) and `lag`.
    pub read: Duration,
    /// `write`: at least the destination's `deliveryTimeout`, or writes are cut short.
    pub write: Duration,
    /// `ack`, which may commit offsets.
    pub ack: Duration,
    /// `teardown`, which commits and leaves the group.
    pub teardown: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        let s = Duration::from_secs;
        Deadlines {
            validate: s(10),
            open: s(120),
            read: s(60),
            write: s(300),
            ack: s(60),
            teardown: s(60),
        }
    }
}

/// A token bucket: `burst` at once, refilled at `rate` per second.
#[derive(Debug)]
pub struct Budget {
    tokens: f64,
    burst: f64,
    rate: f64,
    at: Instant,
}

impl Budget {
    pub fn new(burst: f64, rate: f64) -> Self {
        Budget {
            tokens: burst,
            burst,
            rate,
            at: Instant::now(),
        }
    }

    /// Takes `n` tokens if there are that many.
    pub fn take(&mut self, n: f64) -> bool {
        self.take_at(n, Instant::now())
    }

    fn take_at(&mut self, n: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }
}

/// The store-side meters of one instance.
pub struct Meters {
    limits: Limits,
    /// Since when guest code runs, while it does.
    running_since: Option<Instant>,
    /// Guest code time in the current call into the instance.
    spent: Duration,
    /// Host calls the guest is in (the host may call back into the guest inside one).
    in_host: u32,
    /// Bytes of all the instance's linear memories and tables together.
    memory: usize,
    /// The last growth allowed, taken back if it then fails: (before, after) in bytes.
    growing: Option<(usize, usize)>,
    /// Why the instance was stopped, once it was.
    pub(crate) violation: Option<String>,
}

impl Meters {
    pub fn new(limits: &Limits) -> Self {
        Meters {
            limits: limits.clone(),
            running_since: None,
            spent: Duration::ZERO,
            in_host: 0,
            memory: 0,
            growing: None,
            violation: None,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Follows the guest in and out of host code. Every host function and libcall
    /// (including the epoch check that yields) is bracketed by `CallingHost` and
    /// `ReturningFromHost`, so time spent waiting for I/O or for a thread is not counted.
    /// Inside a host call, the host may call back into the guest (its allocator, to place a
    /// returned list in guest memory): that guest code counts, but it is no new call
    /// (which would reset the meter: a guest could spin for ever, asking the host for a
    /// list now and then), and an allocator that spins is stopped like any other code.
    pub fn on(&mut self, hook: CallHook, now: impl FnOnce() -> Instant) {
        match hook {
            CallHook::CallingWasm if self.in_host > 0 => self.running_since = Some(now()),
            CallHook::ReturningFromWasm if self.in_host > 0 => self.stop_clock(now),
            CallHook::CallingWasm => {
                self.spent = Duration::ZERO;
                self.running_since = Some(now());
            }
            CallHook::ReturningFromHost => {
                self.in_host = self.in_host.saturating_sub(1);
                self.running_since = Some(now());
            }
            CallHook::CallingHost => {
                self.in_host += 1;
                self.stop_clock(now);
            }
            CallHook::ReturningFromWasm => self.stop_clock(now),
        }
    }

    /// A call from the host begins: no host call of an earlier one (a call the host gave
    /// up on) is still open.
    pub fn begin_call(&mut self) {
        self.in_host = 0;
    }

    fn stop_clock(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(since) = self.running_since.take() {
            self.spent += now().saturating_duration_since(since);
        }
    }

    /// Called on each epoch tick that finds the guest running (from inside host code):
    /// yield the thread to other instances, or stop the guest once this call computed
    /// past its limit.
    pub fn tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.spent > self.limits.cpu {
            return Err(self.violate(format!(
                "CPU limit: computed {} ms in one call (limit {} ms)",
                self.spent.as_millis(),
                self.limits.cpu.as_millis()
            )));
        }
        Ok(UpdateDeadline::Yield(1))
    }

    /// Stops the instance for `cause`: the error to trap it with, and the cause kept.
    pub(crate) fn violate(&mut self, cause: String) -> wasmtime::Error {
        let e = wasmtime::Error::msg(cause.clone());
        self.violation = Some(cause);
        e
    }
}

/// Bytes a table element takes in the host (a pointer, as wasmtime documents).
const TABLE_ELEMENT: usize = std::mem::size_of::<usize>();

/// Memories, tables and core instances one instance may have: a Rust connector has one
/// memory, a few tables and a handful of core instances; a component made to take the
/// host's pool slots or memory with thousands of small ones is refused.
pub const MAX_MEMORIES: usize = 4;
pub const MAX_TABLES: usize = 16;
pub const MAX_CORE_INSTANCES: usize = 32;

impl Meters {
    /// Charges growing one memory or table from `current` to `desired` bytes against the
    /// instance's one memory limit.
    fn grow(&mut self, what: &str, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = (self.memory - current.min(self.memory)).saturating_add(desired);
        if total <= self.limits.memory {
            self.growing = Some((self.memory, total));
            self.memory = total;
            return Ok(true);
        }
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        Err(self.violate(format!(
            "memory limit: {what} would take the instance from {:.1} to {:.1} MiB (limit {:.1} MiB, \
             all its memories and tables together)",
            mib(self.memory),
            mib(total),
            mib(self.limits.memory)
        )))
    }

    fn grow_failed(&mut self) {
        if let Some((before, after)) = self.growing.take()
            && self.memory == after
        {
            self.memory = before;
        }
    }
}

impl ResourceLimiter for Meters {
    fn memory_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        self.grow("a linear memory", current, desired)
    }

    fn memory_grow_failed(&mut self, _: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn table_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        let bytes = |n: usize| n.saturating_mul(TABLE_ELEMENT);
        self.grow("a table", bytes(current), bytes(desired))
    }

    fn table_grow_failed(&mut self, _: wasmtime::Error) -> wasmtime::Result<()> {
        self.grow_failed();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meters_of_30ms() -> Meters {
        Meters::new(&Limits {
            cpu: Duration::from_millis(30),
            ..Limits::default()
        })
    }

    #[test]
    fn only_guest_code_time_counts_and_each_call_starts_afresh() {
        let ms = Duration::from_millis;
        let mut m = meters_of_30ms();
        let t0 = Instant::now();
        m.on(CallHook::CallingWasm, || t0);
        m.on(CallHook::CallingHost, || t0 + ms(20));
        // A second in host code (waiting on I/O) is not computing.
        m.on(CallHook::ReturningFromHost, || t0 + ms(1020));
        m.on(CallHook::CallingHost, || t0 + ms(1030));
        assert!(matches!(m.tick(), Ok(UpdateDeadline::Yield(1))));
        m.on(CallHook::ReturningFromHost, || t0 + ms(1030));
        m.on(CallHook::ReturningFromWasm, || t0 + ms(1035));
        m.on(CallHook::CallingWasm, || t0 + ms(2000));
        m.on(CallHook::CallingHost, || t0 + ms(2025));
        assert!(m.tick().is_ok(), "a new call starts from zero");
        m.on(CallHook::ReturningFromHost, || t0 + ms(2025));
        m.on(CallHook::CallingHost, || t0 + ms(2035));
        let Err(e) = m.tick() else {
            panic!("35 ms in one call passes a 30 ms limit")
        };
        assert!(
            e.to_string().contains("CPU limit: computed 35 ms in one call"),
            "{e}"
        );
        assert_eq!(m.violation.as_deref(), Some(e.to_string().as_str()));
    }

    #[test]
    fn a_call_back_into_the_guest_inside_a_host_call_counts_but_does_not_reset() {
        let ms = Duration::from_millis;
        let mut m = meters_of_30ms();
        let t0 = Instant::now();
        m.on(CallHook::CallingWasm, || t0);
        for i in 0..4 {
            // 8 ms computing, then a host call that places its answer in guest memory
            // through the guest's allocator, which computes 2 ms.
            let at = t0 + ms(10 * i + 8);
            m.on(CallHook::CallingHost, || at);
            m.on(CallHook::CallingWasm, || at);
            m.on(CallHook::ReturningFromWasm, || at + ms(2));
            m.on(CallHook::ReturningFromHost, || at + ms(2));
        }
        m.on(CallHook::CallingHost, || t0 + ms(40));
        let Err(e) = m.tick() else {
            panic!("40 ms in one call passes a 30 ms limit, allocator calls or not")
        };
        assert!(e.to_string().contains("computed 40 ms"), "{e}");
        // An allocator that spins is stopped on a tick inside it.
        let mut m = meters_of_30ms();
        m.on(CallHook::CallingWasm, || t0);
        m.on(CallHook::CallingHost, || t0 + ms(1));
        m.on(CallHook::CallingWasm, || t0 + ms(1));
        m.on(CallHook::CallingHost, || t0 + ms(40));
        assert!(m.tick().is_err(), "39 ms spent in the allocator");
    }

    #[test]
    fn memory_past_the_limit_is_refused_with_a_named_cause() {
        let mut m = Meters::new(&Limits {
            memory: 64 << 20,
            ..Limits::default()
        });
        assert!(m.memory_growing(0, 64 << 20, None).unwrap());
        let e = m.memory_growing(64 << 20, 65 << 20, None).unwrap_err();
        assert!(e.to_string().contains("memory limit"), "{e}");
        assert!(m.violation.is_some());
    }

    #[test]
    fn every_memory_and_table_of_an_instance_counts_against_its_one_limit() {
        let mut m = Meters::new(&Limits {
            memory: 64 << 20,
            ..Limits::default()
        });
        assert!(m.memory_growing(0, 24 << 20, None).unwrap());
        assert!(m.memory_growing(0, 24 << 20, None).unwrap(), "a second memory");
        assert!(m.table_growing(0, 1 << 20, None).unwrap(), "a table of 8 MiB");
        let e = m.memory_growing(0, 24 << 20, None).unwrap_err();
        assert!(e.to_string().contains("from 56.0 to 80.0 MiB"), "{e}");
        // A growth allowed and then failed is taken back.
        let mut m = Meters::new(&Limits::default());
        assert!(m.memory_growing(0, 1 << 20, None).unwrap());
        assert!(m.memory_growing(1 << 20, 2 << 20, None).unwrap());
        m.memory_grow_failed(wasmtime::Error::msg("no")).unwrap();
        assert_eq!(m.memory, 1 << 20);
    }

    #[test]
    fn a_memory_limit_is_between_one_mib_and_four_gib() {
        assert_eq!(memory_limit(64 << 20), Ok(64 << 20));
        assert_eq!(memory_limit(4 << 30), Ok(MAX_MEMORY));
        let e = memory_limit((4 << 30) + 1).unwrap_err();
        assert!(e.contains("from 1 MiB to 4096 MiB"), "{e}");
        assert!(memory_limit(u128::from(u64::MAX) << 20).is_err());
        assert!(memory_limit(1023 << 10).is_err());
    }

    #[test]
    fn a_budget_gives_its_burst_then_its_rate() {
        let mut b = Budget::new(3.0, 10.0);
        let t0 = Instant::now();
        assert!((0..3).all(|_| b.take_at(1.0, t0)));
        assert!(!b.take_at(1.0, t0));
        assert!(b.take_at(1.0, t0 + Duration::from_millis(100)));
        assert!(!b.take_at(1.0, t0 + Duration::from_millis(100)));
        assert!(
            b.take_at(3.0, t0 + Duration::from_secs(10)),
            "refilled to its burst"
        );
        assert!(!b.take_at(1.0, t0 + Duration::from_secs(10)));
    }
}

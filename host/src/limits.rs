//! What one instance may consume, and the meters that enforce it: linear memory (a store
//! limiter), CPU (time running guest code in one call, checked on every epoch tick) and
//! handles (the size of its resource table). A limit hit traps the instance with an error
//! that names the limit; nothing outside that instance notices.

use std::time::{Duration, Instant};

use wasmtime::{CallHook, ResourceLimiter, UpdateDeadline};

/// Per-instance limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Bytes of linear memory the instance may grow to.
    pub memory: usize,
    /// Guest code time one call into the instance may take. Waiting on I/O and for a
    /// thread does not count; a guest that spins for this long is stopped.
    pub cpu: Duration,
    /// Open handles (sockets, streams, pollables) the instance may hold at once.
    pub handles: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            cpu: Duration::from_secs(10),
            handles: 1000,
        }
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
            violation: None,
        }
    }

    /// Follows the guest in and out of host code. Every host function and libcall
    /// (including the epoch check that yields) is bracketed by `CallingHost` and
    /// `ReturningFromHost`, so time spent waiting for I/O or for a thread is not counted.
    /// Inside a host call, the host may call back into the guest (its allocator, to place a
    /// returned list in guest memory): that is part of the host call, neither a new call
    /// (which would reset the meter: a guest could spin for ever, asking the host for a
    /// list now and then) nor timed (the clock is read only where it counts).
    pub fn on(&mut self, hook: CallHook, now: impl FnOnce() -> Instant) {
        match hook {
            CallHook::CallingWasm | CallHook::ReturningFromWasm if self.in_host > 0 => {}
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

    fn violate(&mut self, cause: String) -> wasmtime::Error {
        let e = wasmtime::Error::msg(cause.clone());
        self.violation = Some(cause);
        e
    }
}

impl ResourceLimiter for Meters {
    fn memory_growing(&mut self, current: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        if desired <= self.limits.memory {
            return Ok(true);
        }
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        Err(self.violate(format!(
            "memory limit: linear memory would grow from {:.1} to {:.1} MiB (limit {:.1} MiB)",
            mib(current),
            mib(desired),
            mib(self.limits.memory)
        )))
    }

    fn table_growing(&mut self, _: usize, desired: usize, _: Option<usize>) -> wasmtime::Result<bool> {
        const MAX_TABLE: usize = 100_000;
        if desired <= MAX_TABLE {
            return Ok(true);
        }
        Err(self.violate(format!(
            "table limit: a table would grow to {desired} elements (limit {MAX_TABLE})"
        )))
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
    fn a_call_back_into_the_guest_inside_a_host_call_neither_resets_nor_times() {
        let ms = Duration::from_millis;
        let mut m = meters_of_30ms();
        let t0 = Instant::now();
        m.on(CallHook::CallingWasm, || t0);
        for i in 0..4 {
            // 10 ms computing, then a host call that places its answer in guest memory
            // through the guest's allocator.
            let at = t0 + ms(10 * (i + 1));
            m.on(CallHook::CallingHost, || at);
            m.on(CallHook::CallingWasm, || {
                panic!("no clock read for the allocator")
            });
            m.on(CallHook::ReturningFromWasm, || {
                panic!("no clock read for the allocator")
            });
            m.on(CallHook::ReturningFromHost, || at);
        }
        m.on(CallHook::CallingHost, || t0 + ms(40));
        let Err(e) = m.tick() else {
            panic!("40 ms in one call passes a 30 ms limit, allocator calls or not")
        };
        assert!(e.to_string().contains("computed 40 ms"), "{e}");
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
}

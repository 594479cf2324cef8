//! Sockets, each a host file descriptor: an instance may hold `Limits::sockets` at once,
//! and all instances together at most the host's budget (its descriptor limit less a
//! reserve for its own files). wasmtime-wasi's `create-tcp-socket` is replaced in the
//! linker by one that counts first. Past a bound the instance is stopped, naming it.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Result;
use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::p2::TcpSocket;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host as _;
use wasmtime_wasi::sockets::WasiSocketsView;

use super::HostState;

const INTERFACE: &str = "wasi:sockets/tcp-create-socket@0.2.12";

/// Descriptors the host keeps for itself (component files, pipeline files, its listener,
/// stdio, the runtime) out of its limit.
const RESERVED: usize = 256;

/// Sockets held by all instances of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// The host's socket budget, set once at start from its descriptor limit.
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Raises the soft descriptor limit to the hard one and sets the host's socket budget
/// from it; returns the budget.
pub fn init_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    let budget = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return BUDGET.load(Ordering::Relaxed);
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        usize::try_from(lim.rlim_cur)
            .unwrap_or(usize::MAX)
            .saturating_sub(RESERVED)
    };
    BUDGET.store(budget, Ordering::Relaxed);
    budget
}

/// The host's socket budget (all instances together).
pub fn budget() -> usize {
    BUDGET.load(Ordering::Relaxed)
}

/// The sockets one instance holds: the table slots of those it created. A socket the
/// guest dropped leaves its slot empty (or holding something else), so the live ones are
/// counted when it asks for another, without a hook on every drop.
#[derive(Default)]
pub struct Sockets {
    reps: Vec<u32>,
    /// What this instance counts against the host's budget.
    held: usize,
}

impl Drop for Sockets {
    fn drop(&mut self) {
        HELD.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl Sockets {
    /// Forgets sockets no longer in `table`, and gives their share of the budget back.
    fn recount(&mut self, table: &wasmtime::component::ResourceTable) {
        self.reps.sort_unstable();
        self.reps.dedup();
        self.reps
            .retain(|&rep| table.get(&Resource::<TcpSocket>::new_borrow(rep)).is_ok());
        let freed = self.held - self.reps.len();
        HELD.fetch_sub(freed, Ordering::Relaxed);
        self.held = self.reps.len();
    }

    /// Takes one socket from the budgets, or says which is exhausted.
    fn take(&mut self, limit: usize) -> Result<(), String> {
        if self.held >= limit {
            return Err(format!(
                "socket limit: holds {} open sockets, the limit",
                self.held
            ));
        }
        let budget = BUDGET.load(Ordering::Relaxed);
        let before = HELD.fetch_add(1, Ordering::Relaxed);
        if before >= budget {
            HELD.fetch_sub(1, Ordering::Relaxed);
            return Err(format!(
                "host socket budget: the host holds {before} sockets, its budget (descriptor limit less {RESERVED})"
            ));
        }
        self.held += 1;
        Ok(())
    }
}

/// Replaces `create-tcp-socket` in `linker` (which must allow shadowing).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    linker
        .instance(INTERFACE)?
        .func_wrap("create-tcp-socket", |store, (family,): (IpAddressFamily,)| {
            create(store, family)
        })
        .map_err(anyhow::Error::from)
}

type Answer = wasmtime::Result<(Result<Resource<TcpSocket>, ErrorCode>,)>;

fn create(mut store: StoreContextMut<'_, HostState>, family: IpAddressFamily) -> Answer {
    let state = store.data_mut();
    state.sockets.recount(&state.table);
    if let Err(why) = state.sockets.take(state.meters.limits().sockets) {
        return Err(state.meters.violate(why));
    }
    let made = state.sockets().create_tcp_socket(family);
    let state = store.data_mut();
    match made {
        Ok(socket) => {
            state.sockets.reps.push(socket.rep());
            Ok((Ok(socket),))
        }
        Err(e) => {
            // Not made: its share goes back.
            state.sockets.held -= 1;
            HELD.fetch_sub(1, Ordering::Relaxed);
            e.downcast().map(|code| (Err(code),))
        }
    }
}

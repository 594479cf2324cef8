//! The one wasmtime engine a host process shares between all its instances, configured
//! for many tenants: instances come from a pre-reserved pool (instantiation is a slot
//! reuse, not a fresh mmap), and a ticker advances the epoch so that every running guest
//! yields to the executor once per tick and can be stopped when it computes too long.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::{MAX_CORE_INSTANCES, MAX_MEMORIES, MAX_MEMORY, MAX_TABLES};
use crate::runtime::Connector;
use crate::sandbox::HostState;

/// How often the epoch advances: the scheduling slice of a computing guest and the
/// granularity of the CPU limit.
const TICK: Duration = Duration::from_millis(10);

/// Settings of the shared engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Take instances from a pool reserved up front (fast to instantiate); off: map
    /// each instance's memory when it is created.
    pub pooling: bool,
    /// Instances that can be alive at once (the size of the pool).
    pub max_instances: u32,
    /// The largest linear memory any instance may have; per-instance limits are lower.
    pub max_memory: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            pooling: true,
            max_instances: 1000,
            max_memory: MAX_MEMORY,
        }
    }
}

/// An engine plus the linker of everything a connector may import (WASI 0.2 and `log`).
#[derive(Clone)]
pub struct SharedEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
}

impl SharedEngine {
    pub fn new(opts: &EngineOptions) -> Result<Self> {
        let engine = match Engine::new(&config(opts.pooling.then_some(opts))) {
            Ok(e) => e,
            // A pool is reserved address space up front; where that is refused (a low
            // `ulimit -v`), instances are allocated one by one instead.
            Err(e) => {
                eprintln!("warning: no instance pool ({e}); allocating instances on demand");
                Engine::new(&config(None)).map_err(anyhow::Error::from)?
            }
        };
        start_ticker(&engine);
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        Connector::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking the connector world")?;
        crate::sandbox::add_to_linker(&mut linker).context("linking the sandbox's WASI functions")?;
        Ok(SharedEngine {
            engine,
            linker: Arc::new(linker),
        })
    }
}

fn config(pool: Option<&EngineOptions>) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    // A pooled stack goes from one tenant to the next: nothing of one may be read by another.
    c.async_stack_zeroing(true);
    if let Some(opts) = pool {
        let n = opts.max_instances;
        let mut p = PoolingAllocationConfig::new();
        // Each instance may take at most its share of every pool (the store limits say the
        // same), so however its component is made, n instances always fit and no tenant's
        // component can take the slots of another's.
        let (memories, tables, cores) = (MAX_MEMORIES as u32, MAX_TABLES as u32, MAX_CORE_INSTANCES as u32);
        p.total_component_instances(n)
            .max_core_instances_per_component(cores)
            .max_memories_per_component(memories)
            .max_tables_per_component(tables)
            .total_core_instances(n.saturating_mul(cores))
            .total_memories(n.saturating_mul(memories))
            .total_tables(n.saturating_mul(tables))
            .total_stacks(n)
            .max_memory_size(opts.max_memory);
        c.allocation_strategy(InstanceAllocationStrategy::Pooling(p));
    }
    c
}

/// Advances the epoch every tick for as long as the process lives.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

#[cfg(test)]
mod tests {
    use wasmtime::Store;
    use wasmtime::component::{Component, Linker};

    use super::*;
    use crate::limits::Limits;
    use crate::sandbox::Allowlist;

    /// A component of `instances` core instances, each with its own memory of `pages`.
    fn component(instances: usize, pages: u32) -> Vec<u8> {
        let mut text = format!("(component (core module $m (memory {pages}))");
        text += &"(core instance (instantiate $m))".repeat(instances);
        text += ")";
        wat::parse_str(&text).unwrap()
    }

    async fn instantiate(e: &SharedEngine, bytes: &[u8], limits: &Limits) -> Result<Store<HostState>> {
        let c = Component::from_binary(&e.engine, bytes).map_err(anyhow::Error::from)?;
        let state = HostState::new("t/p/source", &Allowlist::default(), limits);
        let mut store = Store::new(&e.engine, state);
        store.limiter(|s| &mut s.meters);
        Linker::<HostState>::new(&e.engine)
            .instantiate_async(&mut store, &c)
            .await
            .map_err(anyhow::Error::from)?;
        Ok(store)
    }

    fn engine(max_instances: u32) -> SharedEngine {
        SharedEngine::new(&EngineOptions {
            max_instances,
            ..EngineOptions::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn the_memories_of_all_core_instances_count_against_the_one_limit() {
        let e = engine(4);
        let limits = Limits {
            memory: 64 << 20,
            ..Limits::default()
        };
        // 20 MiB each: three fit in 64 MiB, four do not.
        assert!(instantiate(&e, &component(3, 320), &limits).await.is_ok());
        let err = instantiate(&e, &component(4, 320), &limits).await.err().unwrap();
        assert!(format!("{err:#}").contains("memory limit"), "{err:#}");
    }

    #[tokio::test]
    async fn a_component_of_many_small_memories_cannot_take_the_pool() {
        let e = engine(2);
        let limits = Limits::default();
        let many = component(MAX_MEMORIES + 1, 1);
        let err = instantiate(&e, &many, &limits).await.err().unwrap();
        assert!(format!("{err:#}").contains("memories"), "{err:#}");
        let cores = wat::parse_str(
            "(component (core module $m) ".to_string()
                + &"(core instance (instantiate $m))".repeat(MAX_CORE_INSTANCES + 1)
                + ")",
        )
        .unwrap();
        let err = instantiate(&e, &cores, &limits).await.err().unwrap();
        assert!(format!("{err:#}").contains("core module instances"), "{err:#}");
        // The pool still has room for every instance it was sized for, at their caps.
        let full = component(MAX_MEMORIES, 1);
        let a = instantiate(&e, &full, &limits).await.unwrap();
        let b = instantiate(&e, &full, &limits).await.unwrap();
        drop((a, b));
    }
}

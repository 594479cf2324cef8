//! Loading a connector component once and running instances of it, each in its own
//! store, sandbox and limits. Calls are async: many instances share a few threads.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use wasmtime::component::ResourceTableError;
use wasmtime::{Engine, Store};

use crate::batch::RecordBatch;
use crate::cache;
use crate::engine::SharedEngine;
use crate::limits::Limits;
use crate::sandbox::{Allowlist, HostState};

wasmtime::component::bindgen!({
    world: "connector",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

pub use opencdc::connector::types as wit;

impl opencdc::connector::types::Host for HostState {}

impl opencdc::connector::log::Host for HostState {
    async fn log(&mut self, level: opencdc::connector::log::Level, message: String) {
        use opencdc::connector::log::Level;
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        crate::progress::log(&format!("[{}] {level} {message}", self.tag));
    }
}

/// An error the connector returned (as opposed to a trap).
#[derive(Debug, Clone)]
pub struct GuestError(pub wit::Error);

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use wit::Error::*;
        match &self.0 {
            InvalidConfig(c) => write!(f, "invalid config \"{}\": {}", c.parameter, c.message),
            Connection(m) => write!(f, "connection error: {m}"),
            Remote(r) => write!(f, "remote error {} {}: {}", r.code, r.name, r.message),
            Timeout(m) => write!(f, "timed out: {m}"),
            RecordTooLarge(m) => write!(f, "record too large: {m}"),
            CorruptData(m) => write!(f, "corrupt data: {m}"),
            InvalidState(m) => write!(f, "invalid state: {m}"),
            InvalidRecord(m) => write!(f, "invalid record: {m}"),
            Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for GuestError {}

/// A connector component, compiled and linked, ready to be instantiated any number of
/// times in the shared engine.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    pre: ConnectorPre<HostState>,
}

impl Runtime {
    /// Loads the component at `component`, compiled or from `cache_dir`.
    pub fn load(shared: &SharedEngine, component: &Path, cache_dir: &Path) -> Result<Self> {
        let compiled = cache::load(&shared.engine, component, cache_dir)?;
        let pre = shared
            .linker
            .instantiate_pre(&compiled)
            .and_then(ConnectorPre::new)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("{} does not fit the connector world", component.display()))?;
        Ok(Runtime {
            engine: shared.engine.clone(),
            pre,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A new instance tagged `tag` (e.g. `tenant/pipeline/source`), confined to `allow`
    /// and `limits`.
    pub async fn instantiate(&self, tag: &str, allow: &Allowlist, limits: &Limits) -> Result<Instance> {
        let mut store = Store::new(&self.engine, HostState::new(tag, allow, limits));
        store.limiter(|s| &mut s.meters);
        store.epoch_deadline_callback(|mut s| s.data_mut().meters.tick());
        store.set_epoch_deadline(1);
        store.call_hook(|mut s, hook| {
            s.data_mut().meters.on(hook, Instant::now);
            Ok(())
        });
        let bindings = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| format!("cannot instantiate connector {tag}"))?;
        Ok(Instance {
            store,
            bindings,
            tag: tag.to_string(),
            stopped: None,
        })
    }
}

/// One instance of the connector in its own store.
pub struct Instance {
    store: Store<HostState>,
    bindings: Connector,
    tag: String,
    /// Why the instance stopped (a trap or a limit); no call enters it afterwards.
    stopped: Option<String>,
}

impl Instance {
    pub async fn specify(&mut self) -> Result<wit::Specification> {
        self.alive()?;
        let r = self
            .bindings
            .opencdc_connector_specifier()
            .call_specify(&mut self.store)
            .await;
        self.trap(r)
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// What the sandbox refused this instance so far, e.g. `the sandbox denied
    /// TcpConnect 10.0.0.1:80`; empty when nothing.
    pub fn denied(&self) -> String {
        self.store.data().denied.summary()
    }

    /// Before each call: refuses a stopped instance, and starts the meters afresh.
    fn alive(&mut self) -> Result<()> {
        match &self.stopped {
            Some(why) => Err(anyhow::anyhow!("{why}")),
            None => {
                self.store.data_mut().meters.begin_call();
                Ok(())
            }
        }
    }

    /// Turns a trap into an error naming the instance and the cause: the limit it hit,
    /// or the trap and what the guest wrote to stderr (a panic message).
    fn trap<T>(&mut self, r: wasmtime::Result<T>) -> Result<T> {
        r.map_err(|e| {
            let state = self.store.data();
            let full = matches!(e.root_cause().downcast_ref(), Some(ResourceTableError::Full));
            let cause = match (&state.meters.violation, e.downcast_ref::<wasmtime::Trap>()) {
                (Some(limit), _) => limit.clone(),
                _ if full => format!(
                    "handle limit: holds {} open handles, the limit",
                    state.table.max_capacity()
                ),
                (None, Some(trap)) => format!("trapped: {trap}"),
                (None, None) => format!("failed: {}", e.root_cause()),
            };
            let mut why = format!("connector {} stopped: {cause}", self.tag);
            let stderr = state.stderr.take();
            if !stderr.trim().is_empty() {
                why.push_str(&format!("; guest stderr: {}", stderr.trim()));
            }
            self.stopped = Some(why.clone());
            anyhow::anyhow!(why)
        })
    }

    /// A write's outcome: how many records were written, and the error for the rest.
    fn written(&mut self, r: wasmtime::Result<wit::WriteOutcome>) -> Result<(u32, Option<GuestError>)> {
        let outcome = self.trap(r)?;
        Ok((outcome.written, outcome.error.map(GuestError)))
    }

    fn guest<T>(&mut self, r: wasmtime::Result<Result<T, wit::Error>>) -> Result<T> {
        self.trap(r)?.map_err(|e| GuestError(e).into())
    }

    pub fn into_source(self) -> Source {
        Source(self)
    }

    pub fn into_destination(self) -> Destination {
        Destination(self)
    }
}

pub type ConfigPairs = Vec<(String, String)>;

/// An instance playing the source.
pub struct Source(Instance);

impl Source {
    pub fn instance(&self) -> &Instance {
        &self.0
    }

    pub async fn validate(&mut self, config: &ConfigPairs) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_validate(&mut i.store, config)
            .await;
        i.guest(r)
    }

    pub async fn open(&mut self, config: &ConfigPairs, position: Option<Vec<u8>>) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_open(&mut i.store, config, position.as_ref())
            .await;
        i.guest(r)
    }

    pub async fn read(&mut self, max: u32, wait_ms: u32) -> Result<Vec<wit::Record>> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_read(&mut i.store, max, wait_ms)
            .await;
        i.guest(r)
    }

    /// `read`, packed: the records as views into a few buffers, no allocation per field.
    pub async fn read_batch(&mut self, max: u32, wait_ms: u32) -> Result<RecordBatch> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_read_batch(&mut i.store, max, wait_ms)
            .await;
        let batch = i.guest(r)?;
        RecordBatch::new(batch).map_err(|e| anyhow::anyhow!("connector {}: {e}", i.tag))
    }

    pub async fn ack(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_ack(&mut i.store, positions)
            .await;
        i.guest(r)
    }

    /// `ack`, with the positions packed into one buffer on the way (`ack-batch`): no
    /// allocation per position on either side.
    pub async fn ack_batch<'p>(&mut self, positions: impl IntoIterator<Item = &'p [u8]>) -> Result<()> {
        let (mut bytes, mut ends) = (Vec::new(), Vec::new());
        for p in positions {
            bytes.extend_from_slice(p);
            let end = u32::try_from(bytes.len()).context("positions of more than 4 GiB in one ack")?;
            ends.push(end);
        }
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_ack_batch(&mut i.store, &bytes, &ends)
            .await;
        i.guest(r)
    }

    /// Records the source has not handed out yet, if it knows.
    pub async fn lag(&mut self) -> Result<Option<u64>> {
        let i = &mut self.0;
        i.alive()?;
        let r = i.bindings.opencdc_connector_source().call_lag(&mut i.store).await;
        i.trap(r)
    }

    pub async fn teardown(&mut self) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_source()
            .call_teardown(&mut i.store)
            .await;
        i.guest(r)
    }
}

/// An instance playing the destination.
pub struct Destination(Instance);

impl Destination {
    pub fn instance(&self) -> &Instance {
        &self.0
    }

    pub async fn validate(&mut self, config: &ConfigPairs) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_destination()
            .call_validate(&mut i.store, config)
            .await;
        i.guest(r)
    }

    pub async fn open(&mut self, config: &ConfigPairs) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_destination()
            .call_open(&mut i.store, config)
            .await;
        i.guest(r)
    }

    /// Writes `records`; returns how many were written and the error for the rest.
    pub async fn write(&mut self, records: &[wit::Record]) -> Result<(u32, Option<GuestError>)> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_destination()
            .call_write(&mut i.store, records)
            .await;
        i.written(r)
    }

    /// `write`, the records packed (`write-batch`): a few copies into the guest instead of
    /// an allocation in it per field.
    pub async fn write_batch(&mut self, batch: &RecordBatch) -> Result<(u32, Option<GuestError>)> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_destination()
            .call_write_batch(&mut i.store, batch.as_wit())
            .await;
        i.written(r)
    }

    pub async fn teardown(&mut self) -> Result<()> {
        let i = &mut self.0;
        i.alive()?;
        let r = i
            .bindings
            .opencdc_connector_destination()
            .call_teardown(&mut i.store)
            .await;
        i.guest(r)
    }
}

//! Loading a connector component once and running instances of it, each in its own
//! store, sandbox and limits. Calls are async: many instances share a few threads.

use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wasmtime::component::ResourceTableError;
use wasmtime::{Engine, Store};

use crate::batch::{Bounds, RecordBatch};
use crate::cache;
use crate::engine::SharedEngine;
use crate::escape::shown;
use crate::failure::{Class, Stopped};
use crate::limits::Limits;
use crate::sandbox::log::{Verdict, cut};
use crate::sandbox::{Allowlist, HostState};

wasmtime::component::bindgen!({
    world: "connector",
    path: "../wit",
    // `log` may stop a flooding instance.
    imports: { "opencdc:connector/log.log": async | trappable, default: async },
    exports: { default: async },
});

pub use opencdc::connector::types as wit;

impl opencdc::connector::types::Host for HostState {}

impl opencdc::connector::log::Host for HostState {
    async fn log(&mut self, level: opencdc::connector::log::Level, message: String) -> wasmtime::Result<()> {
        use opencdc::connector::log::Level;
        let dropped = match self.logs.admit() {
            Verdict::Show { dropped } => dropped,
            Verdict::Drop => return Ok(()),
            Verdict::Flood(why) => return Err(self.meters.violate(why)),
        };
        if dropped > 0 {
            crate::progress::log(&format!(
                "[{}] WARN {dropped} log lines dropped (over its budget)",
                self.tag
            ));
        }
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        crate::progress::log(&format!("[{}] {level} {}", self.tag, shown(&cut(&message))));
        Ok(())
    }
}

/// An error the connector returned (as opposed to a trap).
#[derive(Debug, Clone)]
pub struct GuestError(pub wit::Error);

/// Guest text, escaped (see `escape`) and cut, as it is shown.
fn said(m: &str) -> String {
    shown(&cut(m)).into_owned()
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use wit::Error::*;
        match &self.0 {
            InvalidConfig(c) => write!(
                f,
                "invalid config \"{}\": {}",
                said(&c.parameter),
                said(&c.message)
            ),
            Connection(m) => write!(f, "connection error: {}", said(m)),
            NotPermitted(m) => write!(f, "not permitted: {}", said(m)),
            Tls(m) => write!(f, "tls error: {}", said(m)),
            Remote(r) => write!(
                f,
                "remote error {} {}: {}",
                r.code,
                said(&r.name),
                said(&r.message)
            ),
            Timeout(m) => write!(f, "timed out: {}", said(m)),
            RecordTooLarge(m) => write!(f, "record too large: {}", said(m)),
            CorruptData(m) => write!(f, "corrupt data: {}", said(m)),
            InvalidState(m) => write!(f, "invalid state: {}", said(m)),
            InvalidRecord(m) => write!(f, "invalid record: {}", said(m)),
            Other(m) => write!(f, "{}", said(m)),
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
        Self::link(shared, compiled, component)
    }

    /// `load`, for a component already read (`name` is how messages call it).
    pub fn from_bytes(shared: &SharedEngine, bytes: &[u8], name: &Path, cache_dir: &Path) -> Result<Self> {
        let compiled = cache::compile(&shared.engine, bytes, name, cache_dir)?;
        Self::link(shared, compiled, name)
    }

    fn link(
        shared: &SharedEngine,
        compiled: wasmtime::component::Component,
        component: &Path,
    ) -> Result<Self> {
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
        // A component's start functions run now: bounded like a call.
        let deadline = limits.deadlines.validate;
        let bindings = tokio::time::timeout(deadline, self.pre.instantiate_async(&mut store))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "did not start within {}",
                    connector_format::duration::show(deadline)
                )
            })
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map_err(|e| match &store.data().meters.violation {
                Some(limit) => anyhow::anyhow!("{limit}"),
                None => e,
            })
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
    /// Why the instance stopped (a trap, a limit, a deadline); no call enters it afterwards.
    stopped: Option<Stopped>,
}

/// The calls into an instance, by the deadline that bounds them.
#[derive(Debug, Clone, Copy)]
enum Call {
    Specify,
    Validate,
    Open,
    Read { wait_ms: u32 },
    Lag,
    Write,
    Ack,
    Teardown,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Specify => "specify",
            Call::Validate => "validate",
            Call::Open => "open",
            Call::Read { .. } => "read",
            Call::Lag => "lag",
            Call::Write => "write",
            Call::Ack => "ack",
            Call::Teardown => "teardown",
        }
    }

    fn deadline(self, l: &Limits) -> Duration {
        let d = &l.deadlines;
        match self {
            Call::Specify | Call::Validate => d.validate,
            Call::Open => d.open,
            Call::Read { wait_ms } => d.read + Duration::from_millis(wait_ms.into()),
            Call::Lag => d.read,
            Call::Write => d.write,
            Call::Ack => d.ack,
            Call::Teardown => d.teardown,
        }
    }
}

/// Calls into an instance: `call!(instance, Call::X, |bindings, store| future)`. Refuses a
/// stopped instance, starts the meters afresh, bounds the call by its deadline and turns a
/// trap into the instance's stop. (A macro, not a function taking a closure: the future
/// borrows both the bindings and the store, and must stay `Send`.)
macro_rules! call {
    ($inst:expr, $call:expr, |$b:ident, $s:ident| $body:expr) => {{
        let i: &mut Instance = $inst;
        match i.enter($call) {
            Err(e) => Err(e),
            Ok(deadline) => {
                let ($b, $s) = (&i.bindings, &mut i.store);
                let r = tokio::time::timeout(deadline, $body).await;
                i.leave($call, deadline, r)
            }
        }
    }};
}

/// `call!` for a call whose result is the connector's own `result<T, error>`.
macro_rules! guest_call {
    ($inst:expr, $call:expr, |$b:ident, $s:ident| $body:expr) => {
        call!($inst, $call, |$b, $s| $body).and_then(|r| r.map_err(|e| GuestError(e).into()))
    };
}

impl Instance {
    /// Before a call: refuses a stopped instance, starts the meters afresh; the deadline.
    fn enter(&mut self, call: Call) -> Result<Duration> {
        if let Some(stopped) = &self.stopped {
            return Err(stopped.clone().into());
        }
        let meters = &mut self.store.data_mut().meters;
        meters.begin_call();
        Ok(call.deadline(meters.limits()))
    }

    /// After a call: its result, or the instance stopped for a trap or the deadline.
    /// Dropping a call past its deadline abandons it mid-way, so its state is unknown.
    fn leave<T>(
        &mut self,
        call: Call,
        deadline: Duration,
        r: Result<wasmtime::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T> {
        match r {
            Ok(r) => self.trap(r),
            // A remote system that hangs may answer next time.
            Err(_) => Err(self.refuse(
                format_args!(
                    "deadline: {} did not return within {}",
                    call.name(),
                    connector_format::duration::show(deadline)
                ),
                Class::Retriable,
            )),
        }
    }

    pub async fn specify(&mut self) -> Result<wit::Specification> {
        call!(self, Call::Specify, |b, s| b
            .opencdc_connector_specifier()
            .call_specify(s))
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// What the sandbox refused this instance so far, e.g. `the sandbox denied
    /// TcpConnect 10.0.0.1:80: ...`; empty when nothing.
    pub fn denied(&self) -> String {
        self.store.data().denied.summary()
    }

    /// The limits the instance runs under.
    pub fn limits(&self) -> &Limits {
        self.store.data().meters.limits()
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
                (None, None) => format!("failed: {}", shown(&e.root_cause().to_string())),
            };
            // A limit hit or a trap comes back the same on a new instance with the same
            // settings and limits; restarting it would only spend the host's resources.
            self.refuse(cause, Class::Permanent)
        })
    }

    /// Stops the instance for `why` (a trap, a limit, a deadline, or something it returned
    /// the host refuses), of `class`, with what it wrote to stderr (a panic message).
    fn refuse(&mut self, why: impl fmt::Display, class: Class) -> anyhow::Error {
        let mut why = format!("connector {} stopped: {why}", self.tag);
        let stderr = self.store.data().stderr.take();
        if !stderr.is_empty() {
            why.push_str(&format!("; guest stderr: {stderr}"));
        }
        let stopped = Stopped { why, class };
        self.stopped = Some(stopped.clone());
        stopped.into()
    }

    /// Checks `config` as the settings of `role`.
    pub async fn validate(&mut self, role: Role, config: &ConfigPairs) -> Result<()> {
        match role {
            Role::Source => guest_call!(self, Call::Validate, |b, s| b
                .opencdc_connector_source()
                .call_validate(s, config)),
            Role::Destination => guest_call!(self, Call::Validate, |b, s| b
                .opencdc_connector_destination()
                .call_validate(s, config)),
        }
    }

    pub fn into_source(self) -> Source {
        Source(self)
    }

    pub fn into_destination(self) -> Destination {
        Destination(self)
    }
}

pub type ConfigPairs = Vec<(String, String)>;

/// The role an instance plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Source,
    Destination,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Destination => "destination",
        }
    }
}

/// An instance playing the source.
pub struct Source(Instance);

impl Source {
    pub fn instance(&self) -> &Instance {
        &self.0
    }

    pub async fn open(&mut self, config: &ConfigPairs, position: Option<Vec<u8>>) -> Result<()> {
        let p = position.as_ref();
        guest_call!(&mut self.0, Call::Open, |b, s| b
            .opencdc_connector_source()
            .call_open(s, config, p))
    }

    /// Up to `max` records as a list (lifted field by field; a trusted component's path:
    /// the pipelines read with `read_batch`, whose size the host bounds).
    pub async fn read(&mut self, max: u32, wait_ms: u32) -> Result<Vec<wit::Record>> {
        guest_call!(&mut self.0, Call::Read { wait_ms }, |b, s| b
            .opencdc_connector_source()
            .call_read(s, max, wait_ms))
    }

    /// `read`, packed: the records as views into a few buffers, no allocation per field.
    /// A batch of more than `max` records, or one that would expand past the instance's
    /// memory limit (spans may overlap), stops the instance.
    pub async fn read_batch(&mut self, max: u32, wait_ms: u32) -> Result<RecordBatch> {
        let batch = guest_call!(&mut self.0, Call::Read { wait_ms }, |b, s| b
            .opencdc_connector_source()
            .call_read_batch(s, max, wait_ms))?;
        let bounds = Bounds {
            records: max as usize,
            bytes: self.0.limits().memory,
        };
        RecordBatch::new(batch, &bounds)
            .map_err(|e| self.0.refuse(format!("read-batch: {e}"), Class::Permanent))
    }

    pub async fn ack(&mut self, positions: &[Vec<u8>]) -> Result<()> {
        guest_call!(&mut self.0, Call::Ack, |b, s| b
            .opencdc_connector_source()
            .call_ack(s, positions))
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
        guest_call!(&mut self.0, Call::Ack, |b, s| b
            .opencdc_connector_source()
            .call_ack_batch(s, &bytes, &ends))
    }

    /// Records the source has not handed out yet, if it knows.
    pub async fn lag(&mut self) -> Result<Option<u64>> {
        call!(&mut self.0, Call::Lag, |b, s| b
            .opencdc_connector_source()
            .call_lag(s))
    }

    pub async fn teardown(&mut self) -> Result<()> {
        guest_call!(&mut self.0, Call::Teardown, |b, s| b
            .opencdc_connector_source()
            .call_teardown(s))
    }
}

/// An instance playing the destination.
pub struct Destination(Instance);

impl Destination {
    pub fn instance(&self) -> &Instance {
        &self.0
    }

    pub async fn open(&mut self, config: &ConfigPairs) -> Result<()> {
        guest_call!(&mut self.0, Call::Open, |b, s| b
            .opencdc_connector_destination()
            .call_open(s, config))
    }

    /// Writes `records`; returns how many were written and the error for the rest.
    pub async fn write(&mut self, records: &[wit::Record]) -> Result<(u32, Option<GuestError>)> {
        let outcome = call!(&mut self.0, Call::Write, |b, s| b
            .opencdc_connector_destination()
            .call_write(s, records))?;
        Ok((outcome.written, outcome.error.map(GuestError)))
    }

    /// `write`, the records packed (`write-batch`): a few copies into the guest instead of
    /// an allocation in it per field.
    pub async fn write_batch(&mut self, batch: &RecordBatch) -> Result<(u32, Option<GuestError>)> {
        let batch = batch.as_wit();
        let outcome = call!(&mut self.0, Call::Write, |b, s| b
            .opencdc_connector_destination()
            .call_write_batch(s, batch))?;
        Ok((outcome.written, outcome.error.map(GuestError)))
    }

    pub async fn teardown(&mut self) -> Result<()> {
        guest_call!(&mut self.0, Call::Teardown, |b, s| b
            .opencdc_connector_destination()
            .call_teardown(s))
    }
}

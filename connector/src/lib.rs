//! Kafka source and destination connector. This file is only the WIT glue: it turns
//! calls of the `opencdc:connector` world into calls of `Source` and `Destination`, and
//! their values into WIT values. Everything else is plain Rust, tested natively.

#[cfg(any(test, feature = "alloc-meter"))]
pub mod alloc_meter;
#[cfg(test)]
#[global_allocator]
static METER: alloc_meter::Meter = alloc_meter::Meter;
pub mod commits;
pub mod config;
pub mod destination;
pub mod error;
pub mod kafka;
pub mod log;
pub mod mapping;
pub mod packed;
pub mod position;
pub mod record;
pub mod source;

#[cfg(target_family = "wasm")]
mod glue {
    use std::cell::RefCell;
    use std::time::Duration;

    use crate::config::{self as cfg, DestinationConfig, Role, SourceConfig};
    use crate::destination::Destination;
    use crate::error::Error;
    use crate::packed::Packed;
    use crate::record as rec;
    use crate::source::Source;
    use connector_format::RecordView as _;
    use connector_format::record_batch::{Batch, Bounds};

    wit_bindgen::generate!({ world: "connector", path: "../wit" });

    use exports::opencdc::connector::{destination, source, specifier};
    use opencdc::connector::log as wit_log;
    use opencdc::connector::types as wit;

    /// The one role this instance plays, once opened.
    // One value per instance, in a thread-local: its size does not matter.
    #[allow(clippy::large_enum_variant)]
    enum State {
        Idle,
        Source(Source),
        Destination(Destination),
    }

    thread_local! {
        static STATE: RefCell<State> = const { RefCell::new(State::Idle) };
    }

    struct Component;
    export!(Component);

    /// The lifecycle events, alike for both roles: a created or updated connector's
    /// settings are validated; a deleted one holds nothing to release.
    macro_rules! lifecycle {
        () => {
            fn on_created(config: wit::Config) -> Result<(), wit::Error> {
                Self::validate(config)
            }

            fn on_updated(_old: wit::Config, new: wit::Config) -> Result<(), wit::Error> {
                Self::validate(new)
            }

            fn on_deleted(_config: wit::Config) -> Result<(), wit::Error> {
                Ok(())
            }
        };
    }

    pub fn log(level: crate::log::Level, msg: &str) {
        let level = match level {
            crate::log::Level::Debug => wit_log::Level::Debug,
            crate::log::Level::Info => wit_log::Level::Info,
            crate::log::Level::Warn => wit_log::Level::Warn,
            crate::log::Level::Error => wit_log::Level::Error,
        };
        wit_log::log(level, msg);
    }

    impl specifier::Guest for Component {
        fn specify() -> wit::Specification {
            wit::Specification {
                name: "kafka".into(),
                summary: "Kafka source and destination, speaking the Kafka protocol from inside a Wasm sandbox.".into(),
                description: "The source reads every partition of one or more topics as a member of a consumer group, committing what was acked; the destination writes record batches to partition leaders, keyed records partitioned by murmur2 like the Java client.".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                author: "kafka-wasm-connector authors".into(),
                source_params: params(Role::Source),
                destination_params: params(Role::Destination),
            }
        }
    }

    fn params(role: Role) -> Vec<wit::Parameter> {
        cfg::params(role)
            .map(|p| wit::Parameter {
                name: p.name.into(),
                description: p.description.into(),
                type_: match p.kind {
                    cfg::ParamType::String => wit::ParameterType::String,
                    cfg::ParamType::Int => wit::ParameterType::Int,
                    cfg::ParamType::Float => wit::ParameterType::Float,
                    cfg::ParamType::Bool => wit::ParameterType::Bool,
                    cfg::ParamType::Duration => wit::ParameterType::Duration,
                    cfg::ParamType::List => wit::ParameterType::List,
                },
                default: p.default.map(Into::into),
                required: p.required,
                allowed: p.allowed.iter().map(|a| a.to_string()).collect(),
                sensitive: p.sensitive,
            })
            .collect()
    }

    impl source::Guest for Component {
        fn validate(config: wit::Config) -> Result<(), wit::Error> {
            SourceConfig::parse(&config).map(drop).map_err(into_wit)
        }

        fn open(config: wit::Config, position: Option<wit::Position>) -> Result<(), wit::Error> {
            let config = SourceConfig::parse(&config).map_err(into_wit)?;
            let source = Source::open(config, position.as_deref()).map_err(into_wit)?;
            STATE.with(|s| *s.borrow_mut() = State::Source(source));
            Ok(())
        }

        fn read(max: u32, wait_ms: u32) -> Result<Vec<wit::Record>, wit::Error> {
            with_source(|s| s.read(max as usize, Duration::from_millis(wait_ms as u64)))
                .map(|records| records.into_iter().map(record_into_wit).collect())
        }

        fn read_batch(max: u32, wait_ms: u32) -> Result<wit::RecordBatch, wit::Error> {
            with_source(|s| s.read_packed(max as usize, Duration::from_millis(wait_ms as u64)))
                .and_then(packed_into_wit)
        }

        fn ack(positions: Vec<wit::Position>) -> Result<(), wit::Error> {
            with_source(|s| s.ack(positions.iter().map(Vec::as_slice)))
        }

        fn ack_batch(positions: Vec<u8>, ends: Vec<u32>) -> Result<(), wit::Error> {
            let split = crate::source::split_positions(&positions, &ends).map_err(into_wit)?;
            with_source(|s| s.ack(split))
        }

        fn lag() -> Option<u64> {
            STATE.with(|s| match &*s.borrow() {
                State::Source(src) => src.lag(),
                _ => None,
            })
        }

        fn teardown() -> Result<(), wit::Error> {
            match STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), State::Idle)) {
                State::Source(mut src) => src.teardown().map_err(into_wit),
                _ => Ok(()),
            }
        }

        lifecycle!();
    }

    impl destination::Guest for Component {
        fn validate(config: wit::Config) -> Result<(), wit::Error> {
            DestinationConfig::parse(&config).map(drop).map_err(into_wit)
        }

        fn open(config: wit::Config) -> Result<(), wit::Error> {
            let config = DestinationConfig::parse(&config).map_err(into_wit)?;
            let dest = Destination::open(config).map_err(into_wit)?;
            STATE.with(|s| *s.borrow_mut() = State::Destination(dest));
            Ok(())
        }

        fn write(records: Vec<wit::Record>) -> wit::WriteOutcome {
            write(records.into_iter().map(record_from_wit).collect())
        }

        fn write_batch(b: wit::RecordBatch) -> wit::WriteOutcome {
            let bounds = Bounds::NONE;
            match Batch::check(&b.bytes, &b.text, &b.metadata, &b.records, &bounds) {
                Ok(batch) => write(batch.iter().map(|r| r.to_record()).collect()),
                Err(e) => wit::WriteOutcome {
                    written: 0,
                    error: Some(into_wit(Error::InvalidRecord(format!("the host sent {e}")))),
                },
            }
        }

        fn teardown() -> Result<(), wit::Error> {
            if let State::Destination(mut d) =
                STATE.with(|s| std::mem::replace(&mut *s.borrow_mut(), State::Idle))
            {
                d.teardown();
            }
            Ok(())
        }

        lifecycle!();
    }

    fn with_source<T>(f: impl FnOnce(&mut Source) -> crate::error::Result<T>) -> Result<T, wit::Error> {
        STATE.with(|s| match &mut *s.borrow_mut() {
            State::Source(src) => f(src).map_err(into_wit),
            _ => Err(into_wit(not_open("source"))),
        })
    }

    fn not_open(role: &str) -> Error {
        Error::InvalidState(format!("the {role} is not open"))
    }

    fn into_wit(e: Error) -> wit::Error {
        match e {
            Error::InvalidConfig { parameter, message } => {
                wit::Error::InvalidConfig(wit::ConfigError { parameter, message })
            }
            Error::Connection(m) => wit::Error::Connection(m),
            Error::NotPermitted(m) => wit::Error::NotPermitted(m),
            Error::Tls(m) => wit::Error::Tls(m),
            Error::Kafka {
                code,
                name,
                message,
                retriable,
            } => wit::Error::Remote(wit::RemoteError {
                code: code as i32,
                name,
                message,
                retriable,
            }),
            Error::Timeout(m) => wit::Error::Timeout(m),
            Error::RecordTooLarge(m) => wit::Error::RecordTooLarge(m),
            Error::CorruptData(m) => wit::Error::CorruptData(m),
            Error::InvalidState(m) => wit::Error::InvalidState(m),
            Error::InvalidRecord(m) => wit::Error::InvalidRecord(m),
            Error::Other(m) => wit::Error::Other(m),
        }
    }

    fn data_from_wit(d: wit::Data) -> rec::Data {
        match d {
            wit::Data::Raw(b) => rec::Data::Raw(b),
            wit::Data::Structured(s) => rec::Data::Structured(s),
        }
    }

    fn data_into_wit(d: rec::Data) -> wit::Data {
        match d {
            rec::Data::Raw(b) => wit::Data::Raw(b),
            rec::Data::Structured(s) => wit::Data::Structured(s),
        }
    }

    fn packed_into_wit(p: Packed) -> Result<wit::RecordBatch, wit::Error> {
        let b = p.finish().map_err(|e| into_wit(Error::Other(e.0)))?;
        Ok(wit::RecordBatch {
            bytes: b.bytes,
            text: b.text,
            metadata: b.metadata,
            records: b.records,
        })
    }

    /// Hands records to the open destination.
    fn write(records: Vec<rec::Record>) -> wit::WriteOutcome {
        let outcome = STATE.with(|s| match &mut *s.borrow_mut() {
            State::Destination(d) => d.write(records),
            _ => crate::destination::WriteOutcome {
                written: 0,
                error: Some(not_open("destination")),
            },
        });
        wit::WriteOutcome {
            written: outcome.written as u32,
            error: outcome.error.map(into_wit),
        }
    }

    fn record_from_wit(r: wit::Record) -> rec::Record {
        rec::Record {
            position: r.position,
            operation: match r.operation {
                wit::Operation::Create => rec::Operation::Create,
                wit::Operation::Update => rec::Operation::Update,
                wit::Operation::Delete => rec::Operation::Delete,
                wit::Operation::Snapshot => rec::Operation::Snapshot,
            },
            metadata: r.metadata,
            key: r.key.map(data_from_wit),
            before: r.payload.before.map(data_from_wit),
            after: r.payload.after.map(data_from_wit),
        }
    }

    fn record_into_wit(r: rec::Record) -> wit::Record {
        wit::Record {
            position: r.position,
            operation: match r.operation {
                rec::Operation::Create => wit::Operation::Create,
                rec::Operation::Update => wit::Operation::Update,
                rec::Operation::Delete => wit::Operation::Delete,
                rec::Operation::Snapshot => wit::Operation::Snapshot,
            },
            metadata: r.metadata,
            key: r.key.map(data_into_wit),
            payload: wit::Change {
                before: r.before.map(data_into_wit),
                after: r.after.map(data_into_wit),
            },
        }
    }
}

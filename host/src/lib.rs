//! The connector host: loads connector components and runs instances of them, each in its
//! own sandbox, many tenants in one process. `engine` owns the shared wasmtime engine
//! (instance pool, epoch ticker), `runtime` instances and calls, `sandbox` what an
//! instance may touch (egress, name lookups, sockets, logs), `limits` what it may consume,
//! `escape` guest text made safe to show, `failure` whether a failure is permanent or
//! retriable, `cache` compiled components on disk, `batch`
//! a batch of records as it crosses the boundary (the formats themselves, shared with the
//! guest, are `connector_format`'s). `pipeline`
//! reads pipeline files and runs them; `metrics` counts what they do, `progress` shows it
//! and carries every log line.

pub mod batch;
pub mod cache;
pub mod engine;
pub mod escape;
pub mod failure;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod progress;
pub mod runtime;
pub mod sandbox;

pub use batch::{Bounds, DataRef, RecordBatch, RecordRef};
pub use engine::{EngineOptions, SharedEngine};
pub use limits::Limits;
pub use runtime::{Destination, GuestError, Instance, Role, Runtime, Source, wit};
pub use sandbox::Allowlist;

//! The connector host: loads a connector component and runs instances of it, each in its
//! own sandbox. `runtime` owns instances and calls, `sandbox` what an instance may touch,
//! `cache` compiled components on disk, `opencdc_json` records as JSON Lines, `batch` a
//! source's packed records.

pub mod batch;
pub mod cache;
pub mod opencdc_json;
pub mod runtime;
pub mod sandbox;

pub use batch::{DataRef, RecordBatch, RecordRef};
pub use runtime::{Destination, GuestError, Instance, Runtime, Source, wit};
pub use sandbox::{Allowlist, Limits};

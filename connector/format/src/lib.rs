//! What the connector (guest) and its host both read and write, defined once: the
//! OpenCDC record (`record`), the packed `record-batch` of the WIT contract
//! (`record_batch`), OpenCDC JSON (`opencdc_json`), durations (`duration`) and the pauses
//! between attempts (`backoff`: the connector's retries, the host's restarts). It builds
//! natively and for `wasm32-wasip2`, and depends on no WIT bindings: each side converts
//! its own bindings' types at its edge.

pub mod backoff;
pub mod duration;
pub mod opencdc_json;
pub mod record;
pub mod record_batch;

pub use record::{Data, DataRef, Operation, Record, RecordView};

/// A value of one of these formats that does not hold, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

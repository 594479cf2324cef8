//! The OpenCDC record as the connector's logic sees it (defined with the host in
//! `connector-format`, independent of the WIT bindings: `lib.rs` converts), and the
//! metadata keys this connector's source sets.

pub use connector_format::record::*;

pub const HEADER_PREFIX: &str = "kafka.header.";
pub const PARTITION: &str = "kafka.partition";
pub const OFFSET: &str = "kafka.offset";

//! The OpenCDC record as the connector's logic sees it, independent of the WIT bindings
//! (`lib.rs` converts one to the other), so mapping to and from Kafka is tested natively.

pub type Metadata = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Snapshot,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    Raw(Vec<u8>),
    /// A JSON object text.
    Structured(String),
}

impl Data {
    /// The bytes Kafka stores for this data: raw bytes as they are, structured data as
    /// its JSON text.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Data::Raw(b) => b,
            Data::Structured(s) => s.into_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub position: Vec<u8>,
    pub operation: Operation,
    pub metadata: Metadata,
    pub key: Option<Data>,
    pub before: Option<Data>,
    pub after: Option<Data>,
}

/// Standard OpenCDC metadata keys.
pub const COLLECTION: &str = "opencdc.collection";
pub const CREATED_AT: &str = "opencdc.createdAt";
pub const READ_AT: &str = "opencdc.readAt";
/// Metadata keys this connector's source sets.
pub const HEADER_PREFIX: &str = "kafka.header.";
pub const PARTITION: &str = "kafka.partition";
pub const OFFSET: &str = "kafka.offset";

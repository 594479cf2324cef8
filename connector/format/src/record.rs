//! The OpenCDC record, owned (`Record`) or seen through any type that holds one
//! (`RecordView`: an owned record, a record of a packed batch, a WIT binding's record).

pub type Metadata = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Snapshot,
}

impl Operation {
    const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Update,
        Operation::Delete,
        Operation::Snapshot,
    ];

    /// Its number in a `record-batch` (the order of the WIT enum).
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.get(code as usize).copied()
    }

    /// Its name in OpenCDC JSON.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Snapshot => "snapshot",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.name() == name)
    }
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

    pub fn as_ref(&self) -> DataRef<'_> {
        match self {
            Data::Raw(b) => DataRef::Raw(b),
            Data::Structured(s) => DataRef::Structured(s),
        }
    }
}

/// A key or payload value, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRef<'a> {
    Raw(&'a [u8]),
    /// A JSON object text.
    Structured(&'a str),
}

impl DataRef<'_> {
    pub fn to_owned(self) -> Data {
        match self {
            DataRef::Raw(b) => Data::Raw(b.to_vec()),
            DataRef::Structured(s) => Data::Structured(s.to_string()),
        }
    }

    /// The bytes of the value: raw bytes, or the JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            DataRef::Raw(b) => b,
            DataRef::Structured(s) => s.as_bytes(),
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

/// A record seen in place, whatever holds it: what packing a batch and writing JSON read.
pub trait RecordView {
    fn position(&self) -> &[u8];
    fn operation(&self) -> Operation;
    /// The metadata entries, in order.
    fn metadata(&self) -> impl Iterator<Item = (&str, &str)>;
    fn key(&self) -> Option<DataRef<'_>>;
    fn before(&self) -> Option<DataRef<'_>>;
    fn after(&self) -> Option<DataRef<'_>>;

    /// The record, owned.
    fn to_record(&self) -> Record {
        Record {
            position: self.position().to_vec(),
            operation: self.operation(),
            metadata: self
                .metadata()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key: self.key().map(DataRef::to_owned),
            before: self.before().map(DataRef::to_owned),
            after: self.after().map(DataRef::to_owned),
        }
    }
}

impl RecordView for Record {
    fn position(&self) -> &[u8] {
        &self.position
    }
    fn operation(&self) -> Operation {
        self.operation
    }
    fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn key(&self) -> Option<DataRef<'_>> {
        self.key.as_ref().map(Data::as_ref)
    }
    fn before(&self) -> Option<DataRef<'_>> {
        self.before.as_ref().map(Data::as_ref)
    }
    fn after(&self) -> Option<DataRef<'_>> {
        self.after.as_ref().map(Data::as_ref)
    }
}

/// Standard OpenCDC metadata keys.
pub const COLLECTION: &str = "opencdc.collection";
pub const CREATED_AT: &str = "opencdc.createdAt";
pub const READ_AT: &str = "opencdc.readAt";

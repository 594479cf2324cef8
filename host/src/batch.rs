//! A batch of records as `read-batch` returns it and `write-batch` takes it, kept as the
//! WIT value (its layout and checks are `connector_format::record_batch`, shared with the
//! guest). A batch from a guest is checked once, against `Bounds`; then its records are
//! handed out as borrowed views (`RecordRef`) without allocating.

use anyhow::{Result, anyhow};
use connector_format::record_batch::{Batch, Builder};
pub use connector_format::record_batch::{Bounds, PackedRecord as RecordRef};
pub use connector_format::{DataRef, Operation, RecordView};

use crate::runtime::wit;

/// A checked `wit::RecordBatch`.
#[derive(Debug, Clone)]
pub struct RecordBatch(wit::RecordBatch);

impl RecordBatch {
    /// Checks `b` (it comes from the guest, which is not trusted), within `bounds`.
    pub fn new(b: wit::RecordBatch, bounds: &Bounds) -> Result<Self> {
        Batch::check(&b.bytes, &b.text, &b.metadata, &b.records, bounds)
            .map_err(|e| anyhow!("the connector sent {e}"))?;
        Ok(RecordBatch(b))
    }

    /// Packs `records` into one batch, as a host hands them to `destination.write-batch`.
    pub fn pack<R: RecordView>(records: &[R]) -> Result<Self> {
        let mut b = Builder::default();
        records.iter().for_each(|r| b.push(r));
        let b = b.finish().map_err(|e| anyhow!("{e}"))?;
        Ok(RecordBatch(wit::RecordBatch {
            bytes: b.bytes,
            text: b.text,
            metadata: b.metadata,
            records: b.records,
        }))
    }

    /// The batch as the WIT value.
    pub fn as_wit(&self) -> &wit::RecordBatch {
        &self.0
    }

    fn batch(&self) -> Batch<'_> {
        let b = &self.0;
        Batch::checked(&b.bytes, &b.text, &b.metadata, &b.records)
    }

    pub fn len(&self) -> usize {
        self.batch().len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch().is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.batch().get(i)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> {
        self.batch().iter()
    }

    /// Every record, owned, as the WIT value.
    pub fn to_records(&self) -> Vec<wit::Record> {
        self.iter().map(|r| to_wit(&r)).collect()
    }
}

/// A record as the WIT value.
pub fn to_wit(r: &impl RecordView) -> wit::Record {
    let data = |d: Option<DataRef<'_>>| {
        d.map(|d| match d {
            DataRef::Raw(b) => wit::Data::Raw(b.to_vec()),
            DataRef::Structured(s) => wit::Data::Structured(s.to_string()),
        })
    };
    wit::Record {
        position: r.position().to_vec(),
        operation: match r.operation() {
            Operation::Create => wit::Operation::Create,
            Operation::Update => wit::Operation::Update,
            Operation::Delete => wit::Operation::Delete,
            Operation::Snapshot => wit::Operation::Snapshot,
        },
        metadata: r
            .metadata()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        key: data(r.key()),
        payload: wit::Change {
            before: data(r.before()),
            after: data(r.after()),
        },
    }
}

impl RecordView for wit::Record {
    fn position(&self) -> &[u8] {
        &self.position
    }
    fn operation(&self) -> Operation {
        match self.operation {
            wit::Operation::Create => Operation::Create,
            wit::Operation::Update => Operation::Update,
            wit::Operation::Delete => Operation::Delete,
            wit::Operation::Snapshot => Operation::Snapshot,
        }
    }
    fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn key(&self) -> Option<DataRef<'_>> {
        self.key.as_ref().map(data_ref)
    }
    fn before(&self) -> Option<DataRef<'_>> {
        self.payload.before.as_ref().map(data_ref)
    }
    fn after(&self) -> Option<DataRef<'_>> {
        self.payload.after.as_ref().map(data_ref)
    }
}

fn data_ref(d: &wit::Data) -> DataRef<'_> {
    match d {
        wit::Data::Raw(b) => DataRef::Raw(b),
        wit::Data::Structured(s) => DataRef::Structured(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8) -> wit::Record {
        wit::Record {
            position: vec![n],
            operation: wit::Operation::Update,
            metadata: vec![("topic".into(), "aé".into())],
            key: Some(wit::Data::Raw(vec![n; 3])),
            payload: wit::Change {
                before: Some(wit::Data::Structured("{\"a\":1}".into())),
                after: None,
            },
        }
    }

    #[test]
    fn wit_records_pack_and_come_back_whole() {
        let records = [record(1), record(2)];
        let packed = RecordBatch::pack(&records).unwrap();
        // The WIT types have no `PartialEq`: compare their debug forms.
        assert_eq!(format!("{:?}", packed.to_records()), format!("{records:?}"));
        assert_eq!(packed.get(1).unwrap().metadata_value("topic"), Some("aé"));
        assert!(RecordBatch::new(packed.as_wit().clone(), &Bounds::NONE).is_ok());
        assert!(RecordBatch::pack::<wit::Record>(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_guest_batch_that_does_not_hold_names_the_connector() {
        let mut b = RecordBatch::pack(&[record(1)]).unwrap().as_wit().clone();
        let bounds = Bounds {
            records: 0,
            bytes: usize::MAX,
        };
        let e = RecordBatch::new(b.clone(), &bounds).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the connector sent 1 records, more than the 0 asked for"
        );
        b.records[0] = 99;
        let e = RecordBatch::new(b, &Bounds::NONE).unwrap_err().to_string();
        assert!(
            e.starts_with("the connector sent record 0 of a batch whose position"),
            "{e}"
        );
    }
}

//! The numbers of the WIT `record-batch`, both ways: a source's `Packed` batch flattened
//! for `read-batch`, and a batch the host sends to `write-batch` turned back into records.
//! The host is trusted no more than a broker: every span it sends is checked, and a bad one
//! is an error naming the record and the field, never a panic.

use crate::error::{Error, Result};
use crate::mapping::{Packed, PackedData};
use crate::record::{Data, Operation, Record};

/// Numbers per record and per metadata entry.
const RECORD: usize = 14;
const ENTRY: usize = 4;
/// The kinds of a key or payload value.
const NONE: u32 = 0;
const RAW: u32 = 1;
const STRUCTURED: u32 = 2;

/// `p`'s metadata entries and records as the batch's numbers (its buffers go as they are).
pub fn flatten(p: &Packed) -> (Vec<u32>, Vec<u32>) {
    let metadata = p
        .metadata
        .iter()
        .flat_map(|(k, v)| [k.start, k.len, v.start, v.len])
        .collect();
    let mut records = Vec::with_capacity(p.records.len() * RECORD);
    for r in &p.records {
        // Operation 0: create (a source's records are creates without a before).
        records.extend_from_slice(&[
            r.position.start,
            r.position.len,
            0,
            r.metadata_start,
            r.metadata_len,
        ]);
        for d in [r.key, None, r.after] {
            records.extend_from_slice(&match d {
                None => [NONE, 0, 0],
                Some(PackedData::Raw(s)) => [RAW, s.start, s.len],
                Some(PackedData::Structured(s)) => [STRUCTURED, s.start, s.len],
            });
        }
    }
    (metadata, records)
}

/// The records of a `record-batch`, in order.
pub fn unpack(bytes: &[u8], text: &str, metadata: &[u32], records: &[u32]) -> Result<Vec<Record>> {
    if !records.len().is_multiple_of(RECORD) || !metadata.len().is_multiple_of(ENTRY) {
        return Err(Error::InvalidRecord(format!(
            "a record batch of {} record numbers and {} metadata numbers: not {RECORD} per record and {ENTRY} per entry",
            records.len(),
            metadata.len()
        )));
    }
    let batch = Batch {
        bytes,
        text,
        metadata,
    };
    records
        .chunks_exact(RECORD)
        .enumerate()
        .map(|(i, r)| {
            batch
                .record(r)
                .map_err(|m| Error::InvalidRecord(format!("record {i} of the batch: {m}")))
        })
        .collect()
}

struct Batch<'a> {
    bytes: &'a [u8],
    text: &'a str,
    metadata: &'a [u32],
}

impl Batch<'_> {
    fn record(&self, r: &[u32]) -> std::result::Result<Record, String> {
        let operation = match r[2] {
            0 => Operation::Create,
            1 => Operation::Update,
            2 => Operation::Delete,
            3 => Operation::Snapshot,
            n => return Err(format!("operation {n} (not 0 to 3)")),
        };
        let entries = range(r[3], r[4], ENTRY)
            .and_then(|(s, e)| self.metadata.get(s..e))
            .ok_or_else(|| {
                format!(
                    "metadata entries {}+{} lie outside the batch's {}",
                    r[3],
                    r[4],
                    self.metadata.len() / ENTRY
                )
            })?;
        let metadata = entries
            .chunks_exact(ENTRY)
            .map(|e| {
                Ok((
                    self.text(e[0], e[1], "a metadata key")?,
                    self.text(e[2], e[3], "a metadata value")?,
                ))
            })
            .collect::<std::result::Result<_, String>>()?;
        Ok(Record {
            position: self.bytes(r[0], r[1], "the position")?.to_vec(),
            operation,
            metadata,
            key: self.data(&r[5..8], "the key")?,
            before: self.data(&r[8..11], "the before")?,
            after: self.data(&r[11..14], "the after")?,
        })
    }

    fn data(&self, d: &[u32], what: &str) -> std::result::Result<Option<Data>, String> {
        Ok(match d[0] {
            NONE => None,
            RAW => Some(Data::Raw(self.bytes(d[1], d[2], what)?.to_vec())),
            STRUCTURED => Some(Data::Structured(self.text(d[1], d[2], what)?)),
            k => return Err(format!("{what} is of kind {k} (not 0, 1 or 2)")),
        })
    }

    fn bytes(&self, start: u32, len: u32, what: &str) -> std::result::Result<&[u8], String> {
        range(start, len, 1)
            .and_then(|(s, e)| self.bytes.get(s..e))
            .ok_or_else(|| {
                format!(
                    "{what} at {start}+{len} lies outside the batch's {} bytes",
                    self.bytes.len()
                )
            })
    }

    fn text(&self, start: u32, len: u32, what: &str) -> std::result::Result<String, String> {
        range(start, len, 1)
            .and_then(|(s, e)| self.text.get(s..e))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{what} at {start}+{len} lies outside the batch's {} bytes of text or splits a character",
                    self.text.len()
                )
            })
    }
}

/// `start..start + len` in units of `unit` numbers, unless it overflows.
fn range(start: u32, len: u32, unit: usize) -> Option<(usize, usize)> {
    let s = (start as usize).checked_mul(unit)?;
    let e = (start as usize).checked_add(len as usize)?.checked_mul(unit)?;
    Some((s, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record of each shape, flattened as the host flattens them.
    fn flat() -> (Vec<u8>, String, Vec<u32>, Vec<u32>) {
        let bytes = b"p1k1v1p2".to_vec();
        let text = "ka\u{e9}{\"a\":1}".to_string();
        // Entry 0: "k" = "a\u{e9}" (text 0..1, 1..4).
        let metadata = vec![0, 1, 1, 3];
        let records = vec![
            0, 2, 0, 0, 1, 1, 2, 2, 0, 0, 0, 1, 4, 2, // create, raw key, raw after
            6, 2, 2, 1, 0, 0, 0, 0, 2, 4, 7, 0, 0, 0, // delete, no key, structured before
        ];
        (bytes, text, metadata, records)
    }

    #[test]
    fn a_batch_unpacks_into_its_records() {
        let (b, t, m, r) = flat();
        let got = unpack(&b, &t, &m, &r).unwrap();
        assert_eq!(
            got,
            [
                Record {
                    position: b"p1".to_vec(),
                    operation: Operation::Create,
                    metadata: vec![("k".into(), "a\u{e9}".into())],
                    key: Some(Data::Raw(b"k1".to_vec())),
                    before: None,
                    after: Some(Data::Raw(b"v1".to_vec())),
                },
                Record {
                    position: b"p2".to_vec(),
                    operation: Operation::Delete,
                    metadata: vec![],
                    key: None,
                    before: Some(Data::Structured("{\"a\":1}".into())),
                    after: None,
                },
            ]
        );
    }

    #[test]
    fn a_flattened_packed_batch_unpacks_into_its_records() {
        use crate::mapping::{PackedRecord, Span};
        let span = |start, len| Span { start, len };
        let mut p = Packed::default();
        p.bytes = b"posk".to_vec();
        p.text = "kv{}".into();
        p.metadata = vec![(span(0, 1), span(1, 1))];
        p.records = vec![PackedRecord {
            position: span(0, 3),
            metadata_start: 0,
            metadata_len: 1,
            key: Some(PackedData::Raw(span(3, 1))),
            after: Some(PackedData::Structured(span(2, 2))),
        }];
        let (metadata, records) = flatten(&p);
        let got = unpack(&p.bytes, &p.text, &metadata, &records).unwrap();
        assert_eq!(
            got,
            [Record {
                position: b"pos".to_vec(),
                operation: Operation::Create,
                metadata: vec![("k".into(), "v".into())],
                key: Some(Data::Raw(b"k".to_vec())),
                before: None,
                after: Some(Data::Structured("{}".into())),
            }]
        );
    }

    #[test]
    fn a_bad_span_or_number_is_an_error_naming_the_record_and_field() {
        let (b, t, m, r) = flat();
        let bad = |i: usize, v: u32, m: &[u32]| {
            let mut r = r.clone();
            r[i] = v;
            match unpack(&b, &t, m, &r) {
                Err(Error::InvalidRecord(msg)) => msg,
                other => panic!("{other:?}"),
            }
        };
        assert!(bad(14 + 1, 99, &m).contains("record 1 of the batch: the position at 6+99"));
        assert!(bad(2, 7, &m).contains("record 0 of the batch: operation 7"));
        assert!(bad(4, u32::MAX, &m).contains("metadata entries 0+4294967295"));
        assert!(bad(11, 5, &m).contains("the after is of kind 5"));
        assert!(bad(14 + 9, u32::MAX, &m).contains("the before at"));
        // The value's span splits the two bytes of "é".
        assert!(bad(0, 0, &[0, 1, 1, 2]).contains("splits a character"));
        assert!(unpack(&b, &t, &m, &r[..13]).is_err());
    }
}

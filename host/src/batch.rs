//! A source's records as `read-batch` returns them: a few buffers and spans into them.
//! `RecordBatch` checks every span once, then hands out records as borrowed views
//! (`RecordRef`) without allocating, or rebuilds owned `wit::Record`s.

use anyhow::{Result, bail, ensure};

use crate::runtime::wit;

/// A checked `wit::RecordBatch`: every span lies in its buffer, text spans on character
/// boundaries, every record's metadata run in `metadata`.
#[derive(Debug, Clone)]
pub struct RecordBatch(wit::RecordBatch);

/// A key or payload value of a record in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataRef<'a> {
    Raw(&'a [u8]),
    /// A JSON object text.
    Structured(&'a str),
}

impl DataRef<'_> {
    pub fn to_data(self) -> wit::Data {
        match self {
            DataRef::Raw(b) => wit::Data::Raw(b.to_vec()),
            DataRef::Structured(s) => wit::Data::Structured(s.to_string()),
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

/// Numbers per record in `wit::RecordBatch::records`, and where each field starts.
const RECORD: usize = 14;
const POSITION: usize = 0;
const OPERATION: usize = 2;
const METADATA: usize = 3;
const KEY: usize = 5;
const BEFORE: usize = 8;
const AFTER: usize = 11;
/// The kinds of a key or payload value.
const NONE: u32 = 0;
const RAW: u32 = 1;
const STRUCTURED: u32 = 2;

/// A span of one of a batch's buffers: `len` bytes (or entries) from `start`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// What a batch from a guest may hold: records (at most what was asked for), and bytes
/// once every span is counted as if copied (spans may overlap, so a small batch could
/// otherwise stand for gigabytes of positions, keys, payloads and metadata on the host),
/// plus what each record and metadata entry costs the host however short its spans.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub records: usize,
    pub bytes: usize,
}

impl Bounds {
    /// No bound: for batches the host packed itself.
    pub const NONE: Bounds = Bounds {
        records: usize::MAX,
        bytes: usize::MAX,
    };
}

/// The host's cost of a record and of a metadata entry beyond their bytes (structures,
/// JSON punctuation): empty spans are not free.
const RECORD_COST: u64 = 128;
const ENTRY_COST: u64 = 32;

/// One record of a batch, borrowed.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    batch: &'a wit::RecordBatch,
    /// The record's `RECORD` numbers.
    r: &'a [u32],
}

impl RecordBatch {
    /// Checks `b` (it comes from the guest, which is not trusted), within `bounds`.
    pub fn new(b: wit::RecordBatch, limit: &Bounds) -> Result<Self> {
        let count = b.records.len() / RECORD;
        ensure!(
            count <= limit.records,
            "the connector sent {count} records, more than the {} asked for",
            limit.records
        );
        let text = |s: Span| -> Result<()> {
            let (start, end) = bounds(s, b.text.len())?;
            ensure!(
                b.text.is_char_boundary(start) && b.text.is_char_boundary(end),
                "a text span {start}..{end} splits a character"
            );
            Ok(())
        };
        let data = |d: &[u32]| -> Result<()> {
            let s = Span {
                start: d[1],
                len: d[2],
            };
            match d[0] {
                NONE => Ok(()),
                RAW => bounds(s, b.bytes.len()).map(drop),
                STRUCTURED => text(s),
                k => bail!("the connector sent a value of kind {k}, not 0, 1 or 2"),
            }
        };
        ensure!(
            b.metadata.len().is_multiple_of(4),
            "the connector sent metadata of {} numbers, not four per entry",
            b.metadata.len()
        );
        for e in b.metadata.chunks_exact(4) {
            text(Span {
                start: e[0],
                len: e[1],
            })?;
            text(Span {
                start: e[2],
                len: e[3],
            })?;
        }
        ensure!(
            b.records.len().is_multiple_of(RECORD),
            "the connector sent records of {} numbers, not {RECORD} per record",
            b.records.len()
        );
        // Bytes of each run of metadata entries, from the sums of entry sizes before each.
        let mut before = Vec::with_capacity(b.metadata.len() / 4 + 1);
        let mut sum = 0u64;
        before.push(0);
        for e in b.metadata.chunks_exact(4) {
            sum += u64::from(e[1]) + u64::from(e[3]);
            before.push(sum);
        }
        let mut expanded = 0u64;
        for r in b.records.chunks_exact(RECORD) {
            bounds(span(r, POSITION), b.bytes.len())?;
            ensure!(r[OPERATION] <= 3, "the connector sent operation {}", r[OPERATION]);
            let (m0, m1) = bounds(span(r, METADATA), b.metadata.len() / 4)?;
            data(&r[KEY..KEY + 3])?;
            data(&r[BEFORE..BEFORE + 3])?;
            data(&r[AFTER..AFTER + 3])?;
            let len = |at: usize| u64::from(r[at + 1]);
            expanded += RECORD_COST + len(POSITION) + (before[m1] - before[m0]);
            expanded += (m1 - m0) as u64 * ENTRY_COST;
            expanded += [KEY, BEFORE, AFTER]
                .iter()
                .map(|&at| if r[at] == NONE { 0 } else { u64::from(r[at + 2]) })
                .sum::<u64>();
            ensure!(
                expanded <= limit.bytes as u64,
                "the connector sent records that expand to more than {} MiB (its memory limit)",
                limit.bytes >> 20
            );
        }
        Ok(RecordBatch(b))
    }

    /// Packs `records` into one batch, as a host hands them to `destination.write-batch`.
    pub fn pack(records: &[wit::Record]) -> Result<Self> {
        let mut p = Packer(wit::RecordBatch {
            bytes: Vec::new(),
            text: String::new(),
            metadata: Vec::new(),
            records: Vec::with_capacity(records.len() * RECORD),
        });
        for r in records {
            p.record(r)?;
        }
        Ok(RecordBatch(p.0))
    }

    /// The batch as the WIT value.
    pub fn as_wit(&self) -> &wit::RecordBatch {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.records.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.0.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        let r = self.0.records.get(i * RECORD..(i + 1) * RECORD)?;
        Some(RecordRef { batch: &self.0, r })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> {
        self.0
            .records
            .chunks_exact(RECORD)
            .map(|r| RecordRef { batch: &self.0, r })
    }

    /// Every record, owned.
    pub fn to_records(&self) -> Vec<wit::Record> {
        self.iter().map(|r| r.to_record()).collect()
    }
}

impl<'a> RecordRef<'a> {
    fn bytes(&self, s: Span) -> &'a [u8] {
        &self.batch.bytes[s.start as usize..(s.start + s.len) as usize]
    }

    fn text_at(&self, start: u32, len: u32) -> &'a str {
        let bytes = &self.batch.text.as_bytes()[start as usize..(start + len) as usize];
        // SAFETY: `RecordBatch::new` checked that every text span of the batch (which
        // cannot change after) starts and ends on a character boundary of `text`, so
        // the bytes are a whole part of a `str`.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// The key or payload value whose three numbers start at `at`.
    fn data(&self, at: usize) -> Option<DataRef<'a>> {
        let (start, len) = (self.r[at + 1], self.r[at + 2]);
        match self.r[at] {
            RAW => Some(DataRef::Raw(self.bytes(Span { start, len }))),
            STRUCTURED => Some(DataRef::Structured(self.text_at(start, len))),
            _ => None,
        }
    }

    pub fn position(&self) -> &'a [u8] {
        self.bytes(span(self.r, POSITION))
    }

    pub fn operation(&self) -> wit::Operation {
        match self.r[OPERATION] {
            0 => wit::Operation::Create,
            1 => wit::Operation::Update,
            2 => wit::Operation::Delete,
            _ => wit::Operation::Snapshot,
        }
    }

    /// The metadata entries, in order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        let this = *self;
        let m = span(self.r, METADATA);
        self.batch.metadata[m.start as usize * 4..(m.start + m.len) as usize * 4]
            .chunks_exact(4)
            .map(move |e| (this.text_at(e[0], e[1]), this.text_at(e[2], e[3])))
    }

    /// The value of the metadata entry `key`, if there is one.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        let text = self.batch.text.as_bytes();
        let m = span(self.r, METADATA);
        self.batch.metadata[m.start as usize * 4..(m.start + m.len) as usize * 4]
            .chunks_exact(4)
            .find(|e| {
                e[1] as usize == key.len() && &text[e[0] as usize..(e[0] + e[1]) as usize] == key.as_bytes()
            })
            .map(|e| self.text_at(e[2], e[3]))
    }

    pub fn key(&self) -> Option<DataRef<'a>> {
        self.data(KEY)
    }

    pub fn before(&self) -> Option<DataRef<'a>> {
        self.data(BEFORE)
    }

    pub fn after(&self) -> Option<DataRef<'a>> {
        self.data(AFTER)
    }

    /// The record, owned: what `read` returns for it.
    pub fn to_record(&self) -> wit::Record {
        wit::Record {
            position: self.position().to_vec(),
            operation: self.operation(),
            metadata: self
                .metadata()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key: self.key().map(DataRef::to_data),
            payload: wit::Change {
                before: self.before().map(DataRef::to_data),
                after: self.after().map(DataRef::to_data),
            },
        }
    }
}

/// Builds a `wit::RecordBatch`, spans valid by construction.
struct Packer(wit::RecordBatch);

impl Packer {
    fn record(&mut self, r: &wit::Record) -> Result<()> {
        let position = self.bytes(&r.position)?;
        let metadata_start = u32_of(self.0.metadata.len() / 4)?;
        for (k, v) in &r.metadata {
            let (k, v) = (self.text(k)?, self.text(v)?);
            self.0
                .metadata
                .extend_from_slice(&[k.start, k.len, v.start, v.len]);
        }
        let operation = match r.operation {
            wit::Operation::Create => 0,
            wit::Operation::Update => 1,
            wit::Operation::Delete => 2,
            wit::Operation::Snapshot => 3,
        };
        let head = [
            position.start,
            position.len,
            operation,
            metadata_start,
            u32_of(r.metadata.len())?,
        ];
        self.0.records.extend_from_slice(&head);
        for d in [&r.key, &r.payload.before, &r.payload.after] {
            let packed = match d {
                None => [NONE, 0, 0],
                Some(wit::Data::Raw(b)) => self.bytes(b).map(|s| [RAW, s.start, s.len])?,
                Some(wit::Data::Structured(t)) => self.text(t).map(|s| [STRUCTURED, s.start, s.len])?,
            };
            self.0.records.extend_from_slice(&packed);
        }
        Ok(())
    }

    fn bytes(&mut self, b: &[u8]) -> Result<Span> {
        let start = u32_of(self.0.bytes.len())?;
        self.0.bytes.extend_from_slice(b);
        Ok(Span {
            start,
            len: u32_of(b.len())?,
        })
    }

    fn text(&mut self, t: &str) -> Result<Span> {
        let start = u32_of(self.0.text.len())?;
        self.0.text.push_str(t);
        Ok(Span {
            start,
            len: u32_of(t.len())?,
        })
    }
}

/// Batches count in u32: one of 4 GiB or more does not fit.
fn u32_of(n: usize) -> Result<u32> {
    u32::try_from(n)
        .map_err(|_| anyhow::anyhow!("a record batch of {n} bytes or entries: too large for one call"))
}

/// The span whose two numbers start at `at` in the record `r`.
fn span(r: &[u32], at: usize) -> Span {
    Span {
        start: r[at],
        len: r[at + 1],
    }
}

/// `s` as a range of a buffer of `len` bytes (or entries).
fn bounds(s: Span, len: usize) -> Result<(usize, usize)> {
    let start = s.start as usize;
    let Some(end) = start.checked_add(s.len as usize).filter(|e| *e <= len) else {
        bail!(
            "the connector sent a span {start}+{} past the end of a buffer of {len}",
            s.len
        );
    };
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> wit::RecordBatch {
        wit::RecordBatch {
            bytes: b"p1p2kv".to_vec(),
            text: "topicaé".into(),
            metadata: vec![0, 5, 5, 1, 0, 5, 5, 3],
            records: vec![
                // position 0+2, create, metadata 0+1, key raw 4+1, no before, after raw 5+1
                0, 2, 0, 0, 1, 1, 4, 1, 0, 0, 0, 1, 5, 1,
                // position 2+2, update, metadata 1+1, no key, before structured 5+1, no after
                2, 2, 1, 1, 1, 0, 0, 0, 2, 5, 1, 0, 0, 0,
            ],
        }
    }

    #[test]
    fn records_are_views_into_the_buffers_and_rebuild_whole() {
        let b = RecordBatch::new(batch(), &Bounds::NONE).unwrap();
        assert_eq!(b.len(), 2);
        let r = b.get(1).unwrap();
        assert_eq!(r.position(), b"p2");
        assert_eq!(r.metadata_value("topic"), Some("aé"));
        assert_eq!(
            (r.metadata_value("topi"), r.metadata_value("topics")),
            (None, None)
        );
        assert_eq!(b.get(0).unwrap().metadata().collect::<Vec<_>>(), [("topic", "a")]);
        assert_eq!(r.before(), Some(DataRef::Structured("a")));
        let owned = b.to_records();
        assert_eq!(owned[0].position, b"p1");
        assert_eq!(owned[0].metadata, [("topic".to_string(), "a".to_string())]);
        assert!(matches!(&owned[0].key, Some(wit::Data::Raw(k)) if k == b"k"));
        assert!(matches!(&owned[0].payload.after, Some(wit::Data::Raw(v)) if v == b"v"));
        assert_eq!(owned[1].operation, wit::Operation::Update);
    }

    #[test]
    fn packed_records_come_back_whole_and_pass_the_checks() {
        let records = RecordBatch::new(batch(), &Bounds::NONE).unwrap().to_records();
        let packed = RecordBatch::pack(&records).unwrap();
        // The WIT types have no `PartialEq`: compare their debug forms.
        assert_eq!(format!("{:?}", packed.to_records()), format!("{records:?}"));
        assert!(RecordBatch::new(packed.as_wit().clone(), &Bounds::NONE).is_ok());
        assert!(RecordBatch::pack(&[]).unwrap().is_empty());
    }

    #[test]
    fn spans_out_of_bounds_or_inside_a_character_are_refused() {
        let mut b = batch();
        b.records[POSITION] = 5;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err());
        let mut b = batch();
        b.metadata[6] = 6;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err(), "splits é");
        let mut b = batch();
        b.records[RECORD + METADATA] = 2;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err());
        let mut b = batch();
        b.records[KEY + 1] = u32::MAX;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err());
        let mut b = batch();
        b.records[AFTER] = 3;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err(), "no value kind 3");
        let mut b = batch();
        b.records[RECORD + OPERATION] = 4;
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err(), "no operation 4");
        let mut b = batch();
        b.records.pop();
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err());
        let mut b = batch();
        b.metadata.pop();
        assert!(RecordBatch::new(b, &Bounds::NONE).is_err());
    }

    #[test]
    fn more_records_than_asked_or_overlapping_spans_past_the_bound_are_refused() {
        let at = |records, bytes| RecordBatch::new(batch(), &Bounds { records, bytes });
        // Two records of 21 bytes counted as copied, and two metadata entries.
        let cost = (21 + 2 * RECORD_COST + 2 * ENTRY_COST) as usize;
        assert!(at(2, cost).is_ok());
        let e = at(1, cost).unwrap_err().to_string();
        assert!(e.contains("sent 2 records, more than the 1 asked for"), "{e}");
        assert!(
            at(2, cost - 1)
                .unwrap_err()
                .to_string()
                .contains("expand to more than")
        );
        // Records that all point at one long run of empty metadata entries.
        let mut b = batch();
        b.metadata = vec![0; 4 * 100_000];
        for r in b.records.chunks_exact_mut(RECORD) {
            r[METADATA..METADATA + 2].copy_from_slice(&[0, 100_000]);
        }
        let e = RecordBatch::new(
            b,
            &Bounds {
                records: 2,
                bytes: 1 << 20,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("expand to more than 1 MiB"), "{e}");
        // A thousand records whose spans all cover one buffer: small, but huge once copied.
        let mut b = wit::RecordBatch {
            bytes: vec![0; 1 << 20],
            text: String::new(),
            metadata: Vec::new(),
            records: Vec::new(),
        };
        for _ in 0..1000 {
            b.records
                .extend([0, 1 << 20, 0, 0, 0, 1, 0, 1 << 20, 0, 0, 0, 1, 0, 1 << 20]);
        }
        let bounds = Bounds {
            records: 1000,
            bytes: 256 << 20,
        };
        let e = RecordBatch::new(b, &bounds).unwrap_err().to_string();
        assert!(e.contains("expand to more than 256 MiB"), "{e}");
    }
}

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

/// One record of a batch, borrowed.
#[derive(Clone, Copy)]
pub struct RecordRef<'a> {
    batch: &'a wit::RecordBatch,
    r: &'a wit::PackedRecord,
}

impl RecordBatch {
    /// Checks `b` (it comes from the guest, which is not trusted).
    pub fn new(b: wit::RecordBatch) -> Result<Self> {
        let text = |s: &wit::Span| -> Result<()> {
            let (start, end) = bounds(s, b.text.len())?;
            ensure!(
                b.text.is_char_boundary(start) && b.text.is_char_boundary(end),
                "a text span {start}..{end} splits a character"
            );
            Ok(())
        };
        let data = |d: &Option<wit::PackedData>| -> Result<()> {
            match d {
                None => Ok(()),
                Some(wit::PackedData::Raw(s)) => bounds(s, b.bytes.len()).map(drop),
                Some(wit::PackedData::Structured(s)) => text(s),
            }
        };
        ensure!(
            b.metadata.len() % 4 == 0,
            "the connector sent metadata of {} numbers, not four per entry",
            b.metadata.len()
        );
        for e in b.metadata.chunks_exact(4) {
            text(&wit::Span {
                start: e[0],
                len: e[1],
            })?;
            text(&wit::Span {
                start: e[2],
                len: e[3],
            })?;
        }
        for r in &b.records {
            bounds(&r.position, b.bytes.len())?;
            bounds(
                &wit::Span {
                    start: r.metadata_start,
                    len: r.metadata_len,
                },
                b.metadata.len() / 4,
            )?;
            data(&r.key)?;
            data(&r.before)?;
            data(&r.after)?;
        }
        Ok(RecordBatch(b))
    }

    pub fn len(&self) -> usize {
        self.0.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.0.records.get(i).map(|r| RecordRef { batch: &self.0, r })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> {
        self.0.records.iter().map(|r| RecordRef { batch: &self.0, r })
    }

    /// Every record, owned.
    pub fn to_records(&self) -> Vec<wit::Record> {
        self.iter().map(|r| r.to_record()).collect()
    }
}

impl<'a> RecordRef<'a> {
    fn bytes(&self, s: &wit::Span) -> &'a [u8] {
        &self.batch.bytes[s.start as usize..(s.start + s.len) as usize]
    }

    fn text(&self, s: &wit::Span) -> &'a str {
        self.text_at(s.start, s.len)
    }

    fn text_at(&self, start: u32, len: u32) -> &'a str {
        let bytes = &self.batch.text.as_bytes()[start as usize..(start + len) as usize];
        // SAFETY: `RecordBatch::new` checked that every text span of the batch (which
        // cannot change after) starts and ends on a character boundary of `text`, so
        // the bytes are a whole part of a `str`.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn data(&self, d: &Option<wit::PackedData>) -> Option<DataRef<'a>> {
        d.as_ref().map(|d| match d {
            wit::PackedData::Raw(s) => DataRef::Raw(self.bytes(s)),
            wit::PackedData::Structured(s) => DataRef::Structured(self.text(s)),
        })
    }

    pub fn position(&self) -> &'a [u8] {
        self.bytes(&self.r.position)
    }

    pub fn operation(&self) -> wit::Operation {
        self.r.operation
    }

    /// The metadata entries, in order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        let this = *self;
        let start = self.r.metadata_start as usize * 4;
        self.batch.metadata[start..start + self.r.metadata_len as usize * 4]
            .chunks_exact(4)
            .map(move |e| (this.text_at(e[0], e[1]), this.text_at(e[2], e[3])))
    }

    /// The value of the metadata entry `key`, if there is one.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        let text = self.batch.text.as_bytes();
        let start = self.r.metadata_start as usize * 4;
        self.batch.metadata[start..start + self.r.metadata_len as usize * 4]
            .chunks_exact(4)
            .find(|e| {
                e[1] as usize == key.len() && &text[e[0] as usize..(e[0] + e[1]) as usize] == key.as_bytes()
            })
            .map(|e| self.text_at(e[2], e[3]))
    }

    pub fn key(&self) -> Option<DataRef<'a>> {
        self.data(&self.r.key)
    }

    pub fn before(&self) -> Option<DataRef<'a>> {
        self.data(&self.r.before)
    }

    pub fn after(&self) -> Option<DataRef<'a>> {
        self.data(&self.r.after)
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

/// `s` as a range of a buffer of `len` bytes (or entries).
fn bounds(s: &wit::Span, len: usize) -> Result<(usize, usize)> {
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

    fn span(start: u32, len: u32) -> wit::Span {
        wit::Span { start, len }
    }

    fn batch() -> wit::RecordBatch {
        wit::RecordBatch {
            bytes: b"p1p2kv".to_vec(),
            text: "topicaé".into(),
            metadata: vec![0, 5, 5, 1, 0, 5, 5, 3],
            records: vec![
                wit::PackedRecord {
                    position: span(0, 2),
                    operation: wit::Operation::Create,
                    metadata_start: 0,
                    metadata_len: 1,
                    key: Some(wit::PackedData::Raw(span(4, 1))),
                    before: None,
                    after: Some(wit::PackedData::Raw(span(5, 1))),
                },
                wit::PackedRecord {
                    position: span(2, 2),
                    operation: wit::Operation::Update,
                    metadata_start: 1,
                    metadata_len: 1,
                    key: None,
                    before: Some(wit::PackedData::Structured(span(5, 1))),
                    after: None,
                },
            ],
        }
    }

    #[test]
    fn records_are_views_into_the_buffers_and_rebuild_whole() {
        let b = RecordBatch::new(batch()).unwrap();
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
    fn spans_out_of_bounds_or_inside_a_character_are_refused() {
        let mut b = batch();
        b.records[0].position = span(5, 2);
        assert!(RecordBatch::new(b).is_err());
        let mut b = batch();
        b.metadata[6] = 6;
        assert!(RecordBatch::new(b).is_err(), "splits é");
        let mut b = batch();
        b.records[1].metadata_start = 2;
        assert!(RecordBatch::new(b).is_err());
        let mut b = batch();
        b.records[0].key = Some(wit::PackedData::Raw(span(u32::MAX, 2)));
        assert!(RecordBatch::new(b).is_err());
        let mut b = batch();
        b.metadata.pop();
        assert!(RecordBatch::new(b).is_err());
    }
}

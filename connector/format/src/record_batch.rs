//! The WIT `record-batch`: records packed into four buffers, so a batch crosses the
//! component boundary as four copies instead of an allocation per field.
//!
//! `bytes` holds positions and raw data, `text` metadata and structured data. A metadata
//! entry is four numbers (key start and length in `text`, value start and length). A
//! record is fourteen: its position (start, length in `bytes`), its operation, its run of
//! metadata entries (first entry, count), then its key, before and after, three numbers
//! each: a kind (none, raw in `bytes`, structured in `text`), a start and a length.
//!
//! Neither side trusts the other's batch: `Batch::check` proves every span lies in its
//! buffer and text spans fall on character boundaries, and counts what the batch would
//! cost once copied. `Builder` packs records; its spans hold by construction.

use crate::record::{DataRef, Operation, RecordView};
use crate::{Error, Result};

/// Numbers per record, and where each field starts.
pub const RECORD: usize = 14;
const POSITION: usize = 0;
const OPERATION: usize = 2;
const METADATA: usize = 3;
const KEY: usize = 5;
const BEFORE: usize = 8;
const AFTER: usize = 11;
/// Numbers per metadata entry.
pub const ENTRY: usize = 4;
/// The kinds of a key or payload value.
const NONE: u32 = 0;
const RAW: u32 = 1;
const STRUCTURED: u32 = 2;

/// What a batch costs beyond its bytes, per record and per metadata entry (structures,
/// JSON punctuation): empty spans are not free.
pub const RECORD_COST: u64 = 128;
pub const ENTRY_COST: u64 = 32;

/// `len` bytes (or entries) of a buffer from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub len: u32,
}

impl Span {
    fn range(self, unit: usize) -> Option<std::ops::Range<usize>> {
        let start = (self.start as usize).checked_mul(unit)?;
        let end = (self.start as usize)
            .checked_add(self.len as usize)?
            .checked_mul(unit)?;
        Some(start..end)
    }
}

/// What a batch may hold: records (at most what was asked for), and bytes once every
/// span is counted as if copied (spans may overlap, so a small batch could otherwise
/// stand for gigabytes), plus `RECORD_COST` and `ENTRY_COST`.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub records: usize,
    pub bytes: usize,
}

impl Bounds {
    /// No bound.
    pub const NONE: Bounds = Bounds {
        records: usize::MAX,
        bytes: usize::MAX,
    };
}

/// A batch's four buffers, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    bytes: &'a [u8],
    text: &'a str,
    metadata: &'a [u32],
    records: &'a [u32],
}

impl<'a> Batch<'a> {
    /// The batch, once every number in it holds and it fits `bounds`. An error completes
    /// "the <sender> sent ...".
    pub fn check(
        bytes: &'a [u8],
        text: &'a str,
        metadata: &'a [u32],
        records: &'a [u32],
        bounds: &Bounds,
    ) -> Result<Self> {
        let b = Batch {
            bytes,
            text,
            metadata,
            records,
        };
        b.check_shape(bounds)?;
        let entries = b.check_entries()?;
        let mut expanded = 0u64;
        for (i, r) in records.chunks_exact(RECORD).enumerate() {
            expanded += b
                .check_record(r, &entries)
                .map_err(|m| Error(format!("record {i} of a batch whose {m}")))?;
            if expanded > bounds.bytes as u64 {
                return Err(Error(format!(
                    "records that expand to more than {} MiB (its memory limit)",
                    bounds.bytes >> 20
                )));
            }
        }
        Ok(b)
    }

    /// A batch `check` accepted before (kept by its holder, which cannot change it since).
    /// A batch that would not pass makes the views panic, never read out of bounds.
    pub fn checked(bytes: &'a [u8], text: &'a str, metadata: &'a [u32], records: &'a [u32]) -> Self {
        Batch {
            bytes,
            text,
            metadata,
            records,
        }
    }

    fn check_shape(&self, bounds: &Bounds) -> Result<()> {
        if !self.records.len().is_multiple_of(RECORD) || !self.metadata.len().is_multiple_of(ENTRY) {
            return Err(Error(format!(
                "a batch of {} record numbers and {} metadata numbers: not {RECORD} per record and {ENTRY} per entry",
                self.records.len(),
                self.metadata.len()
            )));
        }
        let count = self.len();
        if count > bounds.records {
            return Err(Error(format!(
                "{count} records, more than the {} asked for",
                bounds.records
            )));
        }
        Ok(())
    }

    /// Checks every metadata entry; returns the bytes of the entries before each one (so
    /// a run of entries is priced by one subtraction).
    fn check_entries(&self) -> Result<Vec<u64>> {
        let mut before = Vec::with_capacity(self.metadata.len() / ENTRY + 1);
        let mut sum = 0u64;
        before.push(0);
        for (i, e) in self.metadata.chunks_exact(ENTRY).enumerate() {
            let at = |m| Error(format!("metadata entry {i} of a batch whose {m}"));
            self.text_at(span(e, 0), "key").map_err(at)?;
            self.text_at(span(e, 2), "value").map_err(at)?;
            sum += u64::from(e[1]) + u64::from(e[3]);
            before.push(sum);
        }
        Ok(before)
    }

    /// Checks one record's numbers; returns what it costs once copied.
    fn check_record(&self, r: &[u32], entries: &[u64]) -> std::result::Result<u64, String> {
        let position = self.bytes_at(span(r, POSITION), "position")?;
        if Operation::from_code(r[OPERATION]).is_none() {
            return Err(format!("operation is {} (not 0 to 3)", r[OPERATION]));
        }
        let m = span(r, METADATA);
        let run = m.range(1).filter(|run| run.end < entries.len()).ok_or_else(|| {
            format!(
                "metadata entries {}+{} lie outside the batch's {}",
                m.start,
                m.len,
                self.metadata.len() / ENTRY
            )
        })?;
        let mut cost = RECORD_COST + position.len() as u64;
        cost += entries[run.end] - entries[run.start] + run.len() as u64 * ENTRY_COST;
        for (at, what) in [(KEY, "key"), (BEFORE, "before"), (AFTER, "after")] {
            cost += self
                .data_at(r, at, what)?
                .map_or(0, |d| d.as_bytes().len() as u64);
        }
        Ok(cost)
    }

    fn data_at(&self, r: &[u32], at: usize, what: &str) -> std::result::Result<Option<DataRef<'a>>, String> {
        let s = span(r, at + 1);
        Ok(match r[at] {
            NONE => None,
            RAW => Some(DataRef::Raw(self.bytes_at(s, what)?)),
            STRUCTURED => Some(DataRef::Structured(self.text_at(s, what)?)),
            k => return Err(format!("{what} is of kind {k} (not 0, 1 or 2)")),
        })
    }

    fn bytes_at(&self, s: Span, what: &str) -> std::result::Result<&'a [u8], String> {
        s.range(1).and_then(|r| self.bytes.get(r)).ok_or_else(|| {
            format!(
                "{what} at {}+{} lies outside its {} bytes",
                s.start,
                s.len,
                self.bytes.len()
            )
        })
    }

    fn text_at(&self, s: Span, what: &str) -> std::result::Result<&'a str, String> {
        s.range(1).and_then(|r| self.text.get(r)).ok_or_else(|| {
            format!(
                "{what} at {}+{} lies outside its {} bytes of text or splits a character",
                s.start,
                s.len,
                self.text.len()
            )
        })
    }

    pub fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<PackedRecord<'a>> {
        let r = self.records.get(i * RECORD..(i + 1) * RECORD)?;
        Some(PackedRecord { batch: *self, r })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = PackedRecord<'a>> + use<'a> {
        let batch = *self;
        self.records
            .chunks_exact(RECORD)
            .map(move |r| PackedRecord { batch, r })
    }
}

/// The span whose two numbers start at `at` of `numbers`.
fn span(numbers: &[u32], at: usize) -> Span {
    Span {
        start: numbers[at],
        len: numbers[at + 1],
    }
}

/// One record of a checked batch, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct PackedRecord<'a> {
    batch: Batch<'a>,
    /// Its `RECORD` numbers.
    r: &'a [u32],
}

impl<'a> PackedRecord<'a> {
    fn bytes(&self, s: Span) -> &'a [u8] {
        &self.batch.bytes[s.start as usize..(s.start + s.len) as usize]
    }

    fn text(&self, s: Span) -> &'a str {
        &self.batch.text[s.start as usize..(s.start + s.len) as usize]
    }

    fn data(&self, at: usize) -> Option<DataRef<'a>> {
        let s = span(self.r, at + 1);
        match self.r[at] {
            RAW => Some(DataRef::Raw(self.bytes(s))),
            STRUCTURED => Some(DataRef::Structured(self.text(s))),
            _ => None,
        }
    }

    fn entries(&self) -> &'a [u32] {
        let m = span(self.r, METADATA);
        &self.batch.metadata[m.start as usize * ENTRY..(m.start + m.len) as usize * ENTRY]
    }

    pub fn position(&self) -> &'a [u8] {
        self.bytes(span(self.r, POSITION))
    }

    pub fn operation(&self) -> Operation {
        // `Batch::check` saw a valid code.
        Operation::from_code(self.r[OPERATION]).unwrap_or(Operation::Snapshot)
    }

    /// The metadata entries, in order, borrowed from the batch.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&'a str, &'a str)> + use<'a> {
        let this = *self;
        self.entries()
            .chunks_exact(ENTRY)
            .map(move |e| (this.text(span(e, 0)), this.text(span(e, 2))))
    }

    /// The value of the metadata entry `key`, if there is one. Keys are compared as
    /// bytes, length first: only the value found is made a `str`.
    pub fn metadata_value(&self, key: &str) -> Option<&'a str> {
        let text = self.batch.text.as_bytes();
        self.entries()
            .chunks_exact(ENTRY)
            .find(|e| {
                e[1] as usize == key.len()
                    && text.get(e[0] as usize..(e[0] + e[1]) as usize) == Some(key.as_bytes())
            })
            .map(|e| self.text(span(e, 2)))
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
}

impl RecordView for PackedRecord<'_> {
    fn position(&self) -> &[u8] {
        PackedRecord::position(self)
    }
    fn operation(&self) -> Operation {
        PackedRecord::operation(self)
    }
    fn metadata(&self) -> impl Iterator<Item = (&str, &str)> {
        PackedRecord::metadata(self)
    }
    fn key(&self) -> Option<DataRef<'_>> {
        PackedRecord::key(self)
    }
    fn before(&self) -> Option<DataRef<'_>> {
        PackedRecord::before(self)
    }
    fn after(&self) -> Option<DataRef<'_>> {
        PackedRecord::after(self)
    }
}

/// A packed batch's four buffers, as the WIT `record-batch` holds them.
#[derive(Debug, Default, Clone)]
pub struct Buffers {
    pub bytes: Vec<u8>,
    pub text: String,
    pub metadata: Vec<u32>,
    pub records: Vec<u32>,
}

/// Packs records into a batch's four buffers. Spans are u32: a batch that outgrows them
/// is refused by `finish`, so packing itself never fails.
#[derive(Debug, Default)]
pub struct Builder {
    bytes: Vec<u8>,
    text: String,
    metadata: Vec<u32>,
    records: Vec<u32>,
    too_large: bool,
}

/// A record's numbers, spans already in the builder's buffers.
#[derive(Debug, Clone, Copy)]
pub struct PackedSpans {
    pub position: Span,
    pub operation: Operation,
    /// Its run of metadata entries.
    pub metadata: Span,
    pub key: Option<Value>,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// A key or payload value's span: raw in `bytes`, structured in `text`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Raw(Span),
    Structured(Span),
}

impl Builder {
    /// Room for `records` records of about `bytes` bytes each.
    pub fn with_capacity(records: usize, bytes: usize) -> Self {
        Builder {
            bytes: Vec::with_capacity(records * bytes),
            text: String::with_capacity(records * 32),
            metadata: Vec::with_capacity(records * 5 * ENTRY),
            records: Vec::with_capacity(records * RECORD),
            too_large: false,
        }
    }

    /// A span of `len` bytes ending at `end`, noting a batch past u32.
    #[inline]
    fn span_to(&mut self, end: usize, len: usize) -> Span {
        self.too_large |= end > u32::MAX as usize;
        Span {
            start: (end - len) as u32,
            len: len as u32,
        }
    }

    #[inline]
    pub fn add_bytes(&mut self, b: &[u8]) -> Span {
        self.bytes.extend_from_slice(b);
        self.span_to(self.bytes.len(), b.len())
    }

    /// Adds the pieces as one span of `bytes`.
    #[inline]
    pub fn add_bytes_of(&mut self, pieces: &[&[u8]]) -> Span {
        let start = self.bytes.len();
        pieces.iter().for_each(|p| self.bytes.extend_from_slice(p));
        self.span_to(self.bytes.len(), self.bytes.len() - start)
    }

    #[inline]
    pub fn add_text(&mut self, s: &str) -> Span {
        self.text.push_str(s);
        self.span_to(self.text.len(), s.len())
    }

    /// Adds the pieces as one span of `text`.
    #[inline]
    pub fn add_text_of(&mut self, pieces: &[&str]) -> Span {
        let start = self.text.len();
        pieces.iter().for_each(|p| self.text.push_str(p));
        self.span_to(self.text.len(), self.text.len() - start)
    }

    /// The text of a span of `text`, if it is one.
    pub fn text_of(&self, s: Span) -> Option<&str> {
        s.range(1).and_then(|r| self.text.get(r))
    }

    /// Metadata entries so far: where the next run starts.
    pub fn entries(&mut self) -> u32 {
        let n = self.metadata.len() / ENTRY;
        self.too_large |= n > u32::MAX as usize;
        n as u32
    }

    pub fn add_entry(&mut self, key: Span, value: Span) {
        self.metadata
            .extend_from_slice(&[key.start, key.len, value.start, value.len]);
    }

    /// The key span of entry `i`, if there is one.
    pub fn entry_key(&self, i: u32) -> Option<Span> {
        let at = i as usize * ENTRY;
        self.metadata.get(at..at + 2).map(|k| span(k, 0))
    }

    /// Makes `value` entry `i`'s value (no entry `i`: nothing).
    pub fn set_entry_value(&mut self, i: u32, value: Span) {
        let at = i as usize * ENTRY + 2;
        if let Some(v) = self.metadata.get_mut(at..at + 2) {
            v.copy_from_slice(&[value.start, value.len]);
        }
    }

    /// Adds a record whose spans are already in the buffers.
    pub fn add_record(&mut self, r: &PackedSpans) {
        let value = |v: Option<Value>| match v {
            None => [NONE, 0, 0],
            Some(Value::Raw(s)) => [RAW, s.start, s.len],
            Some(Value::Structured(s)) => [STRUCTURED, s.start, s.len],
        };
        let (p, m) = (r.position, r.metadata);
        self.records
            .extend_from_slice(&[p.start, p.len, r.operation.code(), m.start, m.len]);
        for v in [r.key, r.before, r.after] {
            self.records.extend_from_slice(&value(v));
        }
    }

    /// Packs a whole record.
    pub fn push(&mut self, r: &impl RecordView) {
        let position = self.add_bytes(r.position());
        let first = self.entries();
        for (k, v) in r.metadata() {
            let (k, v) = (self.add_text(k), self.add_text(v));
            self.add_entry(k, v);
        }
        let metadata = Span {
            start: first,
            len: self.entries() - first,
        };
        let spans = PackedSpans {
            position,
            operation: r.operation(),
            metadata,
            key: r.key().map(|d| self.add_value(d)),
            before: r.before().map(|d| self.add_value(d)),
            after: r.after().map(|d| self.add_value(d)),
        };
        self.add_record(&spans);
    }

    fn add_value(&mut self, d: DataRef<'_>) -> Value {
        match d {
            DataRef::Raw(b) => Value::Raw(self.add_bytes(b)),
            DataRef::Structured(s) => Value::Structured(self.add_text(s)),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether a buffer grew past `limit` bytes: a sink stops adding records there.
    pub fn past(&self, limit: usize) -> bool {
        self.bytes.len() >= limit || self.text.len() >= limit
    }

    /// The four buffers.
    pub fn finish(self) -> Result<Buffers> {
        if self.too_large {
            return Err(Error(format!(
                "a record batch of {} bytes and {} bytes of text: more than one call can carry (4 GiB)",
                self.bytes.len(),
                self.text.len()
            )));
        }
        Ok(Buffers {
            bytes: self.bytes,
            text: self.text,
            metadata: self.metadata,
            records: self.records,
        })
    }

    /// The batch so far, borrowed, once checked: spans given to `add_record` and
    /// `set_entry_value` are the caller's.
    pub fn batch(&self) -> Result<Batch<'_>> {
        Batch::check(
            &self.bytes,
            &self.text,
            &self.metadata,
            &self.records,
            &Bounds::NONE,
        )
    }
}

#[cfg(test)]
mod tests;

//! Record batches (format v2): encoding what a producer sends and decoding what a fetch
//! returns.
//!
//! Encoding is kafka-protocol's `RecordBatchEncoder`, with this crate's codecs
//! (`compression`, pure Rust) plugged into its compression hook: kafka-protocol's own are
//! left out (its zstd and lz4 are C libraries, which do not build for wasm32-wasip2).
//!
//! Decoding is this module's own; kafka-protocol's decoder is not used. `decode_batches`
//! cuts a fetch's bytes into batches (a truncated last batch is normal there and is left
//! for the next fetch), checks each one's length, magic, CRC-32C and record count,
//! decompresses it up to `MAX_DECOMPRESSED_BATCH` and drops control batches. Records are
//! parsed only as they are taken (`Batch::next_record`), borrowing key, value and headers
//! from the decompressed bytes. Every read is bounds-checked: fetched bytes are untrusted.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions};

use super::compression;
use crate::error::{Error, Result};

/// Bytes before the first record of a v2 batch.
const BATCH_HEADER: usize = 61;
/// Bytes of a batch counted by its length field start after base offset (8) and length (4).
const LENGTH_PREFIX: usize = 12;
/// Where a batch's record count lies.
const RECORD_COUNT_AT: usize = 57;
/// The smallest record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const MIN_RECORD: usize = 7;
/// The most one batch's records may take once decompressed. Brokers cap a batch at
/// `message.max.bytes` (1 MiB by default) compressed, so more is corrupt or hostile.
pub const MAX_DECOMPRESSED_BATCH: usize = 64 << 20;
/// The decompressed bytes one fetch answer may bring over all its partitions, before the
/// rest is left for the next fetch: a 4 MiB answer of small bombs (batches each
/// decompressing to the limit) would otherwise take gigabytes. Any answer's first batch is
/// taken whatever its size, so a fetch always progresses; real answers stay far below.
pub const MAX_DECOMPRESSED_FETCH: usize = 64 << 20;

/// Encodes `records` into one v2 batch compressed with `compression`. Offsets are
/// numbered 0..n (the broker assigns real ones) and sequences follow `base_sequence` (-1
/// when the producer is not idempotent); the encoder keeps records in one batch only
/// while both advance together.
pub fn encode(records: &mut [Record], base_sequence: i32, compression: Compression) -> Result<Bytes> {
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
        r.sequence = base_sequence.wrapping_add(i as i32);
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        records.iter(),
        &options,
        Some(compress_records),
    )
    .map_err(|e| Error::InvalidRecord(format!("cannot encode record batch: {e}")))?;
    Ok(buf.freeze())
}

/// The encoder's hook: it gets the encoded records and must append them to the batch as
/// they go on the wire, for `None` too (the hook replaces the encoder's own codecs).
fn compress_records(records: &mut BytesMut, batch: &mut BytesMut, c: Compression) -> anyhow::Result<()> {
    Ok(compression::compress(c, records, batch)?)
}

/// What one partition's fetched bytes held: its complete batches, checked and
/// decompressed, and the offset that follows the last of them.
#[derive(Debug)]
pub struct Fetched {
    pub batches: Vec<Batch>,
    pub next_offset: i64,
}

/// Attribute bits of a v2 batch.
const COMPRESSION_MASK: i16 = 0x7;
const LOG_APPEND_TIME: i16 = 1 << 3;
const CONTROL: i16 = 1 << 5;

/// Splits `data` into its complete batches: each one's CRC and record count are checked
/// and its records decompressed here, but records are parsed only as they are taken
/// (`Batch::next`), straight from the decompressed bytes. Control batches and records
/// before `from` (a fetch may start in the middle of a batch) are dropped. `what` names
/// the partition for errors. `budget` is what may still be decompressed for the answer
/// these bytes came in (`MAX_DECOMPRESSED_FETCH` for its first partition): once it is
/// spent, the batches left are not taken (`next_offset` stops before them).
pub fn decode_batches(mut data: Bytes, from: i64, what: &str, budget: &mut usize) -> Result<Fetched> {
    let mut out = Fetched {
        batches: Vec::new(),
        next_offset: from,
    };
    while let Some(batch) = next_batch(&mut data, what)? {
        let be_i64 = |at: usize| i64::from_be_bytes(batch[at..at + 8].try_into().expect("8 bytes"));
        let be_i32 = |at: usize| i32::from_be_bytes(batch[at..at + 4].try_into().expect("4 bytes"));
        let base = be_i64(0);
        let corrupt =
            |detail: String| Error::CorruptData(format!("{what}: record batch at offset {base}: {detail}"));
        let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
        let actual = crc32c::crc32c(&batch[21..]);
        if crc != actual {
            return Err(corrupt(format!(
                "Cyclic redundancy check failed ({crc} != {actual})"
            )));
        }
        let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2 bytes"));
        let last_delta = be_i32(23);
        let count = be_i32(RECORD_COUNT_AT);
        if count < 0 {
            return Err(corrupt(format!("negative record count {count}")));
        }
        let next = base.saturating_add(last_delta as i64 + 1);
        if attributes & CONTROL != 0 || next <= from || count == 0 {
            out.next_offset = out.next_offset.max(next);
            continue;
        }
        let compression = match attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            c => return Err(corrupt(format!("Unknown compression algorithm used: {c}"))),
        };
        if compression != Compression::None && *budget == 0 {
            break;
        }
        out.next_offset = out.next_offset.max(next);
        let records =
            decompress_records(&batch.slice(BATCH_HEADER..), compression, count).map_err(corrupt)?;
        if compression != Compression::None {
            *budget = budget.saturating_sub(records.len());
        }
        out.batches.push(Batch {
            records,
            at: 0,
            left: count as u32,
            header: BatchHeader {
                base_offset: base,
                base_timestamp: be_i64(27),
                max_timestamp: be_i64(35),
                log_append_time: attributes & LOG_APPEND_TIME != 0,
            },
            from,
        });
    }
    Ok(out)
}

/// One batch's records, decompressed, taken one at a time.
#[derive(Debug)]
pub struct Batch {
    records: Bytes,
    /// Where the next record starts in `records`.
    at: usize,
    /// Records the batch header promises that were not parsed yet.
    left: u32,
    header: BatchHeader,
    from: i64,
}

/// What a batch's records need from its header.
#[derive(Debug, Clone, Copy)]
struct BatchHeader {
    base_offset: i64,
    base_timestamp: i64,
    max_timestamp: i64,
    log_append_time: bool,
}

/// One record, borrowed from its batch's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    pub offset: i64,
    /// Milliseconds: the producer's, or the broker's when the topic uses log append time.
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    header_count: usize,
    /// The headers' bytes, already checked to hold `header_count` headers.
    headers: &'a [u8],
}

impl<'a> RawRecord<'a> {
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    /// The headers in order: name and value (`None` for a null value).
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)> + use<'a> {
        let mut r = Reader {
            b: self.headers,
            at: 0,
        };
        (0..self.header_count).map_while(move |_| r.header())
    }
}

impl Batch {
    /// Records the header promised that were not taken yet (an upper bound).
    pub fn left(&self) -> usize {
        self.left as usize
    }

    /// The next record at or after the fetch offset; `None` once the batch is done. A
    /// record that does not parse is an error every time it is asked for: nothing after
    /// it is skipped silently.
    pub fn next_record(&mut self) -> Result<Option<RawRecord<'_>>> {
        let records: &[u8] = &self.records;
        loop {
            if self.left == 0 || self.at >= records.len() {
                self.left = 0;
                return Ok(None);
            }
            let mut r = Reader {
                b: records,
                at: self.at,
            };
            let Some((record, end)) = r.record(&self.header) else {
                return Err(Error::CorruptData(format!(
                    "record batch at offset {}: the record at byte {} does not parse",
                    self.header.base_offset, self.at
                )));
            };
            self.at = end;
            self.left -= 1;
            if record.offset >= self.from {
                return Ok(Some(record));
            }
        }
    }
}

/// A cursor over record bytes; every read is bounds-checked and yields `None` past the end.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// A zigzag varint (Kafka's record fields), at most 64 bits. Inlined, with paths for one
    /// and two bytes, the usual lengths.
    #[inline(always)]
    fn varint(&mut self) -> Option<i64> {
        let zigzag = |v: u64| (v >> 1) as i64 ^ -((v & 1) as i64);
        let first = *self.b.get(self.at)?;
        if first < 0x80 {
            self.at += 1;
            return Some(zigzag(first as u64));
        }
        let second = *self.b.get(self.at + 1)?;
        if second < 0x80 {
            self.at += 2;
            return Some(zigzag((first & 0x7f) as u64 | (second as u64) << 7));
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Option<i64> {
        let mut v: u64 = 0;
        let mut shift = 0;
        loop {
            let byte = *self.b.get(self.at)?;
            self.at += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Some((v >> 1) as i64 ^ -((v & 1) as i64));
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }

    #[inline]
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(len)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    /// A length-prefixed byte string; length -1 is null.
    #[inline]
    fn nullable(&mut self) -> Option<Option<&'a [u8]>> {
        match self.varint()? {
            -1 => Some(None),
            len if len >= 0 => self.bytes(len as usize).map(Some),
            _ => None,
        }
    }

    fn header(&mut self) -> Option<(&'a [u8], Option<&'a [u8]>)> {
        let name_len = self.varint()?;
        let name = self.bytes(usize::try_from(name_len).ok()?)?;
        Some((name, self.nullable()?))
    }

    /// The record at the cursor and where the next one starts.
    fn record(&mut self, batch: &BatchHeader) -> Option<(RawRecord<'a>, usize)> {
        let len = usize::try_from(self.varint()?).ok()?;
        let end = self.at.checked_add(len)?;
        let mut r = Reader {
            b: self.b.get(..end)?,
            at: self.at,
        };
        r.at += 1; // attributes: unused in v2
        let timestamp_delta = r.varint()?;
        let offset_delta = r.varint()?;
        let key = r.nullable()?;
        let value = r.nullable()?;
        let header_count = usize::try_from(r.varint()?).ok()?;
        let headers_at = r.at;
        for _ in 0..header_count {
            r.header()?;
        }
        if r.at != end {
            return None;
        }
        let timestamp = if batch.log_append_time {
            batch.max_timestamp
        } else {
            batch.base_timestamp.wrapping_add(timestamp_delta)
        };
        let record = RawRecord {
            offset: batch.base_offset.wrapping_add(offset_delta),
            timestamp,
            key,
            value,
            header_count,
            headers: &self.b[headers_at..end],
        };
        Some((record, end))
    }
}

/// One batch's records, decompressed: the bytes they are parsed from. A record count those
/// bytes cannot hold is refused, since the source goes by the count (`Batch::left`) for
/// back-pressure, lag and buffer sizes before any record is parsed.
fn decompress_records(data: &Bytes, c: Compression, count: i32) -> Result<Bytes, String> {
    let records = match c {
        // Already in memory and bounded by the fetch: no copy, no limit.
        Compression::None => data.clone(),
        c => compression::decompress(c, data, MAX_DECOMPRESSED_BATCH).map_err(|e| match e {
            Error::CorruptData(m) => m,
            other => other.to_string(),
        })?,
    };
    if i64::from(count) > (records.len() / MIN_RECORD) as i64 {
        return Err(format!("{count} records cannot fit in {} bytes", records.len()));
    }
    Ok(records)
}

/// Splits the next complete batch off `data`; `None` when only a truncated tail is left.
fn next_batch(data: &mut Bytes, what: &str) -> Result<Option<Bytes>> {
    if data.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
    if len < (BATCH_HEADER - LENGTH_PREFIX) as i32 {
        return Err(Error::CorruptData(format!(
            "{what}: record batch with length {len}"
        )));
    }
    let total = LENGTH_PREFIX + len as usize;
    if data.len() < total {
        return Ok(None);
    }
    let magic = data[16];
    if magic != 2 {
        return Err(Error::CorruptData(format!(
            "{what}: record batch of unsupported format v{magic}"
        )));
    }
    Ok(Some(data.split_to(total)))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::TimestampType;

    /// Every record of `data` as kafka-protocol's `Record` (as the tests' encoder made them).
    #[derive(Debug)]
    struct Decoded {
        records: Vec<Record>,
        next_offset: i64,
    }

    fn decode(data: Bytes, from: i64, what: &str) -> Result<Decoded> {
        let mut budget = MAX_DECOMPRESSED_FETCH;
        let fetched = decode_batches(data, from, what, &mut budget)?;
        let mut records = Vec::new();
        for mut b in fetched.batches {
            while let Some(r) = b.next_record()? {
                records.push(Record {
                    transactional: false,
                    control: false,
                    partition_leader_epoch: 0,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: r.offset,
                    sequence: -1,
                    timestamp: r.timestamp,
                    key: r.key.map(Bytes::copy_from_slice),
                    value: r.value.map(Bytes::copy_from_slice),
                    headers: r
                        .headers()
                        .map(|(k, v)| {
                            let name = StrBytes::from_string(String::from_utf8(k.to_vec()).unwrap());
                            (name, v.map(Bytes::copy_from_slice))
                        })
                        .collect(),
                    delete_horizon: false,
                });
            }
        }
        Ok(Decoded {
            records,
            next_offset: fetched.next_offset,
        })
    }

    /// Record `i` of a test batch: key `k<i>`, `value`.
    pub(crate) fn record(i: i64, value: &str) -> Record {
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i,
            sequence: -1,
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(value.to_string())),
            headers: Default::default(),
            delete_horizon: false,
        }
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// CRC-32C (Castagnoli), bit by bit: enough to re-seal a batch a test has altered.
    fn crc32c(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// Recomputes the CRC of a lone batch after a test has changed it.
    fn reseal(batch: &mut BytesMut) {
        let crc = crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    /// Two batches as a broker stores them: the second with base offset 3.
    fn two_batches() -> Bytes {
        let first = encode(
            &mut [record(0, "a"), record(1, "b"), record(2, "c")],
            -1,
            Compression::None,
        )
        .unwrap();
        let mut second = BytesMut::from(
            &encode(&mut [record(0, "d"), record(1, "e")], -1, Compression::None).unwrap()[..],
        );
        second[0..8].copy_from_slice(&3i64.to_be_bytes());
        [first, second.freeze()].concat().into()
    }

    #[test]
    fn decodes_all_batches_and_skips_what_lies_before_the_fetch_offset() {
        let d = decode(two_batches(), 1, "t-0").unwrap();
        let values: Vec<_> = d.records.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, ["b", "c", "d", "e"]);
        assert_eq!(d.records[2].offset, 3);
        assert_eq!(d.next_offset, 5);
    }

    #[test]
    fn a_truncated_last_batch_is_left_for_the_next_fetch() {
        let data = two_batches();
        let cut = data.slice(..data.len() - 5);
        let d = decode(cut, 0, "t-0").unwrap();
        assert_eq!(d.records.len(), 3);
        assert_eq!(d.next_offset, 3);
    }

    #[test]
    fn a_flipped_bit_is_a_corrupt_data_error() {
        let mut data = BytesMut::from(&two_batches()[..]);
        let last = data.len() - 1;
        data[last] ^= 0x40;
        let err = decode(data.freeze(), 0, "t-0").unwrap_err();
        assert!(
            matches!(&err, Error::CorruptData(m) if m.contains("t-0")),
            "{err}"
        );
    }

    #[test]
    fn garbage_lengths_are_errors_not_panics() {
        let mut data = BytesMut::from(&two_batches()[..]);
        data[8..12].copy_from_slice(&7i32.to_be_bytes());
        assert!(matches!(
            decode(data.freeze(), 0, "t-0"),
            Err(Error::CorruptData(_))
        ));
        assert_eq!(
            decode(Bytes::from_static(&[1, 2, 3]), 0, "t")
                .unwrap()
                .records
                .len(),
            0
        );
    }

    #[test]
    fn every_codec_round_trips_and_is_named_in_the_attributes() {
        let values: Vec<String> = (0..50).map(|i| format!("value {i} ").repeat(i)).collect();
        for c in CODECS {
            let mut records: Vec<_> = (0..50).map(|i| record(i, &values[i as usize])).collect();
            let encoded = encode(&mut records, -1, c).unwrap();
            let attributes = i16::from_be_bytes([encoded[21], encoded[22]]);
            assert_eq!(attributes & 0x7, c as i16, "{c:?}");
            let d = decode(encoded, 0, "t-0").unwrap();
            // Sequence numbers are the producer's business; a consumer does not read them.
            records.iter_mut().for_each(|r| r.sequence = -1);
            assert_eq!(d.records, records, "{c:?}");
            assert_eq!(d.next_offset, 50);
        }
    }

    #[test]
    fn compressed_batches_are_smaller() {
        let value = "the same value, over and over ".repeat(20);
        let mut records: Vec<_> = (0..100).map(|i| record(i, &value)).collect();
        let plain = encode(&mut records, -1, Compression::None).unwrap().len();
        for c in &CODECS[1..] {
            assert!(encode(&mut records, -1, *c).unwrap().len() < plain / 5, "{c:?}");
        }
    }

    #[test]
    fn corrupt_compressed_records_are_corrupt_data_naming_the_codec() {
        let mut batch = BytesMut::from(&encode(&mut [record(0, "a")], -1, Compression::Gzip).unwrap()[..]);
        batch[BATCH_HEADER] ^= 0xff; // the gzip magic
        reseal(&mut batch);
        let err = decode(batch.freeze(), 0, "t-0").unwrap_err();
        assert!(
            matches!(&err, Error::CorruptData(m) if m.contains("t-0") && m.contains("gzip")),
            "{err}"
        );
    }

    #[test]
    fn a_record_count_the_bytes_cannot_hold_is_refused_before_allocating() {
        let mut batch = BytesMut::from(&encode(&mut [record(0, "a")], -1, Compression::None).unwrap()[..]);
        batch[RECORD_COUNT_AT..BATCH_HEADER].copy_from_slice(&i32::MAX.to_be_bytes());
        reseal(&mut batch);
        let err = decode(batch.freeze(), 0, "t-0").unwrap_err();
        assert!(
            matches!(&err, Error::CorruptData(m) if m.contains("cannot fit")),
            "{err}"
        );
    }

    #[test]
    fn batches_past_an_answers_decompression_budget_are_left_for_the_next_fetch() {
        let zeros = "\0".repeat(100_000);
        let batch_at = |base: i64| {
            let mut b = BytesMut::from(&encode(&mut [record(0, &zeros)], -1, Compression::Gzip).unwrap()[..]);
            b[0..8].copy_from_slice(&base.to_be_bytes());
            b.freeze()
        };
        let data: Bytes = [batch_at(0), batch_at(1), batch_at(2)].concat().into();
        let mut budget = 150_000;
        let first = decode_batches(data.clone(), 0, "t-0", &mut budget).unwrap();
        assert_eq!((first.batches.len(), first.next_offset, budget), (2, 2, 0));
        // The next answer has a budget of its own; the first batch is taken whatever it is.
        let mut budget = 1;
        let rest = decode_batches(data, 2, "t-0", &mut budget).unwrap();
        assert_eq!((rest.batches.len(), rest.next_offset), (1, 3));
    }

    #[test]
    fn the_test_crc_matches_the_encoder() {
        let batch = encode(&mut [record(0, "a")], -1, Compression::None).unwrap();
        let mut resealed = BytesMut::from(&batch[..]);
        reseal(&mut resealed);
        assert_eq!(&resealed[..], &batch[..]);
    }
}

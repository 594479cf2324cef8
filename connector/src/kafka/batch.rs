//! Record batches (format v2): encoding what a producer sends and decoding what a fetch
//! returns, with the framing checks a fetch response needs (a truncated last batch is
//! normal there and is left for the next fetch).

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
};

use crate::error::{Error, Result};

/// Bytes before the first record of a v2 batch.
const BATCH_HEADER: usize = 61;
/// Bytes of a batch counted by its length field start after base offset (8) and length (4).
const LENGTH_PREFIX: usize = 12;

/// Encodes `records` into one uncompressed v2 batch. Offsets are numbered 0..n (the
/// broker assigns real ones) and sequences follow `base_sequence` (-1 when the producer
/// is not idempotent); the encoder keeps records in one batch only while both advance
/// together.
pub fn encode(records: &mut [Record], base_sequence: i32) -> Result<Bytes> {
    for (i, r) in records.iter_mut().enumerate() {
        r.offset = i as i64;
        r.sequence = base_sequence.wrapping_add(i as i32);
    }
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options)
        .map_err(|e| Error::InvalidRecord(format!("cannot encode record batch: {e}")))?;
    Ok(buf.freeze())
}

/// A decoded batch: its records and the offset that follows it.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub next_offset: i64,
}

/// Decodes every complete batch in `data`; records before `from` (a fetch may start in
/// the middle of a batch) and control records are dropped. `what` names the partition
/// for errors.
pub fn decode(mut data: Bytes, from: i64, what: &str) -> Result<Decoded> {
    let mut out = Decoded {
        records: Vec::new(),
        next_offset: from,
    };
    while let Some(mut batch) = next_batch(&mut data, what)? {
        let base = i64::from_be_bytes(batch[0..8].try_into().expect("8 bytes"));
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().expect("4 bytes"));
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(|data: &mut Bytes, compression: Compression| match compression {
                Compression::None => Ok(data.clone()),
                other => anyhow::bail!("{other:?} compression is not supported yet"),
            }),
        )
        .map_err(|e| Error::CorruptData(format!("{what}: record batch at offset {base}: {e}")))?;
        out.records
            .extend(set.records.into_iter().filter(|r| !r.control && r.offset >= from));
        out.next_offset = out.next_offset.max(base.saturating_add(last_delta as i64 + 1));
    }
    Ok(out)
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
mod tests {
    use super::*;
    use kafka_protocol::records::TimestampType;

    fn record(i: i64, value: &str) -> Record {
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

    /// Two batches as a broker stores them: the second with base offset 3.
    fn two_batches() -> Bytes {
        let first = encode(&mut [record(0, "a"), record(1, "b"), record(2, "c")], -1).unwrap();
        let mut second = BytesMut::from(&encode(&mut [record(0, "d"), record(1, "e")], -1).unwrap()[..]);
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
}

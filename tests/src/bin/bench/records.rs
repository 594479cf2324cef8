//! The records the benchmarks write, generated in memory before any clock starts.

use anyhow::Result;
use connector_host::{RecordBatch, wit};

use crate::DISTINCT_KEYS;
use crate::producer::WRITE_BATCH;

/// `count` raw records: keys `key-{i % 10000}`, values `size` pseudo-random letters (like
/// kafka-producer-perf-test's payloads: neither all-equal bytes nor incompressible noise).
pub(crate) fn generate(size: usize, count: usize) -> Vec<wit::Record> {
    records(size).take(count).collect()
}

/// `generate`'s records packed, `WRITE_BATCH` per batch: what ours is handed, as a pipeline
/// hands a source's batches on (built a batch at a time, never all records at once).
pub(crate) fn generate_packed(size: usize, count: usize) -> Result<Vec<RecordBatch>> {
    let mut all = records(size).take(count).peekable();
    let mut batches = Vec::with_capacity(count / WRITE_BATCH + 1);
    while all.peek().is_some() {
        let chunk: Vec<wit::Record> = all.by_ref().take(WRITE_BATCH).collect();
        batches.push(RecordBatch::pack(&chunk)?);
    }
    Ok(batches)
}

/// Records with keys `key-{i % DISTINCT_KEYS}` and values of `size` pseudo-random letters.
pub(crate) fn records(size: usize) -> impl Iterator<Item = wit::Record> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..).map(move |i| {
        let mut value = Vec::with_capacity(size);
        while value.len() < size {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            for b in r.to_le_bytes().iter().take(size - value.len()) {
                value.push(b'A' + b % 26);
            }
        }
        wit::Record {
            position: vec![],
            operation: wit::Operation::Create,
            metadata: vec![],
            key: Some(wit::Data::Raw(format!("key-{}", i % DISTINCT_KEYS).into_bytes())),
            payload: wit::Change {
                before: None,
                after: Some(wit::Data::Raw(value)),
            },
        }
    })
}

pub(crate) fn raw(d: &Option<wit::Data>) -> &[u8] {
    match d {
        Some(wit::Data::Raw(b)) => b,
        _ => unreachable!("the bench generates raw keys and values"),
    }
}

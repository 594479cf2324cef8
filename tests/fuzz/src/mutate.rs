//! Mutations of a valid encoding: bytes flipped, set, inserted, deleted, duplicated, and
//! lengths replaced by huge or negative values, as a broken or hostile broker could send.

use crate::rng::Rng;

/// Values a length field may be set to: at and around every limit an i16, i32, u32 or
/// varint length can reach.
const HUGE_BE: [[u8; 4]; 6] = [
    [0x7f, 0xff, 0xff, 0xff],
    [0xff, 0xff, 0xff, 0xff],
    [0x80, 0x00, 0x00, 0x00],
    [0x7f, 0xff, 0xff, 0xfe],
    [0x00, 0xff, 0xff, 0xff],
    [0x00, 0x00, 0x7f, 0xff],
];
const HUGE_VARINT: [&[u8]; 4] = [
    &[0xff, 0xff, 0xff, 0xff, 0x0f],
    &[0xfe, 0xff, 0xff, 0xff, 0x0f],
    &[0x80, 0x80, 0x80, 0x80, 0x08],
    &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
];

/// Applies one to four mutations to `data`; `other` is another valid input to splice from.
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    for _ in 0..1 + rng.below(4) {
        one(rng, data, other);
    }
}

fn one(rng: &mut Rng, data: &mut Vec<u8>, other: &[u8]) {
    let at = rng.below(data.len() + 1);
    match rng.below(10) {
        0 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] ^= 1 << rng.below(8);
        }
        1 if !data.is_empty() => {
            let i = rng.below(data.len());
            data[i] = rng.next_u64() as u8;
        }
        2 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if at < data.len() => {
            let end = (at + 1 + rng.below(16)).min(data.len());
            data.drain(at..end);
        }
        4 if at < data.len() => {
            let end = (at + 1 + rng.below(64)).min(data.len());
            let copy = data[at..end].to_vec();
            let to = rng.below(data.len() + 1);
            data.splice(to..to, copy);
        }
        5 | 6 => overwrite(data, at, rng.pick(&HUGE_BE)),
        7 => overwrite(data, at, rng.pick(&HUGE_VARINT)),
        8 => data.truncate(at),
        _ if !other.is_empty() => {
            let from = rng.below(other.len());
            let end = (from + 1 + rng.below(64)).min(other.len());
            overwrite(data, at, &other[from..end]);
        }
        _ => {}
    }
}

/// Writes `bytes` over `data` from `at`, growing it when they run past its end.
fn overwrite(data: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = at + bytes.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[at..end].copy_from_slice(bytes);
}

/// Seals a lone v2 record batch again after a mutation (its CRC-32C covers everything
/// from the attributes on), so the decoder goes past the CRC into the records and the
/// codecs. Too short a batch is left as it is.
pub fn reseal(batch: &mut [u8]) {
    if batch.len() > 21 {
        let crc = crc32c::crc32c(&batch[21..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

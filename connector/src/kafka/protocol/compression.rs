//! Record-batch compression: the codecs of the Kafka protocol, in pure Rust because the C
//! libraries do not build for wasm32-wasip2. Each writes what the Java client writes and
//! reads what the Java client and librdkafka write:
//!
//! - gzip: a gzip stream (several members are read, as `GZIPInputStream` does);
//! - snappy: the xerial framing of snappy-java is written; it and plain raw snappy, which
//!   librdkafka may write, are read;
//! - lz4: the LZ4 frame format, with independent 64 KiB blocks and no checksums (the batch
//!   has its CRC, and the Java reader hashes content its own way);
//! - zstd: zstd frames.
//!
//! Decompression never trusts lengths in the input: output is capped at a limit and
//! anything malformed is `Error::CorruptData` naming the codec.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};
pub use kafka_protocol::records::Compression;
use lz4_flex::frame::{BlockMode, BlockSize, FrameInfo};
use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

use crate::error::{Error, Result};

/// snappy-java's stream header: magic, then version 1 and minimum compatible version 1
/// as big-endian i32s.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER: usize = 16;
/// snappy-java's default block size, so our blocks look like the Java client's.
const XERIAL_BLOCK: usize = 32 * 1024;
/// The most a snappy block can expand: its longest copy (64 bytes) takes a 3-byte tag,
/// and literals do not expand. A declared length beyond this is refused before the output
/// is allocated: a few bytes could claim the whole limit.
const SNAPPY_MAX_RATIO: usize = 22;
/// Smallest zstd window accepted whatever the limit: level 19, streaming without a known
/// size, declares 8 MiB. Larger windows are accepted only up to the limit, since the
/// decoder reserves the whole window up front.
const ZSTD_MIN_WINDOW_CAP: usize = 8 << 20;

/// The codec named as in the `compression.type` setting of Kafka clients.
pub fn parse(name: &str) -> Option<Compression> {
    match name {
        "none" => Some(Compression::None),
        "gzip" => Some(Compression::Gzip),
        "snappy" => Some(Compression::Snappy),
        "lz4" => Some(Compression::Lz4),
        "zstd" => Some(Compression::Zstd),
        _ => None,
    }
}

/// The codec's name, as `parse` takes it.
pub fn name(c: Compression) -> &'static str {
    match c {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Appends `input` compressed with `c` to `out` (copied as it is for `None`).
pub fn compress(c: Compression, input: &[u8], out: &mut BytesMut) -> Result<()> {
    let done = match c {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        Compression::Gzip => gzip_compress(input, out).map_err(|e| e.to_string()),
        Compression::Snappy => xerial_compress(input, out).map_err(|e| e.to_string()),
        Compression::Lz4 => lz4_compress(input, out).map_err(|e| e.to_string()),
        Compression::Zstd => {
            // Fastest is the only level ruzstd compresses at; it unwraps I/O results, which
            // reading a slice and writing to memory never fail.
            let level = ruzstd::encoding::CompressionLevel::Fastest;
            ruzstd::encoding::compress(input, out.writer(), level);
            Ok(())
        }
    };
    done.map_err(|e| Error::Other(format!("{} compression: {e}", name(c))))
}

/// Decompresses `input`; more than `limit` bytes of output is an error, so a small
/// hostile input cannot make us allocate without bound.
pub fn decompress(c: Compression, input: &[u8], limit: usize) -> Result<Bytes> {
    let out = match c {
        _ if input.is_empty() && c != Compression::None => Err("no data".to_string()),
        Compression::None if input.len() > limit => Err(over_limit(limit)),
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => read_limited(flate2::read::MultiGzDecoder::new(input), limit),
        Compression::Snappy => snappy_decompress(input, limit),
        Compression::Lz4 => lz4_frames_complete(input)
            .and_then(|()| read_limited(lz4_flex::frame::FrameDecoder::new(input), limit)),
        Compression::Zstd => zstd_decompress(input, limit),
    };
    out.map(Bytes::from)
        .map_err(|e| Error::CorruptData(format!("{} data: {e}", name(c))))
}

fn over_limit(limit: usize) -> String {
    format!("decompresses to more than {limit} bytes")
}

/// Reads `r` to its end, failing once it yields more than `limit` bytes.
fn read_limited(r: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    append_limited(r, &mut out, limit)?;
    Ok(out)
}

/// Appends what `r` yields to `out`, failing once `out` would exceed `limit`: reading one
/// byte past the room left tells "exactly full" from "too much".
fn append_limited(r: impl Read, out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    let room = limit.saturating_sub(out.len()) as u64;
    r.take(room + 1).read_to_end(out).map_err(|e| e.to_string())?;
    if out.len() > limit {
        return Err(over_limit(limit));
    }
    Ok(())
}

fn gzip_compress(input: &[u8], out: &mut BytesMut) -> std::io::Result<()> {
    let mut enc = flate2::write::GzEncoder::new(out.writer(), flate2::Compression::default());
    enc.write_all(input)?;
    enc.finish().map(drop)
}

fn lz4_compress(input: &[u8], out: &mut BytesMut) -> Result<(), lz4_flex::frame::Error> {
    // Java's reader rejects dependent blocks; 64 KiB blocks are what it writes.
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Independent);
    let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out.writer());
    enc.write_all(input)?;
    enc.finish().map(drop)
}

/// Walks the LZ4 frames' block lengths and fails unless each frame ends with its end
/// mark (and content checksum): lz4_flex takes the end of the input between blocks for
/// the end of the data, so a frame cut there would decode to a prefix of it.
fn lz4_frames_complete(mut rest: &[u8]) -> Result<(), String> {
    const CUT: &str = "truncated frame";
    while !rest.is_empty() {
        let flg = *rest.get(4).ok_or(CUT)?;
        let flag = |bit: u8, len: usize| if flg & bit != 0 { len } else { 0 };
        // Magic, FLG, BD, content size, dictionary id, header checksum.
        let header = 4 + 2 + flag(0x08, 8) + flag(0x01, 4) + 1;
        rest = rest.get(header..).ok_or(CUT)?;
        loop {
            let (word, tail) = rest.split_first_chunk::<4>().ok_or(CUT)?;
            let word = u32::from_le_bytes(*word);
            if word == 0 {
                rest = tail.get(flag(0x04, 4)..).ok_or(CUT)?;
                break;
            }
            // The high bit marks a stored block; the rest is its length.
            let len = (word & 0x7fff_ffff) as usize + flag(0x10, 4);
            rest = tail.get(len..).ok_or(CUT)?;
        }
    }
    Ok(())
}

/// snappy-java's framing: the header, then per block its big-endian length and the raw
/// snappy block.
fn xerial_compress(input: &[u8], out: &mut BytesMut) -> Result<(), snap::Error> {
    out.extend_from_slice(&XERIAL_MAGIC);
    out.put_i32(1);
    out.put_i32(1);
    let mut enc = snap::raw::Encoder::new();
    let mut block = vec![0; snap::raw::max_compress_len(XERIAL_BLOCK)];
    for chunk in input.chunks(XERIAL_BLOCK) {
        let n = enc.compress(chunk, &mut block)?;
        out.put_u32(n as u32);
        out.extend_from_slice(&block[..n]);
    }
    Ok(())
}

/// Xerial-framed when it starts with snappy-java's magic (which no raw snappy block can:
/// its length varint would be followed by a copy with nothing to copy), raw otherwise.
fn snappy_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut dec = snap::raw::Decoder::new();
    if input.starts_with(&XERIAL_MAGIC) {
        xerial_blocks(input, &mut dec, &mut out, limit)?;
    } else {
        snappy_block(input, &mut dec, &mut out, limit)?;
    }
    Ok(out)
}

fn xerial_blocks(
    mut rest: &[u8],
    dec: &mut snap::raw::Decoder,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    while !rest.is_empty() {
        // snappy-java also reads streams written one after another, headers and all.
        if rest.starts_with(&XERIAL_MAGIC) {
            rest = rest.get(XERIAL_HEADER..).ok_or("truncated xerial header")?;
            continue;
        }
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated xerial block length")?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).ok_or("truncated xerial block")?;
        snappy_block(block, dec, out, limit)?;
        rest = &tail[len..];
    }
    Ok(())
}

/// Appends one raw snappy block, checking its declared length against the room left
/// before allocating it.
fn snappy_block(
    block: &[u8],
    dec: &mut snap::raw::Decoder,
    out: &mut Vec<u8>,
    limit: usize,
) -> Result<(), String> {
    let len = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if len > limit - out.len() {
        return Err(over_limit(limit));
    }
    if len / SNAPPY_MAX_RATIO > block.len() {
        return Err(format!("a block of {} bytes cannot hold {len}", block.len()));
    }
    let start = out.len();
    out.resize(start + len, 0);
    let n = dec
        .decompress(block, &mut out[start..])
        .map_err(|e| e.to_string())?;
    out.truncate(start + n);
    Ok(())
}

/// Every frame in `input` (zstd allows several, and skippable ones), each checked
/// against its content checksum when it has one.
fn zstd_decompress(mut input: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut decoder = FrameDecoder::new();
    decoder.set_max_window_size(limit.max(ZSTD_MIN_WINDOW_CAP) as u64);
    while !input.is_empty() {
        match StreamingDecoder::new_with_decoder(&mut input, &mut decoder) {
            Ok(frame) => append_limited(frame, &mut out, limit)?,
            Err(e) => {
                let skip = skippable_len(e)?;
                input = input.get(skip..).ok_or("truncated skippable frame")?;
                continue;
            }
        }
        // The streaming decoder reads the checksum but leaves comparing it to us.
        let want = decoder.get_checksum_from_data();
        if want.is_some() && decoder.get_calculated_checksum() != want {
            return Err("content checksum mismatch".to_string());
        }
    }
    Ok(out)
}

/// The length of a skippable frame's content (its header is read already); any other
/// error as it is.
fn skippable_len(e: FrameDecoderError) -> Result<usize, String> {
    match e {
        FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. }) => {
            Ok(length as usize)
        }
        e => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];
    const CODECS: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// What every fixture below decompresses to.
    const FIXTURE: &[u8] = b"Kafka record batch fixture. Kafka record batch fixture. \
        Kafka record batch fixture. Kafka record batch fixture. the end";

    /// Python's gzip module (zlib): `gzip.compress(FIXTURE, mtime=0)`.
    const GZIP_ZLIB: &[u8] = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xf3\x4e\x4c\xcb\x4e\x54\x28\x4a\x4d\xce\x2f\x4a\x51\x48\x4a\x2c\x49\xce\x50\x48\xcb\xac\x28\x29\x2d\x4a\xd5\x53\xf0\xa6\x81\x5c\x49\x46\xaa\x42\x6a\x5e\x0a\x00\x19\x01\x99\x49\x77\x00\x00\x00";
    /// cramjam's `lz4.compress` (the C liblz4): a frame with linked blocks, block and
    /// content checksums.
    const LZ4_LIBLZ4: &[u8] = b"\x04\x22\x4d\x18\x54\x40\xae\x29\x00\x00\x00\xff\x0d\x4b\x61\x66\x6b\x61\x20\x72\x65\x63\x6f\x72\x64\x20\x62\x61\x74\x63\x68\x20\x66\x69\x78\x74\x75\x72\x65\x2e\x20\x1c\x00\x41\x70\x74\x68\x65\x20\x65\x6e\x64\x89\x01\x27\xc9\x00\x00\x00\x00\xae\xf6\xb5\x73";
    /// cramjam's `zstd.compress(level=3)` (the C libzstd): a single-segment frame.
    const ZSTD_LIBZSTD: &[u8] = b"\x28\xb5\x2f\xfd\x20\x77\x5d\x01\x00\x34\x02\x4b\x61\x66\x6b\x61\x20\x72\x65\x63\x6f\x72\x64\x20\x62\x61\x74\x63\x68\x20\x66\x69\x78\x74\x75\x72\x65\x2e\x20\x74\x68\x65\x20\x65\x6e\x64\x01\x00\xc4\x4f\xd3\x09";
    /// python-snappy over the C++ libsnappy: `snappy.compress(FIXTURE)`, raw.
    const SNAPPY_LIBSNAPPY: &[u8] = b"\x77\x6c\x4b\x61\x66\x6b\x61\x20\x72\x65\x63\x6f\x72\x64\x20\x62\x61\x74\x63\x68\x20\x66\x69\x78\x74\x75\x72\x65\x2e\x20\xfe\x1c\x00\x4e\x1c\x00\x18\x74\x68\x65\x20\x65\x6e\x64";
    /// The xerial header by hand around two libsnappy blocks: FIXTURE[..60], FIXTURE[60..].
    const SNAPPY_XERIAL: &[u8] = b"\x82\x53\x4e\x41\x50\x50\x59\x00\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x21\x3c\x6c\x4b\x61\x66\x6b\x61\x20\x72\x65\x63\x6f\x72\x64\x20\x62\x61\x74\x63\x68\x20\x66\x69\x78\x74\x75\x72\x65\x2e\x20\x7e\x1c\x00\x00\x00\x00\x29\x3b\x6c\x61\x20\x72\x65\x63\x6f\x72\x64\x20\x62\x61\x74\x63\x68\x20\x66\x69\x78\x74\x75\x72\x65\x2e\x20\x4b\x61\x66\x6b\x5e\x1c\x00\x18\x74\x68\x65\x20\x65\x6e\x64";

    fn compressed(c: Compression, input: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        compress(c, input, &mut out).unwrap();
        out.to_vec()
    }

    /// Deterministic bytes that do not compress (xorshift).
    fn random_ish(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn assert_corrupt(c: Compression, input: &[u8], limit: usize, what: &str) {
        match decompress(c, input, limit) {
            Err(Error::CorruptData(m)) => assert!(m.contains(name(c)), "{what}: {m}"),
            other => panic!("{what}: {c:?} gave {other:?}"),
        }
    }

    #[test]
    fn parses_the_kafka_names() {
        for c in ALL {
            assert_eq!(parse(name(c)), Some(c));
        }
        assert_eq!(parse("GZIP"), None);
        assert_eq!(parse("brotli"), None);
    }

    #[test]
    fn every_codec_round_trips() {
        let repetitive: Vec<u8> = b"0123456789abcdef".repeat(64 * 1024);
        let inputs = [&b""[..], b"x", FIXTURE, &repetitive, &random_ish(1 << 20)];
        for c in ALL {
            for input in inputs {
                let packed = compressed(c, input);
                let back = decompress(c, &packed, input.len()).unwrap();
                assert!(back == input, "{c:?} over {} bytes", input.len());
            }
        }
    }

    #[test]
    fn repetitive_input_shrinks() {
        let input = b"0123456789abcdef".repeat(64 * 1024);
        for c in CODECS {
            assert!(compressed(c, &input).len() < input.len() / 10, "{c:?}");
        }
    }

    #[test]
    fn reads_what_other_implementations_write() {
        let fixtures = [
            (Compression::Gzip, GZIP_ZLIB),
            (Compression::Lz4, LZ4_LIBLZ4),
            (Compression::Zstd, ZSTD_LIBZSTD),
            (Compression::Snappy, SNAPPY_LIBSNAPPY),
            (Compression::Snappy, SNAPPY_XERIAL),
        ];
        for (c, packed) in fixtures {
            assert_eq!(decompress(c, packed, 1024).unwrap(), FIXTURE, "{c:?}");
        }
    }

    #[test]
    fn reads_raw_snappy_built_from_the_format_description() {
        // Length 16, a 4-byte literal, then a copy of 12 bytes from offset 4 (2-byte offset).
        let raw = b"\x10\x0cabcd\x2e\x04\x00";
        let xerial = [&XERIAL_MAGIC[..], b"\0\0\0\x01\0\0\0\x01\0\0\0\x09", raw].concat();
        for packed in [&raw[..], &xerial] {
            assert_eq!(
                decompress(Compression::Snappy, packed, 16).unwrap(),
                &b"abcdabcdabcdabcd"[..]
            );
        }
    }

    #[test]
    fn snappy_is_written_in_xerial_blocks() {
        let input = random_ish(XERIAL_BLOCK + 10);
        let packed = compressed(Compression::Snappy, &input);
        assert_eq!(&packed[..8], &XERIAL_MAGIC);
        assert_eq!(&packed[8..16], b"\0\0\0\x01\0\0\0\x01");
        let first = u32::from_be_bytes(packed[16..20].try_into().unwrap()) as usize;
        let raw = snap::raw::Decoder::new().decompress_vec(&packed[20..20 + first]);
        assert_eq!(raw.unwrap(), &input[..XERIAL_BLOCK]);
        // Streams written one after another read as one, as snappy-java reads them.
        let twice = [packed.clone(), packed].concat();
        let back = decompress(Compression::Snappy, &twice, 2 * input.len()).unwrap();
        assert_eq!(back, [&input[..], &input[..]].concat());
    }

    #[test]
    fn lz4_is_written_as_the_java_client_reads_it() {
        let packed = compressed(Compression::Lz4, FIXTURE);
        assert_eq!(&packed[..4], b"\x04\x22\x4d\x18");
        // FLG: version 1, independent blocks, no checksums, no size; BD: 64 KiB blocks.
        assert_eq!(packed[4], 0b0110_0000);
        assert_eq!(packed[5], 0x40);
    }

    #[test]
    fn garbage_and_empty_input_are_corrupt() {
        for c in CODECS {
            assert_corrupt(c, b"", 1024, "empty");
            assert_corrupt(c, b"\x00\x01\x02 this is not compressed", 1024, "garbage");
        }
    }

    #[test]
    fn truncated_input_is_corrupt() {
        for c in [Compression::Gzip, Compression::Lz4, Compression::Zstd] {
            let packed = compressed(c, FIXTURE);
            for cut in 1..packed.len() {
                assert_corrupt(c, &packed[..cut], 1024, &format!("cut at {cut}"));
            }
        }
        for (c, packed) in [
            (Compression::Gzip, GZIP_ZLIB),
            (Compression::Lz4, LZ4_LIBLZ4),
            (Compression::Zstd, ZSTD_LIBZSTD),
        ] {
            for cut in 1..packed.len() {
                assert_corrupt(c, &packed[..cut], 1024, &format!("fixture cut at {cut}"));
            }
        }
        // LZ4 cut between blocks: after the first 64 KiB block, and without its end mark.
        let packed = compressed(Compression::Lz4, &random_ish(200_000));
        let first = u32::from_le_bytes(packed[7..11].try_into().unwrap()) & 0x7fff_ffff;
        for cut in [11 + first as usize, packed.len() - 4] {
            assert_corrupt(Compression::Lz4, &packed[..cut], 1 << 20, "between blocks");
        }
        for cut in 1..SNAPPY_LIBSNAPPY.len() {
            assert_corrupt(Compression::Snappy, &SNAPPY_LIBSNAPPY[..cut], 1024, "raw");
        }
        // A xerial stream ending between blocks is complete; cut elsewhere.
        let len = SNAPPY_XERIAL.len();
        for cut in [10, 18, 30, 55, len - 1] {
            assert_corrupt(Compression::Snappy, &SNAPPY_XERIAL[..cut], 1024, "xerial");
        }
    }

    #[test]
    fn checksums_are_verified() {
        // gzip ends with CRC-32 then length, zstd with its checksum.
        for (c, from_end) in [(Compression::Gzip, 5), (Compression::Zstd, 2)] {
            let mut packed = compressed(c, FIXTURE);
            let at = packed.len() - from_end;
            packed[at] ^= 1;
            assert_corrupt(c, &packed, 1024, "checksum");
        }
        let mut packed = LZ4_LIBLZ4.to_vec();
        packed[20] ^= 1;
        assert_corrupt(Compression::Lz4, &packed, 1024, "checksum");
    }

    #[test]
    fn output_over_the_limit_is_corrupt() {
        let zeros = vec![0u8; 100_000];
        for c in ALL {
            let packed = compressed(c, &zeros);
            match decompress(c, &packed, 1000) {
                Err(Error::CorruptData(m)) => assert!(m.contains("more than 1000 bytes"), "{m}"),
                other => panic!("{c:?} gave {other:?}"),
            }
            assert_eq!(decompress(c, &packed, zeros.len()).unwrap().len(), zeros.len());
        }
    }

    #[test]
    fn a_snappy_length_its_block_cannot_hold_is_refused_before_allocating() {
        // A raw block claiming 60 MiB (its length varint) and holding one literal byte.
        let mut block = vec![0x80, 0x80, 0x80, 0x1e];
        block.extend([0x00, b'a']);
        let (out, peak) =
            crate::alloc_meter::peak_during(|| decompress(Compression::Snappy, &block, 64 << 20));
        assert!(matches!(out, Err(Error::CorruptData(_))), "{out:?}");
        assert!(
            peak < 4096,
            "{peak} bytes allocated for a {}-byte block",
            block.len()
        );
    }

    #[test]
    fn flipped_bits_never_panic() {
        let fixtures = [GZIP_ZLIB, SNAPPY_XERIAL, LZ4_LIBLZ4, ZSTD_LIBZSTD];
        for c in CODECS {
            let mut inputs = vec![compressed(c, FIXTURE), SNAPPY_LIBSNAPPY.to_vec()];
            inputs.extend(fixtures.iter().map(|f| f.to_vec()));
            for mut packed in inputs {
                for at in 0..packed.len() * 8 {
                    packed[at / 8] ^= 1 << (at % 8);
                    let _ = decompress(c, &packed, 4096);
                    packed[at / 8] ^= 1 << (at % 8);
                }
            }
        }
    }
}

//! Choosing a partition: keyed records by murmur2 exactly as the Java client does, so the
//! same key lands on the same partition whichever client wrote it; records without a key
//! stick to one partition per write call, moving on with the next.

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= (*b as u32) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `partitions` (the Java default partitioner).
pub fn for_key(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)) as i32
}

/// Spreads records without a key: all of one write call go to one partition (one batch
/// instead of many small ones), the next call moves on.
#[derive(Debug, Default)]
pub struct Sticky {
    next: usize,
}

impl Sticky {
    /// The partition for unkeyed records of the coming write call.
    pub fn advance(&mut self, partitions: usize) -> i32 {
        let p = self.next % partitions.max(1);
        self.next = self.next.wrapping_add(1);
        p as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the Java client's own murmur2 test.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ];
        for (data, want) in cases {
            assert_eq!(murmur2(data), *want, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn sticky_moves_on_each_call() {
        let mut s = Sticky::default();
        let got: Vec<_> = (0..4).map(|_| s.advance(3)).collect();
        assert_eq!(got, [0, 1, 2, 0]);
        assert!((0..100).all(|i| for_key(format!("k{i}").as_bytes(), 6) < 6));
    }
}

//! Bloom filters: a table's answer to "might this key be here?" without reading a block.
//!
//! Format:
//!
//! ```text
//! +------------------------------+--------------------------------------+
//! | bit array (m bits, m/8 bytes)| layout bit (0x80) | probes k (7 bits)|
//! +------------------------------+--------------------------------------+
//! ```
//!
//! With `h1`, `h2` the two halves of the key's 128-bit XXH3 hash:
//!
//! * **blocked** (layout bit set; what is written): the bit array is made of 512-bit blocks;
//!   a key's block is `h1 mod blocks`, and its probes are bits `(a + i·b) mod 512` of that block
//!   for `i` in `0..k`, with `a` the high half of `h1` and `b` that of `h2` (made odd) — every
//!   probe of a key in
//!   one cache line, so a negative lookup costs one cache miss, not one per probe;
//! * **plain** (layout bit clear; tables written before blocked filters): probes are bits
//!   `(h1 + i·h2) mod m` of the whole array.
//!
//! With `b` bits per key, `k = round(b · ln 2)` (at least 1, at most 30) gives a false-positive
//! rate of about 0.6185^b for the plain layout (~0.8 % at 10 bits per key) and a little more for
//! the blocked one (~1 %).

use xxhash_rust::xxh3::xxh3_128;

/// A filter could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad bloom filter: {0}")]
pub struct FilterError(&'static str);

/// The hash pair a key probes with: computed once per lookup, however many filters it asks.
#[derive(Clone, Copy, Debug)]
pub struct KeyHash(u64, u64);

impl KeyHash {
    /// The hash of `key`.
    pub fn of(key: &[u8]) -> KeyHash {
        let h = xxh3_128(key);
        KeyHash(h as u64, (h >> 64) as u64 | 1)
    }
}

/// Builds a filter over keys added one by one.
#[derive(Debug)]
pub struct FilterBuilder {
    bits_per_key: u32,
    hashes: Vec<KeyHash>,
}

impl FilterBuilder {
    /// A builder spending `bits_per_key` bits on each key (10 is the usual choice).
    pub fn new(bits_per_key: u32) -> Self {
        FilterBuilder {
            bits_per_key: bits_per_key.clamp(1, 64),
            hashes: Vec::new(),
        }
    }

    /// Adds `key`.
    pub fn add(&mut self, key: &[u8]) {
        self.hashes.push(KeyHash::of(key));
    }

    /// The filter's bytes (blocked layout).
    pub fn finish(&self) -> Vec<u8> {
        let k =
            ((f64::from(self.bits_per_key) * std::f64::consts::LN_2).round() as u8).clamp(1, 30);
        // At least one block, so tiny tables do not have a very high false-positive rate.
        let bits = (self.hashes.len() as u64 * u64::from(self.bits_per_key)).max(BLOCK_BITS);
        let blocks = bits.div_ceil(BLOCK_BITS);
        let mut out = vec![0u8; (blocks * BLOCK_BITS / 8) as usize + 1];
        for &KeyHash(h1, h2) in &self.hashes {
            for bit in blocked_probes(h1, h2, blocks, k) {
                if let Some(b) = out.get_mut((bit / 8) as usize) {
                    *b |= 1 << (bit % 8);
                }
            }
        }
        if let Some(last) = out.last_mut() {
            *last = BLOCKED | k;
        }
        out
    }
}

/// Bits of a block of the blocked layout: a cache line.
const BLOCK_BITS: u64 = 512;
/// The layout bit of the last byte.
const BLOCKED: u8 = 0x80;

/// The bits a key with hashes `h1`, `h2` probes in a blocked filter of `blocks` blocks.
fn blocked_probes(h1: u64, h2: u64, blocks: u64, k: u8) -> impl Iterator<Item = u64> {
    let base = (h1 % blocks) * BLOCK_BITS;
    // (`h2` is odd: its low bits would put every other probe on an odd bit.)
    let (a, b) = (h1 >> 32, (h2 >> 32) | 1);
    (0..u64::from(k)).map(move |i| base + (a.wrapping_add(i.wrapping_mul(b)) % BLOCK_BITS))
}

/// A filter read back.
#[derive(Clone, Debug)]
pub struct Filter {
    bits: Vec<u8>,
    probes: u8,
    blocked: bool,
}

impl Filter {
    /// Reads a filter's bytes.
    pub fn decode(mut data: Vec<u8>) -> Result<Filter, FilterError> {
        let last = data.pop().ok_or(FilterError("empty"))?;
        let (blocked, probes) = (last & BLOCKED != 0, last & !BLOCKED);
        if data.is_empty() {
            return Err(FilterError("no bits"));
        }
        if !(1..=30).contains(&probes) {
            return Err(FilterError("probe count out of range"));
        }
        if blocked && !(data.len() as u64).is_multiple_of(BLOCK_BITS / 8) {
            return Err(FilterError("blocked filter of partial blocks"));
        }
        Ok(Filter {
            bits: data,
            probes,
            blocked,
        })
    }

    /// False only if `key` was certainly not added.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(KeyHash::of(key))
    }

    /// [`may_contain`](Self::may_contain) for the key whose hash is `hash`.
    pub fn may_contain_hash(&self, hash: KeyHash) -> bool {
        let bits = self.bits.len() as u64 * 8;
        if self.blocked {
            let KeyHash(h1, h2) = hash;
            return blocked_probes(h1, h2, bits / BLOCK_BITS, self.probes).all(|bit| {
                self.bits
                    .get((bit / 8) as usize)
                    .is_some_and(|b| b & (1 << (bit % 8)) != 0)
            });
        }
        let KeyHash(mut h, h2) = hash;
        for _ in 0..self.probes {
            let bit = h % bits;
            match self.bits.get((bit / 8) as usize) {
                Some(b) if b & (1 << (bit % 8)) != 0 => {}
                _ => return false,
            }
            h = h.wrapping_add(h2);
        }
        true
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn filter(keys: impl Iterator<Item = Vec<u8>>, bits: u32) -> Filter {
        let mut b = FilterBuilder::new(bits);
        for k in keys {
            b.add(&k);
        }
        Filter::decode(b.finish()).expect("decode")
    }

    #[test]
    fn false_positives_are_near_the_design_rate() {
        let f = filter((0..100_000u32).map(|i| i.to_be_bytes().to_vec()), 10);
        let fp = (100_000..300_000u32)
            .filter(|i| f.may_contain(&i.to_be_bytes()))
            .count();
        let rate = fp as f64 / 200_000.0;
        assert!(rate < 0.015, "false-positive rate {rate}");
    }

    /// Tables written before blocked filters keep their plain ones: still read right.
    #[test]
    fn plain_filters_still_answer() {
        let keys: Vec<Vec<u8>> = (0..1_000u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let bits = 10_000u64;
        let mut plain = vec![0u8; (bits / 8) as usize + 1];
        for k in &keys {
            let KeyHash(mut h, h2) = KeyHash::of(k);
            for _ in 0..7 {
                let bit = h % bits;
                plain[(bit / 8) as usize] |= 1 << (bit % 8);
                h = h.wrapping_add(h2);
            }
        }
        *plain.last_mut().expect("byte") = 7;
        let f = Filter::decode(plain).expect("decode");
        assert!(!f.blocked);
        assert!(keys.iter().all(|k| f.may_contain(k)));
        let fp = (1_000..21_000u32)
            .filter(|i| f.may_contain(&i.to_be_bytes()))
            .count();
        assert!(fp < 400, "{fp} false positives in 20,000");
    }

    #[test]
    fn an_empty_filter_says_no() {
        let f = filter(std::iter::empty(), 10);
        assert!(!f.may_contain(b"anything"));
    }

    proptest! {
        #[test]
        fn every_added_key_may_be_present(keys in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..200), bits in 1u32..20) {
            let f = filter(keys.iter().cloned(), bits);
            for k in &keys {
                prop_assert!(f.may_contain(k));
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), key in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(f) = Filter::decode(data) {
                let _ = f.may_contain(&key);
            }
        }
    }
}

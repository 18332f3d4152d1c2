//! Bloom filters: a table's answer to "might this key be here?" without reading a block.
//!
//! Format:
//!
//! ```text
//! +------------------------------+-----------------+
//! | bit array (m bits, m/8 bytes)| probes k: u8    |
//! +------------------------------+-----------------+
//! ```
//!
//! A key's probes are bits `(h1 + i·h2) mod m` for `i` in `0..k`, with `h1`, `h2` the two halves
//! of the key's 128-bit XXH3 hash. With `b` bits per key, `k = round(b · ln 2)` (at least 1, at
//! most 30) gives a false-positive rate of about 0.6185^b: ~0.8 % at 10 bits per key.

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

fn hashes(key: &[u8]) -> (u64, u64) {
    let KeyHash(h1, h2) = KeyHash::of(key);
    (h1, h2)
}

/// Builds a filter over keys added one by one.
#[derive(Debug)]
pub struct FilterBuilder {
    bits_per_key: u32,
    hashes: Vec<(u64, u64)>,
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
        self.hashes.push(hashes(key));
    }

    /// The filter's bytes.
    pub fn finish(&self) -> Vec<u8> {
        let k =
            ((f64::from(self.bits_per_key) * std::f64::consts::LN_2).round() as u8).clamp(1, 30);
        // At least 64 bits, so tiny tables do not have a very high false-positive rate.
        let bits = (self.hashes.len() as u64 * u64::from(self.bits_per_key)).max(64);
        let bytes = bits.div_ceil(8) as usize;
        let bits = bytes as u64 * 8;
        let mut out = vec![0u8; bytes + 1];
        for &(h1, h2) in &self.hashes {
            let mut h = h1;
            for _ in 0..k {
                let bit = h % bits;
                if let Some(b) = out.get_mut((bit / 8) as usize) {
                    *b |= 1 << (bit % 8);
                }
                h = h.wrapping_add(h2);
            }
        }
        if let Some(last) = out.last_mut() {
            *last = k;
        }
        out
    }
}

/// A filter read back.
#[derive(Clone, Debug)]
pub struct Filter {
    bits: Vec<u8>,
    probes: u8,
}

impl Filter {
    /// Reads a filter's bytes.
    pub fn decode(mut data: Vec<u8>) -> Result<Filter, FilterError> {
        let probes = data.pop().ok_or(FilterError("empty"))?;
        if data.is_empty() {
            return Err(FilterError("no bits"));
        }
        if !(1..=30).contains(&probes) {
            return Err(FilterError("probe count out of range"));
        }
        Ok(Filter { bits: data, probes })
    }

    /// False only if `key` was certainly not added.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.may_contain_hash(KeyHash::of(key))
    }

    /// [`may_contain`](Self::may_contain) for the key whose hash is `hash`.
    pub fn may_contain_hash(&self, hash: KeyHash) -> bool {
        let bits = self.bits.len() as u64 * 8;
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

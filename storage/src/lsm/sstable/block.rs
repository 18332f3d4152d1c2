//! Data and index blocks: sorted key-value entries with prefix-compressed keys and restart
//! points, so a lookup binary-searches the restarts and then scans at most a few entries.
//!
//! Block contents (a table adds a checksum trailer around them):
//!
//! ```text
//! +---------+---------+-----+---------+------------+-----+------------+--------------+
//! | entry 0 | entry 1 | ... | entry n | restart 0  | ... | restart m  | restart count|
//! |         |         |     |         | u32 LE     |     | u32 LE     | u32 LE       |
//! +---------+---------+-----+---------+------------+-----+------------+--------------+
//!
//! entry:
//! +----------------+------------------+---------------+-----------------+-------+
//! | shared: varint | unshared: varint | value: varint | key[shared..]   | value |
//! +----------------+------------------+---------------+-----------------+-------+
//! ```
//!
//! `shared` is the length of the prefix the key has in common with the previous entry's key;
//! an entry at a restart point (every [`RESTART_INTERVAL`]-th) stores its whole key (`shared` =
//! 0). Each restart is the byte offset of such an entry. Keys are strictly increasing.

use pairdb_core::varint;

/// Entries between restart points.
pub const RESTART_INTERVAL: usize = 16;

/// A block failed validation: what was wrong, and the byte offset in the block's contents.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad block at offset {offset}: {detail}")]
pub struct BlockError {
    /// Offset in the block's contents.
    pub offset: usize,
    /// What was wrong.
    pub detail: &'static str,
}

fn bad(offset: usize, detail: &'static str) -> BlockError {
    BlockError { offset, detail }
}

/// Builds one block from entries added in strictly increasing key order.
#[derive(Debug, Default)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    since_restart: usize,
    last_key: Vec<u8>,
    entries: usize,
}

impl BlockBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an entry; `key` must be greater than every key added before.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        debug_assert!(
            self.entries == 0 || key > self.last_key.as_slice(),
            "block keys must be strictly increasing"
        );
        let shared = if self.since_restart == RESTART_INTERVAL || self.entries == 0 {
            self.restarts.push(self.buf.len() as u32);
            self.since_restart = 0;
            0
        } else {
            key.iter()
                .zip(&self.last_key)
                .take_while(|(a, b)| a == b)
                .count()
        };
        let unshared = key.get(shared..).unwrap_or_default();
        varint::put(&mut self.buf, shared as u64);
        varint::put(&mut self.buf, unshared.len() as u64);
        varint::put(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(unshared);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.since_restart += 1;
        self.entries += 1;
    }

    /// Bytes the finished block would take.
    pub fn size(&self) -> usize {
        self.buf.len() + 4 * (self.restarts.len() + 1)
    }

    /// Entries added.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Whether no entry was added.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// The block's contents; the builder is empty again afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        *self = BlockBuilder::default();
        out
    }
}

/// A decoded block, ready for lookups. Nothing in it is trusted: every read is bounds-checked.
#[derive(Clone, Debug)]
pub struct Block {
    data: Vec<u8>,
    /// Offset of the restart array: entries end here.
    restarts: usize,
    count: usize,
}

fn u32_at(data: &[u8], offset: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(offset..offset.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

impl Block {
    /// Validates the restart array of `data`, a block's contents.
    pub fn decode(data: Vec<u8>) -> Result<Block, BlockError> {
        let len = data.len();
        let count_at = len
            .checked_sub(4)
            .ok_or(bad(0, "block shorter than its restart count"))?;
        let count =
            u32_at(&data, count_at).ok_or(bad(count_at, "restart count unreadable"))? as usize;
        let restarts = count
            .checked_mul(4)
            .and_then(|n| count_at.checked_sub(n))
            .ok_or(bad(count_at, "restart count exceeds the block"))?;
        if count == 0 && restarts > 0 {
            return Err(bad(count_at, "entries without a restart point"));
        }
        let block = Block {
            data,
            restarts,
            count,
        };
        let mut previous = None;
        for i in 0..count {
            let r = block.restart(i)?;
            if r >= restarts || previous.is_some_and(|p| r <= p) || (i == 0 && r != 0) {
                return Err(bad(
                    restarts + 4 * i,
                    "restart offset out of order or bounds",
                ));
            }
            previous = Some(r);
        }
        Ok(block)
    }

    fn restart(&self, i: usize) -> Result<usize, BlockError> {
        let at = self.restarts + 4 * i;
        u32_at(&self.data, at)
            .map(|r| r as usize)
            .ok_or(bad(at, "restart offset unreadable"))
    }

    /// Decodes the entry at `offset` after a key `key` (the previous entry's key, empty at a
    /// restart), leaving the entry's key in `key`. Returns the value and the next entry's offset.
    fn entry(&self, offset: usize, key: &mut Vec<u8>) -> Result<(&[u8], usize), BlockError> {
        let mut buf = self
            .data
            .get(offset..self.restarts)
            .ok_or(bad(offset, "entry outside the block"))?;
        let before = buf.len();
        let shared = varint::take(&mut buf).ok_or(bad(offset, "bad shared length"))? as usize;
        let unshared = varint::take(&mut buf).ok_or(bad(offset, "bad key length"))? as usize;
        let value_len = varint::take(&mut buf).ok_or(bad(offset, "bad value length"))? as usize;
        if shared > key.len() {
            return Err(bad(offset, "shared prefix longer than the previous key"));
        }
        let delta =
            varint::take_bytes(&mut buf, unshared).ok_or(bad(offset, "key overruns the block"))?;
        let value = varint::take_bytes(&mut buf, value_len)
            .ok_or(bad(offset, "value overruns the block"))?;
        key.truncate(shared);
        key.extend_from_slice(delta);
        Ok((value, offset + before - buf.len()))
    }

    /// Bytes the block holds (its encoded entries and restart array).
    pub fn size(&self) -> usize {
        self.data.len()
    }

    /// Entries in key order, from the first whose key is at least `from` (from the first entry
    /// without `from`). Yields an error, then nothing, on a damaged entry or keys out of order.
    pub fn iter_from(&self, from: Option<&[u8]>) -> BlockIter<'_> {
        let mut iter = BlockIter {
            block: self,
            offset: 0,
            key: Vec::new(),
            failed: false,
        };
        if self.count == 0 {
            iter.offset = self.restarts;
            return iter;
        }
        let Some(target) = from else {
            return iter;
        };
        // The last restart whose key is below `target`: the entry sought is at or after it.
        let (mut lo, mut hi) = (0usize, self.count - 1);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let mut key = Vec::new();
            let below = match self.restart(mid).and_then(|r| self.entry(r, &mut key)) {
                Ok(_) => key.as_slice() < target,
                Err(_) => {
                    // Let the scan meet the damage and report it.
                    hi = mid - 1;
                    continue;
                }
            };
            if below {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        iter.offset = self.restart(lo).unwrap_or(0);
        iter.skip_below(target);
        iter
    }

    /// The value stored under exactly `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>, BlockError> {
        match self.iter_from(Some(key)).next() {
            Some(Ok((k, v))) if k == key => Ok(Some(v)),
            Some(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }
}

/// A cursor over a block's entries.
pub struct BlockIter<'a> {
    block: &'a Block,
    offset: usize,
    key: Vec<u8>,
    failed: bool,
}

impl BlockIter<'_> {
    /// Advances past entries below `target` without yielding them.
    fn skip_below(&mut self, target: &[u8]) {
        let mut key = self.key.clone();
        let mut offset = self.offset;
        while offset < self.block.restarts {
            match self.block.entry(offset, &mut key) {
                Ok((_, next)) if key.as_slice() < target => {
                    self.key.clone_from(&key);
                    offset = next;
                }
                _ => break,
            }
        }
        self.offset = offset;
    }
}

impl<'a> Iterator for BlockIter<'a> {
    type Item = Result<(Vec<u8>, &'a [u8]), BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.block.restarts {
            return None;
        }
        let previous = self.key.clone();
        let block: &'a Block = self.block;
        match block.entry(self.offset, &mut self.key) {
            Ok((value, next)) => {
                if !previous.is_empty() && self.key <= previous {
                    self.failed = true;
                    return Some(Err(bad(self.offset, "keys out of order")));
                }
                self.offset = next;
                Some(Ok((self.key.clone(), value)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn build(entries: &[(Vec<u8>, Vec<u8>)]) -> Block {
        let mut b = BlockBuilder::new();
        for (k, v) in entries {
            b.add(k, v);
        }
        let data = b.finish();
        Block::decode(data).expect("decode")
    }

    fn sorted_entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        proptest::collection::btree_map(
            proptest::collection::vec(0u8..4, 0..12),
            proptest::collection::vec(any::<u8>(), 0..20),
            0..120,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    #[test]
    fn an_empty_block_has_no_entries() {
        let b = build(&[]);
        assert_eq!(b.iter_from(None).count(), 0);
        assert_eq!(b.get(b"x"), Ok(None));
    }

    #[test]
    fn every_flipped_byte_is_an_error_or_a_wrong_answer_never_a_panic() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..50u32)
            .map(|i| (format!("key-{i:04}").into_bytes(), vec![i as u8; 5]))
            .collect();
        let mut b = BlockBuilder::new();
        for (k, v) in &entries {
            b.add(k, v);
        }
        let data = b.finish();
        for i in 0..data.len() {
            let mut bad = data.clone();
            bad[i] ^= 0xFF;
            if let Ok(block) = Block::decode(bad) {
                let _ = block.iter_from(None).count();
                let _ = block.get(b"key-0025");
            }
        }
    }

    proptest! {
        #[test]
        fn entries_read_back_in_order(entries in sorted_entries()) {
            let b = build(&entries);
            let back: Vec<(Vec<u8>, Vec<u8>)> = b
                .iter_from(None)
                .map(|r| r.map(|(k, v)| (k, v.to_vec())))
                .collect::<Result<_, _>>()
                .expect("intact");
            prop_assert_eq!(back, entries);
        }

        #[test]
        fn seeks_land_on_the_first_key_at_or_after_the_target(
            entries in sorted_entries(),
            target in proptest::collection::vec(0u8..4, 0..12),
        ) {
            let b = build(&entries);
            let expected: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).filter(|k| *k >= target).collect();
            let got: Vec<Vec<u8>> = b.iter_from(Some(&target)).map(|r| r.expect("intact").0).collect();
            prop_assert_eq!(got, expected);
            let exact = entries.iter().find(|(k, _)| *k == target).map(|(_, v)| v.as_slice());
            prop_assert_eq!(b.get(&target).expect("intact"), exact);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), target in proptest::collection::vec(any::<u8>(), 0..8)) {
            if let Ok(b) = Block::decode(data) {
                let _ = b.iter_from(None).count();
                let _ = b.iter_from(Some(&target)).count();
                let _ = b.get(&target);
            }
        }
    }
}

//! The memtable: the newest writes, in a concurrent skiplist, until a flush turns them into a
//! table.
//!
//! Every write is kept with its sequence number, ordered by key and then newest first, so a reader
//! at snapshot `s` sees, for each key, the newest write numbered at most `s`.

use std::borrow::Borrow;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_skiplist::SkipMap;

/// Bytes of bookkeeping counted per entry, besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// An entry's key: the user key, then its sequence number, newest first.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    key: Vec<u8>,
    seq: Reverse<u64>,
}

/// A key the map can be searched by without building an [`Entry`] (and copying the key): the
/// map borrows each entry as this trait object, ordered exactly as entries are.
trait Lookup {
    fn parts(&self) -> (&[u8], Reverse<u64>);
}

impl Lookup for Entry {
    fn parts(&self) -> (&[u8], Reverse<u64>) {
        (&self.key, self.seq)
    }
}

impl Lookup for (&[u8], Reverse<u64>) {
    fn parts(&self) -> (&[u8], Reverse<u64>) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn Lookup + 'a> for Entry {
    fn borrow(&self) -> &(dyn Lookup + 'a) {
        self
    }
}

impl PartialEq for dyn Lookup + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Lookup + '_ {}

impl PartialOrd for dyn Lookup + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn Lookup + '_ {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.parts().cmp(&other.parts())
    }
}

/// A memtable.
#[derive(Debug)]
pub struct Memtable {
    map: SkipMap<Entry, Vec<u8>>,
    bytes: AtomicUsize,
    /// The first commit-log segment holding its writes.
    first_segment: u64,
    /// The newest sequence number inserted.
    max_seq: AtomicU64,
}

impl Memtable {
    /// An empty memtable whose writes are logged from segment `first_segment` on.
    pub fn new(first_segment: u64) -> Self {
        Memtable {
            map: SkipMap::new(),
            bytes: AtomicUsize::new(0),
            first_segment,
            max_seq: AtomicU64::new(0),
        }
    }

    /// Inserts `value` for `key` as write `seq`.
    pub fn insert(&self, key: Vec<u8>, seq: u64, value: Vec<u8>) {
        self.bytes.fetch_add(
            key.len() + 8 + value.len() + ENTRY_OVERHEAD,
            Ordering::Relaxed,
        );
        self.max_seq.fetch_max(seq, Ordering::AcqRel);
        self.map.insert(
            Entry {
                key,
                seq: Reverse(seq),
            },
            value,
        );
    }

    /// The newest value of `key` numbered at most `snapshot`.
    pub fn get(&self, key: &[u8], snapshot: u64) -> Option<Vec<u8>> {
        let from: &dyn Lookup = &(key, Reverse(snapshot));
        let entry = self.map.lower_bound(Bound::Included(from))?;
        (entry.key().key == key).then(|| entry.value().clone())
    }

    /// For each key at least `from` (in order), its newest value numbered at most `snapshot`.
    pub fn iter_from<'a>(
        &'a self,
        from: &[u8],
        snapshot: u64,
    ) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + 'a {
        let mut last: Option<Vec<u8>> = None;
        self.map
            .range((
                Bound::Included(Entry {
                    key: from.to_vec(),
                    seq: Reverse(u64::MAX),
                }),
                Bound::Unbounded,
            ))
            .filter_map(move |entry| {
                let Entry {
                    key,
                    seq: Reverse(seq),
                } = entry.key();
                if *seq > snapshot || last.as_deref() == Some(key.as_slice()) {
                    return None;
                }
                last = Some(key.clone());
                Some((key.clone(), entry.value().clone()))
            })
    }

    /// Approximate bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The first commit-log segment holding its writes.
    pub fn first_segment(&self) -> u64 {
        self.first_segment
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_newest_write_of_their_snapshot() {
        let m = Memtable::new(1);
        m.insert(b"a".to_vec(), 1, b"a1".to_vec());
        m.insert(b"b".to_vec(), 2, b"b2".to_vec());
        m.insert(b"a".to_vec(), 3, b"a3".to_vec());
        m.insert(b"ab".to_vec(), 4, b"ab4".to_vec());
        assert_eq!(m.get(b"a", 2), Some(b"a1".to_vec()));
        assert_eq!(m.get(b"a", 3), Some(b"a3".to_vec()));
        assert_eq!(m.get(b"a", 0), None);
        assert_eq!(m.get(b"c", 9), None);
        let at2: Vec<_> = m.iter_from(b"", 2).collect();
        assert_eq!(
            at2,
            vec![
                (b"a".to_vec(), b"a1".to_vec()),
                (b"b".to_vec(), b"b2".to_vec())
            ]
        );
        let all: Vec<_> = m.iter_from(b"a", 9).map(|(k, _)| k).collect();
        assert_eq!(all, vec![b"a".to_vec(), b"ab".to_vec(), b"b".to_vec()]);
        let first = m.iter_from(b"ab", 9).next();
        assert_eq!(first, Some((b"ab".to_vec(), b"ab4".to_vec())));
    }
}

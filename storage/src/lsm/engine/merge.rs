//! Merging memtables and tables into one ordered stream of the newest value of each key.

use super::{Inner, View};
use crate::engine::EngineError;

pub(super) type Source<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), EngineError>> + 'a>;

/// Merges sorted sources, each holding a key at most once; for a key in several, the first
/// source's value wins. An error ends the merge after it is yielded.
pub(super) struct MergeIter<'a> {
    sources: Vec<std::iter::Peekable<Source<'a>>>,
    failed: bool,
}

impl<'a> MergeIter<'a> {
    pub(super) fn new(sources: Vec<Source<'a>>) -> Self {
        MergeIter {
            sources: sources.into_iter().map(Iterator::peekable).collect(),
            failed: false,
        }
    }
}

impl Iterator for MergeIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), EngineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut best: Option<(usize, Vec<u8>)> = None;
        for (i, s) in self.sources.iter_mut().enumerate() {
            match s.peek() {
                None => {}
                Some(Err(_)) => {
                    self.failed = true;
                    return s.next();
                }
                Some(Ok((k, _))) if best.as_ref().is_none_or(|(_, b)| k < b) => {
                    best = Some((i, k.clone()));
                }
                Some(Ok(_)) => {}
            }
        }
        let (winner, key) = best?;
        let mut out = None;
        for (i, s) in self.sources.iter_mut().enumerate() {
            if matches!(s.peek(), Some(Ok((k, _))) if *k == key) {
                let item = s.next();
                if i == winner {
                    out = item;
                }
            }
        }
        out
    }
}

impl Inner {
    /// Every key from `from` on, at `snapshot`, newest value first-wins, in key order.
    pub(super) fn merged_from<'a>(
        &self,
        view: &'a View,
        from: &[u8],
        snapshot: u64,
    ) -> Result<MergeIter<'a>, EngineError> {
        let mut sources: Vec<Source<'a>> = Vec::new();
        sources.push(Box::new(view.mem.iter_from(from, snapshot).map(Ok)));
        for m in &view.frozen {
            sources.push(Box::new(m.iter_from(from, snapshot).map(Ok)));
        }
        for (level, tables) in view.levels.iter().enumerate() {
            if level == 0 {
                for t in tables.iter().filter(|t| t.meta.last_key.as_slice() >= from) {
                    sources.push(Box::new(
                        t.table
                            .iter_from(Some(from))?
                            .map(|r| r.map_err(EngineError::from)),
                    ));
                }
            } else {
                let start = tables.partition_point(|t| t.meta.last_key.as_slice() < from);
                let from = from.to_vec();
                let chain = tables.iter().skip(start).flat_map(move |t| {
                    match t.table.iter_from(Some(&from)) {
                        Ok(it) => Box::new(it.map(|r| r.map_err(EngineError::from))) as Source<'a>,
                        Err(e) => Box::new(std::iter::once(Err(EngineError::from(e)))),
                    }
                });
                sources.push(Box::new(chain));
            }
        }
        Ok(MergeIter::new(sources))
    }
}

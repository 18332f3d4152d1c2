//! Merkle comparison of one token range across its replicas, and the exchange of only the keys
//! that differ.
//!
//! The tree is never stored: each node of it is the digest a replica computes over a sub-range
//! ([`Replica::digest`], the canonical range digest every engine feeds the same way). Ranges
//! whose digests agree on every replica are done; one that differs is cut into [`FANOUT`]
//! sub-ranges and compared again, down to leaves of at most [`LEAF_KEYS`] keys, whose entries
//! are read from every replica and resolved: each replica receives the join of what all hold
//! for each key it lacks or holds older. Storing the join is how every write path stores a
//! version (the resolution against what the node holds), so repair never overwrites a newer
//! write that lands meanwhile.

use std::collections::BTreeMap;
use std::future::Future;

use pairdb_core::Version;

/// Sub-ranges per differing range.
pub const FANOUT: u64 = 16;
/// A differing range holding at most this many keys (on the replica with most) is exchanged
/// entry by entry instead of cut further.
pub const LEAF_KEYS: u64 = 128;
/// Versions per ingest call.
const INGEST_BATCH: usize = 500;
/// Bytes of keys and values per ingest call: half a storage message.
const INGEST_BYTES: usize = 4 << 20;

/// A `(token, key, version)` entry of a range.
pub type Entry = (u64, Vec<u8>, Version);

/// One page of a scan: entries in stored-key order, and whether more follow.
pub type Page = (Vec<Entry>, bool);

/// One replica of a range, as repair reaches it.
pub trait Replica: Sync {
    /// Its name, for errors.
    fn name(&self) -> &str;

    /// The digest of `[start, end]`.
    fn digest(&self, start: u64, end: u64) -> impl Future<Output = Result<Digest, String>> + Send;

    /// One page of `[start, end]` strictly after `after`: `(token, key, version)` in stored-key
    /// order, and whether more follow.
    fn scan(
        &self,
        start: u64,
        end: u64,
        after: Option<(u64, Vec<u8>)>,
    ) -> impl Future<Output = Result<Page, String>> + Send;

    /// Stores each version as its resolution against what the replica holds.
    fn ingest(&self, entries: Vec<Entry>) -> impl Future<Output = Result<(), String>> + Send;
}

/// A replica's digest of a range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Equal digests mean equal contents.
    pub digest: Vec<u8>,
    /// Keys in the range.
    pub keys: u64,
    /// The replica's hybrid logical clock just before the digest's snapshot: every version it
    /// mints afterwards is stamped later.
    pub clock: u64,
}

/// What repairing a range did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Versions sent to replicas that lacked them (a key fixed on two replicas counts twice).
    pub keys: u64,
    /// Keys digested or read, on all replicas: the I/O spent.
    pub keys_read: u64,
    /// Every sub-range was compared on every replica and made equal: the whole range is
    /// repaired. False when a replica could not be reached for some part.
    pub complete: bool,
    /// Why it is not complete (the first error met).
    pub error: Option<String>,
    /// The lowest replica clock at the first comparison of the whole range (0 when it was not
    /// compared): a version minted by a replica after that is stamped later, and one minted
    /// before was in some replica's snapshot — so once the range is complete, every replica
    /// holds every version below it but those still in flight then.
    pub clock: u64,
}

/// Compares `[start, end]` across `replicas` and exchanges the keys that differ. A replica
/// that fails a call is left out of the rest of the range, which ends incomplete, while the
/// others (two or more) are still made equal among themselves.
pub async fn repair_range<R: Replica>(replicas: &[R], start: u64, end: u64) -> Repaired {
    let mut out = Repaired {
        complete: true,
        ..Repaired::default()
    };
    if replicas.len() < 2 {
        // A lone replica holds all there is: its clock vouches for nothing it lacks.
        out.clock = u64::MAX;
        return out;
    }
    let mut stack = vec![(start, end)];
    let mut first = true;
    let mut left_out = vec![false; replicas.len()];
    while let Some((s, e)) = stack.pop() {
        let alive: Vec<&R> = replicas
            .iter()
            .zip(&left_out)
            .filter(|(_, out)| !**out)
            .map(|(r, _)| r)
            .collect();
        if alive.len() < 2 {
            continue;
        }
        let digests = futures::future::join_all(alive.iter().map(|r| r.digest(s, e))).await;
        let mut seen = Vec::with_capacity(digests.len());
        let mut failed = false;
        for (r, d) in alive.iter().zip(digests) {
            match d {
                Ok(d) => seen.push(d),
                Err(error) => {
                    leave_out(replicas, &mut left_out, r.name());
                    out.complete = false;
                    out.error.get_or_insert(format!("{}: {error}", r.name()));
                    failed = true;
                }
            }
        }
        if failed {
            // Again, with the replicas still answering.
            stack.push((s, e));
            continue;
        }
        if std::mem::take(&mut first) {
            out.clock = seen.iter().map(|d| d.clock).min().unwrap_or(0);
        }
        out.keys_read += seen.iter().map(|d| d.keys).sum::<u64>();
        if seen
            .windows(2)
            .all(|w| (&w[0].digest, w[0].keys) == (&w[1].digest, w[1].keys))
        {
            continue;
        }
        let most = seen.iter().map(|d| d.keys).max().unwrap_or(0);
        if most <= LEAF_KEYS || e - s < FANOUT {
            match exchange(&alive, s, e).await {
                Ok((fixed, read)) => {
                    out.keys += fixed;
                    out.keys_read += read;
                }
                Err((name, error)) => {
                    leave_out(replicas, &mut left_out, &name);
                    out.complete = false;
                    out.error.get_or_insert(format!("{name}: {error}"));
                    stack.push((s, e));
                }
            }
        } else {
            stack.extend(split(s, e));
        }
    }
    out
}

/// Marks the replica named `name` as left out.
fn leave_out<R: Replica>(replicas: &[R], left_out: &mut [bool], name: &str) {
    for (r, out) in replicas.iter().zip(left_out.iter_mut()) {
        if r.name() == name {
            *out = true;
        }
    }
}

/// `[start, end]` cut into [`FANOUT`] contiguous sub-ranges (fewer when it is narrower).
pub fn split(start: u64, end: u64) -> Vec<(u64, u64)> {
    let width = u128::from(end - start) + 1;
    let step = width.div_ceil(u128::from(FANOUT)).max(1);
    let mut out = Vec::with_capacity(FANOUT as usize);
    let mut s = u128::from(start);
    while s <= u128::from(end) {
        let e = (s + step - 1).min(u128::from(end));
        out.push((s as u64, e as u64));
        s = e + 1;
    }
    out
}

/// Reads every entry of `[start, end]` from every replica and sends each replica the join of
/// each key it lacks or holds older. Answers the versions sent and the entries read, or the
/// name of the replica that failed and why.
async fn exchange<R: Replica>(
    replicas: &[&R],
    start: u64,
    end: u64,
) -> Result<(u64, u64), (String, String)> {
    // (token, key) → each replica's version.
    let mut table: BTreeMap<(u64, Vec<u8>), Vec<Option<Version>>> = BTreeMap::new();
    let mut read = 0u64;
    for (i, r) in replicas.iter().enumerate() {
        let mut after = None;
        loop {
            let (page, more) = r
                .scan(start, end, after.clone())
                .await
                .map_err(|e| (r.name().to_owned(), e))?;
            if let Some((t, k, _)) = page.last() {
                after = Some((*t, k.clone()));
            }
            read += page.len() as u64;
            for (token, key, version) in page {
                let row = table
                    .entry((token, key))
                    .or_insert_with(|| vec![None; replicas.len()]);
                if let Some(slot) = row.get_mut(i) {
                    *slot = Some(version);
                }
            }
            if !more {
                break;
            }
        }
    }
    let mut fixes: Vec<Vec<Entry>> = vec![Vec::new(); replicas.len()];
    for ((token, key), held) in table {
        let Some(join) = held
            .iter()
            .flatten()
            .fold(None::<Version>, |acc, v| match acc {
                None => Some(v.clone()),
                Some(a) => Some(a.resolve(v)),
            })
        else {
            continue;
        };
        for (i, h) in held.iter().enumerate() {
            if h.as_ref() != Some(&join)
                && let Some(f) = fixes.get_mut(i)
            {
                f.push((token, key.clone(), join.clone()));
            }
        }
    }
    let mut sent = 0u64;
    for (r, f) in replicas.iter().zip(fixes) {
        // Batches bounded in entries and in bytes: large values still fit a message.
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        for entry in f {
            let size = entry.1.len() + entry.2.value.len() + 256;
            if !batch.is_empty() && (batch.len() >= INGEST_BATCH || bytes + size > INGEST_BYTES) {
                let n = batch.len() as u64;
                r.ingest(std::mem::take(&mut batch))
                    .await
                    .map_err(|e| (r.name().to_owned(), e))?;
                sent += n;
                bytes = 0;
            }
            bytes += size;
            batch.push(entry);
        }
        if !batch.is_empty() {
            let n = batch.len() as u64;
            r.ingest(batch)
                .await
                .map_err(|e| (r.name().to_owned(), e))?;
            sent += n;
        }
    }
    Ok((sent, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_the_range_exactly() {
        for (s, e) in [
            (0, u64::MAX),
            (10, 10),
            (0, 15),
            (100, 1_000_003),
            (u64::MAX - 5, u64::MAX),
        ] {
            let parts = split(s, e);
            assert!(!parts.is_empty() && parts.len() <= FANOUT as usize);
            assert_eq!(parts.first().map(|p| p.0), Some(s));
            assert_eq!(parts.last().map(|p| p.1), Some(e));
            for w in parts.windows(2) {
                assert_eq!(w[0].1 + 1, w[1].0);
            }
        }
    }
}

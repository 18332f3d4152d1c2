//! Reading a commit log back at open: every intact record in append order, a torn tail cut off,
//! damage anywhere else reported with its file and offset.
//!
//! A fragment that fails its checks is a *torn tail* — the end of writes a crash interrupted,
//! never acknowledged under [`Durability::Always`](crate::durability::Durability::Always) — only
//! if nothing later in the log (in a later block, or later in its own block past the torn
//! fragment, or in a later segment) proves the damaged bytes were once durable: an intact
//! fragment flagged as a batch start (a batch is flagged only when every write before it was
//! fsynced; under `always`, every batch is), or a sync mark naming a position past the damage.
//! Such proof makes it corruption. Zeros from a
//! record boundary to the end of the newest segment are space it was allocated with.
//!
//! The torn tail is normally in the newest segment. A log that does not fsync every write
//! ([`format::RELAXED`] segments) moves to its next segment without an fsync, so after a power
//! cut an older segment may have lost its end — its last records, or the end marker every
//! older format-3 segment carries — while the next one kept some writes. With no later batch
//! flag to say otherwise, the log then ends there: the later segments are removed, so what
//! survives is a prefix of what was written. In a segment of an `always` log, damage that is
//! not in the newest segment is corruption.
//!
//! The segment the log ends in is truncated after its last whole record and given its end
//! marker (fsynced), so the next open reads it as an intact older segment. Anything else is
//! [`LogError::Corrupt`]: the log refuses to open rather than silently drop records that follow
//! the damage.

use std::path::Path;

use super::format::{self, BLOCK_SIZE, BadFragment, FRAGMENT_HEADER_LEN, Kind};
use super::{LogError, LogPosition, OpenError, io_error, segment_path, sync_dir};
use crate::lsm::fs::Fs;

/// Ids of the segment files in `dir`, ascending. Other files are ignored.
pub fn segment_ids(fs: &dyn Fs, dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut ids = Vec::new();
    for name in fs.read_dir(dir).map_err(io_error(dir))? {
        let Some(hex) = name.strip_suffix(".log") else {
            continue;
        };
        if hex.len() == 16
            && let Ok(id) = u64::from_str_radix(hex, 16)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Replays every record of the log in `dir` to `replay`, in append order; returns the newest
/// segment id, if any segment is left.
pub fn replay<E>(
    fs: &dyn Fs,
    dir: &Path,
    max_record_bytes: usize,
    min_segment: u64,
    mut replay: impl FnMut(LogPosition, &[u8]) -> Result<(), E>,
) -> Result<Option<u64>, OpenError<E>> {
    let mut ids = segment_ids(fs, dir)?;
    // Segments below the floor hold nothing needed (their records are elsewhere): they are
    // neither read nor checked, only left for their owner to retire.
    ids.retain(|&id| id >= min_segment);
    for pair in ids.windows(2) {
        if let [a, b] = pair
            && b - a != 1
        {
            return Err(LogError::Corrupt {
                path: segment_path(dir, a + 1),
                offset: 0,
                detail: format!("segment missing between {a:016x} and {b:016x}"),
            }
            .into());
        }
    }
    // A segment made ready ahead of its rotation that never took a record — its header (or,
    // if the crash came while it was being created, not even that), then zeros — is not the
    // newest one: the segment before it is, with its own unwritten tail.
    if ids.len() > 1
        && let Some(&spare) = ids.last()
        && is_unused(fs, &segment_path(dir, spare))?
    {
        let path = segment_path(dir, spare);
        fs.remove_file(&path).map_err(io_error(&path))?;
        sync_dir(fs, dir)?;
        ids.pop();
    }
    let mut newest = None;
    for (i, &id) in ids.iter().enumerate() {
        let later = ids.get(i + 1..).unwrap_or_default();
        match read_segment(fs, dir, id, later, max_record_bytes, &mut replay)? {
            Segment::Removed => {}
            Segment::Read => newest = Some(id),
            Segment::EndsLog(intact) => {
                // Newest first, durably, and only then the cut: a crash on the way repeats
                // this recovery, never leaves a gap in the log.
                for &gone in later.iter().rev() {
                    let path = segment_path(dir, gone);
                    tracing::warn!(path = %path.display(),
                        "removing a commit-log segment written after an earlier one lost its end");
                    fs.remove_file(&path).map_err(io_error(&path))?;
                }
                sync_dir(fs, dir)?;
                seal(fs, &segment_path(dir, id), intact)?;
                newest = Some(id);
                break;
            }
        }
    }
    Ok(newest)
}

/// What reading a segment found.
enum Segment {
    /// It held no header (a creation the crash interrupted) and was removed.
    Removed,
    /// Its records were replayed; the log goes on with the next segment.
    Read,
    /// Its records were replayed, and the log ends with it: it lost its end, and is to be
    /// sealed at this offset once the later segments are gone.
    EndsLog(u64),
}

/// Whether the segment at `path` holds nothing past its header's place but zeros. Reads only
/// until the first byte that is not (a segment in use answers at once; it is read in full
/// later, by the replay).
fn is_unused(fs: &dyn Fs, path: &Path) -> Result<bool, LogError> {
    let file = fs.open(path, false).map_err(io_error(path))?;
    let mut at = format::HEADER_LEN as u64;
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = file.read_at(&mut chunk, at).map_err(io_error(path))?;
        let Some(read) = chunk.get(..n).filter(|r| !r.is_empty()) else {
            return Ok(true);
        };
        if read.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
}

/// Replays segment `id`, which the segments `later` follow.
fn read_segment<E>(
    fs: &dyn Fs,
    dir: &Path,
    id: u64,
    later: &[u64],
    max_record_bytes: usize,
    replay: &mut impl FnMut(LogPosition, &[u8]) -> Result<(), E>,
) -> Result<Segment, OpenError<E>> {
    let last = later.is_empty();
    let path = segment_path(dir, id);
    let data = fs.read(&path).map_err(io_error(&path))?;
    let corrupt = |offset: usize, detail: String| LogError::Corrupt {
        path: path.clone(),
        offset: offset as u64,
        detail,
    };
    let header = match format::decode_header(&data) {
        Ok(header) if header.id == id => header,
        Ok(header) => {
            return Err(corrupt(0, format!("header names segment {:016x}", header.id)).into());
        }
        // A newest segment whose header never became durable held no acknowledged record — if
        // nothing at all follows the header's place.
        Err(_)
            if last
                && data
                    .get(format::HEADER_LEN..)
                    .is_none_or(|rest| rest.iter().all(|&b| b == 0)) =>
        {
            tracing::warn!(path = %path.display(), "removing a commit-log segment whose creation was interrupted");
            fs.remove_file(&path).map_err(io_error(&path))?;
            sync_dir(fs, dir)?;
            return Ok(Segment::Removed);
        }
        Err(detail) => return Err(corrupt(0, detail).into()),
    };

    let mut pos = format::HEADER_LEN;
    // End of the last whole record: where a torn tail is cut.
    let mut intact = pos;
    let mut record: Vec<u8> = Vec::new();
    let mut record_start: Option<usize> = None;
    let mut ended = false;
    let bad: Option<(usize, String)> = loop {
        if pos >= data.len() {
            break record_start.map(|start| (start, "the segment ends inside a record".into()));
        }
        let room = BLOCK_SIZE - pos % BLOCK_SIZE;
        if room < FRAGMENT_HEADER_LEN {
            let trailer = data
                .get(pos..(pos + room).min(data.len()))
                .unwrap_or_default();
            if trailer.iter().any(|&b| b != 0) {
                break Some((pos, "block trailer is not zero".into()));
            }
            pos += room;
            continue;
        }
        let fragment = match format::decode_fragment(&data, pos) {
            Ok(f) => f,
            // Zeros from here to the end of the newest segment, between records: space it was
            // preallocated with, never written. (Older segments end with an end marker, or
            // (format 2) were cut to their last record: zeros there are lost data.)
            Err(_)
                if last
                    && record_start.is_none()
                    && data
                        .get(pos..)
                        .is_some_and(|rest| rest.iter().all(|&b| b == 0)) =>
            {
                break None;
            }
            Err(BadFragment::Truncated) => break Some((pos, "truncated fragment".into())),
            Err(BadFragment::Damaged(why)) => break Some((pos, why.into())),
        };
        let next = pos + FRAGMENT_HEADER_LEN + fragment.payload.len();
        if fragment.kind == Kind::Synced && record_start.is_none() {
            // Evidence for recovery only.
            pos = next;
            continue;
        }
        if fragment.kind == Kind::End && record_start.is_none() {
            // The segment's end: only the zeros it was allocated with may follow.
            if data
                .get(next..)
                .is_some_and(|rest| rest.iter().any(|&b| b != 0))
            {
                break Some((next, "bytes after the segment's end marker".into()));
            }
            intact = next;
            ended = true;
            break None;
        }
        let whole = match (fragment.kind, record_start) {
            (Kind::Full, None) => Some(fragment.payload),
            (Kind::First, None) => {
                record.clear();
                record.extend_from_slice(fragment.payload);
                record_start = Some(pos);
                None
            }
            (Kind::Middle, Some(_)) => {
                record.extend_from_slice(fragment.payload);
                None
            }
            (Kind::Last, Some(_)) => {
                record.extend_from_slice(fragment.payload);
                Some(record.as_slice())
            }
            (kind, _) => break Some((pos, format!("{kind:?} fragment out of sequence"))),
        };
        if record.len() > max_record_bytes {
            // Not what a crash leaves.
            return Err(corrupt(pos, format!("record exceeds {max_record_bytes} bytes")).into());
        }
        if let Some(payload) = whole {
            let position = LogPosition {
                segment: id,
                offset: record_start.unwrap_or(pos) as u64,
            };
            replay(position, payload).map_err(OpenError::Replay)?;
            record_start = None;
            intact = next;
        }
        pos = next;
    };

    // A format-3 segment that a later one follows ends with its end marker.
    let bad = bad.or_else(|| {
        (!ended && !last && header.version >= 3)
            .then(|| (intact, "the segment ends before its end marker".to_owned()))
    });
    let Some((offset, detail)) = bad else {
        // What was replayed must be as durable as what is appended after it: records a crash
        // left unsynced in the page cache are fsynced before anything relies on them — and the
        // newest segment, about to become an older one, gets its end marker.
        if last && !ended {
            seal(fs, &path, intact as u64)?;
        } else {
            sync_file(fs, &path)?;
        }
        return Ok(Segment::Read);
    };
    // In an older segment of an `always` log, everything was fsynced before the next segment
    // took a write.
    if !last && !header.relaxed {
        return Err(corrupt(offset, detail).into());
    }
    // Evidence that the damaged bytes were durable: a proof at a later block than where
    // reading stopped (continuations of the damaged record itself prove nothing), or in a
    // later segment.
    let damage = (id, offset as u64);
    let proves = |f: &format::Fragment<'_>| {
        f.batch_start
            || (f.kind == Kind::Synced
                && format::decode_synced(f.payload).is_some_and(|through| through > damage))
    };
    if proof_after(&data, pos.max(offset), &proves)
        || proof_within(&data, past_fragment(&data, pos), &proves)
        || later_proof(fs, dir, later, &proves)?
    {
        return Err(corrupt(offset, detail).into());
    }
    tracing::warn!(path = %path.display(), offset, dropped = data.len() - intact, %detail,
        "truncating the torn tail of the commit log");
    if last {
        seal(fs, &path, intact as u64)?;
        Ok(Segment::Read)
    } else {
        Ok(Segment::EndsLog(intact as u64))
    }
}

/// Truncates the segment at `path` to `len` bytes and ends it with its end marker, durably.
fn seal(fs: &dyn Fs, path: &Path, len: u64) -> Result<(), LogError> {
    let file = fs.open(path, true).map_err(io_error(path))?;
    let mut end = Vec::new();
    format::encode_end(&mut end, len);
    file.set_len(len)
        .and_then(|()| file.write_all_at(&end, len))
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// A test of whether a fragment proves earlier bytes durable.
type Proof<'p> = &'p dyn Fn(&format::Fragment<'_>) -> bool;

/// Whether any of the segments `ids` holds an intact fragment that `proves`.
fn later_proof(fs: &dyn Fs, dir: &Path, ids: &[u64], proves: Proof<'_>) -> Result<bool, LogError> {
    for &id in ids {
        let path = segment_path(dir, id);
        let data = fs.read(&path).map_err(io_error(&path))?;
        if proof_after(&data, 0, proves) || proof_in_block(&data, format::HEADER_LEN, proves) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Where the fragment whose header is at `pos` would end, if its length fits its block — the
/// torn fragment's own payload (user bytes) is not searched for records — else `pos`.
fn past_fragment(data: &[u8], pos: usize) -> usize {
    let block_end = (pos / BLOCK_SIZE + 1) * BLOCK_SIZE;
    let len = data
        .get(pos + 4..pos + 6)
        .and_then(|b| <[u8; 2]>::try_from(b).ok())
        .map(|b| usize::from(u16::from_le_bytes(b)));
    match len {
        Some(len) if pos + FRAGMENT_HEADER_LEN + len <= block_end => {
            pos + FRAGMENT_HEADER_LEN + len - 1
        }
        _ => pos,
    }
}

fn sync_file(fs: &dyn Fs, path: &Path) -> Result<(), LogError> {
    fs.open(path, false)
        .and_then(|f| f.sync_all())
        .map_err(io_error(path))
}

/// Whether an intact fragment that `proves` starts after `offset` in the block holding it:
/// fragments there cannot be walked past the damage, so every position is tried (a false match
/// needs a 32-bit checksum to agree by chance).
fn proof_within(data: &[u8], offset: usize, proves: Proof<'_>) -> bool {
    let end = ((offset / BLOCK_SIZE + 1) * BLOCK_SIZE).min(data.len());
    ((offset + 1)..end).any(|at| {
        // Cheap filters first: the kind byte.
        let kind = data.get(at + 6).copied();
        matches!(kind, Some(k) if (k & format::BATCH_START != 0 && matches!(k & !format::BATCH_START, 1 | 2 | 6))
            || k & !format::BATCH_START == Kind::Synced as u8)
            && format::decode_fragment(data, at).is_ok_and(|f| proves(&f))
    })
}

/// Whether an intact fragment that `proves` starts in any block after the one holding
/// `offset`: each later block is walked from its start while its fragments decode, so one
/// behind the continuation of a longer record counts too.
fn proof_after(data: &[u8], offset: usize, proves: Proof<'_>) -> bool {
    let mut block = (offset / BLOCK_SIZE + 1) * BLOCK_SIZE;
    while block < data.len() {
        if proof_in_block(data, block, proves) {
            return true;
        }
        block += BLOCK_SIZE;
    }
    false
}

/// Whether an intact fragment that `proves` is in the block holding `from`, walking its
/// fragments from `from` while they decode.
fn proof_in_block(data: &[u8], from: usize, proves: Proof<'_>) -> bool {
    let end = (from / BLOCK_SIZE + 1) * BLOCK_SIZE;
    let mut at = from;
    while at + FRAGMENT_HEADER_LEN <= end {
        match format::decode_fragment(data, at) {
            Ok(f) if proves(&f) => return true,
            Ok(f) => at += FRAGMENT_HEADER_LEN + f.payload.len(),
            Err(_) => break,
        }
    }
    false
}

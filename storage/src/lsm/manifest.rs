//! The manifest: which tables make up the tree, changed atomically by *edits* and recovered at
//! open.
//!
//! The manifest is a [commit log](super::log) of its own (always fsynced) in `<dir>`. Each record
//! is one batch of edits, applied all or none; a record may instead be a snapshot of the whole
//! state, which replaces everything before it. After [`SNAPSHOT_EVERY`] batches the manifest
//! rewrites itself: a new segment starting with a snapshot, then the old segments are deleted.
//! A crash at any point of that leaves either the old segments or the snapshot to recover from.
//!
//! Records (varints unless noted):
//!
//! ```text
//! batch:    'E' | count | edit*
//! snapshot: 'S' | log_start | next_file_id | count | table*
//! edit:     1 table            (add)
//!           2 level id         (remove)
//!           3 log_start        (commit-log segments below it are in tables)
//!           4 next_file_id     (file ids below it are taken)
//! table:    level id size entries first_key_len first_key last_key_len last_key
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pairdb_core::varint;

use super::fs::Fs;
use super::log::{CommitLog, LogError, LogOptions, LogPosition, OpenError, segment_path};
use crate::durability::Durability;

/// Batches between snapshots.
pub const SNAPSHOT_EVERY: u64 = 1_000;

/// Levels of the tree.
pub const LEVELS: u8 = 7;

/// A table of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableMeta {
    /// Its level (0 = freshly flushed; tables of one level above 0 do not overlap).
    pub level: u8,
    /// Its file id (file `<id>.sst`).
    pub id: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its entries.
    pub entries: u64,
    /// Its smallest key.
    pub first_key: Vec<u8>,
    /// Its largest key.
    pub last_key: Vec<u8>,
}

/// One change to the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// A table joins the tree.
    Add(TableMeta),
    /// A table leaves it.
    Remove {
        /// Its level.
        level: u8,
        /// Its id.
        id: u64,
    },
    /// Commit-log segments below this id hold nothing the tables lack.
    LogStart(u64),
    /// File ids below this are taken.
    NextFileId(u64),
}

/// What the manifest says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestState {
    /// Every table, by (level, id).
    pub tables: BTreeMap<(u8, u64), TableMeta>,
    /// Commit-log segments below this id hold nothing the tables lack.
    pub log_start: u64,
    /// The next unused file id.
    pub next_file_id: u64,
}

/// A manifest failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Its log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A record is well-formed on disk but makes no sense.
    #[error("manifest corrupt in {path} at offset {offset}: {detail}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// The record's offset.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An edit that does not fit the current state (a bug in the caller): nothing was written.
    #[error("invalid manifest edit: {0}")]
    Invalid(String),
}

/// The open manifest.
pub struct Manifest {
    dir: PathBuf,
    log: CommitLog,
    state: ManifestState,
    batches_since_snapshot: u64,
    snapshot_every: u64,
    rewrites: u64,
}

impl Manifest {
    /// Opens (or creates) the manifest in `dir` and recovers its state; it rewrites itself every
    /// [`SNAPSHOT_EVERY`] batches.
    pub fn open(dir: &Path) -> Result<Manifest, ManifestError> {
        Self::open_with(super::fs::os(), dir, SNAPSHOT_EVERY)
    }

    /// Like [`open`](Self::open), on `fs`, rewriting every `snapshot_every` batches (at
    /// least 1).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        snapshot_every: u64,
    ) -> Result<Manifest, ManifestError> {
        let mut state = ManifestState::default();
        let mut batches = 0u64;
        let options = LogOptions {
            durability: Durability::Always,
            ..LogOptions::default()
        };
        let replay = |position: LogPosition, record: &[u8]| -> Result<(), String> {
            match decode_record(record)? {
                Record::Snapshot(s) => {
                    state = s;
                    batches = 0;
                }
                Record::Batch(edits) => {
                    for edit in edits {
                        apply(&mut state, edit)?;
                    }
                    batches += 1;
                }
            }
            let _ = position;
            Ok(())
        };
        let log = CommitLog::open(fs, dir, options, {
            let mut replay = replay;
            let dir = dir.to_owned();
            move |position, record| {
                replay(position, record).map_err(|detail| ManifestError::Corrupt {
                    path: segment_path(&dir, position.segment),
                    offset: position.offset,
                    detail,
                })
            }
        })
        .map_err(|e| match e {
            OpenError::Log(e) => ManifestError::Log(e),
            OpenError::Replay(e) => e,
        })?;
        let mut manifest = Manifest {
            dir: dir.to_owned(),
            log,
            state,
            batches_since_snapshot: batches,
            snapshot_every: snapshot_every.max(1),
            rewrites: 0,
        };
        // Start every run from a snapshot: opening is when a long edit history costs the most.
        if manifest.batches_since_snapshot > 0 {
            manifest.rewrite()?;
            manifest.rewrites = 0;
        }
        Ok(manifest)
    }

    /// The current state.
    pub fn state(&self) -> &ManifestState {
        &self.state
    }

    /// Applies `edits` atomically: all are durable, and in the state, when this returns `Ok`;
    /// none is on an error.
    pub fn apply(&mut self, edits: &[Edit]) -> Result<(), ManifestError> {
        let mut next = self.state.clone();
        for edit in edits {
            apply(&mut next, edit.clone()).map_err(ManifestError::Invalid)?;
        }
        let mut record = vec![b'E'];
        varint::put(&mut record, edits.len() as u64);
        for edit in edits {
            encode_edit(&mut record, edit);
        }
        self.log.append(&record)?;
        self.state = next;
        self.batches_since_snapshot += 1;
        if self.batches_since_snapshot >= self.snapshot_every {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Starts a new segment with a snapshot of the state and deletes the older segments.
    pub fn rewrite(&mut self) -> Result<(), ManifestError> {
        let segment = self.log.rotate()?;
        let mut record = vec![b'S'];
        varint::put(&mut record, self.state.log_start);
        varint::put(&mut record, self.state.next_file_id);
        varint::put(&mut record, self.state.tables.len() as u64);
        for t in self.state.tables.values() {
            encode_table(&mut record, t);
        }
        self.log.append(&record)?;
        self.log.retire_before(segment)?;
        self.batches_since_snapshot = 0;
        self.rewrites += 1;
        Ok(())
    }

    /// Rewrites since it opened (not counting the one at open).
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// The directory holding the manifest.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn apply(state: &mut ManifestState, edit: Edit) -> Result<(), String> {
    match edit {
        Edit::Add(t) => {
            if t.level >= LEVELS {
                return Err(format!(
                    "table {} at level {} (max {})",
                    t.id,
                    t.level,
                    LEVELS - 1
                ));
            }
            if state.tables.values().any(|x| x.id == t.id) {
                return Err(format!("table {} added twice", t.id));
            }
            if t.id >= state.next_file_id {
                state.next_file_id = t.id + 1;
            }
            state.tables.insert((t.level, t.id), t);
        }
        Edit::Remove { level, id } => {
            if state.tables.remove(&(level, id)).is_none() {
                return Err(format!(
                    "table {id} removed from level {level}, where it is not"
                ));
            }
        }
        Edit::LogStart(s) => {
            if s < state.log_start {
                return Err(format!(
                    "log start moved back from {} to {s}",
                    state.log_start
                ));
            }
            state.log_start = s;
        }
        Edit::NextFileId(n) => state.next_file_id = state.next_file_id.max(n),
    }
    Ok(())
}

fn encode_table(out: &mut Vec<u8>, t: &TableMeta) {
    varint::put(out, u64::from(t.level));
    varint::put(out, t.id);
    varint::put(out, t.size);
    varint::put(out, t.entries);
    varint::put(out, t.first_key.len() as u64);
    out.extend_from_slice(&t.first_key);
    varint::put(out, t.last_key.len() as u64);
    out.extend_from_slice(&t.last_key);
}

fn encode_edit(out: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Add(t) => {
            out.push(1);
            encode_table(out, t);
        }
        Edit::Remove { level, id } => {
            out.push(2);
            varint::put(out, u64::from(*level));
            varint::put(out, *id);
        }
        Edit::LogStart(s) => {
            out.push(3);
            varint::put(out, *s);
        }
        Edit::NextFileId(n) => {
            out.push(4);
            varint::put(out, *n);
        }
    }
}

/// A manifest record.
#[derive(Debug)]
pub enum Record {
    /// Edits applied together.
    Batch(Vec<Edit>),
    /// The whole state.
    Snapshot(ManifestState),
}

fn take(buf: &mut &[u8], what: &str) -> Result<u64, String> {
    varint::take(buf).ok_or_else(|| format!("{what} truncated"))
}

fn take_level(buf: &mut &[u8]) -> Result<u8, String> {
    u8::try_from(take(buf, "level")?).map_err(|_| "level out of range".to_owned())
}

fn take_key(buf: &mut &[u8], what: &str) -> Result<Vec<u8>, String> {
    let len = usize::try_from(take(buf, what)?).map_err(|_| format!("{what} too long"))?;
    varint::take_bytes(buf, len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{what} truncated"))
}

fn decode_table(buf: &mut &[u8]) -> Result<TableMeta, String> {
    Ok(TableMeta {
        level: take_level(buf)?,
        id: take(buf, "table id")?,
        size: take(buf, "table size")?,
        entries: take(buf, "table entries")?,
        first_key: take_key(buf, "first key")?,
        last_key: take_key(buf, "last key")?,
    })
}

/// Decodes one manifest record. Never panics, whatever the bytes.
pub fn decode_record(record: &[u8]) -> Result<Record, String> {
    let (&tag, mut buf) = record.split_first().ok_or("empty record")?;
    let decoded = match tag {
        b'E' => {
            let count = take(&mut buf, "edit count")?;
            let mut edits = Vec::new();
            for _ in 0..count {
                let (&kind, rest) = buf.split_first().ok_or("edit truncated")?;
                buf = rest;
                edits.push(match kind {
                    1 => Edit::Add(decode_table(&mut buf)?),
                    2 => Edit::Remove {
                        level: take_level(&mut buf)?,
                        id: take(&mut buf, "table id")?,
                    },
                    3 => Edit::LogStart(take(&mut buf, "log start")?),
                    4 => Edit::NextFileId(take(&mut buf, "next file id")?),
                    other => return Err(format!("unknown edit kind {other}")),
                });
            }
            Record::Batch(edits)
        }
        b'S' => {
            let mut state = ManifestState {
                log_start: take(&mut buf, "log start")?,
                next_file_id: take(&mut buf, "next file id")?,
                ..ManifestState::default()
            };
            let count = take(&mut buf, "table count")?;
            for _ in 0..count {
                let t = decode_table(&mut buf)?;
                apply(&mut state, Edit::Add(t))?;
            }
            Record::Snapshot(state)
        }
        other => return Err(format!("unknown record tag {other:#04x}")),
    };
    if !buf.is_empty() {
        return Err("trailing bytes in a record".into());
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn table(level: u8, id: u64) -> TableMeta {
        TableMeta {
            level,
            id,
            size: 1000 + id,
            entries: 10 * id,
            first_key: format!("a{id}").into_bytes(),
            last_key: format!("z{id}").into_bytes(),
        }
    }

    #[test]
    fn edits_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected;
        {
            let mut m = Manifest::open(dir.path()).expect("open");
            m.apply(&[Edit::Add(table(0, 1)), Edit::Add(table(0, 2))])
                .expect("apply");
            m.apply(&[
                Edit::Remove { level: 0, id: 1 },
                Edit::Add(table(1, 3)),
                Edit::LogStart(4),
            ])
            .expect("apply");
            expected = m.state().clone();
            assert_eq!(expected.next_file_id, 4);
        }
        let m = Manifest::open(dir.path()).expect("reopen");
        assert_eq!(m.state(), &expected);
        drop(m);
        // And again, now from the snapshot the reopen wrote.
        let m = Manifest::open(dir.path()).expect("reopen again");
        assert_eq!(m.state(), &expected);
    }

    #[test]
    fn an_invalid_edit_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut m = Manifest::open(dir.path()).expect("open");
        m.apply(&[Edit::Add(table(0, 1))]).expect("apply");
        let before = m.state().clone();
        for bad in [
            vec![Edit::Add(table(0, 2)), Edit::Remove { level: 1, id: 1 }],
            vec![Edit::Add(table(0, 1))],
            vec![Edit::Add(table(LEVELS, 9))],
        ] {
            assert!(matches!(m.apply(&bad), Err(ManifestError::Invalid(_))));
            assert_eq!(m.state(), &before);
        }
        drop(m);
        assert_eq!(Manifest::open(dir.path()).expect("reopen").state(), &before);
    }

    #[test]
    fn rewrites_keep_the_state_and_drop_old_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let expected;
        {
            let mut m = Manifest::open(dir.path()).expect("open");
            for id in 0..(SNAPSHOT_EVERY + 10) {
                m.apply(&[Edit::Add(table(1, id))]).expect("add");
                if id % 2 == 0 {
                    m.apply(&[Edit::Remove { level: 1, id }]).expect("remove");
                }
            }
            expected = m.state().clone();
        }
        let segments = std::fs::read_dir(dir.path()).expect("ls").count();
        assert!(segments <= 3, "{segments} segments left");
        assert_eq!(
            Manifest::open(dir.path()).expect("reopen").state(),
            &expected
        );
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_records_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_record(&bytes);
        }
    }
}

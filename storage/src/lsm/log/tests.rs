#![expect(clippy::indexing_slicing, reason = "tests index buffers they built")]

use std::path::Path;

use proptest::prelude::*;

use super::*;

fn options() -> LogOptions {
    LogOptions::default()
}

/// Records replayed at open, with their positions.
type Replayed = Vec<(LogPosition, Vec<u8>)>;

/// Opens the log in `dir`, returning it and every record it replayed.
fn open(dir: &Path, options: LogOptions) -> Result<(CommitLog, Replayed), LogError> {
    let mut seen = Vec::new();
    let log = CommitLog::open(crate::lsm::fs::os(), dir, options, |pos, rec| {
        seen.push((pos, rec.to_vec()));
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| match e {
        OpenError::Log(e) => e,
        OpenError::Replay(never) => match never {},
    })?;
    Ok((log, seen))
}

fn records(n: usize) -> Vec<Vec<u8>> {
    // Sizes from empty to several blocks, so fragments of every kind occur.
    (0..n)
        .map(|i| {
            let len = [0, 1, 100, 5_000, 40_000, 100_000][i % 6];
            (0..len).map(|j| (i * 31 + j) as u8).collect()
        })
        .collect()
}

fn payloads(seen: &[(LogPosition, Vec<u8>)]) -> Vec<Vec<u8>> {
    seen.iter().map(|(_, r)| r.clone()).collect()
}

#[test]
fn what_was_appended_replays_in_order_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = records(30);
    let mut positions = Vec::new();
    {
        let (log, seen) = open(dir.path(), options()).expect("open");
        assert!(seen.is_empty());
        for r in &written {
            positions.push(log.append(r).expect("append"));
        }
    }
    let (log, seen) = open(dir.path(), options()).expect("reopen");
    assert_eq!(payloads(&seen), written);
    assert_eq!(seen.iter().map(|(p, _)| *p).collect::<Vec<_>>(), positions);
    // A new segment after every open.
    assert_eq!(log.current_segment(), positions[0].segment + 1);
}

#[test]
fn concurrent_appenders_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let threads = 8;
    let per_thread = 100;
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..per_thread {
                        log.append(format!("{t}:{i}").as_bytes()).expect("append");
                    }
                });
            }
        });
    }
    let (_, seen) = open(dir.path(), options()).expect("reopen");
    let mut got: Vec<String> = seen
        .iter()
        .map(|(_, r)| String::from_utf8(r.clone()).expect("utf8"))
        .collect();
    // Each thread's records in its own order.
    for t in 0..threads {
        let mine: Vec<&String> = got
            .iter()
            .filter(|r| r.starts_with(&format!("{t}:")))
            .collect();
        let expected: Vec<String> = (0..per_thread).map(|i| format!("{t}:{i}")).collect();
        assert_eq!(mine, expected.iter().collect::<Vec<_>>());
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len(), threads * per_thread);
}

#[test]
fn segments_rotate_by_size_and_retire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        segment_bytes: 100_000,
        ..options()
    };
    let written = records(24);
    {
        let (log, _) = open(dir.path(), opts).expect("open");
        for r in &written {
            log.append(r).expect("append");
        }
        assert!(log.current_segment() > 3, "several segments");
    }
    let ids = recovery::segment_ids(&crate::lsm::fs::OsFs, dir.path()).expect("ids");
    let (log, seen) = open(dir.path(), opts).expect("reopen");
    assert_eq!(payloads(&seen), written);
    // Retiring the first segments drops exactly their records.
    let cut = ids[2];
    log.retire_before(cut).expect("retire");
    let kept: Vec<Vec<u8>> = seen
        .iter()
        .filter(|(p, _)| p.segment >= cut)
        .map(|(_, r)| r.clone())
        .collect();
    drop(log);
    let (_, seen) = open(dir.path(), opts).expect("reopen after retire");
    assert_eq!(payloads(&seen), kept);
}

#[test]
fn explicit_rotation_puts_later_records_in_later_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = open(dir.path(), options()).expect("open");
    let a = log.append(b"a").expect("append");
    let next = log.rotate().expect("rotate");
    let b = log.append(b"b").expect("append");
    assert!(a.segment < next && b.segment == next);
}

fn newest_segment(dir: &Path) -> PathBuf {
    let ids = recovery::segment_ids(&crate::lsm::fs::OsFs, dir).expect("ids");
    segment_path(dir, *ids.last().expect("a segment"))
}

#[test]
fn a_torn_tail_is_cut_and_the_log_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let written = records(12);
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        for r in &written {
            log.append(r).expect("append");
        }
    }
    // The newest segment (the one appended to) loses the end of its last record.
    let path = newest_segment(dir.path());
    let len = std::fs::metadata(&path).expect("meta").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open file");
    file.set_len(len - 3).expect("truncate");
    drop(file);

    let (log, seen) = open(dir.path(), options()).expect("reopen cuts the tail");
    assert_eq!(payloads(&seen), written[..written.len() - 1].to_vec());
    log.append(b"after").expect("append after recovery");
    drop(log);
    let (_, seen) = open(dir.path(), options()).expect("reopen again");
    let mut expected = written[..written.len() - 1].to_vec();
    expected.push(b"after".to_vec());
    assert_eq!(payloads(&seen), expected);
}

#[test]
fn garbage_after_the_last_record_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        log.append(b"one").expect("append");
        log.append(b"two").expect("append");
    }
    let path = newest_segment(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.extend_from_slice(&[0xAB; 50]);
    std::fs::write(&path, &bytes).expect("write");
    let (_, seen) = open(dir.path(), options()).expect("reopen");
    assert_eq!(payloads(&seen), vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn damage_before_intact_records_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first;
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        first = log.append(&[1u8; 100]).expect("append");
        // Enough after it that later blocks hold intact fragments.
        for _ in 0..10 {
            log.append(&[2u8; 20_000]).expect("append");
        }
    }
    let path = segment_path(dir.path(), first.segment);
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[first.offset as usize + format::FRAGMENT_HEADER_LEN + 10] ^= 0xFF;
    std::fs::write(&path, &bytes).expect("write");
    match open(dir.path(), options()) {
        Err(LogError::Corrupt {
            path: p, offset, ..
        }) => {
            assert_eq!(p, path);
            assert_eq!(offset, first.offset);
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, s)| s.len())),
    }
}

#[test]
fn damage_in_an_older_segment_is_corruption_even_at_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a;
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        a = log.append(b"in the old segment").expect("append");
        log.rotate().expect("rotate");
        log.append(b"in the new one").expect("append");
    }
    let path = segment_path(dir.path(), a.segment);
    let mut bytes = std::fs::read(&path).expect("read");
    // The record's last byte (its end marker follows it).
    let last = a.offset as usize + format::FRAGMENT_HEADER_LEN + b"in the old segment".len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), options()),
        Err(LogError::Corrupt { offset, .. }) if offset == a.offset
    ));
}

#[test]
fn an_older_segment_keeps_its_allocated_rest_behind_its_end_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        preallocate: true,
        ..options()
    };
    let (a, b);
    {
        let (log, _) = open(dir.path(), opts).expect("open");
        a = log.append(b"in the old segment").expect("append");
        log.rotate().expect("rotate");
        b = log.append(b"in the new one").expect("append");
    }
    let path = segment_path(dir.path(), a.segment);
    let len = std::fs::metadata(&path).expect("metadata").len();
    assert!(len >= ALLOCATION_STEP, "not cut at rotation: {len} bytes");
    let (log, seen) = open(dir.path(), opts).expect("reopen");
    assert_eq!(
        payloads(&seen),
        [b"in the old segment".to_vec(), b"in the new one".to_vec()]
    );
    assert_eq!(seen[1].0, b);
    drop(log);

    // Bytes behind the end marker are damage, as zeros before it are lost records.
    let end = a.offset as usize + format::FRAGMENT_HEADER_LEN + b"in the old segment".len();
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[end + 100] = 1;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), opts),
        Err(LogError::Corrupt { detail, .. }) if detail.contains("after the segment's end")
    ));
    bytes[end + 100] = 0;
    bytes[end..end + format::FRAGMENT_HEADER_LEN].fill(0);
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), opts),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn an_interrupted_segment_creation_is_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        log.append(b"kept").expect("append");
    }
    let newest = recovery::segment_ids(&crate::lsm::fs::OsFs, dir.path()).expect("ids");
    let id = *newest.last().expect("id") + 1;
    std::fs::write(segment_path(dir.path(), id), [0u8; 7]).expect("half-created segment");
    let (_, seen) = open(dir.path(), options()).expect("reopen");
    assert_eq!(payloads(&seen), vec![b"kept".to_vec()]);
}

#[test]
fn a_missing_segment_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        log.append(b"a").expect("append");
        log.rotate().expect("rotate");
        log.append(b"b").expect("append");
        log.rotate().expect("rotate");
        log.append(b"c").expect("append");
    }
    let ids = recovery::segment_ids(&crate::lsm::fs::OsFs, dir.path()).expect("ids");
    std::fs::remove_file(segment_path(dir.path(), ids[1])).expect("remove");
    assert!(matches!(
        open(dir.path(), options()),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn oversized_records_are_refused_and_a_closed_log_appends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        max_record_bytes: 10,
        ..options()
    };
    let (mut log, _) = open(dir.path(), opts).expect("open");
    assert!(matches!(
        log.append(&[0u8; 11]),
        Err(LogError::TooLarge { len: 11, max: 10 })
    ));
    log.append(&[0u8; 10]).expect("at the limit");
    log.close().expect("close");
    assert!(matches!(log.append(b"x"), Err(LogError::Closed)));
}

#[test]
fn interval_and_never_modes_keep_what_reached_the_os() {
    for durability in [
        Durability::Interval(Duration::from_millis(5)),
        Durability::Never,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = LogOptions {
            durability,
            ..options()
        };
        {
            let (log, _) = open(dir.path(), opts).expect("open");
            for i in 0..50u32 {
                log.append(&i.to_le_bytes()).expect("append");
            }
            // No close: what an appender was told is written survives the process.
            std::mem::forget(log);
        }
        let (_, seen) = open(dir.path(), opts).expect("reopen");
        assert_eq!(seen.len(), 50, "{durability}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Cutting the newest segment anywhere loses exactly the records not wholly before the cut.
    #[test]
    fn a_cut_anywhere_keeps_exactly_the_whole_records_before_it(
        sizes in proptest::collection::vec(0usize..50_000, 1..12),
        cut in 0.0f64..1.0,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ends = Vec::new();
        let written: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        {
            let (log, _) = open(dir.path(), options()).expect("open");
            for r in &written {
                let p = log.append(r).expect("append");
                ends.push(p.offset + format::encoded_len(p.offset, r.len()));
            }
        }
        let path = newest_segment(dir.path());
        let len = std::fs::metadata(&path).expect("meta").len();
        let at = format::HEADER_LEN as u64 + ((len - format::HEADER_LEN as u64) as f64 * cut) as u64;
        std::fs::OpenOptions::new().write(true).open(&path).expect("file").set_len(at).expect("cut");
        let (_, seen) = open(dir.path(), options()).expect("reopen");
        let whole = ends.iter().filter(|&&end| end <= at).count();
        prop_assert_eq!(payloads(&seen), written[..whole].to_vec());
    }
}

#[test]
fn a_large_record_torn_at_a_block_boundary_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let small = b"before".to_vec();
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        log.append(&small).expect("append");
        // Spans three blocks: first, middle and last fragments.
        log.append(&vec![9u8; 70_000]).expect("append");
    }
    let path = newest_segment(dir.path());
    // Cut exactly after the middle fragment: its intact continuation must not count as a later
    // record.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("file");
    file.set_len(2 * format::BLOCK_SIZE as u64).expect("cut");
    drop(file);
    let (_, seen) = open(dir.path(), options()).expect("a torn tail, not corruption");
    assert_eq!(payloads(&seen), vec![small]);
}

#[test]
fn damage_before_intact_records_of_the_same_block_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first;
    {
        let (log, _) = open(dir.path(), options()).expect("open");
        first = log.append(b"the first record").expect("append");
        log.append(b"the second").expect("append");
        log.append(b"the third").expect("append");
    }
    let path = newest_segment(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[first.offset as usize + format::FRAGMENT_HEADER_LEN + 2] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), options()),
        Err(LogError::Corrupt { offset, .. }) if offset == first.offset
    ));
}

/// Writes segment 1 by hand: a first batch of `before` records, then one batch of `torn`
/// records, as the writer lays them out. Returns the segment's path.
fn two_batches(dir: &Path, before: &[Vec<u8>], torn: &[Vec<u8>]) -> PathBuf {
    let mut bytes = format::encode_header(1, false).to_vec();
    for batch in [before, torn] {
        let start = bytes.len();
        let mut buf = Vec::new();
        let mut offset = start as u64;
        for r in batch {
            offset += format::encode_record(&mut buf, offset, r);
        }
        format::mark_batch_start(&mut buf, start as u64);
        bytes.extend_from_slice(&buf);
    }
    let path = segment_path(dir, 1);
    std::fs::write(&path, &bytes).expect("write segment");
    path
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// A power loss during the last batch's fsync can persist any subset of its 4 KiB pages:
    /// whatever survives, the log opens, keeps every record of the earlier (fsynced) batch, and
    /// keeps only whole, intact records of the torn one.
    #[test]
    fn any_pages_of_the_last_batch_may_be_lost(
        before in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3_000), 1..6),
        torn in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..9_000), 2..12),
        lost in proptest::collection::vec(any::<bool>(), 32),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = two_batches(dir.path(), &before, &torn);
        let mut bytes = std::fs::read(&path).expect("read");
        let before_end = {
            let mut offset = format::HEADER_LEN as u64;
            for r in &before {
                offset += format::encoded_len(offset, r.len());
            }
            offset as usize
        };
        // Zero the lost pages that lie wholly past the first batch.
        for (page, gone) in lost.iter().enumerate() {
            let (start, end) = (page * 4096, (page + 1) * 4096);
            let len = bytes.len();
            if *gone && start >= before_end && start < len {
                bytes[start..end.min(len)].fill(0);
            }
        }
        std::fs::write(&path, &bytes).expect("write");
        let (_, seen) = open(dir.path(), options()).expect("a torn last batch is never corruption");
        let got = payloads(&seen);
        prop_assert!(got.len() >= before.len());
        prop_assert_eq!(&got[..before.len()], &before[..]);
        for r in &got[before.len()..] {
            prop_assert!(torn.contains(r), "only records that were written");
        }
    }
}

/// Without `always`, an fsync (the interval syncer's, or the one before a memtable freeze) runs
/// beside the appenders: an append never waits for it.
#[test]
fn appends_do_not_wait_for_an_fsync_they_do_not_need() {
    use crate::lsm::fs::{Fs, SimFs};
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/log")).expect("mkdir");
    fs.sync_dir(Path::new("/")).expect("sync /");
    let options = LogOptions {
        durability: Durability::Never,
        ..options()
    };
    let log = Arc::new(
        CommitLog::open(Arc::new(fs.clone()), Path::new("/log"), options, |_, _| {
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|_| "open")
        .expect("open"),
    );
    log.append(b"before").expect("append");
    let hold = fs.hold_syncs();
    let syncing = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.sync())
    };
    while fs.syncs_waiting() == 0 {
        std::thread::yield_now();
    }
    // The fsync is stuck; appends go on (if one waited for it, the watchdog below fires).
    let (done, appended) = std::sync::mpsc::channel();
    {
        let log = Arc::clone(&log);
        std::thread::spawn(move || {
            let result =
                (0..100).try_for_each(|i| log.append(format!("during {i}").as_bytes()).map(drop));
            let _ = done.send(result.is_ok());
        });
    }
    let ok = appended
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("appends waited for an fsync they did not ask for");
    assert!(ok, "appends failed");
    assert_eq!(fs.syncs_waiting(), 1, "the fsync is still held");
    drop(hold);
    syncing.join().expect("sync thread").expect("sync");
    // What the fsync covered is durable: the record before it survives a power cut.
    let after = fs.crash(crate::lsm::fs::CrashOptions::default());
    let mut seen = Vec::new();
    drop(
        CommitLog::open(Arc::new(after), Path::new("/log"), options, |_, rec| {
            seen.push(rec.to_vec());
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|_| "reopen")
        .expect("reopen"),
    );
    assert_eq!(seen.first().map(Vec::as_slice), Some(&b"before"[..]));
}

/// Under `always`, a leader waits for the writers the last fsync released before it fsyncs: two
/// writers share fsyncs instead of taking turns.
#[test]
fn a_leader_gathers_the_writers_the_last_fsync_released() {
    use crate::lsm::fs::{Fs, SimFs};
    let fs = SimFs::new();
    fs.create_dir_all(Path::new("/log")).expect("mkdir");
    fs.sync_dir(Path::new("/")).expect("sync /");
    let options = LogOptions {
        max_gather: std::time::Duration::from_secs(10),
        ..options()
    };
    let log = Arc::new(
        CommitLog::open(Arc::new(fs.clone()), Path::new("/log"), options, |_, _| {
            Ok::<(), std::convert::Infallible>(())
        })
        .map_err(|_| "open")
        .expect("open"),
    );
    // A's first record leads; its fsync is held (for 400 ms: the gather deadline
    // is half an fsync's time, so B gathers for 200 ms) while B's record queues behind it.
    let hold = fs.hold_syncs();
    let a1 = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(b"a1").map(drop))
    };
    while fs.syncs_waiting() == 0 {
        std::thread::yield_now();
    }
    let b1 = {
        let log = Arc::clone(&log);
        std::thread::spawn(move || log.append(b"b1").map(drop))
    };
    while log.stats().appends < 2 {
        std::thread::yield_now();
    }
    std::thread::sleep(std::time::Duration::from_millis(400));
    drop(hold);
    a1.join().expect("a1").expect("append a1");
    // B leads next, and gathers for A (without gathering it would fsync alone).
    let waiting = std::time::Instant::now();
    while log.stats().gathers == 0 {
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(30),
            "B never gathered"
        );
        std::thread::yield_now();
    }
    log.append(b"a2").expect("append a2");
    b1.join().expect("b1").expect("append b1");
    let stats = log.stats();
    assert_eq!(stats.appends, 3);
    assert_eq!(stats.syncs, 2, "b1 and a2 shared an fsync: {stats:?}");
    assert_eq!(stats.gathers, 1, "{stats:?}");
}

/// A log that does not fsync every write moves to its next segment without an fsync: after a
/// power cut the older segment may lose its end while the next kept writes. Recovery then ends
/// the log where the older one ends — unless a later batch proves the older one was fsynced.
#[test]
fn a_relaxed_segment_that_lost_its_end_ends_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        durability: Durability::Never,
        preallocate: true,
        ..options()
    };
    let (a1, a2);
    {
        let (log, _) = open(dir.path(), opts).expect("open");
        a1 = log.append(b"a1").expect("append");
        a2 = log.append(b"a2").expect("append");
        let syncs = log.stats().syncs;
        log.rotate().expect("rotate");
        assert_eq!(
            log.stats().syncs,
            syncs,
            "a relaxed rotation does not fsync"
        );
        log.append(b"b1").expect("append");
    }
    let old = segment_path(dir.path(), a1.segment);
    let newer = segment_path(dir.path(), a1.segment + 1);
    let end_of = |p: LogPosition, len: usize| p.offset as usize + format::FRAGMENT_HEADER_LEN + len;
    // The power cut took a2 and the end marker; the next segment's write survived.
    let mut bytes = std::fs::read(&old).expect("read");
    bytes[a2.offset as usize..end_of(a2, 2) + format::FRAGMENT_HEADER_LEN].fill(0);
    std::fs::write(&old, &bytes).expect("write");
    let holds_b1 = |p: &Path| {
        std::fs::read(p)
            .expect("read")
            .windows(2)
            .any(|w| w == b"b1")
    };
    assert!(holds_b1(&newer));
    let (log, seen) = open(dir.path(), opts).expect("a lost end is not corruption");
    assert_eq!(payloads(&seen), [b"a1".to_vec()], "a prefix survives");
    // The later segment went: the log starts a fresh one in its place.
    assert!(!holds_b1(&newer));
    // The log goes on after the cut, and the cut segment now reads as a whole older one.
    let c1 = log.append(b"c1").expect("append");
    drop(log);
    let (_, seen) = open(dir.path(), opts).expect("reopen");
    assert_eq!(payloads(&seen), [b"a1".to_vec(), b"c1".to_vec()]);
    assert!(c1.segment > a1.segment);
}

/// ... but a batch flagged in a later segment says every earlier write was fsynced first: a
/// lost end before it is corruption.
#[test]
fn a_lost_end_before_a_later_fsynced_batch_is_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        durability: Durability::Never,
        preallocate: true,
        ..options()
    };
    let a1;
    {
        let (log, _) = open(dir.path(), opts).expect("open");
        a1 = log.append(b"a1").expect("append");
        log.rotate().expect("rotate");
        log.append(b"b1").expect("append");
        log.sync().expect("sync");
        log.append(b"b2").expect("append");
    }
    let old = segment_path(dir.path(), a1.segment);
    let mut bytes = std::fs::read(&old).expect("read");
    let end = a1.offset as usize + format::FRAGMENT_HEADER_LEN + 2;
    bytes[end..end + format::FRAGMENT_HEADER_LEN].fill(0);
    std::fs::write(&old, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), opts),
        Err(LogError::Corrupt { offset, .. }) if offset == end as u64
    ));
}

/// A sync in a relaxed log leaves a mark in the next write naming how far the log was durable:
/// damage before that point is corruption, even when no later batch is flagged.
#[test]
fn a_sync_mark_proves_the_bytes_before_it_were_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = LogOptions {
        durability: Durability::Never,
        preallocate: true,
        ..options()
    };
    let a2;
    {
        let (log, _) = open(dir.path(), opts).expect("open");
        log.append(b"a1").expect("append");
        a2 = log.append(b"a2").expect("append");
        log.sync().expect("sync");
        log.rotate().expect("rotate");
        // Carries the mark; its batch is not flagged (the rotation's end marker is unsynced).
        log.append(b"b1").expect("append");
    }
    let old = segment_path(dir.path(), a2.segment);
    let mut bytes = std::fs::read(&old).expect("read");
    bytes[a2.offset as usize + 2] ^= 0x40;
    std::fs::write(&old, &bytes).expect("write");
    assert!(matches!(
        open(dir.path(), opts),
        Err(LogError::Corrupt { offset, .. }) if offset == a2.offset
    ));
}

/// Segments of format 2 (no end markers, no flags; older ones end at their file's end) still
/// replay, and the log goes on after them in format 3.
#[test]
fn a_format_2_log_replays_and_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v2_header = |id: u64| {
        let mut h = format::encode_header(id, false);
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c::crc32c(&h[..16]).to_le_bytes();
        h[16..].copy_from_slice(&crc);
        h
    };
    let mut written = Vec::new();
    for id in [1u64, 2] {
        let mut bytes = v2_header(id).to_vec();
        let start = bytes.len();
        let mut buf = Vec::new();
        let mut offset = start as u64;
        for i in 0..3 {
            let r = format!("segment {id} record {i}").into_bytes();
            offset += format::encode_record(&mut buf, offset, &r);
            written.push(r);
        }
        format::mark_batch_start(&mut buf, start as u64);
        bytes.extend_from_slice(&buf);
        std::fs::write(segment_path(dir.path(), id), &bytes).expect("write segment");
    }
    let (log, seen) = open(dir.path(), options()).expect("open a format 2 log");
    assert_eq!(payloads(&seen), written);
    log.append(b"format 3").expect("append");
    drop(log);
    written.push(b"format 3".to_vec());
    let (_, seen) = open(dir.path(), options()).expect("reopen");
    assert_eq!(payloads(&seen), written);
}

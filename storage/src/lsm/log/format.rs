//! The commit log's byte format: segment header and record fragments.
//!
//! A segment is a sequence of [`BLOCK_SIZE`] blocks. The first block starts with the segment
//! header; records follow as fragments, none of which crosses a block boundary, so after a damaged
//! fragment a reader can resynchronise at the next block.
//!
//! Segment header (at offset 0, [`HEADER_LEN`] bytes, little-endian):
//!
//! ```text
//! 0        4        6        8                16       20
//! +--------+--------+--------+----------------+--------+
//! | magic  | format | flags  | segment id     | crc32c |
//! | "PDBL" | u16    | u16    | u64            | of 0..16
//! +--------+--------+--------+----------------+--------+
//! ```
//!
//! `flags` (format 3; zero in format 2): bit 0, [`RELAXED`], says the log that wrote the segment
//! did not fsync every write ([`Durability`](crate::durability::Durability) `interval` or
//! `never`), so it moved on to the next segment without fsyncing this one: after a power cut
//! such a segment may lack its end, and recovery ends the log there if nothing later proves the
//! segment was fsynced. Other bits are zero.
//!
//! Fragment ([`FRAGMENT_HEADER_LEN`] bytes of header, then `len` bytes of payload):
//!
//! ```text
//! 0        4        6      7
//! +--------+--------+------+-----------------+
//! | crc32c | len    | kind | payload (len)   |
//! | u32    | u16    | u8   |                 |
//! +--------+--------+------+-----------------+
//! ```
//!
//! `crc32c` covers `len`, `kind` and the payload. `kind`'s low bits are 1 (a whole record), 2 (a
//! record's first fragment), 3 (a middle one), 4 (its last), 5 (the segment's end: an empty
//! fragment written when the log moves to the next segment, after which only zeros — space the
//! segment was allocated with — may follow; format 2 segments have none and end at their
//! file's end) or 6 (a sync mark, in [`RELAXED`] segments: its 16-byte payload is a segment id
//! and an offset, little-endian u64s, before which every byte of the log was fsynced when the
//! mark was written); its high bit ([`BATCH_START`])
//! marks the first fragment of each write the log made (a group-commit batch), so recovery can
//! tell the torn tail of the last write from damage followed by later writes. When fewer than [`FRAGMENT_HEADER_LEN`]
//! bytes remain in a block, they are zeros and the next fragment starts the next block.

/// Bytes per block.
pub const BLOCK_SIZE: usize = 32 * 1024;

/// Bytes of the segment header.
pub const HEADER_LEN: usize = 20;

/// Bytes of a fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 7;

/// The segment magic.
pub const MAGIC: [u8; 4] = *b"PDBL";

/// The format version this code writes.
pub const FORMAT_VERSION: u16 = 3;

/// The oldest format version this code reads (format 2 lacks [`Kind::End`]).
pub const OLDEST_READABLE_VERSION: u16 = 2;

/// A fragment's place in its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A whole record.
    Full = 1,
    /// The first fragment of a record.
    First = 2,
    /// A middle fragment.
    Middle = 3,
    /// The last fragment.
    Last = 4,
    /// The end of the segment (an empty fragment, not part of a record).
    End = 5,
    /// A sync mark (not part of a record): see [`encode_synced`].
    Synced = 6,
}

/// The kind byte's flag on the first fragment of a batch.
pub const BATCH_START: u8 = 0x80;

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b & !BATCH_START {
            1 => Some(Kind::Full),
            2 => Some(Kind::First),
            3 => Some(Kind::Middle),
            4 => Some(Kind::Last),
            5 => Some(Kind::End),
            6 => Some(Kind::Synced),
            _ => None,
        }
    }
}

/// The header flag of a segment written by a log that does not fsync every write.
pub const RELAXED: u16 = 1;

/// A decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The segment's id.
    pub id: u64,
    /// Its format version.
    pub version: u16,
    /// Written by a log that does not fsync every write ([`RELAXED`]).
    pub relaxed: bool,
}

/// Encodes the header of segment `id`; `relaxed` as [`Header::relaxed`].
pub fn encode_header(id: u64, relaxed: bool) -> [u8; HEADER_LEN] {
    let mut body = [0u8; 16];
    let flags = if relaxed { RELAXED } else { 0 };
    let fields = MAGIC
        .into_iter()
        .chain(FORMAT_VERSION.to_le_bytes())
        .chain(flags.to_le_bytes())
        .chain(id.to_le_bytes());
    for (dst, src) in body.iter_mut().zip(fields) {
        *dst = src;
    }
    let crc = crc32c::crc32c(&body).to_le_bytes();
    let mut h = [0u8; HEADER_LEN];
    for (dst, src) in h.iter_mut().zip(body.into_iter().chain(crc)) {
        *dst = src;
    }
    h
}

/// Decodes a segment header, or says what is wrong with it.
pub fn decode_header(bytes: &[u8]) -> Result<Header, String> {
    let header: Option<[u8; HEADER_LEN]> = bytes.get(..HEADER_LEN).and_then(|h| h.try_into().ok());
    let Some(header) = header else {
        return Err(format!(
            "segment header truncated ({} of {HEADER_LEN} bytes)",
            bytes.len()
        ));
    };
    let [
        m0,
        m1,
        m2,
        m3,
        v0,
        v1,
        f0,
        f1,
        i0,
        i1,
        i2,
        i3,
        i4,
        i5,
        i6,
        i7,
        c0,
        c1,
        c2,
        c3,
    ] = header;
    let body = [
        m0, m1, m2, m3, v0, v1, f0, f1, i0, i1, i2, i3, i4, i5, i6, i7,
    ];
    if crc32c::crc32c(&body) != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err("segment header checksum mismatch".into());
    }
    if [m0, m1, m2, m3] != MAGIC {
        return Err("not a commit-log segment (bad magic)".into());
    }
    let version = u16::from_le_bytes([v0, v1]);
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(format!(
            "segment format version {version}; this build reads {OLDEST_READABLE_VERSION} to {FORMAT_VERSION}"
        ));
    }
    let flags = u16::from_le_bytes([f0, f1]);
    let known = if version >= 3 { RELAXED } else { 0 };
    if flags & !known != 0 {
        return Err(format!("segment header flags {flags:#06x} unknown"));
    }
    Ok(Header {
        id: u64::from_le_bytes([i0, i1, i2, i3, i4, i5, i6, i7]),
        version,
        relaxed: flags & RELAXED != 0,
    })
}

/// Bytes that appending a `payload_len`-byte record at segment offset `offset` takes, padding
/// included.
pub fn encoded_len(offset: u64, payload_len: usize) -> u64 {
    let mut pos = offset;
    let mut left = payload_len;
    loop {
        let room = BLOCK_SIZE - (pos % BLOCK_SIZE as u64) as usize;
        if room < FRAGMENT_HEADER_LEN {
            pos += room as u64;
            continue;
        }
        let take = left.min(room - FRAGMENT_HEADER_LEN);
        pos += (FRAGMENT_HEADER_LEN + take) as u64;
        left -= take;
        if left == 0 {
            return pos - offset;
        }
    }
}

/// Appends `payload` as one record to `out`, whose first byte lands at segment offset `offset`.
/// Returns the bytes appended (as [`encoded_len`] says).
pub fn encode_record(out: &mut Vec<u8>, offset: u64, payload: &[u8]) -> u64 {
    let start = out.len();
    let mut pos = offset;
    let mut rest = payload;
    let mut first = true;
    loop {
        let room = BLOCK_SIZE - (pos % BLOCK_SIZE as u64) as usize;
        if room < FRAGMENT_HEADER_LEN {
            out.resize(out.len() + room, 0);
            pos += room as u64;
            continue;
        }
        let take = rest.len().min(room - FRAGMENT_HEADER_LEN);
        let (chunk, tail) = rest.split_at(take);
        let last = tail.is_empty();
        let kind = match (first, last) {
            (true, true) => Kind::Full,
            (true, false) => Kind::First,
            (false, false) => Kind::Middle,
            (false, true) => Kind::Last,
        };
        // A fragment never exceeds a block, so its length fits in a u16.
        let len = (take as u16).to_le_bytes();
        let mut crc = crc32c::crc32c(&len);
        crc = crc32c::crc32c_append(crc, &[kind as u8]);
        crc = crc32c::crc32c_append(crc, chunk);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&len);
        out.push(kind as u8);
        out.extend_from_slice(chunk);
        pos += (FRAGMENT_HEADER_LEN + take) as u64;
        rest = tail;
        first = false;
        if last {
            return (out.len() - start) as u64;
        }
    }
}

/// Appends the segment's end marker ([`Kind::End`]) to `out`, whose first byte lands at segment
/// offset `offset`. Returns the bytes appended (padding included).
pub fn encode_end(out: &mut Vec<u8>, offset: u64) -> u64 {
    let start = out.len();
    let room = BLOCK_SIZE - (offset % BLOCK_SIZE as u64) as usize;
    if room < FRAGMENT_HEADER_LEN {
        out.resize(out.len() + room, 0);
    }
    let len = 0u16.to_le_bytes();
    let kind = Kind::End as u8;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&len), &[kind]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len);
    out.push(kind);
    (out.len() - start) as u64
}

/// Appends a sync mark to `out`, whose first byte lands at segment offset `offset`: every byte
/// of the log before offset `through_offset` of segment `through_segment` was fsynced. Returns
/// the bytes appended (padding included).
pub fn encode_synced(
    out: &mut Vec<u8>,
    offset: u64,
    through_segment: u64,
    through_offset: u64,
) -> u64 {
    let start = out.len();
    let room = BLOCK_SIZE - (offset % BLOCK_SIZE as u64) as usize;
    if room < FRAGMENT_HEADER_LEN + SYNCED_LEN {
        out.resize(out.len() + room, 0);
    }
    let mut payload = [0u8; SYNCED_LEN];
    for (dst, src) in payload.iter_mut().zip(
        through_segment
            .to_le_bytes()
            .into_iter()
            .chain(through_offset.to_le_bytes()),
    ) {
        *dst = src;
    }
    let len = (SYNCED_LEN as u16).to_le_bytes();
    let kind = Kind::Synced as u8;
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, &[kind]);
    crc = crc32c::crc32c_append(crc, &payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&len);
    out.push(kind);
    out.extend_from_slice(&payload);
    (out.len() - start) as u64
}

/// Bytes of a sync mark's payload.
pub const SYNCED_LEN: usize = 16;

/// The position a sync mark's payload names: (segment id, offset), or `None` if it is not one.
pub fn decode_synced(payload: &[u8]) -> Option<(u64, u64)> {
    let segment: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    let offset: [u8; 8] = payload.get(8..SYNCED_LEN)?.try_into().ok()?;
    (payload.len() == SYNCED_LEN).then(|| (u64::from_le_bytes(segment), u64::from_le_bytes(offset)))
}

/// A fragment read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// Its place in its record.
    pub kind: Kind,
    /// Its payload.
    pub payload: &'a [u8],
    /// It starts a batch: everything before it was written, and under
    /// [`Durability::Always`](crate::durability::Durability::Always) fsynced, first.
    pub batch_start: bool,
}

/// What was found at a fragment's offset instead of a fragment.
#[derive(Debug, PartialEq, Eq)]
pub enum BadFragment {
    /// The segment ends inside the fragment.
    Truncated,
    /// The fragment is damaged: the reason.
    Damaged(&'static str),
}

/// Decodes the fragment at `offset` of `segment` (the whole segment's bytes), which must not be
/// in a block's zero trailer. Never panics, whatever the bytes.
pub fn decode_fragment(segment: &[u8], offset: usize) -> Result<Fragment<'_>, BadFragment> {
    let block_end = (offset / BLOCK_SIZE + 1) * BLOCK_SIZE;
    let header: Option<[u8; FRAGMENT_HEADER_LEN]> = segment
        .get(offset..offset.saturating_add(FRAGMENT_HEADER_LEN))
        .and_then(|h| h.try_into().ok());
    let Some([c0, c1, c2, c3, l0, l1, kind_byte]) = header else {
        return Err(BadFragment::Truncated);
    };
    let crc = u32::from_le_bytes([c0, c1, c2, c3]);
    let len = u16::from_le_bytes([l0, l1]) as usize;
    let start = offset + FRAGMENT_HEADER_LEN;
    let end = start + len;
    if end > block_end {
        return Err(BadFragment::Damaged("fragment length crosses its block"));
    }
    let Some(payload) = segment.get(start..end) else {
        return Err(BadFragment::Truncated);
    };
    let mut actual = crc32c::crc32c(&[l0, l1, kind_byte]);
    actual = crc32c::crc32c_append(actual, payload);
    if actual != crc {
        return Err(BadFragment::Damaged("fragment checksum mismatch"));
    }
    let Some(kind) = Kind::from_byte(kind_byte) else {
        return Err(BadFragment::Damaged("unknown fragment kind"));
    };
    Ok(Fragment {
        kind,
        payload,
        batch_start: kind_byte & BATCH_START != 0,
    })
}

/// Marks the first fragment in `batch` — bytes to be written at segment offset `offset` — as
/// the start of a batch (flag and checksum). `batch` must begin with whole encoded records.
pub fn mark_batch_start(batch: &mut [u8], offset: u64) {
    let room = BLOCK_SIZE - (offset % BLOCK_SIZE as u64) as usize;
    // A record that did not fit the block's rest starts after its zero padding.
    let at = if room < FRAGMENT_HEADER_LEN { room } else { 0 };
    let header: Option<[u8; 3]> = batch
        .get(at + 4..at + FRAGMENT_HEADER_LEN)
        .and_then(|h| h.try_into().ok());
    let Some([l0, l1, kind]) = header else {
        return;
    };
    let len = usize::from(u16::from_le_bytes([l0, l1]));
    let kind = kind | BATCH_START;
    let Some(payload) = batch.get(at + FRAGMENT_HEADER_LEN..at + FRAGMENT_HEADER_LEN + len) else {
        return;
    };
    let mut crc = crc32c::crc32c(&[l0, l1]);
    crc = crc32c::crc32c_append(crc, &[kind]);
    crc = crc32c::crc32c_append(crc, payload);
    if let Some(k) = batch.get_mut(at + 6) {
        *k = kind;
    }
    if let Some(c) = batch.get_mut(at..at + 4) {
        c.copy_from_slice(&crc.to_le_bytes());
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn header_round_trips_and_rejects_damage() {
        for relaxed in [false, true] {
            let h = encode_header(42, relaxed);
            assert_eq!(
                decode_header(&h),
                Ok(Header {
                    id: 42,
                    version: FORMAT_VERSION,
                    relaxed
                })
            );
        }
        let h = encode_header(42, false);
        for i in 0..HEADER_LEN {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert!(decode_header(&bad).is_err(), "byte {i}");
        }
        assert!(decode_header(&h[..10]).is_err());
    }

    #[test]
    fn records_never_cross_blocks_and_decode_back() {
        // Start just before a block boundary, so the first record needs padding or splitting.
        for offset in [
            HEADER_LEN as u64,
            BLOCK_SIZE as u64 - 3,
            BLOCK_SIZE as u64 - 10,
        ] {
            let payload: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
            let mut out = vec![0u8; offset as usize];
            let n = encode_record(&mut out, offset, &payload);
            assert_eq!(n, encoded_len(offset, payload.len()));
            let mut pos = offset as usize;
            let mut back = Vec::new();
            while pos < out.len() {
                if BLOCK_SIZE - pos % BLOCK_SIZE < FRAGMENT_HEADER_LEN {
                    pos = (pos / BLOCK_SIZE + 1) * BLOCK_SIZE;
                    continue;
                }
                let f = decode_fragment(&out, pos).expect("fragment");
                assert_eq!(
                    pos / BLOCK_SIZE,
                    (pos + FRAGMENT_HEADER_LEN + f.payload.len() - 1) / BLOCK_SIZE
                );
                back.extend_from_slice(f.payload);
                pos += FRAGMENT_HEADER_LEN + f.payload.len();
            }
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn a_batch_start_is_marked_on_its_first_fragment_wherever_it_lands() {
        let block = BLOCK_SIZE as u64;
        for offset in [
            0,
            HEADER_LEN as u64,
            block - 7,
            block - 6,
            block - 1,
            block + 3,
        ] {
            let mut segment = vec![0u8; offset as usize];
            let mut batch = Vec::new();
            let n = encode_record(&mut batch, offset, b"first of the batch");
            encode_record(&mut batch, offset + n, b"second");
            mark_batch_start(&mut batch, offset);
            segment.extend_from_slice(&batch);
            // The first fragment sits after any padding the block's end forced.
            let room = BLOCK_SIZE - (offset as usize % BLOCK_SIZE);
            let at = offset as usize + if room < FRAGMENT_HEADER_LEN { room } else { 0 };
            let first = decode_fragment(&segment, at).expect("intact after marking");
            assert!(first.batch_start, "offset {offset}");
            // (With exactly a header's room left, the record starts with an empty fragment.)
            assert!(b"first of the batch".starts_with(first.payload));
            let next = at + FRAGMENT_HEADER_LEN + first.payload.len();
            let next = if BLOCK_SIZE - next % BLOCK_SIZE < FRAGMENT_HEADER_LEN {
                (next / BLOCK_SIZE + 1) * BLOCK_SIZE
            } else {
                next
            };
            let second = decode_fragment(&segment, next).expect("the next fragment");
            assert!(
                !second.batch_start,
                "offset {offset}: only the first is marked"
            );
        }
    }

    #[test]
    fn an_empty_record_is_one_empty_fragment() {
        let mut out = Vec::new();
        assert_eq!(encode_record(&mut out, 0, b""), FRAGMENT_HEADER_LEN as u64);
        let f = decode_fragment(&out, 0).expect("fragment");
        assert_eq!((f.kind, f.payload), (Kind::Full, &b""[..]));
    }

    #[test]
    fn the_end_marker_decodes_wherever_it_lands() {
        for offset in [
            HEADER_LEN as u64,
            1000,
            BLOCK_SIZE as u64 - 3,
            BLOCK_SIZE as u64 - 7,
        ] {
            let mut out = vec![0u8; offset as usize];
            let n = encode_end(&mut out, offset);
            let room = BLOCK_SIZE as u64 - offset % BLOCK_SIZE as u64;
            // Where the marker starts: here, or past the block's zero trailer.
            let at = if room < FRAGMENT_HEADER_LEN as u64 {
                offset + room
            } else {
                offset
            } as usize;
            assert_eq!(out.len() as u64, offset + n);
            assert_eq!(out.len(), at + FRAGMENT_HEADER_LEN);
            assert!(
                out[offset as usize..at].iter().all(|&b| b == 0),
                "padding is zeros"
            );
            let f = decode_fragment(&out, at).expect("decodes");
            assert_eq!(
                (f.kind, f.payload, f.batch_start),
                (Kind::End, &[][..], false)
            );
        }
    }

    #[test]
    fn format_2_segments_still_open() {
        let mut h = encode_header(7, false);
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32c::crc32c(&h[..16]).to_le_bytes();
        h[16..].copy_from_slice(&crc);
        assert_eq!(decode_header(&h).map(|h| (h.id, h.version)), Ok((7, 2)));
        // Format 2 had no flags.
        let mut flagged = h;
        flagged[6] = 1;
        let crc = crc32c::crc32c(&flagged[..16]).to_le_bytes();
        flagged[16..].copy_from_slice(&crc);
        assert!(decode_header(&flagged).is_err_and(|e| e.contains("flags")));
        h[4..6].copy_from_slice(&1u16.to_le_bytes());
        let crc = crc32c::crc32c(&h[..16]).to_le_bytes();
        h[16..].copy_from_slice(&crc);
        assert!(decode_header(&h).is_err_and(|e| e.contains("version 1")));
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        encode_record(&mut out, 0, b"hello, commit log");
        for i in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode_fragment(&bad, 0).is_err(), "bit {i}");
        }
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), offset in 0usize..400) {
            let _ = decode_fragment(&bytes, offset);
            let _ = decode_header(&bytes);
            let _ = decode_synced(&bytes);
        }

        #[test]
        fn sync_marks_round_trip(offset in 0u64..200_000, segment in any::<u64>(), through in any::<u64>()) {
            let mut out = vec![0u8; offset as usize];
            let n = encode_synced(&mut out, offset, segment, through);
            prop_assert_eq!(out.len() as u64, offset + n);
            let at = out.len() - FRAGMENT_HEADER_LEN - SYNCED_LEN;
            let f = decode_fragment(&out, at).expect("decodes");
            prop_assert_eq!(f.kind, Kind::Synced);
            prop_assert_eq!(decode_synced(f.payload), Some((segment, through)));
        }

        #[test]
        fn encoded_len_is_exact(offset in 0u64..200_000, len in 0usize..100_000) {
            let mut out = Vec::new();
            prop_assert_eq!(encode_record(&mut out, offset, &vec![7u8; len]), encoded_len(offset, len));
        }
    }
}

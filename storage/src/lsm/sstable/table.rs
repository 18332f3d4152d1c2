//! Table files: data blocks, a bloom filter and an index, closed by a footer.
//!
//! ```text
//! +--------------+-----+--------------+--------------+-------------+--------+
//! | data block 0 | ... | data block n | filter block | index block | footer |
//! +--------------+-----+--------------+--------------+-------------+--------+
//! ```
//!
//! Every block (data, filter, index) is followed by a 5-byte trailer:
//!
//! ```text
//! +----------------------+-------------------------------------------+
//! | compression: u8      | crc32c of the block's bytes and that byte |
//! +----------------------+-------------------------------------------+
//! ```
//!
//! Compression 0 stores the block as is; 1 stores it LZ4-compressed, prefixed with its
//! uncompressed length (u32 LE) — written for a data block only when that saves an eighth of it.
//!
//! The index is a [`block`](super::block) whose entry for each data block has the block's last
//! key as key and its handle (offset, length: two varints) as value. The footer
//! ([`FOOTER_LEN`] bytes, little-endian):
//!
//! ```text
//! 0           8           16          24          32          40      42     44       48        56
//! +-----------+-----------+-----------+-----------+-----------+-------+------+--------+---------+
//! | filter    | filter    | index     | index     | entries   | format| zero | crc32c | magic   |
//! | offset u64| len u64   | offset u64| len u64   | u64       | u16   | u16  | of 0..44| "PDBTABLE"
//! +-----------+-----------+-----------+-----------+-----------+-------+------+--------+---------+
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pairdb_core::varint;

use super::block::{Block, BlockBuilder, BlockError};
use super::filter::{Filter, FilterBuilder, KeyHash};
use crate::lsm::cache::{BlockCache, next_table_id};
use crate::lsm::fs::{Fs, FsFile};

/// Bytes the writer gathers before it writes them to the file.
const WRITE_BUFFER: usize = 256 << 10;

/// Bytes of the footer.
pub const FOOTER_LEN: usize = 56;

/// The footer's magic.
pub const MAGIC: [u8; 8] = *b"PDBTABLE";

/// The format version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes of the trailer after every block.
pub const TRAILER_LEN: usize = 5;

/// The largest block a reader accepts (a damaged handle must not make it allocate gigabytes).
const MAX_BLOCK_BYTES: u64 = 64 << 20;

/// How tables are written.
#[derive(Clone, Copy, Debug)]
pub struct TableOptions {
    /// Data blocks are cut once they reach this many bytes.
    pub block_bytes: usize,
    /// Bloom-filter bits per key.
    pub bits_per_key: u32,
    /// LZ4-compress data blocks (when that saves an eighth of a block).
    pub compress: bool,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_bytes: 4096,
            bits_per_key: 10,
            compress: true,
        }
    }
}

/// A table failure, naming the file (and, for damage, the byte offset).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    /// An I/O call failed.
    #[error("table I/O on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged.
    #[error("table {path} corrupt at offset {offset}: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// Keys were added out of order (a bug in the caller).
    #[error("table {path}: keys added out of order")]
    OutOfOrder {
        /// The file.
        path: PathBuf,
    },
}

/// Where a block is: offset and length of its contents (its trailer follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Handle {
    offset: u64,
    len: u64,
}

impl Handle {
    fn encode(self, out: &mut Vec<u8>) {
        varint::put(out, self.offset);
        varint::put(out, self.len);
    }

    fn decode(mut bytes: &[u8]) -> Option<Handle> {
        let offset = varint::take(&mut bytes)?;
        let len = varint::take(&mut bytes)?;
        bytes.is_empty().then_some(Handle { offset, len })
    }
}

/// What a finished table holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// Its file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its entries.
    pub entries: u64,
    /// Its smallest key (empty for an empty table).
    pub first_key: Vec<u8>,
    /// Its largest key (empty for an empty table).
    pub last_key: Vec<u8>,
}

/// Writes one table from entries in strictly increasing key order.
pub struct TableWriter {
    path: PathBuf,
    file: Arc<dyn FsFile>,
    /// Bytes not yet written to the file; they start at `offset - out.len()`.
    out: Vec<u8>,
    offset: u64,
    options: TableOptions,
    data: BlockBuilder,
    index: BlockBuilder,
    filter: FilterBuilder,
    entries: u64,
    first_key: Vec<u8>,
}

impl TableWriter {
    /// Creates the table file at `path` (which must not exist).
    pub fn create(
        fs: &dyn Fs,
        path: &Path,
        options: TableOptions,
    ) -> Result<TableWriter, TableError> {
        let file = fs.create_new(path).map_err(|source| TableError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(TableWriter {
            path: path.to_owned(),
            file,
            out: Vec::with_capacity(WRITE_BUFFER),
            offset: 0,
            options,
            data: BlockBuilder::new(),
            index: BlockBuilder::new(),
            filter: FilterBuilder::new(options.bits_per_key),
            entries: 0,
            first_key: Vec::new(),
        })
    }

    fn io(&self, source: std::io::Error) -> TableError {
        TableError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds an entry; its key must be greater than every key added before.
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), TableError> {
        if self.entries > 0 && key <= self.data_last_key() {
            return Err(TableError::OutOfOrder {
                path: self.path.clone(),
            });
        }
        if self.entries == 0 {
            self.first_key = key.to_vec();
        }
        self.data.add(key, value);
        self.filter.add(key);
        self.entries += 1;
        if self.data.size() >= self.options.block_bytes {
            self.cut_data_block()?;
        }
        Ok(())
    }

    /// The last key added (kept by the data block, or by the index once the block was cut).
    fn data_last_key(&self) -> &[u8] {
        if self.data.is_empty() {
            self.index.last_key()
        } else {
            self.data.last_key()
        }
    }

    fn write_block(&mut self, contents: &[u8], compress: bool) -> Result<Handle, TableError> {
        let compressed = compress
            .then(|| lz4_flex::block::compress_prepend_size(contents))
            .filter(|c| c.len() < contents.len() - contents.len() / 8);
        let (compression, contents) = match &compressed {
            Some(c) => (1u8, c.as_slice()),
            None => (0u8, contents),
        };
        let handle = Handle {
            offset: self.offset,
            len: contents.len() as u64,
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(contents), &[compression]);
        self.out.extend_from_slice(contents);
        self.out.push(compression);
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.offset += (contents.len() + TRAILER_LEN) as u64;
        if self.out.len() >= WRITE_BUFFER {
            self.write_out()?;
        }
        Ok(handle)
    }

    /// Writes the gathered bytes to the file.
    fn write_out(&mut self) -> Result<(), TableError> {
        let at = self.offset - self.out.len() as u64;
        self.file
            .write_all_at(&self.out, at)
            .map_err(|e| self.io(e))?;
        self.out.clear();
        Ok(())
    }

    fn cut_data_block(&mut self) -> Result<(), TableError> {
        if self.data.is_empty() {
            return Ok(());
        }
        let last = self.data.last_key().to_vec();
        let contents = self.data.finish();
        let handle = self.write_block(&contents, self.options.compress)?;
        let mut value = Vec::with_capacity(10);
        handle.encode(&mut value);
        self.index.add(&last, &value);
        Ok(())
    }

    /// Writes the filter, the index and the footer, and fsyncs the file. The caller makes the
    /// file's directory entry durable.
    pub fn finish(mut self) -> Result<TableInfo, TableError> {
        let last_key = self.data_last_key().to_vec();
        self.cut_data_block()?;
        let filter = self.filter.finish();
        let filter = self.write_block(&filter, false)?;
        let index = self.index.finish();
        let index = self.write_block(&index, false)?;
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        for n in [
            filter.offset,
            filter.len,
            index.offset,
            index.len,
            self.entries,
        ] {
            footer.extend_from_slice(&n.to_le_bytes());
        }
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        footer.extend_from_slice(&[0, 0]);
        footer.extend_from_slice(&crc32c::crc32c(&footer).to_le_bytes());
        footer.extend_from_slice(&MAGIC);
        let size = self.offset + FOOTER_LEN as u64;
        self.out.extend_from_slice(&footer);
        self.offset = size;
        self.write_out()?;
        self.file.sync_all().map_err(|e| self.io(e))?;
        Ok(TableInfo {
            path: self.path,
            size,
            entries: self.entries,
            first_key: self.first_key,
            last_key,
        })
    }
}

/// An open table. Reads are positional, so one table serves concurrent readers.
pub struct Table {
    path: PathBuf,
    file: Arc<dyn FsFile>,
    /// This table in the caches.
    id: u64,
    blocks: Option<Arc<BlockCache>>,
    size: u64,
    entries: u64,
    filter: Filter,
    index: Block,
}

impl Table {
    /// Opens the table at `path`, checking its footer, filter and index; its data blocks are
    /// cached in `blocks`, if given.
    pub fn open(
        fs: &dyn Fs,
        path: &Path,
        blocks: Option<Arc<BlockCache>>,
    ) -> Result<Table, TableError> {
        let io = |source| TableError::Io {
            path: path.to_owned(),
            source,
        };
        let file = fs.open(path, false).map_err(io)?;
        let size = file.size().map_err(io)?;
        let corrupt = |offset: u64, detail: String| TableError::Corrupt {
            path: path.to_owned(),
            offset,
            detail,
        };
        let footer_at = size
            .checked_sub(FOOTER_LEN as u64)
            .ok_or_else(|| corrupt(0, format!("{size} bytes: shorter than a footer")))?;
        let mut footer = [0u8; FOOTER_LEN];
        file.read_exact_at(&mut footer, footer_at).map_err(io)?;
        let field = |i: usize| -> u64 {
            let mut b = [0u8; 8];
            for (dst, src) in b.iter_mut().zip(footer.iter().skip(8 * i)) {
                *dst = *src;
            }
            u64::from_le_bytes(b)
        };
        let tail: [u8; 16] = footer
            .get(40..56)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(|| corrupt(footer_at, "footer unreadable".into()))?;
        let [v0, v1, z0, z1, c0, c1, c2, c3, m @ ..] = tail;
        if m != MAGIC {
            return Err(corrupt(footer_at + 48, "not a table (bad magic)".into()));
        }
        let crc = crc32c::crc32c(footer.get(..44).unwrap_or_default());
        if crc != u32::from_le_bytes([c0, c1, c2, c3]) {
            return Err(corrupt(footer_at, "footer checksum mismatch".into()));
        }
        let version = u16::from_le_bytes([v0, v1]);
        if version != FORMAT_VERSION || [z0, z1] != [0, 0] {
            return Err(corrupt(
                footer_at + 40,
                format!("table format version {version}; this build reads {FORMAT_VERSION}"),
            ));
        }
        let filter = Handle {
            offset: field(0),
            len: field(1),
        };
        let index = Handle {
            offset: field(2),
            len: field(3),
        };
        let frames = index
            .offset
            .checked_add(index.len)
            .and_then(|e| e.checked_add(TRAILER_LEN as u64))
            == Some(footer_at)
            && filter
                .offset
                .checked_add(filter.len)
                .and_then(|e| e.checked_add(TRAILER_LEN as u64))
                == Some(index.offset);
        if !frames {
            return Err(corrupt(
                footer_at,
                "footer handles do not frame the file".into(),
            ));
        }
        let filter_bytes = read_block(path, &*file, size, filter)?;
        let filter_block =
            Filter::decode(filter_bytes).map_err(|e| corrupt(filter.offset, e.to_string()))?;
        let index_bytes = read_block(path, &*file, size, index)?;
        let index_block = Block::decode(index_bytes)
            .map_err(|e| corrupt(index.offset + e.offset as u64, e.detail.into()))?;
        Ok(Table {
            path: path.to_owned(),
            file,
            id: next_table_id(),
            blocks,
            size,
            entries: field(4),
            filter: filter_block,
            index: index_block,
        })
    }

    /// This table's id in the caches (unique in the process).
    pub fn cache_id(&self) -> u64 {
        self.id
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Its entries.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn corrupt(&self, offset: u64, detail: impl Into<String>) -> TableError {
        TableError::Corrupt {
            path: self.path.clone(),
            offset,
            detail: detail.into(),
        }
    }

    fn block_error(&self, handle: Handle, e: &BlockError) -> TableError {
        self.corrupt(handle.offset + e.offset as u64, e.detail)
    }

    fn read_block(&self, handle: Handle) -> Result<Vec<u8>, TableError> {
        read_block(&self.path, &*self.file, self.size, handle)
    }

    /// The data block `handle_bytes` (an index entry) names, from the block cache if there;
    /// read from the file otherwise, and cached if `fill`.
    fn data_block(
        &self,
        handle_bytes: &[u8],
        index_offset: u64,
        fill: bool,
    ) -> Result<(Handle, Arc<Block>), TableError> {
        let handle = Handle::decode(handle_bytes)
            .ok_or_else(|| self.corrupt(index_offset, "bad block handle in the index"))?;
        if let Some(cached) = self
            .blocks
            .as_ref()
            .and_then(|c| c.get(self.id, handle.offset, fill))
        {
            return Ok((handle, cached));
        }
        let block = Arc::new(
            Block::decode(self.read_block(handle)?).map_err(|e| self.block_error(handle, &e))?,
        );
        if fill && let Some(cache) = &self.blocks {
            cache.insert(self.id, handle.offset, Arc::clone(&block));
        }
        Ok((handle, block))
    }

    /// Whether the filter allows `key` to be in this table.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.filter.may_contain(key)
    }

    /// [`may_contain`](Self::may_contain) for the key whose hash is `hash`.
    pub fn may_contain_hash(&self, hash: KeyHash) -> bool {
        self.filter.may_contain_hash(hash)
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        if !self.filter.may_contain(key) {
            return Ok(None);
        }
        self.get_unfiltered(key)
    }

    /// [`get`](Self::get) for a key the bloom filter already let through.
    pub fn get_unfiltered(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        self.lookup(key, true)
    }

    /// [`get_unfiltered`](Self::get_unfiltered) if the data block that may hold `key` is in the
    /// block cache: `None` when answering would read the file. Not counted in the cache's hit
    /// rate (the caller counts what it answers with).
    pub fn get_if_cached(&self, key: &[u8]) -> Result<Option<Option<Vec<u8>>>, TableError> {
        let Some(entry) = self.index.iter_from(Some(key)).next() else {
            return Ok(Some(None));
        };
        let (_, handle_bytes) = entry.map_err(|e| self.corrupt(e.offset as u64, e.detail))?;
        let handle = Handle::decode(handle_bytes)
            .ok_or_else(|| self.corrupt(0, "bad block handle in the index"))?;
        let Some(block) = self
            .blocks
            .as_ref()
            .and_then(|c| c.get(self.id, handle.offset, false))
        else {
            return Ok(None);
        };
        block
            .get(key)
            .map(|v| Some(v.map(<[u8]>::to_vec)))
            .map_err(|e| self.block_error(handle, &e))
    }

    /// [`get`](Self::get) for background work: neither counted in the block cache's hit rate
    /// nor filling it.
    pub fn peek(&self, key: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        if !self.filter.may_contain(key) {
            return Ok(None);
        }
        self.lookup(key, false)
    }

    fn lookup(&self, key: &[u8], cached: bool) -> Result<Option<Vec<u8>>, TableError> {
        // The first data block whose last key is at least `key` is the only one that can hold it.
        let Some(entry) = self.index.iter_from(Some(key)).next() else {
            return Ok(None);
        };
        let (_, handle_bytes) = entry.map_err(|e| self.corrupt(e.offset as u64, e.detail))?;
        let (handle, block) = self.data_block(handle_bytes, 0, cached)?;
        block
            .get(key)
            .map(|v| v.map(<[u8]>::to_vec))
            .map_err(|e| self.block_error(handle, &e))
    }

    /// Entries in key order from the first key at least `from` (from the start without it).
    pub fn iter_from(&self, from: Option<&[u8]>) -> Result<TableIter<'_>, TableError> {
        Ok(TableIter {
            table: self,
            handles: self.index.iter_from(from),
            from: from.map(<[u8]>::to_vec),
            current: Vec::new().into_iter(),
            failed: false,
        })
    }
}

/// Reads and checks the block at `handle` of the `size`-byte table `file` at `path`.
fn read_block(
    path: &Path,
    file: &dyn FsFile,
    size: u64,
    handle: Handle,
) -> Result<Vec<u8>, TableError> {
    let corrupt = |offset: u64, detail: &str| TableError::Corrupt {
        path: path.to_owned(),
        offset,
        detail: detail.to_owned(),
    };
    let end = handle
        .offset
        .checked_add(handle.len)
        .and_then(|e| e.checked_add(TRAILER_LEN as u64));
    if handle.len > MAX_BLOCK_BYTES || end.is_none_or(|e| e > size) {
        return Err(corrupt(handle.offset, "block handle out of bounds"));
    }
    let mut buf = vec![0u8; handle.len as usize + TRAILER_LEN];
    file.read_exact_at(&mut buf, handle.offset)
        .map_err(|source| TableError::Io {
            path: path.to_owned(),
            source,
        })?;
    let trailer = buf.split_off(handle.len as usize);
    let [compression, c0, c1, c2, c3] = <[u8; TRAILER_LEN]>::try_from(trailer.as_slice())
        .map_err(|_| corrupt(handle.offset, "block trailer unreadable"))?;
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf), &[compression]);
    if crc != u32::from_le_bytes([c0, c1, c2, c3]) {
        return Err(corrupt(handle.offset, "block checksum mismatch"));
    }
    match compression {
        0 => Ok(buf),
        1 => {
            // The stated length is checked before anything is allocated for it.
            let stated = buf
                .get(..4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u64::from(u32::from_le_bytes(b)));
            match stated {
                Some(n) if n <= MAX_BLOCK_BYTES => lz4_flex::block::decompress_size_prepended(&buf)
                    .map_err(|_| corrupt(handle.offset, "block does not decompress")),
                _ => Err(corrupt(
                    handle.offset,
                    "compressed block length out of bounds",
                )),
            }
        }
        _ => Err(corrupt(
            handle.offset + handle.len,
            "unknown block compression",
        )),
    }
}

/// A table's entries in key order; an error ends it.
pub struct TableIter<'a> {
    table: &'a Table,
    handles: super::block::BlockIter<'a>,
    from: Option<Vec<u8>>,
    current: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    failed: bool,
}

impl Iterator for TableIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>), TableError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed {
                return None;
            }
            if let Some(entry) = self.current.next() {
                return Some(Ok(entry));
            }
            let handle = match self.handles.next()? {
                Ok((_, handle)) => handle,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(self.table.corrupt(e.offset as u64, e.detail)));
                }
            };
            let loaded = self
                .table
                .data_block(handle, 0, false)
                .and_then(|(h, block)| {
                    block
                        .iter_from(self.from.as_deref())
                        .map(|r| r.map(|(k, v)| (k, v.to_vec())))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| self.table.block_error(h, &e))
                });
            // Only the first block can hold keys below `from`.
            self.from = None;
            match loaded {
                Ok(entries) => self.current = entries.into_iter(),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
#[expect(clippy::indexing_slicing, reason = "tests index buffers they built")]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::lsm::fs::OsFs;

    fn write(
        dir: &Path,
        name: &str,
        entries: &[(Vec<u8>, Vec<u8>)],
        options: TableOptions,
    ) -> TableInfo {
        let mut w = TableWriter::create(&OsFs, &dir.join(name), options).expect("create");
        for (k, v) in entries {
            w.add(k, v).expect("add");
        }
        w.finish().expect("finish")
    }

    fn entries(n: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| {
                (
                    format!("key-{:08}", i * 2).into_bytes(),
                    vec![(i % 251) as u8; 100],
                )
            })
            .collect()
    }

    #[test]
    fn lookups_and_scans_read_back_what_was_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = entries(5_000);
        let info = write(dir.path(), "t.sst", &written, TableOptions::default());
        assert_eq!(info.entries, 5_000);
        assert_eq!(info.first_key, written[0].0);
        assert_eq!(info.last_key, written[4_999].0);
        let t = Table::open(&OsFs, &info.path, None).expect("open");
        assert_eq!(t.size(), info.size);
        for (k, v) in written.iter().step_by(97) {
            assert_eq!(t.get(k).expect("get").as_ref(), Some(v));
        }
        // Odd numbers were never written.
        for i in (1..2_000).step_by(2) {
            assert_eq!(t.get(format!("key-{i:08}").as_bytes()).expect("get"), None);
        }
        let all: Vec<_> = t
            .iter_from(None)
            .expect("iter")
            .collect::<Result<_, _>>()
            .expect("scan");
        assert_eq!(all, written);
        let from = b"key-00001001".as_slice();
        let tail: Vec<_> = t
            .iter_from(Some(from))
            .expect("iter")
            .collect::<Result<_, _>>()
            .expect("scan");
        assert_eq!(
            tail,
            written
                .iter()
                .filter(|(k, _)| k.as_slice() >= from)
                .cloned()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn compressible_blocks_are_stored_compressed_and_read_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Values of one repeated byte compress well.
        let written = entries(3_000);
        let plain = TableOptions {
            compress: false,
            ..TableOptions::default()
        };
        let small = write(dir.path(), "lz4.sst", &written, TableOptions::default());
        let large = write(dir.path(), "plain.sst", &written, plain);
        assert!(
            small.size * 2 < large.size,
            "{} bytes compressed vs {} plain",
            small.size,
            large.size
        );
        for info in [small, large] {
            let t = Table::open(&OsFs, &info.path, None).expect("open");
            let all: Vec<_> = t
                .iter_from(None)
                .expect("iter")
                .collect::<Result<_, _>>()
                .expect("scan");
            assert_eq!(all, written);
            assert_eq!(
                t.get(&written[1234].0).expect("get").as_ref(),
                Some(&written[1234].1)
            );
        }
    }

    #[test]
    fn an_empty_table_opens_and_holds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = write(dir.path(), "empty.sst", &[], TableOptions::default());
        let t = Table::open(&OsFs, &info.path, None).expect("open");
        assert_eq!(t.get(b"k").expect("get"), None);
        assert_eq!(t.iter_from(None).expect("iter").count(), 0);
    }

    #[test]
    fn keys_out_of_order_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = TableWriter::create(&OsFs, &dir.path().join("t.sst"), TableOptions::default())
            .expect("create");
        w.add(b"b", b"1").expect("add");
        assert!(matches!(
            w.add(b"a", b"2"),
            Err(TableError::OutOfOrder { .. })
        ));
        assert!(matches!(
            w.add(b"b", b"2"),
            Err(TableError::OutOfOrder { .. })
        ));
    }

    #[test]
    fn a_flipped_byte_anywhere_is_reported_or_harmless_never_a_panic_or_a_wrong_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let written = entries(300);
        let info = write(dir.path(), "t.sst", &written, TableOptions::default());
        let clean = std::fs::read(&info.path).expect("read");
        // Every byte is under a checksum: a damaged table fails to open, or the lookups that
        // touch the damaged block fail; none answers a wrong value or loses a key.
        for i in (0..clean.len()).step_by(37) {
            let mut bad = clean.clone();
            bad[i] ^= 0x40;
            let path = dir.path().join(format!("bad-{i}.sst"));
            std::fs::write(&path, &bad).expect("write");
            let Ok(t) = Table::open(&OsFs, &path, None) else {
                continue;
            };
            for (k, v) in written.iter().step_by(3) {
                match t.get(k) {
                    Ok(Some(got)) => assert_eq!(&got, v, "byte {i}: a wrong value"),
                    Err(TableError::Corrupt { .. }) => {}
                    Ok(None) => panic!("byte {i}: a key lost without an error"),
                    Err(e) => panic!("byte {i}: {e}"),
                }
            }
            for (k, v) in t.iter_from(None).expect("index intact").flatten() {
                let expected = written.iter().find(|(wk, _)| *wk == k).map(|(_, v)| v);
                assert_eq!(expected, Some(&v), "byte {i}: an invented entry");
            }
            std::fs::remove_file(&path).expect("rm");
        }
    }

    #[test]
    fn a_truncated_table_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let info = write(dir.path(), "t.sst", &entries(100), TableOptions::default());
        let bytes = std::fs::read(&info.path).expect("read");
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&info.path, &bytes[..cut]).expect("write");
            assert!(
                matches!(
                    Table::open(&OsFs, &info.path, None),
                    Err(TableError::Corrupt { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn any_sorted_entries_round_trip(
            map in proptest::collection::btree_map(
                proptest::collection::vec(any::<u8>(), 0..24),
                proptest::collection::vec(any::<u8>(), 0..300),
                0..400,
            ),
            block_bytes in 64usize..8192,
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let written: Vec<(Vec<u8>, Vec<u8>)> = map.into_iter().collect();
            let options = TableOptions { block_bytes, ..TableOptions::default() };
            let info = write(dir.path(), "t.sst", &written, options);
            let t = Table::open(&OsFs, &info.path, None).expect("open");
            for (k, v) in &written {
                let got = t.get(k).expect("get");
                prop_assert_eq!(got.as_ref(), Some(v));
            }
            let all: Vec<_> = t.iter_from(None).expect("iter").collect::<Result<_, _>>().expect("scan");
            prop_assert_eq!(all, written);
        }
    }
}

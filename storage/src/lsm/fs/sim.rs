//! [`SimFs`]: an in-memory file system that loses, on a simulated power cut, what a real one may.
//!
//! Each file keeps two contents — what it holds now, and what its last fsync made durable — and
//! each directory two sets of entries — now, and as of its last fsync. [`SimFs::crash`] stops
//! every call on this file system (they fail from then on, as if the machine were gone) and
//! returns the file system a reboot would find: only durable entries, each file with its durable
//! contents — and, with [`CrashOptions::torn`], a random choice of the pages written since (old
//! or new, page by page, at a random length in between), as a disk that wrote some of its queue
//! before the power went would leave them.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Fs, FsFile};

/// Bytes a simulated disk writes as a unit.
const PAGE: usize = 4096;

/// How a [`SimFs::crash`] treats what was not fsynced.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrashOptions {
    /// Seeds the random choices, so a failing crash replays.
    pub seed: u64,
    /// Keep a random part of what was written but not fsynced (pages of it, old or new at
    /// random, up to a random length), instead of none of it.
    pub torn: bool,
}

/// An in-memory file system that simulates power loss; see the [module](self) docs.
#[derive(Clone)]
pub struct SimFs {
    shared: Arc<Shared>,
}

struct Shared {
    crashed: AtomicBool,
    tree: Mutex<BTreeMap<PathBuf, Dir>>,
    /// While set, file fsyncs wait (and count themselves in `waiting`); see
    /// [`SimFs::hold_syncs`].
    hold: Mutex<Hold>,
    released: std::sync::Condvar,
}

#[derive(Default)]
struct Hold {
    held: bool,
    waiting: usize,
}

/// Keeps every file fsync of a [`SimFs`] waiting until dropped.
pub struct SyncHold {
    shared: Arc<Shared>,
}

impl Drop for SyncHold {
    fn drop(&mut self) {
        lock(&self.shared.hold).held = false;
        self.shared.released.notify_all();
    }
}

#[derive(Default)]
struct Dir {
    entries: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
}

#[derive(Clone)]
enum Node {
    File(Arc<SimFile>),
    Dir,
}

#[derive(Default)]
struct SimFile {
    contents: Mutex<Contents>,
}

#[derive(Default, Clone)]
struct Contents {
    now: Vec<u8>,
    durable: Vec<u8>,
}

struct Handle {
    shared: Arc<Shared>,
    file: Arc<SimFile>,
    write: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lost() -> io::Error {
    io::Error::other("simulated power loss: the file system is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

/// The parent directory and file name of `path`.
fn split(path: &Path) -> io::Result<(&Path, String)> {
    match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(parent), Some(name)) => Ok((parent, name.to_owned())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )),
    }
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty file system holding only its root, `/`.
    pub fn new() -> SimFs {
        let mut tree = BTreeMap::new();
        tree.insert(PathBuf::from("/"), Dir::default());
        SimFs {
            shared: Arc::new(Shared {
                crashed: AtomicBool::new(false),
                tree: Mutex::new(tree),
                hold: Mutex::new(Hold::default()),
                released: std::sync::Condvar::new(),
            }),
        }
    }

    /// Makes every file fsync wait until the returned hold is dropped: tests use it to check
    /// what does, and what does not, wait for an fsync.
    pub fn hold_syncs(&self) -> SyncHold {
        lock(&self.shared.hold).held = true;
        SyncHold {
            shared: Arc::clone(&self.shared),
        }
    }

    /// File fsyncs waiting on a [`hold_syncs`](Self::hold_syncs) now.
    pub fn syncs_waiting(&self) -> usize {
        lock(&self.shared.hold).waiting
    }

    /// Cuts the power: every later call on this file system (and on files open in it) fails.
    /// Returns what a reboot finds, as the [module](self) docs say.
    pub fn crash(&self, options: CrashOptions) -> SimFs {
        self.shared.crashed.store(true, Ordering::SeqCst);
        let tree = lock(&self.shared.tree);
        let mut rng = options.seed | 1;
        let mut rebuilt = BTreeMap::new();
        // A file reachable under two names (a rename whose old name's removal was not durable)
        // stays one file.
        let mut files: Vec<(Arc<SimFile>, Arc<SimFile>)> = Vec::new();
        let mut pending = vec![PathBuf::from("/")];
        while let Some(path) = pending.pop() {
            let Some(dir) = tree.get(&path) else { continue };
            let mut entries = BTreeMap::new();
            for (name, node) in &dir.durable {
                let node = match node {
                    Node::Dir => {
                        if !tree.contains_key(&path.join(name)) {
                            continue;
                        }
                        pending.push(path.join(name));
                        Node::Dir
                    }
                    Node::File(file) => {
                        let known = files.iter().find(|(old, _)| Arc::ptr_eq(old, file));
                        let new = match known {
                            Some((_, new)) => Arc::clone(new),
                            None => {
                                let contents = lock(&file.contents);
                                let kept = survivor(&contents, options.torn, &mut rng);
                                let new = Arc::new(SimFile {
                                    contents: Mutex::new(Contents {
                                        now: kept.clone(),
                                        durable: kept,
                                    }),
                                });
                                files.push((Arc::clone(file), Arc::clone(&new)));
                                new
                            }
                        };
                        Node::File(new)
                    }
                };
                entries.insert(name.clone(), node);
            }
            rebuilt.insert(
                path,
                Dir {
                    durable: entries.clone(),
                    entries,
                },
            );
        }
        SimFs {
            shared: Arc::new(Shared {
                crashed: AtomicBool::new(false),
                tree: Mutex::new(rebuilt),
                hold: Mutex::new(Hold::default()),
                released: std::sync::Condvar::new(),
            }),
        }
    }

    fn tree(&self) -> io::Result<MutexGuard<'_, BTreeMap<PathBuf, Dir>>> {
        let tree = lock(&self.shared.tree);
        if self.shared.crashed.load(Ordering::SeqCst) {
            return Err(lost());
        }
        Ok(tree)
    }

    fn handle(&self, file: Arc<SimFile>, write: bool) -> Arc<dyn FsFile> {
        Arc::new(Handle {
            shared: Arc::clone(&self.shared),
            file,
            write,
        })
    }
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// What of a file survives a power cut: its durable contents, or (`torn`) a random mix of them
/// and the newer ones, page by page, at a length between the two.
fn survivor(contents: &Contents, torn: bool, rng: &mut u64) -> Vec<u8> {
    let Contents { now, durable } = contents;
    if !torn || now == durable {
        return durable.clone();
    }
    let (short, long) = (now.len().min(durable.len()), now.len().max(durable.len()));
    let len = match next(rng) % 3 {
        0 => durable.len(),
        1 => now.len(),
        _ => short + (next(rng) as usize) % (long - short + 1),
    };
    let mut out = vec![0u8; len];
    for (i, page) in out.chunks_mut(PAGE).enumerate() {
        let from = if next(rng).is_multiple_of(2) {
            now
        } else {
            durable
        };
        let at = i * PAGE;
        for (j, b) in page.iter_mut().enumerate() {
            *b = from.get(at + j).copied().unwrap_or(0);
        }
    }
    out
}

impl Handle {
    fn contents(&self) -> io::Result<MutexGuard<'_, Contents>> {
        let contents = lock(&self.file.contents);
        if self.shared.crashed.load(Ordering::SeqCst) {
            return Err(lost());
        }
        Ok(contents)
    }

    fn writable(&self) -> io::Result<()> {
        if self.write {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }
}

impl FsFile for Handle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let contents = self.contents()?;
        let Some(rest) = usize::try_from(offset)
            .ok()
            .and_then(|o| contents.now.get(o..))
        else {
            return Ok(0);
        };
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable()?;
        let mut contents = self.contents()?;
        let start = usize::try_from(offset).map_err(|_| io::Error::other("offset too large"))?;
        let end = start + buf.len();
        if contents.now.len() < end {
            contents.now.resize(end, 0);
        }
        if let Some(dst) = contents.now.get_mut(start..end) {
            dst.copy_from_slice(buf);
        }
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.contents()?.now.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        let len = usize::try_from(len).map_err(|_| io::Error::other("length too large"))?;
        self.contents()?.now.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        {
            let mut hold = lock(&self.shared.hold);
            hold.waiting += 1;
            while hold.held {
                hold = self
                    .shared
                    .released
                    .wait(hold)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            hold.waiting -= 1;
        }
        let mut contents = self.contents()?;
        contents.durable = contents.now.clone();
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn allocate(&self, len: u64) {
        if let (Ok(mut contents), Ok(len)) = (self.contents(), usize::try_from(len))
            && contents.now.len() < len
        {
            contents.now.resize(len, 0);
        }
    }
}

impl Fs for SimFs {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.tree()?;
        let mut ancestors: Vec<&Path> = path.ancestors().collect();
        ancestors.reverse();
        for dir in ancestors {
            if tree.contains_key(dir) {
                continue;
            }
            let (parent, name) = split(dir)?;
            let parent = tree.get_mut(parent).ok_or_else(|| not_found(parent))?;
            if let Some(Node::File(_)) = parent.entries.get(&name) {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{}: a file", dir.display()),
                ));
            }
            parent.entries.insert(name, Node::Dir);
            tree.insert(dir.to_owned(), Dir::default());
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let tree = self.tree()?;
        let dir = tree.get(path).ok_or_else(|| not_found(path))?;
        Ok(dir.entries.keys().cloned().collect())
    }

    fn exists(&self, path: &Path) -> bool {
        let Ok(tree) = self.tree() else { return false };
        tree.contains_key(path)
            || split(path).is_ok_and(|(parent, name)| {
                tree.get(parent)
                    .is_some_and(|d| d.entries.contains_key(&name))
            })
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn FsFile>> {
        let mut tree = self.tree()?;
        let (parent, name) = split(path)?;
        let dir = tree.get_mut(parent).ok_or_else(|| not_found(parent))?;
        if dir.entries.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists", path.display()),
            ));
        }
        let file = Arc::new(SimFile::default());
        dir.entries.insert(name, Node::File(Arc::clone(&file)));
        drop(tree);
        Ok(self.handle(file, true))
    }

    fn open(&self, path: &Path, write: bool) -> io::Result<Arc<dyn FsFile>> {
        let tree = self.tree()?;
        let (parent, name) = split(path)?;
        match tree.get(parent).and_then(|d| d.entries.get(&name)) {
            Some(Node::File(file)) => {
                let file = Arc::clone(file);
                drop(tree);
                Ok(self.handle(file, write))
            }
            _ => Err(not_found(path)),
        }
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.tree()?;
        let (parent, name) = split(path)?;
        let dir = tree.get_mut(parent).ok_or_else(|| not_found(parent))?;
        match dir.entries.get(&name) {
            Some(Node::File(_)) => {
                dir.entries.remove(&name);
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut tree = self.tree()?;
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        if !tree.contains_key(to_dir) {
            return Err(not_found(to_dir));
        }
        let node = match tree.get_mut(from_dir).map(|d| d.entries.remove(&from_name)) {
            Some(Some(Node::File(file))) => Node::File(file),
            Some(Some(other)) => {
                if let Some(d) = tree.get_mut(from_dir) {
                    d.entries.insert(from_name, other);
                }
                return Err(io::Error::other("renaming directories is not simulated"));
            }
            _ => return Err(not_found(from)),
        };
        if let Some(d) = tree.get_mut(to_dir) {
            d.entries.insert(to_name, node);
        }
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut tree = self.tree()?;
        let dir = tree.get_mut(path).ok_or_else(|| not_found(path))?;
        dir.durable = dir.entries.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, path: &str, data: &[u8]) -> Arc<dyn FsFile> {
        let f = fs.create_new(Path::new(path)).expect("create");
        f.write_all_at(data, 0).expect("write");
        f
    }

    #[test]
    fn only_fsynced_data_under_fsynced_names_survives() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/db")).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync /");
        let a = write(&fs, "/db/a", b"durable");
        a.sync_data().expect("sync");
        a.write_all_at(b" and more", 7).expect("write");
        let b = write(&fs, "/db/b", b"synced but never named");
        b.sync_data().expect("sync");
        fs.sync_dir(Path::new("/db")).expect("sync dir");
        // Created after the directory's fsync: its name is lost.
        write(&fs, "/db/c", b"x").sync_data().expect("sync");

        let after = fs.crash(CrashOptions::default());
        assert!(a.size().is_err(), "the old file system is gone");
        let mut names = after.read_dir(Path::new("/db")).expect("ls");
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(after.read(Path::new("/db/a")).expect("read"), b"durable");
    }

    #[test]
    fn renames_and_removes_need_the_directory_fsync() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/d")).expect("mkdir");
        fs.sync_dir(Path::new("/")).expect("sync /");
        write(&fs, "/d/old", b"1").sync_all().expect("sync");
        fs.sync_dir(Path::new("/d")).expect("sync");
        fs.rename(Path::new("/d/old"), Path::new("/d/new"))
            .expect("rename");
        let after = fs.crash(CrashOptions::default());
        assert_eq!(after.read_dir(Path::new("/d")).expect("ls"), ["old"]);

        after
            .rename(Path::new("/d/old"), Path::new("/d/new"))
            .expect("rename");
        after.sync_dir(Path::new("/d")).expect("sync");
        after.remove_file(Path::new("/d/new")).expect("rm");
        let again = after.crash(CrashOptions::default());
        assert_eq!(again.read_dir(Path::new("/d")).expect("ls"), ["new"]);
    }

    #[test]
    fn a_directory_never_made_durable_is_lost_with_its_files() {
        let fs = SimFs::new();
        fs.create_dir_all(Path::new("/a/b")).expect("mkdir");
        let f = write(&fs, "/a/b/f", b"data");
        f.sync_all().expect("sync");
        fs.sync_dir(Path::new("/a/b")).expect("sync");
        let after = fs.crash(CrashOptions::default());
        assert!(!after.exists(Path::new("/a")));
    }

    #[test]
    fn torn_crashes_keep_pages_old_or_new_never_other_bytes() {
        for seed in 0..64 {
            let fs = SimFs::new();
            fs.sync_dir(Path::new("/")).expect("sync");
            let f = write(&fs, "/f", &[1u8; 3 * PAGE]);
            f.sync_all().expect("sync");
            fs.sync_dir(Path::new("/")).expect("sync");
            f.write_all_at(&[2u8; 4 * PAGE], PAGE as u64)
                .expect("write");
            let after = fs.crash(CrashOptions { seed, torn: true });
            let data = after.read(Path::new("/f")).expect("read");
            assert!(data.len() >= 3 * PAGE && data.len() <= 5 * PAGE);
            assert!(
                data.iter().take(PAGE).all(|&b| b == 1),
                "page 0 never changed"
            );
            for page in data.chunks(PAGE) {
                let first = page.first().copied().unwrap_or(0);
                assert!(
                    page.iter().all(|&b| b == first),
                    "a page is one write's or the other's"
                );
            }
        }
    }
}

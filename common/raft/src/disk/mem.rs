//! An in-memory [`Disk`] with a crash model, for tests and the deterministic simulator.
//!
//! The model follows what a POSIX file system promises and nothing more:
//!
//! - A file's *content* is durable only up to its last successful [`Disk::sync`]. Everything
//!   appended, written or truncated since then is lost by [`MemDisk::crash`].
//! - A directory *entry* (a create, a rename, a remove) is durable only after
//!   [`Disk::sync_dir`] of the directory that holds it. A file created and fsynced but whose
//!   directory was never synced disappears on a crash, exactly as on ext4 without `dirsync`.
//! - [`MemDisk::crash_torn`] is a crash in the middle of the last write: a random prefix of the
//!   last unsynced append survives.
//!
//! Files are modelled as inodes so that a rename moves content without copying and a crash
//! can roll the name space and the contents back independently. Directories are implicit
//! (a directory exists while a file lives in it), so creating a directory needs no sync.
//!
//! The handle is a cheap [`Clone`] sharing one state (`Rc<RefCell<..>>`: the simulator is
//! single-threaded), so a test keeps a handle while the WAL owns another.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use decree_types::DetRng;

use super::{Disk, DiskError};

/// One operation performed on a [`MemDisk`], recorded when [`MemDisk::record_events`] is on so
/// that a test can assert the order of writes and fsyncs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskEvent {
    /// `append(path, len bytes)`.
    Append { path: String, len: usize },
    /// `write(path, len bytes)`.
    Write { path: String, len: usize },
    /// `truncate(path, len)`.
    Truncate { path: String, len: u64 },
    /// A successful `sync(path)`.
    Sync { path: String },
    /// A `sync(path)` that failed (injected by [`MemDisk::fail_nth_sync`]).
    SyncFailed { path: String },
    /// `rename(from, to)`.
    Rename { from: String, to: String },
    /// `remove(path)`.
    Remove { path: String },
    /// `sync_dir(dir)`.
    SyncDir { dir: String },
    /// A `sync_dir(dir)` that failed (injected by [`MemDisk::fail_next_sync_dir`]).
    SyncDirFailed { dir: String },
}

/// In-memory disk with durable/unsynced tracking and fault knobs. See the module docs.
#[derive(Clone, Debug, Default)]
pub struct MemDisk {
    state: Rc<RefCell<State>>,
}

type Inode = u64;

#[derive(Default)]
struct State {
    /// The name space a running process sees: path -> inode.
    live: BTreeMap<String, Inode>,
    /// The name space that survives a crash.
    durable: BTreeMap<String, Inode>,
    files: BTreeMap<Inode, FileData>,
    next_inode: Inode,
    /// The inode of the most recent append not yet covered by a sync of that inode.
    last_unsynced_append: Option<Inode>,
    /// The n-th next file sync fails (0: none).
    fail_sync_in: u64,
    /// The n-th next directory sync fails (0: none).
    fail_dir_sync_in: u64,
    syncs: u64,
    dir_syncs: u64,
    record: bool,
    events: Vec<DiskEvent>,
}

#[derive(Debug, Default)]
struct FileData {
    /// What reads return.
    content: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> Self {
        MemDisk::default()
    }

    /// Power loss: every unsynced byte and every unsynced directory change is lost.
    pub fn crash(&self) {
        self.crash_keeping(0);
    }

    /// Power loss in the middle of the last write: a prefix of random length (possibly empty,
    /// possibly all of it) of the last unsynced append's file survives beyond its durable
    /// content; everything else unsynced is lost as in [`MemDisk::crash`].
    pub fn crash_torn(&self, rng: &mut DetRng) {
        let unsynced = self.last_unsynced_len();
        let keep = rng.range(0, unsynced as u64 + 1) as usize;
        self.crash_keeping(keep);
    }

    /// Like [`MemDisk::crash_torn`] with a chosen length: `keep_bytes` of the unsynced bytes
    /// of the last appended file survive (clamped to what was written).
    pub fn crash_torn_at(&self, keep_bytes: usize) {
        self.crash_keeping(keep_bytes);
    }

    /// How many unsynced bytes the last appended file holds beyond its durable content
    /// (0 if the last append was synced or its file was rewritten or truncated since).
    pub fn last_unsynced_len(&self) -> usize {
        let st = self.state.borrow();
        match st.last_unsynced_append.and_then(|ino| st.files.get(&ino)) {
            Some(f) if f.content.starts_with(&f.durable) => f.content.len() - f.durable.len(),
            _ => 0,
        }
    }

    /// The next `sync` (of any file) fails with an error, leaving the data unsynced.
    pub fn fail_next_sync(&self) {
        self.fail_nth_sync(1);
    }

    /// The `n`-th next file `sync` (1 = the next one) fails; the ones before succeed.
    pub fn fail_nth_sync(&self, n: u64) {
        self.state.borrow_mut().fail_sync_in = n;
    }

    /// The next `sync_dir` fails with an error, leaving the directory changes unsynced.
    pub fn fail_next_sync_dir(&self) {
        self.state.borrow_mut().fail_dir_sync_in = 1;
    }

    /// Flips one bit of a file's content, durable copy included (media corruption). Returns
    /// false if the file or the offset does not exist.
    pub fn flip_bit(&self, path: &str, byte_offset: usize, bit: u8) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(&ino) = st.live.get(path) else { return false };
        let Some(f) = st.files.get_mut(&ino) else { return false };
        if byte_offset >= f.content.len() {
            return false;
        }
        let mask = 1u8 << (bit % 8);
        f.content[byte_offset] ^= mask;
        if byte_offset < f.durable.len() {
            f.durable[byte_offset] ^= mask;
        }
        true
    }

    /// Successful file fsyncs so far.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Directory fsyncs so far.
    pub fn dir_syncs(&self) -> u64 {
        self.state.borrow().dir_syncs
    }

    /// Starts or stops recording [`DiskEvent`]s (off by default: the log grows).
    pub fn record_events(&self, on: bool) {
        self.state.borrow_mut().record = on;
    }

    /// Takes the recorded events.
    pub fn take_events(&self) -> Vec<DiskEvent> {
        std::mem::take(&mut self.state.borrow_mut().events)
    }

    /// Does `path` exist in the live name space?
    pub fn exists(&self, path: &str) -> bool {
        self.state.borrow().live.contains_key(path)
    }

    /// Length of a live file, if it exists.
    pub fn len(&self, path: &str) -> Option<usize> {
        let st = self.state.borrow();
        st.live.get(path).and_then(|ino| st.files.get(ino)).map(|f| f.content.len())
    }

    fn crash_keeping(&self, keep_bytes: usize) {
        let mut st = self.state.borrow_mut();
        let torn = st.last_unsynced_append.take();
        st.live = st.durable.clone();
        let referenced: std::collections::BTreeSet<Inode> = st.durable.values().copied().collect();
        st.files.retain(|ino, _| referenced.contains(ino));
        for (ino, f) in st.files.iter_mut() {
            let mut content = f.durable.clone();
            if Some(*ino) == torn && f.content.starts_with(&f.durable) {
                let extra = &f.content[f.durable.len()..];
                content.extend_from_slice(&extra[..keep_bytes.min(extra.len())]);
            }
            f.content = content;
            // The torn bytes are on the platter now; a second crash keeps them.
            f.durable = f.content.clone();
        }
        st.fail_sync_in = 0;
        st.fail_dir_sync_in = 0;
    }
}

/// Ticks an injected-failure countdown; true when the failure is due now.
fn countdown(n: &mut u64) -> bool {
    match *n {
        0 => false,
        1 => {
            *n = 0;
            true
        }
        _ => {
            *n -= 1;
            false
        }
    }
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

fn err(op: &'static str, path: &str, detail: &str) -> DiskError {
    DiskError { op, path: path.to_string(), detail: detail.to_string() }
}

impl std::fmt::Debug for State {
    /// A summary: file contents would drown any log they are printed in.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bytes: usize = self.files.values().map(|d| d.content.len()).sum();
        f.debug_struct("MemDisk")
            .field("files", &self.live.keys().collect::<Vec<_>>())
            .field("bytes", &bytes)
            .field("syncs", &self.syncs)
            .field("dir_syncs", &self.dir_syncs)
            .finish_non_exhaustive()
    }
}

impl State {
    fn event(&mut self, e: DiskEvent) {
        if self.record {
            self.events.push(e);
        }
    }

    fn file_mut(&mut self, path: &str) -> Option<&mut FileData> {
        let ino = *self.live.get(path)?;
        self.files.get_mut(&ino)
    }

    fn create(&mut self, path: &str) -> Inode {
        if let Some(&ino) = self.live.get(path) {
            return ino;
        }
        self.next_inode += 1;
        let ino = self.next_inode;
        self.files.insert(ino, FileData::default());
        self.live.insert(path.to_string(), ino);
        ino
    }
}

impl Disk for MemDisk {
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let st = self.state.borrow();
        // BTreeMap keys are sorted, so the names come out sorted.
        Ok(st
            .live
            .keys()
            .filter(|p| parent(p) == dir)
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect())
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        let st = self.state.borrow();
        st.live
            .get(path)
            .and_then(|ino| st.files.get(ino))
            .map(|f| f.content.clone())
            .ok_or_else(|| err("read", path, "no such file"))
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        let ino = st.create(path);
        if let Some(f) = st.files.get_mut(&ino) {
            f.content.extend_from_slice(bytes);
        }
        st.last_unsynced_append = Some(ino);
        st.event(DiskEvent::Append { path: path.to_string(), len: bytes.len() });
        Ok(())
    }

    fn write(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        let ino = st.create(path);
        if let Some(f) = st.files.get_mut(&ino) {
            f.content = bytes.to_vec();
        }
        st.event(DiskEvent::Write { path: path.to_string(), len: bytes.len() });
        Ok(())
    }

    fn sync(&mut self, path: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        if countdown(&mut st.fail_sync_in) {
            st.event(DiskEvent::SyncFailed { path: path.to_string() });
            return Err(err("sync", path, "injected fsync failure (EIO)"));
        }
        let ino = *st.live.get(path).ok_or_else(|| err("sync", path, "no such file"))?;
        if let Some(f) = st.files.get_mut(&ino) {
            f.durable = f.content.clone();
        }
        if st.last_unsynced_append == Some(ino) {
            st.last_unsynced_append = None;
        }
        st.syncs += 1;
        st.event(DiskEvent::Sync { path: path.to_string() });
        Ok(())
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        let f = st.file_mut(path).ok_or_else(|| err("truncate", path, "no such file"))?;
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        // Like ftruncate(2): cuts, or extends with zeros.
        f.content.resize(len_usize, 0);
        st.event(DiskEvent::Truncate { path: path.to_string(), len });
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        let ino = st.live.remove(from).ok_or_else(|| err("rename", from, "no such file"))?;
        st.live.insert(to.to_string(), ino);
        st.event(DiskEvent::Rename { from: from.to_string(), to: to.to_string() });
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        st.live.remove(path).ok_or_else(|| err("remove", path, "no such file"))?;
        st.event(DiskEvent::Remove { path: path.to_string() });
        Ok(())
    }

    fn sync_dir(&mut self, dir: &str) -> Result<(), DiskError> {
        let mut st = self.state.borrow_mut();
        let st = &mut *st;
        if countdown(&mut st.fail_dir_sync_in) {
            st.event(DiskEvent::SyncDirFailed { dir: dir.to_string() });
            return Err(err("sync_dir", dir, "injected fsync failure (EIO)"));
        }
        st.durable.retain(|p, _| parent(p) != dir);
        for (p, ino) in st.live.iter().filter(|(p, _)| parent(p) == dir) {
            st.durable.insert(p.clone(), *ino);
        }
        // An inode whose content was synced keeps it; one that was never synced has an empty
        // durable content, which is what a crash would leave.
        st.dir_syncs += 1;
        st.event(DiskEvent::SyncDir { dir: dir.to_string() });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_append_is_lost_on_crash() {
        let mut d = MemDisk::new();
        d.append("wal/a", b"hello").unwrap();
        d.sync("wal/a").unwrap();
        d.sync_dir("wal").unwrap();
        d.append("wal/a", b" world").unwrap();
        assert_eq!(d.read("wal/a").unwrap(), b"hello world");
        d.crash();
        assert_eq!(d.read("wal/a").unwrap(), b"hello");
    }

    #[test]
    fn new_file_without_dir_sync_disappears_on_crash() {
        let mut d = MemDisk::new();
        d.append("wal/a", b"x").unwrap();
        d.sync("wal/a").unwrap();
        d.crash();
        assert!(!d.exists("wal/a"));
        assert_eq!(d.list("wal").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn rename_and_remove_are_durable_only_after_sync_dir() {
        let mut d = MemDisk::new();
        d.write("snap/t", b"new").unwrap();
        d.sync("snap/t").unwrap();
        d.write("snap/old", b"old").unwrap();
        d.sync("snap/old").unwrap();
        d.sync_dir("snap").unwrap();
        d.rename("snap/t", "snap/s").unwrap();
        d.remove("snap/old").unwrap();
        d.crash();
        assert_eq!(d.list("snap").unwrap(), vec!["old".to_string(), "t".to_string()]);
        d.rename("snap/t", "snap/s").unwrap();
        d.sync_dir("snap").unwrap();
        d.crash();
        assert_eq!(d.read("snap/s").unwrap(), b"new");
    }

    #[test]
    fn torn_crash_keeps_a_prefix_of_the_last_append() {
        let mut d = MemDisk::new();
        d.append("f", b"abc").unwrap();
        d.sync("f").unwrap();
        d.sync_dir("").unwrap();
        d.append("f", b"defgh").unwrap();
        assert_eq!(d.last_unsynced_len(), 5);
        d.crash_torn_at(2);
        assert_eq!(d.read("f").unwrap(), b"abcde");
        let mut rng = DetRng::new(3);
        d.append("f", b"xyz").unwrap();
        d.crash_torn(&mut rng);
        let got = d.read("f").unwrap();
        assert!(got.len() >= 5 && b"abcdexyz".starts_with(&got));
    }

    #[test]
    fn failed_sync_leaves_data_unsynced_and_is_counted_apart() {
        let mut d = MemDisk::new();
        d.record_events(true);
        d.append("f", b"abc").unwrap();
        d.fail_next_sync();
        assert!(d.sync("f").is_err());
        assert_eq!(d.syncs(), 0);
        d.sync("f").unwrap();
        assert_eq!(d.syncs(), 1);
        assert_eq!(
            d.take_events(),
            vec![
                DiskEvent::Append { path: "f".into(), len: 3 },
                DiskEvent::SyncFailed { path: "f".into() },
                DiskEvent::Sync { path: "f".into() },
            ]
        );
    }

    #[test]
    fn flip_bit_changes_durable_content() {
        let mut d = MemDisk::new();
        d.append("f", &[0u8; 4]).unwrap();
        d.sync("f").unwrap();
        d.sync_dir("").unwrap();
        assert!(d.flip_bit("f", 2, 1));
        d.crash();
        assert_eq!(d.read("f").unwrap(), vec![0, 0, 2, 0]);
        assert!(!d.flip_bit("f", 9, 0));
    }
}

//! [`Disk`] over real files: the shell's storage under one root directory.
//!
//! - `sync` is `fdatasync` (`File::sync_data`): it flushes the data and the file size, which
//!   is all an append-only segment or a freshly written snapshot needs.
//! - `sync_dir` opens the directory and `fsync`s it (`File::sync_all`), which makes creates,
//!   renames and removals in it durable (Linux semantics).
//! - Append handles are cached (one open file per segment being written), so the hot path is
//!   one `write` and one `fdatasync` per driver-loop iteration.
//! - A directory created on the way (`append`/`write` into a missing `wal/`) is made durable at
//!   once by fsyncing its parent, so callers only ever need `sync_dir` on the directories they
//!   name.
//!
//! Blocking I/O: call it from the node's own thread (or `spawn_blocking`), never from an async
//! task that shares a runtime thread with the network.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use decree_raft::disk::{Disk, DiskError};

/// File-backed [`Disk`] rooted at a directory.
#[derive(Debug)]
pub struct FsDisk {
    root: PathBuf,
    /// Open append handles by relative path. Invalidated by rename, remove and write.
    appenders: HashMap<String, File>,
}

impl FsDisk {
    /// A disk rooted at `root`, created (and made durable) if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsDisk, DiskError> {
        let root = root.into();
        let mut disk = FsDisk { root, appenders: HashMap::new() };
        let root = disk.root.clone();
        disk.ensure_dir(&root, "open")?;
        Ok(disk)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn full(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }

    /// Creates `dir` and any missing parents, fsyncing each parent that gained an entry.
    fn ensure_dir(&mut self, dir: &Path, op: &'static str) -> Result<(), DiskError> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            self.ensure_dir(parent, op)?;
        }
        let path = dir.display().to_string();
        match fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(op, &path, e)),
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent).map_err(|e| io_err(op, &parent.display().to_string(), e))?;
        }
        Ok(())
    }

    fn ensure_parent(&mut self, path: &str, op: &'static str) -> Result<(), DiskError> {
        let full = self.full(path);
        match full.parent() {
            Some(parent) => {
                let parent = parent.to_path_buf();
                self.ensure_dir(&parent, op)
            }
            None => Ok(()),
        }
    }
}

fn io_err(op: &'static str, path: &str, e: std::io::Error) -> DiskError {
    DiskError { op, path: path.to_string(), detail: e.to_string() }
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Disk for FsDisk {
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        let rd = match fs::read_dir(self.full(dir)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", dir, e)),
        };
        let mut names = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| io_err("list", dir, e))?;
            let is_file = entry.file_type().map_err(|e| io_err("list", dir, e))?.is_file();
            if is_file {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        fs::read(self.full(path)).map_err(|e| io_err("read", path, e))
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        if !self.appenders.contains_key(path) {
            self.ensure_parent(path, "append")?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.full(path))
                .map_err(|e| io_err("append", path, e))?;
            self.appenders.insert(path.to_string(), file);
        }
        // Invariant: inserted just above when missing.
        let file = self.appenders.get_mut(path).expect("append handle cached");
        file.write_all(bytes).map_err(|e| io_err("append", path, e))
    }

    fn write(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.appenders.remove(path);
        self.ensure_parent(path, "write")?;
        fs::write(self.full(path), bytes).map_err(|e| io_err("write", path, e))
    }

    fn sync(&mut self, path: &str) -> Result<(), DiskError> {
        let result = match self.appenders.get(path) {
            Some(file) => file.sync_data(),
            None => File::open(self.full(path)).and_then(|f| f.sync_data()),
        };
        result.map_err(|e| io_err("sync", path, e))
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<(), DiskError> {
        let result = match self.appenders.get(path) {
            Some(file) => file.set_len(len),
            None => {
                OpenOptions::new().write(true).open(self.full(path)).and_then(|f| f.set_len(len))
            }
        };
        result.map_err(|e| io_err("truncate", path, e))
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.appenders.remove(from);
        self.appenders.remove(to);
        self.ensure_parent(to, "rename")?;
        fs::rename(self.full(from), self.full(to)).map_err(|e| io_err("rename", from, e))
    }

    fn remove(&mut self, path: &str) -> Result<(), DiskError> {
        self.appenders.remove(path);
        fs::remove_file(self.full(path)).map_err(|e| io_err("remove", path, e))
    }

    fn sync_dir(&mut self, dir: &str) -> Result<(), DiskError> {
        let full = self.full(dir);
        match fsync_dir(&full) {
            Ok(()) => Ok(()),
            // Nothing was ever created in it, so there is nothing to make durable.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("sync_dir", dir, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use decree_raft::msg::{Entry, EntryPayload, HardState, SnapshotMeta};
    use decree_raft::wal::{Wal, WalConfig};
    use decree_types::{GroupId, LogIndex, NodeId, Term};

    /// A unique temporary directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("decree-fsdisk-{tag}-{}-{nanos}", std::process::id()));
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn disk_operations_on_real_files() {
        let tmp = TempDir::new("ops");
        let mut d = FsDisk::open(&tmp.0).unwrap();
        assert_eq!(d.list("wal").unwrap(), Vec::<String>::new());
        d.append("wal/b.log", b"hello").unwrap();
        d.append("wal/b.log", b" world").unwrap();
        d.sync("wal/b.log").unwrap();
        d.sync_dir("wal").unwrap();
        d.write("wal/a.tmp", b"x").unwrap();
        d.sync("wal/a.tmp").unwrap();
        d.rename("wal/a.tmp", "wal/a.log").unwrap();
        assert_eq!(d.list("wal").unwrap(), vec!["a.log".to_string(), "b.log".to_string()]);
        d.truncate("wal/b.log", 5).unwrap();
        d.append("wal/b.log", b"!").unwrap();
        assert_eq!(d.read("wal/b.log").unwrap(), b"hello!");
        d.remove("wal/a.log").unwrap();
        d.sync_dir("wal").unwrap();
        assert_eq!(d.list("wal").unwrap(), vec!["b.log".to_string()]);
        assert!(d.read("wal/a.log").is_err());
    }

    #[test]
    fn wal_round_trip_on_real_files() {
        let tmp = TempDir::new("wal");
        let g = GroupId(7);
        let entries: Vec<Entry> = (1..=20)
            .map(|i| Entry {
                term: Term(1),
                index: LogIndex(i),
                payload: EntryPayload::Command(vec![i as u8; 100]),
            })
            .collect();
        let hs = HardState { term: Term(1), vote: Some(NodeId(2)), commit: LogIndex(3) };
        {
            let disk = FsDisk::open(&tmp.0).unwrap();
            let (mut wal, rec) = Wal::open(disk, WalConfig { segment_bytes: 1024 }).unwrap();
            assert!(rec.groups.is_empty());
            // One record per entry, so the 1 KiB segments roll over several times.
            for e in &entries {
                wal.append(g, std::slice::from_ref(e)).unwrap();
            }
            wal.set_hard_state(g, hs).unwrap();
            wal.sync().unwrap();
            assert!(wal.stats().segments >= 2);
            let meta =
                SnapshotMeta { last_index: LogIndex(10), last_term: Term(1), voters: vec![] };
            wal.save_snapshot(g, meta, b"state").unwrap();
            assert!(wal.compact().unwrap() >= 1);
        }
        let disk = FsDisk::open(&tmp.0).unwrap();
        let (_wal, rec) = Wal::open(disk, WalConfig { segment_bytes: 1024 }).unwrap();
        let state = &rec.groups[&g];
        assert_eq!(state.hard_state, hs);
        assert_eq!(
            state.snapshot.as_ref().map(|(m, d)| (m.last_index, d.clone())),
            Some((LogIndex(10), b"state".to_vec()))
        );
        assert_eq!(state.entries, entries[10..].to_vec());
    }
}

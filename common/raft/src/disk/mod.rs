//! The storage seam: every byte the replicated log reads or writes goes through [`Disk`].
//!
//! The shell implements it with real files (`decree-runtime`), the simulator with an
//! in-memory disk that loses unsynced writes on a crash and can tear the last write.
//! Paths are relative to the disk's root and use `/` as separator.

/// A storage error. Any error from `sync` is fatal for the replica: after a failed fsync
/// the state of the file is unknown, so the replica must stop rather than carry on.
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {detail}")]
pub struct DiskError {
    /// The operation that failed ("append", "sync", ...).
    pub op: &'static str,
    /// The file or directory.
    pub path: String,
    /// What went wrong.
    pub detail: String,
}

/// A minimal file-system interface, just enough for segmented logs and snapshots.
pub trait Disk {
    /// Names (not paths) of the files in directory `dir`, sorted. A missing dir is empty.
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError>;
    /// The whole content of a file.
    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError>;
    /// Appends bytes to a file, creating it (and its directory) if missing. Not durable until
    /// [`Disk::sync`].
    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// Replaces a file's whole content (not durable until synced).
    fn write(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError>;
    /// fsync: makes the file's content durable.
    fn sync(&mut self, path: &str) -> Result<(), DiskError>;
    /// Cuts a file to `len` bytes.
    fn truncate(&mut self, path: &str, len: u64) -> Result<(), DiskError>;
    /// Atomically renames a file (durable after [`Disk::sync_dir`]).
    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError>;
    /// Removes a file (durable after [`Disk::sync_dir`]).
    fn remove(&mut self, path: &str) -> Result<(), DiskError>;
    /// fsync a directory, making renames, creations and removals in it durable.
    fn sync_dir(&mut self, dir: &str) -> Result<(), DiskError>;
}

mod mem;

pub use mem::{DiskEvent, MemDisk};

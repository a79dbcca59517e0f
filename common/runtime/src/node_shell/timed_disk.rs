//! A [`Disk`] wrapper that counts and times fsyncs, so the benchmark can say where the time
//! goes (fsync versus everything else) without touching the WAL.

use std::time::Instant;

use decree_raft::{Disk, DiskError};

/// Time and count of the syncs that went through a [`TimedDisk`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncTimes {
    /// File fsyncs.
    pub file_syncs: u64,
    /// Directory fsyncs.
    pub dir_syncs: u64,
    /// Wall time inside both kinds, in microseconds.
    pub sync_us: u64,
}

/// Wraps a disk, timing `sync` and `sync_dir`; every other call passes straight through.
#[derive(Debug)]
pub struct TimedDisk<D> {
    inner: D,
    times: SyncTimes,
    /// Fault injection for process tests: file fsyncs after this many fail.
    fail_syncs_after: Option<u64>,
}

impl<D> TimedDisk<D> {
    /// Wraps `inner`.
    pub fn new(inner: D) -> Self {
        TimedDisk { inner, times: SyncTimes::default(), fail_syncs_after: None }
    }

    /// Makes every file fsync after the first `n` fail, as a dying disk would (for the test
    /// that a failed fsync stops the process).
    #[must_use]
    pub fn failing_syncs_after(mut self, n: u64) -> Self {
        self.fail_syncs_after = Some(n);
        self
    }

    /// The counters so far.
    pub fn times(&self) -> SyncTimes {
        self.times
    }
}

impl<D: Disk> Disk for TimedDisk<D> {
    fn list(&self, dir: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list(dir)
    }

    fn read(&self, path: &str) -> Result<Vec<u8>, DiskError> {
        self.inner.read(path)
    }

    fn append(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.inner.append(path, bytes)
    }

    fn write(&mut self, path: &str, bytes: &[u8]) -> Result<(), DiskError> {
        self.inner.write(path, bytes)
    }

    fn sync(&mut self, path: &str) -> Result<(), DiskError> {
        if self.fail_syncs_after.is_some_and(|n| self.times.file_syncs >= n) {
            return Err(DiskError {
                op: "sync",
                path: path.to_string(),
                detail: "injected fsync failure (--fail-fsync-after)".to_string(),
            });
        }
        let started = Instant::now();
        let result = self.inner.sync(path);
        self.times.file_syncs += 1;
        self.times.sync_us += started.elapsed().as_micros() as u64;
        result
    }

    fn truncate(&mut self, path: &str, len: u64) -> Result<(), DiskError> {
        self.inner.truncate(path, len)
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }

    fn remove(&mut self, path: &str) -> Result<(), DiskError> {
        self.inner.remove(path)
    }

    fn sync_dir(&mut self, dir: &str) -> Result<(), DiskError> {
        let started = Instant::now();
        let result = self.inner.sync_dir(dir);
        self.times.dir_syncs += 1;
        self.times.sync_us += started.elapsed().as_micros() as u64;
        result
    }
}

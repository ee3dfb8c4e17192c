//! A [`FileSystem`] wrapper that fails on purpose, for tests: the Nth write or
//! sync from now fails, or the disk is "full" (anything that needs new space
//! fails with ENOSPC while writes into space the file already has succeed,
//! as on a real disk with preallocated files), or large writes are slow.

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::fs::{FileSystem, ReadFile, WriteFile};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

#[derive(Debug, Default)]
struct FaultState {
    writes_before_failure: Option<u64>,
    syncs_before_failure: Option<u64>,
    disk_full: bool,
    /// Writes of at least `.0` bytes sleep `.1` first.
    slow_writes: Option<(usize, Duration)>,
    /// The next write of at least this many bytes fails (torn), once.
    fail_write_of: Option<usize>,
    writes: u64,
    syncs: u64,
}

/// Which operations fail. Cloning shares the plan, so a test keeps one handle
/// and the file system another.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan(Arc<Mutex<FaultState>>);

impl FaultPlan {
    fn state(&self) -> MutexGuard<'_, FaultState> {
        // A test that panicked while holding the lock leaves a plan that is
        // still meaningful; keep using it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The write after the next `writes` succeed fails with EIO, once, after
    /// writing the first half of its buffer (a torn write).
    pub fn fail_write_after(&self, writes: u64) {
        self.state().writes_before_failure = Some(writes);
    }

    /// The sync after the next `syncs` succeed fails with EIO, once.
    pub fn fail_sync_after(&self, syncs: u64) {
        self.state().syncs_before_failure = Some(syncs);
    }

    /// While full, creating files, extending them and writing past their
    /// end fail with ENOSPC.
    pub fn set_disk_full(&self, full: bool) {
        self.state().disk_full = full;
    }

    /// Every write of at least `min_bytes` sleeps `delay` before it is made:
    /// a disk slow for bulk writes (a segment's zero fill) while small ones
    /// (a group of records) stay fast.
    pub fn delay_writes_of(&self, min_bytes: usize, delay: Duration) {
        self.state().slow_writes = Some((min_bytes, delay));
    }

    /// The next write of at least `min_bytes` fails with EIO after writing
    /// half its buffer, once: aims a fault at a segment's zero fill (its
    /// writes are large) rather than at a group of records.
    pub fn fail_next_write_of(&self, min_bytes: usize) {
        self.state().fail_write_of = Some(min_bytes);
    }

    /// Writes and syncs seen so far.
    #[must_use]
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state();
        (state.writes, state.syncs)
    }

    fn before_write(&self, extends: bool, bytes: usize) -> io::Result<bool> {
        let delay = self
            .state()
            .slow_writes
            .and_then(|(min_bytes, delay)| (bytes >= min_bytes).then_some(delay));
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let mut state = self.state();
        state.writes += 1;
        if state.disk_full && extends {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        if state
            .fail_write_of
            .is_some_and(|min_bytes| bytes >= min_bytes)
        {
            state.fail_write_of = None;
            return Ok(true);
        }
        Ok(countdown(&mut state.writes_before_failure))
    }

    fn before_sync(&self) -> io::Result<()> {
        let mut state = self.state();
        state.syncs += 1;
        if countdown(&mut state.syncs_before_failure) {
            return Err(io::Error::from_raw_os_error(EIO));
        }
        Ok(())
    }

    fn before_allocation(&self) -> io::Result<()> {
        if self.state().disk_full {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        Ok(())
    }
}

/// True when this operation is the one that must fail.
fn countdown(remaining: &mut Option<u64>) -> bool {
    match remaining {
        Some(0) => {
            *remaining = None;
            true
        }
        Some(count) => {
            *count -= 1;
            false
        }
        None => false,
    }
}

/// Wraps a file system and applies a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyFileSystem<F> {
    inner: F,
    plan: FaultPlan,
}

impl<F: FileSystem> FaultyFileSystem<F> {
    /// Wraps `inner`; the plan starts with no faults.
    pub fn new(inner: F, plan: FaultPlan) -> Self {
        FaultyFileSystem { inner, plan }
    }
}

struct FaultyFile {
    inner: Box<dyn WriteFile>,
    plan: FaultPlan,
}

struct FaultyReadFile(Box<dyn ReadFile>);

impl ReadFile for FaultyReadFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buffer, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
}

impl ReadFile for FaultyFile {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buffer, offset)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
}

impl WriteFile for FaultyFile {
    fn write_all_at(&mut self, buffer: &[u8], offset: u64) -> io::Result<()> {
        let extends = offset + buffer.len() as u64 > self.inner.len()?;
        if self.plan.before_write(extends, buffer.len())? {
            let half = buffer.len() / 2;
            self.inner.write_all_at(&buffer[..half], offset)?;
            return Err(io::Error::from_raw_os_error(EIO));
        }
        self.inner.write_all_at(buffer, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.plan.before_sync()?;
        self.inner.sync_data()
    }

    fn sync_all(&mut self) -> io::Result<()> {
        self.plan.before_sync()?;
        self.inner.sync_all()
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        if length > self.inner.len()? {
            self.plan.before_allocation()?;
        }
        self.inner.set_len(length)
    }
}

impl<F: FileSystem> FileSystem for FaultyFileSystem<F> {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.inner.create_dir_all(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(FaultyReadFile(self.inner.open_read(path)?)))
    }

    fn open_write(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(FaultyFile {
            inner: self.inner.open_write(path)?,
            plan: self.plan.clone(),
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WriteFile>> {
        self.plan.before_allocation()?;
        Ok(Box::new(FaultyFile {
            inner: self.inner.create(path)?,
            plan: self.plan.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.plan.before_sync()?;
        self.inner.sync_dir(path)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn lock_exclusive(&self, path: &Path) -> io::Result<Box<dyn std::any::Any + Send + Sync>> {
        self.inner.lock_exclusive(path)
    }
}

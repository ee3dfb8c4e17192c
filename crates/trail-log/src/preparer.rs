//! Prepares the next segment file ahead of time, on its own thread, so that
//! rolling to a new segment costs the writer a header write and a rename
//! instead of writing and syncing a whole segment of zeros while appends
//! wait (in `Sync` mode that zero fill is what makes later fdatasyncs cheap).

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::error::{LogError, Result};
use crate::fs::WriteFile;
use crate::shared::Shared;

/// Name of the spare segment in the `wal` directory. It ends in `.tmp`, so
/// recovery deletes one a crash left behind: it holds only zeros.
pub(crate) const SPARE_FILE_NAME: &str = "spare.seg.tmp";

/// A zero-filled, synced file of `capacity` bytes at `path`.
pub(crate) fn zero_filled(
    shared: &Shared,
    path: &std::path::Path,
    capacity: u64,
) -> Result<Box<dyn WriteFile>> {
    let mut file = shared
        .fs
        .create(path)
        .map_err(|error| LogError::io("creating", path, error))?;
    crate::fs::write_zeros(file.as_mut(), 0, capacity)
        .and_then(|()| file.sync_all())
        .map_err(|error| LogError::io("preallocating", path, error))?;
    Ok(file)
}

/// The background preparer of one log.
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    /// A ready spare, zero-filled and synced, at [`Preparer::path`].
    ready: Arc<Mutex<Option<Box<dyn WriteFile>>>>,
    /// Asks the thread for another spare; dropping it stops the thread.
    requests: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
}

impl Preparer {
    /// Starts the thread, which prepares the first spare right away.
    pub fn start(shared: Arc<Shared>, capacity: u64) -> Preparer {
        let path = shared.wal_dir.join(SPARE_FILE_NAME);
        let ready: Arc<Mutex<Option<Box<dyn WriteFile>>>> = Arc::default();
        let (requests, receiver) = mpsc::channel::<()>();
        let slot = Arc::clone(&ready);
        let spare_path = path.clone();
        let owner = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("trail-prep-{}", shared.name))
            .spawn(move || {
                loop {
                    match zero_filled(&shared, &spare_path, capacity) {
                        Ok(file) => *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(file),
                        Err(error) => {
                            // The writer falls back to preparing segments itself.
                            tracing::warn!(log = %shared.name, %error, "could not prepare a spare segment");
                            let _ = shared.fs.remove_file(&spare_path);
                        }
                    }
                    if receiver.recv().is_err() {
                        return;
                    }
                }
            })
            .ok();
        Preparer {
            shared: owner,
            ready,
            requests: Some(requests),
            thread,
            path,
        }
    }

    /// The ready spare and its path, if one is ready.
    pub fn take(&self) -> Option<(Box<dyn WriteFile>, PathBuf)> {
        let spare = self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        Some((spare, self.path.clone()))
    }

    /// Asks for the next spare (after one was taken).
    pub fn request(&self) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(());
        }
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // An unused spare is only zeros: leave no stray file behind.
        if self
            .ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .is_some()
        {
            let _ = self.shared.fs.remove_file(&self.path);
        }
    }
}

//! Prepares the next segment file ahead of time, on its own thread, so that
//! rolling to a new segment costs the writer a header write and a rename
//! instead of writing and syncing a whole segment of zeros while appends
//! wait (in `Sync` mode that zero fill is what makes later fdatasyncs cheap).
//! A roll that comes while the next spare is still being filled waits for
//! it rather than filling a second file beside it: two fills at once share
//! the disk, so the writer's own fill would take longer than the rest of
//! the one already under way (DECISIONS.md #43).

use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{LogError, Result};
use crate::fs::WriteFile;
use crate::shared::Shared;

/// Name of the spare segment in the `wal` directory. It ends in `.tmp`, so
/// recovery deletes one a crash left behind: it holds only zeros.
pub(crate) const SPARE_FILE_NAME: &str = "spare.seg.tmp";

/// How many bytes of zeros [`zero_filled`] writes between two fdatasyncs.
/// Syncing a whole segment of zeros at once sends all of it to the disk in
/// one burst, and the writer's fdatasyncs of acknowledged appends then wait
/// behind it (the profile of the 64 x 100 load: its slowest fdatasyncs,
/// 30-40 ms, fell on the spare's one fsync; docs/BENCHMARKS.md). In steps
/// of this size the writer waits behind one step at most: the size of one
/// default group commit (`group_bytes_max`).
const ZERO_FILL_SYNC_BYTES: u64 = 4 << 20;

/// A zero-filled, synced file of `capacity` bytes at `path`, synced in steps
/// of [`ZERO_FILL_SYNC_BYTES`].
pub(crate) fn zero_filled(
    shared: &Shared,
    path: &std::path::Path,
    capacity: u64,
) -> Result<Box<dyn WriteFile>> {
    let mut file = shared
        .fs
        .create(path)
        .map_err(|error| LogError::io("creating", path, error))?;
    let mut written = 0;
    while written < capacity {
        let step_end = capacity.min(written + ZERO_FILL_SYNC_BYTES);
        crate::fs::write_zeros(file.as_mut(), written, step_end)
            .and_then(|()| file.sync_data())
            .map_err(|error| LogError::io("preallocating", path, error))?;
        written = step_end;
    }
    file.sync_all()
        .map_err(|error| LogError::io("preallocating", path, error))?;
    Ok(file)
}

/// Drops the cached pages of a sealed segment (a hint; failure only
/// logged) and counts it.
pub(crate) fn drop_cached(shared: &Shared, path: &std::path::Path) {
    match shared.fs.drop_cache(path) {
        Ok(()) => {
            shared
                .counters
                .segments_uncached
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Err(error) => {
            tracing::debug!(log = %shared.name, path = %path.display(), %error, "could not drop a sealed segment's cached pages");
        }
    }
}

/// What the preparer's thread and the writer share.
struct Slot {
    /// A ready spare, zero-filled and synced, at [`Preparer::path`].
    spare: Option<Box<dyn WriteFile>>,
    /// Set from the moment a spare is asked for until the thread has made it
    /// (or failed to): a roll in that time waits for it.
    filling: bool,
    /// Sealed segments whose cached pages the thread drops before its next
    /// fill: the pages it frees are then the ones the fill (and the
    /// writer after it) reuses, instead of new memory (DECISIONS.md #48).
    uncache: Vec<PathBuf>,
}

/// The background preparer of one log.
pub(crate) struct Preparer {
    shared: Arc<Shared>,
    slot: Arc<(Mutex<Slot>, Condvar)>,
    /// Asks the thread for another spare; dropping it stops the thread.
    requests: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    path: PathBuf,
    /// How long a roll waits for a spare being filled
    /// (`LogOptions::spare_wait`).
    wait: Duration,
}

impl Preparer {
    /// Starts the thread, which prepares the first spare right away.
    pub fn start(shared: Arc<Shared>, capacity: u64, wait: Duration) -> Preparer {
        let path = shared.wal_dir.join(SPARE_FILE_NAME);
        let slot: Arc<(Mutex<Slot>, Condvar)> = Arc::new((
            Mutex::new(Slot {
                spare: None,
                filling: true,
                uncache: Vec::new(),
            }),
            Condvar::new(),
        ));
        let (requests, receiver) = mpsc::channel::<()>();
        let shared_slot = Arc::clone(&slot);
        let spare_path = path.clone();
        let owner = Arc::clone(&shared);
        // Unit tests stand in for a thread the system would not start.
        #[cfg(test)]
        let refused = tests::REFUSE_NEXT_SPAWN.replace(false);
        #[cfg(not(test))]
        let refused = false;
        let thread = if refused {
            None
        } else {
            std::thread::Builder::new()
            .name(format!("trail-prep-{}", shared.name))
            .spawn(move || {
                let (lock, filled) = &*shared_slot;
                loop {
                    let uncache = std::mem::take(
                        &mut lock.lock().unwrap_or_else(PoisonError::into_inner).uncache,
                    );
                    for path in &uncache {
                        drop_cached(&shared, path);
                    }
                    let spare = match zero_filled(&shared, &spare_path, capacity) {
                        Ok(file) => Some(file),
                        Err(error) => {
                            // The writer falls back to preparing segments itself.
                            tracing::warn!(log = %shared.name, %error, "could not prepare a spare segment");
                            let _ = shared.fs.remove_file(&spare_path);
                            None
                        }
                    };
                    {
                        let mut slot = lock.lock().unwrap_or_else(PoisonError::into_inner);
                        slot.spare = spare;
                        slot.filling = false;
                    }
                    filled.notify_all();
                    if receiver.recv().is_err() {
                        return;
                    }
                    debug_assert!(
                        lock.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .spare
                            .is_none(),
                        "a spare is asked for only once the last one was taken"
                    );
                }
            })
            .ok()
        };
        let preparer = Preparer {
            shared: owner,
            slot,
            requests: Some(requests),
            thread,
            path,
            wait,
        };
        if preparer.thread.is_none() {
            preparer.set_filling(false);
        }
        preparer
    }

    fn set_filling(&self, filling: bool) {
        self.slot
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .filling = filling;
    }

    /// The ready spare and its path: waits for one being filled (see
    /// `wait`); `None` when the thread has none and is not making
    /// one (it failed, or is gone).
    pub fn take(&self) -> Option<(Box<dyn WriteFile>, PathBuf)> {
        let (lock, filled) = &*self.slot;
        let slot = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut slot, _) = filled
            .wait_timeout_while(slot, self.wait, |slot| slot.spare.is_none() && slot.filling)
            .unwrap_or_else(PoisonError::into_inner);
        let spare = slot.spare.take()?;
        Some((spare, self.path.clone()))
    }

    /// Has the thread drop a sealed segment's cached pages before its next
    /// fill (the roll that sealed it asks for that fill next); without a
    /// thread (it failed to start) drops them here, so nothing piles up.
    pub fn uncache(&self, path: PathBuf) {
        if self.thread.is_none() {
            drop_cached(&self.shared, &path);
            return;
        }
        self.slot
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .uncache
            .push(path);
    }

    /// Asks for the next spare, unless one is still being filled or is
    /// ready and not taken: the thread makes each spare by re-creating the
    /// one file at [`Preparer::path`], so a request then would have it
    /// truncate and zero-fill the file a roll takes next, under the
    /// records written into it (a roll that stopped waiting for a slow
    /// fill, then a second roll soon after). The roll that takes the spare
    /// asks again.
    pub fn request(&self) {
        let (Some(requests), Some(_)) = (&self.requests, &self.thread) else {
            return;
        };
        {
            let mut slot = self.slot.0.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.filling || slot.spare.is_some() {
                return;
            }
            // Marked before the thread can see the request: it clears the
            // mark when done, and a mark set after that would never clear.
            slot.filling = true;
        }
        if requests.send(()).is_err() {
            self.set_filling(false);
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
            .slot
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spare
            .take()
            .is_some()
        {
            let _ = self.shared.fs.remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::{EventInput, LogName, LogOptions, Lsn, Store};

    thread_local! {
        /// The next preparer started on this thread gets no thread, as
        /// when the system refuses one (too many threads, no memory).
        pub(super) static REFUSE_NEXT_SPAWN: Cell<bool> = const { Cell::new(false) };
    }

    /// A log whose preparer could not start its thread still rolls: the
    /// writer makes every segment itself, a roll does not wait the spare
    /// wait for a spare nobody makes, sealed segments still leave the
    /// page cache (dropped inline, so no list of them grows), no spare file
    /// is left, and every record reads back, also after a reopen.
    #[test]
    fn a_preparer_without_its_thread_leaves_the_writer_to_make_segments() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let options = LogOptions {
            segment_bytes: 64 * 1024,
            group_bytes_max: 16 * 1024,
            append: crate::AppendLimits {
                event_bytes_max: 4 * 1024,
                ..crate::AppendLimits::default()
            },
            // A roll that waited for a spare would take this long: the
            // whole test must take far less.
            spare_wait: std::time::Duration::from_secs(60),
            cached_sealed_segments: 1,
            ..LogOptions::default()
        };
        let name = LogName::new("audit").expect("a valid name");
        let started = std::time::Instant::now();
        {
            let store = Store::open(directory.path(), options.clone()).expect("the store opens");
            REFUSE_NEXT_SPAWN.set(true);
            let log = store.get_or_create(&name).expect("the log opens");
            assert!(!REFUSE_NEXT_SPAWN.get(), "the log started a preparer");
            for index in 0..1_000 {
                let event = EventInput::new(format!("event-{index}"), vec![b'x'; 200]);
                log.append_blocking(vec![event], false)
                    .expect("the append lands");
            }
            let stats = log.stats();
            assert!(stats.segments_started >= 4, "{stats:?}");
            assert_eq!(
                stats.segments_prepared_inline, stats.segments_started,
                "the writer made every segment: {stats:?}"
            );
            assert_eq!(
                stats.segments_uncached,
                stats.segments_started - 2,
                "every seal but the first dropped the one before: {stats:?}"
            );
            store.close().expect("the store closes");
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "a roll waited for a spare no thread makes"
        );
        let wal = directory.path().join("audit").join("wal");
        assert!(
            !wal.join(super::SPARE_FILE_NAME).exists(),
            "no spare file without a preparer"
        );
        let store = Store::open(directory.path(), options).expect("the store reopens");
        let log = store
            .get(&name)
            .expect("the log reopens")
            .expect("the log exists");
        assert_eq!(log.head().lsn, Lsn(1_000));
        let mut count = 0;
        for (index, stored) in log.read(Lsn(1), Lsn(1_000)).enumerate() {
            let stored = stored.expect("the record reads back");
            assert_eq!(stored.record.lsn, Lsn(index as u64 + 1));
            count += 1;
        }
        assert_eq!(count, 1_000);
        store.close().expect("the store closes");
    }
}

//! A log handle: appends go to the log's writer thread; reads and followers
//! go straight to the segment files, bounded by what the writer has
//! published as durable; the catalog, its notifications and the retention
//! gate are read here.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{broadcast, oneshot, watch};

use crate::append::{prepare, EventInput, PreparedAppend};
use crate::background::BackgroundStatus;
use crate::catalog::{SegmentEvent, SegmentInfo};
use crate::error::{LogError, Result};
use crate::follow::Follower;
use crate::options::LogOptions;
use crate::prefix::ArchivedPrefix;
use crate::read::{ChainReader, RecordIter};
use crate::retention::RetentionHold;
use crate::shared::Shared;
use crate::types::{Head, LogName, Lsn, Receipt, RecordHash};
use crate::verify::{verify_range, VerifyReport};
use crate::writer::Command;

fn closed_or_failed(shared: &Shared) -> LogError {
    match shared.catalog().failed.clone() {
        Some(reason) => LogError::FailStopped {
            log: shared.name.to_string(),
            reason,
        },
        None => LogError::Closed(shared.name.to_string()),
    }
}

/// The receipts of a submitted append; [`PendingReceipts::wait`] resolves
/// once the append is durable (or failed).
#[derive(Debug)]
#[must_use = "an append's outcome is only known by waiting for its receipts"]
pub struct PendingReceipts {
    receipts: oneshot::Receiver<Result<Vec<Receipt>>>,
    shared: Arc<Shared>,
}

impl PendingReceipts {
    /// One receipt per event, in request order, once durable.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub async fn wait(self) -> Result<Vec<Receipt>> {
        match self.receipts.await {
            Ok(outcome) => outcome,
            Err(_) => Err(closed_or_failed(&self.shared)),
        }
    }
}

/// What the writer has done since the log was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Groups written (one write call each).
    pub groups: u64,
    /// Records appended.
    pub records: u64,
    /// Frame bytes written.
    pub bytes: u64,
    /// fdatasync/fsync calls on segments.
    pub syncs: u64,
    /// Segments the writer started (the first one and every roll).
    pub segments_started: u64,
    /// Of those, the ones the writer preallocated on its own thread because
    /// no prepared spare was ready. In `Sync` mode each is a stall of the
    /// appends queued behind it (a whole segment of zeros written and
    /// synced); with `prepare_segments_ahead = false`, and in `Async` mode
    /// (where preallocating is only setting the length), every segment is
    /// made this way.
    pub segments_prepared_inline: u64,
    /// Sealed segments whose cached pages were dropped
    /// (`LogOptions::cached_sealed_segments`).
    pub segments_uncached: u64,
    /// Commands the writer found while polling its queue after a small
    /// group (`LogOptions::writer_spin`) rather than after sleeping.
    pub spin_catches: u64,
}

/// A handle on one log. Cheap to share behind an `Arc`; appends from many
/// tasks or threads are ordered by the log's single writer.
#[derive(Debug)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: LogOptions,
    pub(crate) sender: Mutex<Option<flume::Sender<Command>>>,
    pub(crate) writer: Mutex<Option<JoinHandle<()>>>,
    /// Re-hashes the sealed segments trusted at open.
    pub(crate) verifier: Mutex<Option<JoinHandle<()>>>,
    /// What opening the log cut as a torn tail, if anything.
    pub(crate) torn_tail: Option<crate::segment::TornTail>,
}

impl Drop for Log {
    /// Stops the writer and waits for it to finish what was queued, so a log
    /// reopened in the same process never has two writers. Waits, but never
    /// syncs on this thread.
    fn drop(&mut self) {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        self.shared.background.stop();
        for thread in [&self.writer, &self.verifier] {
            if let Some(handle) = thread.lock().unwrap_or_else(PoisonError::into_inner).take() {
                let _ = handle.join();
            }
        }
    }
}

impl Log {
    /// The log's name.
    #[must_use]
    pub fn name(&self) -> &LogName {
        &self.shared.name
    }

    /// The last durable record.
    #[must_use]
    pub fn head(&self) -> Head {
        *self.shared.head.borrow()
    }

    /// A receiver that changes whenever the durable head moves (the
    /// "records became durable" notification).
    #[must_use]
    pub fn watch_head(&self) -> watch::Receiver<Head> {
        self.shared.head.subscribe()
    }

    /// What the writer has done since the log was opened.
    #[must_use]
    pub fn stats(&self) -> LogStats {
        let counters = &self.shared.counters;
        LogStats {
            groups: counters.groups.load(Ordering::Relaxed),
            records: counters.records.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            syncs: counters.syncs.load(Ordering::Relaxed),
            segments_started: counters.segments_started.load(Ordering::Relaxed),
            segments_prepared_inline: counters.segments_prepared_inline.load(Ordering::Relaxed),
            segments_uncached: counters.segments_uncached.load(Ordering::Relaxed),
            spin_catches: counters.spin_catches.load(Ordering::Relaxed),
        }
    }

    /// Appends waiting in the queue for the writer.
    #[must_use]
    pub fn queue_len(&self) -> usize {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, flume::Sender::len)
    }

    /// The reason the log stopped taking writes, if it did.
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.shared.catalog().failed.clone()
    }

    /// The log's segments, oldest first, as the writer last published them.
    #[must_use]
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.shared
            .catalog()
            .segments
            .iter()
            .map(crate::catalog::SegmentEntry::info)
            .collect()
    }

    /// Notifications of segments created and sealed. A receiver that falls
    /// more than [`crate::catalog::SEGMENT_EVENTS_CAPACITY`] events behind
    /// is told it lagged, and re-reads [`Log::segments`].
    #[must_use]
    pub fn segment_events(&self) -> broadcast::Receiver<SegmentEvent> {
        self.shared.segment_events.subscribe()
    }

    /// Where the local log starts when its earlier records are archived.
    #[must_use]
    pub fn archived_prefix(&self) -> Option<ArchivedPrefix> {
        self.shared.catalog().prefix.clone()
    }

    /// The first LSN on local disk (1 unless a prefix is archived).
    #[must_use]
    pub fn first_local_lsn(&self) -> Lsn {
        self.shared.catalog().first_local_lsn()
    }

    /// Holds the log's sealed segments on local disk until released (see
    /// [`RetentionHold`]). `holder` names the holder in
    /// [`Log::retention_holders`].
    #[must_use]
    pub fn hold_segments(&self, holder: &str) -> RetentionHold {
        RetentionHold {
            id: self.shared.retention.hold(holder),
            gate: Arc::clone(&self.shared.retention),
        }
    }

    /// Every holder and the LSN through which it released.
    #[must_use]
    pub fn retention_holders(&self) -> Vec<(String, Lsn)> {
        self.shared.retention.holders()
    }

    /// Sealed segments every holder has released entirely: the only ones
    /// the engine may delete locally. None while nobody holds the log (the
    /// local disk is then the only copy: whatever archives it holds it).
    #[must_use]
    pub fn removable_segments(&self) -> Vec<SegmentInfo> {
        let Some(released) = self.shared.retention.released_through() else {
            return Vec::new();
        };
        self.shared
            .catalog()
            .segments
            .iter()
            .filter(|entry| entry.sealed && entry.last_lsn <= released)
            .map(crate::catalog::SegmentEntry::info)
            .collect()
    }

    /// Progress of the background re-hashing of sealed segments trusted at
    /// open.
    #[must_use]
    pub fn background_verification(&self) -> BackgroundStatus {
        self.shared.background.status()
    }

    /// The torn tail opening this log cut, if it cut one (also logged as a
    /// warning; the cut bytes are kept beside the segment). Records it cut
    /// were never acknowledged unless a crash hit the last synced group
    /// (FORMAT.md §8).
    #[must_use]
    pub fn torn_tail_cut_at_open(&self) -> Option<&crate::segment::TornTail> {
        self.torn_tail.as_ref()
    }

    /// Damage background verification found in a sealed segment, if any:
    /// reads across it fail; the server takes such a log out of service.
    /// An atomic load when there is none.
    #[must_use]
    pub fn background_damage(&self) -> Option<crate::verify::VerifyFailure> {
        self.shared.background.damage()
    }

    /// Makes the writer check its timers (age-based sealing, interval
    /// syncs) now; for tests that move a [`crate::ManualClock`].
    pub fn run_timers(&self) {
        if let Ok(sender) = self.sender() {
            let _ = sender.send(Command::Tick);
        }
    }

    /// Seals the active segment now if it holds records, after every
    /// append queued before this call; answers once the seal is durable,
    /// with the sealed segment (`None` when the active segment was empty
    /// or there was none). The next append starts a new segment. What
    /// `trail archive now` uses so nothing written waits for the segment
    /// to fill or age before it can be archived.
    ///
    /// # Errors
    /// A closed or fail-stopped log, or a failed seal (which fail-stops it).
    pub async fn seal_active(&self) -> Result<Option<SegmentInfo>> {
        let (reply, sealed) = oneshot::channel();
        self.sender()?
            .send_async(Command::Seal { reply })
            .await
            .map_err(|_| self.closed_or_failed())?;
        sealed.await.map_err(|_| self.closed_or_failed())?
    }

    /// The receipt of the durable event with `event_id`, if the log holds
    /// one, from the writer's lifetime id index (so also for events whose
    /// segments are archived). Queued behind the appends before it.
    ///
    /// # Errors
    /// A closed or fail-stopped log; IO errors reading the index.
    pub async fn find_event_id(&self, event_id: &str) -> Result<Option<Receipt>> {
        let (reply, found) = oneshot::channel();
        self.sender()?
            .send_async(Command::FindEventId {
                event_id: event_id.to_owned(),
                reply,
            })
            .await
            .map_err(|_| self.closed_or_failed())?;
        found.await.map_err(|_| self.closed_or_failed())?
    }

    fn sender(&self) -> Result<flume::Sender<Command>> {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| LogError::Closed(self.shared.name.to_string()))
    }

    fn closed_or_failed(&self) -> LogError {
        closed_or_failed(&self.shared)
    }

    /// Checks, encodes and hashes the head of each event's record: the CPU
    /// work of an append, done on the caller's thread. Nothing is queued.
    ///
    /// # Errors
    /// Invalid or too large requests (see [`crate::AppendLimits::check`]).
    pub fn prepare(&self, events: Vec<EventInput>, atomic: bool) -> Result<PreparedAppend> {
        self.options
            .append
            .check(&events, self.options.group_bytes_max)?;
        prepare(events, atomic)
    }

    /// As [`Log::prepare`], checked against `limits` instead of the log's
    /// own: for appends the server builds itself (a compensation batch),
    /// whose size is bounded by their own setting. The group bound
    /// (`group_bytes_max`) still applies: one append is one group commit.
    ///
    /// # Errors
    /// As [`Log::prepare`].
    pub fn prepare_with_limits(
        &self,
        events: Vec<EventInput>,
        atomic: bool,
        limits: &crate::AppendLimits,
    ) -> Result<PreparedAppend> {
        limits.check(&events, self.options.group_bytes_max)?;
        prepare(events, atomic)
    }

    /// Queues a prepared append for the writer (waiting for queue space) and
    /// returns its pending receipts. Appends submitted one after another by
    /// one caller get LSNs in that order.
    ///
    /// # Errors
    /// A closed or fail-stopped log.
    pub async fn submit(&self, append: PreparedAppend) -> Result<PendingReceipts> {
        let (reply, receipts) = oneshot::channel();
        let PreparedAppend {
            events,
            atomic,
            condition,
        } = append;
        self.sender()?
            .send_async(Command::Append {
                events,
                atomic,
                condition,
                reply,
            })
            .await
            .map_err(|_| self.closed_or_failed())?;
        Ok(PendingReceipts {
            receipts,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Appends events and resolves once they are durable (per the log's
    /// durability mode), with one receipt per event in request order. With
    /// `atomic`, the new events land all-or-nothing at contiguous LSNs.
    /// Waits for queue space when the writer is behind.
    ///
    /// # Errors
    /// Invalid or too large requests, [`LogError::EventIdConflict`], disk
    /// full, a fail-stopped or closed log.
    pub async fn append(&self, events: Vec<EventInput>, atomic: bool) -> Result<Vec<Receipt>> {
        let append = self.prepare(events, atomic)?;
        self.submit(append).await?.wait().await
    }

    /// As [`Log::append`], but refuses with [`LogError::QueueFull`] instead
    /// of waiting for queue space.
    ///
    /// # Errors
    /// As [`Log::append`], plus [`LogError::QueueFull`].
    pub async fn try_append(&self, events: Vec<EventInput>, atomic: bool) -> Result<Vec<Receipt>> {
        let PreparedAppend {
            events,
            atomic,
            condition,
        } = self.prepare(events, atomic)?;
        let (reply, receipts) = oneshot::channel();
        self.sender()?
            .try_send(Command::Append {
                events,
                atomic,
                condition,
                reply,
            })
            .map_err(|error| match error {
                flume::TrySendError::Full(_) => LogError::QueueFull {
                    log: self.shared.name.to_string(),
                    depth: self.options.queue_depth,
                },
                flume::TrySendError::Disconnected(_) => self.closed_or_failed(),
            })?;
        receipts.await.map_err(|_| self.closed_or_failed())?
    }

    /// [`Log::append`] for callers outside an async runtime.
    ///
    /// # Errors
    /// As [`Log::append`].
    pub fn append_blocking(&self, events: Vec<EventInput>, atomic: bool) -> Result<Vec<Receipt>> {
        let PreparedAppend {
            events,
            atomic,
            condition,
        } = self.prepare(events, atomic)?;
        let (reply, receipts) = oneshot::channel();
        self.sender()?
            .send(Command::Append {
                events,
                atomic,
                condition,
                reply,
            })
            .map_err(|_| self.closed_or_failed())?;
        receipts
            .blocking_recv()
            .map_err(|_| self.closed_or_failed())?
    }

    /// Durable records from `from` to `to_inclusive` (clipped to the head),
    /// checked as they are read. Does blocking file IO.
    #[must_use]
    pub fn read(&self, from: Lsn, to_inclusive: Lsn) -> RecordIter {
        // A short range reads a few frames: no 256 KiB read-ahead for it.
        let reader = ChainReader::new(from, None);
        let reader = if to_inclusive.0.saturating_sub(from.0) < 16 {
            reader.for_few_records()
        } else {
            reader
        };
        RecordIter {
            shared: Arc::clone(&self.shared),
            reader,
            to: to_inclusive.min(self.head().lsn),
            failed: false,
        }
    }

    /// A follower from `from` (see [`Follower`]). Every link from the first
    /// record it reads on is checked; the link into `from` itself is checked
    /// when `from` is a segment's first record (against the header) or lies
    /// past the sparse entry its read starts at (the records between are
    /// chained). [`Log::follow_from`] checks it always.
    #[must_use]
    pub fn follow(&self, from: Lsn) -> Follower {
        Follower::new(Arc::clone(&self.shared), from, None)
    }

    /// A follower resuming at `from` from a watermark stored with derived
    /// data: the first record must link to `prev_hash` (the hash of
    /// `from - 1` the follower saw last time), so a log that changed under
    /// the watermark is noticed.
    #[must_use]
    pub fn follow_from(&self, from: Lsn, prev_hash: RecordHash) -> Follower {
        Follower::new(Arc::clone(&self.shared), from, Some(prev_hash))
    }

    /// Checks a range of the log against its own bytes: every CRC, LSN
    /// density, the chain from genesis (or the archived prefix) or from the
    /// segment holding `from`, and every seal. Blocking.
    ///
    /// # Errors
    /// IO errors; damage is reported in [`VerifyReport::failure`].
    pub fn verify(
        &self,
        from: Lsn,
        to_inclusive: Lsn,
        progress: &mut dyn FnMut(Lsn),
    ) -> Result<VerifyReport> {
        let to = to_inclusive.min(self.head().lsn);
        let (segments, prefix) = {
            let catalog = self.shared.catalog();
            (catalog.segments.clone(), catalog.prefix.clone())
        };
        if from.max(Lsn::FIRST) > to {
            let mut report = VerifyReport::empty(from.max(Lsn::FIRST), self.head().hash);
            report.archived_prefix = prefix;
            return Ok(report);
        }
        verify_range(
            self.shared.fs.as_ref(),
            self.shared.genesis,
            &segments,
            prefix.as_ref(),
            from,
            to,
            progress,
        )
    }

    /// Stops taking appends, lets the writer finish what is queued, makes it
    /// durable and waits for the writer to exit. Nothing is sealed. Blocks
    /// (from async code, call it through `spawn_blocking`).
    ///
    /// # Errors
    /// [`LogError::FailStopped`] when the final sync failed.
    pub fn close(&self) -> Result<()> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.shared.background.stop();
        let mut outcome = Ok(());
        if let Some(sender) = sender {
            let (reply, done) = std::sync::mpsc::sync_channel(1);
            if sender.send(Command::Close { reply }).is_ok() {
                outcome = done.recv().unwrap_or(Ok(()));
            }
        }
        if let Some(verifier) = self
            .verifier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = verifier.join();
        }
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            if writer.join().is_err() {
                return Err(LogError::FailStopped {
                    log: self.shared.name.to_string(),
                    reason: "writer thread panicked".into(),
                });
            }
        }
        outcome
    }
}

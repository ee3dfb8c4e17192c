//! A log handle: appends go to the log's writer thread, reads go straight to
//! the segment files, bounded by what the writer has published as durable.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use prost::Message;
use tokio::sync::{oneshot, watch};

use crate::codec::{self, Body, PreparedBody, Record};
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::index::seek_offset;
use crate::options::{LogOptions, RECORD_OVERHEAD_BYTES_MAX};
use crate::proto;
use crate::segment::{scan_segment, FrameCursor, FrameStep, SegmentHeader, SEGMENT_HEADER_BYTES};
use crate::types::{Head, LogName, Lsn, Receipt, RecordHash, RecordKind};
use crate::writer::Command;

/// One event to append: its id and the producer's encoding of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInput {
    /// Unique per log for the log's whole life.
    pub event_id: String,
    /// The `trail.v1.Event` as the producer encoded it, stored byte for byte.
    pub encoded_event: Vec<u8>,
    /// Event or compensation.
    pub kind: RecordKind,
}

impl EventInput {
    /// An event record.
    #[must_use]
    pub fn new(event_id: String, encoded_event: Vec<u8>) -> EventInput {
        EventInput {
            event_id,
            encoded_event,
            kind: RecordKind::Event,
        }
    }

    /// Encodes a protobuf event.
    #[must_use]
    pub fn from_event(event: &proto::Event) -> EventInput {
        EventInput::new(event.event_id.clone(), event.encode_to_vec())
    }

    pub(crate) fn frame_bytes_max(&self) -> usize {
        self.encoded_event.len() + self.event_id.len() + RECORD_OVERHEAD_BYTES_MAX
    }
}

/// An event on its way to the writer: its id, and the head of its record
/// body already encoded and hashed on the appending thread (so the writer,
/// which every append of the log passes through, does as little as it can).
#[derive(Debug)]
pub(crate) struct PreparedEvent {
    pub event_id: String,
    /// `index::event_id_key` of the id.
    pub key: u64,
    pub body: PreparedBody,
}

fn prepare(events: Vec<EventInput>) -> Result<Vec<PreparedEvent>> {
    events
        .into_iter()
        .map(|event| {
            let body = PreparedBody::new(event.kind, &event.event_id, &event.encoded_event)
                .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
            let key = crate::index::event_id_key(&event.event_id);
            Ok(PreparedEvent {
                event_id: event.event_id,
                key,
                body,
            })
        })
        .collect()
}

/// A record as read back, with the hash of its stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record.
    pub record: Record,
    /// Hash of its stored body.
    pub hash: RecordHash,
}

impl StoredRecord {
    /// Decodes the stored event.
    ///
    /// # Errors
    /// [`LogError::EventDecode`] when the bytes are not a `trail.v1.Event`.
    pub fn decode_event(&self) -> Result<proto::Event> {
        proto::Event::decode(self.record.event.as_slice()).map_err(|error| LogError::EventDecode {
            lsn: self.record.lsn,
            reason: error.to_string(),
        })
    }
}

fn closed_or_failed(shared: &Shared) -> LogError {
    match shared.catalog().failed.clone() {
        Some(reason) => LogError::FailStopped {
            log: shared.name.to_string(),
            reason,
        },
        None => LogError::Closed(shared.name.to_string()),
    }
}

/// An append checked and prepared by [`Log::prepare`], ready for
/// [`Log::submit`].
#[derive(Debug)]
pub struct PreparedAppend {
    events: Vec<PreparedEvent>,
    atomic: bool,
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

/// A segment as readers see it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentEntry {
    pub first_lsn: Lsn,
    /// Last durable LSN in the segment (`first_lsn - 1` while empty).
    pub last_lsn: Lsn,
    pub path: PathBuf,
    pub sealed: bool,
    /// Readers read no byte at or past this offset: the seal's offset, or
    /// the durable end of the active segment.
    pub limit: u64,
    pub sparse: Vec<(Lsn, u64)>,
}

/// What the writer publishes for readers.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub segments: Vec<SegmentEntry>,
    pub failed: Option<String>,
}

impl Catalog {
    pub fn segment_for(&self, lsn: Lsn) -> Option<&SegmentEntry> {
        let position = self
            .segments
            .partition_point(|entry| entry.first_lsn <= lsn);
        let entry = self.segments.get(position.checked_sub(1)?)?;
        (lsn <= entry.last_lsn).then_some(entry)
    }
}

/// Counters the writer keeps, for metrics and benchmarks.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub groups: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub syncs: AtomicU64,
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
}

/// State shared by a log's handle, its readers and its writer.
#[derive(Debug)]
pub(crate) struct Shared {
    pub counters: Counters,
    pub name: LogName,
    /// `<root>/<log>/wal`
    pub wal_dir: PathBuf,
    pub fs: Arc<dyn FileSystem>,
    pub genesis: RecordHash,
    pub catalog: RwLock<Catalog>,
    pub head: watch::Sender<Head>,
}

impl Shared {
    pub fn catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads the record at `lsn` from a segment, scanning from the nearest
/// sparse entry.
pub(crate) fn read_single(
    fs: &dyn FileSystem,
    entry: &SegmentEntry,
    lsn: Lsn,
) -> Result<StoredRecord> {
    let file = fs
        .open_read(&entry.path)
        .map_err(|error| LogError::io("opening", &entry.path, error))?;
    let start = seek_offset(&entry.sparse, lsn, SEGMENT_HEADER_BYTES as u64);
    let mut cursor = FrameCursor::new(start, entry.limit);
    loop {
        match next_record(file.as_ref(), &mut cursor, entry, lsn)? {
            Some(stored) if stored.record.lsn == lsn => return Ok(stored),
            Some(_) => {}
            None => {
                return Err(LogError::corruption(
                    &entry.path,
                    cursor.offset(),
                    lsn,
                    "segment ends before this lsn",
                ));
            }
        }
    }
}

/// The next record from a cursor; `None` at the cursor's limit.
fn next_record(
    file: &dyn ReadFile,
    cursor: &mut FrameCursor,
    entry: &SegmentEntry,
    want: Lsn,
) -> Result<Option<StoredRecord>> {
    let step = cursor
        .next_frame(file)
        .map_err(|error| LogError::io("reading", &entry.path, error))?;
    match step {
        FrameStep::End => Ok(None),
        FrameStep::Invalid { offset, error } => {
            Err(LogError::codec(&entry.path, offset, want, &error))
        }
        FrameStep::Frame { offset, body, .. } => match codec::decode_body(body) {
            Ok(Body::Record(record)) => {
                if record.lsn > want {
                    return Err(LogError::corruption(
                        &entry.path,
                        offset,
                        want,
                        format!("found lsn {} where lsn {want} belongs", record.lsn),
                    ));
                }
                Ok(Some(StoredRecord {
                    hash: codec::record_hash(body),
                    record,
                }))
            }
            Ok(Body::Seal(_)) => Ok(None),
            Err(error) => Err(LogError::codec(&entry.path, offset, want, &error)),
        },
    }
}

/// Records of a range in LSN order, checked as they are read: CRC, LSN
/// density and the chain link between consecutive records.
pub struct RecordIter {
    shared: Arc<Shared>,
    next: Lsn,
    to: Lsn,
    prev_hash: Option<RecordHash>,
    current: Option<(SegmentEntry, Box<dyn ReadFile>, FrameCursor)>,
    failed: bool,
}

impl RecordIter {
    fn open_segment(&mut self) -> Result<Option<()>> {
        let Some(entry) = self.shared.catalog().segment_for(self.next).cloned() else {
            return Ok(None);
        };
        let file = self
            .shared
            .fs
            .open_read(&entry.path)
            .map_err(|error| LogError::io("opening", &entry.path, error))?;
        let start = seek_offset(&entry.sparse, self.next, SEGMENT_HEADER_BYTES as u64);
        let cursor = FrameCursor::new(start, entry.limit);
        self.current = Some((entry, file, cursor));
        Ok(Some(()))
    }

    fn step(&mut self) -> Result<Option<StoredRecord>> {
        loop {
            if self.next > self.to {
                return Ok(None);
            }
            let needs_segment = self
                .current
                .as_ref()
                .is_none_or(|(entry, _, _)| self.next > entry.last_lsn);
            if needs_segment && self.open_segment()?.is_none() {
                return Ok(None);
            }
            let Some((entry, file, cursor)) = self.current.as_mut() else {
                return Ok(None);
            };
            let Some(stored) = next_record(file.as_ref(), cursor, entry, self.next)? else {
                return Err(LogError::corruption(
                    &entry.path,
                    cursor.offset(),
                    self.next,
                    "segment ends before this lsn",
                ));
            };
            if stored.record.lsn < self.next {
                continue;
            }
            if let Some(prev_hash) = self.prev_hash {
                if stored.record.prev_hash != prev_hash {
                    return Err(LogError::corruption(
                        &entry.path,
                        cursor.offset(),
                        self.next,
                        "hash chain broken: record does not link to the record before it",
                    ));
                }
            }
            self.prev_hash = Some(stored.hash);
            self.next = self.next.next();
            return Ok(Some(stored));
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(stored)) => Some(Ok(stored)),
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

/// Where verification found the log wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The first LSN that failed.
    pub lsn: Lsn,
    /// The file it is in.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// The result of verifying a range of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the range that passed every check.
    pub verified: u64,
    /// First LSN of the range.
    pub first: Lsn,
    /// Last LSN that passed.
    pub last: Lsn,
    /// Hash of the last LSN that passed (chain head of the verified prefix).
    pub head_hash: RecordHash,
    /// The first failure, if any.
    pub failure: Option<VerifyFailure>,
}

/// Verifies segments in order: every frame's CRC, LSN density, the chain
/// from segment to segment and each seal. `segments` lists `(path, first lsn,
/// limit)` in LSN order; `prev_hash` is the hash before the first one.
pub(crate) fn verify_segments(
    fs: &dyn FileSystem,
    log_id: RecordHash,
    segments: &[(PathBuf, Lsn, Option<u64>)],
    mut prev_hash: RecordHash,
    from: Lsn,
    to: Lsn,
    progress: &mut dyn FnMut(Lsn),
) -> Result<VerifyReport> {
    let from = from.max(Lsn::FIRST);
    let mut recorded_at_floor = i64::MIN;
    let mut report = VerifyReport {
        verified: 0,
        first: from,
        last: Lsn(from.0 - 1),
        head_hash: prev_hash,
        failure: None,
    };
    for (path, first_lsn, limit) in segments {
        if *first_lsn > to {
            break;
        }
        let file = fs
            .open_read(path)
            .map_err(|error| LogError::io("opening", path, error))?;
        let expected = SegmentHeader {
            log_id,
            first_lsn: *first_lsn,
            prev_hash,
        };
        let mut visit = |scanned: &crate::segment::ScannedRecord<'_>| {
            let lsn = scanned.record.lsn;
            if lsn >= from && lsn <= to {
                report.verified += 1;
                report.last = lsn;
                report.head_hash = scanned.hash;
                if report.verified.is_multiple_of(4096) {
                    progress(lsn);
                }
            }
        };
        let scan = match scan_segment(
            file.as_ref(),
            path,
            &expected,
            *limit,
            recorded_at_floor,
            &mut visit,
        ) {
            Ok(scan) => scan,
            Err(LogError::Corruption {
                file,
                offset,
                lsn,
                reason,
            }) => {
                report.failure = Some(VerifyFailure {
                    lsn,
                    file,
                    offset,
                    reason,
                });
                return Ok(report);
            }
            Err(error) => return Err(error),
        };
        if let Some(damage) = scan.damage {
            if damage.lsn <= to {
                report.failure = Some(VerifyFailure {
                    lsn: damage.lsn,
                    file: path.clone(),
                    offset: damage.offset,
                    reason: damage.reason,
                });
                return Ok(report);
            }
        }
        if limit.is_none() && scan.seal.is_none() {
            report.failure = Some(VerifyFailure {
                lsn: scan.last_lsn.next(),
                file: path.clone(),
                offset: scan.end_offset,
                reason: "sealed segment has no valid seal".into(),
            });
            return Ok(report);
        }
        prev_hash = scan.last_hash;
        recorded_at_floor = scan.last_recorded_at_unix_nanos;
    }
    progress(report.last);
    Ok(report)
}

/// A handle on one log. Cheap to share behind an `Arc`; appends from many
/// tasks or threads are ordered by the log's single writer.
#[derive(Debug)]
pub struct Log {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: LogOptions,
    pub(crate) sender: Mutex<Option<flume::Sender<Command>>>,
    pub(crate) writer: Mutex<Option<JoinHandle<()>>>,
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
        if let Some(writer) = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = writer.join();
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

    /// A receiver that changes whenever the durable head moves; live
    /// followers wait on it.
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

    fn check_request(&self, events: &[EventInput]) -> Result<()> {
        let options = &self.options;
        if events.is_empty() {
            return Err(LogError::InvalidArgument(
                "an append needs at least one event".into(),
            ));
        }
        if events.len() > options.batch_events_max {
            return Err(LogError::TooLarge {
                what: "append request (events)".into(),
                size: events.len() as u64,
                limit: options.batch_events_max as u64,
                setting: "batch_events_max",
            });
        }
        let mut total = 0usize;
        for (index, event) in events.iter().enumerate() {
            if event.event_id.is_empty() {
                return Err(LogError::InvalidArgument(format!(
                    "events[{index}].event_id is empty"
                )));
            }
            if event.event_id.len() > options.event_id_bytes_max {
                return Err(LogError::TooLarge {
                    what: format!("events[{index}].event_id"),
                    size: event.event_id.len() as u64,
                    limit: options.event_id_bytes_max as u64,
                    setting: "event_id_bytes_max",
                });
            }
            if event.encoded_event.len() > options.event_bytes_max {
                return Err(LogError::TooLarge {
                    what: format!("events[{index}]"),
                    size: event.encoded_event.len() as u64,
                    limit: options.event_bytes_max as u64,
                    setting: "event_bytes_max",
                });
            }
            total += event.frame_bytes_max();
        }
        if total > options.group_bytes_max {
            return Err(LogError::TooLarge {
                what: "append request".into(),
                size: total as u64,
                limit: options.group_bytes_max as u64,
                setting: "group_bytes_max",
            });
        }
        Ok(())
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
    /// Invalid or too large requests.
    pub fn prepare(&self, events: Vec<EventInput>, atomic: bool) -> Result<PreparedAppend> {
        self.check_request(&events)?;
        Ok(PreparedAppend {
            events: prepare(events)?,
            atomic,
        })
    }

    /// Queues a prepared append for the writer (waiting for queue space) and
    /// returns its pending receipts. Appends submitted one after another by
    /// one caller get LSNs in that order.
    ///
    /// # Errors
    /// A closed or fail-stopped log.
    pub async fn submit(&self, append: PreparedAppend) -> Result<PendingReceipts> {
        let (reply, receipts) = oneshot::channel();
        let PreparedAppend { events, atomic } = append;
        self.sender()?
            .send_async(Command::Append {
                events,
                atomic,
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
        self.check_request(&events)?;
        let events = prepare(events)?;
        let (reply, receipts) = oneshot::channel();
        self.sender()?
            .try_send(Command::Append {
                events,
                atomic,
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
        self.check_request(&events)?;
        let events = prepare(events)?;
        let (reply, receipts) = oneshot::channel();
        self.sender()?
            .send(Command::Append {
                events,
                atomic,
                reply,
            })
            .map_err(|_| self.closed_or_failed())?;
        receipts
            .blocking_recv()
            .map_err(|_| self.closed_or_failed())?
    }

    /// Durable records from `from` to `to_inclusive` (clipped to the head).
    /// Does blocking file IO.
    #[must_use]
    pub fn read(&self, from: Lsn, to_inclusive: Lsn) -> RecordIter {
        RecordIter {
            shared: Arc::clone(&self.shared),
            next: from.max(Lsn::FIRST),
            to: to_inclusive.min(self.head().lsn),
            prev_hash: None,
            current: None,
            failed: false,
        }
    }

    /// Checks a range of the log against its own bytes: every CRC, LSN
    /// density, the chain from genesis or from the segment holding `from`,
    /// and every seal. Blocking.
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
        let (segments, prev_hash) = {
            let catalog = self.shared.catalog();
            let start = catalog
                .segments
                .partition_point(|entry| entry.last_lsn < from.max(Lsn::FIRST));
            let selected: Vec<_> = catalog.segments[start..]
                .iter()
                .filter(|entry| entry.first_lsn <= to)
                .map(|entry| {
                    (
                        entry.path.clone(),
                        entry.first_lsn,
                        (!entry.sealed).then_some(entry.limit),
                    )
                })
                .collect();
            (selected, start)
        };
        let prev_hash = if prev_hash == 0 {
            self.shared.genesis
        } else {
            // The chain into the first selected segment is taken from its
            // header; verifying from LSN 1 checks every link.
            let Some((path, _, _)) = segments.first() else {
                return Ok(VerifyReport {
                    verified: 0,
                    first: from,
                    last: Lsn(from.0.saturating_sub(1)),
                    head_hash: self.head().hash,
                    failure: None,
                });
            };
            let file = self
                .shared
                .fs
                .open_read(path)
                .map_err(|error| LogError::io("opening", path, error))?;
            let mut header = [0u8; SEGMENT_HEADER_BYTES];
            file.read_exact_at(&mut header, 0)
                .map_err(|error| LogError::io("reading the header of", path, error))?;
            SegmentHeader::decode(&header)
                .map_err(|reason| LogError::corruption(path, 0, from, reason))?
                .prev_hash
        };
        verify_segments(
            self.shared.fs.as_ref(),
            self.shared.genesis,
            &segments,
            prev_hash,
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
        let mut outcome = Ok(());
        if let Some(sender) = sender {
            let (reply, done) = std::sync::mpsc::sync_channel(1);
            if sender.send(Command::Close { reply }).is_ok() {
                outcome = done.recv().unwrap_or(Ok(()));
            }
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

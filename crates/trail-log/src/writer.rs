//! The log's single writer: one OS thread that drains the bounded queue,
//! assigns LSNs, frames and chains records into one buffer, writes it with
//! one call, makes it durable with one fdatasync and only then acknowledges
//! every append of the group and lets readers see it (group commit).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::codec::{self, PreparedBody, RecordSuffix, Seal};
use crate::error::{LogError, Result};
use crate::fs::WriteFile;
use crate::ids::{EventIdIndex, SealedIds};
use crate::index::{SegmentIndex, SPARSE_STRIDE_BYTES};
use crate::log::{read_single, PreparedEvent, SegmentEntry, Shared, StoredRecord};
use crate::options::LogOptions;
use crate::preparer::Preparer;
use crate::proto;
use crate::segment::{self, SegmentHeader, SEAL_RESERVE_BYTES, SEGMENT_HEADER_BYTES};
use crate::types::{Durability, Head, Lsn, Receipt, RecordHash};

/// What the writer's queue carries.
pub(crate) enum Command {
    Append {
        events: Vec<PreparedEvent>,
        atomic: bool,
        reply: oneshot::Sender<Result<Vec<Receipt>>>,
    },
    Close {
        reply: std::sync::mpsc::SyncSender<Result<()>>,
    },
}

/// An append's reply channel and the answer it gets once the group commits.
type PendingReply = (oneshot::Sender<Result<Vec<Receipt>>>, Result<Vec<Receipt>>);

/// Most append requests folded into one group.
const GROUP_COMMANDS_MAX: usize = 1024;

/// The segment the writer appends to.
pub(crate) struct ActiveSegment {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    pub file: Box<dyn WriteFile>,
    pub capacity: u64,
    /// Everything before this offset has been written.
    pub write_offset: u64,
    pub created: Instant,
    pub sparse: Vec<(Lsn, u64)>,
    pub ids: Vec<(u64, Lsn)>,
}

impl ActiveSegment {
    fn room(&self) -> u64 {
        self.capacity
            .saturating_sub(SEAL_RESERVE_BYTES)
            .saturating_sub(self.write_offset)
    }
}

/// The last record of some prefix of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub lsn: Lsn,
    pub hash: RecordHash,
    pub recorded_at_unix_nanos: i64,
}

/// What recovery hands the writer.
pub(crate) struct Recovered {
    pub active: Option<ActiveSegment>,
    pub tip: Tip,
    pub ids: EventIdIndex,
}

/// An event staged in the current group, not yet written.
struct Staged {
    key: u64,
    event_id: String,
    event: PreparedBody,
    receipt: Receipt,
}

enum Slot {
    Duplicate(Receipt),
    SameAsEarlier(usize),
    New,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    options: LogOptions,
    active: Option<ActiveSegment>,
    /// Last record staged (in the buffer or written).
    staged_tip: Tip,
    /// Last record written to the file.
    written_tip: Tip,
    /// Last record known durable and published to readers.
    durable_tip: Tip,
    /// Last LSN actually fsynced (what records carry as `durable_lsn`); in
    /// `Durability::None` it only moves when a segment is sealed.
    synced_lsn: Lsn,
    ids: EventIdIndex,
    buffer: Vec<u8>,
    staged: Vec<Staged>,
    /// Staged events by event-id key (see `EventIdIndex` on collisions).
    staged_ids: HashMap<u64, usize, foldhash::fast::RandomState>,
    failed: Option<String>,
    last_sync: Instant,
    /// Prepares zero-filled segments ahead of time (`Sync` mode).
    preparer: Option<Preparer>,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, options: LogOptions, recovered: Recovered) -> Writer {
        let preparer = (options.durability == Durability::Sync && options.prepare_segments_ahead)
            .then(|| Preparer::start(Arc::clone(&shared), options.segment_bytes));
        Writer {
            shared,
            options,
            active: recovered.active,
            staged_tip: recovered.tip,
            written_tip: recovered.tip,
            durable_tip: recovered.tip,
            synced_lsn: recovered.tip.lsn,
            ids: recovered.ids,
            buffer: Vec::new(),
            staged: Vec::new(),
            staged_ids: HashMap::default(),
            failed: None,
            last_sync: Instant::now(),
            preparer,
        }
    }

    /// The writer thread's loop; returns when the log is closed or every
    /// handle is gone.
    pub fn run(mut self, receiver: &flume::Receiver<Command>) {
        loop {
            let first = match self.next_deadline() {
                Some(deadline) => match receiver.recv_deadline(deadline) {
                    Ok(command) => command,
                    Err(flume::RecvTimeoutError::Timeout) => {
                        self.on_tick();
                        continue;
                    }
                    Err(flume::RecvTimeoutError::Disconnected) => break,
                },
                None => match receiver.recv() {
                    Ok(command) => command,
                    Err(flume::RecvError::Disconnected) => break,
                },
            };
            let mut group = vec![first];
            let mut bytes: usize = 0;
            while group.len() < GROUP_COMMANDS_MAX && bytes < self.options.group_bytes_max {
                match receiver.try_recv() {
                    Ok(command) => {
                        if let Command::Append { events, .. } = &command {
                            bytes += events
                                .iter()
                                .map(|event| event.body.frame_bytes_max())
                                .sum::<usize>();
                        }
                        group.push(command);
                    }
                    Err(_) => break,
                }
            }
            if let Some(close) = self.run_group(group) {
                let outcome = self.close_cleanly();
                let _ = close.send(outcome);
                return;
            }
            self.on_tick();
        }
        // Every handle is gone without a close: make what was written
        // durable, but leave no clean-close marker (only `close` promises
        // that nothing else touches the files afterwards).
        let _ = self.sync_unsynced();
    }

    /// Makes everything written durable and leaves the clean-close marker.
    /// A fail-stopped log leaves no marker: its state is unknown.
    fn close_cleanly(&mut self) -> Result<()> {
        self.sync_unsynced()?;
        if self.synced_lsn != self.written_tip.lsn {
            // Durability::None never synced: a clean close still does.
            if let Some(active) = self.active.as_mut() {
                if let Err(error) = active.file.sync_data() {
                    let path = active.path.display().to_string();
                    return Err(self.fail_stop(format!("fdatasync of {path}: {error}")));
                }
            }
            self.synced_lsn = self.written_tip.lsn;
        }
        if self.failed.is_some() || self.written_tip.lsn == Lsn::ZERO {
            return Ok(());
        }
        let marker = crate::recovery::CleanClose {
            lsn: self.written_tip.lsn,
            hash: self.written_tip.hash,
        };
        crate::recovery::write_clean_close(self.shared.fs.as_ref(), &self.shared.wal_dir, marker)
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut deadline: Option<Instant> = None;
        if let Durability::Interval(interval) = self.options.durability {
            if self.written_tip != self.durable_tip {
                deadline = Some(self.last_sync + interval);
            }
        }
        if let (Some(age), Some(active)) = (self.options.segment_age_max, &self.active) {
            if self.written_tip.lsn >= active.first_lsn {
                let sealing = active.created + age;
                deadline = Some(deadline.map_or(sealing, |other| other.min(sealing)));
            }
        }
        deadline
    }

    fn on_tick(&mut self) {
        if self.failed.is_some() {
            return;
        }
        if let Durability::Interval(interval) = self.options.durability {
            if self.written_tip != self.durable_tip && self.last_sync.elapsed() >= interval {
                let _ = self.sync_unsynced();
            }
        }
        if let (Some(age), Some(active)) = (self.options.segment_age_max, &self.active) {
            if self.written_tip.lsn >= active.first_lsn && active.created.elapsed() >= age {
                let _ = self.seal_active();
            }
        }
    }

    /// Processes one group; returns the reply channel of a close request.
    fn run_group(
        &mut self,
        group: Vec<Command>,
    ) -> Option<std::sync::mpsc::SyncSender<Result<()>>> {
        let mut replies: Vec<PendingReply> = Vec::new();
        let mut close = None;
        for command in group {
            match command {
                Command::Close { reply } => close = Some(reply),
                Command::Append {
                    events,
                    atomic,
                    reply,
                } => {
                    if let Some(error) = self.failure_error() {
                        let _ = reply.send(Err(error));
                        continue;
                    }
                    let needed: u64 = events
                        .iter()
                        .map(|event| event.body.frame_bytes_max() as u64)
                        .sum();
                    let fits = self
                        .active
                        .as_ref()
                        .is_some_and(|active| active.room() >= self.buffer.len() as u64 + needed);
                    if !fits {
                        self.commit(&mut replies);
                        if let Err(error) = self.failure_error().map_or_else(|| self.roll(), Err) {
                            let _ = reply.send(Err(error));
                            continue;
                        }
                    }
                    let outcome = self.stage(events, atomic);
                    replies.push((reply, outcome));
                }
            }
        }
        self.commit(&mut replies);
        close
    }

    fn failure_error(&self) -> Option<LogError> {
        self.failed.as_ref().map(|reason| LogError::FailStopped {
            log: self.shared.name.to_string(),
            reason: reason.clone(),
        })
    }

    fn fail_stop(&mut self, reason: String) -> LogError {
        tracing::error!(log = %self.shared.name, %reason, "log fail-stopped: no more writes until it is reopened");
        self.shared.catalog_mut().failed = Some(reason.clone());
        self.failed = Some(reason.clone());
        LogError::FailStopped {
            log: self.shared.name.to_string(),
            reason,
        }
    }

    /// Classifies, numbers and frames one request's events into the buffer.
    fn stage(&mut self, events: Vec<PreparedEvent>, atomic: bool) -> Result<Vec<Receipt>> {
        let mut slots = Vec::with_capacity(events.len());
        let mut request_ids: HashMap<&str, usize> = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            if let Some(&earlier) = request_ids.get(event.event_id.as_str()) {
                if !same_content(events[earlier].body.event(), event.body.event()) {
                    return Err(LogError::InvalidArgument(format!(
                        "events[{index}] and events[{earlier}] share event id {:?} but differ",
                        event.event_id
                    )));
                }
                slots.push(Slot::SameAsEarlier(earlier));
                continue;
            }
            request_ids.insert(&event.event_id, index);
            slots.push(match self.find_existing(&event.event_id, event.key)? {
                Some((receipt, stored_event)) => {
                    if !same_content(&stored_event, event.body.event()) {
                        return Err(LogError::EventIdConflict {
                            event_id: event.event_id.clone(),
                            lsn: receipt.lsn,
                        });
                    }
                    Slot::Duplicate(Receipt {
                        duplicate: true,
                        ..receipt
                    })
                }
                None => Slot::New,
            });
        }

        let new_count = slots
            .iter()
            .filter(|slot| matches!(slot, Slot::New))
            .count() as u64;
        let batch_last_lsn = Lsn(self.staged_tip.lsn.0 + new_count);
        let rollback = (self.buffer.len(), self.staged.len(), self.staged_tip);
        let mut receipts: Vec<Receipt> = Vec::with_capacity(events.len());
        for (event, slot) in events.into_iter().zip(&slots) {
            let receipt = match slot {
                Slot::Duplicate(receipt) => *receipt,
                Slot::SameAsEarlier(earlier) => Receipt {
                    duplicate: true,
                    ..receipts[*earlier]
                },
                Slot::New => match self.stage_one(event, atomic.then_some(batch_last_lsn)) {
                    Ok(receipt) => receipt,
                    Err(error) => {
                        let (buffer_len, staged_len, tip) = rollback;
                        self.buffer.truncate(buffer_len);
                        for staged in self.staged.drain(staged_len..) {
                            self.staged_ids.remove(&staged.key);
                        }
                        self.staged_tip = tip;
                        return Err(error);
                    }
                },
            };
            receipts.push(receipt);
        }
        Ok(receipts)
    }

    fn stage_one(
        &mut self,
        mut event: PreparedEvent,
        batch_last_lsn: Option<Lsn>,
    ) -> Result<Receipt> {
        let lsn = self.staged_tip.lsn.next();
        let recorded_at_unix_nanos = self
            .options
            .clock
            .now_unix_nanos()
            .max(self.staged_tip.recorded_at_unix_nanos);
        let suffix = RecordSuffix {
            lsn,
            recorded_at_unix_nanos,
            prev_hash: self.staged_tip.hash,
            batch_last_lsn: batch_last_lsn.unwrap_or(lsn),
            durable_lsn: self.synced_lsn,
        };
        let hash = codec::encode_prepared_frame(&mut self.buffer, &mut event.body, &suffix)
            .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
        self.staged_tip = Tip {
            lsn,
            hash,
            recorded_at_unix_nanos,
        };
        let receipt = Receipt {
            lsn,
            hash,
            recorded_at_unix_nanos,
            duplicate: false,
        };
        let key = event.key;
        self.staged_ids.insert(key, self.staged.len());
        self.staged.push(Staged {
            key,
            event_id: event.event_id,
            event: event.body,
            receipt,
        });
        Ok(receipt)
    }

    /// The receipt and stored event bytes of an earlier event with this id.
    fn find_existing(&mut self, event_id: &str, key: u64) -> Result<Option<(Receipt, Vec<u8>)>> {
        if let Some(&index) = self.staged_ids.get(&key) {
            // A key shared by two ids is an accident of 64 bits; then look
            // through the staged events for the id itself.
            let staged = Some(&self.staged[index])
                .filter(|staged| staged.event_id == event_id)
                .or_else(|| {
                    self.staged
                        .iter()
                        .find(|staged| staged.event_id == event_id)
                });
            if let Some(staged) = staged {
                return Ok(Some((staged.receipt, staged.event.event().to_vec())));
            }
        }
        let shared = Arc::clone(&self.shared);
        let mut rebuild = |first_lsn: Lsn| rebuild_index(&shared, first_lsn);
        let candidates = self
            .ids
            .candidates(self.shared.fs.as_ref(), key, &mut rebuild)?;
        for lsn in candidates {
            let stored = self.read_record(lsn)?;
            if stored.record.event_id == event_id {
                let receipt = Receipt {
                    lsn,
                    hash: stored.hash,
                    recorded_at_unix_nanos: stored.record.recorded_at_unix_nanos,
                    duplicate: true,
                };
                return Ok(Some((receipt, stored.record.event)));
            }
        }
        Ok(None)
    }

    /// Reads a written record (durable or not) by LSN.
    fn read_record(&self, lsn: Lsn) -> Result<StoredRecord> {
        if let Some(active) = self
            .active
            .as_ref()
            .filter(|active| lsn >= active.first_lsn)
        {
            let entry = SegmentEntry {
                first_lsn: active.first_lsn,
                last_lsn: self.written_tip.lsn,
                path: active.path.clone(),
                sealed: false,
                limit: active.write_offset,
                sparse: active.sparse.clone(),
            };
            return read_single(self.shared.fs.as_ref(), &entry, lsn);
        }
        let entry = self.shared.catalog().segment_for(lsn).cloned();
        match entry {
            Some(entry) => read_single(self.shared.fs.as_ref(), &entry, lsn),
            None => Err(LogError::LsnNotFound {
                log: self.shared.name.to_string(),
                lsn,
                head: self.durable_tip.lsn,
            }),
        }
    }

    /// Writes the buffer, makes it durable per the durability mode,
    /// publishes it and answers every reply of the group.
    fn commit(&mut self, replies: &mut Vec<PendingReply>) {
        let outcome = self.write_and_sync();
        for (reply, result) in replies.drain(..) {
            let result = match (&outcome, result) {
                (Err(error), Ok(_)) => Err(error.clone()),
                (_, result) => result,
            };
            let _ = reply.send(result);
        }
    }

    fn write_and_sync(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Err(self.fail_stop("records staged with no active segment (bug)".into()));
        };
        let offset = active.write_offset;
        debug_assert!(offset + self.buffer.len() as u64 <= active.capacity - SEAL_RESERVE_BYTES);
        if let Err(error) = active.file.write_all_at(&self.buffer, offset) {
            let path = active.path.clone();
            let length = self.buffer.len();
            let undone = error.kind() == std::io::ErrorKind::StorageFull
                && crate::fs::write_zeros(active.file.as_mut(), offset, offset + length as u64)
                    .is_ok();
            self.discard_staged();
            if undone {
                return Err(LogError::io("writing", path, error));
            }
            return Err(self.fail_stop(format!("writing {}: {error}", path.display())));
        }
        active.write_offset += self.buffer.len() as u64;
        let counters = &self.shared.counters;
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters
            .records
            .fetch_add(self.staged.len() as u64, Ordering::Relaxed);
        counters
            .bytes
            .fetch_add(self.buffer.len() as u64, Ordering::Relaxed);
        let mut sparse_last = active.sparse.last().map_or(0, |(_, offset)| *offset);
        let mut frame_offset = offset;
        for staged in &self.staged {
            if active.sparse.is_empty() || frame_offset >= sparse_last + SPARSE_STRIDE_BYTES {
                active.sparse.push((staged.receipt.lsn, frame_offset));
                sparse_last = frame_offset;
            }
            active.ids.push((staged.key, staged.receipt.lsn));
            frame_offset = next_frame_offset(&self.buffer, frame_offset - offset) + offset;
        }
        for staged in self.staged.drain(..) {
            self.ids.insert_active(staged.key, staged.receipt.lsn);
        }
        self.staged_ids.clear();
        self.buffer.clear();
        self.written_tip = self.staged_tip;
        match self.options.durability {
            Durability::Sync => self.sync_unsynced(),
            Durability::Interval(interval) => {
                if self.last_sync.elapsed() >= interval {
                    self.sync_unsynced()
                } else {
                    Ok(())
                }
            }
            Durability::None => {
                self.publish(self.written_tip);
                Ok(())
            }
        }
    }

    fn discard_staged(&mut self) {
        self.buffer.clear();
        self.staged.clear();
        self.staged_ids.clear();
        self.staged_tip = self.written_tip;
    }

    /// fdatasyncs what was written and publishes it.
    fn sync_unsynced(&mut self) -> Result<()> {
        if let Some(error) = self.failure_error() {
            return Err(error);
        }
        if self.written_tip == self.durable_tip {
            return Ok(());
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        if self.options.durability != Durability::None {
            self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
            if let Err(error) = active.file.sync_data() {
                let path = active.path.display().to_string();
                return Err(self.fail_stop(format!("fdatasync of {path}: {error}")));
            }
            self.synced_lsn = self.written_tip.lsn;
        }
        self.last_sync = Instant::now();
        self.publish(self.written_tip);
        Ok(())
    }

    /// Lets readers see everything up to `tip`.
    fn publish(&mut self, tip: Tip) {
        self.durable_tip = tip;
        if let Some(active) = &self.active {
            let mut catalog = self.shared.catalog_mut();
            if let Some(entry) = catalog
                .segments
                .last_mut()
                .filter(|entry| entry.first_lsn == active.first_lsn)
            {
                entry.last_lsn = tip.lsn;
                entry.limit = active.write_offset;
                // Sparse entries are only ever added: copy just the new ones.
                let known = entry.sparse.len();
                entry.sparse.extend_from_slice(&active.sparse[known..]);
            }
        }
        self.shared.head.send_replace(Head {
            lsn: tip.lsn,
            hash: tip.hash,
        });
    }

    /// Seals the active segment when it holds records, then starts a new one.
    fn roll(&mut self) -> Result<()> {
        if self
            .active
            .as_ref()
            .is_some_and(|active| self.written_tip.lsn >= active.first_lsn)
        {
            self.seal_active()?;
        }
        if self.active.is_none() {
            self.create_active()?;
        }
        Ok(())
    }

    /// Writes the seal and footer, trims the preallocated tail, syncs, then
    /// writes the sidecar index (best effort: it is rebuilt when missing).
    fn seal_active(&mut self) -> Result<()> {
        let Some(mut active) = self.active.take() else {
            return Ok(());
        };
        let seal = Seal {
            first_lsn: active.first_lsn,
            last_lsn: self.written_tip.lsn,
            record_count: self.written_tip.lsn.0 - active.first_lsn.0 + 1,
            last_hash: self.written_tip.hash,
            sealed_at_unix_nanos: self.options.clock.now_unix_nanos(),
        };
        let seal_offset = active.write_offset;
        let mut trailer = Vec::with_capacity(128);
        codec::encode_seal_frame(&mut trailer, &seal)
            .map_err(|error| LogError::InvalidArgument(error.to_string()))?;
        trailer.extend_from_slice(&segment::encode_footer(seal_offset));
        let end = seal_offset + trailer.len() as u64;
        let sealed = active
            .file
            .write_all_at(&trailer, seal_offset)
            .and_then(|()| active.file.set_len(end))
            .and_then(|()| active.file.sync_all());
        if let Err(error) = sealed {
            let path = active.path.display().to_string();
            self.active = Some(active);
            return Err(self.fail_stop(format!("sealing {path}: {error}")));
        }
        active.write_offset = end;
        self.last_sync = Instant::now();
        self.synced_lsn = self.written_tip.lsn;
        let tip = self.written_tip;
        self.publish(tip);
        {
            let mut catalog = self.shared.catalog_mut();
            if let Some(entry) = catalog
                .segments
                .last_mut()
                .filter(|entry| entry.first_lsn == active.first_lsn)
            {
                entry.sealed = true;
                entry.limit = seal_offset;
                entry.last_lsn = seal.last_lsn;
                entry.sparse.clone_from(&active.sparse);
            }
        }
        active.ids.sort_unstable();
        let index = SegmentIndex {
            first_lsn: active.first_lsn,
            last_lsn: seal.last_lsn,
            segment_bytes: end,
            seal_offset,
            sparse: std::mem::take(&mut active.sparse),
            ids: std::mem::take(&mut active.ids),
        };
        let index_path = self
            .shared
            .wal_dir
            .join(segment::index_file_name(active.first_lsn));
        if let Err(error) =
            crate::recovery::write_index_file(self.shared.fs.as_ref(), &index_path, &index)
        {
            tracing::warn!(log = %self.shared.name, %error, "could not write a segment index; it will be rebuilt from the segment");
        }
        self.ids.seal_active(
            SealedIds {
                first_lsn: active.first_lsn,
                index_path,
            },
            &index,
        );
        Ok(())
    }

    /// Creates and preallocates the next segment. Failures leave the log as
    /// it was (the half-made file is removed), except a failed directory
    /// sync, after which the new file's durability is unknown.
    fn create_active(&mut self) -> Result<()> {
        let first_lsn = self.written_tip.lsn.next();
        let path = self
            .shared
            .wal_dir
            .join(segment::segment_file_name(first_lsn));
        let temporary = self
            .shared
            .wal_dir
            .join(format!("{}.tmp", segment::segment_file_name(first_lsn)));
        let header = SegmentHeader {
            log_id: self.shared.genesis,
            first_lsn,
            prev_hash: self.written_tip.hash,
        };
        let spare = self.preparer.as_ref().and_then(Preparer::take);
        let prepared = match spare {
            Some((mut file, spare_path)) => file
                .write_all_at(&header.encode(), 0)
                .and_then(|()| file.sync_data())
                .map(|()| (file, spare_path))
                .map_err(|error| LogError::io("writing the header of", &path, error)),
            None => preallocate(
                &self.shared,
                &temporary,
                &header,
                self.options.segment_bytes,
                self.options.durability == Durability::Sync,
            )
            .map(|file| (file, temporary.clone())),
        };
        let (file, prepared_path) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                let _ = self.shared.fs.remove_file(&temporary);
                return Err(error);
            }
        };
        let renamed = self.shared.fs.rename(&prepared_path, &path);
        // Only now is the spare's name free for the next one.
        if let Some(preparer) = &self.preparer {
            preparer.request();
        }
        if let Err(error) = renamed {
            let _ = self.shared.fs.remove_file(&prepared_path);
            return Err(LogError::io("renaming into place", &path, error));
        }
        if let Err(error) = self.shared.fs.sync_dir(&self.shared.wal_dir) {
            return Err(self.fail_stop(format!(
                "syncing directory {}: {error}",
                self.shared.wal_dir.display()
            )));
        }
        self.shared.catalog_mut().segments.push(SegmentEntry {
            first_lsn,
            last_lsn: Lsn(first_lsn.0 - 1),
            path: path.clone(),
            sealed: false,
            limit: SEGMENT_HEADER_BYTES as u64,
            sparse: Vec::new(),
        });
        self.active = Some(ActiveSegment {
            first_lsn,
            path,
            file,
            capacity: self.options.segment_bytes,
            write_offset: SEGMENT_HEADER_BYTES as u64,
            created: Instant::now(),
            sparse: Vec::new(),
            ids: Vec::new(),
        });
        Ok(())
    }
}

/// Offset (relative to the buffer) of the frame after the one at `at`.
fn next_frame_offset(buffer: &[u8], at: u64) -> u64 {
    let at = at as usize;
    let length =
        u32::from_le_bytes([buffer[at], buffer[at + 1], buffer[at + 2], buffer[at + 3]]) as usize;
    (at + codec::FRAME_HEADER_BYTES + length) as u64
}

/// Whether two encodings carry the same event. Equal bytes are; otherwise
/// both are decoded and compared, since encoders may order fields and map
/// entries differently for the same event.
pub(crate) fn same_content(stored: &[u8], sent: &[u8]) -> bool {
    use prost::Message;
    if stored == sent {
        return true;
    }
    match (proto::Event::decode(stored), proto::Event::decode(sent)) {
        (Ok(stored), Ok(sent)) => stored == sent,
        _ => false,
    }
}

/// Creates the segment file: zero-filled and synced in `Sync` mode (writes
/// into preallocated, already-synced blocks make the later fdatasyncs cheap,
/// since no block allocation has to be journaled), sparse otherwise; then the
/// header, synced.
fn preallocate(
    shared: &Shared,
    path: &std::path::Path,
    header: &SegmentHeader,
    capacity: u64,
    zero_fill: bool,
) -> Result<Box<dyn WriteFile>> {
    let mut file = if zero_fill {
        crate::preparer::zero_filled(shared, path, capacity)?
    } else {
        let mut file = shared
            .fs
            .create(path)
            .map_err(|error| LogError::io("creating", path, error))?;
        file.set_len(capacity)
            .map_err(|error| LogError::io("preallocating", path, error))?;
        file
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|error| LogError::io("writing the header of", path, error))?;
    file.sync_all()
        .map_err(|error| LogError::io("syncing", path, error))?;
    Ok(file)
}

/// Rebuilds a sealed segment's sidecar index from the segment itself.
fn rebuild_index(shared: &Shared, first_lsn: Lsn) -> Result<SegmentIndex> {
    let path = shared.wal_dir.join(segment::segment_file_name(first_lsn));
    let index = crate::recovery::index_sealed_segment(shared.fs.as_ref(), &path, shared.genesis)?;
    let index_path = shared.wal_dir.join(segment::index_file_name(first_lsn));
    if let Err(error) = crate::recovery::write_index_file(shared.fs.as_ref(), &index_path, &index) {
        tracing::warn!(%error, "could not rewrite a segment index");
    }
    Ok(index)
}

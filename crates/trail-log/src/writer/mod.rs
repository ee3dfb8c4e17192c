//! The log's single writer: one OS thread that drains the bounded queue,
//! assigns LSNs, frames and chains records into one buffer, writes it with
//! one call, makes it durable with one fdatasync and only then acknowledges
//! every append of the group and lets readers see it (group commit).
//!
//! The stages live in their own files: `stage.rs` (classify, number and
//! frame), `commit.rs` (write, sync, publish, answer) and `roll.rs` (seal
//! and create segments). This file holds the loop and the timers.

mod commit;
mod roll;
mod stage;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::append::{PreparedEvent, Unchanged, RESOURCE_BUCKETS};
use crate::catalog::{ActiveTail, SegmentInfo, Tip};
use crate::clean_close::{write_clean_close, CleanClose};
use crate::codec::PreparedBody;
use crate::error::{LogError, Result};
use crate::fs::WriteFile;
use crate::ids::EventIdIndex;
use crate::options::{LogOptions, SPIN_GROUP_EVENTS_MAX};
use crate::preparer::Preparer;
use crate::segment::SEAL_RESERVE_BYTES;
use crate::shared::Shared;
use crate::types::{Durability, Lsn, Receipt, RecordHash};

/// What the writer's queue carries.
pub(crate) enum Command {
    Append {
        events: Vec<PreparedEvent>,
        atomic: bool,
        condition: Option<Unchanged>,
        reply: oneshot::Sender<Result<Vec<Receipt>>>,
    },
    /// Check the timers (age-based sealing, interval syncs) now: the
    /// monotonic clock may have been moved by a test.
    Tick,
    /// Seal the active segment now if it holds records (what was queued
    /// before is committed first), so an operator can archive everything
    /// written without waiting for the segment to fill or age. Answers
    /// with the segment sealed, `None` when there was nothing to seal.
    Seal {
        reply: oneshot::Sender<Result<Option<SegmentInfo>>>,
    },
    /// The receipt of the event with this id, if the log holds one: the
    /// writer's own lifetime id index answers (what was queued before is
    /// committed first, so the answer is about durable records).
    FindEventId {
        event_id: String,
        reply: oneshot::Sender<Result<Option<Receipt>>>,
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
    /// When it was created (or reopened), on the monotonic clock.
    pub created: Duration,
    /// Hash of the record before its first one (its header's).
    pub prev_hash: RecordHash,
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

/// Where the writer starts: what recovery found and repaired.
pub(crate) struct WriterStart {
    pub active: Option<(ActiveTail, Box<dyn WriteFile>)>,
    pub tip: Tip,
    pub ids: EventIdIndex,
}

/// An event staged in the current group, not yet written.
struct Staged {
    key: u64,
    event_id: String,
    event: PreparedBody,
    receipt: Receipt,
    /// Hash of the record before it (for the group's invariant check).
    prev_hash: RecordHash,
    /// Offset of its frame in the group's buffer.
    frame_start: usize,
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
    /// Monotonic time of the last sync.
    last_sync: Duration,
    /// Prepares zero-filled segments ahead of time (`Sync` mode).
    preparer: Option<Preparer>,
    /// Per bucket of resource keys, the last LSN staged about a resource of
    /// the bucket (`PreparedAppend::only_if_unchanged`); the head at open
    /// for every bucket, since what came before is not known here.
    resource_touched: Box<[Lsn]>,
    /// Events of the last group (it decides whether the writer polls
    /// before it sleeps).
    last_group_events: usize,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, options: LogOptions, recovered: WriterStart) -> Writer {
        let preparer = (options.durability == Durability::Sync && options.prepare_segments_ahead)
            .then(|| {
                Preparer::start(
                    Arc::clone(&shared),
                    options.segment_bytes,
                    options.spare_wait,
                )
            });
        let now = options.clock.monotonic();
        let active = recovered.active.map(|(tail, file)| ActiveSegment {
            first_lsn: tail.first_lsn,
            path: tail.path,
            file,
            capacity: tail.capacity,
            write_offset: tail.write_offset,
            created: now,
            prev_hash: shared
                .catalog()
                .segments
                .last()
                .map_or(recovered.tip.hash, |entry| entry.prev_hash),
            sparse: tail.sparse,
            ids: tail.ids,
        });
        Writer {
            shared,
            options,
            active,
            staged_tip: recovered.tip,
            written_tip: recovered.tip,
            durable_tip: recovered.tip,
            synced_lsn: recovered.tip.lsn,
            ids: recovered.ids,
            buffer: Vec::new(),
            staged: Vec::new(),
            staged_ids: HashMap::default(),
            failed: None,
            last_sync: now,
            preparer,
            resource_touched: vec![recovered.tip.lsn; RESOURCE_BUCKETS].into_boxed_slice(),
            last_group_events: usize::MAX,
        }
    }

    /// The writer thread's loop; returns when the log is closed or every
    /// handle is gone.
    pub fn run(mut self, receiver: &flume::Receiver<Command>) {
        if self.ids.has_pending() {
            // The event ids of sealed segments trusted at open: read here,
            // so opening never waits for them; appends queue meanwhile
            // (reads, followers and `head` do not wait).
            let started = std::time::Instant::now();
            let shared = Arc::clone(&self.shared);
            let mut rebuild = |first_lsn: Lsn| {
                crate::index::rebuild_sidecar(
                    shared.fs.as_ref(),
                    &shared.wal_dir,
                    shared.genesis,
                    first_lsn,
                )
            };
            let (keys, rebuilt) = self.ids.load_pending(self.shared.fs.as_ref(), &mut rebuild);
            if !rebuilt.is_empty() {
                // Their sparse tables came from the sidecars found damaged.
                let mut catalog = self.shared.catalog_mut();
                for index in rebuilt {
                    if let Some(entry) = catalog
                        .segments
                        .iter_mut()
                        .find(|entry| entry.first_lsn == index.first_lsn)
                    {
                        entry.sparse = index.sparse;
                    }
                }
            }
            tracing::info!(log = %self.shared.name, keys, elapsed = ?started.elapsed(), "loaded the event ids of sealed segments");
        }
        loop {
            let caught = self.poll_after_small_group(receiver);
            let first = match caught {
                Some(command) => command,
                None => match self.next_deadline() {
                    Some(deadline) => match receiver
                        .recv_timeout(deadline.saturating_sub(self.options.clock.monotonic()))
                    {
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
            self.last_group_events = group
                .iter()
                .map(|command| match command {
                    Command::Append { events, .. } => events.len(),
                    _ => 0,
                })
                .sum();
            if let Some(close) = self.run_group(group) {
                let outcome = self.close_cleanly();
                self.announce_exit();
                let _ = close.send(outcome);
                return;
            }
            self.on_tick();
        }
        // Every handle is gone without a close: make what was written
        // durable, but leave no clean-close marker (only `close` promises
        // that nothing else touches the files afterwards).
        let _ = self.sync_unsynced();
        self.announce_exit();
    }

    /// After a group of at most [`SPIN_GROUP_EVENTS_MAX`] events, polls
    /// the queue for up to `writer_spin` (never past the next timer) and
    /// returns what came. A client that waits for each ack sends its next
    /// append about one round trip later; sleeping meanwhile makes that
    /// append pay a thread wake-up, which on a VM with an idle core is a
    /// trip through the host (DECISIONS.md #47). After larger groups the
    /// cores are busy with requests (many clients, or large requests), so
    /// the writer sleeps at once.
    fn poll_after_small_group(&mut self, receiver: &flume::Receiver<Command>) -> Option<Command> {
        if self.options.writer_spin.is_zero() || self.last_group_events > SPIN_GROUP_EVENTS_MAX {
            return None;
        }
        // Once per group: a timer's tick that follows must not start
        // another poll.
        self.last_group_events = usize::MAX;
        // Real time, not the log's clock (a test's manual clock stands
        // still): the spin is CPU time, bounded as such.
        let mut spin = self.options.writer_spin;
        if let Some(deadline) = self.next_deadline() {
            spin = spin.min(deadline.saturating_sub(self.options.clock.monotonic()));
        }
        let until = std::time::Instant::now() + spin;
        while std::time::Instant::now() < until {
            match receiver.try_recv() {
                Ok(command) => {
                    self.shared
                        .counters
                        .spin_catches
                        .fetch_add(1, Ordering::Relaxed);
                    return Some(command);
                }
                Err(flume::TryRecvError::Disconnected) => return None,
                Err(flume::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
        None
    }

    /// Tells followers the writer is gone (they stop waiting for records).
    fn announce_exit(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.head.send_modify(|_| {});
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
        let marker = CleanClose {
            lsn: self.written_tip.lsn,
            hash: self.written_tip.hash,
        };
        write_clean_close(self.shared.fs.as_ref(), &self.shared.wal_dir, marker)
    }

    /// The next time (monotonic) a timer is due.
    fn next_deadline(&self) -> Option<Duration> {
        let mut deadline: Option<Duration> = None;
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
        let now = self.options.clock.monotonic();
        if let Durability::Interval(interval) = self.options.durability {
            if self.written_tip != self.durable_tip
                && now.saturating_sub(self.last_sync) >= interval
            {
                let _ = self.sync_unsynced();
            }
        }
        if let (Some(age), Some(active)) = (self.options.segment_age_max, &self.active) {
            if self.written_tip.lsn >= active.first_lsn && now.saturating_sub(active.created) >= age
            {
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
                Command::Tick => {}
                Command::FindEventId { event_id, reply } => {
                    self.commit(&mut replies);
                    let key = crate::index::event_id_key(&event_id);
                    let outcome = self.find_existing(&event_id, key).map(|found| {
                        found.map(|(receipt, _)| Receipt {
                            duplicate: false,
                            ..receipt
                        })
                    });
                    let _ = reply.send(outcome);
                }
                Command::Seal { reply } => {
                    // Appends queued before the request belong to the
                    // segment it seals: write and answer them first.
                    self.commit(&mut replies);
                    let outcome = match self.failure_error() {
                        Some(error) => Err(error),
                        None => self.seal_holding_records(),
                    };
                    let _ = reply.send(outcome);
                }
                Command::Append {
                    events,
                    atomic,
                    condition,
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
                    let outcome = self.stage(events, atomic, condition);
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
}

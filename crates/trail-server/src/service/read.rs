//! `Read`: a range of records from disk to the client, and [`stream_records`],
//! the follower-to-stream loop `Subscribe` shares. Both read through one
//! engine [`Follower`] per stream, so the chain is checked on every link the
//! stream passes (across chunks and segments), and a stalled client holds
//! only its channel's records and the follower's position: the follower's
//! file and buffer are put down between reads, a read happens only once the
//! channel has room for all of it, and disk reads run on the blocking pool
//! under one server-wide bound (`limits.disk_reads_in_flight_max`).
//!
//! With archiving on, LSNs before the log's first local one (removed
//! locally after archiving) are read through the log's
//! `trail_archive::ArchiveReader` and its bounded cache, a step at a time
//! under the same flow control. The reader checks each segment and the
//! manifest chain; this loop checks that the records it gets continue the
//! stream (dense, each linked to the one before), that the last archived
//! record's hash is the one `wal/PREFIX` names, and it resumes the local
//! follower with that hash, so the first local record's link is checked
//! too: the chain holds across the archive/local boundary.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trail_archive::ArchiveReader;
use trail_index::{DerivedLog, Filter, IndexedRecord};
use trail_log::codec::Record as StoredBody;
use trail_log::{Follower, Log, LogError, Lsn, RecordKind, StoredRecord};
use trail_proto::server_view::Record;
use trail_proto::v1::{ReadRequest, RecordKind as ProtoKind};

use super::admin::archive_status_error;
use super::{stopped, LogService, RecordStream};
use crate::limits::READ_CHUNK_RECORDS_MAX;
use crate::metrics::ArchiveMetrics;
use crate::status;

/// Records buffered between the follower and the gRPC stream of one
/// `Read` or `Subscribe`: twice a read step, so the next read can start
/// while the client takes the last. Flow control, not this buffer, absorbs
/// a slow client.
const STREAM_CHANNEL_RECORDS: usize = 2 * READ_CHUNK_RECORDS_MAX;

/// Body bytes one read step gathers at most (past its first record).
const READ_STEP_BYTES_MAX: usize = 1 << 20;

/// Local reads in a row that may find their position archived (the
/// compactor removed it between the check and the read) before the stream
/// gives up: each retry goes to the archive, so more means a bug.
const NOT_LOCAL_RETRIES_MAX: u32 = 3;

/// Serves one `Read`: checks the range against the head, then streams it.
pub(super) async fn read(
    service: &LogService,
    request: ReadRequest,
) -> Result<RecordStream, Status> {
    let ReadRequest {
        log,
        from_lsn,
        to_lsn,
    } = request;
    let open = service.existing_open_log(&log).await?;
    let marks = match &open.derived {
        super::cache::Derived::Running(derived) => Some(Arc::clone(derived)),
        _ => None,
    };
    let log = open.log;
    let head = log.head().lsn;
    let from = Lsn(from_lsn.max(1));
    if to_lsn != 0 && to_lsn > head.0 {
        return Err(Status::not_found(format!(
            "to_lsn: {to_lsn} is beyond the log's head {head}"
        )));
    }
    let to = if to_lsn == 0 { head } else { Lsn(to_lsn) };
    if from.0 > head.0.saturating_add(1) {
        return Err(Status::not_found(format!(
            "from_lsn: {from_lsn} is beyond the log's head {head}"
        )));
    }
    if to_lsn != 0 && from > to {
        return Err(Status::invalid_argument(format!(
            "from_lsn: {from_lsn} is after to_lsn {to_lsn}"
        )));
    }
    let follower = log.follow(from);
    Ok(spawn_stream_of(
        service,
        Some(log),
        follower,
        Some(to),
        None,
        marks,
    ))
}

/// Starts streaming `follower`'s records (through `to`, or following the
/// log when `None`) to a new gRPC stream.
pub(super) fn spawn_stream(
    service: &LogService,
    follower: Follower,
    to: Option<Lsn>,
    filter: Option<Arc<Filter>>,
) -> RecordStream {
    spawn_stream_of(
        service,
        service.stream_log.clone(),
        follower,
        to,
        filter,
        None,
    )
}

/// [`spawn_stream`] knowing the followed `log`: with archiving on, its
/// archived LSNs are served too. With `marks`, records carry
/// `compensated_by` from that state store.
fn spawn_stream_of(
    service: &LogService,
    log: Option<Arc<Log>>,
    follower: Follower,
    to: Option<Lsn>,
    filter: Option<Arc<Filter>>,
    marks: Option<Arc<DerivedLog>>,
) -> RecordStream {
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
    let archive = match (&service.archive, log) {
        (Some(readers), Some(log)) => {
            let (reader, metrics) = readers.reader(log.name());
            Some(ArchiveSource {
                log,
                reader,
                metrics,
            })
        }
        _ => None,
    };
    let stream = StreamRecords {
        follower,
        to,
        filter,
        archive,
        marks,
        chunk: service.shared.limits.read_chunk_records,
        disk_reads: Arc::clone(&service.disk_reads),
        sender,
        shutdown: service.shutdown.clone(),
    };
    tokio::spawn(stream_records(stream));
    ReceiverStream::new(receiver)
}

/// A stored record as the wire shows it: the event goes out as the bytes
/// that are stored (the server view's `Record.event`), never re-encoded.
#[must_use]
pub fn record_to_proto(stored: &StoredRecord) -> Record {
    let StoredBody {
        lsn,
        recorded_at_unix_nanos,
        prev_hash,
        kind,
        batch_last_lsn,
        event,
        ..
    } = &stored.record;
    let (kind, compensates, compensates_hash) = match kind {
        RecordKind::Event => (ProtoKind::Event, 0, Vec::new()),
        RecordKind::CompensationV1 { compensates } => {
            (ProtoKind::Compensation, compensates.0, Vec::new())
        }
        RecordKind::Compensation {
            compensates,
            compensates_hash,
        } => (
            ProtoKind::Compensation,
            compensates.0,
            compensates_hash.0.to_vec(),
        ),
    };
    Record {
        lsn: lsn.0,
        recorded_at_unix_nanos: *recorded_at_unix_nanos,
        prev_hash: prev_hash.0.to_vec(),
        hash: stored.hash.0.to_vec(),
        kind: kind as i32,
        compensates,
        batch_last_lsn: batch_last_lsn.0,
        event: event.clone(),
        compensates_hash,
        compensated_by: 0,
    }
}

/// Which of `records` the state store knows to be compensated, and by
/// which LSN (as far as it has followed the log). A store that cannot
/// answer marks nothing: the marks are derived, the records are not.
pub(super) fn compensation_marks(
    derived: Option<&DerivedLog>,
    records: &[StoredRecord],
) -> HashMap<u64, u64> {
    let (Some(derived), Some(first), Some(last)) = (
        derived,
        records.iter().map(|stored| stored.record.lsn.0).min(),
        records.iter().map(|stored| stored.record.lsn.0).max(),
    ) else {
        return HashMap::new();
    };
    match derived.state().compensations_between(first, last) {
        Ok(pairs) => pairs.into_iter().collect(),
        Err(error) => {
            tracing::warn!(%error, "reading compensation marks failed; records go out unmarked");
            HashMap::new()
        }
    }
}

/// [`record_to_proto`] with its `compensated_by` mark from `marks`.
pub(super) fn marked_record(stored: &StoredRecord, marks: &HashMap<u64, u64>) -> Record {
    let mut record = record_to_proto(stored);
    record.compensated_by = marks.get(&stored.record.lsn.0).copied().unwrap_or(0);
    record
}

/// A log's archived records, for one stream.
#[derive(Clone)]
struct ArchiveSource {
    log: Arc<Log>,
    reader: Arc<ArchiveReader>,
    metrics: Arc<ArchiveMetrics>,
}

/// One stream's reading state.
struct StreamRecords {
    follower: Follower,
    /// The last LSN to send (`Read`); `None` follows the log (`Subscribe`).
    to: Option<Lsn>,
    /// Only records that match are sent (filtered `Subscribe`).
    filter: Option<Arc<Filter>>,
    /// Where LSNs before the log's first local one are read.
    archive: Option<ArchiveSource>,
    /// The state store the `compensated_by` marks come from (`Read`).
    marks: Option<Arc<DerivedLog>>,
    /// Records per read step (at most [`READ_CHUNK_RECORDS_MAX`]).
    chunk: usize,
    /// The server-wide bound on disk reads in flight.
    disk_reads: Arc<Semaphore>,
    sender: mpsc::Sender<Result<Record, Status>>,
    shutdown: watch::Receiver<bool>,
}

/// Streams records from the follower to the client until the range ends,
/// the client goes away, the server stops, or the log fails (the error is
/// the stream's last message).
async fn stream_records(mut stream: StreamRecords) {
    let step = stream.chunk.clamp(1, READ_CHUNK_RECORDS_MAX);
    let mut not_local_retries = 0;
    loop {
        let wanted = match stream.to {
            Some(to) if stream.follower.position() > to => return,
            Some(to) => usize::try_from(to.0 - stream.follower.position().0 + 1)
                .unwrap_or(usize::MAX)
                .min(step),
            None => {
                // Follow: wait (no IO, no thread) for a durable record.
                tokio::select! {
                    waited = stream.follower.wait() => if let Err(error) = waited {
                        let _ = stream.sender.send(Err(status::from_log_error(&error))).await;
                        return;
                    },
                    () = stream.sender.closed() => return,
                    () = stopped(&mut stream.shutdown) => {
                        let _ = stream.sender.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                }
                step
            }
        };
        // Room for the whole step before reading it: a stalled client
        // blocks here, holding nothing the channel does not hold already.
        let slots = tokio::select! {
            slots = stream.sender.reserve_many(wanted) => match slots {
                Ok(slots) => slots,
                Err(_) => return,
            },
            () = stopped(&mut stream.shutdown) => {
                let _ = stream.sender.try_send(Err(Status::unavailable("server is shutting down")));
                return;
            }
        };
        if let Some(archive) = stream.archive.clone() {
            let first_local = archive.log.first_local_lsn();
            if stream.follower.position() < first_local {
                let read = tokio::select! {
                    read = read_archived(&archive, &stream.follower, wanted, first_local) => read,
                    () = stopped(&mut stream.shutdown) => {
                        drop(slots);
                        let _ = stream.sender.send(Err(Status::unavailable("server is shutting down"))).await;
                        return;
                    }
                };
                match read {
                    Ok((records, follower)) => {
                        stream.follower = follower;
                        let marks = compensation_marks(stream.marks.as_deref(), &records);
                        send_records(slots, &records, stream.filter.as_deref(), &marks);
                        not_local_retries = 0;
                        continue;
                    }
                    Err(error) => {
                        drop(slots);
                        let _ = stream.sender.send(Err(error)).await;
                        return;
                    }
                }
            }
        }
        let permit = tokio::select! {
            permit = Arc::clone(&stream.disk_reads).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut stream.shutdown) => return,
        };
        let mut follower = stream.follower;
        let marks_from = stream.marks.clone();
        let read = tokio::task::spawn_blocking(move || {
            let records = follower.read_available(wanted, READ_STEP_BYTES_MAX);
            follower.park();
            let marks = match &records {
                Ok(records) => compensation_marks(marks_from.as_deref(), records),
                Err(_) => HashMap::new(),
            };
            (follower, records, marks)
        })
        .await;
        // Released once the blocking thread is idle again, not from inside
        // it: the next reader then reuses it instead of starting another.
        drop(permit);
        let (follower, records, marks) = match read {
            Ok(read) => read,
            Err(error) => {
                drop(slots);
                let _ = stream
                    .sender
                    .send(Err(Status::internal(format!("reading failed: {error}"))))
                    .await;
                return;
            }
        };
        stream.follower = follower;
        let records = match records {
            Ok(records) => records,
            // Removed locally since the check above: the next pass reads
            // it from the archive.
            Err(LogError::NotLocal { .. })
                if stream.archive.is_some() && not_local_retries < NOT_LOCAL_RETRIES_MAX =>
            {
                not_local_retries += 1;
                continue;
            }
            Err(error) => {
                drop(slots);
                let _ = stream
                    .sender
                    .send(Err(status::from_log_error(&error)))
                    .await;
                return;
            }
        };
        if records.is_empty() && stream.to.is_some() {
            drop(slots);
            let _ = stream
                .sender
                .send(Err(Status::internal(format!(
                    "the log returned no records at lsn {}",
                    stream.follower.position()
                ))))
                .await;
            return;
        }
        not_local_retries = 0;
        send_records(slots, &records, stream.filter.as_deref(), &marks);
    }
}

/// Sends the records that pass `filter` into reserved slots (as many as
/// were reserved; the rest of the slots go back).
fn send_records<'a>(
    slots: impl Iterator<Item = mpsc::Permit<'a, Result<Record, Status>>>,
    records: &[StoredRecord],
    filter: Option<&Filter>,
    marks: &HashMap<u64, u64>,
) {
    let wanted = records.iter().filter(|stored| {
        filter.is_none_or(|filter| filter.matches(&IndexedRecord::from_stored(stored)))
    });
    for (slot, stored) in slots.zip(wanted) {
        slot.send(Ok(marked_record(stored, marks)));
    }
}

/// Reads up to `wanted` archived records from `follower`'s position (all
/// before `first_local`), checks that they continue the stream, and
/// returns them with a follower resumed after the last one.
async fn read_archived(
    archive: &ArchiveSource,
    follower: &Follower,
    wanted: usize,
    first_local: Lsn,
) -> Result<(Vec<StoredRecord>, Follower), Status> {
    let from = follower.position();
    let last =
        Lsn(from.0.saturating_add(wanted as u64).saturating_sub(1)).min(Lsn(first_local.0 - 1));
    let started = Instant::now();
    let read = archive
        .reader
        .read_counted(from, last)
        .await
        .map_err(|error| archive_status_error(&error))?;
    archive
        .metrics
        .read(read.hits, read.misses, started.elapsed());
    let name = archive.log.name();
    let Some(end) = read.records.last() else {
        return Err(Status::data_loss(format!(
            "lsn {from} of log {name} is not on local disk (it starts at lsn {first_local}) and the archive does not hold it"
        )));
    };
    let mut prev_hash = follower.prev_hash();
    for (offset, stored) in (0u64..).zip(&read.records) {
        let expected = Lsn(from.0 + offset);
        if stored.record.lsn != expected {
            return Err(Status::data_loss(format!(
                "the archive of log {name} answered lsn {} where lsn {expected} belongs",
                stored.record.lsn
            )));
        }
        if prev_hash.is_some_and(|hash| hash != stored.record.prev_hash) {
            return Err(Status::data_loss(format!(
                "archived lsn {expected} of log {name} does not link to the record before it"
            )));
        }
        prev_hash = Some(stored.hash);
    }
    let next = end.record.lsn.next();
    let hash = end.hash;
    // Crossing into the local log: the hash `wal/PREFIX` says the first
    // local record links to must be the last archived record's.
    if let Some(prefix) = archive.log.archived_prefix() {
        if prefix.first_lsn == next && prefix.prev_hash != hash {
            return Err(Status::data_loss(format!(
                "the chain of log {name} breaks at the archive/local boundary at lsn {next}: \
                 the archive's lsn {} has hash {hash}, the local log's prefix (wal/PREFIX) names {}: \
                 the archive and the local log are not the same log",
                end.record.lsn, prefix.prev_hash
            )));
        }
    }
    // The local follower (or the next archived step) must link to it.
    Ok((read.records, archive.log.follow_from(next, hash)))
}

//! `Read`: a range of records from disk to the client, a chunk at a time.
//! [`pump`] is the disk-to-stream loop `Subscribe` shares; the two move
//! together onto the engine's follower API when it lands.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trail_log::codec::Record as StoredBody;
use trail_log::{Log, Lsn, RecordKind, StoredRecord};
use trail_proto::server_view::Record;
use trail_proto::v1::{ReadRequest, RecordKind as ProtoKind};

use super::{stopped, LogService, RecordStream};
use crate::status;

/// Records in flight between the disk reader and the gRPC stream of one
/// `Read` or `Subscribe`. Small: flow control, not this buffer, absorbs a
/// slow client.
pub(super) const STREAM_CHANNEL_RECORDS: usize = 16;

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
    let log = service.existing_log(&log).await?;
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
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
    let chunk = service.shared.limits.read_chunk_records;
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(async move {
        pump(&log, from, to, chunk, &sender, &mut shutdown).await;
    });
    Ok(ReceiverStream::new(receiver))
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
    let (kind, compensates) = match kind {
        RecordKind::Event => (ProtoKind::Event, 0),
        RecordKind::Compensation { compensates } => (ProtoKind::Compensation, compensates.0),
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
    }
}

/// Reads `[from, to]` from disk (blocking IO) into wire records.
fn read_chunk(log: &Log, from: Lsn, to: Lsn) -> Result<Vec<Record>, Status> {
    let mut records = Vec::new();
    for item in log.read(from, to) {
        let stored = item.map_err(|error| status::from_log_error(&error))?;
        records.push(record_to_proto(&stored));
    }
    Ok(records)
}

/// Streams records from `next` through `to` into `sender`, a chunk at a time.
/// Returns the next LSN to send, or `None` when the stream is over (client
/// gone, shutdown, or an error that was sent).
pub(super) async fn pump(
    log: &Arc<Log>,
    mut next: Lsn,
    to: Lsn,
    chunk: usize,
    sender: &mpsc::Sender<Result<Record, Status>>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Lsn> {
    let chunk = u64::try_from(chunk).unwrap_or(u64::MAX).max(1);
    while next <= to {
        let end = Lsn(to.0.min(next.0.saturating_add(chunk - 1)));
        let reader = Arc::clone(log);
        let result = tokio::task::spawn_blocking(move || read_chunk(&reader, next, end))
            .await
            .unwrap_or_else(|error| Err(Status::internal(format!("reading failed: {error}"))));
        let records = match result {
            Ok(records) => records,
            Err(status) => {
                let _ = sender.send(Err(status)).await;
                return None;
            }
        };
        let Some(last) = records.last() else {
            let _ = sender
                .send(Err(Status::internal(format!(
                    "the log returned no records for {next}..={end}"
                ))))
                .await;
            return None;
        };
        if records.first().map(|record| record.lsn) != Some(next.0) {
            let _ = sender
                .send(Err(Status::internal(format!("the log skipped LSN {next}"))))
                .await;
            return None;
        }
        next = Lsn(last.lsn + 1);
        for record in records {
            tokio::select! {
                sent = sender.send(Ok(record)) => if sent.is_err() { return None },
                () = stopped(shutdown) => {
                    let _ = sender.try_send(Err(Status::unavailable("server is shutting down")));
                    return None;
                }
            }
        }
    }
    Some(next)
}

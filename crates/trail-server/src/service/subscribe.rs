//! `Subscribe`: catch up from disk, then follow the log's durable head as
//! it grows, through one engine follower (see `read.rs`), until the client
//! goes away, the server stops, or the log closes or fail-stops.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trail_log::Lsn;
use trail_proto::v1::SubscribeRequest;

use super::read::{stream_records, StreamRecords, STREAM_CHANNEL_RECORDS};
use super::{LogService, RecordStream};

/// Serves one `Subscribe`: records from `from_lsn` on, then new ones as they
/// become durable.
pub(super) async fn subscribe(
    service: &LogService,
    request: SubscribeRequest,
) -> Result<RecordStream, Status> {
    let SubscribeRequest { log, from_lsn } = request;
    let log = service.existing_log(&log).await?;
    let head = log.head().lsn;
    let from = Lsn(from_lsn.max(1));
    if from.0 > head.0.saturating_add(1) {
        return Err(Status::not_found(format!(
            "from_lsn: {from_lsn} is beyond the log's head {head}; subscribe from at most {}",
            head.0 + 1
        )));
    }
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
    let stream = StreamRecords {
        follower: log.follow(from),
        to: None,
        chunk: service.shared.limits.read_chunk_records,
        disk_reads: Arc::clone(&service.disk_reads),
        sender,
        shutdown: service.shutdown.clone(),
    };
    tokio::spawn(stream_records(stream));
    Ok(ReceiverStream::new(receiver))
}

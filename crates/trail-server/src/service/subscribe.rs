//! `Subscribe`: catch up from disk with [`pump`], then follow the log's
//! durable head as it grows, until the client goes away or the server
//! stops.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trail_log::Lsn;
use trail_proto::v1::SubscribeRequest;

use super::read::{pump, STREAM_CHANNEL_RECORDS};
use super::{stopped, LogService, RecordStream};

/// Serves one `Subscribe`: records from `from_lsn` on, then new ones as they
/// become durable.
pub(super) async fn subscribe(
    service: &LogService,
    request: SubscribeRequest,
) -> Result<RecordStream, Status> {
    let SubscribeRequest { log, from_lsn } = request;
    let log = service.existing_log(&log).await?;
    let mut heads = log.watch_head();
    let head = heads.borrow_and_update().lsn;
    let from = Lsn(from_lsn.max(1));
    if from.0 > head.0.saturating_add(1) {
        return Err(Status::not_found(format!(
            "from_lsn: {from_lsn} is beyond the log's head {head}; subscribe from at most {}",
            head.0 + 1
        )));
    }
    let (sender, receiver) = mpsc::channel(STREAM_CHANNEL_RECORDS);
    let chunk = service.shared.limits.read_chunk_records;
    let mut shutdown = service.shutdown.clone();
    tokio::spawn(async move {
        let mut next = from;
        loop {
            let head = heads.borrow_and_update().lsn;
            if next <= head {
                match pump(&log, next, head, chunk, &sender, &mut shutdown).await {
                    Some(after) => next = after,
                    None => return,
                }
                continue;
            }
            tokio::select! {
                changed = heads.changed() => if changed.is_err() {
                    let _ = sender.send(Err(Status::unavailable("the log was closed"))).await;
                    return;
                },
                () = sender.closed() => return,
                () = stopped(&mut shutdown) => {
                    let _ = sender.send(Err(Status::unavailable("server is shutting down"))).await;
                    return;
                }
            }
        }
    });
    Ok(ReceiverStream::new(receiver))
}

//! `Subscribe`: catch up from disk, then follow the log's durable head as
//! it grows, through one engine follower (see `read.rs`), until the client
//! goes away, the server stops, or the log closes or fail-stops. With a
//! filter, only matching records are sent: the same [`Filter`] Query uses,
//! tested on each record as it passes.

use std::sync::Arc;

use tonic::Status;
use trail_index::Filter;
use trail_log::Lsn;
use trail_proto::v1::SubscribeRequest;

use super::query::index_status;
use super::read::spawn_stream;
use super::{LogService, RecordStream};

/// Serves one `Subscribe`: records from `from_lsn` on, then new ones as they
/// become durable.
pub(super) async fn subscribe(
    service: &LogService,
    request: SubscribeRequest,
) -> Result<RecordStream, Status> {
    let SubscribeRequest {
        log,
        from_lsn,
        filter,
    } = request;
    let filter = match filter {
        Some(filter) => Filter::from_proto(&filter, service.shared.limits.query_filters_max)
            .map_err(|error| index_status(&error))?,
        None => Filter::default(),
    };
    let log = service.existing_log(&log).await?;
    let head = log.head().lsn;
    let from = Lsn(from_lsn.max(1));
    if from.0 > head.0.saturating_add(1) {
        return Err(Status::not_found(format!(
            "from_lsn: {from_lsn} is beyond the log's head {head}; subscribe from at most {}",
            head.0 + 1
        )));
    }
    let filter = (!filter.is_empty()).then(|| Arc::new(filter));
    Ok(spawn_stream(service, log.follow(from), None, filter))
}

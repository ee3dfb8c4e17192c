//! `Head`: a log's last durable LSN and its hash.

use tonic::Status;
use trail_proto::v1::{HeadRequest, HeadResponse};

use super::LogService;

/// Serves one `Head`.
pub(super) async fn head(
    service: &LogService,
    request: HeadRequest,
) -> Result<HeadResponse, Status> {
    let HeadRequest { log } = request;
    let head = service.existing_log(&log).await?.head();
    Ok(HeadResponse {
        lsn: head.lsn.0,
        hash: head.hash.0.to_vec(),
    })
}

//! `Head`: a log's last durable LSN and its hash, or why it is out of
//! service.

use tonic::Status;
use trail_proto::v1::{HeadRequest, HeadResponse};

use super::LogService;
use crate::validate;

/// Serves one `Head`. The one RPC that answers OK for a damaged log: it
/// says why the log is out of service, so a dashboard can show every log's
/// state with one call each.
pub(super) async fn head(
    service: &LogService,
    request: HeadRequest,
) -> Result<HeadResponse, Status> {
    let HeadRequest { log } = request;
    let name = validate::log_name(&log)?;
    if let Some(damaged) = service.shared.cache.damaged(&name) {
        return Ok(HeadResponse {
            lsn: 0,
            hash: Vec::new(),
            damage: damaged.damage,
        });
    }
    let head = service.existing_log(&log).await?.head();
    Ok(HeadResponse {
        lsn: head.lsn.0,
        hash: head.hash.0.to_vec(),
        damage: String::new(),
    })
}

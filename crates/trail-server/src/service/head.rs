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
    let damaged = |name| {
        service
            .shared
            .cache
            .damaged(name)
            .map(|damaged| HeadResponse {
                lsn: 0,
                hash: Vec::new(),
                damage: damaged.damage,
            })
    };
    if let Some(response) = damaged(&name) {
        return Ok(response);
    }
    // Opening the log (or background verification since it opened) may
    // find it damaged just now: that is still an answer, not an error.
    let head = match service.existing_log(&log).await {
        Ok(log) => log.head(),
        Err(status) => return damaged(&name).ok_or(status),
    };
    Ok(HeadResponse {
        lsn: head.lsn.0,
        hash: head.hash.0.to_vec(),
        damage: String::new(),
    })
}

//! `Head`: a log's last durable LSN and its hash, or why it is out of
//! service.

use tonic::Status;
use trail_proto::v1::{HeadRequest, HeadResponse};

use super::cache::Derived;
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
                damage: damaged.damage,
                ..HeadResponse::default()
            })
    };
    if let Some(response) = damaged(&name) {
        return Ok(response);
    }
    // Opening the log (or background verification since it opened) may
    // find it damaged just now: that is still an answer, not an error.
    let open = match service.existing_open_log(&log).await {
        Ok(open) => open,
        Err(status) => return damaged(&name).ok_or(status),
    };
    let head = open.log.head();
    let (index_lsn, state_lsn, derived_error) = match &open.derived {
        Derived::Running(derived) => {
            let query = derived.query_progress().borrow().clone();
            let state = derived.state_progress().borrow().clone();
            let (index_lsn, state_lsn) = (query.lsn(), state.lsn());
            let errors: Vec<String> = [("query index", query.error), ("state store", state.error)]
                .into_iter()
                .filter_map(|(store, error)| error.map(|error| format!("{store}: {error}")))
                .collect();
            (index_lsn, state_lsn, errors.join("; "))
        }
        Derived::Off => (0, 0, String::new()),
        Derived::Failed(reason) => (0, 0, reason.clone()),
    };
    Ok(HeadResponse {
        lsn: head.lsn.0,
        hash: head.hash.0.to_vec(),
        damage: String::new(),
        index_lsn,
        state_lsn,
        derived_error,
    })
}

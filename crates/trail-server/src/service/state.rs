//! `GetState` and `History`: a resource's JSON state (now, or as of an LSN
//! or a time) and its field-level history, from the log's state store.
//! Both can wait (bounded) until the store has taken in an LSN; a state as
//! of an LSN waits for that LSN, so it is never answered from a store that
//! has not seen it yet.

use std::sync::Arc;

use tonic::Status;
use trail_log::Lsn;
use trail_proto::v1::{
    FieldChange as FieldChangeProto, GetStateRequest, GetStateResponse, HistoryRequest,
    HistoryResponse, Outcome, StateChangeRow,
};
use trail_state::{ChangeKind, ChangeResult, HistoryEntry, StateError};

use super::query::{page_limit, wait_for, wait_timeout};
use super::LogService;
use crate::status;

/// A resource name must be given and bounded like the event field it is.
pub(super) fn resource_name<'a>(
    resource: &'a str,
    service: &LogService,
) -> Result<&'a str, Status> {
    if resource.is_empty() {
        return Err(Status::invalid_argument("resource: must not be empty"));
    }
    let max = service.shared.limits.field_bytes_max;
    if resource.len() > max {
        return Err(Status::invalid_argument(format!(
            "resource: is {} bytes; the limit is {max} (limits.field_bytes_max)",
            resource.len()
        )));
    }
    Ok(resource)
}

pub(super) fn state_status(error: &StateError) -> Status {
    let code = status::code_for(trail_index::error::state_error_kind(error));
    if code == tonic::Code::Internal {
        tracing::error!(%error, "state store failed");
    }
    Status::new(code, format!("state store: {error}"))
}

/// Serves one `GetState`.
pub(super) async fn get_state(
    service: &LogService,
    request: GetStateRequest,
) -> Result<GetStateResponse, Status> {
    let GetStateRequest {
        log,
        resource,
        at_lsn,
        at_unix_nanos,
        min_lsn,
        min_lsn_timeout_ms,
    } = request;
    let resource = resource_name(&resource, service)?.to_owned();
    if at_lsn != 0 && at_unix_nanos.is_some() {
        return Err(Status::invalid_argument(
            "at_lsn and at_unix_nanos: give at most one",
        ));
    }
    let open = service.existing_open_log(&log).await?;
    let head = open.log.head().lsn;
    if at_lsn > head.0 {
        return Err(Status::not_found(format!(
            "at_lsn: {at_lsn} is beyond the log's head {head}"
        )));
    }
    let derived = Arc::clone(open.derived.running()?);
    let timeout = wait_timeout(min_lsn_timeout_ms, &service.shared.limits)?;
    derived.want_state(min_lsn.max(at_lsn));
    wait_for(
        derived.state_progress(),
        min_lsn.max(at_lsn),
        timeout,
        "state store",
    )
    .await?;
    let answer = tokio::task::spawn_blocking(move || match at_unix_nanos {
        Some(at) => derived.state().state_at_time(&resource, at),
        None => derived
            .state()
            .state(&resource, (at_lsn != 0).then_some(at_lsn)),
    })
    .await
    .map_err(|error| Status::internal(format!("state read failed: {error}")))?
    .map_err(|error| state_status(&error))?;
    let watermark = answer.watermark;
    Ok(GetStateResponse {
        exists: answer.state.is_some(),
        state_json: answer
            .state
            .map(|state| state.to_string())
            .unwrap_or_default(),
        last_change_lsn: answer.last_change_lsn.unwrap_or(0),
        state_lsn: watermark.map_or(0, |watermark| watermark.lsn),
        state_hash: watermark.map_or_else(Vec::new, |watermark| watermark.hash.to_vec()),
    })
}

/// Serves one `History`.
pub(super) async fn history(
    service: &LogService,
    request: HistoryRequest,
) -> Result<HistoryResponse, Status> {
    let HistoryRequest {
        log,
        resource,
        from_lsn,
        to_lsn,
        limit,
        min_lsn,
        min_lsn_timeout_ms,
    } = request;
    let resource = resource_name(&resource, service)?.to_owned();
    let limits = &service.shared.limits;
    let limit = page_limit(limit, limits)?;
    let to = if to_lsn == 0 { u64::MAX } else { to_lsn };
    let from = from_lsn.max(1);
    if from > to {
        return Err(Status::invalid_argument(format!(
            "from_lsn: {from_lsn} is after to_lsn {to_lsn}"
        )));
    }
    let open = service.existing_open_log(&log).await?;
    let derived = Arc::clone(open.derived.running()?);
    let timeout = wait_timeout(min_lsn_timeout_ms, limits)?;
    derived.want_state(min_lsn);
    let progress = wait_for(derived.state_progress(), min_lsn, timeout, "state store").await?;
    // Rows past the watermark the answer names are not in it (a batch may
    // land between the two reads).
    let through = progress.lsn().min(to);
    let rows = tokio::task::spawn_blocking(move || {
        derived
            .state()
            .history(&resource, from, through, limit.saturating_add(1))
    })
    .await
    .map_err(|error| Status::internal(format!("history read failed: {error}")))?
    .map_err(|error| state_status(&error))?;
    let more = rows.len() > limit;
    let changes: Vec<StateChangeRow> = rows.into_iter().take(limit).map(row).collect();
    let next_from_lsn = match (more, changes.last()) {
        (true, Some(last)) => Lsn(last.lsn).next().0,
        _ => 0,
    };
    Ok(HistoryResponse {
        changes,
        state_lsn: progress.lsn(),
        next_from_lsn,
    })
}

fn outcome(name: &str) -> Outcome {
    match name {
        "success" => Outcome::Success,
        "failure" => Outcome::Failure,
        "denied" => Outcome::Denied,
        _ => Outcome::Unspecified,
    }
}

fn row(entry: HistoryEntry) -> StateChangeRow {
    let change_kind = match entry.kind {
        ChangeKind::Set => "set",
        ChangeKind::MergePatch => "merge_patch",
        ChangeKind::JsonPatch => "json_patch",
        ChangeKind::Delete => "delete",
        ChangeKind::Fields => "field_changes",
        ChangeKind::None => "none",
    };
    let (applied, rejected_reason, fields) = match entry.result {
        ChangeResult::Applied { fields } => (
            true,
            String::new(),
            fields
                .into_iter()
                .map(|field| FieldChangeProto {
                    path: field.path,
                    before_json: field.before.map(|value| value.to_string()),
                    after_json: field.after.map(|value| value.to_string()),
                })
                .collect(),
        ),
        ChangeResult::Rejected { reason } => (false, reason, Vec::new()),
    };
    StateChangeRow {
        lsn: entry.lsn,
        recorded_at_unix_nanos: entry.recorded_at_unix_nanos,
        actor: entry.actor,
        action: entry.action,
        outcome: outcome(&entry.outcome) as i32,
        change_kind: change_kind.to_owned(),
        applied,
        rejected_reason,
        fields,
        compensates: entry.compensates.unwrap_or(0),
        reason: entry.reason.unwrap_or_default(),
        compensated_by: entry.compensated_by.unwrap_or(0),
    }
}

//! `Verify`: re-check the hash chain over an LSN range on the server.

use tonic::Status;
use trail_log::Lsn;
use trail_proto::v1::{VerifyRequest, VerifyResponse};

use super::LogService;
use crate::status;

/// Serves one `Verify`: checks the range against the head, then re-reads
/// and re-hashes it on the blocking pool.
pub(super) async fn verify(
    service: &LogService,
    request: VerifyRequest,
) -> Result<VerifyResponse, Status> {
    let VerifyRequest {
        log,
        from_lsn,
        to_lsn,
    } = request;
    let log = service.existing_log(&log).await?;
    let head = log.head();
    let from = Lsn(from_lsn.max(1));
    if to_lsn > head.lsn.0 {
        return Err(Status::not_found(format!(
            "to_lsn: {to_lsn} is beyond the log's head {}",
            head.lsn
        )));
    }
    let to = if to_lsn == 0 { head.lsn } else { Lsn(to_lsn) };
    if from > to {
        if to_lsn == 0 && from_lsn <= 1 {
            // An empty log verifies trivially.
            return Ok(VerifyResponse {
                verified: 0,
                head_lsn: head.lsn.0,
                head_hash: head.hash.0.to_vec(),
                first_bad_lsn: 0,
                reason: String::new(),
                compensations_checked: 0,
                compensations_unchecked: 0,
            });
        }
        if from > head.lsn {
            return Err(Status::not_found(format!(
                "from_lsn: {from_lsn} is beyond the log's head {}",
                head.lsn
            )));
        }
        return Err(Status::invalid_argument(format!(
            "from_lsn: {from_lsn} is after to_lsn {to_lsn}"
        )));
    }
    let report = tokio::task::spawn_blocking(move || log.verify(from, to, &mut |_| {}))
        .await
        .map_err(|error| Status::internal(format!("verify failed: {error}")))?
        .map_err(|error| status::from_log_error(&error))?;
    let (first_bad_lsn, reason) = match &report.failure {
        None => (0, String::new()),
        Some(failure) => (
            failure.lsn.0,
            format!(
                "{} (file {}, offset {})",
                failure.reason,
                failure.file.display(),
                failure.offset
            ),
        ),
    };
    Ok(VerifyResponse {
        verified: report.verified,
        head_lsn: report.last.0,
        head_hash: report.head_hash.0.to_vec(),
        first_bad_lsn,
        reason,
        compensations_checked: report.compensations_checked,
        compensations_unchecked: report.compensations_unchecked,
    })
}

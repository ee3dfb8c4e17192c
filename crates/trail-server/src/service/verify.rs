//! `Verify`: re-check the hash chain over an LSN range on the server.
//!
//! With archiving on, the part of the range before the log's first local
//! LSN (removed locally after archiving) is checked from the bucket, not
//! from the read-through cache: the manifest chain from LSN 1 and every
//! segment holding part of the range, in full
//! (`trail_archive::verify_archived_range`). The chain is then checked
//! across the archive/local boundary: the last archived record's hash must
//! be the one `wal/PREFIX` names, which is where the local verification
//! starts from. The response covers both parts (`verified` counts the
//! archived records too); damage in the archive, or a boundary that does
//! not hold, answers DATA_LOSS naming the object or the boundary LSN.

use std::sync::Arc;

use tonic::Status;
use trail_log::{Log, Lsn, VerifyReport};
use trail_proto::v1::{VerifyRequest, VerifyResponse};

use super::admin::archive_status_error;
use super::cache::ArchiveReaders;
use super::LogService;
use crate::status;

/// Times one `Verify` starts over when the compactor removed more local
/// segments while it ran (the local part then starts later than the
/// archived part ended): each retry follows a removal, so more means a bug.
const BOUNDARY_RETRIES_MAX: u32 = 3;

/// What the archived part of a range verified.
struct ArchivedPart {
    verified: u64,
    last: Lsn,
    last_hash: trail_log::RecordHash,
}

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
    let (archived, report) = match &service.archive {
        Some(archive) => verify_through_archive(archive, &log, from, to).await?,
        None => (None, verify_local(&log, from, to).await?),
    };
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
    let archived_verified = archived.as_ref().map_or(0, |part| part.verified);
    // The head of what verified: the local part's when it checked any
    // record (or failed), else the archived part's.
    let (head_lsn, head_hash) = match &archived {
        Some(part) if report.verified == 0 && report.failure.is_none() => {
            (part.last, part.last_hash)
        }
        _ => (report.last, report.head_hash),
    };
    Ok(VerifyResponse {
        verified: archived_verified + report.verified,
        head_lsn: head_lsn.0,
        head_hash: head_hash.0.to_vec(),
        first_bad_lsn,
        reason,
        compensations_checked: report.compensations_checked,
        compensations_unchecked: report.compensations_unchecked,
    })
}

/// The local log's verification of `from..=to`, on the blocking pool.
async fn verify_local(log: &Arc<Log>, from: Lsn, to: Lsn) -> Result<VerifyReport, Status> {
    let log = Arc::clone(log);
    tokio::task::spawn_blocking(move || log.verify(from, to, &mut |_| {}))
        .await
        .map_err(|error| Status::internal(format!("verify failed: {error}")))?
        .map_err(|error| status::from_log_error(&error))
}

/// `from..=to` with the LSNs before the log's first local one checked from
/// the archive, and the link between the two parts.
async fn verify_through_archive(
    archive: &ArchiveReaders,
    log: &Arc<Log>,
    from: Lsn,
    to: Lsn,
) -> Result<(Option<ArchivedPart>, VerifyReport), Status> {
    let name = log.name();
    // Bounded: each pass follows a removal of local segments.
    for _ in 0..=BOUNDARY_RETRIES_MAX {
        let first_local = log.first_local_lsn();
        if from >= first_local {
            return Ok((None, verify_local(log, from, to).await?));
        }
        let archived_to = to.min(Lsn(first_local.0 - 1));
        let part = trail_archive::verify_archived_range(archive.target(), name, from, archived_to)
            .await
            .map_err(|error| archive_status_error(&error))?;
        let part = ArchivedPart {
            verified: part.verified,
            last: part.last,
            last_hash: part.last_hash,
        };
        if archived_to == to {
            let report = VerifyReport {
                archived_prefix: log.archived_prefix(),
                ..empty_report(to)
            };
            return Ok((Some(part), report));
        }
        let report = verify_local(log, first_local, to).await?;
        // The local part started where the prefix it was checked against
        // says; a later start means the compactor removed more meanwhile.
        let Some(prefix) = report.archived_prefix.clone() else {
            return Err(Status::data_loss(format!(
                "log {name} keeps no archived prefix (wal/PREFIX) but its local part starts at lsn {first_local}"
            )));
        };
        if prefix.first_lsn != first_local {
            continue;
        }
        if prefix.prev_hash != part.last_hash {
            return Err(Status::data_loss(format!(
                "the chain of log {name} breaks at the archive/local boundary at lsn {first_local}: \
                 the archive's lsn {} has hash {}, the local log's prefix (wal/PREFIX) names {}: \
                 the archive and the local log are not the same log",
                part.last, part.last_hash, prefix.prev_hash
            )));
        }
        return Ok((Some(part), report));
    }
    Err(Status::unavailable(format!(
        "the local part of log {name} kept moving while it was verified; try again"
    )))
}

/// A report of no local records, ending at `to`.
fn empty_report(to: Lsn) -> VerifyReport {
    VerifyReport {
        verified: 0,
        first: to.next(),
        last: to,
        head_hash: trail_log::RecordHash([0; 32]),
        failure: None,
        archived_prefix: None,
        torn_tail: None,
        compensations_checked: 0,
        compensations_unchecked: 0,
    }
}

//! Verifying a range of a log against its own bytes: every frame's CRC,
//! LSN density, the chain from record to record and from segment to
//! segment, every seal, and time never going backwards. One path serves
//! `Log::verify` (online, over the catalog), offline verification of a copy
//! (`offline::verify`, over what planning found) and the background
//! verification of segments trusted at open.

use std::path::PathBuf;

use crate::catalog::SegmentEntry;
use crate::error::{LogError, Result};
use crate::fs::FileSystem;
use crate::prefix::ArchivedPrefix;
use crate::segment::{scan_segment, ScannedRecord, SegmentHeader, TornTail};
use crate::types::{Lsn, RecordHash};

/// Where verification found the log wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyFailure {
    /// The first LSN that failed.
    pub lsn: Lsn,
    /// The file it is in.
    pub file: PathBuf,
    /// Byte offset in that file.
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

impl VerifyFailure {
    /// The failure a corruption error describes; any other error back.
    ///
    /// # Errors
    /// `error` itself when it is not [`LogError::Corruption`].
    pub fn from_corruption(error: LogError) -> Result<VerifyFailure> {
        match error {
            LogError::Corruption {
                file,
                offset,
                lsn,
                reason,
            } => Ok(VerifyFailure {
                lsn,
                file,
                offset,
                reason,
            }),
            other => Err(other),
        }
    }
}

/// The result of verifying a range of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records in the range that passed every check.
    pub verified: u64,
    /// First LSN of the range.
    pub first: Lsn,
    /// Last LSN that passed.
    pub last: Lsn,
    /// Hash of the last LSN that passed (chain head of the verified prefix).
    pub head_hash: RecordHash,
    /// The first failure, if any.
    pub failure: Option<VerifyFailure>,
    /// When the log's earlier records are archived: where the local part
    /// starts and what vouches for the hash it was checked against.
    pub archived_prefix: Option<ArchivedPrefix>,
    /// Bytes past the durable end of the active segment that the next open
    /// would cut (offline verification of a copy only).
    pub torn_tail: Option<TornTail>,
}

impl VerifyReport {
    pub(crate) fn empty(from: Lsn, head_hash: RecordHash) -> VerifyReport {
        VerifyReport {
            verified: 0,
            first: from,
            last: Lsn(from.0.saturating_sub(1)),
            head_hash,
            failure: None,
            archived_prefix: None,
            torn_tail: None,
        }
    }
}

/// Verifies `from..=to` over `segments` (the log's local segments, in LSN
/// order). The chain into the first local segment is checked against the
/// genesis value or the archived prefix's hash; into a later one (a range
/// that starts mid-log), taken from its header.
pub(crate) fn verify_range(
    fs: &dyn FileSystem,
    genesis: RecordHash,
    segments: &[SegmentEntry],
    prefix: Option<&ArchivedPrefix>,
    from: Lsn,
    to: Lsn,
    progress: &mut dyn FnMut(Lsn),
) -> Result<VerifyReport> {
    let first_local = prefix.map_or(Lsn::FIRST, |prefix| prefix.first_lsn);
    let from = from.max(first_local);
    let start = segments.partition_point(|entry| entry.last_lsn < from);
    let (mut prev_hash, mut recorded_at_floor) = match (start, prefix) {
        (0, Some(prefix)) => (prefix.prev_hash, prefix.prev_recorded_at_unix_nanos),
        (0, None) => (genesis, i64::MIN),
        _ => (segments[start].prev_hash, i64::MIN),
    };
    let mut report = VerifyReport::empty(from, prev_hash);
    report.archived_prefix = prefix.cloned();
    for entry in &segments[start..] {
        if entry.first_lsn > to {
            break;
        }
        let file = fs
            .open_read(&entry.path)
            .map_err(|error| LogError::io("opening", &entry.path, error))?;
        let expected = SegmentHeader {
            log_id: genesis,
            first_lsn: entry.first_lsn,
            prev_hash,
        };
        let mut visit = |scanned: &ScannedRecord<'_>| {
            let lsn = scanned.record.lsn;
            if lsn >= from && lsn <= to {
                report.verified += 1;
                report.last = lsn;
                report.head_hash = scanned.hash;
                if report.verified.is_multiple_of(4096) {
                    progress(lsn);
                }
            }
        };
        let limit = (!entry.sealed).then_some(entry.limit);
        let scan = match scan_segment(
            file.as_ref(),
            &entry.path,
            &expected,
            limit,
            recorded_at_floor,
            &mut visit,
        ) {
            Ok(scan) => scan,
            Err(error) => {
                report.failure = Some(VerifyFailure::from_corruption(error)?);
                return Ok(report);
            }
        };
        if let Some(damage) = scan.damage {
            if damage.lsn <= to {
                report.failure = Some(VerifyFailure {
                    lsn: damage.lsn,
                    file: entry.path.clone(),
                    offset: damage.offset,
                    reason: damage.reason,
                });
                return Ok(report);
            }
        }
        if entry.sealed && scan.seal.is_none() {
            report.failure = Some(VerifyFailure {
                lsn: scan.last_lsn.next(),
                file: entry.path.clone(),
                offset: scan.end_offset,
                reason: "sealed segment has no valid seal".into(),
            });
            return Ok(report);
        }
        prev_hash = scan.last_hash;
        recorded_at_floor = scan.last_recorded_at_unix_nanos;
    }
    progress(report.last);
    Ok(report)
}

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
use crate::types::{Lsn, RecordHash, RecordKind};

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
    /// Compensation records in the range whose link was checked: the LSN
    /// they undo is earlier, holds a record whose hash is the one they name
    /// (format-2 compensations), and no other compensation in the range
    /// undoes it too.
    pub compensations_checked: u64,
    /// Compensations in the range whose target is not on the local disk
    /// (archived): the LSN order and the "once" rule were checked, the hash
    /// was not.
    pub compensations_unchecked: u64,
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
            compensations_checked: 0,
            compensations_unchecked: 0,
        }
    }

    /// Records `failure` unless an earlier one is already there: a report
    /// names the first failure by LSN.
    fn fail_at(&mut self, failure: VerifyFailure) {
        if self
            .failure
            .as_ref()
            .is_none_or(|existing| failure.lsn < existing.lsn)
        {
            self.failure = Some(failure);
        }
    }
}

/// The compensation rules every verifier applies, local or from the
/// archive (FORMAT.md 6.3): a compensation undoes an earlier record, and no
/// record is undone twice. Feed it the compensations in LSN order; it holds
/// one entry per compensation.
#[derive(Debug, Default)]
pub struct CompensationRules {
    undone_by: std::collections::HashMap<Lsn, Lsn>,
}

impl CompensationRules {
    /// Checks the compensation at `lsn` that undoes `target`.
    ///
    /// # Errors
    /// What is wrong, as a verify failure's reason.
    pub fn admit(&mut self, lsn: Lsn, target: Lsn) -> std::result::Result<(), String> {
        if target >= lsn || target == Lsn::ZERO {
            return Err(format!(
                "compensation at lsn {lsn} undoes lsn {target}, which is not an earlier record"
            ));
        }
        if let Some(first) = self.undone_by.insert(target, lsn) {
            return Err(format!(
                "lsn {target} is compensated twice: by lsn {first} and by lsn {lsn}"
            ));
        }
        Ok(())
    }

    /// The reason for a compensation whose named hash is not its target's.
    #[must_use]
    pub fn wrong_hash(lsn: Lsn, target: Lsn, named: RecordHash, actual: RecordHash) -> String {
        format!(
            "compensation at lsn {lsn} names hash {named} for lsn {target}, whose hash is {actual}"
        )
    }
}

/// A compensation seen while scanning, checked once the scan is done.
struct CompensationLink {
    lsn: Lsn,
    target: Lsn,
    /// `None` for a format-1 compensation, which names no hash.
    target_hash: Option<RecordHash>,
    file: PathBuf,
    offset: u64,
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
    let mut links = Vec::new();
    let mut report = verify_chain(
        fs, genesis, segments, prefix, from, to, progress, &mut links,
    )?;
    check_compensations(fs, segments, &links, &mut report)?;
    Ok(report)
}

/// The compensation rules (FORMAT.md 6.3) for the links found in a range:
/// each undoes an earlier LSN, once, and names that record's hash. Links
/// past a chain failure are not trusted and not checked. Memory: one entry
/// per compensation in the range.
fn check_compensations(
    fs: &dyn FileSystem,
    segments: &[SegmentEntry],
    links: &[CompensationLink],
    report: &mut VerifyReport,
) -> Result<()> {
    let chain_ok_through = report
        .failure
        .as_ref()
        .map_or(Lsn(u64::MAX), |f| Lsn(f.lsn.0.saturating_sub(1)));
    let mut rules = CompensationRules::default();
    for link in links.iter().filter(|link| link.lsn <= chain_ok_through) {
        let failure = |reason: String| VerifyFailure {
            lsn: link.lsn,
            file: link.file.clone(),
            offset: link.offset,
            reason,
        };
        if let Err(reason) = rules.admit(link.lsn, link.target) {
            report.fail_at(failure(reason));
            return Ok(());
        }
        let Some(expected) = link.target_hash else {
            report.compensations_checked += 1;
            continue;
        };
        let index = segments.partition_point(|entry| entry.last_lsn < link.target);
        let Some(entry) = segments
            .get(index)
            .filter(|entry| entry.first_lsn <= link.target)
        else {
            report.compensations_unchecked += 1;
            continue;
        };
        let stored = match crate::read::read_single(fs, entry, link.target) {
            Ok(stored) => stored,
            Err(error @ LogError::Corruption { .. }) => {
                report.fail_at(VerifyFailure::from_corruption(error)?);
                return Ok(());
            }
            Err(other) => return Err(other),
        };
        if stored.hash != expected {
            report.fail_at(failure(CompensationRules::wrong_hash(
                link.lsn,
                link.target,
                expected,
                stored.hash,
            )));
            return Ok(());
        }
        report.compensations_checked += 1;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // verify_range's arguments plus where links go
fn verify_chain(
    fs: &dyn FileSystem,
    genesis: RecordHash,
    segments: &[SegmentEntry],
    prefix: Option<&ArchivedPrefix>,
    from: Lsn,
    to: Lsn,
    progress: &mut dyn FnMut(Lsn),
    links: &mut Vec<CompensationLink>,
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
                let (target, target_hash) = match scanned.record.kind {
                    RecordKind::Event => (None, None),
                    RecordKind::CompensationV1 { compensates } => (Some(compensates), None),
                    RecordKind::Compensation {
                        compensates,
                        compensates_hash,
                    } => (Some(compensates), Some(compensates_hash)),
                };
                if let Some(target) = target {
                    links.push(CompensationLink {
                        lsn,
                        target,
                        target_hash,
                        file: entry.path.clone(),
                        offset: scanned.offset,
                    });
                }
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

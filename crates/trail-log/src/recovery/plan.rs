//! Reading and deciding: what a log's files say the log is, and what would
//! have to be repaired before it takes writes. Nothing here writes; the one
//! step that does is [`super::repair`], and only with a plan made here.

use std::path::{Path, PathBuf};

use crate::catalog::{ActiveTail, Catalog, SegmentEntry, Tip};
use crate::clean_close::{read_clean_close, CleanClose};
use crate::codec::{self, Body};
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::ids::{EventIdIndex, SealedIds};
use crate::index::{
    index_from_scan, read_index_head, scan_collecting, sealed_index, Collected, SegmentIndex,
};
use crate::prefix::{ArchivedPrefix, PREFIX_FILE_NAME};
use crate::segment::{
    self, check_sealed_end, decode_footer, max_durable_watermark_after, SegmentHeader, SegmentScan,
    FOOTER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::types::{Lsn, RecordHash};

use crate::segment::TornTail;

/// One write recovery must make before the log takes writes, in the order
/// the plan lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RepairStep {
    /// A crash interrupted a seal after its frame was written: write the
    /// footer and trim the file.
    FinishSeal {
        path: PathBuf,
        seal_offset: u64,
        footer_offset: u64,
    },
    /// A sealed segment has no sidecar: write the one its scan built.
    WriteSidecar { path: PathBuf, index: SegmentIndex },
    /// Keep the torn bytes beside the segment, then zero them.
    CutTornTail(TornTail),
    /// Make what a crashed process wrote into the active segment durable
    /// before any new record names it in its durable watermark. The bytes
    /// from `rewrite_from` to `end` (the records after the last one a
    /// `durable_lsn` vouches for, from the sparse entry before them) are
    /// written again first: after a failed writeback Linux may have marked
    /// their pages clean, and a sync alone would then write nothing.
    SyncActive {
        path: PathBuf,
        rewrite_from: u64,
        end: u64,
    },
    /// The log ends with a sealed segment: make its seal (frame, footer,
    /// trimmed length) durable before the writer creates the next segment.
    /// A process that died after writing the seal but before syncing it
    /// (its sync failed, so it stopped) leaves the seal readable but not
    /// durable; a next segment made durable after it would, at the next
    /// crash, follow a segment that is not sealed on the disk. The bytes
    /// from `rewrite_from` (the seal's offset) to `end` (seal frame and
    /// footer, as read) are written again before the sync, as for
    /// [`RepairStep::SyncActive`].
    SyncSealedTail {
        path: PathBuf,
        rewrite_from: u64,
        end: u64,
    },
    /// The clean-close marker speaks of the files as they were at close; the
    /// writer is about to change them.
    RemoveCleanClose,
    /// Half-made files (`*.tmp`) a crash left behind.
    RemoveTemporaries,
    /// Directory entries a crashed process may never have synced.
    SyncDirectories,
}

/// What the files say, and what to repair.
pub(crate) struct Plan {
    pub catalog: Catalog,
    pub tip: Tip,
    pub ids: EventIdIndex,
    pub active: Option<ActiveTail>,
    pub torn_tail: Option<TornTail>,
    /// Records counted: scanned ones, and sealed ones trusted by their seal.
    pub record_count: u64,
    pub repairs: Vec<RepairStep>,
    /// Sealed segments trusted by seal, footer and sidecar without being
    /// re-hashed (first LSNs): background verification reads them.
    pub unverified: Vec<Lsn>,
}

/// How much of the log to re-hash while planning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Every record of every segment.
    Full,
    /// The active segment, and sealed segments with no usable sidecar;
    /// other sealed segments by header, seal, footer and sidecar.
    Quick,
}

/// Files of a log's `wal` directory: segments by first LSN, oldest first.
pub(crate) fn list_segments(fs: &dyn FileSystem, wal_dir: &Path) -> Result<Vec<(Lsn, PathBuf)>> {
    let names = fs
        .list_dir(wal_dir)
        .map_err(|error| LogError::io("listing", wal_dir, error))?;
    let mut segments: Vec<(Lsn, PathBuf)> = names
        .iter()
        .filter_map(|name| {
            segment::parse_segment_file_name(name).map(|lsn| (lsn, wal_dir.join(name)))
        })
        .collect();
    segments.sort();
    Ok(segments)
}

/// The state a plan builds up segment by segment.
struct Planner<'a> {
    fs: &'a dyn FileSystem,
    wal_dir: &'a Path,
    genesis: RecordHash,
    plan: Plan,
    /// The last `recorded_at` of the previous segment, when it was scanned
    /// (time must not go backwards across segments either).
    recorded_at_floor: i64,
}

/// Reads a log's files and decides what they hold. Read-only.
pub(crate) fn analyze(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    genesis: RecordHash,
    depth: Depth,
    progress: &mut dyn FnMut(Lsn),
) -> Result<Plan> {
    let clean_close = read_clean_close(fs, wal_dir);
    let prefix = ArchivedPrefix::read(fs, wal_dir)?;
    let mut segments = list_segments(fs, wal_dir)?;
    let mut planner = Planner {
        fs,
        wal_dir,
        genesis,
        plan: Plan {
            catalog: Catalog::default(),
            tip: Tip {
                lsn: Lsn::ZERO,
                hash: genesis,
                recorded_at_unix_nanos: i64::MIN,
            },
            ids: EventIdIndex::new(),
            active: None,
            torn_tail: None,
            record_count: 0,
            repairs: Vec::new(),
            unverified: Vec::new(),
        },
        recorded_at_floor: i64::MIN,
    };
    if let Some(prefix) = prefix {
        segments = planner.start_after_prefix(&prefix, segments)?;
    }
    for (position, (first_lsn, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == segments.len();
        planner.segment(*first_lsn, path, is_last, depth, progress)?;
    }
    planner.check_clean_close(clean_close, &segments)?;
    let mut plan = planner.plan;
    plan.repairs.push(RepairStep::RemoveTemporaries);
    plan.repairs.push(RepairStep::SyncDirectories);
    Ok(plan)
}

impl Planner<'_> {
    /// A log whose earlier segments are archived: the chain starts at the
    /// prefix's hash, and segments wholly before it (left by an interrupted
    /// removal) are not part of the local log. Their sidecars still answer
    /// for their event ids.
    fn start_after_prefix(
        &mut self,
        prefix: &ArchivedPrefix,
        segments: Vec<(Lsn, PathBuf)>,
    ) -> Result<Vec<(Lsn, PathBuf)>> {
        self.plan.tip = Tip {
            lsn: Lsn(prefix.first_lsn.0 - 1),
            hash: prefix.prev_hash,
            recorded_at_unix_nanos: prefix.prev_recorded_at_unix_nanos,
        };
        self.recorded_at_floor = prefix.prev_recorded_at_unix_nanos;
        self.plan.catalog.prefix = Some(prefix.clone());
        self.add_archived_sidecars(prefix.first_lsn)?;
        let local: Vec<(Lsn, PathBuf)> = segments
            .into_iter()
            .filter(|(first_lsn, _)| *first_lsn >= prefix.first_lsn)
            .collect();
        if let Some((first_lsn, path)) = local.first() {
            if *first_lsn != prefix.first_lsn {
                return Err(LogError::corruption(
                    path,
                    0,
                    prefix.first_lsn,
                    format!(
                        "the archived prefix ({PREFIX_FILE_NAME}) ends at lsn {} but the first local segment starts at lsn {first_lsn}: lsns {}..{first_lsn} are neither archived nor local",
                        prefix.first_lsn.0 - 1,
                        prefix.first_lsn,
                    ),
                ));
            }
            let header = read_header(self.fs, path, *first_lsn)?;
            if header.prev_hash != prefix.prev_hash {
                return Err(LogError::corruption(
                    path,
                    56,
                    *first_lsn,
                    format!(
                        "the first local segment links to {} but the archived prefix ({PREFIX_FILE_NAME}, vouched for by {:?}) ends with {}",
                        header.prev_hash, prefix.voucher, prefix.prev_hash
                    ),
                ));
            }
        }
        Ok(local)
    }

    /// Event ids of archived segments, from the sidecars kept locally.
    fn add_archived_sidecars(&mut self, first_local: Lsn) -> Result<()> {
        let names = self
            .fs
            .list_dir(self.wal_dir)
            .map_err(|error| LogError::io("listing", self.wal_dir, error))?;
        let mut archived: Vec<(Lsn, PathBuf)> = names
            .iter()
            .filter_map(|name| {
                let lsn = segment::parse_index_file_name(name)?;
                (lsn < first_local).then(|| (lsn, self.wal_dir.join(name)))
            })
            .collect();
        archived.sort();
        for (first_lsn, index_path) in archived {
            match read_index_head(self.fs, &index_path) {
                Ok((index, entries)) => self.plan.ids.add_sealed_pending(
                    SealedIds {
                        first_lsn,
                        index_path,
                    },
                    index.id_table_offset(),
                    entries,
                ),
                Err(error) => {
                    tracing::warn!(%error, "ignoring the sidecar of an archived segment: retries of its event ids are not recognised");
                }
            }
        }
        Ok(())
    }

    fn expected_header(&self, first_lsn: Lsn) -> SegmentHeader {
        SegmentHeader {
            log_id: self.genesis,
            first_lsn,
            prev_hash: self.plan.tip.hash,
        }
    }

    fn segment(
        &mut self,
        first_lsn: Lsn,
        path: &Path,
        is_last: bool,
        depth: Depth,
        progress: &mut dyn FnMut(Lsn),
    ) -> Result<()> {
        let expected_first = self.plan.tip.lsn.next();
        if first_lsn != expected_first {
            return Err(LogError::corruption(
                path,
                0,
                expected_first,
                format!("segment starts at lsn {first_lsn} but the log continues at {expected_first}: a segment is missing"),
            ));
        }
        let expected = self.expected_header(first_lsn);
        let file = self
            .fs
            .open_read(path)
            .map_err(|error| LogError::io("opening", path, error))?;
        let index_path = self.wal_dir.join(segment::index_file_name(first_lsn));
        if !is_last && depth == Depth::Quick {
            if let Some((index, entries)) =
                quick_sealed(self.fs, file.as_ref(), path, &index_path, &expected)?
            {
                return self.trusted_sealed(
                    file.as_ref(),
                    path,
                    index_path,
                    &expected,
                    &index,
                    entries,
                );
            }
        }
        let (scan, collected) = scan_collecting(
            file.as_ref(),
            path,
            &expected,
            self.recorded_at_floor,
            progress,
        )?;
        if scan.seal.is_some() {
            self.scanned_sealed(file.as_ref(), scan, collected, index_path, is_last)
        } else if is_last {
            self.active(file.as_ref(), scan, collected)
        } else {
            let (offset, lsn, reason) = match &scan.damage {
                Some(damage) => (damage.offset, damage.lsn, damage.reason.clone()),
                None => (
                    scan.end_offset,
                    scan.last_lsn.next(),
                    "segment is not sealed but a later segment exists".into(),
                ),
            };
            Err(LogError::corruption(path, offset, lsn, reason))
        }
    }

    /// A sealed segment trusted by header, seal, footer and sidecar.
    fn trusted_sealed(
        &mut self,
        file: &dyn ReadFile,
        path: &Path,
        index_path: PathBuf,
        expected: &SegmentHeader,
        index: &SegmentIndex,
        id_entries: u64,
    ) -> Result<()> {
        let seal = read_seal(file, path, index.seal_offset, index.last_lsn)?;
        if seal.first_lsn != expected.first_lsn
            || seal.record_count != index.last_lsn.0 - expected.first_lsn.0 + 1
        {
            return Err(LogError::corruption(
                path,
                index.seal_offset,
                index.last_lsn,
                "seal does not match the segment's lsn range",
            ));
        }
        self.plan.catalog.segments.push(SegmentEntry {
            first_lsn: expected.first_lsn,
            last_lsn: index.last_lsn,
            path: path.to_path_buf(),
            sealed: true,
            limit: index.seal_offset,
            sparse: index.sparse.clone(),
            prev_hash: expected.prev_hash,
            last_hash: seal.last_hash,
            file_bytes: index.segment_bytes,
        });
        self.plan.record_count += seal.record_count;
        self.plan.unverified.push(expected.first_lsn);
        self.plan.tip = Tip {
            lsn: index.last_lsn,
            hash: seal.last_hash,
            recorded_at_unix_nanos: self
                .plan
                .tip
                .recorded_at_unix_nanos
                .max(seal.sealed_at_unix_nanos),
        };
        // Not scanned: its last record's time is not known here.
        self.recorded_at_floor = i64::MIN;
        // Its event ids are read by the writer, not here.
        self.plan.ids.add_sealed_pending(
            SealedIds {
                first_lsn: expected.first_lsn,
                index_path,
            },
            index.id_table_offset(),
            id_entries,
        );
        Ok(())
    }

    /// A sealed segment read record by record.
    fn scanned_sealed(
        &mut self,
        file: &dyn ReadFile,
        mut scan: SegmentScan,
        collected: Collected,
        index_path: PathBuf,
        is_last: bool,
    ) -> Result<()> {
        let unfinished = is_last && scan.damage.is_none() && check_sealed_end(file, &scan).is_err();
        let index = if unfinished {
            // A crash interrupted the seal after its frame was written.
            let (seal_offset, footer_offset) = unfinished_seal(file, &scan)?;
            self.plan.repairs.push(RepairStep::FinishSeal {
                path: scan.path.clone(),
                seal_offset,
                footer_offset,
            });
            scan.file_len = footer_offset + FOOTER_BYTES as u64;
            index_from_scan(&scan, collected)
        } else {
            let index = sealed_index(file, &scan, collected)?;
            if is_last {
                self.plan.repairs.push(RepairStep::SyncSealedTail {
                    path: scan.path.clone(),
                    rewrite_from: index.seal_offset,
                    end: scan.file_len,
                });
            }
            index
        };
        // The scan built the index; a sidecar on disk that says anything
        // else (missing, damaged, stale) is rewritten, since lookups search
        // its id table.
        if !sidecar_matches(self.fs, &index_path, &index) {
            self.plan.repairs.push(RepairStep::WriteSidecar {
                path: index_path.clone(),
                index: index.clone(),
            });
        }
        self.plan.catalog.segments.push(SegmentEntry {
            first_lsn: scan.header.first_lsn,
            last_lsn: scan.last_lsn,
            path: scan.path.clone(),
            sealed: true,
            limit: index.seal_offset,
            sparse: index.sparse.clone(),
            prev_hash: scan.header.prev_hash,
            last_hash: scan.last_hash,
            file_bytes: scan.file_len,
        });
        self.plan.ids.add_sealed(
            SealedIds {
                first_lsn: scan.header.first_lsn,
                index_path,
            },
            &index,
        );
        self.advance(&scan);
        Ok(())
    }

    /// The active segment: decides what follows its last good record.
    fn active(
        &mut self,
        file: &dyn ReadFile,
        mut scan: SegmentScan,
        collected: Collected,
    ) -> Result<()> {
        let tail = analyze_tail(file, &mut scan)?;
        if let Some(cut) = &tail {
            self.plan.repairs.push(RepairStep::CutTornTail(cut.clone()));
        }
        self.plan.torn_tail = tail;
        let kept = scan.last_lsn;
        let sparse: Vec<(Lsn, u64)> = collected
            .sparse
            .into_iter()
            .filter(|(lsn, _)| *lsn <= kept)
            .collect();
        let keys: Vec<(u64, Lsn)> = collected
            .keys
            .into_iter()
            .filter(|(_, lsn)| *lsn <= kept)
            .collect();
        for (key, lsn) in &keys {
            self.plan.ids.insert_active(*key, *lsn);
        }
        self.plan.catalog.segments.push(SegmentEntry {
            first_lsn: scan.header.first_lsn,
            last_lsn: kept,
            path: scan.path.clone(),
            sealed: false,
            limit: scan.end_offset,
            sparse: sparse.clone(),
            prev_hash: scan.header.prev_hash,
            last_hash: scan.last_hash,
            file_bytes: scan.file_len,
        });
        // Records up to the highest durable watermark were synced; the
        // ones after it may be in the page cache only.
        let rewrite_from = sparse
            .iter()
            .take_while(|(lsn, _)| lsn.0 <= scan.durable_lsn.0.saturating_add(1))
            .last()
            .map_or(SEGMENT_HEADER_BYTES as u64, |(_, offset)| *offset)
            .min(scan.end_offset);
        self.plan.repairs.push(RepairStep::SyncActive {
            path: scan.path.clone(),
            rewrite_from,
            end: scan.end_offset,
        });
        self.plan.active = Some(ActiveTail {
            first_lsn: scan.header.first_lsn,
            path: scan.path.clone(),
            capacity: scan.file_len,
            write_offset: scan.end_offset,
            sparse,
            ids: keys,
        });
        self.advance(&scan);
        Ok(())
    }

    fn advance(&mut self, scan: &SegmentScan) {
        self.plan.record_count += scan.record_count;
        self.recorded_at_floor = scan.last_recorded_at_unix_nanos;
        self.plan.tip = Tip {
            lsn: scan.last_lsn,
            hash: scan.last_hash,
            recorded_at_unix_nanos: scan
                .last_recorded_at_unix_nanos
                .max(self.plan.tip.recorded_at_unix_nanos),
        };
    }

    /// A clean-close marker must name exactly the head the segments reach;
    /// damage past it was acknowledged data, not a torn write.
    fn check_clean_close(
        &mut self,
        clean_close: Option<CleanClose>,
        segments: &[(Lsn, PathBuf)],
    ) -> Result<()> {
        let Some(closed) = clean_close else {
            return Ok(());
        };
        let tip = self.plan.tip;
        if let Some(cut) = &self.plan.torn_tail {
            if closed.lsn > tip.lsn {
                return Err(LogError::corruption(
                    &cut.file,
                    cut.offset,
                    tip.lsn.next(),
                    format!(
                        "the log was closed cleanly at lsn {}, but records from lsn {} on are unreadable: damage to acknowledged data",
                        closed.lsn,
                        tip.lsn.next()
                    ),
                ));
            }
        }
        if closed.lsn != tip.lsn || closed.hash != tip.hash {
            let file = segments
                .last()
                .map_or_else(|| self.wal_dir.to_path_buf(), |(_, path)| path.clone());
            return Err(LogError::corruption(
                file,
                0,
                tip.lsn.next(),
                format!(
                    "the log was closed cleanly at lsn {} but its segments end at lsn {}: segments are missing or were altered",
                    closed.lsn, tip.lsn
                ),
            ));
        }
        // The close synced every byte it had written, so nothing needs
        // writing again before the syncs.
        for step in &mut self.plan.repairs {
            if let RepairStep::SyncActive {
                rewrite_from, end, ..
            }
            | RepairStep::SyncSealedTail {
                rewrite_from, end, ..
            } = step
            {
                *rewrite_from = *end;
            }
        }
        self.plan.repairs.push(RepairStep::RemoveCleanClose);
        Ok(())
    }
}

/// Whether the sidecar at `path` holds exactly `index`.
fn sidecar_matches(fs: &dyn FileSystem, path: &Path, index: &SegmentIndex) -> bool {
    let expected = index.encode();
    let Ok(file) = fs.open_read(path) else {
        return false;
    };
    if file.len().ok() != Some(expected.len() as u64) {
        return false;
    }
    let mut found = vec![0u8; expected.len()];
    file.read_exact_at(&mut found, 0).is_ok() && found == expected
}

fn read_header(fs: &dyn FileSystem, path: &Path, first_lsn: Lsn) -> Result<SegmentHeader> {
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut header, 0)
        .map_err(|error| LogError::io("reading the header of", path, error))?;
    SegmentHeader::decode(&header)
        .map_err(|reason| LogError::corruption(path, 0, first_lsn, reason))
}

/// For a sealed segment with a valid sidecar: checks header, seal and
/// footer without reading every record. `None` when the sidecar is missing
/// or does not match (the caller then scans).
fn quick_sealed(
    fs: &dyn FileSystem,
    file: &dyn ReadFile,
    path: &Path,
    index_path: &Path,
    expected: &SegmentHeader,
) -> Result<Option<(SegmentIndex, u64)>> {
    let Ok((index, entries)) = read_index_head(fs, index_path) else {
        return Ok(None);
    };
    let file_len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    if index.first_lsn != expected.first_lsn || index.segment_bytes != file_len {
        return Ok(None);
    }
    let mut header_bytes = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut header_bytes, 0)
        .map_err(|error| LogError::io("reading the header of", path, error))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|reason| LogError::corruption(path, 0, expected.first_lsn, reason))?;
    if header != *expected {
        return Err(LogError::corruption(
            path,
            0,
            expected.first_lsn,
            "header does not continue the previous segment",
        ));
    }
    let mut footer = [0u8; FOOTER_BYTES];
    file.read_exact_at(&mut footer, file_len - FOOTER_BYTES as u64)
        .map_err(|error| LogError::io("reading the footer of", path, error))?;
    if decode_footer(&footer) != Some(index.seal_offset) {
        return Err(LogError::corruption(
            path,
            file_len - FOOTER_BYTES as u64,
            index.last_lsn.next(),
            "footer does not name the seal",
        ));
    }
    Ok(Some((index, entries)))
}

fn read_seal(
    file: &dyn ReadFile,
    path: &Path,
    seal_offset: u64,
    last_lsn: Lsn,
) -> Result<codec::Seal> {
    let file_len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    let mut bytes = vec![0u8; file_len.saturating_sub(seal_offset) as usize];
    file.read_exact_at(&mut bytes, seal_offset)
        .map_err(|error| LogError::io("reading the seal of", path, error))?;
    let (body, _) = codec::split_frame(&bytes)
        .map_err(|error| LogError::codec(path, seal_offset, last_lsn, &error))?;
    match codec::decode_body(body) {
        Ok(Body::Seal(seal)) if seal.last_lsn == last_lsn => Ok(seal),
        Ok(_) => Err(LogError::corruption(
            path,
            seal_offset,
            last_lsn,
            "seal does not match the segment index",
        )),
        Err(error) => Err(LogError::codec(path, seal_offset, last_lsn, &error)),
    }
}

/// Where an interrupted seal's frame starts and where its footer belongs.
fn unfinished_seal(file: &dyn ReadFile, scan: &SegmentScan) -> Result<(u64, u64)> {
    let Some((_, seal_offset)) = scan.seal else {
        return Err(LogError::corruption(
            &scan.path,
            scan.end_offset,
            scan.last_lsn.next(),
            "sealed segment has no valid seal",
        ));
    };
    let mut frame_header = [0u8; codec::FRAME_HEADER_BYTES];
    file.read_exact_at(&mut frame_header, seal_offset)
        .map_err(|error| LogError::io("reading the seal of", &scan.path, error))?;
    let body_len = u32::from_le_bytes([
        frame_header[0],
        frame_header[1],
        frame_header[2],
        frame_header[3],
    ]);
    let footer_offset = seal_offset + codec::FRAME_HEADER_BYTES as u64 + u64::from(body_len);
    Ok((seal_offset, footer_offset))
}

/// Decides what follows the last good record of the active segment: zeros
/// (clean), a torn unsynced write (cut it), or damage to synced data
/// (corruption). Also drops an incomplete trailing atomic batch.
fn analyze_tail(file: &dyn ReadFile, scan: &mut SegmentScan) -> Result<Option<TornTail>> {
    let start = scan.end_offset;
    let length = usize::try_from(scan.file_len - start).map_err(|_| {
        LogError::corruption(&scan.path, start, scan.last_lsn.next(), "segment too large")
    })?;
    let mut tail = vec![0u8; length];
    file.read_exact_at(&mut tail, start)
        .map_err(|error| LogError::io("reading", &scan.path, error))?;
    let last_nonzero = tail.iter().rposition(|byte| *byte != 0);
    let expected = scan.last_lsn.next();
    if let Some(last_nonzero) = last_nonzero {
        if let Some((position, durable)) =
            max_durable_watermark_after(&tail, last_nonzero, expected)
        {
            if durable >= expected {
                let reason = scan.damage.as_ref().map_or_else(
                    || "unreadable bytes".to_string(),
                    |damage| damage.reason.clone(),
                );
                return Err(LogError::corruption(
                    &scan.path,
                    scan.damage.as_ref().map_or(start, |damage| damage.offset),
                    expected,
                    format!(
                        "{reason}; a valid record at offset {} was written after lsn {durable} was durable, so this is damage to acknowledged data, not a torn write",
                        start + position
                    ),
                ));
            }
        }
    }
    let dirty_end = last_nonzero.map_or(start, |last| start + last as u64 + 1);
    let records_before = scan.record_count;
    let damaged = scan.damage.is_some();
    scan.drop_open_batch();
    scan.damage = None;
    let dropped_batch_records = records_before - scan.record_count;
    if dirty_end == start && dropped_batch_records == 0 {
        return Ok(None);
    }
    let bytes = dirty_end.max(start) - scan.end_offset;
    // What a cut may drop: the unfinished batch's records, frames past the
    // last good record that still pass their CRC, and the frame the damage
    // hit.
    let cut_records = dropped_batch_records
        + segment::count_valid_record_frames(&tail)
        + u64::from(damaged && last_nonzero.is_some());
    Ok(Some(TornTail {
        file: scan.path.clone(),
        offset: scan.end_offset,
        bytes,
        dropped_batch_records,
        cut_records,
        kept_lsn: scan.last_lsn,
    }))
}

//! Opening a log: find its segments, check them, cut a torn tail, refuse on
//! corruption. The analysis is read-only; only [`Repair::CutTornTail`] lets
//! it write, and only to zero bytes that were never acknowledged.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::codec::{self, Body};
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::ids::{read_index, EventIdIndex, SealedIds};
use crate::index::{event_id_key, SegmentIndex, SPARSE_STRIDE_BYTES};
use crate::log::{Catalog, SegmentEntry};
use crate::segment::{
    self, decode_footer, max_durable_watermark_after, scan_segment, ScannedRecord, SegmentHeader,
    SegmentScan, FOOTER_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::types::{Lsn, RecordHash};
use crate::writer::{ActiveSegment, Recovered, Tip};

/// Whether recovery may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// Zero a torn tail and finish an interrupted seal.
    CutTornTail,
    /// Touch nothing (offline verification of a copy).
    ReadOnly,
}

/// A torn tail found at the end of the active segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub file: PathBuf,
    /// Where the kept log ends.
    pub offset: u64,
    /// Bytes after it that were not zero.
    pub bytes: u64,
    /// Records of an incomplete atomic batch dropped with it.
    pub dropped_batch_records: u64,
}

pub(crate) struct Recovery {
    pub catalog: Catalog,
    pub recovered: Recovered,
    pub torn_tail: Option<TornTail>,
    pub record_count: u64,
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

fn remove_temporaries(fs: &dyn FileSystem, wal_dir: &Path) -> Result<()> {
    let names = fs
        .list_dir(wal_dir)
        .map_err(|error| LogError::io("listing", wal_dir, error))?;
    for name in names.iter().filter(|name| name.ends_with(".tmp")) {
        let path = wal_dir.join(name);
        fs.remove_file(&path)
            .map_err(|error| LogError::io("removing", &path, error))?;
    }
    Ok(())
}

/// What a full scan of a segment collects besides the scan itself.
#[derive(Default)]
struct Collected {
    sparse: Vec<(Lsn, u64)>,
    keys: Vec<(u64, Lsn)>,
}

fn scan_collecting(
    file: &dyn ReadFile,
    path: &Path,
    expected: &SegmentHeader,
    recorded_at_floor: i64,
    progress: &mut dyn FnMut(Lsn),
) -> Result<(SegmentScan, Collected)> {
    let mut collected = Collected::default();
    let mut visit = |scanned: &ScannedRecord<'_>| {
        let offset = scanned.offset;
        if collected
            .sparse
            .last()
            .is_none_or(|(_, last)| offset >= last + SPARSE_STRIDE_BYTES)
        {
            collected.sparse.push((scanned.record.lsn, offset));
        }
        collected
            .keys
            .push((event_id_key(&scanned.record.event_id), scanned.record.lsn));
        if scanned.record.lsn.0.is_multiple_of(4096) {
            progress(scanned.record.lsn);
        }
    };
    let scan = scan_segment(file, path, expected, None, recorded_at_floor, &mut visit)?;
    Ok((scan, collected))
}

/// Checks that a sealed segment ends exactly with its seal and footer.
fn check_sealed_end(
    file: &dyn ReadFile,
    scan: &SegmentScan,
) -> std::result::Result<(), (u64, String)> {
    let Some((_, seal_offset)) = scan.seal else {
        return Err((scan.end_offset, "sealed segment has no valid seal".into()));
    };
    let mut seal_frame = vec![0u8; (scan.file_len.saturating_sub(seal_offset)) as usize];
    file.read_exact_at(&mut seal_frame, seal_offset)
        .map_err(|error| (seal_offset, error.to_string()))?;
    let frame_len = codec::split_frame(&seal_frame)
        .map_err(|error| (seal_offset, error.to_string()))?
        .1;
    let footer = &seal_frame[frame_len..];
    if footer.len() != FOOTER_BYTES || decode_footer(footer) != Some(seal_offset) {
        return Err((
            seal_offset + frame_len as u64,
            "sealed segment does not end with its footer".into(),
        ));
    }
    Ok(())
}

/// Builds a sealed segment's sidecar index by scanning it.
pub(crate) fn index_sealed_segment(
    fs: &dyn FileSystem,
    path: &Path,
    log_id: RecordHash,
) -> Result<SegmentIndex> {
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let mut header_bytes = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut header_bytes, 0)
        .map_err(|error| LogError::io("reading the header of", path, error))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|reason| LogError::corruption(path, 0, Lsn::ZERO, reason))?;
    let expected = SegmentHeader { log_id, ..header };
    let (scan, collected) = scan_collecting(file.as_ref(), path, &expected, i64::MIN, &mut |_| {})?;
    sealed_index(file.as_ref(), &scan, collected)
}

fn sealed_index(
    file: &dyn ReadFile,
    scan: &SegmentScan,
    mut collected: Collected,
) -> Result<SegmentIndex> {
    if let Some(damage) = &scan.damage {
        return Err(LogError::corruption(
            &scan.path,
            damage.offset,
            damage.lsn,
            damage.reason.clone(),
        ));
    }
    check_sealed_end(file, scan).map_err(|(offset, reason)| {
        LogError::corruption(&scan.path, offset, scan.last_lsn.next(), reason)
    })?;
    let seal_offset = scan.seal.map_or(0, |(_, offset)| offset);
    collected.keys.sort_unstable();
    Ok(SegmentIndex {
        first_lsn: scan.header.first_lsn,
        last_lsn: scan.last_lsn,
        segment_bytes: scan.file_len,
        seal_offset,
        sparse: collected.sparse,
        ids: collected.keys,
    })
}

/// Opens, checks and (with [`Repair::CutTornTail`]) repairs a log's files.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    genesis: RecordHash,
    verify_all: bool,
    repair: Repair,
    progress: &mut dyn FnMut(Lsn),
) -> Result<Recovery> {
    let clean_close = read_clean_close(fs, wal_dir);
    let segments = list_segments(fs, wal_dir)?;
    let mut catalog = Catalog::default();
    let mut ids = EventIdIndex::new();
    let mut tip = Tip {
        lsn: Lsn::ZERO,
        hash: genesis,
        recorded_at_unix_nanos: i64::MIN,
    };
    // The last `recorded_at` of the previous segment, when it was scanned
    // (time must not go backwards across segments either).
    let mut recorded_at_floor = i64::MIN;
    let mut active = None;
    let mut torn_tail = None;
    let mut record_count = 0u64;

    for (position, (first_lsn, path)) in segments.iter().enumerate() {
        let expected_first = tip.lsn.next();
        if *first_lsn != expected_first {
            return Err(LogError::corruption(
                path,
                0,
                expected_first,
                format!("segment starts at lsn {first_lsn} but the log continues at {expected_first}: a segment is missing"),
            ));
        }
        let expected = SegmentHeader {
            log_id: genesis,
            first_lsn: *first_lsn,
            prev_hash: tip.hash,
        };
        let is_last = position + 1 == segments.len();
        let file = fs
            .open_read(path)
            .map_err(|error| LogError::io("opening", path, error))?;
        let index_path = wal_dir.join(segment::index_file_name(*first_lsn));

        if !is_last && !verify_all {
            if let Some(index) = quick_sealed(fs, file.as_ref(), path, &index_path, &expected)? {
                catalog.segments.push(SegmentEntry {
                    first_lsn: *first_lsn,
                    last_lsn: index.last_lsn,
                    path: path.clone(),
                    sealed: true,
                    limit: index.seal_offset,
                    sparse: index.sparse.clone(),
                });
                record_count += index.last_lsn.0 - first_lsn.0 + 1;
                let seal = read_seal(file.as_ref(), path, index.seal_offset, index.last_lsn)?;
                tip = Tip {
                    lsn: index.last_lsn,
                    hash: seal.last_hash,
                    recorded_at_unix_nanos: tip
                        .recorded_at_unix_nanos
                        .max(seal.sealed_at_unix_nanos),
                };
                // Not scanned: its last record's time is not known here.
                recorded_at_floor = i64::MIN;
                ids.add_sealed(
                    SealedIds {
                        first_lsn: *first_lsn,
                        index_path,
                    },
                    &index,
                );
                continue;
            }
        }

        let (mut scan, collected) =
            scan_collecting(file.as_ref(), path, &expected, recorded_at_floor, progress)?;
        if scan.seal.is_some() {
            if is_last && repair == Repair::CutTornTail {
                finish_seal(fs, file.as_ref(), &mut scan)?;
            }
            let index = match sealed_index(file.as_ref(), &scan, collected) {
                Ok(index) => index,
                Err(error) if is_last && repair == Repair::ReadOnly && scan.damage.is_none() => {
                    // An interrupted seal of the last segment; recovery would finish it.
                    tracing::debug!(%error, "last segment's seal is unfinished");
                    index_sealed_tail(&scan)
                }
                Err(error) => return Err(error),
            };
            if repair == Repair::CutTornTail && !fs.exists(&index_path).unwrap_or(false) {
                let shared_write = write_index_file(fs, &index_path, &index);
                if let Err(error) = shared_write {
                    tracing::warn!(%error, "could not write a segment index");
                }
            }
            catalog.segments.push(SegmentEntry {
                first_lsn: *first_lsn,
                last_lsn: scan.last_lsn,
                path: path.clone(),
                sealed: true,
                limit: index.seal_offset,
                sparse: index.sparse.clone(),
            });
            ids.add_sealed(
                SealedIds {
                    first_lsn: *first_lsn,
                    index_path,
                },
                &index,
            );
        } else if !is_last {
            let (offset, lsn, reason) = match &scan.damage {
                Some(damage) => (damage.offset, damage.lsn, damage.reason.clone()),
                None => (
                    scan.end_offset,
                    scan.last_lsn.next(),
                    "segment is not sealed but a later segment exists".into(),
                ),
            };
            return Err(LogError::corruption(path, offset, lsn, reason));
        } else {
            let tail = analyze_tail(file.as_ref(), &mut scan)?;
            if let Some(cut) = &tail {
                if let Some(closed) = clean_close.filter(|closed| closed.lsn > scan.last_lsn) {
                    return Err(LogError::corruption(
                        path,
                        cut.offset,
                        scan.last_lsn.next(),
                        format!(
                            "the log was closed cleanly at lsn {}, but records from lsn {} on are unreadable: damage to acknowledged data",
                            closed.lsn,
                            scan.last_lsn.next()
                        ),
                    ));
                }
                if repair == Repair::CutTornTail {
                    quarantine(fs, wal_dir, path, cut)?;
                    zero_range(fs, path, cut.offset, cut.offset + cut.bytes)?;
                    tracing::warn!(
                        file = %path.display(), offset = cut.offset, bytes = cut.bytes, dropped_batch_records = cut.dropped_batch_records,
                        "cut a torn tail: these bytes were never acknowledged"
                    );
                }
            }
            torn_tail = tail;
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
                ids.insert_active(*key, *lsn);
            }
            catalog.segments.push(SegmentEntry {
                first_lsn: *first_lsn,
                last_lsn: kept,
                path: path.clone(),
                sealed: false,
                limit: scan.end_offset,
                sparse: sparse.clone(),
            });
            if repair == Repair::CutTornTail {
                let mut writable = fs
                    .open_write(path)
                    .map_err(|error| LogError::io("opening for writing", path, error))?;
                // A crashed process may have written records it never synced;
                // they stay in the log now, so make them durable before any
                // new record names them in its durable watermark.
                writable
                    .sync_data()
                    .map_err(|error| LogError::io("syncing", path, error))?;
                active = Some(ActiveSegment {
                    first_lsn: *first_lsn,
                    path: path.clone(),
                    file: writable,
                    capacity: scan.file_len,
                    write_offset: scan.end_offset,
                    created: Instant::now(),
                    sparse,
                    ids: keys,
                });
            }
        }
        record_count += scan.record_count;
        recorded_at_floor = scan.last_recorded_at_unix_nanos;
        tip = Tip {
            lsn: scan.last_lsn,
            hash: scan.last_hash,
            recorded_at_unix_nanos: scan
                .last_recorded_at_unix_nanos
                .max(tip.recorded_at_unix_nanos),
        };
    }
    if let Some(closed) = clean_close {
        if closed.lsn != tip.lsn || closed.hash != tip.hash {
            let (file, offset) = segments
                .last()
                .map_or_else(|| (wal_dir.to_path_buf(), 0), |(_, path)| (path.clone(), 0));
            return Err(LogError::corruption(
                file,
                offset,
                tip.lsn.next(),
                format!(
                    "the log was closed cleanly at lsn {} but its segments end at lsn {}: segments are missing or were altered",
                    closed.lsn, tip.lsn
                ),
            ));
        }
        if repair == Repair::CutTornTail {
            // The marker speaks only of the files as they were at close; the
            // writer is about to change them.
            let marker = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
            fs.remove_file(&marker)
                .map_err(|error| LogError::io("removing", &marker, error))?;
        }
    }
    if repair == Repair::CutTornTail {
        // Only once the log is known sound: a refused log is left untouched.
        remove_temporaries(fs, wal_dir)?;
        // A crashed process may have created files whose directory entries
        // were never synced; they are part of the log from now on.
        for directory in [
            Some(wal_dir),
            wal_dir.parent(),
            wal_dir.parent().and_then(Path::parent),
        ]
        .into_iter()
        .flatten()
        {
            fs.sync_dir(directory)
                .map_err(|error| LogError::io("syncing", directory, error))?;
        }
    }
    Ok(Recovery {
        catalog,
        recovered: Recovered { active, tip, ids },
        torn_tail,
        record_count,
    })
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
) -> Result<Option<SegmentIndex>> {
    let Ok(index) = read_index(fs, index_path) else {
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
    Ok(Some(index))
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

fn index_sealed_tail(scan: &SegmentScan) -> SegmentIndex {
    SegmentIndex {
        first_lsn: scan.header.first_lsn,
        last_lsn: scan.last_lsn,
        segment_bytes: scan.file_len,
        seal_offset: scan.seal.map_or(scan.end_offset, |(_, offset)| offset),
        sparse: Vec::new(),
        ids: Vec::new(),
    }
}

/// Finishes a seal that a crash interrupted after the seal frame was
/// written: footer, trimmed length, sync.
fn finish_seal(fs: &dyn FileSystem, file: &dyn ReadFile, scan: &mut SegmentScan) -> Result<()> {
    if check_sealed_end(file, scan).is_ok() {
        return Ok(());
    }
    let Some((_, seal_offset)) = scan.seal else {
        return Ok(());
    };
    let mut frame_header = [0u8; codec::FRAME_HEADER_BYTES];
    file.read_exact_at(&mut frame_header, seal_offset)
        .map_err(|error| LogError::io("reading the seal of", &scan.path, error))?;
    let frame_len = codec::FRAME_HEADER_BYTES as u64
        + u64::from(u32::from_le_bytes([
            frame_header[0],
            frame_header[1],
            frame_header[2],
            frame_header[3],
        ]));
    let footer_offset = seal_offset + frame_len;
    let mut writable = fs
        .open_write(&scan.path)
        .map_err(|error| LogError::io("opening for writing", &scan.path, error))?;
    writable
        .write_all_at(&segment::encode_footer(seal_offset), footer_offset)
        .and_then(|()| writable.set_len(footer_offset + FOOTER_BYTES as u64))
        .and_then(|()| writable.sync_all())
        .map_err(|error| LogError::io("finishing the seal of", &scan.path, error))?;
    scan.file_len = footer_offset + FOOTER_BYTES as u64;
    tracing::warn!(file = %scan.path.display(), "finished a seal that a crash interrupted");
    Ok(())
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
    scan.drop_open_batch();
    scan.damage = None;
    let dropped_batch_records = records_before - scan.record_count;
    if dirty_end == start && dropped_batch_records == 0 {
        return Ok(None);
    }
    Ok(Some(TornTail {
        file: scan.path.clone(),
        offset: scan.end_offset,
        bytes: dirty_end.max(start) - scan.end_offset,
        dropped_batch_records,
    }))
}

fn zero_range(fs: &dyn FileSystem, path: &Path, from: u64, to: u64) -> Result<()> {
    let mut file = fs
        .open_write(path)
        .map_err(|error| LogError::io("opening for writing", path, error))?;
    crate::fs::write_zeros(file.as_mut(), from, to)
        .and_then(|()| file.sync_data())
        .map_err(|error| LogError::io("cutting the torn tail of", path, error))
}

/// Writes a sealed segment's sidecar index (see [`fs::write_file_durably`]).
pub(crate) fn write_index_file(
    fs: &dyn FileSystem,
    path: &Path,
    index: &SegmentIndex,
) -> Result<()> {
    crate::fs::write_file_durably(fs, path, &index.encode())
        .map_err(|error| LogError::io("writing", path, error))
}

/// Name of the marker a clean close leaves in the `wal` directory.
pub(crate) const CLEAN_CLOSE_FILE_NAME: &str = "CLOSED";
const CLEAN_CLOSE_MAGIC: [u8; 8] = *b"TRAILCLS";
const CLEAN_CLOSE_BYTES: usize = 8 + 8 + 32 + 4;

/// The head a clean close recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanClose {
    pub lsn: Lsn,
    pub hash: RecordHash,
}

impl CleanClose {
    /// `"TRAILCLS" | lsn:u64 LE | hash:[32] | crc32:u32 LE` over the rest.
    pub fn encode(&self) -> [u8; CLEAN_CLOSE_BYTES] {
        let mut bytes = [0u8; CLEAN_CLOSE_BYTES];
        bytes[..8].copy_from_slice(&CLEAN_CLOSE_MAGIC);
        bytes[8..16].copy_from_slice(&self.lsn.0.to_le_bytes());
        bytes[16..48].copy_from_slice(&self.hash.0);
        let crc = crc32fast::hash(&bytes[..48]);
        bytes[48..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    fn decode(bytes: &[u8]) -> Option<CleanClose> {
        if bytes.len() != CLEAN_CLOSE_BYTES || bytes[..8] != CLEAN_CLOSE_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]);
        if crc32fast::hash(&bytes[..48]) != crc {
            return None;
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[8..16]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[16..48]);
        Some(CleanClose {
            lsn: Lsn(u64::from_le_bytes(lsn)),
            hash: RecordHash(hash),
        })
    }
}

/// The clean-close marker, if there is a valid one. A damaged marker is
/// ignored: it only ever adds a check.
fn read_clean_close(fs: &dyn FileSystem, wal_dir: &Path) -> Option<CleanClose> {
    let path = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
    let file = fs.open_read(&path).ok()?;
    let mut bytes = [0u8; CLEAN_CLOSE_BYTES];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let marker = CleanClose::decode(&bytes);
    if marker.is_none() {
        tracing::warn!(file = %path.display(), "ignoring a damaged clean-close marker");
    }
    marker
}

/// Writes the clean-close marker (temporary file, sync, rename, directory
/// sync), so the next open can tell damage in the last records from a torn
/// write.
pub(crate) fn write_clean_close(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    marker: CleanClose,
) -> Result<()> {
    let path = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
    crate::fs::write_file_durably(fs, &path, &marker.encode())
        .map_err(|error| LogError::io("writing", &path, error))
}

/// Keeps the bytes a torn-tail cut removes, beside the segment, for
/// forensics: `<segment>.torn-<offset>`.
fn quarantine(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    segment_path: &Path,
    cut: &TornTail,
) -> Result<()> {
    if cut.bytes == 0 {
        return Ok(());
    }
    let name = format!(
        "{}.torn-{}",
        segment_path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("segment"),
        cut.offset
    );
    let path = wal_dir.join(name);
    let source = fs
        .open_read(segment_path)
        .map_err(|error| LogError::io("opening", segment_path, error))?;
    let length = usize::try_from(cut.bytes).map_err(|_| {
        LogError::corruption(segment_path, cut.offset, Lsn::ZERO, "torn tail too large")
    })?;
    let mut bytes = vec![0u8; length];
    source
        .read_exact_at(&mut bytes, cut.offset)
        .map_err(|error| LogError::io("reading", segment_path, error))?;
    crate::fs::write_file_durably(fs, &path, &bytes)
        .map_err(|error| LogError::io("writing", &path, error))
}

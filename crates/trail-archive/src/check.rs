//! Checks a sealed segment held in memory, exactly as the engine checks one
//! on disk (through `trail_log::segment::scan_segment`): header, every CRC,
//! LSN density, every chain link, the seal and the footer. Used before an
//! upload (never archive damage), and after every download.

use std::io;
use std::path::Path;

use trail_log::codec::split_frame;
use trail_log::fs::ReadFile;
use trail_log::index::{event_id_key, SegmentIndex, SPARSE_STRIDE_BYTES};
use trail_log::segment::{decode_footer, scan_segment, SegmentHeader, FOOTER_BYTES};
use trail_log::{Lsn, RecordHash, RecordKind};

/// What a good sealed segment holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    /// First LSN.
    pub first_lsn: Lsn,
    /// Last LSN.
    pub last_lsn: Lsn,
    /// Records.
    pub record_count: u64,
    /// Hash of the last record.
    pub last_hash: RecordHash,
    /// Its `recorded_at`.
    pub last_recorded_at_unix_nanos: i64,
    /// The sidecar this segment implies (identical to the engine's).
    pub index: SegmentIndex,
    /// The compensation records in it: what they undo, and the hash they
    /// name (FORMAT.md 6.3), for a check across the whole archive.
    pub compensations: Vec<CompensationLink>,
}

/// A compensation record's link to the record it undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompensationLink {
    /// The compensation's LSN.
    pub lsn: Lsn,
    /// The LSN it undoes.
    pub target: Lsn,
    /// The hash it names for it (`None`: body format 1 names none).
    pub target_hash: Option<RecordHash>,
}

/// A byte string as a file the engine's scanner can read.
pub(crate) struct MemoryFile<'a>(pub(crate) &'a [u8]);

impl ReadFile for MemoryFile<'_> {
    fn read_at(&self, buffer: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        let Some(rest) = self.0.get(start..) else {
            return Ok(0);
        };
        let count = rest.len().min(buffer.len());
        buffer[..count].copy_from_slice(&rest[..count]);
        Ok(count)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

/// Checks `bytes` as the sealed segment of log `log_id` that starts at
/// `first_lsn` and links to `prev_hash`; `recorded_at_floor` is the
/// previous record's `recorded_at` (`i64::MIN` when unknown).
///
/// # Errors
/// A description naming the offset and LSN of the first thing wrong.
pub fn check_sealed_segment(
    bytes: &[u8],
    name: &Path,
    log_id: RecordHash,
    first_lsn: Lsn,
    prev_hash: RecordHash,
    recorded_at_floor: i64,
) -> Result<SegmentFacts, String> {
    let expected = SegmentHeader {
        log_id,
        first_lsn,
        prev_hash,
    };
    let mut sparse: Vec<(Lsn, u64)> = Vec::new();
    let mut ids: Vec<(u64, Lsn)> = Vec::new();
    let mut compensations = Vec::new();
    // The same sparse rule as the engine's sidecar (FORMAT.md §7).
    let mut visit = |scanned: &trail_log::segment::ScannedRecord<'_>| {
        let (target, target_hash) = match scanned.record.kind {
            RecordKind::Event => (None, None),
            RecordKind::CompensationV1 { compensates } => (Some(compensates), None),
            RecordKind::Compensation {
                compensates,
                compensates_hash,
            } => (Some(compensates), Some(compensates_hash)),
        };
        if let Some(target) = target {
            compensations.push(CompensationLink {
                lsn: scanned.record.lsn,
                target,
                target_hash,
            });
        }
        if sparse
            .last()
            .is_none_or(|(_, last)| scanned.offset >= last + SPARSE_STRIDE_BYTES)
        {
            sparse.push((scanned.record.lsn, scanned.offset));
        }
        ids.push((event_id_key(&scanned.record.event_id), scanned.record.lsn));
    };
    let file = MemoryFile(bytes);
    let scan = scan_segment(&file, name, &expected, None, recorded_at_floor, &mut visit)
        .map_err(|error| error_chain(&error))?;
    if let Some(damage) = &scan.damage {
        return Err(format!(
            "damaged at offset {} (lsn {}): {}",
            damage.offset, damage.lsn, damage.reason
        ));
    }
    let Some((seal, seal_offset)) = scan.seal else {
        return Err(format!(
            "not sealed: its records end at lsn {}",
            scan.last_lsn
        ));
    };
    let seal_frame = usize::try_from(seal_offset)
        .ok()
        .and_then(|offset| bytes.get(offset..))
        .ok_or_else(|| format!("seal offset {seal_offset} lies past the end"))?;
    let frame_len = split_frame(seal_frame)
        .map_err(|error| format!("seal frame at offset {seal_offset}: {error}"))?
        .1;
    let footer = &seal_frame[frame_len..];
    if footer.len() != FOOTER_BYTES || decode_footer(footer) != Some(seal_offset) {
        return Err("does not end with its footer".into());
    }
    ids.sort_unstable();
    Ok(SegmentFacts {
        first_lsn,
        last_lsn: seal.last_lsn,
        record_count: scan.record_count,
        last_hash: scan.last_hash,
        last_recorded_at_unix_nanos: scan.last_recorded_at_unix_nanos,
        index: SegmentIndex {
            first_lsn,
            last_lsn: scan.last_lsn,
            segment_bytes: scan.file_len,
            seal_offset,
            sparse,
            ids,
        },
        compensations,
    })
}

/// The hashes of the records at `wanted` in a segment `bytes` (already
/// checked by [`check_sealed_segment`]); LSNs it does not hold are left out.
///
/// # Errors
/// A description of what does not scan.
pub fn record_hashes(
    bytes: &[u8],
    name: &Path,
    log_id: RecordHash,
    first_lsn: Lsn,
    prev_hash: RecordHash,
    wanted: &std::collections::BTreeSet<Lsn>,
) -> Result<std::collections::HashMap<Lsn, RecordHash>, String> {
    let expected = SegmentHeader {
        log_id,
        first_lsn,
        prev_hash,
    };
    let mut found = std::collections::HashMap::new();
    let mut visit = |scanned: &trail_log::segment::ScannedRecord<'_>| {
        if wanted.contains(&scanned.record.lsn) {
            found.insert(scanned.record.lsn, scanned.hash);
        }
    };
    scan_segment(
        &MemoryFile(bytes),
        name,
        &expected,
        None,
        i64::MIN,
        &mut visit,
    )
    .map_err(|error| error_chain(&error))?;
    Ok(found)
}

/// An error and its causes on one line (for log lines and status texts).
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short, and this stops at 16 links anyway.
    for _ in 0..16 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

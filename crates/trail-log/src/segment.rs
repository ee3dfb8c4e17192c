//! Segment files: `<first_lsn:020>.seg`, a fixed 96-byte header followed by
//! frames, preallocated with zeros; a sealed segment ends with a seal frame
//! and a 16-byte footer. This module reads and writes those layouts and scans
//! a segment frame by frame. `docs/FORMAT.md` has the byte tables.

use std::path::{Path, PathBuf};

use crate::codec::{
    self, Body, CodecError, Record, Seal, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
};
use crate::error::{LogError, Result};
use crate::fs::ReadFile;
use crate::types::{Lsn, RecordHash};

/// The magic a segment file starts with.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TRAILSEG";
/// The segment format this build writes and reads.
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// Size of the segment header.
pub const SEGMENT_HEADER_BYTES: usize = 96;
/// The magic that ends a sealed segment's footer.
pub const FOOTER_MAGIC: [u8; 8] = *b"TRAILEND";
/// Size of a sealed segment's footer: `seal_offset:u64 LE | "TRAILEND"`.
pub const FOOTER_BYTES: usize = 16;
/// Room kept free at the end of every segment for the seal frame and footer,
/// so that sealing never needs new space.
pub const SEAL_RESERVE_BYTES: u64 = 256;
/// The largest seal frame: frame header, version byte, body tag, three u64
/// varints (first and last LSN, count; bincode varints take at most 9
/// bytes), the last hash, and the i64 `sealed_at` varint.
const SEAL_FRAME_BYTES_MAX: usize = codec::FRAME_HEADER_BYTES + 1 + 1 + 3 * 9 + 32 + 9;
// Sealing writes into the reserve only: the largest seal and its footer must
// fit, or a full segment could not be sealed.
const _: () = assert!((SEAL_FRAME_BYTES_MAX + FOOTER_BYTES) as u64 <= SEAL_RESERVE_BYTES);

/// The fixed header of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Genesis hash of the log the segment belongs to.
    pub log_id: RecordHash,
    /// LSN of the segment's first record.
    pub first_lsn: Lsn,
    /// Hash of the record before `first_lsn` (the genesis value for LSN 1).
    pub prev_hash: RecordHash,
}

impl SegmentHeader {
    /// The header's 96 bytes.
    #[must_use]
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
        bytes[8..12].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
        bytes[16..48].copy_from_slice(&self.log_id.0);
        bytes[48..56].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        bytes[56..88].copy_from_slice(&self.prev_hash.0);
        // 88..92 reserved, zero.
        let crc = crc32fast::hash(&bytes[..92]);
        bytes[92..96].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks a header.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub fn decode(bytes: &[u8]) -> std::result::Result<SegmentHeader, String> {
        if bytes.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "header is {} bytes; it needs {SEGMENT_HEADER_BYTES}",
                bytes.len()
            ));
        }
        if bytes[0..8] != SEGMENT_MAGIC {
            return Err("bad magic: not a trail segment".into());
        }
        let stored_crc = u32::from_le_bytes(slice4(&bytes[92..96]));
        let computed_crc = crc32fast::hash(&bytes[..92]);
        if stored_crc != computed_crc {
            return Err(format!("header checksum mismatch: stored {stored_crc:#010x}, computed {computed_crc:#010x}"));
        }
        let version = u32::from_le_bytes(slice4(&bytes[8..12]));
        if version != SEGMENT_FORMAT_VERSION {
            return Err(format!("segment format version {version} is not supported (this build reads {SEGMENT_FORMAT_VERSION})"));
        }
        let header_len = u32::from_le_bytes(slice4(&bytes[12..16])) as usize;
        if header_len != SEGMENT_HEADER_BYTES {
            return Err(format!(
                "header length {header_len} is not {SEGMENT_HEADER_BYTES}"
            ));
        }
        Ok(SegmentHeader {
            log_id: RecordHash(slice32(&bytes[16..48])),
            first_lsn: Lsn(u64::from_le_bytes(slice8(&bytes[48..56]))),
            prev_hash: RecordHash(slice32(&bytes[56..88])),
        })
    }
}

fn slice4(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0u8; 4];
    out.copy_from_slice(bytes);
    out
}

fn slice8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(bytes);
    out
}

fn slice32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(bytes);
    out
}

/// The footer that ends a sealed segment.
#[must_use]
pub fn encode_footer(seal_offset: u64) -> [u8; FOOTER_BYTES] {
    let mut bytes = [0u8; FOOTER_BYTES];
    bytes[..8].copy_from_slice(&seal_offset.to_le_bytes());
    bytes[8..].copy_from_slice(&FOOTER_MAGIC);
    bytes
}

/// The seal offset a footer names, if these bytes are a footer.
#[must_use]
pub fn decode_footer(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != FOOTER_BYTES || bytes[8..] != FOOTER_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(slice8(&bytes[..8])))
}

/// The first LSN a sidecar's file name names.
#[must_use]
pub fn parse_index_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".idx")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// `<first_lsn:020>.seg`
#[must_use]
pub fn segment_file_name(first_lsn: Lsn) -> String {
    format!("{:020}.seg", first_lsn.0)
}

/// `<first_lsn:020>.idx`
#[must_use]
pub fn index_file_name(first_lsn: Lsn) -> String {
    format!("{:020}.idx", first_lsn.0)
}

/// The first LSN a segment file name stands for, if it is one.
#[must_use]
pub fn parse_segment_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Lsn)
}

/// Reads frames one after another from a file, through a bounded buffer.
/// The file is passed to every call, so a cursor can live beside the file
/// that owns it.
pub struct FrameCursor {
    /// File offset of `buffer[0]`.
    buffer_offset: u64,
    buffer: Vec<u8>,
    /// Position of the next frame in `buffer`.
    position: usize,
    /// Bytes of `buffer` that hold file data.
    filled: usize,
    /// Nothing at or past this file offset is read.
    limit: u64,
    /// Bytes one refill reads at least.
    read_ahead: usize,
}

/// Size of a cursor's read-ahead.
pub(crate) const CURSOR_CHUNK_BYTES: usize = 256 * 1024;

/// What the cursor found at its position.
pub enum FrameStep<'a> {
    /// A CRC-valid frame.
    Frame {
        /// File offset of the frame.
        offset: u64,
        /// Its body (valid until the next call).
        body: &'a [u8],
        /// Length of the whole frame.
        frame_len: usize,
    },
    /// The limit was reached exactly.
    End,
    /// Bytes that are not a valid frame.
    Invalid {
        /// File offset of the bad frame.
        offset: u64,
        /// Why it is not a frame.
        error: CodecError,
    },
}

impl FrameCursor {
    /// A cursor from `offset` up to `limit`.
    #[must_use]
    pub fn new(offset: u64, limit: u64) -> FrameCursor {
        FrameCursor {
            buffer_offset: offset,
            buffer: Vec::new(),
            position: 0,
            filled: 0,
            limit,
            read_ahead: CURSOR_CHUNK_BYTES,
        }
    }

    /// Reads at least `bytes` per refill instead of the default 256 KiB: a
    /// point read wants a few frames, not a quarter megabyte.
    #[must_use]
    pub fn with_read_ahead(mut self, bytes: usize) -> FrameCursor {
        self.read_ahead = bytes.max(FRAME_HEADER_BYTES);
        self
    }

    /// Moves the limit (a reader following a growing segment).
    pub fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// File offset of the next frame.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.buffer_offset + self.position as u64
    }

    /// Makes at least `needed` bytes available at `position` (fewer at the
    /// limit); returns how many are available.
    fn fill(&mut self, file: &dyn ReadFile, needed: usize) -> std::io::Result<usize> {
        let available = self.filled - self.position;
        if available >= needed {
            return Ok(available);
        }
        self.buffer.copy_within(self.position..self.filled, 0);
        self.buffer_offset += self.position as u64;
        self.filled = available;
        self.position = 0;
        let want = needed.max(self.read_ahead);
        let remaining_in_file = self.limit.saturating_sub(self.buffer_offset) as usize;
        let target = want.min(remaining_in_file);
        if self.buffer.len() < target {
            self.buffer.resize(target, 0);
        }
        while self.filled < target {
            let read = file.read_at(
                &mut self.buffer[self.filled..target],
                self.buffer_offset + self.filled as u64,
            )?;
            if read == 0 {
                break;
            }
            self.filled += read;
        }
        Ok(self.filled)
    }

    /// The next frame, or the end, or why the bytes here are not a frame.
    ///
    /// # Errors
    /// Only IO errors; bad bytes are [`FrameStep::Invalid`].
    pub fn next_frame(&mut self, file: &dyn ReadFile) -> std::io::Result<FrameStep<'_>> {
        let offset = self.offset();
        if offset >= self.limit {
            return Ok(FrameStep::End);
        }
        let available = self.fill(file, FRAME_HEADER_BYTES)?;
        let body_len =
            match codec::frame_body_len(&self.buffer[self.position..self.position + available]) {
                Ok(body_len) => body_len,
                Err(error) => return Ok(FrameStep::Invalid { offset, error }),
            };
        let available = self.fill(file, FRAME_HEADER_BYTES + body_len)?;
        match codec::split_frame(&self.buffer[self.position..self.position + available]) {
            Ok((_, frame_len)) => {
                let body_start = self.position + FRAME_HEADER_BYTES;
                self.position += frame_len;
                Ok(FrameStep::Frame {
                    offset,
                    body: &self.buffer[body_start..body_start + body_len],
                    frame_len,
                })
            }
            Err(error) => Ok(FrameStep::Invalid { offset, error }),
        }
    }

    /// Steps over the frame at the position by its declared length, without
    /// reading its body or checking its CRC: a reader walking from a sparse
    /// entry to the LSN it wants. What it lands on is checked (CRC, LSN,
    /// link), so a bad length here shows there, never as a wrong record.
    ///
    /// # Errors
    /// IO errors; the inner error when the bytes here are no frame header.
    pub fn skip_frame(
        &mut self,
        file: &dyn ReadFile,
    ) -> std::io::Result<Result<(), codec::CodecError>> {
        let offset = self.offset();
        if offset >= self.limit {
            return Ok(Err(codec::CodecError::Truncated {
                needed: FRAME_HEADER_BYTES,
                available: 0,
            }));
        }
        let available = self.fill(file, FRAME_HEADER_BYTES)?;
        let body_len =
            match codec::frame_body_len(&self.buffer[self.position..self.position + available]) {
                Ok(body_len) => body_len,
                Err(error) => return Ok(Err(error)),
            };
        self.seek_forward(offset + (FRAME_HEADER_BYTES + body_len) as u64);
        Ok(Ok(()))
    }

    /// Skips to a file offset at or after the current one.
    pub fn seek_forward(&mut self, offset: u64) {
        let current = self.offset();
        if offset <= current {
            return;
        }
        let skip = (offset - current) as usize;
        if skip <= self.filled - self.position {
            self.position += skip;
        } else {
            self.buffer_offset = offset;
            self.position = 0;
            self.filled = 0;
        }
    }
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
    /// Records the cut drops: frames in the cut bytes that still pass their
    /// CRC, the frame the damage hit, and the dropped batch's records. A
    /// torn write was never acknowledged; only damage inside the last group
    /// synced before a crash (FORMAT.md §8) can make some of them
    /// acknowledged ones.
    pub cut_records: u64,
    /// The last LSN kept.
    pub kept_lsn: Lsn,
}

/// Why a scan stopped before the end of the segment's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// File offset of the first bad byte.
    pub offset: u64,
    /// The LSN expected there.
    pub lsn: Lsn,
    /// What is wrong.
    pub reason: String,
}

/// What a scan of one segment found.
#[derive(Clone, Debug)]
pub struct SegmentScan {
    /// The segment file.
    pub path: PathBuf,
    /// Its header.
    pub header: SegmentHeader,
    /// The file's length.
    pub file_len: u64,
    /// Records that passed every check.
    pub record_count: u64,
    /// The last good record's LSN (`first_lsn - 1` when there is none).
    pub last_lsn: Lsn,
    /// The last good record's hash (the header's `prev_hash` when none).
    pub last_hash: RecordHash,
    /// Its `recorded_at`.
    pub last_recorded_at_unix_nanos: i64,
    /// Offset just past the last good record frame.
    pub end_offset: u64,
    /// The seal and its offset, when the segment is sealed.
    pub seal: Option<(Seal, u64)>,
    /// Where the scan stopped early, if it did.
    pub damage: Option<Damage>,
    /// The atomic batch the segment's good records leave open at their end.
    pub open_batch: Option<OpenBatch>,
    /// The highest `durable_lsn` a good record carries (`Lsn::ZERO` when
    /// none): every record up to it was synced before a later group was
    /// written, so only the records after it can be unsynced.
    pub durable_lsn: Lsn,
}

/// An atomic batch whose last record has not been seen (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenBatch {
    /// Offset of the batch's first frame.
    pub offset: u64,
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// LSN its records name as the batch's last.
    pub last_lsn: Lsn,
    /// Hash of the record before the batch.
    pub prev_hash: RecordHash,
    /// `recorded_at` of the record before the batch.
    pub prev_recorded_at_unix_nanos: i64,
}

impl SegmentScan {
    /// Forgets the open batch's records, as recovery does: the batch never
    /// completed, so none of it was acknowledged.
    pub fn drop_open_batch(&mut self) {
        if let Some(batch) = self.open_batch.take() {
            self.record_count -= self.last_lsn.0 - batch.first_lsn.0 + 1;
            self.last_lsn = Lsn(batch.first_lsn.0 - 1);
            self.last_hash = batch.prev_hash;
            self.last_recorded_at_unix_nanos = batch.prev_recorded_at_unix_nanos;
            self.end_offset = batch.offset;
        }
    }
}

/// What a scan reports for each good record.
pub struct ScannedRecord<'a> {
    /// File offset of the frame.
    pub offset: u64,
    /// Length of the frame.
    pub frame_len: usize,
    /// The decoded record.
    pub record: &'a Record,
    /// Its hash.
    pub hash: RecordHash,
}

/// `recorded_at_floor` is the last `recorded_at` of the segment before (or
/// `i64::MIN` when unknown): time never goes backwards across segments either.
///
/// Scans a segment from its header to its seal, the first bad frame or
/// `limit` (a file offset; the file's end when `None`),
/// checking CRCs, LSN density, chain links and batch markers, and calling
/// `visit` for every good record. Never modifies the file.
///
/// # Errors
/// IO errors, and a header that is unreadable or belongs to another place in
/// the log (wrong log, first LSN or previous hash): those are corruption.
pub fn scan_segment(
    file: &dyn ReadFile,
    path: &Path,
    expected: &SegmentHeader,
    limit: Option<u64>,
    recorded_at_floor: i64,
    visit: &mut dyn FnMut(&ScannedRecord<'_>),
) -> Result<SegmentScan> {
    let file_len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    let mut header_bytes = [0u8; SEGMENT_HEADER_BYTES];
    if file_len < SEGMENT_HEADER_BYTES as u64 {
        return Err(LogError::corruption(
            path,
            0,
            expected.first_lsn,
            format!("segment is {file_len} bytes, shorter than its header"),
        ));
    }
    file.read_exact_at(&mut header_bytes, 0)
        .map_err(|error| LogError::io("reading the header of", path, error))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|reason| LogError::corruption(path, 0, expected.first_lsn, reason))?;
    if header.log_id != expected.log_id {
        return Err(LogError::corruption(
            path,
            16,
            expected.first_lsn,
            "segment belongs to another log (log id mismatch)",
        ));
    }
    if header.first_lsn != expected.first_lsn {
        return Err(LogError::corruption(
            path,
            48,
            expected.first_lsn,
            format!(
                "header says first lsn {}, file name and log say {}",
                header.first_lsn, expected.first_lsn
            ),
        ));
    }
    if header.prev_hash != expected.prev_hash {
        return Err(LogError::corruption(
            path,
            56,
            expected.first_lsn,
            "header's previous hash does not match the previous segment's last record",
        ));
    }

    let mut scan = SegmentScan {
        path: path.to_path_buf(),
        header,
        file_len,
        record_count: 0,
        last_lsn: Lsn(header.first_lsn.0 - 1),
        last_hash: header.prev_hash,
        last_recorded_at_unix_nanos: recorded_at_floor,
        end_offset: SEGMENT_HEADER_BYTES as u64,
        seal: None,
        damage: None,
        open_batch: None,
        durable_lsn: Lsn::ZERO,
    };
    let mut cursor = FrameCursor::new(
        SEGMENT_HEADER_BYTES as u64,
        limit.unwrap_or(file_len).min(file_len),
    );
    loop {
        let expected_lsn = scan.last_lsn.next();
        let step = cursor
            .next_frame(file)
            .map_err(|error| LogError::io("reading", path, error))?;
        let (offset, body, frame_len) = match step {
            FrameStep::End => break,
            FrameStep::Invalid {
                error: CodecError::ZeroLength,
                ..
            } => break,
            FrameStep::Invalid { offset, error } => {
                scan.damage = Some(Damage {
                    offset,
                    lsn: expected_lsn,
                    reason: error.to_string(),
                });
                break;
            }
            FrameStep::Frame {
                offset,
                body,
                frame_len,
            } => (offset, body, frame_len),
        };
        let damage = |reason: String| {
            Some(Damage {
                offset,
                lsn: expected_lsn,
                reason,
            })
        };
        let decoded = match codec::decode_body(body) {
            Ok(decoded) => decoded,
            Err(error) => {
                scan.damage = damage(error.to_string());
                break;
            }
        };
        match decoded {
            Body::Seal(seal) => {
                if let Err(reason) = check_seal(&seal, &scan) {
                    scan.damage = damage(reason);
                } else {
                    scan.seal = Some((seal, offset));
                }
                break;
            }
            Body::Record(record) => {
                if let Err(reason) = check_record(&record, &scan) {
                    scan.damage = damage(reason);
                    break;
                }
                let hash = codec::record_hash(body);
                visit(&ScannedRecord {
                    offset,
                    frame_len,
                    record: &record,
                    hash,
                });
                if record.batch_last_lsn == record.lsn {
                    scan.open_batch = None;
                } else if scan.open_batch.is_none() {
                    scan.open_batch = Some(OpenBatch {
                        offset,
                        first_lsn: record.lsn,
                        last_lsn: record.batch_last_lsn,
                        prev_hash: scan.last_hash,
                        prev_recorded_at_unix_nanos: scan.last_recorded_at_unix_nanos,
                    });
                }
                scan.record_count += 1;
                scan.durable_lsn = scan.durable_lsn.max(record.durable_lsn);
                scan.last_lsn = record.lsn;
                scan.last_hash = hash;
                scan.last_recorded_at_unix_nanos = record.recorded_at_unix_nanos;
                scan.end_offset = offset + frame_len as u64;
            }
        }
    }
    Ok(scan)
}

fn check_record(record: &Record, scan: &SegmentScan) -> std::result::Result<(), String> {
    let expected_lsn = scan.last_lsn.next();
    if record.lsn != expected_lsn {
        return Err(format!(
            "record has lsn {}, expected {expected_lsn}",
            record.lsn
        ));
    }
    if record.prev_hash != scan.last_hash {
        return Err("hash chain broken: record does not link to the record before it".into());
    }
    if record.recorded_at_unix_nanos < scan.last_recorded_at_unix_nanos {
        return Err("recorded_at goes backwards".into());
    }
    if record.batch_last_lsn < record.lsn {
        return Err(format!(
            "batch marker {} is before the record's own lsn",
            record.batch_last_lsn
        ));
    }
    if let Some(batch) = scan.open_batch {
        if record.batch_last_lsn != batch.last_lsn {
            return Err(format!(
                "record names batch end {} inside a batch that ends at {}",
                record.batch_last_lsn, batch.last_lsn
            ));
        }
    }
    if record.durable_lsn >= record.lsn {
        return Err(format!(
            "durable watermark {} is not below the record's own lsn",
            record.durable_lsn
        ));
    }
    Ok(())
}

fn check_seal(seal: &Seal, scan: &SegmentScan) -> std::result::Result<(), String> {
    if scan.record_count == 0 {
        return Err("seal in a segment with no records".into());
    }
    if seal.first_lsn != scan.header.first_lsn
        || seal.last_lsn != scan.last_lsn
        || seal.record_count != scan.record_count
    {
        return Err(format!(
            "seal says lsns {}..={} ({} records), segment holds {}..={} ({} records)",
            seal.first_lsn,
            seal.last_lsn,
            seal.record_count,
            scan.header.first_lsn,
            scan.last_lsn,
            scan.record_count
        ));
    }
    if seal.last_hash != scan.last_hash {
        return Err("seal's last hash does not match the last record".into());
    }
    if scan.open_batch.is_some() {
        return Err("seal closes a segment that ends inside an atomic batch".into());
    }
    Ok(())
}

/// Looks for a CRC-valid record frame starting at or before `last_start` in
/// `bytes` whose LSN is at least `from_lsn`, and returns its position and the
/// largest durable watermark any of them carries. Recovery uses this to tell
/// a torn, never-synced tail from damage to synced data.
#[must_use]
pub fn max_durable_watermark_after(
    bytes: &[u8],
    last_start: usize,
    from_lsn: Lsn,
) -> Option<(u64, Lsn)> {
    let mut best: Option<(u64, Lsn)> = None;
    let mut position = 0usize;
    while position <= last_start && position + FRAME_HEADER_BYTES < bytes.len() {
        let candidate = &bytes[position..];
        // Cheap filters before the CRC: a plausible length and the body's
        // version byte and record tag.
        let declared = u32::from_le_bytes(slice4(&candidate[..4])) as usize;
        if declared == 0
            || declared > FRAME_BODY_BYTES_MAX
            || FRAME_HEADER_BYTES + declared > candidate.len()
            || !codec::is_known_body_version(candidate[FRAME_HEADER_BYTES])
        {
            position += 1;
            continue;
        }
        if let Ok((body, _)) = codec::split_frame(candidate) {
            if let Ok(Body::Record(record)) = codec::decode_body(body) {
                if record.lsn >= from_lsn
                    && best.is_none_or(|(_, durable)| record.durable_lsn > durable)
                {
                    best = Some((position as u64, record.durable_lsn));
                }
            }
        }
        position += 1;
    }
    best
}

/// Checks that a sealed segment ends exactly with its seal and footer.
pub(crate) fn check_sealed_end(
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

/// How many CRC-valid record frames start somewhere in `bytes` (a torn
/// tail): what cutting those bytes drops, for the warning that says so.
#[must_use]
pub fn count_valid_record_frames(bytes: &[u8]) -> u64 {
    let mut count = 0;
    let mut position = 0usize;
    while position + FRAME_HEADER_BYTES < bytes.len() {
        let candidate = &bytes[position..];
        let declared = u32::from_le_bytes(slice4(&candidate[..4])) as usize;
        let plausible = declared != 0
            && declared <= FRAME_BODY_BYTES_MAX
            && FRAME_HEADER_BYTES + declared <= candidate.len()
            && codec::is_known_body_version(candidate[FRAME_HEADER_BYTES]);
        if plausible {
            if let Ok((body, frame_len)) = codec::split_frame(candidate) {
                if matches!(codec::decode_body(body), Ok(Body::Record(_))) {
                    count += 1;
                    position += frame_len;
                    continue;
                }
            }
        }
        position += 1;
    }
    count
}

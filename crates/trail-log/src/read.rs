//! Reading durable records from segment files, checked as they are read:
//! every frame's CRC, LSN density, and the chain link from each record to
//! the one before it, across chunks and segment boundaries. [`ChainReader`]
//! is the one reading loop; [`RecordIter`] (a bounded range) and the
//! follower (`follow.rs`, which also waits) are built on it.

use std::sync::Arc;

use crate::catalog::SegmentEntry;
use crate::codec::{self, Body, Record};
use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::index::seek_entry;
use crate::segment::{FrameCursor, FrameStep, SEGMENT_HEADER_BYTES};
use crate::shared::Shared;
use crate::types::{Lsn, RecordHash};

/// A record as read back: decoded, with its stored body bytes and their
/// hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The record.
    pub record: Record,
    /// Hash of its stored body (what the next record links to).
    pub hash: RecordHash,
    /// The body exactly as stored (what the chain hash covers, and what a
    /// Merkle leaf or an export hashes).
    pub body: Vec<u8>,
}

/// The next record frame from a cursor, decoded; `None` at the cursor's
/// limit or at the seal. A record with an LSN past `want` is corruption
/// (LSNs are dense).
fn next_record(
    file: &dyn ReadFile,
    cursor: &mut FrameCursor,
    entry: &SegmentEntry,
    want: Lsn,
) -> Result<Option<StoredRecord>> {
    let step = cursor
        .next_frame(file)
        .map_err(|error| LogError::io("reading", &entry.path, error))?;
    match step {
        FrameStep::End => Ok(None),
        FrameStep::Invalid { offset, error } => {
            Err(LogError::codec(&entry.path, offset, want, &error))
        }
        FrameStep::Frame { offset, body, .. } => match codec::decode_body(body) {
            Ok(Body::Record(record)) => {
                if record.lsn > want {
                    return Err(LogError::corruption(
                        &entry.path,
                        offset,
                        want,
                        format!("found lsn {} where lsn {want} belongs", record.lsn),
                    ));
                }
                Ok(Some(StoredRecord {
                    hash: codec::record_hash(body),
                    body: body.to_vec(),
                    record,
                }))
            }
            Ok(Body::Seal(_)) => Ok(None),
            Err(error) => Err(LogError::codec(&entry.path, offset, want, &error)),
        },
    }
}

/// Reads the record at `lsn` from a segment (the writer's duplicate check).
/// Checks the chain from where the scan starts.
pub(crate) fn read_single(
    fs: &dyn FileSystem,
    entry: &SegmentEntry,
    lsn: Lsn,
) -> Result<StoredRecord> {
    let mut reader = ChainReader::new(lsn, None).for_few_records();
    reader.open(fs, entry.clone())?;
    match reader.next_in_segment()? {
        Some(stored) => Ok(stored),
        None => Err(LogError::corruption(
            &entry.path,
            reader.offset(),
            lsn,
            "segment ends before this lsn",
        )),
    }
}

/// What a refill reads for a reader of a few records: the frame headers
/// of a sparse stride come in a handful of reads, and the wanted record in
/// the last.
pub const POINT_READ_AHEAD_BYTES: usize = 16 * 1024;

/// An open segment and where in it the reader is.
struct OpenSegment {
    entry: SegmentEntry,
    file: Box<dyn ReadFile>,
    cursor: FrameCursor,
    /// Hash of the record before the cursor's position, when known (from
    /// the segment header when the scan starts at the segment's start).
    scan_prev: Option<RecordHash>,
}

/// The reading loop shared by ranges and followers: a position (the next
/// LSN and the hash it must link to) that survives closing the file, so a
/// reader can put its file and buffer down while it waits and pick them up
/// again where it was.
pub(crate) struct ChainReader {
    /// Bytes a refill of the open segment's cursor reads at least.
    read_ahead: usize,
    next: Lsn,
    /// Hash of LSN `next - 1`, once known: the next record must link to it.
    prev_hash: Option<RecordHash>,
    open: Option<OpenSegment>,
}

impl ChainReader {
    pub fn new(next: Lsn, prev_hash: Option<RecordHash>) -> ChainReader {
        ChainReader {
            read_ahead: crate::segment::CURSOR_CHUNK_BYTES,
            next: next.max(Lsn::FIRST),
            prev_hash,
            open: None,
        }
    }

    /// A reader of a few records only (a point read): refills read
    /// [`POINT_READ_AHEAD_BYTES`] instead of the streaming default.
    #[must_use]
    pub fn for_few_records(mut self) -> ChainReader {
        self.read_ahead = POINT_READ_AHEAD_BYTES;
        self
    }

    pub fn next_lsn(&self) -> Lsn {
        self.next
    }

    pub fn prev_hash(&self) -> Option<RecordHash> {
        self.prev_hash
    }

    fn offset(&self) -> u64 {
        self.open.as_ref().map_or(0, |open| open.cursor.offset())
    }

    /// Drops the file and read buffer; the position stays.
    pub fn park(&mut self) {
        self.open = None;
    }

    /// Opens `entry` (which holds `next`), seeking through its sparse index.
    /// From the sparse entry it steps over frames by their lengths up to
    /// the record before `next` (or to `next` itself when the hash it must
    /// link to is known), which is read, hashed and checked: a point read
    /// costs one decode or two, not the ~100 records of a sparse stride.
    fn open(&mut self, fs: &dyn FileSystem, entry: SegmentEntry) -> Result<()> {
        let file = fs
            .open_read(&entry.path)
            .map_err(|error| LogError::io("opening", &entry.path, error))?;
        let header = SEGMENT_HEADER_BYTES as u64;
        let (start_lsn, start) = seek_entry(&entry.sparse, self.next)
            .filter(|(_, offset)| *offset > header)
            .unwrap_or((entry.first_lsn, header));
        let mut scan_prev = (start == header).then_some(entry.prev_hash);
        let mut cursor = FrameCursor::new(start, entry.limit).with_read_ahead(self.read_ahead);
        let first_to_read = if self.prev_hash.is_some() {
            self.next
        } else {
            Lsn(self.next.0.saturating_sub(1).max(start_lsn.0))
        };
        for lsn in start_lsn.0..first_to_read.0 {
            let skipped = cursor
                .skip_frame(file.as_ref())
                .map_err(|error| LogError::io("reading", &entry.path, error))?;
            if let Err(error) = skipped {
                return Err(LogError::codec(
                    &entry.path,
                    cursor.offset(),
                    Lsn(lsn),
                    &error,
                ));
            }
            // The skipped records' hashes are not known: the first one read
            // links to `prev_hash` when that is known, and is not checked
            // otherwise (it is the record before the one asked for).
            scan_prev = None;
        }
        self.open = Some(OpenSegment {
            entry,
            file,
            cursor,
            scan_prev,
        });
        Ok(())
    }

    /// The next record of the open segment, chain-checked; `None` when the
    /// open segment has no more durable records.
    fn next_in_segment(&mut self) -> Result<Option<StoredRecord>> {
        let Some(open) = self.open.as_mut() else {
            return Ok(None);
        };
        loop {
            if self.next > open.entry.last_lsn {
                return Ok(None);
            }
            let Some(stored) =
                next_record(open.file.as_ref(), &mut open.cursor, &open.entry, self.next)?
            else {
                return Err(LogError::corruption(
                    &open.entry.path,
                    open.cursor.offset(),
                    self.next,
                    "segment ends before this lsn",
                ));
            };
            let links_to = if stored.record.lsn == self.next {
                self.prev_hash.or(open.scan_prev)
            } else {
                open.scan_prev
            };
            if links_to.is_some_and(|expected| expected != stored.record.prev_hash) {
                return Err(LogError::corruption(
                    &open.entry.path,
                    open.cursor.offset(),
                    stored.record.lsn,
                    "hash chain broken: record does not link to the record before it",
                ));
            }
            open.scan_prev = Some(stored.hash);
            if stored.record.lsn < self.next {
                // Between the sparse entry and the wanted LSN: chained, not
                // returned.
                continue;
            }
            debug_assert_eq!(stored.record.lsn, self.next, "lsns are dense");
            self.prev_hash = Some(stored.hash);
            self.next = self.next.next();
            return Ok(Some(stored));
        }
    }

    /// The next durable record at or below `to`; `None` past it or past
    /// the durable head. Opens the next segment, or reads on in a grown
    /// active segment, as needed.
    pub fn next_up_to(&mut self, shared: &Shared, to: Lsn) -> Result<Option<StoredRecord>> {
        if self.next > to {
            return Ok(None);
        }
        let exhausted = self
            .open
            .as_ref()
            .is_none_or(|open| self.next > open.entry.last_lsn);
        if exhausted {
            let entry = {
                let catalog = shared.catalog();
                let first_local = catalog.first_local_lsn();
                if self.next < first_local {
                    return Err(LogError::NotLocal {
                        log: shared.name.to_string(),
                        lsn: self.next,
                        first_local,
                    });
                }
                catalog.segment_for(self.next).cloned()
            };
            let Some(entry) = entry else {
                return Ok(None);
            };
            match self.open.as_mut() {
                Some(open) if open.entry.first_lsn == entry.first_lsn => {
                    // The active segment grew: read on from where we are.
                    open.cursor.set_limit(entry.limit);
                    open.entry = entry;
                }
                _ => self.open(shared.fs.as_ref(), entry)?,
            }
        }
        // The open segment holds `next` now, so this finds it or fails.
        self.next_in_segment()
    }
}

/// Records of a range in LSN order, checked as they are read: CRC, LSN
/// density and the chain link between consecutive records (also across
/// segments).
pub struct RecordIter {
    pub(crate) shared: Arc<Shared>,
    pub(crate) reader: ChainReader,
    pub(crate) to: Lsn,
    pub(crate) failed: bool,
}

impl Iterator for RecordIter {
    type Item = Result<StoredRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.reader.next_up_to(&self.shared, self.to) {
            Ok(Some(stored)) => Some(Ok(stored)),
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

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
use crate::index::seek_offset;
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
    let mut reader = ChainReader::new(lsn, None);
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
    next: Lsn,
    /// Hash of LSN `next - 1`, once known: the next record must link to it.
    prev_hash: Option<RecordHash>,
    open: Option<OpenSegment>,
}

impl ChainReader {
    pub fn new(next: Lsn, prev_hash: Option<RecordHash>) -> ChainReader {
        ChainReader {
            next: next.max(Lsn::FIRST),
            prev_hash,
            open: None,
        }
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
    fn open(&mut self, fs: &dyn FileSystem, entry: SegmentEntry) -> Result<()> {
        let file = fs
            .open_read(&entry.path)
            .map_err(|error| LogError::io("opening", &entry.path, error))?;
        let start = seek_offset(&entry.sparse, self.next, SEGMENT_HEADER_BYTES as u64);
        let scan_prev = (start == SEGMENT_HEADER_BYTES as u64).then_some(entry.prev_hash);
        let cursor = FrameCursor::new(start, entry.limit);
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

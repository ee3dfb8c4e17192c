//! The segment catalog: what the writer publishes about a log's segments for
//! everyone else (readers, followers, the archive), the notifications it
//! sends when a segment is created or sealed, and the positions (tips)
//! recovery hands the writer.
//!
//! The writer is the only one that changes the catalog; everyone else reads
//! a snapshot of it (`Log::segments`) or waits for a change
//! (`Log::segment_events`, `Log::watch_head`). `docs/ENGINE.md` states the
//! contract.

use std::path::PathBuf;

use crate::prefix::ArchivedPrefix;
use crate::types::{Lsn, RecordHash};

/// How many segment events a slow listener may fall behind before it is
/// told it lagged (and should re-read [`crate::Log::segments`]).
pub const SEGMENT_EVENTS_CAPACITY: usize = 256;

/// A segment as readers see it.
#[derive(Clone, Debug)]
pub(crate) struct SegmentEntry {
    pub first_lsn: Lsn,
    /// Last durable LSN in the segment (`first_lsn - 1` while empty).
    pub last_lsn: Lsn,
    pub path: PathBuf,
    pub sealed: bool,
    /// Readers read no byte at or past this offset: the seal's offset, or
    /// the durable end of the active segment.
    pub limit: u64,
    pub sparse: Vec<(Lsn, u64)>,
    /// Hash of the record before `first_lsn` (the segment header's).
    pub prev_hash: RecordHash,
    /// Hash of `last_lsn` (`prev_hash` while empty).
    pub last_hash: RecordHash,
    /// File length: the sealed length, or the preallocated capacity.
    pub file_bytes: u64,
}

impl SegmentEntry {
    /// The public view.
    pub fn info(&self) -> SegmentInfo {
        SegmentInfo {
            first_lsn: self.first_lsn,
            last_lsn: self.last_lsn,
            sealed: self.sealed,
            data_bytes: self.limit,
            file_bytes: self.file_bytes,
            path: self.path.clone(),
            prev_hash: self.prev_hash,
            last_hash: self.last_hash,
        }
    }
}

/// One segment of a log, as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// LSN of its first record.
    pub first_lsn: Lsn,
    /// Its last durable LSN (`first_lsn - 1` while it holds none).
    pub last_lsn: Lsn,
    /// Whether it ends with a seal (it never changes again).
    pub sealed: bool,
    /// Bytes of header and durable frames (the seal's offset once sealed).
    pub data_bytes: u64,
    /// Length of the file (preallocated while active).
    pub file_bytes: u64,
    /// The file.
    pub path: PathBuf,
    /// Hash of the record before `first_lsn` (what its header names).
    pub prev_hash: RecordHash,
    /// Hash of `last_lsn` (`prev_hash` while empty).
    pub last_hash: RecordHash,
}

/// What the writer announces about segments. Durability is announced
/// through [`crate::Log::watch_head`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEvent {
    /// A new active segment exists (it holds no record yet).
    Created(SegmentInfo),
    /// A segment was sealed: its file never changes again.
    Sealed(SegmentInfo),
}

/// What the writer publishes for readers.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    pub segments: Vec<SegmentEntry>,
    pub failed: Option<String>,
    /// Where the local log starts when its earlier segments live elsewhere.
    pub prefix: Option<ArchivedPrefix>,
}

impl Catalog {
    pub fn segment_for(&self, lsn: Lsn) -> Option<&SegmentEntry> {
        let position = self
            .segments
            .partition_point(|entry| entry.first_lsn <= lsn);
        let entry = self.segments.get(position.checked_sub(1)?)?;
        (lsn <= entry.last_lsn).then_some(entry)
    }

    /// The first LSN held on local disk.
    pub fn first_local_lsn(&self) -> Lsn {
        self.prefix
            .as_ref()
            .map_or(Lsn::FIRST, |prefix| prefix.first_lsn)
    }
}

/// The last record of some prefix of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    pub lsn: Lsn,
    pub hash: RecordHash,
    pub recorded_at_unix_nanos: i64,
}

/// The active segment as recovery found it, for the writer to go on from.
#[derive(Debug)]
pub(crate) struct ActiveTail {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    pub capacity: u64,
    /// Offset just past the last kept frame.
    pub write_offset: u64,
    pub sparse: Vec<(Lsn, u64)>,
    pub ids: Vec<(u64, Lsn)>,
}

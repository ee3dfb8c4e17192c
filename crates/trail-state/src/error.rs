//! Errors. Every variant says where: which store directory, resource, LSN,
//! file or offset, so a log line is enough to find the problem.

use std::io;
use std::path::PathBuf;

/// What the store API returns on failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The store's bytes cannot be trusted: sled refused them, a value does not
    /// decode, or the layout version is unknown. The store is derived state,
    /// so the caller deletes the directory and rebuilds it from the log (or a
    /// snapshot); nothing in it is repaired in place.
    #[error("state store {dir} is damaged: {detail} (delete it and rebuild it from the log)")]
    Damaged { dir: PathBuf, detail: String },

    /// sled failed for a reason that is not damage (an IO error, the store
    /// being open in another process). Deleting the store would not help.
    #[error("state store {dir}: {op} failed: {source}")]
    Sled {
        dir: PathBuf,
        op: &'static str,
        #[source]
        source: sled::Error,
    },

    /// A file operation outside sled (snapshots, loading) failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An input's LSN is not above the store's watermark: the driver replayed
    /// something already applied (it must resume at watermark + 1).
    #[error("input lsn {lsn} is not above the store's watermark {watermark}")]
    LsnNotAfterWatermark { lsn: u64, watermark: u64 },

    /// LSNs inside one `apply` call must strictly increase.
    #[error(
        "input lsn {lsn} follows lsn {previous} in the same batch: lsns must strictly increase"
    )]
    LsnNotIncreasing { lsn: u64, previous: u64 },

    /// An input lies beyond the watermark the batch is said to reach.
    #[error("input lsn {lsn} is beyond the batch's watermark {through}")]
    LsnBeyondWatermark { lsn: u64, through: u64 },

    /// The new watermark is below the stored one.
    #[error("watermark {through} is below the store's watermark {current}")]
    WatermarkBackwards { through: u64, current: u64 },

    /// The same watermark LSN with another chain hash: the store follows a
    /// different log than the driver reads.
    #[error("watermark lsn {lsn}: the store holds hash {stored} but the batch says {given}")]
    WatermarkHashMismatch {
        lsn: u64,
        stored: String,
        given: String,
    },

    /// `recorded_at` went backwards for a resource; the log never does that, and
    /// time queries rely on it.
    #[error("resource {resource:?} lsn {lsn}: recorded_at {recorded_at} is before {previous}, the time of an earlier change")]
    TimeBackwards {
        resource: String,
        lsn: u64,
        recorded_at: i64,
        previous: i64,
    },

    /// A snapshot of an empty store (no watermark yet) was asked for.
    #[error("state store {dir} has no watermark yet: nothing to snapshot")]
    NothingToSnapshot { dir: PathBuf },

    /// A value could not be encoded (cannot happen for the store's types; an
    /// error rather than a panic all the same).
    #[error("resource {resource:?} lsn {lsn}: encoding failed: {detail}")]
    Encode {
        resource: String,
        lsn: u64,
        detail: String,
    },

    /// An input with neither a change nor a compensation: the driver passes
    /// only records that carry one, so this is a driver bug.
    #[error("input lsn {lsn} ({resource:?}) has neither a change nor a compensation")]
    NoChange { lsn: u64, resource: String },

    /// A compensation must undo an earlier record.
    #[error("input lsn {lsn} compensates lsn {compensates}, which is not before it")]
    CompensationNotBefore { lsn: u64, compensates: u64 },

    /// Two applied compensations of the same record: the log never holds
    /// them (the server returns the first instead of appending a second),
    /// so the input is damaged; the first is kept, nothing is written.
    #[error(
        "lsn {target} is compensated by lsn {first} already; lsn {second} compensates it again"
    )]
    CompensatedTwice {
        target: u64,
        first: u64,
        second: u64,
    },

    /// Loading a snapshot never overwrites an existing store.
    #[error("cannot load a snapshot into {path}: it exists and is not an empty directory")]
    StoreDirNotEmpty { path: PathBuf },
}

/// Why a snapshot file was not trusted. Offsets are byte offsets in the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotDefect {
    #[error("read failed at offset {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("file is {len} bytes, shorter than a header and digest ({min} bytes)")]
    TooShort { len: u64, min: u64 },
    #[error("bad magic {found:02x?} at offset 0")]
    BadMagic { found: [u8; 8] },
    #[error("unsupported snapshot format version {version} at offset 8")]
    UnsupportedVersion { version: u32 },
    #[error("unsupported store layout version {layout} at offset 12")]
    UnsupportedLayout { layout: u32 },
    #[error("the file name says lsn {name_lsn} but the header says {header_lsn}")]
    NameMismatch { name_lsn: u64, header_lsn: u64 },
    #[error("entry {index} at offset {offset}: {problem}")]
    Entry {
        index: u64,
        offset: u64,
        problem: String,
    },
    #[error("the header promises {expected} entries but they end at offset {offset}, {extra} bytes before the digest")]
    TrailingBytes {
        expected: u64,
        offset: u64,
        extra: u64,
    },
    #[error("digest mismatch at offset {offset}: stored {stored}, computed {computed}")]
    DigestMismatch {
        offset: u64,
        stored: String,
        computed: String,
    },
    #[error(
        "the file changed while it was loaded (digest {first} on the check, {second} on the load)"
    )]
    ChangedWhileLoading { first: String, second: String },
}

/// Why [`crate::replay`] could not apply a field change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field change {index} ({path:?}): {problem}")]
pub struct ReplayError {
    /// Position of the failing change in the slice as given (not as replayed).
    pub index: usize,
    pub path: String,
    pub problem: ReplayProblem,
}

/// What was wrong with one field change against the state it met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayProblem {
    #[error("the value there is not the expected one")]
    Mismatch,
    #[error("expected no value there, but one exists")]
    Occupied,
    #[error("the state is absent")]
    StateAbsent,
    #[error("not a JSON pointer")]
    InvalidPath,
    #[error("neither side has a value")]
    Empty,
    #[error("{0}")]
    Patch(String),
}

pub type Result<T, E = StateError> = std::result::Result<T, E>;

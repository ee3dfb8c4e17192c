//! The engine's one error type. Every variant says what was wrong and where;
//! [`LogError::kind`] folds them into the few kinds callers act on.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::codec::CodecError;
use crate::types::{InvalidLogName, Lsn};

/// What a caller can do about an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong; retrying it unchanged fails again.
    InvalidArgument,
    /// The log or LSN does not exist.
    NotFound,
    /// The event id is taken by other content.
    AlreadyExists,
    /// A limit was hit (queue full, too large, disk full); retry later or smaller.
    ResourceExhausted,
    /// The log takes no writes (fail-stopped or closing).
    Unavailable,
    /// Stored data is damaged.
    DataLoss,
    /// A condition of the append did not hold; retry with a newer view.
    Aborted,
    /// A bug or an unexpected IO failure.
    Internal,
}

/// An error from the log engine.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A log name outside `[a-z0-9][a-z0-9_-]{0,63}`.
    #[error(transparent)]
    InvalidLogName(#[from] InvalidLogName),
    /// A malformed append or read request.
    #[error("invalid request: {0}")]
    InvalidArgument(String),
    /// Something the caller sent is above a limit.
    #[error("{what} is {size} {unit}; the limit is {limit} ({setting})")]
    TooLarge {
        /// What is too large, e.g. `events[2]`.
        what: String,
        /// Its size.
        size: u64,
        /// What `size` and `limit` count, e.g. `bytes`.
        unit: &'static str,
        /// The limit.
        limit: u64,
        /// The configuration key that sets the limit.
        setting: &'static str,
    },
    /// The log's append queue is full: back off and retry.
    #[error("log {log}: append queue is full ({depth} requests waiting); retry later")]
    QueueFull {
        /// The log.
        log: String,
        /// The queue's depth.
        depth: usize,
    },
    /// The event id is already in the log with different content.
    #[error("event id {event_id:?} already exists at lsn {lsn} with different content")]
    EventIdConflict {
        /// The id.
        event_id: String,
        /// Where the first event with this id is.
        lsn: Lsn,
    },
    /// An append's `only_if_unchanged` condition failed: a record about the
    /// resource (or one sharing its bucket) was appended after `since`.
    #[error("log {log}: the resource may have changed after lsn {since} (a record at lsn {last} is about it or shares its bucket); nothing was appended")]
    ResourceChanged {
        /// The log.
        log: String,
        /// The LSN the condition was as of.
        since: Lsn,
        /// The last LSN its bucket saw.
        last: Lsn,
    },
    /// The log does not exist.
    #[error("log {0} does not exist")]
    LogNotFound(String),
    /// The LSN is outside the log.
    #[error("lsn {lsn} is not in log {log} (head is {head})")]
    LsnNotFound {
        /// The log.
        log: String,
        /// The LSN asked for.
        lsn: Lsn,
        /// The log's durable head.
        head: Lsn,
    },
    /// The LSN is in the log's archived prefix: its segment is not on
    /// local disk.
    #[error("lsn {lsn} of log {log} is archived; the local log starts at lsn {first_local}")]
    NotLocal {
        /// The log.
        log: String,
        /// The LSN asked for.
        lsn: Lsn,
        /// The first LSN on local disk.
        first_local: Lsn,
    },
    /// No space left on the device; nothing was written, the log goes on
    /// once space returns.
    #[error("disk full while {action} {path}; nothing was written, retry when space is freed")]
    DiskFull {
        /// What the engine was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A write or fsync failed earlier; the log refuses writes until reopened.
    #[error("log {log} stopped taking writes after an IO failure: {reason}; reopen it to recover")]
    FailStopped {
        /// The log.
        log: String,
        /// The failure that stopped it.
        reason: String,
    },
    /// The log or store is closing or closed.
    #[error("log {0} is closed")]
    Closed(String),
    /// Stored data is damaged: the log refuses to open and touches nothing.
    #[error("corruption in {file} at offset {offset} (lsn {lsn}): {reason}")]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damage in that file.
        offset: u64,
        /// The LSN expected at that place.
        lsn: Lsn,
        /// What is wrong.
        reason: String,
    },
    /// An IO operation failed.
    #[error("io error while {action} {path}: {source}")]
    Io {
        /// What the engine was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another process has the store open.
    #[error("data directory {root} is in use by another process (it holds {lock})")]
    StoreLocked {
        /// The store's root.
        root: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// A bad option value.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl LogError {
    /// The kind of error, for mapping to status codes.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            LogError::InvalidLogName(_)
            | LogError::InvalidArgument(_)
            | LogError::InvalidOption { .. } => ErrorKind::InvalidArgument,
            LogError::TooLarge { .. } | LogError::QueueFull { .. } | LogError::DiskFull { .. } => {
                ErrorKind::ResourceExhausted
            }
            LogError::EventIdConflict { .. } => ErrorKind::AlreadyExists,
            LogError::ResourceChanged { .. } => ErrorKind::Aborted,
            LogError::LogNotFound(_) | LogError::LsnNotFound { .. } | LogError::NotLocal { .. } => {
                ErrorKind::NotFound
            }
            LogError::FailStopped { .. } | LogError::Closed(_) | LogError::StoreLocked { .. } => {
                ErrorKind::Unavailable
            }
            LogError::Corruption { .. } => ErrorKind::DataLoss,
            LogError::Io { .. } => ErrorKind::Internal,
        }
    }

    /// Wraps an IO error; ENOSPC becomes [`LogError::DiskFull`].
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: io::Error,
    ) -> LogError {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            return LogError::DiskFull { action, path };
        }
        LogError::Io {
            action,
            path,
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        lsn: Lsn,
        reason: impl Into<String>,
    ) -> LogError {
        LogError::Corruption {
            file: file.into(),
            offset,
            lsn,
            reason: reason.into(),
        }
    }

    pub(crate) fn codec(
        file: impl Into<PathBuf>,
        offset: u64,
        lsn: Lsn,
        error: &CodecError,
    ) -> LogError {
        LogError::corruption(file, offset, lsn, error.to_string())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

//! Trail's log engine: an append-only, segmented, hash-chained log with one
//! writer per log, group commit and crash recovery.
//!
//! Bytes flow one way: [`Log::append`] hands events to the log's writer
//! thread, which frames, chains and writes them into the active segment file,
//! makes them durable, and only then acknowledges them and lets readers see
//! them. `docs/FORMAT.md` describes every byte on disk.
//!
//! ```
//! use trail_log::{EventInput, LogName, LogOptions, Lsn, Store};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let directory = tempfile::tempdir()?;
//! let store = Store::open(directory.path(), LogOptions::default())?;
//! let log = store.get_or_create(&LogName::new("payments")?)?;
//! let receipts = log.append_blocking(vec![EventInput::new("e-1".into(), b"event bytes".to_vec())], false)?;
//! assert_eq!(receipts[0].lsn, Lsn(1));
//! let records: Vec<_> = log.read(Lsn(1), Lsn(1)).collect::<Result<_, _>>()?;
//! assert_eq!(records[0].hash, receipts[0].hash);
//! store.close()?;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod append;
pub mod background;
pub mod catalog;
pub mod codec;
pub mod error;
pub mod fault;
pub mod follow;
pub mod fs;
pub mod index;
pub mod offline;
pub mod options;
pub mod prefix;
pub mod priority;
pub mod read;
pub mod removal;
pub mod retention;
pub mod segment;
pub mod types;
pub mod verify;

mod clean_close;
mod ids;
mod log;
mod preparer;
mod recovery;
mod shared;
mod store;
mod writer;

pub use append::{
    resource_key, AppendLimits, EventInput, PreparedAppend, Unchanged, RESOURCE_BUCKETS,
};
pub use background::BackgroundStatus;
pub use catalog::{SegmentEvent, SegmentInfo};
pub use error::{ErrorKind, LogError};
pub use follow::Follower;
pub use log::{Log, LogStats, PendingReceipts};
pub use options::{
    Clock, LogOptions, ManualClock, SameBytes, SameContent, SystemClock, SPIN_GROUP_EVENTS_MAX,
    WRITER_SPIN_MAX,
};
pub use prefix::ArchivedPrefix;
pub use read::{RecordIter, StoredRecord};
pub use recovery::TornTail;
pub use removal::PrefixRemoval;
pub use retention::RetentionHold;
pub use store::{Store, WAL_DIR_NAME};
pub use types::{Durability, Head, InvalidLogName, LogName, Lsn, Receipt, RecordHash, RecordKind};
pub use verify::{VerifyFailure, VerifyReport};

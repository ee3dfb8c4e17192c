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

pub mod codec;
pub mod error;
pub mod fault;
pub mod fs;
pub mod index;
pub mod offline;
pub mod options;
pub mod segment;
pub mod types;

mod ids;
mod log;
mod preparer;
mod recovery;
mod store;
mod writer;

/// Protobuf messages generated from `proto/trail/v1/event.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/trail.v1.rs"));
}

pub use error::{ErrorKind, LogError};
pub use log::{
    EventInput, Log, LogStats, PendingReceipts, PreparedAppend, RecordIter, StoredRecord,
    VerifyFailure, VerifyReport,
};
pub use options::{Clock, LogOptions, SystemClock};
pub use recovery::TornTail;
pub use store::{Store, WAL_DIR_NAME};
pub use types::{Durability, Head, InvalidLogName, LogName, Lsn, Receipt, RecordHash, RecordKind};

//! Trail's log engine: an append-only, segmented, hash-chained log with one
//! writer per log, group commit and crash recovery.
//!
//! Bytes flow one way: [`Log::append`] hands events to the log's writer
//! thread, which frames, chains and writes them into the active segment file,
//! makes them durable, and only then acknowledges them and lets readers see
//! them. `docs/FORMAT.md` describes every byte on disk.

pub mod codec;
pub mod fault;
pub mod fs;
pub mod types;

/// Protobuf messages generated from `proto/trail/v1/event.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/trail.v1.rs"));
}

pub use types::{Durability, Head, InvalidLogName, LogName, Lsn, Receipt, RecordHash, RecordKind};

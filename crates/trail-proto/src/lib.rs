//! Generated code for Trail's gRPC contract, `proto/trail/v1/log.proto`.
//!
//! The event messages (`Event`, `StateChange`, `Outcome`) are the ones
//! `trail-log` generates from `event.proto`, re-exported here so callers need
//! only this crate.

/// Messages and the `Log` service's client and server for package `trail.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    pub use trail_log::proto::{state_change, Event, Outcome, StateChange};

    include!(concat!(env!("OUT_DIR"), "/trail.v1.rs"));
}

/// The encoded `FileDescriptorSet` of `log.proto` and its imports, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trail_descriptor.bin"));

//! Generated code for Trail's gRPC contract, `proto/trail/v1/log.proto`,
//! and the event schema it imports (`event.proto`): this crate owns the
//! schema; the log engine stores events as bytes. [`content`] says when two
//! encodings carry the same event (the rule the engine is given for
//! idempotent retries).

pub mod content;

pub mod keys;

pub mod codec;

/// Messages and the `Log` service's client and server for package `trail.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/trail.v1.rs"));
}

/// The server's view of the `Log` service, from
/// `proto/trail/v1/server_view/log.proto`: the same service, methods and
/// gRPC paths as [`v1`], except that [`server_view::AppendRequest`] carries
/// each event as the bytes the producer sent (`repeated bytes events = 2`,
/// which has the same wire encoding as `repeated Event`). The server stores
/// those bytes as they are instead of decoding and re-encoding them.
///
/// Only the server is generated, with [`codec::ServerCodec`] (a request
/// that does not decode is INVALID_ARGUMENT); every message but
/// `AppendRequest` and `Record` is the one in [`v1`]. Clients and reflection use [`v1`] and
/// [`FILE_DESCRIPTOR_SET`].
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod server_view {
    include!(concat!(env!("OUT_DIR"), "/server_view/trail.v1.rs"));

    /// The encoded `FileDescriptorSet` of the server view and its imports:
    /// for the test that keeps it in step with `log.proto`, never for
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/server_view_descriptor.bin"));
}

/// The encoded `FileDescriptorSet` of `log.proto` and its imports, for gRPC
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trail_descriptor.bin"));

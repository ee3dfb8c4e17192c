//! Compiles Trail's gRPC contract without a system `protoc`: protox parses the
//! files in Rust, tonic-prost-build generates the Rust code. Two passes:
//!
//! 1. `proto/trail/v1/log.proto` (which imports `event.proto`) and
//!    `admin.proto`: messages
//!    (the event schema included: this crate owns it, the log engine stores
//!    events as bytes and never decodes them), client and server, in module
//!    `v1`. The encoded FileDescriptorSet goes to OUT_DIR for gRPC
//!    reflection.
//! 2. `proto/trail/v1/server_view/log.proto`, the same service with
//!    `AppendRequest.events` and `Record.event` as bytes: only the server and
//!    those two messages, in module `server_view`; every other type maps onto
//!    pass 1's.
//!    Its descriptor goes to OUT_DIR too, for the test that keeps the two
//!    files in step (never for reflection).

use std::path::{Path, PathBuf};

use prost::Message;
use tonic_prost_build::FileDescriptorSet;

/// The types of `log.proto` the server view shares with the contract: all of
/// them but `AppendRequest`, `Record` and the responses that hold records. A type missing here is generated twice, and the
/// server's handlers no longer take the contract's types: the build fails in
/// trail-server, not silently.
const SHARED_TYPES: [&str; 27] = [
    "Event",
    "StateChange",
    "FieldChanges",
    "CompensationNote",
    "CompensateMode",
    "CompensateRequest",
    "RollbackRequest",
    "ResourceState",
    "AutoVerifyResult",
    "Outcome",
    "AppendResponse",
    "Receipt",
    "ReadRequest",
    "SubscribeRequest",
    "RecordKind",
    "VerifyRequest",
    "VerifyResponse",
    "HeadRequest",
    "HeadResponse",
    "Filter",
    "QueryRequest",
    "GetStateRequest",
    "GetStateResponse",
    "HistoryRequest",
    "HistoryResponse",
    "StateChangeRow",
    "FieldChange",
];

fn compile(root: &Path, files: &[&Path]) -> Result<FileDescriptorSet, protox::Error> {
    Ok(protox::Compiler::new([root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(files)?
        .file_descriptor_set())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let log_proto = proto_root.join("trail/v1/log.proto");
    let event_proto = proto_root.join("trail/v1/event.proto");
    let admin_proto = proto_root.join("trail/v1/admin.proto");
    let view_proto = proto_root.join("trail/v1/server_view/log.proto");
    for file in [&log_proto, &event_proto, &admin_proto, &view_proto] {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    // Pass 1: the contract.
    let descriptors = compile(&proto_root, &[&log_proto, &admin_proto])?;
    std::fs::write(
        out_dir.join("trail_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .btree_map(".")
        .compile_fds(descriptors)?;

    // Pass 2: the server view, into its own directory (its package is also
    // `trail.v1`, so its file is also `trail.v1.rs`).
    let view = compile(&proto_root, &[&view_proto])?;
    std::fs::write(
        out_dir.join("server_view_descriptor.bin"),
        view.encode_to_vec(),
    )?;
    let view_dir = out_dir.join("server_view");
    std::fs::create_dir_all(&view_dir)?;
    // Requests that do not decode are the client's error: see src/codec.rs.
    let mut server = tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .codec_path("crate::codec::ServerCodec")
        .out_dir(&view_dir)
        .btree_map(".");
    for name in SHARED_TYPES {
        server = server.extern_path(format!(".trail.v1.{name}"), format!("crate::v1::{name}"));
    }
    server.compile_fds(view)?;
    Ok(())
}

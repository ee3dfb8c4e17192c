//! Compiles `proto/trail/v1/log.proto` (which imports `event.proto`) without a
//! system `protoc`: protox parses the files in Rust, tonic-prost-build
//! generates the messages, client and server. The event messages are not
//! generated here: they map onto `trail_log::proto`, so there is one Rust type.
//! The encoded FileDescriptorSet goes to OUT_DIR for gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let log_proto = proto_root.join("trail/v1/log.proto");
    let event_proto = proto_root.join("trail/v1/event.proto");
    println!("cargo:rerun-if-changed={}", log_proto.display());
    println!("cargo:rerun-if-changed={}", event_proto.display());

    let descriptors = protox::Compiler::new([&proto_root])?
        .include_imports(true)
        .include_source_info(true)
        .open_files([&log_proto])?
        .file_descriptor_set();

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("trail_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .btree_map(".")
        .extern_path(".trail.v1.Event", "::trail_log::proto::Event")
        .extern_path(".trail.v1.StateChange", "::trail_log::proto::StateChange")
        .extern_path(".trail.v1.Outcome", "::trail_log::proto::Outcome")
        .compile_fds(descriptors)?;
    Ok(())
}

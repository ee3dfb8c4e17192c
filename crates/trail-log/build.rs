//! Compiles `proto/trail/v1/event.proto` into prost messages without a system
//! `protoc`: protox parses the file in Rust and prost-build generates the code.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let event_proto = proto_root.join("trail/v1/event.proto");
    println!("cargo:rerun-if-changed={}", event_proto.display());
    let descriptors = protox::compile([&event_proto], [&proto_root])?;
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}

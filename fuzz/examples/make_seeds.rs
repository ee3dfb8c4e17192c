//! Writes the small seed corpus under `corpus/<target>/seed-*`:
//! `cargo run --release --example make_seeds` from `fuzz/`.

use std::fs;
use std::path::Path;

use trail_log::codec::{encode_record_frame, RecordRef, FRAME_HEADER_BYTES};
use trail_log::{Lsn, RecordHash, RecordKind};
use trail_sim::damage::build_segment;

fn write(target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let directory = Path::new("corpus").join(target);
    fs::create_dir_all(&directory)?;
    fs::write(directory.join(format!("seed-{name}")), bytes)
}

fn main() -> std::io::Result<()> {
    let record = RecordRef {
        lsn: Lsn(1),
        recorded_at_unix_nanos: 1_800_000_000_000_000_000,
        prev_hash: RecordHash([3; 32]),
        kind: RecordKind::Event,
        batch_last_lsn: Lsn(1),
        durable_lsn: Lsn(0),
        event_id: "event-1",
        event: b"\x0a\x07event-1",
    };
    let mut frame = Vec::new();
    if encode_record_frame(&mut frame, &record).is_err() {
        return Err(std::io::Error::other("cannot encode the seed record"));
    }
    write("frame_decode", "record-frame", &frame)?;
    write("frame_decode", "record-body", &frame[FRAME_HEADER_BYTES..])?;
    write("frame_decode", "zero-length", &[0u8; 8])?;
    // Body format 2's compensation (FORMAT.md 4.3): the LSN it undoes and
    // that record's hash.
    let compensation = RecordRef {
        kind: RecordKind::Compensation {
            compensates: Lsn(70_000),
            compensates_hash: RecordHash([0x22; 32]),
        },
        lsn: Lsn(300),
        recorded_at_unix_nanos: -1,
        prev_hash: RecordHash([0x11; 32]),
        batch_last_lsn: Lsn(301),
        durable_lsn: Lsn(299),
        event_id: "x",
        event: b"",
    };
    let mut frame = Vec::new();
    if encode_record_frame(&mut frame, &compensation).is_err() {
        return Err(std::io::Error::other("cannot encode the seed compensation"));
    }
    write("frame_decode", "compensation-frame", &frame)?;
    write("frame_decode", "compensation-body", &frame[FRAME_HEADER_BYTES..])?;

    // segment_recover's input is an `arbitrary` enum: tag byte first.
    let (segment, _) = build_segment(3, &[0x42; 64], &[0u8; 64]);
    let mut raw = vec![0u8];
    raw.extend_from_slice(&segment);
    write("segment_recover", "raw-three-records", &raw)?;
    write("segment_recover", "prefixed", &[1u8, 5, 8, 1, 2, 3, 4, 5, 6, 7, 8, 4, 9, 9, 9, 9, 0, 1])?;
    write("segment_recover", "overwritten", &[2u8, 6, 0x80, 0x00, 4, 0xff, 0xff, 0xff, 0xff])?;

    write("bit_flip", "first-record", &0u64.to_le_bytes())?;
    write("bit_flip", "middle", &500_000u64.to_le_bytes())?;

    // log_model: (seed, ops); any bytes decode, these just start somewhere.
    write("log_model", "appends-and-crash", &[1, 0, 0, 3, 9, 0, 1, 0, 3, 9, 0, 0, 2, 0, 5, 1, 0, 4, 0])?;
    write("log_model", "freeze-at-sync", &[7, 0, 3, 2, 0, 0, 5, 1, 0, 0, 3, 0, 0, 9, 1, 6, 0])?;
    Ok(())
}

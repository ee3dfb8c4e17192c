//! Arbitrary bytes as a segment file, and a header + valid frames + an
//! arbitrary tail: opening the log never panics, and either refuses with a
//! DATA_LOSS error naming the file, or recovers a prefix that verifies clean,
//! reads back in full, and holds only records that were written.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use trail_sim::damage::{build_segment, open_and_check, segment_path, Outcome};

#[derive(Debug, Arbitrary)]
enum Input {
    /// The whole file is these bytes.
    Raw(Vec<u8>),
    /// A valid header and `records % 16` valid records, then `tail`, then
    /// `zeros` zero bytes (a preallocated segment).
    Prefixed { records: u8, event: Vec<u8>, tail: Vec<u8>, zeros: u16 },
    /// A valid segment with `bytes` written over it at `offset`.
    Overwritten { records: u8, offset: u16, bytes: Vec<u8> },
}

fuzz_target!(|input: Input| {
    let (bytes, written) = match input {
        Input::Raw(bytes) => (bytes, Vec::new()),
        Input::Prefixed { records, event, mut tail, zeros } => {
            tail.extend(std::iter::repeat_n(0u8, usize::from(zeros % 4096)));
            build_segment(usize::from(records % 16), &event, &tail)
        }
        Input::Overwritten { records, offset, bytes: patch } => {
            let (mut bytes, written) = build_segment(usize::from(records % 16), &[0x5A; 64], &[0u8; 512]);
            let start = usize::from(offset) % bytes.len().max(1);
            for (index, byte) in patch.iter().enumerate() {
                if let Some(target) = bytes.get_mut(start + index) {
                    *target = *byte;
                }
            }
            // A patch that leaves a frame CRC-valid and chained must be
            // byte-identical to what was written there, so every recovered
            // record must still equal a written one.
            (bytes, written)
        }
    };
    let count = written.len() as u64;
    match open_and_check(&[(segment_path(1), bytes)], Some(&written)) {
        Ok(Outcome::Opened(head)) => assert!(head.lsn.0 <= count, "head {} beyond {count} written", head.lsn),
        Ok(Outcome::Refused(_)) => {}
        Err(violation) => panic!("{violation}"),
    }
});

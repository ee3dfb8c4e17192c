//! Damaged logs: a single flipped bit in any record must be detected, and a
//! segment made of a valid prefix plus any tail must recover to a clean
//! prefix or be refused with a located DATA_LOSS. Sampled here on every test
//! run; the `bit_flip` and `segment_recover` fuzz targets search further.

use trail_sim::damage::{
    build_segment, check_bit_flip, open_and_check, segment_path, template, Outcome,
};
use trail_sim::SimRng;

/// Bits tried per run: spread evenly over every record frame of the template.
const FLIPS: u64 = 300;

#[test]
fn a_flipped_bit_in_any_record_is_detected() {
    let bits = template().record_bits();
    assert!(bits > 0);
    let mut undetected = Vec::new();
    for step in 0..FLIPS {
        let bit = step * (bits / FLIPS).max(1) + step % 8;
        if let Err(violation) = check_bit_flip(bit) {
            undetected.push(format!("bit {bit}: {violation}"));
        }
    }
    assert!(
        undetected.is_empty(),
        "{} of {FLIPS} flips:\n{}",
        undetected.len(),
        undetected.join("\n")
    );
}

#[test]
fn a_valid_prefix_with_any_tail_recovers_or_is_refused() {
    let mut rng = SimRng::new(0x7A11);
    let mut violations = Vec::new();
    for case in 0..150u64 {
        let records = rng.index(12);
        let mut event = vec![0u8; 128];
        rng.fill(&mut event);
        let mut tail = vec![0u8; rng.index(300)];
        match case % 3 {
            0 => rng.fill(&mut tail),
            1 => {
                // Mostly zeros (a preallocated segment) with a few random bytes.
                for _ in 0..rng.index(4) {
                    let at = rng.index(tail.len().max(1));
                    if let Some(byte) = tail.get_mut(at) {
                        *byte = u8::try_from(rng.below(256)).unwrap_or(1);
                    }
                }
            }
            _ => {
                // A valid frame of another segment after garbage.
                let (other, _) = build_segment(records + 2, &event, &[]);
                tail.extend_from_slice(&other[other.len().saturating_sub(200)..]);
            }
        }
        let (bytes, written) = build_segment(records, &event, &tail);
        match open_and_check(&[(segment_path(1), bytes)], Some(&written)) {
            Ok(Outcome::Opened(head)) if head.lsn.0 > records as u64 => {
                violations.push(format!(
                    "case {case}: head {} beyond the {records} valid records",
                    head.lsn
                ));
            }
            Ok(_) => {}
            Err(violation) => violations.push(format!("case {case}: {violation}")),
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn arbitrary_bytes_as_a_segment_are_refused_or_recovered_clean() {
    let mut rng = SimRng::new(0xB17E5);
    for case in 0..200 {
        let mut bytes = vec![0u8; rng.index(400)];
        rng.fill(&mut bytes);
        if let Err(violation) = open_and_check(&[(segment_path(1), bytes)], Some(&[])) {
            panic!("case {case}: {violation}");
        }
    }
}

/// Regression for a decoder crash found by the `frame_decode` fuzz target:
/// a 48-byte body declaring a 2^63-byte event id made `decode_body` panic
/// with "capacity overflow" (and 2^40 aborted the process on a failed
/// allocation) instead of returning an error. Fixed by bounding bincode's
/// decoder (`with_limit`). Inputs under `fuzz/regressions/frame_decode/`,
/// also in the seed corpus.
#[test]
fn a_huge_declared_length_is_an_error_not_a_panic() {
    let mut body = vec![1u8, 0, 1, 0];
    body.extend_from_slice(&[0u8; 32]);
    body.extend_from_slice(&[0, 1, 0]);
    body.push(253);
    body.extend_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(trail_log::codec::decode_body(&body).is_err());
}

/// Regression for what the `bit_flip` fuzz target found: a flipped bit in the
/// last record of the active segment of a cleanly closed log is taken for a
/// torn write; recovery zeroes that acknowledged record and the log opens
/// clean one record shorter, reporting nothing. Input:
/// `fuzz/regressions/bit_flip/last-record-cut-silently`.
#[test]
fn a_flipped_bit_in_the_last_record_is_detected() {
    let template = template();
    let Some(&(last_file, start, _)) = template.record_frames.last() else {
        panic!("the template has no records");
    };
    let mut bit = 0u64;
    for &(file, frame_start, frame_end) in &template.record_frames {
        if (file, frame_start) == (last_file, start) {
            break;
        }
        bit += (frame_end - frame_start) as u64 * 8;
    }
    // A bit inside the body (past the 8-byte frame header).
    if let Err(violation) = check_bit_flip(bit + 8 * 20 + 5) {
        panic!("{violation}");
    }
}

//! Every input under `fuzz/regressions/<target>/` (each one found a bug) and
//! every seed under `fuzz/corpus/<target>/` is replayed here, through the
//! same checks as its fuzz target, on every `cargo test`: a fixed bug stays
//! fixed without running the fuzzer.

use std::path::{Path, PathBuf};

use arbitrary::{Arbitrary, Unstructured};
use trail_log::codec::{decode_body, encode_body_as, split_frame};
use trail_sim::damage::check_bit_flip;
use trail_sim::scenario::{run_ops_with, Op, Trouble};

/// As `fuzz/fuzz_targets/log_model.rs`.
const LOG_MODEL_OPS_MAX: usize = 48;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut found = Vec::new();
    for folder in ["regressions", "corpus"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(folder).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_input = folder == "regressions"
                || path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with("seed-"));
            if is_input {
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                found.push((path, bytes));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn log_model_inputs_replay_clean() {
    let inputs = inputs("log_model");
    assert!(!inputs.is_empty(), "no log_model inputs found");
    for (path, bytes) in inputs {
        let (seed, mut ops) = <(u16, Vec<Op>)>::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        ops.truncate(LOG_MODEL_OPS_MAX);
        if let Err(failure) = run_ops_with(u64::from(seed), &ops, Trouble::default()) {
            panic!("{}: {failure}", path.display());
        }
    }
}

#[test]
fn bit_flip_inputs_replay_clean() {
    let inputs = inputs("bit_flip");
    assert!(!inputs.is_empty(), "no bit_flip inputs found");
    for (path, bytes) in inputs {
        let bit = u64::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        if let Err(violation) = check_bit_flip(bit) {
            panic!("{}: {violation}", path.display());
        }
    }
}

#[test]
fn frame_decode_inputs_replay_clean() {
    let inputs = inputs("frame_decode");
    assert!(!inputs.is_empty(), "no frame_decode inputs found");
    for (path, bytes) in inputs {
        let bodies = [
            split_frame(&bytes).ok().map(|(body, _)| body),
            Some(bytes.as_slice()),
        ];
        for body in bodies.into_iter().flatten() {
            if let Ok(decoded) = decode_body(body) {
                let reencoded = encode_body_as(&decoded, body[0])
                    .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
                assert_eq!(
                    reencoded,
                    body,
                    "{}: an accepted body re-encodes differently",
                    path.display()
                );
            }
        }
    }
}

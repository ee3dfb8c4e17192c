//! Arbitrary bytes as a state snapshot file (FORMAT.md §12.5), with the
//! trailing blake3 digest made to match, so the input reaches the parts a
//! digest would otherwise stop: the header, every entry's lengths, keys and
//! values.
//!
//! Checks: never panics; a file that verifies reports the LSN in its header
//! and its own length, and a file cut short by any byte no longer verifies
//! (every byte of a snapshot is covered).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    // Name the file after the header's LSN, as the writer does, so the
    // name check passes and parsing goes on.
    let lsn = body
        .get(16..24)
        .map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])));
    let path = dir.path().join(format!("{lsn:020}.snap"));
    let mut file = body.to_vec();
    file.extend_from_slice(blake3::hash(body).as_bytes());
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    if let Ok(info) = trail_state::verify_snapshot(&path) {
        assert_eq!(info.watermark.lsn, lsn);
        assert_eq!(info.bytes, file.len() as u64);
        // One byte short (digest then over a different prefix): refused.
        let _ = std::fs::write(&path, &file[..file.len() - 1]);
        assert!(trail_state::verify_snapshot(&path).is_err());
    }
});

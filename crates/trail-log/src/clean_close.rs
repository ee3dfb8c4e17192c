//! The clean-close marker, `wal/CLOSED`: written by a clean close with the
//! head it left, removed by the next open before the writer changes the
//! files. With it, open tells damage in the last acknowledged records (the
//! marker names a head the segments no longer reach) from a torn write.
//! `docs/FORMAT.md` §8.2 has the bytes.

use std::path::Path;

use crate::error::{LogError, Result};
use crate::fs::FileSystem;
use crate::types::{Lsn, RecordHash};

/// Name of the marker a clean close leaves in the `wal` directory.
pub(crate) const CLEAN_CLOSE_FILE_NAME: &str = "CLOSED";
const CLEAN_CLOSE_MAGIC: [u8; 8] = *b"TRAILCLS";
const CLEAN_CLOSE_BYTES: usize = 8 + 8 + 32 + 4;

/// The head a clean close recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CleanClose {
    pub lsn: Lsn,
    pub hash: RecordHash,
}

impl CleanClose {
    /// `"TRAILCLS" | lsn:u64 LE | hash:[32] | crc32:u32 LE` over the rest.
    pub fn encode(&self) -> [u8; CLEAN_CLOSE_BYTES] {
        let mut bytes = [0u8; CLEAN_CLOSE_BYTES];
        bytes[..8].copy_from_slice(&CLEAN_CLOSE_MAGIC);
        bytes[8..16].copy_from_slice(&self.lsn.0.to_le_bytes());
        bytes[16..48].copy_from_slice(&self.hash.0);
        let crc = crc32fast::hash(&bytes[..48]);
        bytes[48..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<CleanClose> {
        if bytes.len() != CLEAN_CLOSE_BYTES || bytes[..8] != CLEAN_CLOSE_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]);
        if crc32fast::hash(&bytes[..48]) != crc {
            return None;
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&bytes[8..16]);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes[16..48]);
        Some(CleanClose {
            lsn: Lsn(u64::from_le_bytes(lsn)),
            hash: RecordHash(hash),
        })
    }
}

/// The clean-close marker, if there is a valid one. A damaged marker is
/// ignored: it only ever adds a check.
pub(crate) fn read_clean_close(fs: &dyn FileSystem, wal_dir: &Path) -> Option<CleanClose> {
    let path = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
    let file = fs.open_read(&path).ok()?;
    let mut bytes = [0u8; CLEAN_CLOSE_BYTES];
    file.read_exact_at(&mut bytes, 0).ok()?;
    let marker = CleanClose::decode(&bytes);
    if marker.is_none() {
        tracing::warn!(file = %path.display(), "ignoring a damaged clean-close marker");
    }
    marker
}

/// Writes the clean-close marker (temporary file, sync, rename, directory
/// sync), so the next open can tell damage in the last records from a torn
/// write.
pub(crate) fn write_clean_close(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    marker: CleanClose,
) -> Result<()> {
    let path = wal_dir.join(CLEAN_CLOSE_FILE_NAME);
    crate::fs::write_file_durably(fs, &path, &marker.encode())
        .map_err(|error| LogError::io("writing", &path, error))
}

//! The archived-prefix record, `wal/PREFIX`: a log whose earlier segments
//! live elsewhere (in the archive) starts locally after LSN 1. The record
//! names the first local LSN, the hash of the record before it (which the
//! first local segment's header must name too), the `recorded_at` of that
//! record, and what vouches for the prefix (for example the digest of the
//! archive manifest of the last archived segment). `docs/FORMAT.md` §8.3
//! has the bytes.

use std::path::Path;

use crate::error::{LogError, Result};
use crate::fs::FileSystem;
use crate::types::{Lsn, RecordHash};

/// Name of the record in a log's `wal` directory.
pub const PREFIX_FILE_NAME: &str = "PREFIX";
/// The magic the record starts with.
pub const PREFIX_MAGIC: [u8; 8] = *b"TRAILPFX";
/// The record format this build writes and reads.
pub const PREFIX_FORMAT_VERSION: u32 = 1;
/// Longest voucher, in bytes.
pub const VOUCHER_BYTES_MAX: usize = 1024;
/// magic, version, first_lsn, prev_hash, prev_recorded_at, voucher length.
const PREFIX_FIXED_BYTES: usize = 8 + 4 + 8 + 32 + 8 + 4;

/// Where a log's local part starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedPrefix {
    /// The first LSN on local disk (every LSN before it is archived).
    pub first_lsn: Lsn,
    /// Hash of LSN `first_lsn - 1`.
    pub prev_hash: RecordHash,
    /// `recorded_at` of LSN `first_lsn - 1`, unix nanoseconds (time never
    /// goes backwards across the boundary either).
    pub prev_recorded_at_unix_nanos: i64,
    /// What vouches for the archived records, in words a verifier can
    /// follow, e.g. `archive manifest blake3:<hex>`.
    pub voucher: String,
}

impl ArchivedPrefix {
    /// The record's bytes: the fixed fields, the voucher, then a crc32 of
    /// everything before it.
    ///
    /// # Errors
    /// A voucher longer than [`VOUCHER_BYTES_MAX`] or an LSN of 1 or less
    /// (a log that starts at 1 has no prefix).
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.voucher.len() > VOUCHER_BYTES_MAX {
            return Err(LogError::InvalidArgument(format!(
                "archived prefix voucher is {} bytes; the limit is {VOUCHER_BYTES_MAX}",
                self.voucher.len()
            )));
        }
        if self.first_lsn.0 <= 1 {
            return Err(LogError::InvalidArgument(format!(
                "an archived prefix must start after lsn 1, not at {}",
                self.first_lsn
            )));
        }
        let mut bytes = Vec::with_capacity(PREFIX_FIXED_BYTES + self.voucher.len() + 4);
        bytes.extend_from_slice(&PREFIX_MAGIC);
        bytes.extend_from_slice(&PREFIX_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.first_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.prev_hash.0);
        bytes.extend_from_slice(&self.prev_recorded_at_unix_nanos.to_le_bytes());
        let voucher_len = u32::try_from(self.voucher.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&voucher_len.to_le_bytes());
        bytes.extend_from_slice(self.voucher.as_bytes());
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(bytes.len(), PREFIX_FIXED_BYTES + self.voucher.len() + 4);
        Ok(bytes)
    }

    /// Parses and checks the record.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub fn decode(bytes: &[u8]) -> std::result::Result<ArchivedPrefix, String> {
        if bytes.len() < PREFIX_FIXED_BYTES + 4 {
            return Err(format!(
                "record is {} bytes, shorter than its fixed part",
                bytes.len()
            ));
        }
        if bytes[..8] != PREFIX_MAGIC {
            return Err("bad magic: not an archived-prefix record".into());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let stored_crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(body) != stored_crc {
            return Err("checksum mismatch".into());
        }
        let word = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&body[at..at + 8]);
            word
        };
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if version != PREFIX_FORMAT_VERSION {
            return Err(format!(
                "archived-prefix format version {version} is not supported (this build reads {PREFIX_FORMAT_VERSION})"
            ));
        }
        let first_lsn = Lsn(u64::from_le_bytes(word(12)));
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&body[20..52]);
        let prev_recorded_at_unix_nanos = i64::from_le_bytes(word(52));
        let voucher_len = u32::from_le_bytes([body[60], body[61], body[62], body[63]]) as usize;
        if voucher_len > VOUCHER_BYTES_MAX || PREFIX_FIXED_BYTES + voucher_len != body.len() {
            return Err(format!(
                "voucher length {voucher_len} does not match the record's size"
            ));
        }
        let voucher = std::str::from_utf8(&body[PREFIX_FIXED_BYTES..])
            .map_err(|_| "voucher is not UTF-8".to_string())?
            .to_owned();
        if first_lsn.0 <= 1 {
            return Err(format!("first local lsn {first_lsn} leaves no prefix"));
        }
        Ok(ArchivedPrefix {
            first_lsn,
            prev_hash: RecordHash(prev_hash),
            prev_recorded_at_unix_nanos,
            voucher,
        })
    }

    /// Writes the record durably into `wal_dir` (temporary file, sync,
    /// rename, directory sync).
    ///
    /// # Errors
    /// As [`ArchivedPrefix::encode`], and IO errors.
    pub fn write(&self, fs: &dyn FileSystem, wal_dir: &Path) -> Result<()> {
        let path = wal_dir.join(PREFIX_FILE_NAME);
        let bytes = self.encode()?;
        crate::fs::write_file_durably(fs, &path, &bytes)
            .map_err(|error| LogError::io("writing", &path, error))
    }

    /// The record in `wal_dir`, `None` when there is none.
    ///
    /// # Errors
    /// IO errors, and a record that exists but does not decode: that is
    /// corruption (without it, the log cannot be opened safely).
    pub fn read(fs: &dyn FileSystem, wal_dir: &Path) -> Result<Option<ArchivedPrefix>> {
        let path = wal_dir.join(PREFIX_FILE_NAME);
        if !fs
            .exists(&path)
            .map_err(|error| LogError::io("looking for", &path, error))?
        {
            return Ok(None);
        }
        let file = fs
            .open_read(&path)
            .map_err(|error| LogError::io("opening", &path, error))?;
        let len = file
            .len()
            .map_err(|error| LogError::io("reading the length of", &path, error))?;
        let limit = (PREFIX_FIXED_BYTES + VOUCHER_BYTES_MAX + 4) as u64;
        if len > limit {
            return Err(LogError::corruption(
                &path,
                0,
                Lsn::ZERO,
                format!("archived-prefix record is {len} bytes; at most {limit} are valid"),
            ));
        }
        let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0)];
        file.read_exact_at(&mut bytes, 0)
            .map_err(|error| LogError::io("reading", &path, error))?;
        ArchivedPrefix::decode(&bytes)
            .map(Some)
            .map_err(|reason| LogError::corruption(&path, 0, Lsn::ZERO, reason))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let prefix = ArchivedPrefix {
            first_lsn: Lsn(1001),
            prev_hash: RecordHash([7; 32]),
            prev_recorded_at_unix_nanos: 1_700_000_000_000_000_000,
            voucher: "archive manifest blake3:00ff".into(),
        };
        let bytes = prefix.encode().expect("encodes");
        assert_eq!(ArchivedPrefix::decode(&bytes), Ok(prefix.clone()));
        for position in [0, 9, 15, 30, 55, 62, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x10;
            assert!(ArchivedPrefix::decode(&damaged).is_err(), "byte {position}");
        }
        assert!(ArchivedPrefix::decode(&bytes[..bytes.len() - 1]).is_err());
        let at_one = ArchivedPrefix {
            first_lsn: Lsn(1),
            ..prefix
        };
        assert!(at_one.encode().is_err());
    }
}

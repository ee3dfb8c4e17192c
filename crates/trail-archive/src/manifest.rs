//! A segment's manifest: what the archive vouches for about one sealed
//! segment and its objects, and the digest of the previous segment's
//! manifest, so a log's manifests form a chain. Fixed layout, little
//! endian, a crc32 at the end; FORMAT.md §14.3 has the bytes.

use trail_log::{Lsn, RecordHash};

/// The magic a manifest starts with.
pub const MANIFEST_MAGIC: [u8; 8] = *b"TRAILMAN";
/// The manifest format this build writes and reads.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;
/// Length of a version-1 manifest.
pub const MANIFEST_BYTES: usize = 348;
/// Offset of the trailing crc32 (everything before it is covered).
const CRC_OFFSET: usize = MANIFEST_BYTES - 4;

/// How the stored objects are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// The object is the file's bytes.
    None,
    /// The object is one zstd frame of the file's bytes.
    Zstd,
}

impl Compression {
    fn code(self) -> u32 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
        }
    }

    fn from_code(code: u32) -> Option<Compression> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Size and blake3 digest of one byte string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest {
    /// Length in bytes.
    pub bytes: u64,
    /// blake3 of the bytes.
    pub blake3: [u8; 32],
}

impl Digest {
    /// The digest of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            bytes: bytes.len() as u64,
            blake3: *blake3::hash(bytes).as_bytes(),
        }
    }
}

/// One archived segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// How `segment_object` and `index_object` encode their files.
    pub compression: Compression,
    /// The log's genesis value: binds the manifest to its log.
    pub log_id: RecordHash,
    /// First LSN in the segment.
    pub first_lsn: Lsn,
    /// Last LSN in the segment.
    pub last_lsn: Lsn,
    /// Records in the segment (`last - first + 1`, kept as a cross-check).
    pub record_count: u64,
    /// Hash of LSN `first_lsn - 1` (the segment header's).
    pub prev_hash: RecordHash,
    /// Hash of `last_lsn` (the seal's).
    pub last_hash: RecordHash,
    /// `recorded_at` of `last_lsn`, unix nanoseconds (what an archived
    /// prefix record needs).
    pub last_recorded_at_unix_nanos: i64,
    /// The sealed segment file.
    pub segment: Digest,
    /// The stored segment object.
    pub segment_object: Digest,
    /// The segment's `.idx` sidecar.
    pub index: Digest,
    /// The stored sidecar object.
    pub index_object: Digest,
    /// blake3 of the previous segment's manifest bytes; zeros for the
    /// segment that starts at LSN 1.
    pub prev_manifest: [u8; 32],
    /// When it was archived, unix nanoseconds (informational).
    pub archived_at_unix_nanos: i64,
}

impl Manifest {
    /// The manifest's bytes.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(MANIFEST_BYTES);
        bytes.extend_from_slice(&MANIFEST_MAGIC);
        bytes.extend_from_slice(&MANIFEST_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&self.compression.code().to_le_bytes());
        bytes.extend_from_slice(&self.log_id.0);
        bytes.extend_from_slice(&self.first_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.last_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.record_count.to_le_bytes());
        bytes.extend_from_slice(&self.prev_hash.0);
        bytes.extend_from_slice(&self.last_hash.0);
        bytes.extend_from_slice(&self.last_recorded_at_unix_nanos.to_le_bytes());
        for digest in [
            self.segment,
            self.segment_object,
            self.index,
            self.index_object,
        ] {
            bytes.extend_from_slice(&digest.bytes.to_le_bytes());
            bytes.extend_from_slice(&digest.blake3);
        }
        bytes.extend_from_slice(&self.prev_manifest);
        bytes.extend_from_slice(&self.archived_at_unix_nanos.to_le_bytes());
        debug_assert_eq!(bytes.len(), CRC_OFFSET);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks a manifest.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() != MANIFEST_BYTES {
            return Err(format!(
                "manifest is {} bytes; a version-{MANIFEST_FORMAT_VERSION} manifest is {MANIFEST_BYTES}",
                bytes.len()
            ));
        }
        if bytes[..8] != MANIFEST_MAGIC {
            return Err("bad magic: not a trail manifest".into());
        }
        let mut reader = Reader { bytes, at: 8 };
        let version = reader.u32();
        if version != MANIFEST_FORMAT_VERSION {
            return Err(format!(
                "manifest format version {version} is not supported (this build reads {MANIFEST_FORMAT_VERSION})"
            ));
        }
        let stored_crc = u32::from_le_bytes(array(&bytes[CRC_OFFSET..]));
        if crc32fast::hash(&bytes[..CRC_OFFSET]) != stored_crc {
            return Err("manifest checksum mismatch".into());
        }
        let compression_code = reader.u32();
        let compression = Compression::from_code(compression_code)
            .ok_or_else(|| format!("unknown compression code {compression_code}"))?;
        let log_id = RecordHash(reader.hash());
        let first_lsn = Lsn(reader.u64());
        let last_lsn = Lsn(reader.u64());
        let record_count = reader.u64();
        let prev_hash = RecordHash(reader.hash());
        let last_hash = RecordHash(reader.hash());
        let last_recorded_at_unix_nanos = reader.i64();
        let mut digest = || Digest {
            bytes: reader.u64(),
            blake3: reader.hash(),
        };
        let segment = digest();
        let segment_object = digest();
        let index = digest();
        let index_object = digest();
        let prev_manifest = reader.hash();
        let archived_at_unix_nanos = reader.i64();
        debug_assert_eq!(reader.at, CRC_OFFSET);
        if first_lsn.0 == 0 || last_lsn < first_lsn || record_count != last_lsn.0 - first_lsn.0 + 1
        {
            return Err(format!(
                "lsn range {first_lsn}..={last_lsn} does not hold {record_count} records"
            ));
        }
        Ok(Manifest {
            compression,
            log_id,
            first_lsn,
            last_lsn,
            record_count,
            prev_hash,
            last_hash,
            last_recorded_at_unix_nanos,
            segment,
            segment_object,
            index,
            index_object,
            prev_manifest,
            archived_at_unix_nanos,
        })
    }

    /// blake3 of the manifest's bytes: what the next manifest names, and
    /// what an archived-prefix record's voucher names.
    #[must_use]
    pub fn digest(&self) -> [u8; 32] {
        *blake3::hash(&self.encode()).as_bytes()
    }

    /// The voucher an archived-prefix record (`wal/PREFIX`) carries when
    /// this is the last archived segment before the local log.
    #[must_use]
    pub fn voucher(&self) -> String {
        format!("archive manifest blake3:{}", hex::encode(self.digest()))
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Reads fixed-width fields in order; the caller checked the length.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let out = array(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take())
    }
    fn hash(&mut self) -> [u8; 32] {
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            compression: Compression::Zstd,
            log_id: RecordHash([1; 32]),
            first_lsn: Lsn(1),
            last_lsn: Lsn(10),
            record_count: 10,
            prev_hash: RecordHash([2; 32]),
            last_hash: RecordHash([3; 32]),
            last_recorded_at_unix_nanos: 1_700_000_000_000_000_000,
            segment: Digest::of(b"segment"),
            segment_object: Digest::of(b"object"),
            index: Digest::of(b"index"),
            index_object: Digest::of(b"index object"),
            prev_manifest: [0; 32],
            archived_at_unix_nanos: 1_700_000_001_000_000_000,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let manifest = sample();
        let bytes = manifest.encode();
        assert_eq!(bytes.len(), MANIFEST_BYTES);
        assert_eq!(Manifest::decode(&bytes), Ok(manifest.clone()));
        for position in [0, 8, 12, 20, 50, 70, 140, 200, 300, 340, MANIFEST_BYTES - 1] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x01;
            assert!(Manifest::decode(&damaged).is_err(), "byte {position}");
        }
        assert!(Manifest::decode(&bytes[..MANIFEST_BYTES - 1]).is_err());
        assert!(manifest.voucher().starts_with("archive manifest blake3:"));
    }

    #[test]
    fn refuses_an_inconsistent_range() {
        let mut manifest = sample();
        manifest.record_count = 9;
        assert!(Manifest::decode(&manifest.encode()).is_err());
    }
}

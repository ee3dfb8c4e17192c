//! The sidecar index of a sealed segment, `<first_lsn:020>.idx`: a sparse
//! LSN -> offset table that lets range reads seek, and the segment's event-id
//! keys for the idempotency check. Derived from the segment and rebuilt from
//! it whenever missing or damaged.

use std::path::Path;

use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::segment::{
    check_sealed_end, scan_segment, ScannedRecord, SegmentHeader, SegmentScan, SEGMENT_HEADER_BYTES,
};
use crate::types::{Lsn, RecordHash};

/// The magic an index file starts with.
pub const INDEX_MAGIC: [u8; 8] = *b"TRAILIDX";
/// The index format this build writes and reads.
pub const INDEX_FORMAT_VERSION: u32 = 1;
/// One sparse entry per this many bytes of segment (at most).
pub const SPARSE_STRIDE_BYTES: u64 = 64 * 1024;
const INDEX_HEADER_BYTES: usize = 8 + 4 + 4 + 8 * 5;

/// The 64-bit key an event id is indexed by: the first 8 bytes of its blake3
/// hash, little endian. A key match is confirmed against the stored record.
#[must_use]
pub fn event_id_key(event_id: &str) -> u64 {
    let hash = blake3::hash(event_id.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(key)
}

/// The contents of a segment's sidecar index.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SegmentIndex {
    /// First LSN of the segment.
    pub first_lsn: Lsn,
    /// Last LSN of the segment.
    pub last_lsn: Lsn,
    /// Length of the segment file the index was built from.
    pub segment_bytes: u64,
    /// Offset of the seal frame.
    pub seal_offset: u64,
    /// `(lsn, offset)` of a record at least every [`SPARSE_STRIDE_BYTES`],
    /// ascending; the first record is always present.
    pub sparse: Vec<(Lsn, u64)>,
    /// `(event id key, lsn)` sorted ascending.
    pub ids: Vec<(u64, Lsn)>,
}

impl SegmentIndex {
    /// The file's bytes: header, sparse entries, id entries, crc32 of all
    /// that precedes it.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(INDEX_HEADER_BYTES + 16 * (self.sparse.len() + self.ids.len()) + 4);
        bytes.extend_from_slice(&INDEX_MAGIC);
        bytes.extend_from_slice(&INDEX_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        for value in [
            self.first_lsn.0,
            self.last_lsn.0,
            self.segment_bytes,
            self.seal_offset,
            self.sparse.len() as u64,
        ] {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        for (lsn, offset) in &self.sparse {
            bytes.extend_from_slice(&lsn.0.to_le_bytes());
            bytes.extend_from_slice(&offset.to_le_bytes());
        }
        for (key, lsn) in &self.ids {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&lsn.0.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks an index file.
    ///
    /// # Errors
    /// What is wrong with it; callers rebuild the index from the segment.
    pub fn decode(bytes: &[u8]) -> Result<SegmentIndex, String> {
        if bytes.len() < INDEX_HEADER_BYTES + 4 {
            return Err("index file is too short".into());
        }
        let (content, crc) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(content) != stored {
            return Err("index checksum mismatch".into());
        }
        if content[..8] != INDEX_MAGIC {
            return Err("bad index magic".into());
        }
        let word = |at: usize| {
            let mut value = [0u8; 8];
            value.copy_from_slice(&content[at..at + 8]);
            u64::from_le_bytes(value)
        };
        let version = u32::from_le_bytes([content[8], content[9], content[10], content[11]]);
        if version != INDEX_FORMAT_VERSION {
            return Err(format!("index format version {version} is not supported"));
        }
        let sparse_count = usize::try_from(word(48)).map_err(|_| "sparse count overflows")?;
        let entries = (content.len() - INDEX_HEADER_BYTES) / 16;
        if !(content.len() - INDEX_HEADER_BYTES).is_multiple_of(16) || sparse_count > entries {
            return Err("index entry table has the wrong length".into());
        }
        let entry = |index: usize| {
            (
                word(INDEX_HEADER_BYTES + 16 * index),
                word(INDEX_HEADER_BYTES + 16 * index + 8),
            )
        };
        let sparse = (0..sparse_count).map(|index| {
            let (lsn, offset) = entry(index);
            (Lsn(lsn), offset)
        });
        let ids = (sparse_count..entries).map(|index| {
            let (key, lsn) = entry(index);
            (key, Lsn(lsn))
        });
        Ok(SegmentIndex {
            first_lsn: Lsn(word(16)),
            last_lsn: Lsn(word(24)),
            segment_bytes: word(32),
            seal_offset: word(40),
            sparse: sparse.collect(),
            ids: ids.collect(),
        })
    }

    /// Byte offset of the first `(key, lsn)` entry in the encoded file.
    #[must_use]
    pub fn id_table_offset(&self) -> u64 {
        (INDEX_HEADER_BYTES + 16 * self.sparse.len()) as u64
    }

    /// LSNs whose event id has this key.
    #[must_use]
    pub fn lsns_with_key(&self, key: u64) -> Vec<Lsn> {
        let start = self.ids.partition_point(|(candidate, _)| *candidate < key);
        self.ids[start..]
            .iter()
            .take_while(|(candidate, _)| *candidate == key)
            .map(|(_, lsn)| *lsn)
            .collect()
    }
}

/// The last sparse entry at or before `lsn`: the LSN of the record at that
/// offset and the offset; `None` when the scan starts at the segment's
/// first record.
#[must_use]
pub fn seek_entry(sparse: &[(Lsn, u64)], lsn: Lsn) -> Option<(Lsn, u64)> {
    let position = sparse.partition_point(|(entry_lsn, _)| *entry_lsn <= lsn);
    position.checked_sub(1).map(|at| sparse[at])
}

/// What a full scan of a segment collects besides the scan itself.
#[derive(Default)]
pub(crate) struct Collected {
    pub sparse: Vec<(Lsn, u64)>,
    pub keys: Vec<(u64, Lsn)>,
}

pub(crate) fn scan_collecting(
    file: &dyn ReadFile,
    path: &Path,
    expected: &SegmentHeader,
    recorded_at_floor: i64,
    progress: &mut dyn FnMut(Lsn),
) -> Result<(SegmentScan, Collected)> {
    let mut collected = Collected::default();
    let mut visit = |scanned: &ScannedRecord<'_>| {
        let offset = scanned.offset;
        if collected
            .sparse
            .last()
            .is_none_or(|(_, last)| offset >= last + SPARSE_STRIDE_BYTES)
        {
            collected.sparse.push((scanned.record.lsn, offset));
        }
        collected
            .keys
            .push((event_id_key(&scanned.record.event_id), scanned.record.lsn));
        if scanned.record.lsn.0.is_multiple_of(4096) {
            progress(scanned.record.lsn);
        }
    };
    let scan = scan_segment(file, path, expected, None, recorded_at_floor, &mut visit)?;
    Ok((scan, collected))
}

/// Builds a sealed segment's sidecar index by scanning it.
pub(crate) fn index_sealed_segment(
    fs: &dyn FileSystem,
    path: &Path,
    log_id: RecordHash,
) -> Result<SegmentIndex> {
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let mut header_bytes = [0u8; SEGMENT_HEADER_BYTES];
    file.read_exact_at(&mut header_bytes, 0)
        .map_err(|error| LogError::io("reading the header of", path, error))?;
    let header = SegmentHeader::decode(&header_bytes)
        .map_err(|reason| LogError::corruption(path, 0, Lsn::ZERO, reason))?;
    let expected = SegmentHeader { log_id, ..header };
    let (scan, collected) = scan_collecting(file.as_ref(), path, &expected, i64::MIN, &mut |_| {})?;
    sealed_index(file.as_ref(), &scan, collected)
}

/// A sealed segment's index from a full scan, after checking that the
/// segment ends exactly with its seal and footer.
pub(crate) fn sealed_index(
    file: &dyn ReadFile,
    scan: &SegmentScan,
    collected: Collected,
) -> Result<SegmentIndex> {
    if let Some(damage) = &scan.damage {
        return Err(LogError::corruption(
            &scan.path,
            damage.offset,
            damage.lsn,
            damage.reason.clone(),
        ));
    }
    check_sealed_end(file, scan).map_err(|(offset, reason)| {
        LogError::corruption(&scan.path, offset, scan.last_lsn.next(), reason)
    })?;
    Ok(index_from_scan(scan, collected))
}

/// The index a full scan of a segment with a seal implies.
pub(crate) fn index_from_scan(scan: &SegmentScan, mut collected: Collected) -> SegmentIndex {
    let seal_offset = scan.seal.map_or(scan.end_offset, |(_, offset)| offset);
    collected.keys.sort_unstable();
    SegmentIndex {
        first_lsn: scan.header.first_lsn,
        last_lsn: scan.last_lsn,
        segment_bytes: scan.file_len,
        seal_offset,
        sparse: collected.sparse,
        ids: collected.keys,
    }
}

/// Writes a sealed segment's sidecar index (see [`crate::fs::write_file_durably`]).
pub(crate) fn write_index_file(
    fs: &dyn FileSystem,
    path: &Path,
    index: &SegmentIndex,
) -> Result<()> {
    crate::fs::write_file_durably(fs, path, &index.encode())
        .map_err(|error| LogError::io("writing", path, error))
}

/// Reads a sidecar's header and sparse table only (what opening a log
/// needs: a few KiB, whatever the segment's size), checking the layout but
/// not the checksum, which covers the id table too: the writer checks it
/// when it reads the id table (`ids::EventIdIndex::load_pending`). Returns
/// the number of id entries too.
pub(crate) fn read_index_head(fs: &dyn FileSystem, path: &Path) -> Result<(SegmentIndex, u64)> {
    let corrupt = |reason: &str| LogError::corruption(path, 0, Lsn::ZERO, reason.to_owned());
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    let mut header = [0u8; INDEX_HEADER_BYTES];
    if len < (INDEX_HEADER_BYTES + 4) as u64 {
        return Err(corrupt("index file is too short"));
    }
    file.read_exact_at(&mut header, 0)
        .map_err(|error| LogError::io("reading", path, error))?;
    if header[..8] != INDEX_MAGIC {
        return Err(corrupt("bad index magic"));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != INDEX_FORMAT_VERSION {
        return Err(corrupt("index format version is not supported"));
    }
    let word = |bytes: &[u8], at: usize| {
        let mut value = [0u8; 8];
        value.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(value)
    };
    let table = len - INDEX_HEADER_BYTES as u64 - 4;
    let sparse_count = word(&header, 48);
    if !table.is_multiple_of(16) || sparse_count > table / 16 {
        return Err(corrupt("index entry table has the wrong length"));
    }
    let sparse_len =
        usize::try_from(sparse_count * 16).map_err(|_| corrupt("sparse table too large"))?;
    let mut sparse_bytes = vec![0u8; sparse_len];
    file.read_exact_at(&mut sparse_bytes, INDEX_HEADER_BYTES as u64)
        .map_err(|error| LogError::io("reading", path, error))?;
    let sparse = sparse_bytes
        .chunks_exact(16)
        .map(|entry| (Lsn(word(entry, 0)), word(entry, 8)))
        .collect();
    let index = SegmentIndex {
        first_lsn: Lsn(word(&header, 16)),
        last_lsn: Lsn(word(&header, 24)),
        segment_bytes: word(&header, 32),
        seal_offset: word(&header, 40),
        sparse,
        ids: Vec::new(),
    };
    Ok((index, table / 16 - sparse_count))
}

/// A small derived file's bytes, read whole, without its trailing crc32,
/// which must match (sidecars and the files like them end with one).
pub(crate) fn read_checked(fs: &dyn FileSystem, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = read_whole(fs, path)?;
    let Some(content_len) = bytes.len().checked_sub(4) else {
        return Err(LogError::corruption(
            path,
            0,
            Lsn::ZERO,
            "file too short for its checksum",
        ));
    };
    let crc = u32::from_le_bytes([
        bytes[content_len],
        bytes[content_len + 1],
        bytes[content_len + 2],
        bytes[content_len + 3],
    ]);
    if crc32fast::hash(&bytes[..content_len]) != crc {
        return Err(LogError::corruption(
            path,
            0,
            Lsn::ZERO,
            "checksum mismatch",
        ));
    }
    bytes.truncate(content_len);
    Ok(bytes)
}

fn read_whole(fs: &dyn FileSystem, path: &Path) -> Result<Vec<u8>> {
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let len = file
        .len()
        .map_err(|error| LogError::io("reading the length of", path, error))?;
    let len = usize::try_from(len)
        .map_err(|_| LogError::corruption(path, 0, Lsn::ZERO, "index file too large"))?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|error| LogError::io("reading", path, error))?;
    Ok(bytes)
}

/// Rebuilds a sealed segment's sidecar from the segment itself, and writes
/// it back (best effort: the answer is right either way).
pub(crate) fn rebuild_sidecar(
    fs: &dyn FileSystem,
    wal_dir: &Path,
    log_id: RecordHash,
    first_lsn: Lsn,
) -> Result<SegmentIndex> {
    let path = wal_dir.join(crate::segment::segment_file_name(first_lsn));
    let index = index_sealed_segment(fs, &path, log_id)?;
    let index_path = wal_dir.join(crate::segment::index_file_name(first_lsn));
    if let Err(error) = write_index_file(fs, &index_path, &index) {
        tracing::warn!(%error, "could not rewrite a segment index");
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_detects_damage() {
        let index = SegmentIndex {
            first_lsn: Lsn(10),
            last_lsn: Lsn(12),
            segment_bytes: 4096,
            seal_offset: 4000,
            sparse: vec![(Lsn(10), 96), (Lsn(12), 2000)],
            ids: vec![(1, Lsn(11)), (5, Lsn(10)), (5, Lsn(12))],
        };
        let mut bytes = index.encode();
        assert_eq!(SegmentIndex::decode(&bytes), Ok(index.clone()));
        assert_eq!(index.lsns_with_key(5), vec![Lsn(10), Lsn(12)]);
        assert!(index.lsns_with_key(4).is_empty());
        assert_eq!(seek_entry(&index.sparse, Lsn(11)), Some((Lsn(10), 96)));
        assert_eq!(seek_entry(&index.sparse, Lsn(13)), Some((Lsn(12), 2000)));
        assert_eq!(seek_entry(&index.sparse, Lsn(9)), None);
        bytes[20] ^= 1;
        assert!(SegmentIndex::decode(&bytes).is_err());
    }
}

//! The event-id index the writer checks every append against, so a retry is
//! safe for the log's whole life. Ids of the active segment are held exactly
//! in memory; ids of sealed segments live in their `.idx` sidecars, behind a
//! growable Bloom filter over every id of the log and a small blocked Bloom
//! filter per sealed segment. A new id (the common case) costs one global
//! filter probe; a filter hit probes the segment filters and binary-searches
//! the sidecar of each segment that may hold the id. Memory: about 3 bytes
//! per event, whatever the log's age.

use std::collections::HashMap;
use std::path::PathBuf;

use fastbloom::BloomFilter;
use growable_bloom_filter::GrowableBloom;

use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::index::{event_id_key, SegmentIndex};
use crate::types::Lsn;

/// False-positive rate of the global filter over every id of the log: a
/// false positive costs a probe of each sealed segment's filter.
const GLOBAL_FALSE_POSITIVE_RATE: f64 = 0.001;
const GLOBAL_INITIAL_CAPACITY: usize = 100_000;
/// False-positive rate of one sealed segment's filter: a false positive costs
/// a binary search of that segment's sidecar on disk (about 17 small reads).
const SEGMENT_FALSE_POSITIVE_RATE: f64 = 0.01;

/// Where sealed segments' ids are found.
#[derive(Debug, Clone)]
pub(crate) struct SealedIds {
    pub first_lsn: Lsn,
    pub index_path: PathBuf,
}

/// A sealed segment's ids: an in-memory filter over its keys (about ten bits
/// each), and where its sorted key table sits in the sidecar.
struct SealedSegmentIds {
    ids: SealedIds,
    filter: BloomFilter,
    /// Byte offset of the first `(key, lsn)` entry in the sidecar.
    table_offset: u64,
    entries: u64,
}

pub(crate) struct EventIdIndex {
    filter: GrowableBloom,
    active: HashMap<String, Lsn>,
    /// Oldest first.
    sealed: Vec<SealedSegmentIds>,
}

impl std::fmt::Debug for EventIdIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventIdIndex")
            .field("active", &self.active.len())
            .field("sealed", &self.sealed.len())
            .finish()
    }
}

impl EventIdIndex {
    pub fn new() -> EventIdIndex {
        EventIdIndex {
            filter: GrowableBloom::new(GLOBAL_FALSE_POSITIVE_RATE, GLOBAL_INITIAL_CAPACITY),
            active: HashMap::new(),
            sealed: Vec::new(),
        }
    }

    fn push_sealed(&mut self, ids: SealedIds, index: &SegmentIndex) {
        let filter = BloomFilter::with_false_pos(SEGMENT_FALSE_POSITIVE_RATE)
            .items(index.ids.iter().map(|(key, _)| key).collect::<Vec<_>>());
        self.sealed.push(SealedSegmentIds {
            ids,
            filter,
            table_offset: index.id_table_offset(),
            entries: index.ids.len() as u64,
        });
    }

    /// Registers a sealed segment found at open, with its index.
    pub fn add_sealed(&mut self, sealed: SealedIds, index: &SegmentIndex) {
        for (key, _) in &index.ids {
            self.filter.insert(*key);
        }
        self.push_sealed(sealed, index);
    }

    /// Registers an id of the active segment.
    pub fn insert_active(&mut self, key: u64, event_id: String, lsn: Lsn) {
        debug_assert_eq!(key, event_id_key(&event_id));
        self.filter.insert(key);
        self.active.insert(event_id, lsn);
    }

    /// The active segment was sealed with this index: its ids (already in
    /// the global filter) are now found through its sidecar.
    pub fn seal_active(&mut self, sealed: SealedIds, index: &SegmentIndex) {
        self.active.clear();
        self.push_sealed(sealed, index);
    }

    /// LSNs that may hold this id: exact for the active segment, confirmed
    /// by key for sealed ones (the caller compares the stored id).
    /// `rebuild` produces a sealed segment's index when its sidecar cannot
    /// be read.
    pub fn candidates(
        &self,
        fs: &dyn FileSystem,
        event_id: &str,
        rebuild: &mut dyn FnMut(Lsn) -> Result<SegmentIndex>,
    ) -> Result<Vec<Lsn>> {
        if let Some(lsn) = self.active.get(event_id) {
            return Ok(vec![*lsn]);
        }
        let key = event_id_key(event_id);
        if !self.filter.contains(key) {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for sealed in self.sealed.iter().rev() {
            if !sealed.filter.contains(&key) {
                continue;
            }
            match search_table(fs, sealed, key) {
                Ok(lsns) => found.extend(lsns),
                Err(_) => found.extend(rebuild(sealed.ids.first_lsn)?.lsns_with_key(key)),
            }
        }
        Ok(found)
    }
}

/// Binary search of a sidecar's sorted `(key, lsn)` table, read entry by
/// entry. The sidecar was checked whole when the log opened (or written by
/// this process); a wrong answer here is caught by the caller, which compares
/// the stored event id.
fn search_table(fs: &dyn FileSystem, sealed: &SealedSegmentIds, key: u64) -> Result<Vec<Lsn>> {
    let path = &sealed.ids.index_path;
    let file = fs
        .open_read(path)
        .map_err(|error| LogError::io("opening", path, error))?;
    let entry = |file: &dyn ReadFile, position: u64| -> Result<(u64, Lsn)> {
        let mut bytes = [0u8; 16];
        file.read_exact_at(&mut bytes, sealed.table_offset + 16 * position)
            .map_err(|error| LogError::io("reading", path, error))?;
        let (key_bytes, lsn_bytes) = bytes.split_at(8);
        let word = |part: &[u8]| {
            let mut word = [0u8; 8];
            word.copy_from_slice(part);
            u64::from_le_bytes(word)
        };
        Ok((word(key_bytes), Lsn(word(lsn_bytes))))
    };
    let (mut low, mut high) = (0u64, sealed.entries);
    while low < high {
        let middle = low + (high - low) / 2;
        if entry(file.as_ref(), middle)?.0 < key {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    let mut lsns = Vec::new();
    while low < sealed.entries {
        let (found, lsn) = entry(file.as_ref(), low)?;
        if found != key {
            break;
        }
        lsns.push(lsn);
        low += 1;
    }
    Ok(lsns)
}

/// Reads and checks a sidecar index.
pub(crate) fn read_index(fs: &dyn FileSystem, path: &std::path::Path) -> Result<SegmentIndex> {
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
    SegmentIndex::decode(&bytes).map_err(|reason| LogError::corruption(path, 0, Lsn::ZERO, reason))
}

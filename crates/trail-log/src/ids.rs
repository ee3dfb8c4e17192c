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

use crate::error::{LogError, Result};
use crate::fs::{FileSystem, ReadFile};
use crate::index::SegmentIndex;
use crate::types::Lsn;

/// False-positive rate of each generation of the global filter over every id
/// of the log: a false positive costs a probe of each sealed segment's filter.
const GLOBAL_FALSE_POSITIVE_RATE: f64 = 0.001;
/// Ids the first generation of the global filter holds; each next one holds
/// twice as many, so a log of n ids has about log2(n / this) generations.
const GLOBAL_FIRST_GENERATION_IDS: usize = 1 << 20;

/// A Bloom filter that grows by adding generations of doubling size;
/// inserts go to the newest generation only, a probe asks every generation.
/// (fastbloom sets each of its hashes' bits anywhere in the array, so a
/// probe costs a few cache misses per generation: opening a log sizes one
/// generation for all its ids.)
struct GrowingFilter {
    generations: Vec<BloomFilter>,
    /// Ids in the newest generation, and how many it was sized for.
    newest_ids: usize,
    newest_capacity: usize,
}

impl GrowingFilter {
    fn new() -> GrowingFilter {
        GrowingFilter {
            generations: Vec::new(),
            newest_ids: 0,
            newest_capacity: 0,
        }
    }

    /// Makes room for `ids` more in the newest generation, adding one sized
    /// for all of them when it has less (opening a log with many ids).
    fn reserve(&mut self, ids: usize) {
        if self.newest_capacity.saturating_sub(self.newest_ids) < ids {
            let capacity = ids.max(GLOBAL_FIRST_GENERATION_IDS);
            self.newest_capacity = capacity;
            self.newest_ids = 0;
            self.generations.push(
                BloomFilter::with_false_pos(GLOBAL_FALSE_POSITIVE_RATE).expected_items(capacity),
            );
        }
    }

    fn insert(&mut self, key: u64) {
        if self.newest_ids == self.newest_capacity {
            self.newest_capacity = (self.newest_capacity * 2).max(GLOBAL_FIRST_GENERATION_IDS);
            self.newest_ids = 0;
            self.generations.push(
                BloomFilter::with_false_pos(GLOBAL_FALSE_POSITIVE_RATE)
                    .expected_items(self.newest_capacity),
            );
        }
        if let Some(newest) = self.generations.last_mut() {
            // Keys are already 64 bits of blake3: used as the filter's hash.
            newest.insert_hash(key);
        }
        self.newest_ids += 1;
    }

    fn contains(&self, key: u64) -> bool {
        self.generations
            .iter()
            .rev()
            .any(|generation| generation.contains_hash(key))
    }
}
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
    filter: SegmentFilter,
    /// Byte offset of the first `(key, lsn)` entry in the sidecar.
    table_offset: u64,
    entries: u64,
}

/// What is known of a sealed segment's keys in memory.
enum SegmentFilter {
    /// Registered at open; its keys are read by [`EventIdIndex::load_pending`].
    Pending,
    Loaded(BloomFilter),
    /// Its key table could not be read: every lookup searches it (through
    /// a sidecar rebuilt from the segment).
    Unavailable,
}

pub(crate) struct EventIdIndex {
    filter: GrowingFilter,
    /// Ids of the active segment by key. Keys are 64 bits of blake3, so two
    /// ids share one only by accident; the second goes to `active_collisions`
    /// and lookups return both (the caller compares the stored ids).
    active: HashMap<u64, Lsn, foldhash::fast::RandomState>,
    active_collisions: Vec<(u64, Lsn)>,
    /// Oldest first.
    sealed: Vec<SealedSegmentIds>,
    /// Sealed segments whose keys are not (all) in `filter`: while there is
    /// one, a miss in `filter` proves nothing.
    incomplete: usize,
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
            filter: GrowingFilter::new(),
            active: HashMap::default(),
            active_collisions: Vec::new(),
            sealed: Vec::new(),
            incomplete: 0,
        }
    }

    fn segment_filter<'a>(keys: impl ExactSizeIterator<Item = &'a u64>) -> BloomFilter {
        let mut filter = BloomFilter::with_false_pos(SEGMENT_FALSE_POSITIVE_RATE)
            .expected_items(keys.len().max(1));
        for key in keys {
            filter.insert_hash(*key);
        }
        filter
    }

    fn push_sealed(&mut self, ids: SealedIds, index: &SegmentIndex) {
        let filter = Self::segment_filter(index.ids.iter().map(|(key, _)| key));
        self.sealed.push(SealedSegmentIds {
            ids,
            filter: SegmentFilter::Loaded(filter),
            table_offset: index.id_table_offset(),
            entries: index.ids.len() as u64,
        });
    }

    /// Registers a sealed segment found at open whose key table (`entries`
    /// entries at `table_offset` of its sidecar) is read later, by
    /// [`EventIdIndex::load_pending`]: opening a large log reads no key.
    pub fn add_sealed_pending(&mut self, sealed: SealedIds, table_offset: u64, entries: u64) {
        self.incomplete += 1;
        self.sealed.push(SealedSegmentIds {
            ids: sealed,
            filter: SegmentFilter::Pending,
            table_offset,
            entries,
        });
    }

    /// Whether some sealed segment's keys are still to be read.
    pub fn has_pending(&self) -> bool {
        self.sealed
            .iter()
            .any(|sealed| matches!(sealed.filter, SegmentFilter::Pending))
    }

    /// Reads the key tables of the segments registered pending: into the
    /// global filter and a filter per segment. A sidecar whose table cannot
    /// be read or fails its checksum is rebuilt from its segment by
    /// `rebuild`; the rebuilt indexes are returned (their sparse tables
    /// replace what the catalog took from the damaged sidecar). A segment
    /// that cannot be rebuilt either is searched through `rebuild` on every
    /// lookup (never a missed retry). Returns the keys loaded too.
    pub fn load_pending(
        &mut self,
        fs: &dyn FileSystem,
        rebuild: &mut dyn FnMut(Lsn) -> Result<SegmentIndex>,
    ) -> (u64, Vec<SegmentIndex>) {
        let pending: u64 = self
            .sealed
            .iter()
            .filter(|sealed| matches!(sealed.filter, SegmentFilter::Pending))
            .map(|sealed| sealed.entries)
            .sum();
        // One generation for all of them (and as many again), rather than
        // a doubling chain each append would probe generation by generation.
        self.filter
            .reserve(usize::try_from(pending.saturating_mul(2)).unwrap_or(usize::MAX));
        let mut loaded = 0u64;
        let mut rebuilt = Vec::new();
        for position in 0..self.sealed.len() {
            if !matches!(self.sealed[position].filter, SegmentFilter::Pending) {
                continue;
            }
            let keys = match read_key_table(fs, &self.sealed[position]) {
                Ok(keys) => keys,
                Err(error) => {
                    tracing::warn!(%error, "a sidecar's event ids are unreadable: rebuilding it from its segment");
                    match rebuild(self.sealed[position].ids.first_lsn) {
                        Ok(index) => {
                            let keys = index.ids.iter().map(|(key, _)| *key).collect();
                            self.sealed[position].table_offset = index.id_table_offset();
                            self.sealed[position].entries = index.ids.len() as u64;
                            rebuilt.push(index);
                            keys
                        }
                        Err(error) => {
                            tracing::error!(%error, "cannot rebuild a sidecar: that segment is searched on every append");
                            self.sealed[position].filter = SegmentFilter::Unavailable;
                            continue;
                        }
                    }
                }
            };
            for key in &keys {
                self.filter.insert(*key);
            }
            loaded += keys.len() as u64;
            self.sealed[position].filter = SegmentFilter::Loaded(Self::segment_filter(keys.iter()));
            self.incomplete -= 1;
        }
        (loaded, rebuilt)
    }

    /// Registers a sealed segment found at open, with its index.
    pub fn add_sealed(&mut self, sealed: SealedIds, index: &SegmentIndex) {
        for (key, _) in &index.ids {
            self.filter.insert(*key);
        }
        self.push_sealed(sealed, index);
    }

    /// Registers an id of the active segment by its key.
    pub fn insert_active(&mut self, key: u64, lsn: Lsn) {
        self.filter.insert(key);
        if let Some(earlier) = self.active.insert(key, lsn) {
            self.active_collisions.push((key, earlier));
        }
    }

    /// The active segment was sealed with this index: its ids (already in
    /// the global filter) are now found through its sidecar.
    pub fn seal_active(&mut self, sealed: SealedIds, index: &SegmentIndex) {
        self.active.clear();
        self.active_collisions.clear();
        self.push_sealed(sealed, index);
    }

    /// LSNs that may hold this id: exact for the active segment, confirmed
    /// by key for sealed ones (the caller compares the stored id).
    /// `rebuild` produces a sealed segment's index when its sidecar cannot
    /// be read.
    pub fn candidates(
        &self,
        fs: &dyn FileSystem,
        key: u64,
        rebuild: &mut dyn FnMut(Lsn) -> Result<SegmentIndex>,
    ) -> Result<Vec<Lsn>> {
        if self.incomplete == 0 && !self.filter.contains(key) {
            return Ok(Vec::new());
        }
        let mut found: Vec<Lsn> = self.active.get(&key).copied().into_iter().collect();
        found.extend(
            self.active_collisions
                .iter()
                .filter(|(collided, _)| *collided == key)
                .map(|(_, lsn)| *lsn),
        );
        for sealed in self.sealed.iter().rev() {
            let may_hold = match &sealed.filter {
                SegmentFilter::Loaded(filter) => filter.contains_hash(key),
                SegmentFilter::Pending | SegmentFilter::Unavailable => true,
            };
            if !may_hold {
                continue;
            }
            if matches!(sealed.filter, SegmentFilter::Unavailable) {
                found.extend(rebuild(sealed.ids.first_lsn)?.lsns_with_key(key));
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

/// A sidecar's keys, read in one go with the whole file's checksum
/// (opening the log read only its head).
fn read_key_table(fs: &dyn FileSystem, sealed: &SealedSegmentIds) -> Result<Vec<u64>> {
    let path = &sealed.ids.index_path;
    let content = crate::index::read_checked(fs, path)?;
    let table_start = usize::try_from(sealed.table_offset).unwrap_or(usize::MAX);
    let table_len = usize::try_from(sealed.entries.saturating_mul(16)).unwrap_or(usize::MAX);
    if table_start.checked_add(table_len) != Some(content.len()) {
        return Err(LogError::corruption(
            path,
            0,
            Lsn::ZERO,
            "index file changed since the log opened",
        ));
    }
    Ok(content[table_start..]
        .chunks_exact(16)
        .map(|entry| {
            let mut key = [0u8; 8];
            key.copy_from_slice(&entry[..8]);
            u64::from_le_bytes(key)
        })
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::OsFileSystem;

    #[test]
    fn the_global_filter_grows_by_generations_and_forgets_nothing() {
        let mut filter = GrowingFilter::new();
        let keys: Vec<u64> = (0..(3 << 20) as u64)
            .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for key in &keys {
            filter.insert(*key);
        }
        assert_eq!(filter.generations.len(), 2, "1 Mi ids, then 2 Mi ids");
        assert!(
            keys.iter().step_by(997).all(|key| filter.contains(*key)),
            "no false negatives"
        );
    }

    #[test]
    fn two_ids_sharing_a_key_are_both_candidates() -> Result<()> {
        let mut index = EventIdIndex::new();
        index.insert_active(42, Lsn(7));
        index.insert_active(42, Lsn(9));
        index.insert_active(43, Lsn(8));
        let mut no_rebuild = |_| Err(LogError::InvalidArgument("no sealed segments".into()));
        let mut found = index.candidates(&OsFileSystem, 42, &mut no_rebuild)?;
        found.sort();
        assert_eq!(found, vec![Lsn(7), Lsn(9)]);
        assert!(index
            .candidates(&OsFileSystem, 44, &mut no_rebuild)?
            .is_empty());
        Ok(())
    }
}

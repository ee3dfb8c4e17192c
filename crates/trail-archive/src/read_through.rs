//! Reads of archived LSNs: the segment holding them is fetched from the
//! store, checked as `verify` checks it (digests, every record and link,
//! the manifest chain), and kept in a cache bounded by bytes (least
//! recently used goes first). Concurrent readers of one segment share one
//! download. Not wired into the server's Read yet: this is the library half.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;
use trail_log::segment::{scan_segment, ScannedRecord, SegmentHeader};
use trail_log::{LogName, Lsn, StoredRecord};

use crate::chain::{load_chain, ChainLink};
use crate::check::error_chain;
use crate::error::Result;
use crate::target::ArchiveTarget;
use crate::verify::fetch_segment;

/// Most records one read returns: a caller pages through longer ranges.
pub const READ_RECORDS_MAX: u64 = 4096;

/// Cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from a cached segment.
    pub hits: u64,
    /// Reads that needed a download.
    pub misses: u64,
    /// Segments downloaded and verified.
    pub downloads: u64,
    /// Bytes of segments cached now.
    pub cached_bytes: u64,
}

struct Cached {
    bytes: Arc<Vec<u8>>,
    last_used: u64,
}

#[derive(Default)]
struct CacheState {
    /// The manifest chain by first LSN, read once.
    chain: Option<BTreeMap<Lsn, ChainLink>>,
    segments: BTreeMap<Lsn, Cached>,
    cached_bytes: u64,
    clock: u64,
}

/// Reads archived records of one log through a bounded cache.
pub struct ArchiveReader {
    target: ArchiveTarget,
    log: LogName,
    cache_bytes_max: u64,
    state: Mutex<CacheState>,
    /// One lock per segment being fetched: the first reader downloads,
    /// the others wait for it and then hit the cache.
    downloads: Mutex<HashMap<Lsn, Arc<Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    fetched: AtomicU64,
}

impl ArchiveReader {
    /// A reader of `log`'s archive keeping at most `cache_bytes_max` bytes
    /// of segments (one segment larger than that is used once, not kept).
    #[must_use]
    pub fn new(target: ArchiveTarget, log: LogName, cache_bytes_max: u64) -> ArchiveReader {
        ArchiveReader {
            target,
            log,
            cache_bytes_max,
            state: Mutex::new(CacheState::default()),
            downloads: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
        }
    }

    /// Counters so far.
    pub async fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            downloads: self.fetched.load(Ordering::Relaxed),
            cached_bytes: self.state.lock().await.cached_bytes,
        }
    }

    /// Archived records `from..=to_inclusive`, at most [`READ_RECORDS_MAX`]
    /// of them, stopping at the end of the archive.
    ///
    /// # Errors
    /// [`ArchiveError::DataLoss`] for an archive that fails its checks,
    /// [`ArchiveError::Store`] when the store fails.
    pub async fn read(&self, from: Lsn, to_inclusive: Lsn) -> Result<Vec<StoredRecord>> {
        let from = from.max(Lsn::FIRST);
        let to = Lsn(to_inclusive
            .0
            .min(from.0.saturating_add(READ_RECORDS_MAX - 1)));
        let mut records = Vec::new();
        let mut next = from;
        // Bounded: each pass consumes one segment or ends the read.
        while next <= to {
            let Some((link, bytes)) = self.segment_for(next).await? else {
                break;
            };
            let last = link.manifest.last_lsn.min(to);
            collect(&link, &bytes, next, last, &mut records)?;
            next = last.next();
        }
        Ok(records)
    }

    async fn link_for(&self, lsn: Lsn) -> Result<Option<ChainLink>> {
        let mut state = self.state.lock().await;
        if state.chain.is_none() {
            let links = load_chain(&self.target, &self.log).await?;
            state.chain = Some(
                links
                    .into_iter()
                    .map(|link| (link.manifest.first_lsn, link))
                    .collect(),
            );
        }
        Ok(state.chain.as_ref().and_then(|chain| {
            chain
                .range(..=lsn)
                .next_back()
                .map(|(_, link)| link.clone())
                .filter(|link| lsn <= link.manifest.last_lsn)
        }))
    }

    async fn cached(&self, first: Lsn) -> Option<Arc<Vec<u8>>> {
        let mut state = self.state.lock().await;
        state.clock += 1;
        let now = state.clock;
        let entry = state.segments.get_mut(&first)?;
        entry.last_used = now;
        Some(Arc::clone(&entry.bytes))
    }

    async fn segment_for(&self, lsn: Lsn) -> Result<Option<(ChainLink, Arc<Vec<u8>>)>> {
        let Some(link) = self.link_for(lsn).await? else {
            return Ok(None);
        };
        let first = link.manifest.first_lsn;
        if let Some(bytes) = self.cached(first).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((link, bytes)));
        }
        let download = Arc::clone(self.downloads.lock().await.entry(first).or_default());
        let _downloading = download.lock().await;
        if let Some(bytes) = self.cached(first).await {
            // Another reader fetched it while this one waited.
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((link, bytes)));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // The floor is unknown here; the chain already tied this segment to
        // the one before it (hash and manifest digest).
        let fetched = fetch_segment(&self.target, &self.log, &link, i64::MIN).await?;
        self.fetched.fetch_add(1, Ordering::Relaxed);
        let bytes = Arc::new(fetched.segment);
        self.insert(first, Arc::clone(&bytes)).await;
        self.downloads.lock().await.remove(&first);
        Ok(Some((link, bytes)))
    }

    async fn insert(&self, first: Lsn, bytes: Arc<Vec<u8>>) {
        let size = bytes.len() as u64;
        if size > self.cache_bytes_max {
            return;
        }
        let mut state = self.state.lock().await;
        // Bounded: each pass evicts one segment.
        while state.cached_bytes + size > self.cache_bytes_max {
            let Some(oldest) = state
                .segments
                .iter()
                .min_by_key(|(_, cached)| cached.last_used)
                .map(|(first, _)| *first)
            else {
                break;
            };
            if let Some(evicted) = state.segments.remove(&oldest) {
                state.cached_bytes -= evicted.bytes.len() as u64;
            }
        }
        state.clock += 1;
        let last_used = state.clock;
        state.cached_bytes += size;
        state.segments.insert(first, Cached { bytes, last_used });
    }
}

/// The records `from..=to` of a checked segment, with their stored bodies.
fn collect(
    link: &ChainLink,
    bytes: &[u8],
    from: Lsn,
    to: Lsn,
    out: &mut Vec<StoredRecord>,
) -> Result<()> {
    let manifest = &link.manifest;
    let expected = SegmentHeader {
        log_id: manifest.log_id,
        first_lsn: manifest.first_lsn,
        prev_hash: manifest.prev_hash,
    };
    let mut visit = |scanned: &ScannedRecord<'_>| {
        let lsn = scanned.record.lsn;
        if lsn < from || lsn > to {
            return;
        }
        let start = usize::try_from(scanned.offset)
            .unwrap_or(usize::MAX)
            .saturating_add(8);
        let end = usize::try_from(scanned.offset)
            .unwrap_or(usize::MAX)
            .saturating_add(scanned.frame_len);
        if let Some(body) = bytes.get(start..end) {
            out.push(StoredRecord {
                record: scanned.record.clone(),
                hash: scanned.hash,
                body: body.to_vec(),
            });
        }
    };
    let file = crate::check::MemoryFile(bytes);
    let scan = scan_segment(
        &file,
        std::path::Path::new(link.key.as_ref()),
        &expected,
        None,
        i64::MIN,
        &mut visit,
    )
    .map_err(|error| link.data_loss(error_chain(&error)))?;
    if let Some(damage) = scan.damage {
        return Err(link.data_loss(format!(
            "damaged at offset {} (lsn {}): {}",
            damage.offset, damage.lsn, damage.reason
        )));
    }
    Ok(())
}

impl std::fmt::Debug for ArchiveReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ArchiveReader")
            .field("target", &self.target.url())
            .field("log", &self.log)
            .field("cache_bytes_max", &self.cache_bytes_max)
            .finish_non_exhaustive()
    }
}

//! Reads of archived LSNs: the segment holding them is fetched from the
//! store, checked as `verify` checks it (digests, every record and link,
//! the manifest chain), and kept in a cache bounded by bytes (least
//! recently used goes first). Concurrent readers of one segment share one
//! download. The server's `Read` and `Subscribe` serve LSNs before a log's
//! first local one through it (trail-server, `service/read.rs`), checking
//! the chain across the archive/local boundary themselves. The manifest
//! chain is read once and again only when a read asks past its end (the
//! compactor archived more since).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Mutex;
use trail_log::codec::{self, Body};
use trail_log::segment::{scan_segment, ScannedRecord, SegmentHeader};
use trail_log::{LogName, Lsn, StoredRecord};

use crate::chain::{load_chain, ChainLink};
use crate::check::error_chain;
use crate::error::Result;
use crate::target::ArchiveTarget;
use crate::verify::fetch_segment;

/// Most records one read returns: a caller pages through longer ranges.
pub const READ_RECORDS_MAX: u64 = 4096;

/// What one [`ArchiveReader::read_counted`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveRead {
    /// The records, in LSN order.
    pub records: Vec<StoredRecord>,
    /// Segments found in the cache.
    pub hits: u64,
    /// Segments downloaded (or waited for while another reader did).
    pub misses: u64,
}

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
    segment: Arc<IndexedSegment>,
    last_used: u64,
}

/// A downloaded segment, checked by one full scan when it arrived, with
/// where each record's frame is: a read then decodes only the frames it
/// returns instead of scanning the segment again (a 64 MiB segment read in
/// 256-record steps would otherwise be scanned about a thousand times).
struct IndexedSegment {
    bytes: Vec<u8>,
    /// `(offset, frame length)` of LSN `first_lsn + i` at `i`.
    frames: Vec<(u64, usize)>,
}

impl IndexedSegment {
    /// What it costs the cache.
    fn cached_bytes(&self) -> u64 {
        (self.bytes.len() + self.frames.len() * std::mem::size_of::<(u64, usize)>()) as u64
    }
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
        Ok(self.read_counted(from, to_inclusive).await?.records)
    }

    /// As [`ArchiveReader::read`], saying how many segments came from the
    /// cache and how many were downloaded (for the server's metrics).
    ///
    /// # Errors
    /// As [`ArchiveReader::read`].
    pub async fn read_counted(&self, from: Lsn, to_inclusive: Lsn) -> Result<ArchiveRead> {
        let from = from.max(Lsn::FIRST);
        let to = Lsn(to_inclusive
            .0
            .min(from.0.saturating_add(READ_RECORDS_MAX - 1)));
        let mut read = ArchiveRead::default();
        let mut next = from;
        // Bounded: each pass consumes one segment or ends the read.
        while next <= to {
            let Some((link, segment, hit)) = self.segment_for(next).await? else {
                break;
            };
            if hit {
                read.hits += 1;
            } else {
                read.misses += 1;
            }
            let last = link.manifest.last_lsn.min(to);
            collect(&link, &segment, next, last, &mut read.records)?;
            next = last.next();
        }
        Ok(read)
    }

    async fn link_for(&self, lsn: Lsn) -> Result<Option<ChainLink>> {
        let mut state = self.state.lock().await;
        let past_the_end = state.chain.as_ref().is_some_and(|chain| {
            chain
                .values()
                .next_back()
                .is_none_or(|link| link.manifest.last_lsn < lsn)
        });
        if past_the_end {
            // Archived since the chain was read: read it again (once per
            // call; a LSN the archive does not hold ends the read).
            state.chain = None;
        }
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

    async fn cached(&self, first: Lsn) -> Option<Arc<IndexedSegment>> {
        let mut state = self.state.lock().await;
        state.clock += 1;
        let now = state.clock;
        let entry = state.segments.get_mut(&first)?;
        entry.last_used = now;
        Some(Arc::clone(&entry.segment))
    }

    /// The segment holding `lsn`, and whether it came from the cache.
    async fn segment_for(
        &self,
        lsn: Lsn,
    ) -> Result<Option<(ChainLink, Arc<IndexedSegment>, bool)>> {
        let Some(link) = self.link_for(lsn).await? else {
            return Ok(None);
        };
        let first = link.manifest.first_lsn;
        if let Some(bytes) = self.cached(first).await {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((link, bytes, true)));
        }
        let download = Arc::clone(self.downloads.lock().await.entry(first).or_default());
        let _downloading = download.lock().await;
        if let Some(bytes) = self.cached(first).await {
            // Another reader fetched it while this one waited.
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((link, bytes, true)));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        // The floor is unknown here; the chain already tied this segment to
        // the one before it (hash and manifest digest).
        let fetched = match fetch_segment(&self.target, &self.log, &link, i64::MIN).await {
            Ok(fetched) => fetched,
            Err(error) => {
                // The next reader makes its own attempt.
                self.downloads.lock().await.remove(&first);
                return Err(error);
            }
        };
        self.fetched.fetch_add(1, Ordering::Relaxed);
        // One scan, off the async workers (CRCs and hashes are CPU work).
        let indexing = link.clone();
        let indexed = tokio::task::spawn_blocking(move || index(&indexing, fetched.segment))
            .await
            .map_err(|error| crate::error::ArchiveError::Local {
                path: std::path::PathBuf::new(),
                source: std::io::Error::other(format!("archive read task failed: {error}")),
            })
            .and_then(|indexed| indexed);
        let segment = match indexed {
            Ok(segment) => Arc::new(segment),
            Err(error) => {
                self.downloads.lock().await.remove(&first);
                return Err(error);
            }
        };
        // Cached before the entry goes, so a reader arriving in between
        // finds the cache, not a free download slot.
        self.insert(first, Arc::clone(&segment)).await;
        self.downloads.lock().await.remove(&first);
        Ok(Some((link, segment, false)))
    }

    async fn insert(&self, first: Lsn, segment: Arc<IndexedSegment>) {
        let size = segment.cached_bytes();
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
                state.cached_bytes -= evicted.segment.cached_bytes();
            }
        }
        state.clock += 1;
        let last_used = state.clock;
        state.cached_bytes += size;
        state.segments.insert(first, Cached { segment, last_used });
    }
}

/// Checks a downloaded segment with one full scan (every CRC, LSN, link,
/// the header against the manifest) and notes where each record's frame is.
fn index(link: &ChainLink, bytes: Vec<u8>) -> Result<IndexedSegment> {
    let manifest = &link.manifest;
    let expected = SegmentHeader {
        log_id: manifest.log_id,
        first_lsn: manifest.first_lsn,
        prev_hash: manifest.prev_hash,
    };
    let mut frames = Vec::new();
    let mut dense = true;
    let mut visit = |scanned: &ScannedRecord<'_>| {
        dense &= scanned.record.lsn.0 == manifest.first_lsn.0 + frames.len() as u64;
        frames.push((scanned.offset, scanned.frame_len));
    };
    let file = crate::check::MemoryFile(&bytes);
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
    let expected_records = manifest.last_lsn.0 + 1 - manifest.first_lsn.0;
    if !dense || frames.len() as u64 != expected_records {
        return Err(link.data_loss(format!(
            "holds {} records where its manifest names {expected_records}",
            frames.len()
        )));
    }
    Ok(IndexedSegment { bytes, frames })
}

/// The records `from..=to` of an indexed segment, with their stored
/// bodies: only their frames are decoded (CRC and body again, cheap).
fn collect(
    link: &ChainLink,
    segment: &IndexedSegment,
    from: Lsn,
    to: Lsn,
    out: &mut Vec<StoredRecord>,
) -> Result<()> {
    let first = link.manifest.first_lsn.0;
    for lsn in from.0..=to.0 {
        let frame = usize::try_from(lsn - first)
            .ok()
            .and_then(|index| segment.frames.get(index))
            .and_then(|&(offset, length)| {
                let start = usize::try_from(offset).ok()?;
                segment.bytes.get(start..start.checked_add(length)?)
            })
            .ok_or_else(|| link.data_loss(format!("lsn {lsn} is not in the segment")))?;
        let (body, _) = codec::split_frame(frame)
            .map_err(|error| link.data_loss(format!("lsn {lsn}: {error}")))?;
        let record = match codec::decode_body(body) {
            Ok(Body::Record(record)) if record.lsn.0 == lsn => record,
            Ok(_) => return Err(link.data_loss(format!("lsn {lsn}: not the record indexed"))),
            Err(error) => return Err(link.data_loss(format!("lsn {lsn}: {error}"))),
        };
        out.push(StoredRecord {
            record,
            hash: codec::record_hash(body),
            body: body.to_vec(),
        });
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

//! The archive's side of one log in a running server: it holds the log's
//! retention gate, uploads sealed segments once they are due, and after the
//! local retention delay releases them and asks the engine to drop them
//! (`Log::remove_archived_through`, which writes `wal/PREFIX` first). Only
//! a segment whose manifest is in the bucket (written and read back, or
//! found there) and whose local file has the digest that manifest names is
//! ever released. With a lock policy, only a segment whose objects are
//! locked (S3 Object Lock) is archived, and so released. All file IO and
//! hashing run on blocking threads; nothing here takes a lock the log's
//! writer takes, so appends never wait for it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trail_log::{ErrorKind, Log, Lsn, RetentionHold, SegmentInfo};

use crate::chain::load_chain;
use crate::compress::Encoding;
use crate::error::{ArchiveError, Result};
use crate::lock::{hold_segment, lock_segment, LockPolicy, LockProbe};
use crate::manifest::{Digest, Manifest};
use crate::target::ArchiveTarget;
use crate::upload::{prepare_segment, upload_segment};

/// The name the archive holds logs under in the retention gate.
pub const HOLDER_NAME: &str = "archive";

/// When segments are archived and local copies dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchiverConfig {
    /// How objects are encoded.
    pub encoding: Encoding,
    /// A sealed segment is uploaded once it is this old...
    pub archive_after: Duration,
    /// ...or at once while the log's local segments exceed this many bytes.
    pub hot_bytes_max: u64,
    /// An archived segment's local file stays this long after its upload.
    pub local_retention: Duration,
    /// The nice value (0..=19) of the thread that checks and compresses a
    /// segment before its upload: the archive may lag, appends go first
    /// when the cores are busy (docs/DECISIONS.md #40).
    pub nice: i32,
}

/// The default [`ArchiverConfig::nice`].
pub const ARCHIVE_NICE_DEFAULT: i32 = 10;

/// What the archive has done for one log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveStatus {
    /// The target's URL.
    pub target: String,
    /// Segments in the archive (the manifest chain's length; 0 before the
    /// chain was first read).
    pub archived_segments: u64,
    /// The last archived LSN.
    pub archived_through: Lsn,
    /// Bytes stored for them (segment and sidecar objects).
    pub archived_bytes: u64,
    /// Local segments (sealed or active).
    pub local_segments: u64,
    /// Local segments that are archived too.
    pub local_and_archived: u64,
    /// Bytes of local segment files.
    pub local_bytes: u64,
    /// The first LSN on local disk.
    pub first_local_lsn: Lsn,
    /// Segments uploaded by this process.
    pub uploads: u64,
    /// When the last upload finished, unix nanoseconds (0: none yet).
    pub last_upload_unix_nanos: i64,
    /// Failed attempts since start.
    pub failures: u64,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
    /// The retention archived objects get (S3 Object Lock); `None`: off.
    pub lock: Option<LockPolicy>,
    /// What the start-up probe found (filled in by the compactor, which
    /// probes once per target).
    pub lock_probe: LockProbe,
    /// Objects this process checked or set the retention of since start.
    pub objects_locked: u64,
}

/// What [`Archiver::hold`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HoldDone {
    /// Archived segments whose objects it changed.
    pub segments: u64,
    /// Objects whose legal hold it set or cleared (three per segment).
    pub objects: u64,
    /// First LSN of the first segment changed (0: none).
    pub first_lsn: Lsn,
    /// Last LSN of the last segment changed (0: none).
    pub last_lsn: Lsn,
    /// The last archived LSN.
    pub archived_through: Lsn,
}

/// One verified upload, for the server's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadDone {
    /// Bytes stored for it (segment and sidecar objects).
    pub stored_bytes: u64,
    /// From reading the local segment to its manifest read back.
    pub elapsed: Duration,
}

/// Most uploads kept for [`Archiver::take_uploads`] between two calls (a
/// caller that never takes them loses the oldest, not memory).
pub const UPLOADS_KEPT_MAX: usize = 1024;

/// The archive's work on one log.
#[derive(Debug)]
pub struct Archiver {
    target: ArchiveTarget,
    log: Arc<Log>,
    config: ArchiverConfig,
    /// Keeps every sealed segment local until released below.
    hold: RetentionHold,
    /// The bucket's manifests by first LSN, once read (a restarted server
    /// reads them again, so it never uploads twice or breaks the chain).
    chain: Option<BTreeMap<Lsn, Manifest>>,
    /// Local segments (by first LSN) whose file digest equals their
    /// manifest's: the only ones that may be released.
    local_matches: HashSet<Lsn>,
    status: ArchiveStatus,
    /// Uploads since the last [`Archiver::take_uploads`].
    uploads: Vec<UploadDone>,
}

fn unix_nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
    })
}

/// Runs blocking file IO and hashing off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(worker_failed)?
}

/// Runs CPU-heavy work (a segment's check and compression) on a thread of
/// its own at priority `nice`, so that it takes the cores only when appends
/// leave them (a thread per segment: tokio's blocking pool is shared, and a
/// pool thread cannot get its priority back).
async fn at_low_priority<T: Send + 'static>(
    nice: i32,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trail-archive-prep".to_owned())
        .spawn(move || {
            if let Err(error) = trail_log::priority::lower_current_thread(nice) {
                tracing::warn!(nice, %error, "archive preparation runs at normal priority: could not lower it");
            }
            let _ = done.send(work());
        })
        .map_err(|error| ArchiveError::Local {
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("starting an archive worker thread: {error}")),
        })?;
    result.await.map_err(|_| ArchiveError::Local {
        path: std::path::PathBuf::new(),
        source: std::io::Error::other("archive worker thread ended without an answer"),
    })?
}

fn worker_failed(error: tokio::task::JoinError) -> ArchiveError {
    ArchiveError::Local {
        path: std::path::PathBuf::new(),
        source: std::io::Error::other(format!("archive worker task failed: {error}")),
    }
}

impl Archiver {
    /// Starts archiving `log` to `target`: holds its sealed segments from
    /// now on. Does no IO.
    #[must_use]
    pub fn new(target: ArchiveTarget, log: Arc<Log>, config: ArchiverConfig) -> Archiver {
        let hold = log.hold_segments(HOLDER_NAME);
        let status = ArchiveStatus {
            target: target.url().to_owned(),
            lock: target.lock_policy(),
            lock_probe: if target.lock_policy().is_some() {
                LockProbe::Pending
            } else {
                LockProbe::Off
            },
            ..ArchiveStatus::default()
        };
        Archiver {
            target,
            log,
            config,
            hold,
            chain: None,
            local_matches: HashSet::new(),
            status,
            uploads: Vec::new(),
        }
    }

    /// The log archived.
    #[must_use]
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The uploads verified since the last call (at most
    /// [`UPLOADS_KEPT_MAX`], the newest), oldest first.
    pub fn take_uploads(&mut self) -> Vec<UploadDone> {
        std::mem::take(&mut self.uploads)
    }

    /// What it has done, with the local side as of now.
    #[must_use]
    pub fn status(&self) -> ArchiveStatus {
        let mut status = self.status.clone();
        let segments = self.log.segments();
        status.local_segments = segments.len() as u64;
        status.local_bytes = segments.iter().map(|info| info.file_bytes).sum();
        status.local_and_archived = segments
            .iter()
            .filter(|info| self.archived(info).is_some())
            .count() as u64;
        status.first_local_lsn = self.log.first_local_lsn();
        status
    }

    fn archived(&self, info: &SegmentInfo) -> Option<&Manifest> {
        self.chain
            .as_ref()?
            .get(&info.first_lsn)
            .filter(|manifest| manifest.last_lsn == info.last_lsn && info.sealed)
    }

    /// The archived manifest of the segment holding `lsn`; `None` while
    /// it is not archived or the chain was not read yet (what the snapshot
    /// side waits for: `snapshots.rs`).
    #[must_use]
    pub fn archived_holder(&self, lsn: Lsn) -> Option<&Manifest> {
        let (_, manifest) = self.chain.as_ref()?.range(..=lsn).next_back()?;
        (manifest.last_lsn >= lsn).then_some(manifest)
    }

    /// One round: uploads every due sealed segment in LSN order (all sealed
    /// ones with `force`), then drops local copies whose retention passed.
    /// Returns how many segments it uploaded.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the store is unreachable (nothing local
    /// was touched: retry later), [`ArchiveError::DataLoss`] /
    /// [`ArchiveError::Conflict`] when the bucket does not continue this
    /// log, [`ArchiveError::Segment`] for a local segment that fails its
    /// checks.
    pub async fn step(&mut self, force: bool) -> Result<u64> {
        let outcome = self.step_inner(force).await;
        match &outcome {
            Ok(_) => self.status.last_error = None,
            Err(error) => {
                self.status.failures += 1;
                self.status.last_error = Some(crate::check::error_chain(error));
            }
        }
        outcome
    }

    async fn step_inner(&mut self, force: bool) -> Result<u64> {
        self.read_chain().await?;
        let uploaded = self.upload_due(force).await?;
        self.drop_local().await?;
        Ok(uploaded)
    }

    /// Reads the bucket's manifest chain once. With a lock policy, first
    /// makes sure the objects of every archived segment still on local
    /// disk are locked (a crash may have come between an upload and its
    /// lock, or lock mode was turned on since): only then may those local
    /// copies be released. A failure leaves the chain unread, for the next
    /// round.
    async fn read_chain(&mut self) -> Result<()> {
        if self.chain.is_none() {
            let links = load_chain(&self.target, self.log.name()).await?;
            let chain: BTreeMap<Lsn, Manifest> = links
                .into_iter()
                .map(|link| (link.manifest.first_lsn, link.manifest))
                .collect();
            if self.target.lock_policy().is_some() {
                for info in self.log.segments() {
                    let Some(manifest) = chain
                        .get(&info.first_lsn)
                        .filter(|manifest| manifest.last_lsn == info.last_lsn && info.sealed)
                    else {
                        continue;
                    };
                    self.status.objects_locked += lock_segment(
                        &self.target,
                        self.log.name().as_str(),
                        manifest.first_lsn,
                        manifest.last_lsn,
                    )
                    .await?;
                }
            }
            self.status.archived_segments = chain.len() as u64;
            self.status.archived_bytes = chain
                .values()
                .map(|manifest| manifest.segment_object.bytes + manifest.index_object.bytes)
                .sum();
            self.status.archived_through = chain
                .values()
                .next_back()
                .map_or(Lsn::ZERO, |manifest| manifest.last_lsn);
            self.chain = Some(chain);
        }
        Ok(())
    }

    /// Sets (`on`) or clears the S3 legal hold of every object of the
    /// archived segments that hold any of `from..=to`.
    ///
    /// # Errors
    /// [`ArchiveError::Config`] when no archived segment holds any of
    /// those LSNs; [`ArchiveError::Lock`] (`NotS3` for a `file://` target)
    /// or [`ArchiveError::Store`] when a call fails (the segments before it
    /// are changed: running it again is safe).
    pub async fn hold(&mut self, from: Lsn, to: Lsn, on: bool) -> Result<HoldDone> {
        self.target.lock_client()?;
        self.read_chain().await?;
        let covering: Vec<(Lsn, Lsn)> = self
            .chain
            .iter()
            .flat_map(BTreeMap::values)
            .filter(|manifest| manifest.last_lsn >= from && manifest.first_lsn <= to)
            .map(|manifest| (manifest.first_lsn, manifest.last_lsn))
            .collect();
        let archived_through = self.status.archived_through;
        let (Some(&(first, _)), Some(&(_, last))) = (covering.first(), covering.last()) else {
            return Err(ArchiveError::Config(format!(
                "no archived segment holds lsns {from}..={to} (archived through lsn {archived_through})"
            )));
        };
        let mut done = HoldDone {
            first_lsn: first,
            last_lsn: last,
            archived_through,
            ..HoldDone::default()
        };
        for (first, last) in covering {
            done.objects +=
                hold_segment(&self.target, self.log.name().as_str(), first, last, on).await?;
            done.segments += 1;
        }
        tracing::info!(log = %self.log.name(), first = %done.first_lsn, last = %done.last_lsn, objects = done.objects, on, "legal hold changed");
        Ok(done)
    }

    async fn upload_due(&mut self, force: bool) -> Result<u64> {
        let segments = self.log.segments();
        let local_bytes: u64 = segments.iter().map(|info| info.file_bytes).sum();
        let over_budget = local_bytes > self.config.hot_bytes_max;
        let mut uploaded = 0;
        for info in segments.into_iter().filter(|info| info.sealed) {
            if self.archived(&info).is_some() {
                continue;
            }
            let tip = self
                .chain
                .as_ref()
                .and_then(|chain| chain.values().next_back().cloned());
            let next = tip.as_ref().map_or(Lsn::FIRST, |tip| tip.last_lsn.next());
            if info.last_lsn < next {
                // Overlaps the archive with other boundaries: refuse to
                // guess which is right.
                return Err(ArchiveError::Conflict {
                    key: self
                        .target
                        .layout(self.log.name().as_str())
                        .segments_dir()
                        .to_string(),
                    first: info.first_lsn,
                    last: info.last_lsn,
                });
            }
            let age = std::fs::metadata(&info.path)
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .unwrap_or(Duration::ZERO);
            if !(force || over_budget || age >= self.config.archive_after) {
                // Later segments are younger.
                break;
            }
            let started = std::time::Instant::now();
            let log_name = self.log.name().clone();
            let encoding = self.config.encoding;
            let now = unix_nanos(SystemTime::now());
            let segment = info.clone();
            let prepared = at_low_priority(self.config.nice, move || {
                prepare_segment(&log_name, &segment, tip.as_ref(), encoding, now)
            })
            .await?;
            let manifest = upload_segment(&self.target, self.log.name(), prepared).await?;
            tracing::info!(log = %self.log.name(), first = %manifest.first_lsn, last = %manifest.last_lsn, stored_bytes = manifest.segment_object.bytes, "archived segment");
            uploaded += 1;
            if self.uploads.len() >= UPLOADS_KEPT_MAX {
                self.uploads.remove(0);
            }
            self.uploads.push(UploadDone {
                stored_bytes: manifest.segment_object.bytes + manifest.index_object.bytes,
                elapsed: started.elapsed(),
            });
            self.status.uploads += 1;
            if self.target.lock_policy().is_some() {
                // Segment, sidecar and manifest, each locked by the upload.
                self.status.objects_locked += 3;
            }
            self.status.archived_segments += 1;
            self.status.archived_bytes +=
                manifest.segment_object.bytes + manifest.index_object.bytes;
            self.status.archived_through = manifest.last_lsn;
            self.status.last_upload_unix_nanos = unix_nanos(SystemTime::now());
            self.local_matches.insert(info.first_lsn);
            if let Some(chain) = self.chain.as_mut() {
                chain.insert(manifest.first_lsn, manifest);
            }
        }
        Ok(uploaded)
    }

    /// Releases and removes the oldest local segments that are archived,
    /// match their manifest, and are past the local retention. The newest
    /// local segment always stays.
    async fn drop_local(&mut self) -> Result<()> {
        let segments = self.log.segments();
        let now = unix_nanos(SystemTime::now());
        let retention = i64::try_from(self.config.local_retention.as_nanos()).unwrap_or(i64::MAX);
        let mut through: Option<Manifest> = None;
        for info in segments.iter().take(segments.len().saturating_sub(1)) {
            let Some(manifest) = self.archived(info).cloned() else {
                break;
            };
            if now.saturating_sub(manifest.archived_at_unix_nanos) < retention {
                break;
            }
            if !self.local_matches.contains(&info.first_lsn) {
                let path = info.path.clone();
                let expected = manifest.segment;
                let matches = blocking(move || {
                    let bytes =
                        std::fs::read(&path).map_err(|error| ArchiveError::local(&path, error))?;
                    Ok(Digest::of(&bytes) == expected)
                })
                .await?;
                if !matches {
                    return Err(ArchiveError::Segment {
                        path: info.path.clone(),
                        reason: format!("its digest differs from the archived manifest of lsns {}..={}; it is kept", manifest.first_lsn, manifest.last_lsn),
                    });
                }
                self.local_matches.insert(info.first_lsn);
            }
            through = Some(manifest);
        }
        let Some(manifest) = through else {
            return Ok(());
        };
        self.hold.release_through(manifest.last_lsn);
        let log = Arc::clone(&self.log);
        let removed = tokio::task::spawn_blocking(move || {
            log.remove_archived_through(
                manifest.last_lsn,
                manifest.last_recorded_at_unix_nanos,
                manifest.voucher(),
            )
        })
        .await
        .map_err(worker_failed)?;
        match removed {
            Ok(removal) => {
                for path in &removal.removed {
                    if let Some(first) = path.file_name().and_then(|name| {
                        trail_log::segment::parse_segment_file_name(&name.to_string_lossy())
                    }) {
                        self.local_matches.remove(&first);
                    }
                }
                Ok(())
            }
            // Not yet (the background verification still reads the
            // segments): the next round tries again.
            Err(error) if error.kind() == ErrorKind::InvalidArgument => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn preparation_runs_at_the_configured_priority() {
        let nice = at_low_priority(7, || Ok(trail_log::priority::current_thread_nice()))
            .await
            .ok()
            .flatten();
        assert_eq!(nice, Some(7));
        assert_eq!(
            trail_log::priority::current_thread_nice(),
            Some(0),
            "the caller keeps its priority"
        );
    }
}

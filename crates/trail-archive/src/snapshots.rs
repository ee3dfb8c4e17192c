//! State snapshots in the archive (issue 10, DESIGN.md "snapshots"): every
//! completed snapshot of a log's state store (`<data>/<log>/snapshots/
//! <lsn:020>.snap`, FORMAT.md §12.5) is stored once as
//! `<prefix>/<log>/snapshots/<lsn:020>.snap`, with a small manifest beside
//! it (`<lsn:020>.manifest`, [`SnapshotManifest`], FORMAT.md §14.6), so a
//! restore may start from the newest snapshot plus the log's tail
//! (`suffix.rs`).
//!
//! A snapshot is a follower's output, not truth. It is uploaded only once
//! the segment holding its watermark is archived, and only after its
//! watermark (LSN and hash) was checked against that archived segment; its
//! manifest names that segment and its manifest's digest, tying it to the
//! chain. A restore checks all of it again from the bucket
//! ([`load_newest_archived_snapshot`]). The objects go up as segments do
//! (`objects::put_create_verified`: check, create-only put, read back; the
//! manifest last; each locked under a lock policy).

use std::collections::BTreeSet;
use std::path::{Path as FsPath, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::path::Path;
use trail_log::codec::genesis_hash;
use trail_log::{LogName, Lsn, RecordHash};

use crate::chain::ChainLink;
use crate::compress::{self, Encoding};
use crate::error::{ArchiveError, Result};
use crate::layout::{MANIFEST_SUFFIX, SNAPSHOT_SUFFIX};
use crate::manifest::{Compression, Digest, Manifest};
use crate::objects;
use crate::target::ArchiveTarget;
use crate::upload::{put_encoded, put_locked};
use crate::verify::{fetch_segment, hash_at};

/// The magic a snapshot manifest starts with.
pub const SNAPSHOT_MANIFEST_MAGIC: [u8; 8] = *b"TRAILSNM";
/// The snapshot manifest format this build writes and reads.
pub const SNAPSHOT_MANIFEST_FORMAT_VERSION: u32 = 1;
/// Length of a version-1 snapshot manifest.
pub const SNAPSHOT_MANIFEST_BYTES: usize = 228;
const CRC_OFFSET: usize = SNAPSHOT_MANIFEST_BYTES - 4;
/// The largest snapshot file archived: upload and restore hold one in
/// memory. A larger one is skipped with a warning.
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;
/// Most objects one log's snapshot listing may hold (two per snapshot).
pub const SNAPSHOT_OBJECTS_MAX: usize = 1 << 16;

/// The state snapshot file's own layout (FORMAT.md §12.5): what the
/// archive reads of it without the state store's code.
const SNAPSHOT_FILE_MAGIC: [u8; 8] = *b"TRAILSNP";
const SNAPSHOT_FILE_VERSION: u32 = 1;
const SNAPSHOT_FILE_HEADER_BYTES: usize = 64;
const SNAPSHOT_FILE_DIGEST_BYTES: usize = 32;

/// What the archive vouches for about one archived state snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotManifest {
    /// How the `.snap` object encodes the file.
    pub compression: Compression,
    /// The log's genesis value: binds the snapshot to its log.
    pub log_id: RecordHash,
    /// The snapshot's watermark: the last LSN it took in...
    pub watermark_lsn: Lsn,
    /// ...and that record's hash.
    pub watermark_hash: RecordHash,
    /// The snapshot file (as the state store wrote it).
    pub file: Digest,
    /// The stored `.snap` object.
    pub object: Digest,
    /// First LSN of the archived segment holding the watermark.
    pub holder_first_lsn: Lsn,
    /// Last LSN of that segment.
    pub holder_last_lsn: Lsn,
    /// blake3 of that segment's manifest (its chain digest).
    pub holder_manifest: [u8; 32],
    /// When it was archived, unix nanoseconds (informational).
    pub archived_at_unix_nanos: i64,
}

impl SnapshotManifest {
    /// The manifest's bytes (FORMAT.md §14.6).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(SNAPSHOT_MANIFEST_BYTES);
        bytes.extend_from_slice(&SNAPSHOT_MANIFEST_MAGIC);
        bytes.extend_from_slice(&SNAPSHOT_MANIFEST_FORMAT_VERSION.to_le_bytes());
        let compression: u32 = match self.compression {
            Compression::None => 0,
            Compression::Zstd => 1,
        };
        bytes.extend_from_slice(&compression.to_le_bytes());
        bytes.extend_from_slice(&self.log_id.0);
        bytes.extend_from_slice(&self.watermark_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.watermark_hash.0);
        for digest in [self.file, self.object] {
            bytes.extend_from_slice(&digest.bytes.to_le_bytes());
            bytes.extend_from_slice(&digest.blake3);
        }
        bytes.extend_from_slice(&self.holder_first_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.holder_last_lsn.0.to_le_bytes());
        bytes.extend_from_slice(&self.holder_manifest);
        bytes.extend_from_slice(&self.archived_at_unix_nanos.to_le_bytes());
        debug_assert_eq!(bytes.len(), CRC_OFFSET);
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Parses and checks a snapshot manifest.
    ///
    /// # Errors
    /// A description of the first check that failed.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotManifest, String> {
        if bytes.len() != SNAPSHOT_MANIFEST_BYTES {
            return Err(format!(
                "snapshot manifest is {} bytes; a version-{SNAPSHOT_MANIFEST_FORMAT_VERSION} one is {SNAPSHOT_MANIFEST_BYTES}",
                bytes.len()
            ));
        }
        if bytes[..8] != SNAPSHOT_MANIFEST_MAGIC {
            return Err("bad magic: not a trail snapshot manifest".into());
        }
        let mut at = 8;
        let mut take = |n: usize| {
            let field = &bytes[at..at + n];
            at += n;
            field
        };
        let version = u32::from_le_bytes(array(take(4)));
        if version != SNAPSHOT_MANIFEST_FORMAT_VERSION {
            return Err(format!(
                "snapshot manifest format version {version} is not supported (this build reads {SNAPSHOT_MANIFEST_FORMAT_VERSION})"
            ));
        }
        let stored_crc = u32::from_le_bytes(array(&bytes[CRC_OFFSET..]));
        if crc32fast::hash(&bytes[..CRC_OFFSET]) != stored_crc {
            return Err("snapshot manifest checksum mismatch".into());
        }
        let compression = match u32::from_le_bytes(array(take(4))) {
            0 => Compression::None,
            1 => Compression::Zstd,
            code => return Err(format!("unknown compression code {code}")),
        };
        let log_id = RecordHash(array(take(32)));
        let watermark_lsn = Lsn(u64::from_le_bytes(array(take(8))));
        let watermark_hash = RecordHash(array(take(32)));
        let mut digest = || Digest {
            bytes: u64::from_le_bytes(array(take(8))),
            blake3: array(take(32)),
        };
        let file = digest();
        let object = digest();
        let holder_first_lsn = Lsn(u64::from_le_bytes(array(take(8))));
        let holder_last_lsn = Lsn(u64::from_le_bytes(array(take(8))));
        let holder_manifest = array(take(32));
        let archived_at_unix_nanos = i64::from_le_bytes(array(take(8)));
        debug_assert_eq!(at, CRC_OFFSET);
        if watermark_lsn.0 == 0
            || holder_first_lsn.0 == 0
            || !(holder_first_lsn..=holder_last_lsn).contains(&watermark_lsn)
        {
            return Err(format!(
                "watermark lsn {watermark_lsn} is not in its holder segment {holder_first_lsn}..={holder_last_lsn}"
            ));
        }
        Ok(SnapshotManifest {
            compression,
            log_id,
            watermark_lsn,
            watermark_hash,
            file,
            object,
            holder_first_lsn,
            holder_last_lsn,
            holder_manifest,
            archived_at_unix_nanos,
        })
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// The watermark a snapshot file's header names, after checking its magic,
/// version and trailing blake3 digest (FORMAT.md §12.5). The entries are
/// checked by the state store's own `verify_snapshot`.
///
/// # Errors
/// What is wrong with the file.
pub fn snapshot_file_watermark(bytes: &[u8]) -> Result<(Lsn, RecordHash), String> {
    if bytes.len() < SNAPSHOT_FILE_HEADER_BYTES + SNAPSHOT_FILE_DIGEST_BYTES {
        return Err(format!(
            "snapshot file is {} bytes, shorter than its header and digest",
            bytes.len()
        ));
    }
    if bytes[..8] != SNAPSHOT_FILE_MAGIC {
        return Err("bad magic: not a trail state snapshot".into());
    }
    let version = u32::from_le_bytes(array(&bytes[8..12]));
    if version != SNAPSHOT_FILE_VERSION {
        return Err(format!(
            "snapshot file format version {version} is not supported (this build reads {SNAPSHOT_FILE_VERSION})"
        ));
    }
    let (body, digest) = bytes.split_at(bytes.len() - SNAPSHOT_FILE_DIGEST_BYTES);
    if blake3::hash(body).as_bytes() != digest {
        return Err("snapshot file digest mismatch".into());
    }
    Ok((
        Lsn(u64::from_le_bytes(array(&bytes[16..24]))),
        RecordHash(array(&bytes[24..56])),
    ))
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// Checks that `hash` is the chain's hash of `lsn`, which the archived
/// segment `holder` holds: its `last_hash` for its last LSN, else the hash
/// read from the segment fetched and checked from the bucket.
///
/// # Errors
/// [`ArchiveError::DataLoss`] naming `snapshot_key` when the hashes differ
/// (or the holder segment's own key when it is damaged);
/// [`ArchiveError::Store`] when the store fails.
pub async fn check_watermark(
    target: &ArchiveTarget,
    log: &LogName,
    holder: &ChainLink,
    lsn: Lsn,
    hash: RecordHash,
    snapshot_key: &Path,
) -> Result<()> {
    if lsn == holder.manifest.last_lsn {
        return check_watermark_in(holder, None, lsn, hash, snapshot_key);
    }
    let fetched = fetch_segment(target, log, holder, i64::MIN).await?;
    check_watermark_in(holder, Some(&fetched.segment), lsn, hash, snapshot_key)
}

/// [`check_watermark`] with the holder segment already fetched and checked
/// (`None`: `lsn` is its last, whose hash the manifest carries).
pub(crate) fn check_watermark_in(
    holder: &ChainLink,
    segment: Option<&[u8]>,
    lsn: Lsn,
    hash: RecordHash,
    snapshot_key: &Path,
) -> Result<()> {
    let chain_hash = match segment {
        _ if lsn == holder.manifest.last_lsn => holder.manifest.last_hash,
        Some(segment) => hash_at(holder, segment, lsn)?,
        None => {
            return Err(snapshot_loss(
                snapshot_key,
                lsn,
                format!("lsn {lsn} is not the last of segment {}", holder.key),
            ))
        }
    };
    if chain_hash != hash {
        return Err(snapshot_loss(
            snapshot_key,
            lsn,
            format!(
                "its watermark hash {hash} is not the chain's hash {chain_hash} of lsn {lsn} (segment {}): the snapshot is not of this log's chain",
                holder.key
            ),
        ));
    }
    Ok(())
}

fn snapshot_loss(key: &Path, lsn: Lsn, reason: String) -> ArchiveError {
    ArchiveError::DataLoss {
        key: key.to_string(),
        first: lsn,
        last: lsn,
        reason,
    }
}

/// Stores one snapshot file (`bytes`, already checked, watermark `lsn`)
/// whose holder segment `holder` is archived: the `.snap` object, then its
/// manifest, each create-only, read back and (under a lock policy)
/// locked. An object already there from an earlier attempt is kept when it
/// decodes to the same file, a manifest when only its timestamp differs.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails;
/// [`ArchiveError::Conflict`] when a key holds other content.
pub async fn upload_snapshot(
    target: &ArchiveTarget,
    log: &LogName,
    holder: &Manifest,
    watermark: (Lsn, RecordHash),
    file: Bytes,
    encoding: Encoding,
) -> Result<SnapshotManifest> {
    let (lsn, hash) = watermark;
    let layout = target.layout(log.as_str());
    let conflict = |key: &Path| {
        let key = key.to_string();
        move || ArchiveError::Conflict {
            key: key.clone(),
            first: lsn,
            last: lsn,
        }
    };
    let object_key = layout.snapshot_key(lsn, SNAPSHOT_SUFFIX);
    let object = compress::encode(&file, encoding).map_err(|error| ArchiveError::Local {
        path: PathBuf::from(object_key.as_ref()),
        source: error,
    })?;
    let mut manifest = SnapshotManifest {
        compression: encoding.compression,
        log_id: genesis_hash(log.as_str()),
        watermark_lsn: lsn,
        watermark_hash: hash,
        file: Digest::of(&file),
        object: Digest::of(&object),
        holder_first_lsn: holder.first_lsn,
        holder_last_lsn: holder.last_lsn,
        holder_manifest: holder.digest(),
        archived_at_unix_nanos: unix_nanos_now(),
    };
    if let Some(stored) = put_encoded(
        target,
        &object_key,
        Bytes::from(object),
        manifest.compression,
        manifest.file,
        conflict(&object_key),
    )
    .await?
    {
        manifest.object = stored;
    }

    // An earlier attempt's manifest: the same snapshot, only its timestamp
    // may differ.
    let manifest_key = layout.snapshot_key(lsn, MANIFEST_SUFFIX);
    let ours = manifest.clone();
    if let Some(earlier) = put_locked(
        target,
        &manifest_key,
        Bytes::from(manifest.encode()),
        conflict(&manifest_key),
        |existing| {
            let earlier = SnapshotManifest::decode(existing).ok()?;
            let same = SnapshotManifest {
                archived_at_unix_nanos: earlier.archived_at_unix_nanos,
                ..ours
            };
            (earlier == same).then_some(earlier)
        },
    )
    .await?
    {
        manifest = earlier;
    }
    Ok(manifest)
}

/// The watermark LSNs of `log`'s snapshots whose manifest is in the bucket,
/// oldest first.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails.
pub async fn list_archived_snapshots(target: &ArchiveTarget, log: &LogName) -> Result<Vec<Lsn>> {
    let layout = target.layout(log.as_str());
    let objects = objects::list(
        target.store.as_ref(),
        layout.snapshots_dir(),
        SNAPSHOT_OBJECTS_MAX,
    )
    .await?;
    let mut lsns: Vec<Lsn> = objects
        .iter()
        .filter_map(|meta| layout.parse_snapshot_manifest_key(&meta.location))
        .collect();
    lsns.sort_unstable();
    lsns.dedup();
    Ok(lsns)
}

/// An archived snapshot, checked: its manifest, its file, and the chain
/// link of the segment holding its watermark.
#[derive(Clone, Debug)]
pub struct ArchivedSnapshot {
    /// The `.snap` object's key.
    pub key: Path,
    /// Its manifest.
    pub manifest: SnapshotManifest,
    /// The snapshot file (decoded, digest checked).
    pub file: Vec<u8>,
    /// The position in the chain of the segment holding the watermark.
    pub holder: usize,
}

/// The newest archived snapshot of `log`, checked against `chain` (the
/// log's manifests, as `load_chain` checked them): its manifest decodes
/// and names this log, its key's LSN, a watermark at most the chain's end,
/// and the chain's segment holding it (range and manifest digest); the
/// object's digest and the decoded file's; the file's own header and
/// digest, whose watermark must be the manifest's. The watermark's hash is
/// checked against the holder segment by the caller
/// ([`check_watermark`]), which fetches that segment anyway. `None` when
/// the bucket holds no snapshot of the log.
///
/// # Errors
/// [`ArchiveError::DataLoss`] naming the snapshot object or manifest key
/// for anything that does not hold; [`ArchiveError::Store`] when the store
/// fails.
pub async fn load_newest_archived_snapshot(
    target: &ArchiveTarget,
    log: &LogName,
    chain: &[ChainLink],
) -> Result<Option<ArchivedSnapshot>> {
    let Some(lsn) = list_archived_snapshots(target, log).await?.pop() else {
        return Ok(None);
    };
    let layout = target.layout(log.as_str());
    let store = target.store.as_ref();
    let manifest_key = layout.snapshot_key(lsn, MANIFEST_SUFFIX);
    let key = layout.snapshot_key(lsn, SNAPSHOT_SUFFIX);
    let bytes = objects::get(store, &manifest_key).await?.ok_or_else(|| {
        snapshot_loss(
            &manifest_key,
            lsn,
            "snapshot manifest vanished while it was being read".into(),
        )
    })?;
    let loss = |at: &Path, reason: String| snapshot_loss(at, lsn, reason);
    let manifest =
        SnapshotManifest::decode(&bytes).map_err(|reason| loss(&manifest_key, reason))?;
    if manifest.watermark_lsn != lsn {
        return Err(loss(
            &manifest_key,
            format!(
                "manifest describes the snapshot at lsn {} (swapped with another's?)",
                manifest.watermark_lsn
            ),
        ));
    }
    if manifest.log_id != genesis_hash(log.as_str()) {
        return Err(loss(
            &manifest_key,
            format!("snapshot belongs to another log than {log}"),
        ));
    }
    let end = chain
        .last()
        .map_or(Lsn::ZERO, |link| link.manifest.last_lsn);
    let holder = chain.partition_point(|link| link.manifest.last_lsn < lsn);
    let Some(link) = chain.get(holder) else {
        return Err(loss(
            &manifest_key,
            format!("its watermark lsn {lsn} is past the archive's end (lsn {end})"),
        ));
    };
    if (link.manifest.first_lsn, link.manifest.last_lsn)
        != (manifest.holder_first_lsn, manifest.holder_last_lsn)
        || link.manifest.digest() != manifest.holder_manifest
    {
        return Err(loss(
            &manifest_key,
            format!(
                "names the segment {}..={} with a manifest the chain does not hold (the chain's is {})",
                manifest.holder_first_lsn, manifest.holder_last_lsn, link.key
            ),
        ));
    }
    if manifest.file.bytes > SNAPSHOT_BYTES_MAX {
        return Err(loss(
            &key,
            format!(
                "snapshot of {} bytes is larger than this build restores ({SNAPSHOT_BYTES_MAX})",
                manifest.file.bytes
            ),
        ));
    }
    let object = objects::get(store, &key)
        .await?
        .ok_or_else(|| loss(&key, "snapshot object is missing".into()))?;
    let file = crate::verify::decode_checked(
        &object,
        manifest.object,
        manifest.file,
        manifest.compression,
    )
    .map_err(|reason| loss(&key, reason))?;
    let (file_lsn, file_hash) =
        snapshot_file_watermark(&file).map_err(|reason| loss(&key, reason))?;
    if (file_lsn, file_hash) != (manifest.watermark_lsn, manifest.watermark_hash) {
        return Err(loss(
            &key,
            format!(
                "the snapshot file's watermark (lsn {file_lsn}, {file_hash}) is not its manifest's"
            ),
        ));
    }
    Ok(Some(ArchivedSnapshot {
        key,
        manifest,
        file,
        holder,
    }))
}

/// What [`SnapshotArchiver::step`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// Snapshots this process uploaded (or found already there and
    /// completed).
    pub uploads: u64,
    /// The newest archived snapshot's watermark LSN (0: none known).
    pub newest_lsn: Lsn,
    /// Local snapshots refused (damaged, too large, or whose watermark is
    /// not the archived chain's): never uploaded, reported once each.
    pub refused: u64,
    /// Why the last one was refused.
    pub last_refusal: Option<String>,
}

/// The compactor's snapshot side for one log: after each successful
/// segment round, uploads every local snapshot whose watermark's segment
/// is archived and that the bucket does not hold yet, newest first.
#[derive(Debug)]
pub struct SnapshotArchiver {
    target: ArchiveTarget,
    log: LogName,
    dir: PathBuf,
    encoding: Encoding,
    /// Watermark LSNs whose manifest is in the bucket (listed once), plus
    /// local ones refused: neither is looked at again.
    done: Option<BTreeSet<Lsn>>,
    status: SnapshotStatus,
}

impl SnapshotArchiver {
    /// Archives the snapshots in `dir` (`<data>/<log>/snapshots`) of `log`
    /// to `target`. Does no IO.
    #[must_use]
    pub fn new(target: ArchiveTarget, log: LogName, dir: &FsPath, encoding: Encoding) -> Self {
        SnapshotArchiver {
            target,
            log,
            dir: dir.to_path_buf(),
            encoding,
            done: None,
            status: SnapshotStatus::default(),
        }
    }

    /// What it has done.
    #[must_use]
    pub fn status(&self) -> SnapshotStatus {
        self.status.clone()
    }

    /// One round: `holder(lsn)` answers the archived manifest of the
    /// segment holding `lsn` (`None` while it is not archived). Returns
    /// how many snapshots it uploaded.
    ///
    /// # Errors
    /// [`ArchiveError::Store`] when the store fails and
    /// [`ArchiveError::Conflict`] when a key holds other content (retry
    /// later; nothing local is touched); a local snapshot that cannot be
    /// used is refused and reported, not an error.
    pub async fn step(&mut self, holder: &(dyn Fn(Lsn) -> Option<Manifest> + Sync)) -> Result<u64> {
        let local = match local_snapshots(&self.dir) {
            Ok(local) => local,
            Err(error) => return Err(ArchiveError::local(&self.dir, error)),
        };
        let mut waiting: Vec<(Lsn, PathBuf, Manifest)> = Vec::new();
        for (lsn, path) in local.into_iter().rev() {
            if self.done.as_ref().is_some_and(|done| done.contains(&lsn)) {
                continue;
            }
            if let Some(manifest) = holder(lsn) {
                waiting.push((lsn, path, manifest));
            }
        }
        if waiting.is_empty() {
            return Ok(0);
        }
        if self.done.is_none() {
            let archived = list_archived_snapshots(&self.target, &self.log).await?;
            if let Some(newest) = archived.last() {
                self.status.newest_lsn = self.status.newest_lsn.max(*newest);
            }
            self.done = Some(archived.into_iter().collect());
        }
        let mut uploaded = 0;
        for (lsn, path, manifest) in waiting {
            if self.done.as_ref().is_some_and(|done| done.contains(&lsn)) {
                continue;
            }
            match self.upload_one(lsn, &path, &manifest).await {
                Ok(true) => {
                    uploaded += 1;
                    self.status.uploads += 1;
                    self.status.newest_lsn = self.status.newest_lsn.max(lsn);
                }
                // Pruned locally meanwhile: nothing to do.
                Ok(false) => {}
                Err(Refused(reason)) => {
                    tracing::warn!(log = %self.log, snapshot = %path.display(), %reason, "state snapshot not archived");
                    self.status.refused += 1;
                    self.status.last_refusal = Some(reason);
                }
                Err(Failed(error)) => return Err(error),
            }
            if let Some(done) = self.done.as_mut() {
                done.insert(lsn);
            }
        }
        Ok(uploaded)
    }

    /// Uploads one local snapshot; `Ok(false)` when it is gone.
    async fn upload_one(
        &self,
        lsn: Lsn,
        path: &FsPath,
        holder: &Manifest,
    ) -> std::result::Result<bool, StepError> {
        let read_path = path.to_path_buf();
        let read = tokio::task::spawn_blocking(move || read_local(&read_path))
            .await
            .map_err(|error| {
                Failed(ArchiveError::local(
                    path,
                    std::io::Error::other(format!("snapshot worker task failed: {error}")),
                ))
            })?;
        let Some((bytes, watermark)) = read? else {
            return Ok(false);
        };
        if watermark.0 != lsn {
            return Err(Refused(format!(
                "its header names lsn {} but its name lsn {lsn}",
                watermark.0
            )));
        }
        let layout = self.target.layout(self.log.as_str());
        let link = ChainLink {
            key: layout.key(holder.first_lsn, holder.last_lsn, MANIFEST_SUFFIX),
            manifest: holder.clone(),
        };
        let key = layout.snapshot_key(lsn, SNAPSHOT_SUFFIX);
        match check_watermark(
            &self.target,
            &self.log,
            &link,
            watermark.0,
            watermark.1,
            &key,
        )
        .await
        {
            Ok(()) => {}
            Err(error @ ArchiveError::DataLoss { .. }) => {
                return Err(Refused(crate::check::error_chain(&error)))
            }
            Err(error) => return Err(Failed(error)),
        }
        let manifest = upload_snapshot(
            &self.target,
            &self.log,
            holder,
            watermark,
            Bytes::from(bytes),
            self.encoding,
        )
        .await
        .map_err(Failed)?;
        tracing::info!(log = %self.log, lsn = %manifest.watermark_lsn, stored_bytes = manifest.object.bytes, "archived state snapshot");
        Ok(true)
    }
}

/// Why one snapshot was not uploaded.
enum StepError {
    /// The local file cannot be used (reported, never retried).
    Refused(String),
    /// The store or the file system failed (retried next round).
    Failed(ArchiveError),
}
use StepError::{Failed, Refused};

/// A local snapshot file's bytes and its watermark.
type LocalFile = (Vec<u8>, (Lsn, RecordHash));

/// A local snapshot's bytes and watermark, checked (the header, the digest,
/// every entry through `trail_state::verify_snapshot`); `None` when it is
/// gone (pruned).
fn read_local(path: &FsPath) -> std::result::Result<Option<LocalFile>, StepError> {
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Failed(ArchiveError::local(path, error))),
    };
    if size > SNAPSHOT_BYTES_MAX {
        return Err(Refused(format!(
            "it is {size} bytes; this build archives snapshots of at most {SNAPSHOT_BYTES_MAX}"
        )));
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Failed(ArchiveError::local(path, error))),
    };
    let watermark = snapshot_file_watermark(&bytes).map_err(Refused)?;
    match trail_state::verify_snapshot(path) {
        Ok(info)
            if info.watermark.lsn == watermark.0 .0 && info.watermark.hash == watermark.1 .0 =>
        {
            Ok(Some((bytes, watermark)))
        }
        Ok(_) => Err(Refused("it changed while it was read".into())),
        Err(defect) => Err(Refused(format!("it fails its check: {defect}"))),
    }
}

/// Completed snapshot files in `dir` (`<lsn:020>.snap`), oldest first; a
/// missing directory has none.
fn local_snapshots(dir: &FsPath) -> std::io::Result<Vec<(Lsn, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    let mut found = Vec::new();
    // Bounded by the directory's entries (the policy keeps a few).
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|name| name.strip_suffix(".snap")) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|byte| byte.is_ascii_digit()) {
            if let Ok(lsn) = stem.parse::<u64>() {
                found.push((Lsn(lsn), entry.path()));
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SnapshotManifest {
        SnapshotManifest {
            compression: Compression::Zstd,
            log_id: RecordHash([1; 32]),
            watermark_lsn: Lsn(42),
            watermark_hash: RecordHash([2; 32]),
            file: Digest::of(b"file"),
            object: Digest::of(b"object"),
            holder_first_lsn: Lsn(40),
            holder_last_lsn: Lsn(50),
            holder_manifest: [3; 32],
            archived_at_unix_nanos: 1_700_000_000_000_000_000,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let manifest = sample();
        let bytes = manifest.encode();
        assert_eq!(bytes.len(), SNAPSHOT_MANIFEST_BYTES);
        assert_eq!(SnapshotManifest::decode(&bytes), Ok(manifest.clone()));
        for position in [
            0,
            8,
            12,
            16,
            48,
            60,
            100,
            150,
            180,
            200,
            220,
            SNAPSHOT_MANIFEST_BYTES - 1,
        ] {
            let mut damaged = bytes.clone();
            damaged[position] ^= 0x01;
            assert!(
                SnapshotManifest::decode(&damaged).is_err(),
                "byte {position}"
            );
        }
        assert!(SnapshotManifest::decode(&bytes[..SNAPSHOT_MANIFEST_BYTES - 1]).is_err());
        let outside = SnapshotManifest {
            watermark_lsn: Lsn(51),
            ..manifest
        };
        assert!(SnapshotManifest::decode(&outside.encode()).is_err());
    }

    #[test]
    fn reads_a_snapshot_files_watermark_and_checks_its_digest() {
        let mut file = Vec::new();
        file.extend_from_slice(&SNAPSHOT_FILE_MAGIC);
        file.extend_from_slice(&1u32.to_le_bytes());
        file.extend_from_slice(&3u32.to_le_bytes());
        file.extend_from_slice(&77u64.to_le_bytes());
        file.extend_from_slice(&[9; 32]);
        file.extend_from_slice(&0u64.to_le_bytes());
        let digest = *blake3::hash(&file).as_bytes();
        file.extend_from_slice(&digest);
        assert_eq!(
            snapshot_file_watermark(&file),
            Ok((Lsn(77), RecordHash([9; 32])))
        );
        let mut damaged = file.clone();
        damaged[20] ^= 1;
        assert!(snapshot_file_watermark(&damaged).is_err());
        assert!(snapshot_file_watermark(&file[..90]).is_err());
    }
}

//! Archiving one sealed segment: read and check it locally, encode its
//! objects and manifest ([`prepare_segment`], blocking), then store them
//! create-only and read each back ([`upload_segment`]). The manifest goes
//! last, so a manifest in the bucket always has its objects beside it; only
//! a returned manifest means "archived". With a lock policy (S3 Object
//! Lock, `lock.rs`) each object version is locked right after it reads
//! back identical, before the next object goes up: a failure to lock is a
//! failed upload, never an unlocked object counted as archived.

use std::path::Path as FsPath;

use bytes::Bytes;
use trail_log::codec::genesis_hash;
use trail_log::index::SegmentIndex;
use trail_log::{LogName, Lsn, SegmentInfo};

use crate::check::check_sealed_segment;
use crate::compress::{self, Encoding};
use crate::error::{ArchiveError, Result};
use crate::layout::{INDEX_SUFFIX, MANIFEST_SUFFIX, SEGMENT_SUFFIX};
use crate::manifest::{Compression, Digest, Manifest};
use crate::objects::{self, Stored};
use crate::target::ArchiveTarget;

/// A segment ready to upload: its objects and manifest.
#[derive(Debug)]
pub struct PreparedSegment {
    /// The manifest to store last.
    pub manifest: Manifest,
    segment_object: Bytes,
    index_object: Bytes,
}

/// Reads the sealed segment `info` describes, checks it (every record, the
/// chain from `info.prev_hash`, the seal), and encodes its objects and its
/// manifest, linked to `previous` (the manifest of the segment before it;
/// `None` only for the segment starting at LSN 1). Blocking.
///
/// # Errors
/// [`ArchiveError::Segment`] for a segment that is not sealed, is damaged,
/// or does not continue `previous`; [`ArchiveError::Local`] for IO errors.
pub fn prepare_segment(
    log: &LogName,
    info: &SegmentInfo,
    previous: Option<&Manifest>,
    encoding: Encoding,
    now_unix_nanos: i64,
) -> Result<PreparedSegment> {
    let refuse = |reason: String| ArchiveError::Segment {
        path: info.path.clone(),
        reason,
    };
    if !info.sealed {
        return Err(refuse("it is still active".into()));
    }
    let (prev_manifest, recorded_at_floor) = match previous {
        None if info.first_lsn == Lsn::FIRST => ([0; 32], i64::MIN),
        None => {
            return Err(refuse(format!(
                "the segment before lsn {} is not archived",
                info.first_lsn
            )))
        }
        Some(previous) => {
            if previous.last_lsn.next() != info.first_lsn || previous.last_hash != info.prev_hash {
                return Err(refuse(format!(
                    "it does not continue the last archived segment (lsns {}..={})",
                    previous.first_lsn, previous.last_lsn
                )));
            }
            (previous.digest(), previous.last_recorded_at_unix_nanos)
        }
    };
    let segment =
        std::fs::read(&info.path).map_err(|error| ArchiveError::local(&info.path, error))?;
    let log_id = genesis_hash(log.as_str());
    let facts = check_sealed_segment(
        &segment,
        &info.path,
        log_id,
        info.first_lsn,
        info.prev_hash,
        recorded_at_floor,
    )
    .map_err(refuse)?;
    let index = local_index(&info.path, &facts.index);
    let segment_object = compress::encode(&segment, encoding)
        .map_err(|error| ArchiveError::local(&info.path, error))?;
    let index_object = compress::encode(&index, encoding)
        .map_err(|error| ArchiveError::local(&info.path, error))?;
    let manifest = Manifest {
        compression: encoding.compression,
        log_id,
        first_lsn: facts.first_lsn,
        last_lsn: facts.last_lsn,
        record_count: facts.record_count,
        prev_hash: info.prev_hash,
        last_hash: facts.last_hash,
        last_recorded_at_unix_nanos: facts.last_recorded_at_unix_nanos,
        segment: Digest::of(&segment),
        segment_object: Digest::of(&segment_object),
        index: Digest::of(&index),
        index_object: Digest::of(&index_object),
        prev_manifest,
        archived_at_unix_nanos: now_unix_nanos,
    };
    Ok(PreparedSegment {
        manifest,
        segment_object: Bytes::from(segment_object),
        index_object: Bytes::from(index_object),
    })
}

/// The local sidecar when it is the one the segment implies, else the one
/// the check built (the same bytes the engine writes: FORMAT.md §7).
fn local_index(segment_path: &FsPath, built: &SegmentIndex) -> Vec<u8> {
    let path = segment_path.with_extension("idx");
    match std::fs::read(&path) {
        Ok(bytes) if SegmentIndex::decode(&bytes).as_ref() == Ok(built) => bytes,
        _ => built.encode(),
    }
}

/// Stores a prepared segment's objects, then its manifest, each create-only
/// and read back. An object already there from an earlier attempt is kept
/// when it decodes to the same file (so a crash between upload and
/// bookkeeping never duplicates or changes anything); the manifest then
/// names the object that is there.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails (retry later);
/// [`ArchiveError::Conflict`] when a key holds other content.
pub async fn upload_segment(
    target: &ArchiveTarget,
    log: &LogName,
    prepared: PreparedSegment,
) -> Result<Manifest> {
    let PreparedSegment {
        mut manifest,
        segment_object,
        index_object,
    } = prepared;
    let layout = target.layout(log.as_str());
    let (first, last) = (manifest.first_lsn, manifest.last_lsn);
    let conflict = |key: &object_store::path::Path| {
        let key = key.to_string();
        move || ArchiveError::Conflict {
            key: key.clone(),
            first,
            last,
        }
    };

    let segment_key = layout.key(first, last, SEGMENT_SUFFIX);
    if let Some(stored) = put_encoded(
        target,
        &segment_key,
        segment_object,
        manifest.compression,
        manifest.segment,
        conflict(&segment_key),
    )
    .await?
    {
        manifest.segment_object = stored;
    }

    let index_key = layout.key(first, last, INDEX_SUFFIX);
    if let Some(stored) = put_encoded(
        target,
        &index_key,
        index_object,
        manifest.compression,
        manifest.index,
        conflict(&index_key),
    )
    .await?
    {
        manifest.index_object = stored;
    }

    let manifest_key = layout.key(first, last, MANIFEST_SUFFIX);
    // An earlier attempt's manifest: the same segment and chain link, only
    // its timestamp may differ. The manifest is locked last: until this
    // returns, the segment is not archived (a crash before it leaves an
    // unlocked manifest in the bucket, which the archiver locks when it
    // reads the chain again: `lock::lock_segment`).
    let ours = manifest.clone();
    if let Some(earlier) = put_locked(
        target,
        &manifest_key,
        Bytes::from(manifest.encode()),
        conflict(&manifest_key),
        |existing| {
            let earlier = Manifest::decode(existing).ok()?;
            let same = Manifest {
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

/// Stores `bytes` under `key` create-only, reads them back, then locks the
/// version (with a lock policy). An object already under the key (an
/// earlier attempt's) is kept when `same_as_ours` accepts it, and what
/// that returns comes back; it refuses (a [`ArchiveError::Conflict`] from
/// `conflict`) otherwise. Every archived object goes up this way.
pub(crate) async fn put_locked<T>(
    target: &ArchiveTarget,
    key: &object_store::path::Path,
    bytes: Bytes,
    conflict: impl Fn() -> ArchiveError,
    same_as_ours: impl FnOnce(&Bytes) -> Option<T>,
) -> Result<Option<T>> {
    let stored = objects::put_create_verified(
        target.store.as_ref(),
        key,
        bytes,
        target.multipart,
        &conflict,
    )
    .await?;
    let (version, earlier) = match stored {
        Stored::Written { version } => (version, None),
        Stored::Existing { bytes, version } => {
            (version, Some(same_as_ours(&bytes).ok_or_else(&conflict)?))
        }
    };
    lock_verified(target, key, version).await?;
    Ok(earlier)
}

/// [`put_locked`] for an encoded (compressed) object: one already there is
/// kept when it decodes to the same bytes (`expected`, the digest of what
/// was encoded), and its own digest comes back for the manifest, since its
/// compression may differ from this attempt's bytes.
pub(crate) async fn put_encoded(
    target: &ArchiveTarget,
    key: &object_store::path::Path,
    object: Bytes,
    compression: Compression,
    expected: Digest,
    conflict: impl Fn() -> ArchiveError,
) -> Result<Option<Digest>> {
    put_locked(target, key, object, conflict, |existing| {
        let decoded = compress::decode(existing, compression, expected.bytes).ok()?;
        (Digest::of(&decoded) == expected).then(|| Digest::of(existing))
    })
    .await
}

/// With the target's lock policy set: locks the object version just
/// verified (`ensure_retention`: read, set, read back). A failure is a
/// failed upload.
async fn lock_verified(
    target: &ArchiveTarget,
    key: &object_store::path::Path,
    version: Option<String>,
) -> Result<()> {
    let Some(policy) = target.lock_policy() else {
        return Ok(());
    };
    target
        .lock_client()?
        .ensure_retention(
            key,
            version.as_deref(),
            policy,
            crate::lock::unix_secs_now(),
        )
        .await?;
    Ok(())
}

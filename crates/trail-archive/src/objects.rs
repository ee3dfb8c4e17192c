//! The three object-store operations the archive needs, with its rules:
//! a get that tells "missing" from "unreachable", and a create-only put that
//! does not trust the store to honour "create-only" (Garage ignores it):
//! check, write with `PutMode::Create`, then read back and compare.
//!
//! An object above the target's multipart threshold goes up in parts
//! (`WriteMultipart`). object_store 0.14 completes a multipart upload
//! unconditionally (no `PutMode` for it), so there "create-only" rests on
//! the check before and the read-back after alone (DECISIONS.md #38). A
//! failed upload is aborted (best effort); an upload never completed is no
//! object (S3 shows parts only once completed), and one completed whose
//! answer was lost is found by the next attempt's check.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart,
};

use crate::error::{ArchiveError, Result};
use crate::target::{Multipart, MULTIPART_PARTS_MAX};

/// Parts of one multipart upload in flight at once: two keep the link busy
/// while one part's answer is awaited; more only holds more connections.
const MULTIPART_PARTS_IN_FLIGHT: usize = 2;

/// What a create-only put found. `version` is the object version that was
/// read (a versioned bucket's `x-amz-version-id`; `None` where the store
/// has no versions): the one Object Lock then locks.
#[derive(Debug)]
pub enum Stored {
    /// The object was written and reads back identical.
    Written {
        /// The version read back.
        version: Option<String>,
    },
    /// An object was already there (an earlier attempt, or someone else):
    /// its bytes, for the caller to judge.
    Existing {
        /// Its bytes.
        bytes: Bytes,
        /// The version read.
        version: Option<String>,
    },
}

/// The object's bytes, `None` when there is no such object.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails.
pub async fn get(store: &dyn ObjectStore, key: &Path) -> Result<Option<Bytes>> {
    Ok(get_versioned(store, key).await?.map(|(bytes, _)| bytes))
}

/// The object's bytes and the version read, `None` when there is no such
/// object.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails.
pub async fn get_versioned(
    store: &dyn ObjectStore,
    key: &Path,
) -> Result<Option<(Bytes, Option<String>)>> {
    match store.get(key).await {
        Ok(result) => {
            let version = result.meta.version.clone();
            result
                .bytes()
                .await
                .map(|bytes| Some((bytes, version)))
                .map_err(|error| ArchiveError::store("read", key, error))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(error) => Err(ArchiveError::store("get", key, error)),
    }
}

/// Writes `bytes` under `key` unless an object is there, then reads it back.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails; [`ArchiveError::Conflict`]
/// (via `conflict`) when what reads back differs from what was written (a
/// concurrent writer, or a store that ignored the create-only put).
pub async fn put_create_verified(
    store: &dyn ObjectStore,
    key: &Path,
    bytes: Bytes,
    multipart: Multipart,
    conflict: impl Fn() -> ArchiveError,
) -> Result<Stored> {
    if let Some((existing, version)) = get_versioned(store, key).await? {
        return Ok(Stored::Existing {
            bytes: existing,
            version,
        });
    }
    if bytes.len() as u64 > multipart.threshold_bytes {
        put_in_parts(store, key, bytes.clone(), multipart).await?;
        let (read_back, version) = get_versioned(store, key).await?.ok_or_else(&conflict)?;
        if read_back != bytes {
            return Err(conflict());
        }
        return Ok(Stored::Written { version });
    }
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    match store
        .put_opts(key, PutPayload::from_bytes(bytes.clone()), options)
        .await
    {
        Ok(_) => {}
        Err(object_store::Error::AlreadyExists { .. }) => {
            // Someone wrote it between the check and the put.
            let (existing, version) = get_versioned(store, key).await?.ok_or_else(&conflict)?;
            return Ok(Stored::Existing {
                bytes: existing,
                version,
            });
        }
        Err(error) => return Err(ArchiveError::store("put", key, error)),
    }
    let (read_back, version) = get_versioned(store, key).await?.ok_or_else(&conflict)?;
    if read_back != bytes {
        return Err(conflict());
    }
    Ok(Stored::Written { version })
}

/// Uploads `bytes` under `key` in parts of `multipart.part_bytes`, at most
/// [`MULTIPART_PARTS_IN_FLIGHT`] at once; aborts the upload when a part or
/// the completion fails.
async fn put_in_parts(
    store: &dyn ObjectStore,
    key: &Path,
    mut bytes: Bytes,
    multipart: Multipart,
) -> Result<()> {
    let part_bytes = usize::try_from(multipart.part_bytes).unwrap_or(usize::MAX);
    let parts = (bytes.len() as u64).div_ceil(multipart.part_bytes);
    if parts > MULTIPART_PARTS_MAX {
        return Err(ArchiveError::Config(format!(
            "{key} is {} bytes: more than {MULTIPART_PARTS_MAX} parts of {} bytes; raise the multipart part size",
            bytes.len(),
            multipart.part_bytes
        )));
    }
    let upload = store
        .put_multipart(key)
        .await
        .map_err(|error| ArchiveError::store("start a multipart upload of", key, error))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part_bytes);
    // Bounded: `parts` passes, checked above.
    while !bytes.is_empty() {
        if let Err(error) = writer.wait_for_capacity(MULTIPART_PARTS_IN_FLIGHT).await {
            // Best effort: an upload never completed is no object anyway.
            let _ = writer.abort().await;
            return Err(ArchiveError::store("upload a part of", key, error));
        }
        let part = bytes.split_to(part_bytes.min(bytes.len()));
        writer.put(part);
    }
    // `finish` aborts the upload itself when a part or the completion fails.
    writer
        .finish()
        .await
        .map_err(|error| ArchiveError::store("complete the multipart upload of", key, error))?;
    Ok(())
}

/// Every object under `prefix`, bounded by `objects_max`.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails, [`ArchiveError::Config`]
/// past `objects_max`.
pub async fn list(
    store: &dyn ObjectStore,
    prefix: &Path,
    objects_max: usize,
) -> Result<Vec<ObjectMeta>> {
    let mut stream = store.list(Some(prefix));
    let mut objects = Vec::new();
    while let Some(meta) = stream
        .try_next()
        .await
        .map_err(|error| ArchiveError::store("list", prefix, error))?
    {
        if objects.len() == objects_max {
            return Err(ArchiveError::Config(format!(
                "{prefix} holds more than {objects_max} objects; this build lists at most that many"
            )));
        }
        objects.push(meta);
    }
    Ok(objects)
}

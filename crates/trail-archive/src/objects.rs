//! The three object-store operations the archive needs, with its rules:
//! a get that tells "missing" from "unreachable", and a create-only put that
//! does not trust the store to honour "create-only" (Garage ignores it):
//! check, write with `PutMode::Create`, then read back and compare.

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{ArchiveError, Result};

/// What a create-only put found.
#[derive(Debug)]
pub enum Stored {
    /// The object was written and reads back identical.
    Written,
    /// An object was already there (an earlier attempt, or someone else):
    /// its bytes, for the caller to judge.
    Existing(Bytes),
}

/// The object's bytes, `None` when there is no such object.
///
/// # Errors
/// [`ArchiveError::Store`] when the store fails.
pub async fn get(store: &dyn ObjectStore, key: &Path) -> Result<Option<Bytes>> {
    match store.get(key).await {
        Ok(result) => result
            .bytes()
            .await
            .map(Some)
            .map_err(|error| ArchiveError::store("read", key, error)),
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
    conflict: impl Fn() -> ArchiveError,
) -> Result<Stored> {
    if let Some(existing) = get(store, key).await? {
        return Ok(Stored::Existing(existing));
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
            let existing = get(store, key).await?.ok_or_else(&conflict)?;
            return Ok(Stored::Existing(existing));
        }
        Err(error) => return Err(ArchiveError::store("put", key, error)),
    }
    let read_back = get(store, key).await?.ok_or_else(&conflict)?;
    if read_back != bytes {
        return Err(conflict());
    }
    Ok(Stored::Written)
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

//! `trail index rebuild --dir DATA_DIR --log L`: drops a log's derived
//! stores and rebuilds them from the log, offline (the store's lock keeps a
//! running server out). Snapshots are kept: they are checked copies, and
//! a rebuild from the log must not depend on them.

use std::path::Path;
use std::time::Instant;

use trail_log::{Head, LogError, LogName, LogOptions, Store};

use crate::driver::DerivedStore;
use crate::error::{IndexError, Result};
use crate::query_index::QueryIndexWriter;
use crate::state::{SnapshotPolicy, StateFollower};
use crate::DerivedPaths;

/// What a rebuild did.
#[derive(Clone, Debug, PartialEq)]
pub struct RebuildReport {
    /// The log's head, which both stores now hold.
    pub head_lsn: u64,
    /// Records read from the log.
    pub records: u64,
    /// Wall time.
    pub seconds: f64,
}

/// Records per commit during a rebuild: large, since nobody queries yet.
const REBUILD_COMMIT_RECORDS: u64 = 200_000;

/// Rebuilds `log`'s query index and state store under `root` from the log.
/// `progress` gets (last LSN done, head LSN) after every batch.
///
/// # Errors
/// The log does not exist or is damaged; a store cannot be written.
pub fn rebuild_offline(
    root: &Path,
    log: &LogName,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RebuildReport> {
    let started = Instant::now();
    let store = Store::open(
        root,
        LogOptions {
            verify_in_background: false,
            ..LogOptions::default()
        },
    )?;
    let opened = store
        .get(log)?
        .ok_or_else(|| LogError::LogNotFound(log.to_string()))?;
    let paths = DerivedPaths::new(root, log);
    for dir in [&paths.query, &paths.state] {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(IndexError::io("removing", dir)(error)),
        }
    }
    let (mut query, _) = QueryIndexWriter::open(&paths.query)?;
    let state_store = std::sync::Arc::new(trail_state::StateStore::open(&paths.state)?);
    let mut state = StateFollower::new(
        state_store,
        &paths.snapshots,
        SnapshotPolicy {
            every_records: 0,
            every: std::time::Duration::ZERO,
            keep: usize::MAX,
        },
    );
    let head = opened.head();
    let mut follower = opened.follow(opened.first_local_lsn());
    let mut records = 0u64;
    let mut uncommitted = 0u64;
    let mut last: Option<Head> = None;
    progress(0, head.lsn.0);
    while follower.position() <= head.lsn {
        let batch = follower.read_available(4096, 4 << 20)?;
        let Some(tail) = batch.last() else { break };
        let through = Head {
            lsn: tail.record.lsn,
            hash: tail.hash,
        };
        query.apply(&batch)?;
        state.apply(&batch)?;
        records += batch.len() as u64;
        uncommitted += batch.len() as u64;
        last = Some(through);
        if uncommitted >= REBUILD_COMMIT_RECORDS {
            DerivedStore::commit(&mut query, through)?;
            state.commit(through)?;
            uncommitted = 0;
        }
        progress(through.lsn.0, head.lsn.0);
    }
    if let Some(through) = last {
        DerivedStore::commit(&mut query, through)?;
        state.commit(through)?;
    }
    drop(query);
    drop(state);
    store.close()?;
    Ok(RebuildReport {
        head_lsn: head.lsn.0,
        records,
        seconds: started.elapsed().as_secs_f64(),
    })
}

//! The resource-state store (crate `trail-state`, in sled) as a follower:
//! records with a state change become its inputs, the watermark goes in
//! the same sled batch, and snapshots are taken by policy between batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trail_log::{Head, Lsn, RecordHash, StoredRecord};
use trail_proto::v1::state_change::Kind as ChangeKindProto;
use trail_state::{
    ChangeInput, CompensationInput, FieldChangeText, SnapshotInfo, StateInput, StateStore,
    Watermark,
};

use crate::driver::DerivedStore;
use crate::error::Result;
use crate::event::{outcome_name, IndexedRecord, Kind};

/// When snapshots are taken by themselves.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotPolicy {
    /// After this many records taken in since the last one (0: never).
    pub every_records: u64,
    /// After this long since the last one, if records came in (zero: never).
    pub every: Duration,
    /// Snapshots kept; older ones are removed.
    pub keep: usize,
}

impl Default for SnapshotPolicy {
    fn default() -> SnapshotPolicy {
        SnapshotPolicy {
            every_records: 1_000_000,
            every: Duration::from_secs(3600),
            keep: 3,
        }
    }
}

/// The state store's follower side.
pub struct StateFollower {
    store: Arc<StateStore>,
    snapshot_dir: PathBuf,
    policy: SnapshotPolicy,
    inputs: Vec<StateInput>,
    since_snapshot: u64,
    last_snapshot: Instant,
}

/// A watermark in the log's terms.
#[must_use]
pub fn head_of(watermark: Watermark) -> Head {
    Head {
        lsn: Lsn(watermark.lsn),
        hash: RecordHash(watermark.hash),
    }
}

/// The state input a record carries: a state change for its resource, or
/// a compensation (which the store records even without a change, as the
/// undo of a change-less event). `None` for an event without a change.
#[must_use]
pub fn state_input(record: &IndexedRecord) -> Option<StateInput> {
    let event = &record.event;
    let change = event
        .change
        .as_ref()
        .and_then(|change| change.kind.as_ref())
        .map(|kind| match kind {
            ChangeKindProto::SetJson(json) => ChangeInput::Set(json.clone()),
            ChangeKindProto::MergePatchJson(json) => ChangeInput::MergePatch(json.clone()),
            ChangeKindProto::JsonPatchJson(json) => ChangeInput::JsonPatch(json.clone()),
            ChangeKindProto::Delete(_) => ChangeInput::Delete,
            ChangeKindProto::FieldChanges(fields) => ChangeInput::Fields(
                fields
                    .changes
                    .iter()
                    .map(|field| FieldChangeText {
                        path: field.path.clone(),
                        before: field.before_json.clone(),
                        after: field.after_json.clone(),
                    })
                    .collect(),
            ),
        });
    let compensation = (record.kind == Kind::Compensation).then(|| CompensationInput {
        compensates: record.compensates,
        reason: event
            .compensation
            .as_ref()
            .map(|note| note.reason.clone())
            .unwrap_or_default(),
    });
    if change.is_none() && compensation.is_none() {
        return None;
    }
    Some(StateInput {
        lsn: record.lsn,
        recorded_at_unix_nanos: record.recorded_at_unix_nanos,
        actor: event.actor.clone(),
        action: event.action.clone(),
        outcome: outcome_name(record.outcome()).to_owned(),
        resource: event.resource.clone(),
        change,
        compensation,
    })
}

impl StateFollower {
    /// A follower writing into `store`, snapshots into `snapshot_dir`.
    #[must_use]
    pub fn new(store: Arc<StateStore>, snapshot_dir: &Path, policy: SnapshotPolicy) -> Self {
        StateFollower {
            store,
            snapshot_dir: snapshot_dir.to_path_buf(),
            policy,
            inputs: Vec::new(),
            since_snapshot: 0,
            last_snapshot: Instant::now(),
        }
    }

    /// Writes a snapshot as of the store's watermark and prunes old ones.
    ///
    /// # Errors
    /// The store's or the file system's failures.
    pub fn snapshot(&mut self) -> Result<SnapshotInfo> {
        let info = self.store.write_snapshot(&self.snapshot_dir)?;
        trail_state::prune_snapshots(&self.snapshot_dir, self.policy.keep)?;
        self.since_snapshot = 0;
        self.last_snapshot = Instant::now();
        tracing::info!(lsn = info.watermark.lsn, file = %info.path.display(), bytes = info.bytes, "state snapshot written");
        Ok(info)
    }

    fn snapshot_due(&self) -> bool {
        let by_count =
            self.policy.every_records > 0 && self.since_snapshot >= self.policy.every_records;
        let by_time = !self.policy.every.is_zero()
            && self.since_snapshot > 0
            && self.last_snapshot.elapsed() >= self.policy.every;
        by_count || by_time
    }
}

impl DerivedStore for StateFollower {
    const NAME: &'static str = "state store";

    fn apply(&mut self, records: &[StoredRecord]) -> Result<()> {
        self.since_snapshot += records.len() as u64;
        self.inputs.extend(
            records
                .iter()
                .filter_map(|stored| state_input(&IndexedRecord::from_stored(stored))),
        );
        Ok(())
    }

    fn commit(&mut self, through: Head) -> Result<()> {
        let inputs = std::mem::take(&mut self.inputs);
        self.store.apply(
            &inputs,
            Watermark {
                lsn: through.lsn.0,
                hash: through.hash.0,
            },
        )?;
        self.store.flush()?;
        if self.snapshot_due() {
            // A failed snapshot is reported, not fatal: the store is whole.
            if let Err(error) = self.snapshot() {
                tracing::error!(%error, "state snapshot failed; the next one is tried at the next commit");
            }
        }
        Ok(())
    }
}

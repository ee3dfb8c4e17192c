//! `StateStore`: the sled database, opening it, applying batches atomically,
//! and answering state queries from checkpoints plus a bounded replay.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::change::{apply_change, Outcome};
use crate::error::{Result, StateError};
use crate::fields::{replay, Direction, FieldChange};
use crate::input::{ChangeKind, StateInput, Watermark};
use crate::layout::{
    self, compensation_key, decode, encode, head_key, lsn_key, lsn_suffix, resource_prefix,
    time_key, StoredCheckpoint, StoredCompensationRef, StoredCounters, StoredEntry, StoredEntryRef,
    StoredField, StoredHead, StoredResult, CHECKPOINT, COMPENSATION, COUNTERS_KEY, HEAD, HISTORY,
    LAYOUT_VERSION, TIME, VERSION_KEY, WATERMARK_KEY,
};

/// Tuning that does not change the layout: a store written with one interval
/// reads correctly with any other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// A full state is stored after every this many history rows of a
    /// resource, so `state(resource, Some(lsn))` replays fewer than this many
    /// rows. Clamped to at least 1.
    pub checkpoint_every: u32,
    /// Memory budget, in bytes (estimated), of the in-memory copy of recently
    /// applied resources' heads, so `apply` on a hot resource reads nothing
    /// from sled. Least recently applied first out; 0 turns it off. Answers
    /// never come from it (queries read sled), so any size is correct.
    pub head_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            checkpoint_every: 64,
            head_cache_bytes: 64 << 20,
        }
    }
}

/// A resource's state as of some LSN.
#[derive(Debug, Clone, PartialEq)]
pub struct StateAnswer {
    /// `None`: no state (never set, or deleted).
    pub state: Option<Value>,
    /// The last applied (not rejected) change at or before the LSN asked for.
    pub last_change_lsn: Option<u64>,
    /// The store's watermark when the answer was read; an answer for an LSN
    /// beyond it is the state as far as the store has followed the log.
    pub watermark: Option<Watermark>,
}

/// What one `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub applied: usize,
    pub rejected: Vec<Rejection>,
    /// Distinct resources the batch touched.
    pub resources: usize,
    pub watermark: Watermark,
}

/// A change recorded as rejected, for the driver's logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub lsn: u64,
    pub resource: String,
    pub reason: String,
}

/// Numbers for metrics; no scan behind any of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    pub resources: u64,
    pub history_entries: u64,
    pub watermark: Option<Watermark>,
    /// sled's own estimate (`Db::size_on_disk`).
    pub size_on_disk_bytes: u64,
}

/// The per-resource state store. Safe to share between threads: applies are
/// serialised, and reads see either all of a batch or none of it.
pub struct StateStore {
    pub(crate) dir: PathBuf,
    pub(crate) db: sled::Db,
    options: StoreOptions,
    /// One `apply` at a time: a batch reads heads before it writes them. The
    /// heads of recently applied resources live under the same lock.
    writer: Mutex<HeadCache>,
    /// sled makes a batch atomic for crashes, not for concurrent readers (a
    /// plain `get` can see half of one). Readers hold this shared for a whole
    /// answer, `apply` holds it exclusively only while sled applies the batch.
    pub(crate) commit: RwLock<()>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A head as `apply` works on it: the state parsed.
#[derive(Debug, Default)]
struct Head {
    entries: u64,
    last_entry_lsn: u64,
    last_change_lsn: Option<u64>,
    last_recorded_at: i64,
    state: Option<Value>,
}

impl StateStore {
    /// Open (or create) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<StateStore> {
        StateStore::open_with(dir, StoreOptions::default())
    }

    /// Open (or create) the store in `dir`. [`StateError::Damaged`] means the
    /// directory's contents cannot be trusted: delete it and rebuild.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<StateStore> {
        let dir = dir.as_ref().to_path_buf();
        // sled opens unreadable files as an empty database (its recovery stops
        // at the first bad segment), so "no layout version" means a new store
        // only if the directory held nothing before.
        let existed = fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some());
        let config = sled::Config::new()
            .path(&dir)
            .mode(sled::Mode::HighThroughput)
            // No background flusher: the driver flushes at its own pace, and
            // the flusher thread keeps the directory locked for up to a flush
            // interval after the store is dropped.
            .flush_every_ms(None);
        let db = open_sled(&config, &dir)?;
        let store = StateStore {
            dir,
            db,
            options: StoreOptions {
                checkpoint_every: options.checkpoint_every.max(1),
                head_cache_bytes: options.head_cache_bytes,
            },
            writer: Mutex::new(HeadCache::new(options.head_cache_bytes)),
            commit: RwLock::new(()),
        };
        store.check_layout(existed)?;
        tracing::debug!(dir = %store.dir.display(), "state store open");
        Ok(store)
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn check_layout(&self, existed: bool) -> Result<()> {
        match self.get(VERSION_KEY, "read the layout version")? {
            Some(v) => {
                let version = layout::decode_version(&v).map_err(|d| self.damaged(d))?;
                if version != LAYOUT_VERSION {
                    return Err(self.damaged(format!(
                        "layout version {version}, this build reads only {LAYOUT_VERSION}"
                    )));
                }
            }
            None => {
                if self.first_key()?.is_some() {
                    return Err(self.damaged("entries but no layout version".to_owned()));
                }
                if existed {
                    return Err(self.damaged(
                        "files in the directory but sled recovered no layout version from them"
                            .to_owned(),
                    ));
                }
                self.db
                    .insert(VERSION_KEY, &LAYOUT_VERSION.to_le_bytes())
                    .map_err(|e| self.sled_error("write the layout version", e))?;
                self.flush()?;
            }
        }
        // Data without a watermark would be re-applied from LSN 1 on top of
        // itself; only a store with nothing in it may lack one.
        if self.read_watermark()?.is_none() {
            let data = self
                .db
                .range(vec![HEAD]..)
                .next()
                .transpose()
                .map_err(|e| self.sled_error("scan", e))?;
            if data.is_some() {
                return Err(self.damaged("entries but no watermark".to_owned()));
            }
        }
        self.read_counters()?;
        Ok(())
    }

    /// The last log record applied, or `None` for a store that has applied nothing.
    pub fn watermark(&self) -> Result<Option<Watermark>> {
        let _read = read_lock(&self.commit);
        self.read_watermark()
    }

    /// Make everything applied so far durable. The driver calls it at its own
    /// pace; sled also flushes in the background.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| self.sled_error("flush", e))
    }

    /// Counters and size for metrics.
    pub fn stats(&self) -> Result<StoreStats> {
        let _read = read_lock(&self.commit);
        let counters = self.read_counters()?;
        Ok(StoreStats {
            resources: counters.resources,
            history_entries: counters.entries,
            watermark: self.read_watermark()?,
            size_on_disk_bytes: self
                .db
                .size_on_disk()
                .map_err(|e| self.sled_error("size_on_disk", e))?,
        })
    }

    /// Apply `inputs` and move the watermark to `through`, all in one atomic
    /// sled batch. LSNs must strictly increase, be above the current watermark
    /// and at most `through.lsn`; `through` may lie beyond the last input
    /// (records without a state change are not passed in). Nothing is written
    /// when any check fails.
    ///
    /// A compensation input (`compensation: Some`) gets a history row like any
    /// other, with `change: None` a row of kind `None` that is applied and
    /// changes nothing (and is not a "change" for `last_change_lsn`). If its
    /// row is applied, the key `50 | target` records which LSN undid the
    /// target, in the same batch; a rejected compensation (its `Fields` no
    /// longer applied) undid nothing and records nothing but its row. A second
    /// applied compensation of one target is [`StateError::CompensatedTwice`].
    pub fn apply(&self, inputs: &[StateInput], through: Watermark) -> Result<ApplyReport> {
        let mut cache = lock(&self.writer);
        let current = self.read_watermark()?;
        check_order(inputs, through, current)?;
        let mut counters = self.read_counters()?;
        let every = u64::from(self.options.checkpoint_every);

        // The overlay: heads touched by this batch, so later inputs on the same
        // resource see earlier ones before anything is written. Heads taken
        // out of the cache go back only once the batch is committed, so a
        // failed apply leaves nothing in the cache that sled does not hold.
        let mut heads: HashMap<&str, Head> = HashMap::new();
        // Compensations of this batch (target -> compensator), the overlay of
        // the 50-keys as `heads` is of the heads.
        let mut compensated: BTreeMap<u64, u64> = BTreeMap::new();
        let mut batch = sled::Batch::default();
        let mut report = ApplyReport {
            applied: 0,
            rejected: Vec::new(),
            resources: 0,
            watermark: through,
        };
        for input in inputs {
            let resource = input.resource.as_str();
            let lsn = input.lsn;
            let head = match heads.entry(resource) {
                Entry::Occupied(o) => o.into_mut(),
                Entry::Vacant(v) => {
                    let head = match cache.take(resource) {
                        Some(head) => head,
                        None => self.load_head(resource)?.unwrap_or_default(),
                    };
                    v.insert(head)
                }
            };
            if head.entries > 0 && input.recorded_at_unix_nanos < head.last_recorded_at {
                return Err(StateError::TimeBackwards {
                    resource: resource.to_owned(),
                    lsn,
                    recorded_at: input.recorded_at_unix_nanos,
                    previous: head.last_recorded_at,
                });
            }
            let outcome = match &input.change {
                Some(change) => apply_change(&head.state, change),
                // `check_order` let this through only with a compensation.
                None => Outcome::Unchanged,
            };
            let result = match outcome {
                Outcome::Unchanged => {
                    report.applied += 1;
                    StoredResult::Applied { fields: Vec::new() }
                }
                Outcome::Applied { state, fields } => {
                    report.applied += 1;
                    head.state = state;
                    head.last_change_lsn = Some(lsn);
                    let fields = fields
                        .into_iter()
                        .map(store_field)
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|detail| encode_error(resource, lsn, detail))?;
                    StoredResult::Applied { fields }
                }
                Outcome::Rejected { reason } => {
                    report.rejected.push(Rejection {
                        lsn,
                        resource: resource.to_owned(),
                        reason: reason.clone(),
                    });
                    StoredResult::Rejected { reason }
                }
            };
            if head.entries == 0 {
                counters.resources += 1;
            }
            head.entries += 1;
            head.last_entry_lsn = lsn;
            head.last_recorded_at = input.recorded_at_unix_nanos;
            counters.entries += 1;

            if let (Some(c), StoredResult::Applied { .. }) = (&input.compensation, &result) {
                let target = c.compensates;
                let first = match compensated.get(&target) {
                    Some(&first) => Some(first),
                    None => self.read_compensator(target)?,
                };
                if let Some(first) = first {
                    return Err(StateError::CompensatedTwice {
                        target,
                        first,
                        second: lsn,
                    });
                }
                compensated.insert(target, lsn);
                let value = encode(&lsn).map_err(|d| encode_error(resource, lsn, d))?;
                batch.insert(&compensation_key(target)[..], value);
            }
            let entry = StoredEntryRef {
                recorded_at: input.recorded_at_unix_nanos,
                actor: &input.actor,
                action: &input.action,
                outcome: &input.outcome,
                kind: input.change.as_ref().map_or(ChangeKind::None, |c| c.kind()),
                result: &result,
                compensation: input.compensation.as_ref().map(|c| StoredCompensationRef {
                    compensates: c.compensates,
                    reason: &c.reason,
                }),
            };
            let value = encode(&entry).map_err(|d| encode_error(resource, lsn, d))?;
            batch.insert(lsn_key(HISTORY, resource, lsn), value);
            if head.entries.is_multiple_of(every) {
                let checkpoint = StoredCheckpoint {
                    last_change_lsn: head.last_change_lsn,
                    state: json_text(&head.state).map_err(|d| encode_error(resource, lsn, d))?,
                };
                let value = encode(&checkpoint).map_err(|d| encode_error(resource, lsn, d))?;
                batch.insert(lsn_key(CHECKPOINT, resource, lsn), value);
                // The time index has one key per checkpoint, not per row: a
                // seek by time lands on a checkpoint, then reads rows.
                batch.insert(
                    time_key(resource, input.recorded_at_unix_nanos, lsn),
                    Vec::new(),
                );
            }
        }
        report.resources = heads.len();
        let mut committed: Vec<(&str, Head, usize)> = Vec::with_capacity(heads.len());
        for (resource, head) in heads {
            let lsn = head.last_entry_lsn;
            let stored = StoredHead {
                entries: head.entries,
                last_entry_lsn: head.last_entry_lsn,
                last_change_lsn: head.last_change_lsn,
                last_recorded_at: head.last_recorded_at,
                state: json_text(&head.state).map_err(|d| encode_error(resource, lsn, d))?,
            };
            let value = encode(&stored).map_err(|d| encode_error(resource, lsn, d))?;
            let size = value.len();
            batch.insert(head_key(resource), value);
            committed.push((resource, head, size));
        }
        let value = encode(&counters).map_err(|d| encode_error("", through.lsn, d))?;
        batch.insert(COUNTERS_KEY, value);
        batch.insert(WATERMARK_KEY, &layout::encode_watermark(&through)[..]);

        {
            let _commit = write_lock(&self.commit);
            self.db
                .apply_batch(batch)
                .map_err(|e| self.sled_error("apply a batch", e))?;
        }
        for (resource, head, size) in committed {
            cache.put(resource, head, size);
        }
        Ok(report)
    }

    /// The state of `resource` now (`at_lsn = None`) or as of LSN N: after every
    /// change with lsn <= N. Costs one checkpoint read plus a replay of fewer
    /// than `checkpoint_every` history rows, at any depth.
    pub fn state(&self, resource: &str, at_lsn: Option<u64>) -> Result<StateAnswer> {
        let _read = read_lock(&self.commit);
        let watermark = self.read_watermark()?;
        let (state, last_change_lsn) = self.state_at(resource, at_lsn.unwrap_or(u64::MAX))?;
        Ok(StateAnswer {
            state,
            last_change_lsn,
            watermark,
        })
    }

    /// The state of `resource` as of time `t`: after every change recorded at
    /// or before `t`. One reverse seek in the time keys (one per checkpoint)
    /// to the last checkpoint recorded at or before `t`, then its rows up to
    /// `t`: as cheap as `state`.
    pub fn state_at_time(&self, resource: &str, t_unix_nanos: i64) -> Result<StateAnswer> {
        let _read = read_lock(&self.commit);
        let watermark = self.read_watermark()?;
        let (state, last_change_lsn) = self.state_at_time_inner(resource, t_unix_nanos)?;
        Ok(StateAnswer {
            state,
            last_change_lsn,
            watermark,
        })
    }

    fn state_at_time_inner(&self, resource: &str, t: i64) -> Result<(Option<Value>, Option<u64>)> {
        let Some(head) = self.load_stored_head(resource)? else {
            return Ok((None, None));
        };
        if t >= head.last_recorded_at {
            let state = self.parse_json(resource, head.last_entry_lsn, head.state.as_deref())?;
            return Ok((state, head.last_change_lsn));
        }
        // Times do not go backwards within a resource (`TimeBackwards`), so
        // the rows recorded at or before `t` are a prefix in LSN order; the
        // checkpoint found is in it, and the rest of it lies before the next
        // checkpoint (recorded after `t`, or it would have been found).
        let (from, state, last_change) = match self.checkpoint_at_or_before_time(resource, t)? {
            None => (0, None, None),
            Some(lsn) => {
                let value = self
                    .get(&lsn_key(CHECKPOINT, resource, lsn), "read a checkpoint")?
                    .ok_or_else(|| {
                        self.damaged(format!(
                            "resource {resource:?}: time key at lsn {lsn} without its checkpoint"
                        ))
                    })?;
                self.checkpoint(resource, lsn, &value)?
            }
        };
        self.replay_rows(resource, from, u64::MAX, state, last_change, |entry| {
            entry.recorded_at <= t
        })
    }

    /// The LSN of the last checkpoint whose row was recorded at or before `t`.
    fn checkpoint_at_or_before_time(&self, resource: &str, t: i64) -> Result<Option<u64>> {
        let lo = resource_prefix(TIME, resource);
        let hi = time_key(resource, t, u64::MAX);
        let last = self
            .db
            .range(lo..=hi)
            .next_back()
            .transpose()
            .map_err(|e| self.sled_error("seek the time keys", e))?;
        last.map(|(key, _)| {
            lsn_suffix(&key)
                .ok_or_else(|| self.damaged(format!("resource {resource:?}: time key too short")))
        })
        .transpose()
    }

    pub(crate) fn state_at(&self, resource: &str, n: u64) -> Result<(Option<Value>, Option<u64>)> {
        let Some(head) = self.load_stored_head(resource)? else {
            return Ok((None, None));
        };
        if n >= head.last_entry_lsn {
            let state = self.parse_json(resource, head.last_entry_lsn, head.state.as_deref())?;
            return Ok((state, head.last_change_lsn));
        }
        let checkpoint = self
            .db
            .range(lsn_key(CHECKPOINT, resource, 0)..=lsn_key(CHECKPOINT, resource, n))
            .next_back()
            .transpose()
            .map_err(|e| self.sled_error("seek the checkpoints", e))?;
        let (from, state, last_change) = match checkpoint {
            None => (0, None, None),
            Some((key, value)) => {
                let lsn = lsn_suffix(&key).unwrap_or(0);
                self.checkpoint(resource, lsn, &value)?
            }
        };
        self.replay_rows(resource, from, n, state, last_change, |_| true)
    }

    /// A checkpoint's LSN, state and last applied change.
    fn checkpoint(
        &self,
        resource: &str,
        lsn: u64,
        value: &[u8],
    ) -> Result<(u64, Option<Value>, Option<u64>)> {
        let c: StoredCheckpoint = decode(value).map_err(|d| {
            self.damaged(format!(
                "resource {resource:?} checkpoint at lsn {lsn}: {d}"
            ))
        })?;
        Ok((
            lsn,
            self.parse_json(resource, lsn, c.state.as_deref())?,
            c.last_change_lsn,
        ))
    }

    /// Replay the history rows after `from` up to `to` (inclusive) onto
    /// `state`, stopping before the first row `take` refuses.
    fn replay_rows(
        &self,
        resource: &str,
        from: u64,
        to: u64,
        mut state: Option<Value>,
        mut last_change: Option<u64>,
        take: impl Fn(&StoredEntry) -> bool,
    ) -> Result<(Option<Value>, Option<u64>)> {
        let rows = self.db.range(
            lsn_key(HISTORY, resource, from.saturating_add(1))..=lsn_key(HISTORY, resource, to),
        );
        for row in rows {
            let (key, value) = row.map_err(|e| self.sled_error("read history", e))?;
            let lsn = lsn_suffix(&key).unwrap_or(0);
            let entry = self.decode_entry(resource, lsn, &value)?;
            if !take(&entry) {
                break;
            }
            if let StoredResult::Applied { fields } = entry.result {
                let fields = self.load_fields(resource, lsn, fields)?;
                state = replay(state, &fields, Direction::Forward).map_err(|e| {
                    self.damaged(format!(
                        "resource {resource:?} lsn {lsn}: history does not replay: {e}"
                    ))
                })?;
                // A change-less compensation is no change (as in `apply`).
                if entry.kind != ChangeKind::None {
                    last_change = Some(lsn);
                }
            }
        }
        Ok((state, last_change))
    }

    /// The LSN of the compensation that undid record `lsn`, if the store has
    /// applied one (FORMAT.md 12.7).
    pub fn compensated_by(&self, lsn: u64) -> Result<Option<u64>> {
        let _read = read_lock(&self.commit);
        self.read_compensator(lsn)
    }

    /// Every `(target, compensator)` the store knows with `from_lsn <= target
    /// <= to_lsn`, by target: one range scan over what the caller asks (the
    /// server marks the records of a Read or Query page with it).
    pub fn compensations_between(&self, from_lsn: u64, to_lsn: u64) -> Result<Vec<(u64, u64)>> {
        let _read = read_lock(&self.commit);
        if from_lsn > to_lsn {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for kv in self
            .db
            .range(compensation_key(from_lsn)..=compensation_key(to_lsn))
        {
            let (key, value) = kv.map_err(|e| self.sled_error("read compensations", e))?;
            let target = lsn_suffix(&key)
                .filter(|_| key.len() == 9 && key[0] == COMPENSATION)
                .ok_or_else(|| self.damaged(format!("compensation key {key:02x?}")))?;
            out.push((target, self.decode_compensator(target, &value)?));
        }
        Ok(out)
    }

    /// The last history row of `resource` recorded at or before `t` (0 if
    /// none): the point a rollback "to time t" keeps. As cheap as
    /// `state_at_time`: a seek to the last checkpoint at or before `t`, then
    /// at most `checkpoint_every` rows.
    pub fn last_lsn_at_or_before_time(&self, resource: &str, t_unix_nanos: i64) -> Result<u64> {
        let _read = read_lock(&self.commit);
        let t = t_unix_nanos;
        let Some(head) = self.load_stored_head(resource)? else {
            return Ok(0);
        };
        if t >= head.last_recorded_at {
            return Ok(head.last_entry_lsn);
        }
        let from = self.checkpoint_at_or_before_time(resource, t)?.unwrap_or(0);
        let mut last = 0;
        // From the checkpoint's own row (recorded at or before `t`).
        let rows = self
            .db
            .range(lsn_key(HISTORY, resource, from)..=lsn_key(HISTORY, resource, u64::MAX));
        for row in rows {
            let (key, value) = row.map_err(|e| self.sled_error("read history", e))?;
            let lsn = lsn_suffix(&key).unwrap_or(0);
            if self.decode_entry(resource, lsn, &value)?.recorded_at > t {
                break;
            }
            last = lsn;
        }
        Ok(last)
    }

    // ---- reading and decoding, every failure with its context ----

    pub(crate) fn read_compensator(&self, target: u64) -> Result<Option<u64>> {
        self.get(&compensation_key(target), "read a compensation")?
            .map(|v| self.decode_compensator(target, &v))
            .transpose()
    }

    fn decode_compensator(&self, target: u64, value: &[u8]) -> Result<u64> {
        decode(value).map_err(|d| self.damaged(format!("compensation of lsn {target}: {d}")))
    }

    pub(crate) fn read_watermark(&self) -> Result<Option<Watermark>> {
        match self.get(WATERMARK_KEY, "read the watermark")? {
            None => Ok(None),
            Some(v) => layout::decode_watermark(&v)
                .map(Some)
                .map_err(|d| self.damaged(d)),
        }
    }

    fn read_counters(&self) -> Result<StoredCounters> {
        match self.get(COUNTERS_KEY, "read the counters")? {
            None => Ok(StoredCounters::default()),
            Some(v) => decode(&v).map_err(|d| self.damaged(format!("counters: {d}"))),
        }
    }

    fn load_stored_head(&self, resource: &str) -> Result<Option<StoredHead>> {
        match self.get(&head_key(resource), "read a resource head")? {
            None => Ok(None),
            Some(v) => decode(&v)
                .map(Some)
                .map_err(|d| self.damaged(format!("resource {resource:?} head: {d}"))),
        }
    }

    fn load_head(&self, resource: &str) -> Result<Option<Head>> {
        let Some(h) = self.load_stored_head(resource)? else {
            return Ok(None);
        };
        Ok(Some(Head {
            entries: h.entries,
            last_entry_lsn: h.last_entry_lsn,
            last_change_lsn: h.last_change_lsn,
            last_recorded_at: h.last_recorded_at,
            state: self.parse_json(resource, h.last_entry_lsn, h.state.as_deref())?,
        }))
    }

    pub(crate) fn decode_entry(
        &self,
        resource: &str,
        lsn: u64,
        value: &[u8],
    ) -> Result<StoredEntry> {
        decode(value)
            .map_err(|d| self.damaged(format!("resource {resource:?} history lsn {lsn}: {d}")))
    }

    pub(crate) fn load_fields(
        &self,
        resource: &str,
        lsn: u64,
        fields: Vec<StoredField>,
    ) -> Result<Vec<FieldChange>> {
        fields
            .into_iter()
            .map(|f| {
                Ok(FieldChange {
                    before: self.parse_json(resource, lsn, f.before.as_deref())?,
                    after: self.parse_json(resource, lsn, f.after.as_deref())?,
                    path: f.path,
                })
            })
            .collect()
    }

    fn parse_json(&self, resource: &str, lsn: u64, text: Option<&str>) -> Result<Option<Value>> {
        text.map(|t| {
            serde_json::from_str(t).map_err(|e| {
                self.damaged(format!("resource {resource:?} lsn {lsn}: stored JSON: {e}"))
            })
        })
        .transpose()
    }

    fn get(&self, key: &[u8], op: &'static str) -> Result<Option<sled::IVec>> {
        self.db.get(key).map_err(|e| self.sled_error(op, e))
    }

    fn first_key(&self) -> Result<Option<sled::IVec>> {
        self.db
            .first()
            .map(|kv| kv.map(|(k, _)| k))
            .map_err(|e| self.sled_error("scan", e))
    }

    pub(crate) fn damaged(&self, detail: String) -> StateError {
        StateError::Damaged {
            dir: self.dir.clone(),
            detail,
        }
    }

    pub(crate) fn sled_error(&self, op: &'static str, e: sled::Error) -> StateError {
        sled_error(&self.dir, op, e)
    }
}

/// The heads of recently applied resources, as `apply` left them, so the next
/// `apply` on one of them needs no sled read, no decode and no JSON parse.
/// Filled only after a batch commits; bounded by an estimate of its memory
/// (the head's encoded size, times a factor for the parsed JSON, plus the
/// key); least recently applied out first.
struct HeadCache {
    map: HashMap<String, CachedHead>,
    budget: usize,
    bytes: usize,
    tick: u64,
}

struct CachedHead {
    head: Head,
    bytes: usize,
    used: u64,
}

impl HeadCache {
    /// Parsed JSON (`serde_json::Value`, a BTreeMap per object) takes a few
    /// times its text, and even a small object costs a B-tree node (over
    /// 600 bytes) plus the entry itself; a deliberately high guess, it only
    /// sizes the budget.
    const PARSED_FACTOR: usize = 4;
    const OVERHEAD: usize = 1024;

    fn new(budget: usize) -> HeadCache {
        HeadCache {
            map: HashMap::new(),
            budget,
            bytes: 0,
            tick: 0,
        }
    }

    fn take(&mut self, resource: &str) -> Option<Head> {
        let cached = self.map.remove(resource)?;
        self.bytes -= cached.bytes;
        Some(cached.head)
    }

    fn put(&mut self, resource: &str, head: Head, encoded: usize) {
        let bytes = encoded * Self::PARSED_FACTOR + resource.len() + Self::OVERHEAD;
        if bytes > self.budget / 2 {
            // Too big to be worth it (or the cache is off): a replaced entry
            // must not survive with an older head.
            self.take(resource);
            return;
        }
        self.tick += 1;
        let cached = CachedHead {
            head,
            bytes,
            used: self.tick,
        };
        self.bytes += bytes;
        if let Some(old) = self.map.insert(resource.to_owned(), cached) {
            self.bytes -= old.bytes;
        }
        if self.bytes > self.budget {
            self.evict();
        }
    }

    /// Drop the least recently applied entries until a quarter of the budget
    /// is free: one pass over the map per many inserts.
    fn evict(&mut self) {
        let target = self.budget - self.budget / 4;
        let mut by_age: Vec<(u64, usize)> = self.map.values().map(|c| (c.used, c.bytes)).collect();
        by_age.sort_unstable();
        let mut bytes = self.bytes;
        let mut cutoff = 0;
        for (used, size) in by_age {
            if bytes <= target {
                break;
            }
            bytes -= size;
            cutoff = used;
        }
        self.map.retain(|_, c| c.used > cutoff);
        self.bytes = self.map.values().map(|c| c.bytes).sum();
    }
}

/// How long `open` waits for a lock that a store dropped a moment ago in this
/// process may still hold: sled's helper threads keep its files (and so its
/// `flock`) open for a while after the last handle is dropped. A store open in
/// another process still fails, after this long.
const LOCK_WAIT: Duration = Duration::from_secs(2);

fn open_sled(config: &sled::Config, dir: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // sled's recovery is not hardened against arbitrary bytes; a panic in
        // it is one more way of saying the files are damaged.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()))
            .map_err(|_| StateError::Damaged {
                dir: dir.to_path_buf(),
                detail: "sled panicked while recovering its files".to_owned(),
            })?;
        match opened {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_contention(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(open_error(dir, e)),
        }
    }
}

/// sled reports a held lock as an `Other` IO error with its own text.
fn is_lock_contention(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

/// sled's corruption reports are damage; IO errors are not (a full disk or a
/// lock held by another process must not make the driver delete the store).
pub(crate) fn sled_error(dir: &Path, op: &'static str, e: sled::Error) -> StateError {
    match e {
        sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_) => StateError::Damaged {
            dir: dir.to_path_buf(),
            detail: format!("{op}: {e}"),
        },
        e => StateError::Sled {
            dir: dir.to_path_buf(),
            op,
            source: e,
        },
    }
}

fn open_error(dir: &Path, e: sled::Error) -> StateError {
    use std::io::ErrorKind;
    match &e {
        // Garbage where sled expects its files shows up as short or invalid
        // reads rather than as `Corruption`.
        sled::Error::Io(io)
            if matches!(io.kind(), ErrorKind::InvalidData | ErrorKind::UnexpectedEof) =>
        {
            StateError::Damaged {
                dir: dir.to_path_buf(),
                detail: format!("open: {e}"),
            }
        }
        _ => sled_error(dir, "open", e),
    }
}

fn check_order(
    inputs: &[StateInput],
    through: Watermark,
    current: Option<Watermark>,
) -> Result<()> {
    let floor = current.map_or(0, |w| w.lsn);
    if let Some(current) = current {
        if through.lsn < current.lsn {
            return Err(StateError::WatermarkBackwards {
                through: through.lsn,
                current: current.lsn,
            });
        }
        if through.lsn == current.lsn && through.hash != current.hash {
            return Err(StateError::WatermarkHashMismatch {
                lsn: through.lsn,
                stored: hex(&current.hash),
                given: hex(&through.hash),
            });
        }
    }
    let mut previous: Option<u64> = None;
    for input in inputs {
        let lsn = input.lsn;
        match &input.compensation {
            None if input.change.is_none() => {
                return Err(StateError::NoChange {
                    lsn,
                    resource: input.resource.clone(),
                });
            }
            Some(c) if c.compensates >= lsn => {
                return Err(StateError::CompensationNotBefore {
                    lsn,
                    compensates: c.compensates,
                });
            }
            _ => {}
        }
        if lsn <= floor {
            return Err(StateError::LsnNotAfterWatermark {
                lsn,
                watermark: floor,
            });
        }
        if let Some(previous) = previous {
            if lsn <= previous {
                return Err(StateError::LsnNotIncreasing { lsn, previous });
            }
        }
        if lsn > through.lsn {
            return Err(StateError::LsnBeyondWatermark {
                lsn,
                through: through.lsn,
            });
        }
        previous = Some(lsn);
    }
    Ok(())
}

fn store_field(f: FieldChange) -> Result<StoredField, String> {
    Ok(StoredField {
        path: f.path,
        before: json_text(&f.before)?,
        after: json_text(&f.after)?,
    })
}

fn json_text(v: &Option<Value>) -> Result<Option<String>, String> {
    v.as_ref()
        .map(|v| serde_json::to_string(v).map_err(|e| e.to_string()))
        .transpose()
}

fn encode_error(resource: &str, lsn: u64, detail: String) -> StateError {
    StateError::Encode {
        resource: resource.to_owned(),
        lsn,
        detail,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// A panic while a lock was held cannot leave sled half-written (the batch is
// atomic), so a poisoned lock is still safe to take.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read_lock(l: &RwLock<()>) -> RwLockReadGuard<'_, ()> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock(l: &RwLock<()>) -> RwLockWriteGuard<'_, ()> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn head(entries: u64) -> Head {
        Head {
            entries,
            ..Head::default()
        }
    }

    #[test]
    fn head_cache_stays_in_budget_and_keeps_the_recent() {
        let per = 10 * HeadCache::PARSED_FACTOR + 3 + HeadCache::OVERHEAD;
        let mut c = HeadCache::new(per * 8);
        for i in 0..20u64 {
            c.put(&format!("r{i:02}"), head(i), 10);
            assert!(c.bytes <= c.budget);
            assert_eq!(c.bytes, c.map.values().map(|e| e.bytes).sum::<usize>());
        }
        assert!(c.take("r19").is_some_and(|h| h.entries == 19));
        assert!(c.take("r19").is_none());
        assert!(c.take("r00").is_none());
        // Refused (too big) replaces: the older head must not survive.
        c.put("r18", head(99), per * 8);
        assert!(c.take("r18").is_none());
        let mut off = HeadCache::new(0);
        off.put("r", head(1), 1);
        assert!(off.take("r").is_none());
    }
}

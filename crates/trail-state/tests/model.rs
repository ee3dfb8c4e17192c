//! Model-based test: random logs of state changes over a few resources, fed to
//! the store in random batches with restarts, crashes and restores from
//! snapshots in between, checked after every step against a reference model
//! that replays the log with `json_patch` directly.
//!
//! Compensations are planned at random points (refuse, cascade, force,
//! rollback to an LSN or a time, a repeat of a compensated LSN), their records
//! appended to the log and applied; the model decides on its own (its own
//! list of which LSN compensates which, its own reading of the live-row rule
//! of FORMAT.md 12.7) what the planner must answer, and where the result can
//! be predicted without the planner (no forced undo past live changes of the
//! resource so far), that the undo lands on the state before the target.
//!
//! Cases: 16 by default (the file runs in well under a minute in debug). Set
//! `PROPTEST_CASES=N` for more, e.g. `PROPTEST_CASES=2000 cargo test --release
//! -p trail-state --test model`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use common::{hash_of, wm};
use proptest::prelude::*;
use serde_json::{json, Value};
use trail_state::{
    load_newest_snapshot, replay, ChangeInput, ChangeKind, ChangeResult, CompensationInput,
    Direction, FieldChange, FieldChangeText, Plan, PlanError, StateInput, StateStore, StoreOptions,
    UndoMode,
};

const RESOURCES: [&str; 3] = ["order/1", "order/2", "user~a"];
const PATHS: [&str; 10] = [
    "", "/a", "/b", "/c", "/a/b", "/a/0", "/0", "/a/-", "/c/1", "/b/a",
];

// ---------------------------------------------------------------- the model

/// What a change does, computed the plain way: parse, patch a copy, done.
/// `Err(Some(i))`: JSON patch op i failed; `Err(None)`: not applicable at all.
fn model_apply(
    state: &Option<Value>,
    change: &ChangeInput,
) -> Result<Option<Value>, Option<usize>> {
    match change {
        ChangeInput::Set(t) => serde_json::from_str(t).map(Some).map_err(|_| None),
        ChangeInput::MergePatch(t) => {
            let p: Value = serde_json::from_str(t).map_err(|_| None)?;
            let mut doc = state.clone().unwrap_or(Value::Null);
            json_patch::merge(&mut doc, &p);
            Ok(Some(doc))
        }
        ChangeInput::JsonPatch(t) => {
            let p: json_patch::Patch = serde_json::from_str(t).map_err(|_| None)?;
            let mut doc = state.clone().unwrap_or(Value::Null);
            // patch_unsafe on a copy: json_patch::patch's own undo can panic
            // (json-patch 5.0.0: a failed `move` whose undo fails hits an
            // `unreachable!`), and the copy is thrown away on failure anyway.
            json_patch::patch_unsafe(&mut doc, &p).map_err(|e| Some(e.operation))?;
            Ok(Some(doc))
        }
        ChangeInput::Delete => Ok(None),
        // Strict: parse every side, then replay forward with the public
        // `replay`, which must find each `before`.
        ChangeInput::Fields(texts) => {
            let parse = |t: &Option<String>| {
                t.as_deref()
                    .map(serde_json::from_str::<Value>)
                    .transpose()
                    .map_err(|_| None)
            };
            let mut fields = Vec::new();
            for t in texts {
                fields.push(FieldChange {
                    path: t.path.clone(),
                    before: parse(&t.before)?,
                    after: parse(&t.after)?,
                });
            }
            replay(state.clone(), &fields, Direction::Forward).map_err(|_| None)
        }
    }
}

/// One resource's history in the model.
#[derive(Debug, Clone)]
struct ModelRow {
    input: StateInput,
    before: Option<Value>,
    after: Option<Value>,
    failed: Option<Option<usize>>,
}

/// The whole log up to `through`, replayed in order.
#[derive(Debug, Default)]
struct Model {
    rows: HashMap<String, Vec<ModelRow>>,
    /// target -> compensator, for applied compensation records only (a
    /// rejected one undid nothing).
    compensated: BTreeMap<u64, u64>,
}

impl Model {
    fn rows(&self, resource: &str) -> &[ModelRow] {
        self.rows.get(resource).map_or(&[], Vec::as_slice)
    }
}

fn model(log: &[Option<StateInput>], through: u64) -> Model {
    let mut m = Model::default();
    let mut states: HashMap<&str, Option<Value>> = HashMap::new();
    for input in log.iter().flatten() {
        if input.lsn > through {
            break;
        }
        let state = states.entry(input.resource.as_str()).or_default();
        let before = state.clone();
        let failed = match &input.change {
            None => None,
            Some(change) => match model_apply(state, change) {
                Ok(new) => {
                    *state = new;
                    None
                }
                Err(op) => Some(op),
            },
        };
        if let (Some(c), None) = (&input.compensation, &failed) {
            let first = m.compensated.insert(c.compensates, input.lsn);
            assert!(
                first.is_none(),
                "the harness compensated {} twice",
                c.compensates
            );
        }
        m.rows
            .entry(input.resource.clone())
            .or_default()
            .push(ModelRow {
                input: input.clone(),
                before,
                after: state.clone(),
                failed,
            });
    }
    m
}

/// State after every row with lsn <= n, and the last applied change's lsn (a
/// change-less compensation is no change).
fn model_state_at(rows: &[ModelRow], n: u64) -> (Option<Value>, Option<u64>) {
    let mut out = (None, None);
    for r in rows.iter().filter(|r| r.input.lsn <= n) {
        out.0 = r.after.clone();
        if r.failed.is_none() && r.input.change.is_some() {
            out.1 = Some(r.input.lsn);
        }
    }
    out
}

/// The rows of one resource after `point` whose effect is still in the
/// state, ascending: applied, not compensated, and, for a compensation, an
/// odd number of members of its chain after the point (each member toggles
/// the one it undoes; the chain ends at a row that is not an applied
/// compensation, or at an LSN without a row, or at the point).
fn model_live(rows: &[ModelRow], compensated: &BTreeMap<u64, u64>, point: u64) -> Vec<u64> {
    let by_lsn: HashMap<u64, &ModelRow> = rows.iter().map(|r| (r.input.lsn, r)).collect();
    fn after_point(lsn: u64, point: u64, by_lsn: &HashMap<u64, &ModelRow>) -> u64 {
        if lsn <= point {
            return 0;
        }
        match by_lsn.get(&lsn) {
            Some(r) if r.failed.is_none() => match &r.input.compensation {
                Some(c) => 1 + after_point(c.compensates, point, by_lsn),
                None => 1,
            },
            _ => 1,
        }
    }
    rows.iter()
        .filter(|r| r.input.lsn > point && r.failed.is_none())
        .filter(|r| !compensated.contains_key(&r.input.lsn))
        .filter(|r| after_point(r.input.lsn, point, &by_lsn) % 2 == 1)
        .map(|r| r.input.lsn)
        .collect()
}

// ---------------------------------------------------------------- generators

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        prop::sample::select(vec!["x", "y", ""]).prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(prop::sample::select(vec!["a", "b", "c"]), inner, 0..4)
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
        ]
    })
}

fn bad_json() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["{", "[1,", "nul", "", "{\"a\":}", "[] x"]).prop_map(str::to_owned)
}

fn patch_op() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(PATHS.to_vec());
    (
        prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"]),
        path.clone(),
        path,
        value(),
    )
        .prop_map(|(op, path, from, value)| match op {
            "remove" => json!({"op": op, "path": path}),
            "move" | "copy" => json!({"op": op, "from": from, "path": path}),
            _ => json!({"op": op, "path": path, "value": value}),
        })
}

fn change() -> impl Strategy<Value = ChangeInput> {
    prop_oneof![
        4 => value().prop_map(|v| ChangeInput::Set(v.to_string())),
        1 => bad_json().prop_map(ChangeInput::Set),
        4 => prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c"]),
                prop_oneof![Just(Value::Null), value()],
                0..3,
            )
            .prop_map(|m| ChangeInput::MergePatch(json!(m).to_string())),
        1 => value().prop_map(|v| ChangeInput::MergePatch(v.to_string())),
        1 => bad_json().prop_map(ChangeInput::MergePatch),
        5 => prop::collection::vec(patch_op(), 0..4)
            .prop_map(|ops| ChangeInput::JsonPatch(Value::Array(ops).to_string())),
        1 => prop_oneof![
                bad_json(),
                Just(r#"{"op":"add","path":"/a","value":1}"#.to_owned()),
                Just(r#"[{"op":"bogus","path":"/a"}]"#.to_owned()),
                Just(r#"[{"op":"add","path":"a","value":1}]"#.to_owned()),
            ]
            .prop_map(ChangeInput::JsonPatch),
        2 => Just(ChangeInput::Delete),
        // Conditional field changes from a producer: mostly rejected (a
        // `before` that is not there), sometimes applied.
        2 => prop::collection::vec(
                (
                    prop::sample::select(PATHS.to_vec()),
                    prop::option::of(value()),
                    prop::option::of(value()),
                ),
                0..3,
            )
            .prop_map(|fs| ChangeInput::Fields(
                fs.into_iter()
                    .map(|(path, before, after)| FieldChangeText {
                        path: path.to_owned(),
                        before: before.map(|v| v.to_string()),
                        after: after.map(|v| v.to_string()),
                    })
                    .collect()
            )),
        1 => Just(ChangeInput::Fields(vec![FieldChangeText {
                path: "/a".into(),
                before: Some("{".into()),
                after: None,
            }])),
    ]
}

/// What the log's writers do, in order. Records get their LSN (and time)
/// when they reach the log.
#[derive(Debug, Clone)]
enum Op {
    /// A producer's record; `None`: without a state change.
    Record(Option<(usize, ChangeInput)>, i64),
    /// Compensate a random earlier LSN.
    Compensate(u64, UndoMode),
    /// Roll a resource back to a random LSN, or to a random time.
    Rollback(usize, u64, bool),
    /// Compensate again an LSN that is compensated already.
    Repeat(u64, UndoMode),
}

fn mode() -> impl Strategy<Value = UndoMode> {
    prop::sample::select(vec![UndoMode::Refuse, UndoMode::Cascade, UndoMode::Force])
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            6 => (prop::option::weighted(0.85, (0..RESOURCES.len(), change())), 0i64..3)
                .prop_map(|(r, dt)| Op::Record(r, dt)),
            2 => (any::<u64>(), mode()).prop_map(|(p, m)| Op::Compensate(p, m)),
            1 => (0..RESOURCES.len(), any::<u64>(), any::<bool>())
                .prop_map(|(r, p, t)| Op::Rollback(r, p, t)),
            1 => (any::<u64>(), mode()).prop_map(|(p, m)| Op::Repeat(p, m)),
        ],
        1..140,
    )
}

/// The resource a record without a state change names (it has no row, so
/// the model needs it only to compensate it).
fn event_resource(lsn: u64) -> &'static str {
    RESOURCES[(lsn % RESOURCES.len() as u64) as usize]
}

fn record(lsn: u64, t: i64, resource: &str, change: Option<ChangeInput>) -> StateInput {
    StateInput {
        lsn,
        recorded_at_unix_nanos: t,
        actor: format!("actor-{}", lsn % 3),
        action: format!("action-{}", lsn % 4),
        outcome: if lsn.is_multiple_of(5) {
            "failure"
        } else {
            "success"
        }
        .to_owned(),
        resource: resource.to_owned(),
        change,
        compensation: None,
    }
}

#[derive(Debug, Clone)]
enum Step {
    /// Carry out the next n ops: records go to the log and are applied in
    /// one `apply` at the end (or before a compensation is planned, which
    /// needs the store caught up with the log).
    Apply(usize),
    /// Flush, drop, reopen (possibly with another checkpoint interval).
    Restart(u32),
    /// Drop without flushing, reopen, resume from the stored watermark + 1.
    Crash,
    /// Write a snapshot, build a fresh store from it, carry on with that one.
    Restore,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        prop_oneof![
            8 => (1usize..40).prop_map(Step::Apply),
            1 => prop::sample::select(vec![1u32, 2, 3, 7, 64]).prop_map(Step::Restart),
            1 => Just(Step::Crash),
            1 => Just(Step::Restore),
        ],
        1..16,
    )
}

// ---------------------------------------------------------------- the harness

struct Harness {
    root: tempfile::TempDir,
    dir: PathBuf,
    store: Option<StateStore>,
    /// The log so far: LSN = index + 1; `None` is a record without a state
    /// change (or compensation).
    log: Vec<Option<StateInput>>,
    ops: std::vec::IntoIter<Op>,
    /// The time of the last record.
    t: i64,
    /// Resources on which an undo was forced past live later changes: from
    /// then on their undos cannot be predicted without the planner (module
    /// doc of plan.rs), so only consistency is checked.
    tainted: HashSet<String>,
    /// Rejection reasons seen so far: they must not change across restarts.
    reasons: HashMap<u64, String>,
    generation: u32,
    seed: u64,
}

impl Harness {
    fn store(&self) -> &StateStore {
        self.store.as_ref().expect("store is open")
    }

    fn watermark(&self) -> u64 {
        self.store().watermark().unwrap().map_or(0, |w| {
            assert_eq!(w.hash, hash_of(w.lsn), "watermark hash");
            w.lsn
        })
    }

    fn open(&mut self, every: u32) {
        self.store = Some(
            StateStore::open_with(
                &self.dir,
                StoreOptions {
                    checkpoint_every: every,
                    // Off, tiny (entries evicted and refused all the time),
                    // or the default, depending on the interval.
                    head_cache_bytes: match every % 3 {
                        0 => 0,
                        1 => 3000,
                        _ => StoreOptions::default().head_cache_bytes,
                    },
                },
            )
            .expect("reopen"),
        );
    }

    /// Apply the log from the store's watermark on, in one `apply`.
    fn catch_up(&mut self) {
        let next = self.watermark() as usize; // index of LSN watermark + 1
        let end = self.log.len();
        if end == next {
            return;
        }
        let inputs: Vec<StateInput> = self.log[next..end].iter().flatten().cloned().collect();
        let report = self.store().apply(&inputs, wm(end as u64)).expect("apply");
        assert_eq!(report.watermark, wm(end as u64));
        assert_eq!(report.applied + report.rejected.len(), inputs.len());
    }

    /// Carry out the next `n` ops.
    fn run_ops(&mut self, n: usize) {
        for _ in 0..n {
            let Some(op) = self.ops.next() else { break };
            match op {
                Op::Record(r, dt) => {
                    self.t += dt * 1000;
                    let lsn = self.log.len() as u64 + 1;
                    self.log.push(
                        r.map(|(res, change)| record(lsn, self.t, RESOURCES[res], Some(change))),
                    );
                }
                Op::Compensate(pick, mode) => self.compensate(pick, mode),
                Op::Rollback(res, pick, by_time) => self.rollback(RESOURCES[res], pick, by_time),
                Op::Repeat(pick, mode) => self.repeat(pick, mode),
            }
        }
        self.catch_up();
    }

    fn resource_of(&self, lsn: u64) -> String {
        match &self.log[lsn as usize - 1] {
            Some(i) => i.resource.clone(),
            None => event_resource(lsn).to_owned(),
        }
    }

    fn compensate(&mut self, pick: u64, mode: UndoMode) {
        self.catch_up();
        let len = self.log.len() as u64;
        if len == 0 {
            return;
        }
        let target = pick % len + 1;
        let resource = self.resource_of(target);
        let m = model(&self.log, len);
        let rows = m.rows(&resource);
        let got = self.store().plan_compensation(target, &resource, mode);
        let beyond = self.store().plan_compensation(len + 1, &resource, mode);
        assert!(
            matches!(beyond, Err(PlanError::NotApplied { lsn, watermark }) if lsn == len + 1 && watermark == len),
            "{beyond:?}"
        );
        if let Some(&by) = m.compensated.get(&target) {
            assert!(
                matches!(got, Err(PlanError::AlreadyCompensated { lsn, by: b }) if lsn == target && b == by),
                "lsn {target} compensated by {by}: {got:?}"
            );
            return;
        }
        let has_row = rows.iter().any(|r| r.input.lsn == target);
        let live = if has_row {
            model_live(rows, &m.compensated, target)
        } else {
            Vec::new()
        };
        if mode == UndoMode::Refuse && !live.is_empty() {
            match got {
                Err(PlanError::Conflict { lsn, later }) => {
                    assert_eq!(lsn, target);
                    assert_eq!(later.iter().map(|c| c.lsn).collect::<Vec<_>>(), live);
                    for c in &later {
                        let row = rows.iter().find(|r| r.input.lsn == c.lsn).unwrap();
                        assert_eq!((&c.actor, &c.action), (&row.input.actor, &row.input.action));
                    }
                }
                other => panic!("lsn {target}: live later {live:?}, but {other:?}"),
            }
            return;
        }
        let forced_past = mode == UndoMode::Force && !live.is_empty();
        let plan = match got {
            Ok(plan) => plan,
            Err(PlanError::DoesNotApply { .. })
                if forced_past || self.tainted.contains(&resource) =>
            {
                return
            }
            Err(e) => panic!("lsn {target} {mode:?} (live later {live:?}): {e}"),
        };
        let mut expected: Vec<u64> = match mode {
            UndoMode::Cascade => live.iter().rev().copied().collect(),
            _ => Vec::new(),
        };
        expected.push(target);
        assert_eq!(undone(&plan), expected, "lsn {target} {mode:?}");
        self.check_plan(&plan, &m);
        self.carry_out(&plan);
        if !has_row {
            assert_eq!(
                plan.state_after, plan.state_before,
                "lsn {target} has no row"
            );
        } else if !forced_past && !self.tainted.contains(&resource) {
            // Every undo so far restored exactly the state before what it
            // undid, so this one lands on the state before the target.
            let rows = m.rows(&resource);
            assert_eq!(
                plan.state_after,
                model_state_at(rows, target - 1).0,
                "lsn {target} {mode:?}: the state before it"
            );
        }
        if forced_past {
            self.tainted.insert(resource);
        }
    }

    fn rollback(&mut self, resource: &str, pick: u64, by_time: bool) {
        self.catch_up();
        let len = self.log.len() as u64;
        if len == 0 {
            return;
        }
        let m = model(&self.log, len);
        let rows = m.rows(resource);
        let point = if by_time && !rows.is_empty() {
            let row = &rows[(pick % rows.len() as u64) as usize];
            let t = row.input.recorded_at_unix_nanos - ((pick >> 32) % 2) as i64;
            let want = rows
                .iter()
                .filter(|r| r.input.recorded_at_unix_nanos <= t)
                .map(|r| r.input.lsn)
                .max()
                .unwrap_or(0);
            let got = self
                .store()
                .last_lsn_at_or_before_time(resource, t)
                .unwrap();
            assert_eq!(got, want, "{resource}: last row at or before time {t}");
            got
        } else {
            pick % (len + 1)
        };
        let live = model_live(rows, &m.compensated, point);
        let plan = match self.store().plan_rollback(resource, point) {
            Ok(plan) => plan,
            Err(PlanError::DoesNotApply { .. }) if self.tainted.contains(resource) => return,
            Err(e) => panic!("{resource} rollback to {point} (live {live:?}): {e}"),
        };
        assert_eq!(
            undone(&plan),
            live.iter().rev().copied().collect::<Vec<_>>(),
            "{resource} rollback to {point}"
        );
        self.check_plan(&plan, &m);
        self.carry_out(&plan);
        if !self.tainted.contains(resource) {
            assert_eq!(
                plan.state_after,
                model_state_at(rows, point).0,
                "{resource} rollback to {point}"
            );
        }
    }

    fn repeat(&mut self, pick: u64, mode: UndoMode) {
        self.catch_up();
        let m = model(&self.log, self.log.len() as u64);
        if m.compensated.is_empty() {
            return;
        }
        let i = (pick % m.compensated.len() as u64) as usize;
        let (&target, &by) = m.compensated.iter().nth(i).unwrap();
        let resource = self.resource_of(target);
        let got = self.store().plan_compensation(target, &resource, mode);
        assert!(
            matches!(got, Err(PlanError::AlreadyCompensated { lsn, by: b }) if lsn == target && b == by),
            "repeat of {target} (by {by}): {got:?}"
        );
    }

    /// What a plan says against the model, before it is carried out.
    fn check_plan(&self, plan: &Plan, m: &Model) {
        let len = self.log.len() as u64;
        assert_eq!(plan.based_on, wm(len));
        let rows = m.rows(&plan.resource);
        assert_eq!(plan.state_before, model_state_at(rows, len).0);
        for step in &plan.steps {
            match rows.iter().find(|r| r.input.lsn == step.undoes) {
                Some(row) => {
                    assert_eq!(
                        (&step.actor, &step.action),
                        (&row.input.actor, &row.input.action)
                    );
                    let nothing = row.failed.is_some() || row.before == row.after;
                    assert_eq!(step.change.is_none(), nothing, "step {}", step.undoes);
                }
                None => {
                    assert!(step.change.is_none() && step.actor.is_empty());
                }
            }
        }
        if plan.steps.is_empty() {
            assert_eq!(plan.state_after, plan.state_before);
        }
    }

    /// Append the plan's records after its watermark, apply them, and check
    /// the store lands on every predicted state.
    fn carry_out(&mut self, plan: &Plan) {
        let first = self.log.len() as u64 + 1;
        assert_eq!(first, plan.based_on.lsn + 1);
        for (i, step) in plan.steps.iter().enumerate() {
            let lsn = first + i as u64;
            let mut r = record(lsn, self.t, &plan.resource, step.change_input());
            r.compensation = Some(CompensationInput {
                compensates: step.undoes,
                reason: format!("undo {} for the test", step.undoes),
            });
            self.log.push(Some(r));
        }
        self.catch_up();
        let store = self.store();
        for (i, step) in plan.steps.iter().enumerate() {
            let lsn = first + i as u64;
            let got = store.state(&plan.resource, Some(lsn)).unwrap().state;
            assert_eq!(got, step.state_after, "after step {i} (lsn {lsn})");
            assert_eq!(store.compensated_by(step.undoes).unwrap(), Some(lsn));
        }
        let now = store.state(&plan.resource, None).unwrap().state;
        assert_eq!(now, plan.state_after, "state after the plan");
        let len = self.log.len() as u64;
        let m = model(&self.log, len);
        assert_eq!(model_state_at(m.rows(&plan.resource), len).0, now);
    }

    fn restore(&mut self) {
        let snaps = self.root.path().join("snaps");
        if self.store().watermark().unwrap().is_none() {
            return;
        }
        let info = self.store().write_snapshot(&snaps).expect("snapshot");
        self.generation += 1;
        let dir = self.root.path().join(format!("store-{}", self.generation));
        let (loaded, skipped) = load_newest_snapshot(&snaps, &dir).expect("load");
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(loaded.expect("a snapshot").watermark, info.watermark);
        self.store = None;
        self.dir = dir;
        self.open(5);
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64: cheap, deterministic per case.
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn check(&mut self) {
        let w = self.watermark();
        let m = model(&self.log, w);
        for resource in RESOURCES {
            self.check_resource(resource, m.rows(resource), w, &m.compensated);
        }
        let pairs: Vec<(u64, u64)> = m.compensated.iter().map(|(&t, &c)| (t, c)).collect();
        let store = self.store();
        assert_eq!(store.compensations_between(0, u64::MAX).unwrap(), pairs);
        if let Some(&(t, c)) = pairs.get(pairs.len() / 2) {
            assert_eq!(store.compensations_between(t, t).unwrap(), [(t, c)]);
            assert_eq!(store.compensated_by(t).unwrap(), Some(c));
        }
    }

    fn check_resource(
        &mut self,
        resource: &str,
        rows: &[ModelRow],
        w: u64,
        compensated: &BTreeMap<u64, u64>,
    ) {
        let store = self.store.as_ref().expect("open");
        // Now.
        let now = store.state(resource, None).unwrap();
        let (state, last) = model_state_at(rows, w);
        assert_eq!(
            (now.state, now.last_change_lsn),
            (state, last),
            "{resource} now"
        );
        assert_eq!(now.watermark.map(|x| x.lsn), (w > 0).then_some(w));

        // As of LSNs: the edges, every row's LSN and its predecessor, a few random.
        let mut lsns = vec![0, 1, w, w + 1];
        for r in rows {
            lsns.push(r.input.lsn);
            lsns.push(r.input.lsn - 1);
        }
        for _ in 0..4 {
            lsns.push(self.next_rand() % (w + 2));
        }
        let store = self.store.as_ref().expect("open");
        for n in lsns {
            let got = store.state(resource, Some(n)).unwrap();
            assert_eq!(
                (got.state, got.last_change_lsn),
                model_state_at(rows, n),
                "{resource} at lsn {n}"
            );
        }

        // As of times: each row's time, just before it, and far out.
        let mut times = vec![i64::MIN, i64::MAX];
        for r in rows {
            times.push(r.input.recorded_at_unix_nanos);
            times.push(r.input.recorded_at_unix_nanos - 1);
        }
        for t in times {
            let through = rows
                .iter()
                .filter(|r| r.input.recorded_at_unix_nanos <= t)
                .map(|r| r.input.lsn)
                .max()
                .unwrap_or(0);
            let got = store.state_at_time(resource, t).unwrap();
            assert_eq!(
                (got.state, got.last_change_lsn),
                model_state_at(rows, through),
                "{resource} at time {t}"
            );
        }

        // Full history, row by row.
        let history = store.history(resource, 0, u64::MAX, usize::MAX).unwrap();
        assert_eq!(history.len(), rows.len(), "{resource} history length");
        for (h, m) in history.iter().zip(rows) {
            let i = &m.input;
            assert_eq!(
                (
                    h.lsn,
                    h.recorded_at_unix_nanos,
                    &h.actor,
                    &h.action,
                    &h.outcome,
                    h.kind
                ),
                (
                    i.lsn,
                    i.recorded_at_unix_nanos,
                    &i.actor,
                    &i.action,
                    &i.outcome,
                    kind(&i.change)
                ),
                "{resource} row {}",
                i.lsn
            );
            assert_eq!(
                (h.compensates, h.reason.as_ref(), h.compensated_by),
                (
                    i.compensation.as_ref().map(|c| c.compensates),
                    i.compensation.as_ref().map(|c| &c.reason),
                    compensated.get(&i.lsn).copied()
                ),
                "{resource} row {} compensation",
                i.lsn
            );
            match (&h.result, &m.failed) {
                (ChangeResult::Applied { fields }, None) => {
                    check_fields(fields, &m.before, &m.after, i.lsn)
                }
                (ChangeResult::Rejected { reason }, Some(op)) => {
                    assert!(!reason.is_empty());
                    if h.kind == ChangeKind::Fields {
                        assert!(reason.starts_with("fields: "), "lsn {}: {reason:?}", i.lsn);
                    }
                    if let Some(op) = op {
                        let prefix = format!("json patch op {op} (");
                        assert!(
                            reason.starts_with(&prefix),
                            "lsn {}: {reason:?} vs op {op}",
                            i.lsn
                        );
                    }
                    let seen = self.reasons.entry(i.lsn).or_insert_with(|| reason.clone());
                    assert_eq!(seen, reason, "lsn {}: reason changed", i.lsn);
                }
                (got, want) => panic!("lsn {}: store {got:?}, model failed={want:?}", i.lsn),
            }
        }

        // A window of it, paged.
        if !rows.is_empty() {
            let a = rows[(self.next_rand() as usize) % rows.len()].input.lsn;
            let limit = 1 + (self.next_rand() % 5) as usize;
            let page = self.store().history(resource, a, u64::MAX, limit).unwrap();
            let want: Vec<u64> = rows
                .iter()
                .map(|r| r.input.lsn)
                .filter(|&l| l >= a)
                .take(limit)
                .collect();
            assert_eq!(page.iter().map(|h| h.lsn).collect::<Vec<_>>(), want);
        }
    }
}

fn kind(c: &Option<ChangeInput>) -> ChangeKind {
    match c {
        Some(ChangeInput::Set(_)) => ChangeKind::Set,
        Some(ChangeInput::MergePatch(_)) => ChangeKind::MergePatch,
        Some(ChangeInput::JsonPatch(_)) => ChangeKind::JsonPatch,
        Some(ChangeInput::Delete) => ChangeKind::Delete,
        Some(ChangeInput::Fields(_)) => ChangeKind::Fields,
        None => ChangeKind::None,
    }
}

fn undone(plan: &Plan) -> Vec<u64> {
    plan.steps.iter().map(|s| s.undoes).collect()
}

/// Field changes must be exact both ways, and take the simple shapes the
/// contract promises when a side is absent or nothing changed.
fn check_fields(fields: &[FieldChange], before: &Option<Value>, after: &Option<Value>, lsn: u64) {
    match (before, after) {
        (a, b) if a == b => assert!(fields.is_empty(), "lsn {lsn}: no change but {fields:?}"),
        (None, _) | (_, None) => {
            assert_eq!(
                fields,
                [FieldChange::root(before.clone(), after.clone())],
                "lsn {lsn}"
            )
        }
        _ => {}
    }
    assert_eq!(
        &replay(before.clone(), fields, Direction::Forward).unwrap(),
        after,
        "lsn {lsn} forward"
    );
    assert_eq!(
        &replay(after.clone(), fields, Direction::Inverse).unwrap(),
        before,
        "lsn {lsn} inverse"
    );
}

fn run(ops: Vec<Op>, steps: Vec<Step>, every: u32, seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store-0");
    let mut h = Harness {
        root,
        dir,
        store: None,
        log: Vec::new(),
        ops: ops.into_iter(),
        t: 1_700_000_000_000_000_000,
        tainted: HashSet::new(),
        reasons: HashMap::new(),
        generation: 0,
        seed,
    };
    h.open(every);
    h.check();
    for step in steps {
        match step {
            Step::Apply(n) => h.run_ops(n),
            Step::Restart(every) => {
                h.store().flush().unwrap();
                h.store = None;
                h.open(every);
            }
            Step::Crash => {
                h.store = None;
                h.open(every);
            }
            Step::Restore => h.restore(),
        }
        h.check();
    }
    // The writers finish, and the driver catches up with the whole log.
    h.run_ops(usize::MAX);
    assert_eq!(h.watermark(), h.log.len() as u64);
    h.check();
    let stats = h.store().stats().unwrap();
    let inputs = h.log.iter().flatten().count() as u64;
    assert_eq!(stats.history_entries, inputs);
    let resources = RESOURCES
        .iter()
        .filter(|r| h.log.iter().flatten().any(|i| i.resource == **r))
        .count() as u64;
    assert_eq!(stats.resources, resources);
    let _: &Path = h.store().dir();
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(
        ops in ops(),
        steps in steps(),
        every in prop::sample::select(vec![1u32, 2, 3, 5, 64]),
        seed in any::<u64>(),
    ) {
        run(ops, steps, every, seed);
    }
}

//! Model-based test: random logs of state changes over a few resources, fed to
//! the store in random batches with restarts, crashes and restores from
//! snapshots in between, checked after every step against a reference model
//! that replays the log with `json_patch` directly.
//!
//! Cases: 16 by default (the file runs in well under a minute in debug). Set
//! `PROPTEST_CASES=N` for more, e.g. `PROPTEST_CASES=2000 cargo test --release
//! -p trail-state --test model`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{hash_of, wm};
use proptest::prelude::*;
use serde_json::{json, Value};
use trail_state::{
    load_newest_snapshot, replay, ChangeInput, ChangeKind, ChangeResult, Direction, FieldChange,
    StateInput, StateStore, StoreOptions,
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

fn model_rows(log: &[Option<StateInput>], through: u64, resource: &str) -> Vec<ModelRow> {
    let mut state = None;
    let mut rows = Vec::new();
    for input in log.iter().flatten() {
        if input.lsn > through || input.resource != resource {
            continue;
        }
        let before = state.clone();
        let failed = match model_apply(&state, &input.change) {
            Ok(new) => {
                state = new;
                None
            }
            Err(op) => Some(op),
        };
        rows.push(ModelRow {
            input: input.clone(),
            before,
            after: state.clone(),
            failed,
        });
    }
    rows
}

/// State after every row with lsn <= n, and the last applied change's lsn.
fn model_state_at(rows: &[ModelRow], n: u64) -> (Option<Value>, Option<u64>) {
    let mut out = (None, None);
    for r in rows.iter().filter(|r| r.input.lsn <= n) {
        out.0 = r.after.clone();
        if r.failed.is_none() {
            out.1 = Some(r.input.lsn);
        }
    }
    out
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
    ]
}

/// A log: LSN = index + 1; `None` is a record without a state change.
fn log() -> impl Strategy<Value = Vec<Option<StateInput>>> {
    prop::collection::vec(
        prop_oneof![
            1 => Just(None),
            6 => (0..RESOURCES.len(), change(), 0i64..3).prop_map(Some),
        ],
        1..140,
    )
    .prop_map(|recs| {
        let mut t = 1_700_000_000_000_000_000i64;
        recs.into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.map(|(res, change, dt)| {
                    t += dt * 1000;
                    let lsn = i as u64 + 1;
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
                        resource: RESOURCES[res].to_owned(),
                        change,
                    }
                })
            })
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Step {
    /// Apply the next n log records in one `apply`.
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
    log: Vec<Option<StateInput>>,
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

    fn apply(&mut self, n: usize) {
        let next = self.watermark() as usize; // index of LSN watermark + 1
        let end = (next + n).min(self.log.len());
        if end == next {
            return;
        }
        let inputs: Vec<StateInput> = self.log[next..end].iter().flatten().cloned().collect();
        let report = self.store().apply(&inputs, wm(end as u64)).expect("apply");
        assert_eq!(report.watermark, wm(end as u64));
        assert_eq!(report.applied + report.rejected.len(), inputs.len());
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
        for resource in RESOURCES {
            let rows = model_rows(&self.log, w, resource);
            self.check_resource(resource, &rows, w);
        }
    }

    fn check_resource(&mut self, resource: &str, rows: &[ModelRow], w: u64) {
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
            match (&h.result, &m.failed) {
                (ChangeResult::Applied { fields }, None) => {
                    check_fields(fields, &m.before, &m.after, i.lsn)
                }
                (ChangeResult::Rejected { reason }, Some(op)) => {
                    assert!(!reason.is_empty());
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

fn kind(c: &ChangeInput) -> ChangeKind {
    match c {
        ChangeInput::Set(_) => ChangeKind::Set,
        ChangeInput::MergePatch(_) => ChangeKind::MergePatch,
        ChangeInput::JsonPatch(_) => ChangeKind::JsonPatch,
        ChangeInput::Delete => ChangeKind::Delete,
    }
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

fn run(log: Vec<Option<StateInput>>, steps: Vec<Step>, every: u32, seed: u64) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store-0");
    let mut h = Harness {
        root,
        dir,
        store: None,
        log,
        reasons: HashMap::new(),
        generation: 0,
        seed,
    };
    h.open(every);
    h.check();
    for step in steps {
        match step {
            Step::Apply(n) => h.apply(n),
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
    // The driver catches up with the whole log at the end.
    h.apply(usize::MAX / 2);
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
        log in log(),
        steps in steps(),
        every in prop::sample::select(vec![1u32, 2, 3, 5, 64]),
        seed in any::<u64>(),
    ) {
        run(log, steps, every, seed);
    }
}

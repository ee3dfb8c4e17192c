//! Compensation: applying compensation records, the 50-keys, and planning
//! (FORMAT.md 12.7), case by case. The model test covers random mixes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{input, merge, set, wm};
use serde_json::{json, Value};
use trail_state::{
    ChangeInput, ChangeKind, ChangeResult, CompensationInput, FieldChangeText, Plan, PlanError,
    StateError, StateInput, StateStore, UndoMode,
};

const R: &str = "order/1";

fn store() -> (tempfile::TempDir, StateStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    (tmp, store)
}

fn compensation(lsn: u64, of: u64, change: Option<ChangeInput>) -> StateInput {
    let mut i = input(lsn, lsn as i64, R, merge("{}"));
    i.change = change;
    i.compensation = Some(CompensationInput {
        compensates: of,
        reason: format!("undo {of}"),
    });
    i
}

/// Append the plan's records right after its watermark, as the server does,
/// and check the store ends where the plan said.
fn carry_out(store: &StateStore, plan: &Plan) {
    let first = plan.based_on.lsn + 1;
    let inputs: Vec<StateInput> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| compensation(first + i as u64, s.undoes, s.change_input()))
        .collect();
    let through = plan.based_on.lsn + inputs.len() as u64;
    let report = store.apply(&inputs, wm(through)).unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    assert_eq!(state(store), plan.state_after);
}

fn state(store: &StateStore) -> Option<Value> {
    store.state(R, None).unwrap().state
}

fn lsns(plan: &Plan) -> Vec<u64> {
    plan.steps.iter().map(|s| s.undoes).collect()
}

/// 1: set {a:1}; 2: {b:2}; 3: {a:3}; all of R.
fn three(store: &StateStore) {
    store
        .apply(
            &[
                input(1, 1, R, set(r#"{"a":1}"#)),
                input(2, 2, R, merge(r#"{"b":2}"#)),
                input(3, 3, R, merge(r#"{"a":3}"#)),
            ],
            wm(3),
        )
        .unwrap();
}

#[test]
fn fields_apply_strictly_and_rejections_say_where() {
    let (_tmp, store) = store();
    three(&store);
    let f = |path: &str, before: Option<&str>, after: Option<&str>| FieldChangeText {
        path: path.into(),
        before: before.map(str::to_owned),
        after: after.map(str::to_owned),
    };
    let ok = input(
        4,
        4,
        R,
        ChangeInput::Fields(vec![f("/a", Some("3"), Some("4"))]),
    );
    let stale = input(
        5,
        5,
        R,
        ChangeInput::Fields(vec![f("/a", Some("3"), Some("5"))]),
    );
    let report = store.apply(&[ok, stale], wm(5)).unwrap();
    assert_eq!(report.applied, 1);
    assert_eq!(
        report.rejected[0].reason,
        r#"fields: field change 0 ("/a"): the value there is not the expected one"#
    );
    assert_eq!(state(&store), Some(json!({"a": 4, "b": 2})));
    let h = store.history(R, 4, 5, 10).unwrap();
    assert_eq!(
        (h[0].kind, h[1].kind),
        (ChangeKind::Fields, ChangeKind::Fields)
    );
    assert!(matches!(h[1].result, ChangeResult::Rejected { .. }));
    assert_eq!(store.state(R, None).unwrap().last_change_lsn, Some(4));
}

#[test]
fn compensation_rows_keys_and_history() {
    let (_tmp, store) = store();
    three(&store);
    // 4 marks 2 compensated without a change: the store does not check that
    // a compensation carries the inverse (the planner's job), only records.
    store.apply(&[compensation(4, 2, None)], wm(4)).unwrap();
    assert_eq!(store.compensated_by(2).unwrap(), Some(4));
    assert_eq!(store.compensated_by(3).unwrap(), None);
    let h = store.history(R, 0, u64::MAX, 10).unwrap();
    assert_eq!(h.len(), 4);
    assert_eq!(h[1].compensated_by, Some(4));
    let c = &h[3];
    assert_eq!(
        (c.kind, c.compensates, c.reason.as_deref(), c.compensated_by),
        (ChangeKind::None, Some(2), Some("undo 2"), None)
    );
    assert_eq!(c.result, ChangeResult::Applied { fields: vec![] });
    // A change-less compensation is no change.
    assert_eq!(store.state(R, None).unwrap().last_change_lsn, Some(3));
    assert_eq!(store.state(R, Some(4)).unwrap().last_change_lsn, Some(3));
    assert_eq!(store.compensations_between(0, 10).unwrap(), [(2, 4)]);
    assert_eq!(store.compensations_between(3, 10).unwrap(), []);
    assert_eq!(store.compensations_between(5, 1).unwrap(), []);

    // Twice: refused, nothing written (also within one batch).
    match store.apply(&[compensation(5, 2, None)], wm(5)) {
        Err(StateError::CompensatedTwice {
            target: 2,
            first: 4,
            second: 5,
        }) => {}
        other => panic!("{other:?}"),
    }
    match store.apply(&[compensation(5, 1, None), compensation(6, 1, None)], wm(6)) {
        Err(StateError::CompensatedTwice {
            target: 1,
            first: 5,
            second: 6,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.watermark().unwrap(), Some(wm(4)));
    assert_eq!(store.compensated_by(1).unwrap(), None);

    // Inputs that cannot be: no change and no compensation; a compensation
    // of itself or of the future.
    let mut none = input(5, 5, R, merge("{}"));
    none.change = None;
    assert!(matches!(
        store.apply(&[none], wm(5)),
        Err(StateError::NoChange { lsn: 5, .. })
    ));
    assert!(matches!(
        store.apply(&[compensation(5, 5, None)], wm(5)),
        Err(StateError::CompensationNotBefore {
            lsn: 5,
            compensates: 5
        })
    ));

    // A compensation whose inverse no longer applies is a rejected row and
    // compensates nothing: the target stays open.
    let stale = ChangeInput::Fields(vec![FieldChangeText {
        path: "/a".into(),
        before: Some("1".into()),
        after: None,
    }]);
    let report = store
        .apply(&[compensation(5, 1, Some(stale))], wm(5))
        .unwrap();
    assert_eq!(report.rejected.len(), 1);
    assert_eq!(store.compensated_by(1).unwrap(), None);
    let row = &store.history(R, 5, 5, 1).unwrap()[0];
    assert_eq!(row.compensates, Some(1));
    assert!(matches!(row.result, ChangeResult::Rejected { .. }));
}

#[test]
fn refuse_cascade_force() {
    let (_tmp, store) = store();
    three(&store);
    // Undo 2 ({b:2}): 3 is a later change of R.
    match store.plan_compensation(2, R, UndoMode::Refuse) {
        Err(PlanError::Conflict { lsn: 2, later }) => {
            assert_eq!(later.len(), 1);
            assert_eq!((later[0].lsn, later[0].actor.as_str()), (3, "actor-0"));
        }
        other => panic!("{other:?}"),
    }
    let err = store.plan_compensation(2, R, UndoMode::Refuse).unwrap_err();
    assert!(
        err.to_string().contains("lsn 3 (actor-0 action-3)"),
        "{err}"
    );

    // Force: 3 touched `a` only, so undoing 2 still applies.
    let force = store.plan_compensation(2, R, UndoMode::Force).unwrap();
    assert_eq!(lsns(&force), [2]);
    assert_eq!(force.based_on, wm(3));
    assert_eq!(force.state_before, Some(json!({"a": 3, "b": 2})));
    assert_eq!(force.state_after, Some(json!({"a": 3})));

    // Cascade: 3 then 2, back to the state before 2.
    let cascade = store.plan_compensation(2, R, UndoMode::Cascade).unwrap();
    assert_eq!(lsns(&cascade), [3, 2]);
    assert_eq!(cascade.steps[0].state_after, Some(json!({"a": 1, "b": 2})));
    assert_eq!(cascade.state_after, Some(json!({"a": 1})));
    // Planning wrote nothing.
    assert_eq!(store.watermark().unwrap(), Some(wm(3)));
    carry_out(&store, &cascade);
    assert_eq!(store.compensated_by(3).unwrap(), Some(4));
    assert_eq!(store.compensated_by(2).unwrap(), Some(5));

    // Now 1 has no live later rows: 2, 3 are compensated, 4 and 5 net out.
    let plan = store.plan_compensation(1, R, UndoMode::Refuse).unwrap();
    assert_eq!(lsns(&plan), [1]);
    assert_eq!(plan.state_after, None);
    match store.plan_compensation(2, R, UndoMode::Cascade) {
        Err(PlanError::AlreadyCompensated { lsn: 2, by: 5 }) => {}
        other => panic!("{other:?}"),
    }
    match store.plan_compensation(6, R, UndoMode::Cascade) {
        Err(PlanError::NotApplied {
            lsn: 6,
            watermark: 5,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn force_refuses_when_the_inverse_no_longer_applies() {
    let (_tmp, store) = store();
    three(&store);
    match store.plan_compensation(1, R, UndoMode::Force) {
        Err(PlanError::DoesNotApply { lsn: 1, reason }) => {
            assert!(reason.contains("not the expected one"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn parity_of_compensation_chains() {
    let (_tmp, store) = store();
    three(&store);
    // O = 3, C = 4 undoes it: after 2 they net out, so 2 may be undone.
    let undo3 = store.plan_compensation(3, R, UndoMode::Refuse).unwrap();
    carry_out(&store, &undo3);
    let plan = store.plan_compensation(2, R, UndoMode::Refuse).unwrap();
    assert_eq!(lsns(&plan), [2]);
    // D = 5 undoes C (redoes 3): O, C, D is odd, 3's change is back.
    let redo = store.plan_compensation(4, R, UndoMode::Refuse).unwrap();
    assert_eq!(redo.state_after, Some(json!({"a": 3, "b": 2})));
    carry_out(&store, &redo);
    match store.plan_compensation(2, R, UndoMode::Refuse) {
        Err(PlanError::Conflict { later, .. }) => {
            assert_eq!(later.iter().map(|c| c.lsn).collect::<Vec<_>>(), [5])
        }
        other => panic!("{other:?}"),
    }
    // Cascade undoes D (re-undoes 3), then 2.
    let cascade = store.plan_compensation(2, R, UndoMode::Cascade).unwrap();
    assert_eq!(lsns(&cascade), [5, 2]);
    assert_eq!(cascade.state_after, Some(json!({"a": 1})));
    carry_out(&store, &cascade);
    // A compensation of something at or before the point is a real change
    // after it: rolling back to 4 undoes 7 (of 2). 5 (redo of 3, undoing 4)
    // and 6 (undoing 5) net out after 4, though 5's chain reaches back to 3.
    let rollback = store.plan_rollback(R, 4).unwrap();
    assert_eq!(lsns(&rollback), [7]);
    assert_eq!(rollback.state_after, store.state(R, Some(4)).unwrap().state);
    carry_out(&store, &rollback);
}

#[test]
fn compensating_a_compensation_redoes() {
    let (_tmp, store) = store();
    three(&store);
    let undo = store.plan_compensation(3, R, UndoMode::Refuse).unwrap();
    carry_out(&store, &undo);
    assert_eq!(state(&store), Some(json!({"a": 1, "b": 2})));
    let redo = store.plan_compensation(4, R, UndoMode::Refuse).unwrap();
    assert_eq!(lsns(&redo), [4]);
    carry_out(&store, &redo);
    assert_eq!(state(&store), Some(json!({"a": 3, "b": 2})));
    let h = store.history(R, 4, 5, 10).unwrap();
    assert_eq!(
        (h[0].compensates, h[0].compensated_by, h[1].compensates),
        (Some(3), Some(5), Some(4))
    );
}

#[test]
fn an_event_without_a_change_or_row() {
    let (_tmp, store) = store();
    three(&store);
    store.apply(&[], wm(5)).unwrap(); // 4 and 5: records without a change
    let plan = store.plan_compensation(4, R, UndoMode::Refuse).unwrap();
    assert_eq!(plan.steps.len(), 1);
    let step = &plan.steps[0];
    assert_eq!((step.undoes, step.change.is_none()), (4, true));
    assert_eq!(plan.state_after, plan.state_before);
    carry_out(&store, &plan);
    assert_eq!(store.compensated_by(4).unwrap(), Some(6));
    // The change-less compensation after the point nets out with its event.
    assert_eq!(lsns(&store.plan_rollback(R, 3).unwrap()), Vec::<u64>::new());
    // ... and is a change after a point before it.
    assert_eq!(lsns(&store.plan_rollback(R, 5).unwrap()), [6]);
}

#[test]
fn rollback_by_time() {
    let (_tmp, store) = store();
    let t = |lsn: u64| 100 * lsn as i64;
    let inputs: Vec<_> = (1..=10)
        .map(|l| input(l, t(l), R, merge(&format!(r#"{{"n":{l}}}"#))))
        .collect();
    store.apply(&inputs, wm(10)).unwrap();
    assert_eq!(store.last_lsn_at_or_before_time(R, t(4)).unwrap(), 4);
    assert_eq!(store.last_lsn_at_or_before_time(R, t(4) + 99).unwrap(), 4);
    assert_eq!(store.last_lsn_at_or_before_time(R, t(1) - 1).unwrap(), 0);
    assert_eq!(store.last_lsn_at_or_before_time(R, i64::MAX).unwrap(), 10);
    assert_eq!(store.last_lsn_at_or_before_time("nobody", 0).unwrap(), 0);
    let point = store.last_lsn_at_or_before_time(R, t(6) + 50).unwrap();
    let plan = store.plan_rollback(R, point).unwrap();
    assert_eq!(lsns(&plan), [10, 9, 8, 7]);
    assert_eq!(plan.state_after, Some(json!({"n": 6})));
    let plan = store.plan_rollback(R, 10).unwrap();
    assert!(plan.steps.is_empty());
    assert_eq!(plan.state_after, plan.state_before);
    assert!(matches!(
        store.plan_rollback(R, 11),
        Err(PlanError::NotApplied { lsn: 11, .. })
    ));
    // With checkpoints every 2 rows, the seek lands on one.
    let tmp = tempfile::tempdir().unwrap();
    let small = StateStore::open_with(
        tmp.path().join("s"),
        trail_state::StoreOptions {
            checkpoint_every: 2,
            ..Default::default()
        },
    )
    .unwrap();
    small.apply(&inputs, wm(10)).unwrap();
    for l in 1..=10 {
        assert_eq!(small.last_lsn_at_or_before_time(R, t(l)).unwrap(), l);
        assert_eq!(
            small.last_lsn_at_or_before_time(R, t(l) - 1).unwrap(),
            l - 1
        );
    }
}

#[test]
fn an_empty_store_plans_nothing() {
    let (_tmp, store) = store();
    assert!(matches!(
        store.plan_rollback(R, 0),
        Err(PlanError::NotApplied {
            lsn: 0,
            watermark: 0
        })
    ));
    assert!(matches!(
        store.plan_compensation(1, R, UndoMode::Force),
        Err(PlanError::NotApplied { lsn: 1, .. })
    ));
}

//! Field-level changes: what one change did to a state, as JSON pointers with
//! the value before and after, and how to replay them either way.
//!
//! History shows these to people, `state()` replays them forward from a
//! checkpoint, and compensation replays them backward to build an inverse, so
//! they must be exact: [`field_changes`] only returns a list that provably
//! turns `before` into `after` and back again.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

use crate::error::{ReplayError, ReplayProblem};

/// One field's change. `path` is a JSON pointer (RFC 6901); `""` is the whole
/// state. `None` means absent: a key that does not exist, or (at `""`) no state.
///
/// Changes in a list apply in order, each to the result of the previous one,
/// so an array index means the index at that moment (like RFC 6902).
/// `before = None` inserts (an object key, or an array element, shifting the
/// rest); `after = None` removes; both set replaces.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldChange {
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

impl FieldChange {
    /// The change of the whole state, used when either side is absent and as
    /// the fallback when a diff would not replay exactly.
    pub fn root(before: Option<Value>, after: Option<Value>) -> FieldChange {
        FieldChange {
            path: String::new(),
            before,
            after,
        }
    }
}

/// Which way to replay a list of field changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `before` -> `after`, first change first.
    Forward,
    /// `after` -> `before`, last change first: the inverse (compensation).
    Inverse,
}

/// The field changes that turn `before` into `after` (empty if equal).
///
/// Computed with `json_patch::diff`, reading each side's value by pointer from
/// the document as it is at that step. Guard: the list must replay `before`
/// to exactly `after` and `after` back to exactly `before`; if not (array
/// corner cases), one root change is returned instead, which always replays.
pub fn field_changes(before: &Option<Value>, after: &Option<Value>) -> Vec<FieldChange> {
    match (before, after) {
        (None, None) => Vec::new(),
        (Some(b), Some(a)) if b == a => Vec::new(),
        (Some(b), Some(a)) => match diff_fields(b, a) {
            Some(fields) if replays_exactly(b, a, &fields) => fields,
            _ => vec![FieldChange::root(before.clone(), after.clone())],
        },
        _ => vec![FieldChange::root(before.clone(), after.clone())],
    }
}

fn diff_fields(before: &Value, after: &Value) -> Option<Vec<FieldChange>> {
    let ops = json_patch::diff(before, after);
    let mut work = before.clone();
    let mut fields = Vec::with_capacity(ops.0.len());
    for op in ops.0 {
        let path = op.path().as_str().to_owned();
        let (was, now) = match &op {
            // An add into an array inserts, so there was nothing "before" at that
            // index even if an element sits there now; into an object it may
            // overwrite a key.
            PatchOperation::Add(add) => {
                let into_array = add
                    .path
                    .split_back()
                    .and_then(|(parent, _)| work.pointer(parent.as_str()))
                    .is_some_and(Value::is_array);
                let was = if into_array {
                    None
                } else {
                    work.pointer(&path).cloned()
                };
                (was, Some(add.value.clone()))
            }
            PatchOperation::Replace(rep) => (work.pointer(&path).cloned(), Some(rep.value.clone())),
            PatchOperation::Remove(_) => (work.pointer(&path).cloned(), None),
            // diff emits only add, replace and remove; anything else is not ours to
            // interpret, so fall back to a root change.
            _ => return None,
        };
        json_patch::patch_unsafe(&mut work, std::slice::from_ref(&op)).ok()?;
        fields.push(FieldChange {
            path,
            before: was,
            after: now,
        });
    }
    Some(fields)
}

fn replays_exactly(before: &Value, after: &Value, fields: &[FieldChange]) -> bool {
    let forward = replay(Some(before.clone()), fields, Direction::Forward);
    let inverse = replay(Some(after.clone()), fields, Direction::Inverse);
    matches!(forward, Ok(Some(ref v)) if v == after)
        && matches!(inverse, Ok(Some(ref v)) if v == before)
}

/// Swap each change's sides and reverse the order: the list that undoes `fields`.
pub fn invert(fields: &[FieldChange]) -> Vec<FieldChange> {
    fields
        .iter()
        .rev()
        .map(|f| FieldChange {
            path: f.path.clone(),
            before: f.after.clone(),
            after: f.before.clone(),
        })
        .collect()
}

/// Replay `fields` on `state`, strictly: every change must find the value it
/// expects (its `before`, or its `after` for [`Direction::Inverse`]) before it
/// is applied, so a replay on a state that has moved on fails instead of
/// producing a blend. The patching itself is `json_patch`'s.
pub fn replay(
    mut state: Option<Value>,
    fields: &[FieldChange],
    direction: Direction,
) -> Result<Option<Value>, ReplayError> {
    let mut step = |index: usize, field: &FieldChange| {
        let (from, to) = match direction {
            Direction::Forward => (field.before.as_ref(), field.after.as_ref()),
            Direction::Inverse => (field.after.as_ref(), field.before.as_ref()),
        };
        apply_one(&mut state, &field.path, from, to).map_err(|problem| ReplayError {
            index,
            path: field.path.clone(),
            problem,
        })
    };
    match direction {
        Direction::Forward => {
            for (i, f) in fields.iter().enumerate() {
                step(i, f)?;
            }
        }
        Direction::Inverse => {
            for (i, f) in fields.iter().enumerate().rev() {
                step(i, f)?;
            }
        }
    }
    Ok(state)
}

fn apply_one(
    state: &mut Option<Value>,
    path: &str,
    from: Option<&Value>,
    to: Option<&Value>,
) -> Result<(), ReplayProblem> {
    if path.is_empty() {
        // The whole state, which may be absent on either side: not expressible
        // as a JSON patch, so it is a plain swap after the same check.
        if state.as_ref() != from {
            return Err(ReplayProblem::Mismatch);
        }
        *state = to.cloned();
        return Ok(());
    }
    let doc = state.as_mut().ok_or(ReplayProblem::StateAbsent)?;
    let pointer = PointerBuf::parse(path).map_err(|_| ReplayProblem::InvalidPath)?;
    let op = match (from, to) {
        (None, None) => return Err(ReplayProblem::Empty),
        (None, Some(value)) => {
            let parent = pointer
                .split_back()
                .and_then(|(parent, _)| doc.pointer(parent.as_str()));
            if let Some(Value::Object(_)) = parent {
                if doc.pointer(path).is_some() {
                    return Err(ReplayProblem::Occupied);
                }
            }
            PatchOperation::Add(AddOperation {
                path: pointer,
                value: value.clone(),
            })
        }
        (Some(expected), Some(value)) => {
            if doc.pointer(path) != Some(expected) {
                return Err(ReplayProblem::Mismatch);
            }
            PatchOperation::Replace(ReplaceOperation {
                path: pointer,
                value: value.clone(),
            })
        }
        (Some(expected), None) => {
            if doc.pointer(path) != Some(expected) {
                return Err(ReplayProblem::Mismatch);
            }
            PatchOperation::Remove(RemoveOperation { path: pointer })
        }
    };
    // patch_unsafe: a single operation needs no undo log, and it avoids the
    // undo path of `json_patch::patch`, which panics if an undo fails.
    json_patch::patch_unsafe(doc, std::slice::from_ref(&op))
        .map_err(|e| ReplayProblem::Patch(e.kind.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn round_trip(before: Value, after: Value) -> Vec<FieldChange> {
        let (b, a) = (Some(before), Some(after));
        let fields = field_changes(&b, &a);
        assert_eq!(replay(b.clone(), &fields, Direction::Forward).unwrap(), a);
        assert_eq!(replay(a.clone(), &fields, Direction::Inverse).unwrap(), b);
        assert_eq!(replay(a, &invert(&fields), Direction::Forward).unwrap(), b);
        fields
    }

    #[test]
    fn object_fields_by_pointer() {
        let f = round_trip(
            json!({"a": 1, "b": {"c": 2}}),
            json!({"a": 2, "b": {}, "d": [1]}),
        );
        assert_eq!(
            f,
            vec![
                FieldChange {
                    path: "/a".into(),
                    before: Some(json!(1)),
                    after: Some(json!(2))
                },
                FieldChange {
                    path: "/b/c".into(),
                    before: Some(json!(2)),
                    after: None
                },
                FieldChange {
                    path: "/d".into(),
                    before: None,
                    after: Some(json!([1]))
                },
            ]
        );
    }

    #[test]
    fn arrays_shrinking_and_growing_replay() {
        let f = round_trip(json!([1, 2, 3, 4]), json!([1]));
        assert_eq!(f.len(), 3);
        round_trip(json!([1]), json!([1, 2, 3]));
        round_trip(json!({"x": [[1, 2], 3]}), json!({"x": [[1], 3, 4]}));
        round_trip(json!({"a~/b": 1}), json!({"a~/b": 2, "": 3}));
        let f = round_trip(json!([1]), json!({"a": 1}));
        assert_eq!(
            f,
            vec![FieldChange::root(Some(json!([1])), Some(json!({"a": 1})))]
        );
    }

    #[test]
    fn absent_sides_are_one_root_change() {
        let f = field_changes(&None, &Some(json!(1)));
        assert_eq!(f, vec![FieldChange::root(None, Some(json!(1)))]);
        assert_eq!(
            replay(Some(json!(1)), &f, Direction::Inverse).unwrap(),
            None
        );
        assert!(field_changes(&None, &None).is_empty());
    }

    #[test]
    fn strict_replay_refuses_a_moved_state() {
        let f = field_changes(&Some(json!({"a": 1})), &Some(json!({"a": 2})));
        let err = replay(Some(json!({"a": 5})), &f, Direction::Forward).unwrap_err();
        assert_eq!(err.problem, ReplayProblem::Mismatch);
        assert_eq!(err.path, "/a");
    }
}

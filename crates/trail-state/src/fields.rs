//! Field-level changes: what one change did to a state, as JSON pointers with
//! the value before and after, and how to replay them either way.
//!
//! History shows these to people, `state()` replays them forward from a
//! checkpoint, and compensation replays them backward to build an inverse, so
//! they must be exact: [`field_changes`] only returns a list that provably
//! turns `before` into `after` and back again.

use std::borrow::Cow;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
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
            Some((fields, work)) if work == *a => {
                // What `inverse_replays_exactly` relies on, checked in tests.
                debug_assert!(
                    matches!(replay(Some(b.clone()), &fields, Direction::Forward), Ok(Some(ref v)) if *v == work),
                    "forward replay differs from the diff's own result"
                );
                if inverse_replays_exactly(b, fields.as_slice(), work) {
                    fields
                } else {
                    vec![FieldChange::root(before.clone(), after.clone())]
                }
            }
            _ => vec![FieldChange::root(before.clone(), after.clone())],
        },
        _ => vec![FieldChange::root(before.clone(), after.clone())],
    }
}

/// The fields, and the document they produce when each is applied with
/// `json_patch` in turn (what a forward replay of them produces, see
/// `replays_exactly`).
fn diff_fields(before: &Value, after: &Value) -> Option<(Vec<FieldChange>, Value)> {
    let ops = diff(before, after);
    let mut work = before.clone();
    let mut fields = Vec::with_capacity(ops.len());
    for op in ops {
        let (path, was, now) = match op {
            // json_patch's replace is `pointer_mut` and `mem::replace`; done here
            // so the old value moves out rather than being copied first.
            DiffOp::Replace(path, value) => {
                let target = lookup_mut(&mut work, &path)?;
                let was = std::mem::replace(target, value.clone());
                fields.push(FieldChange {
                    path,
                    before: Some(was),
                    after: Some(value),
                });
                continue;
            }
            // An add into an array inserts, so there was nothing "before" at that
            // index even if an element sits there now; into an object it may
            // overwrite a key.
            DiffOp::Add(path, value) => {
                let pointer = PointerBuf::parse(path.as_str()).ok()?;
                let into_array = pointer
                    .split_back()
                    .and_then(|(parent, _)| lookup(&work, parent.as_str()))
                    .is_some_and(Value::is_array);
                let was = if into_array {
                    None
                } else {
                    lookup(&work, &path).cloned()
                };
                let op = PatchOperation::Add(AddOperation {
                    path: pointer,
                    value: value.clone(),
                });
                json_patch::patch_unsafe(&mut work, std::slice::from_ref(&op)).ok()?;
                (path, was, Some(value))
            }
            DiffOp::Remove(path) => {
                let pointer = PointerBuf::parse(path.as_str()).ok()?;
                let was = lookup(&work, &path).cloned();
                let op = PatchOperation::Remove(RemoveOperation { path: pointer });
                json_patch::patch_unsafe(&mut work, std::slice::from_ref(&op)).ok()?;
                (path, was, None)
            }
        };
        fields.push(FieldChange {
            path,
            before: was,
            after: now,
        });
    }
    Some((fields, work))
}

/// One operation of a diff, its path an encoded JSON pointer.
#[derive(Debug, PartialEq)]
enum DiffOp {
    Add(String, Value),
    Remove(String),
    Replace(String, Value),
}

/// `json_patch::diff`, operation for operation (same order, paths and
/// values), without its pointer bookkeeping (a `PointerBuf` whose every
/// `pop_back` allocates). Checked against it in debug builds.
fn diff(before: &Value, after: &Value) -> Vec<DiffOp> {
    let mut ops = Vec::new();
    diff_value(before, after, &mut String::new(), &mut ops);
    #[cfg(debug_assertions)]
    {
        let theirs: Vec<DiffOp> = json_patch::diff(before, after)
            .0
            .into_iter()
            .map(|op| match op {
                PatchOperation::Add(o) => DiffOp::Add(o.path.to_string(), o.value),
                PatchOperation::Remove(o) => DiffOp::Remove(o.path.to_string()),
                PatchOperation::Replace(o) => DiffOp::Replace(o.path.to_string(), o.value),
                other => panic!("json_patch::diff emitted {other:?}"),
            })
            .collect();
        debug_assert_eq!(ops, theirs, "diff differs from json_patch::diff");
    }
    ops
}

fn diff_value(left: &Value, right: &Value, path: &mut String, ops: &mut Vec<DiffOp>) {
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (key, right_value) in r {
                let len = path.len();
                push_key(path, key);
                match l.get(key) {
                    Some(left_value) => diff_value(left_value, right_value, path, ops),
                    None => ops.push(DiffOp::Add(path.clone(), right_value.clone())),
                }
                path.truncate(len);
            }
            for key in l.keys() {
                if !r.contains_key(key) {
                    let len = path.len();
                    push_key(path, key);
                    ops.push(DiffOp::Remove(path.clone()));
                    path.truncate(len);
                }
            }
        }
        (Value::Array(l), Value::Array(r)) => {
            let mut shift = 0usize;
            for idx in 0..l.len().max(r.len()) {
                let len = path.len();
                path.push('/');
                path.push_str(&(idx - shift).to_string());
                match (l.get(idx), r.get(idx)) {
                    (Some(left_value), Some(right_value)) => {
                        diff_value(left_value, right_value, path, ops);
                    }
                    (Some(_), None) => {
                        shift += 1;
                        ops.push(DiffOp::Remove(path.clone()));
                    }
                    (None, Some(right_value)) => {
                        ops.push(DiffOp::Add(path.clone(), right_value.clone()));
                    }
                    (None, None) => {}
                }
                path.truncate(len);
            }
        }
        _ if left == right => {}
        _ => ops.push(DiffOp::Replace(path.clone(), right.clone())),
    }
}

/// Append `/key`, escaped as RFC 6901 says (`~` as `~0`, `/` as `~1`).
fn push_key(path: &mut String, key: &str) {
    path.push('/');
    if key.contains(['~', '/']) {
        for c in key.chars() {
            match c {
                '~' => path.push_str("~0"),
                '/' => path.push_str("~1"),
                c => path.push(c),
            }
        }
    } else {
        path.push_str(key);
    }
}

/// The guard of [`field_changes`]: the fields must replay `before` to exactly
/// `after` and back. The forward half is the caller's `work == after`: `work`
/// is the document `diff_fields` built by applying each field's operation in
/// turn, and a forward [`replay`] of the fields does the same steps on the
/// same documents (each field's `before` was read from that document just
/// before its step, so every strict check passes, and an add onto an existing
/// object key is replayed as the replace it amounts to), so it produces
/// exactly `work`. The inverse half replays from `after` (`work`, moved).
fn inverse_replays_exactly(before: &Value, fields: &[FieldChange], after: Value) -> bool {
    matches!(replay(Some(after), fields, Direction::Inverse), Ok(Some(ref v)) if v == before)
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
                .and_then(|(parent, _)| lookup(doc, parent.as_str()));
            if let Some(Value::Object(_)) = parent {
                if lookup(doc, path).is_some() {
                    return Err(ReplayProblem::Occupied);
                }
            }
            PatchOperation::Add(AddOperation {
                path: pointer,
                value: value.clone(),
            })
        }
        (Some(expected), Some(value)) => {
            // A replace of a value just found: json_patch's replace is
            // `pointer_mut` and `mem::replace`, which cannot fail here.
            let target = lookup_mut(doc, path)
                .filter(|target| **target == *expected)
                .ok_or(ReplayProblem::Mismatch)?;
            *target = value.clone();
            return Ok(());
        }
        (Some(expected), None) => {
            if lookup(doc, path) != Some(expected) {
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

/// One JSON-pointer token unescaped (RFC 6901: `~1` is `/`, `~0` is `~`),
/// copied only when it holds a `~`.
fn unescape(raw: &str) -> Cow<'_, str> {
    if raw.contains('~') {
        Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(raw)
    }
}

/// `Value::pointer` without its two allocations per token (it unescapes every
/// token with `str::replace`; here only tokens with a `~` are copied), with
/// the same result: same split, same unescaping, same array index rules.
fn lookup<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    let found = if pointer.is_empty() {
        Some(doc)
    } else {
        pointer.strip_prefix('/').and_then(|rest| {
            rest.split('/').try_fold(doc, |target, raw| {
                let token = unescape(raw);
                match target {
                    Value::Object(map) => map.get(token.as_ref()),
                    Value::Array(list) => parse_index(&token).and_then(|i| list.get(i)),
                    _ => None,
                }
            })
        })
    };
    debug_assert!(
        found.map(std::ptr::from_ref) == doc.pointer(pointer).map(std::ptr::from_ref),
        "lookup({pointer:?}) differs from Value::pointer"
    );
    found
}

/// `Value::pointer_mut` as [`lookup`] is `Value::pointer`.
fn lookup_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    #[cfg(debug_assertions)]
    let expected = doc.pointer(pointer).map(std::ptr::from_ref);
    let found = if pointer.is_empty() {
        Some(doc)
    } else {
        pointer.strip_prefix('/').and_then(|rest| {
            rest.split('/').try_fold(doc, |target, raw| {
                let token = unescape(raw);
                match target {
                    Value::Object(map) => map.get_mut(token.as_ref()),
                    Value::Array(list) => parse_index(&token).and_then(|i| list.get_mut(i)),
                    _ => None,
                }
            })
        })
    };
    #[cfg(debug_assertions)]
    debug_assert!(
        found.as_deref().map(std::ptr::from_ref) == expected,
        "lookup_mut({pointer:?}) differs from Value::pointer_mut"
    );
    found
}

/// serde_json's array index rule for pointers: digits, no sign, no leading zero.
fn parse_index(s: &str) -> Option<usize> {
    if s.starts_with('+') || (s.starts_with('0') && s.len() != 1) {
        return None;
    }
    s.parse().ok()
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
    fn diff_is_json_patch_diff() {
        let pairs = [
            (
                json!({"a/b": [1, {"~": 2}], "x": 1}),
                json!({"a/b": [1, {"~": 3}, 4], "y": null}),
            ),
            (json!([[1, 2], {"k": [3]}]), json!([[2], {"k": []}, "s"])),
            (json!({"": {"": 1}}), json!({"": {"": [1]}})),
            (json!(1), json!("1")),
            (json!({"a": 1}), json!({"a": 1})),
        ];
        for (b, a) in pairs {
            let theirs: Vec<String> = json_patch::diff(&b, &a)
                .0
                .iter()
                .map(|op| format!("{op:?}"))
                .collect();
            let ours = diff(&b, &a);
            assert_eq!(ours.len(), theirs.len(), "{b} -> {a}");
            round_trip(b, a);
        }
    }

    #[test]
    fn lookup_is_value_pointer() {
        let doc = json!({"a/b": 1, "~0": 2, "~": {"": [1, {"x": 3}]}, "": 4, "0": [5, 6]});
        for p in [
            "", "/", "a", "/a~1b", "/~00", "/~0", "/~0/", "/~0//1/x", "/~0//01", "/~0//+1",
            "/~0//-", "/0/1", "/0/2", "/0/1/x", "/~2", "/a~1b/0",
        ] {
            assert_eq!(lookup(&doc, p), doc.pointer(p), "{p:?}");
            let mut copy = doc.clone();
            let expected = copy.pointer_mut(p).cloned();
            assert_eq!(lookup_mut(&mut copy, p).cloned(), expected, "{p:?}");
        }
    }

    #[test]
    fn strict_replay_refuses_a_moved_state() {
        let f = field_changes(&Some(json!({"a": 1})), &Some(json!({"a": 2})));
        let err = replay(Some(json!({"a": 5})), &f, Direction::Forward).unwrap_err();
        assert_eq!(err.problem, ReplayProblem::Mismatch);
        assert_eq!(err.path, "/a");
    }
}

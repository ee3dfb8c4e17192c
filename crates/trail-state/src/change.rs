//! Applying one change to a state: the only place that decides what a change
//! does and why it is rejected. Pure and deterministic: the same state and
//! input always give the same outcome and the same reason text.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use crate::fields::{field_changes, replay, Direction, FieldChange};
use crate::input::{ChangeInput, FieldChangeText};

/// What a change did.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Applied {
        state: Option<Value>,
        fields: Vec<FieldChange>,
    },
    Rejected {
        reason: String,
    },
    /// No change was asked for (a change-less compensation).
    Unchanged,
}

/// Apply `change` to `current`. A change that cannot apply is a rejection with
/// its reason, never an error: it is a fact about the log, recorded in history.
///
/// Merge and JSON patches always produce a state, even when the document they
/// produce is JSON `null` (a patch applied to an absent state starts from
/// `null`, as RFC 7396 and this store's contract say); only `Delete` makes a
/// state absent.
pub(crate) fn apply_change(current: &Option<Value>, change: &ChangeInput) -> Outcome {
    let new = match change {
        ChangeInput::Set(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) => Some(v),
            Err(e) => return rejected(format!("set: invalid JSON: {e}")),
        },
        ChangeInput::MergePatch(text) => match serde_json::from_str::<Value>(text) {
            Ok(patch) => {
                let mut doc = current.clone().unwrap_or(Value::Null);
                json_patch::merge(&mut doc, &patch);
                Some(doc)
            }
            Err(e) => return rejected(format!("merge patch: invalid JSON: {e}")),
        },
        ChangeInput::JsonPatch(text) => match json_patch_on(current, text) {
            Ok(doc) => Some(doc),
            Err(reason) => return rejected(reason),
        },
        ChangeInput::Delete => None,
        ChangeInput::Fields(texts) => match fields_on(current, texts) {
            Ok(state) => state,
            Err(reason) => return rejected(reason),
        },
    };
    // For `Fields` too: the row keeps the canonical diff rather than the
    // fields as sent, so every applied row replays exactly both ways (12.4)
    // whatever list a producer sent (`-` indexes, repeated paths, no-ops).
    let fields = field_changes(current, &new);
    Outcome::Applied { state: new, fields }
}

fn rejected(reason: String) -> Outcome {
    Outcome::Rejected { reason }
}

/// Parse every field change first (so an invalid document is named by
/// index, before any is applied), then replay them strictly forward.
fn fields_on(current: &Option<Value>, texts: &[FieldChangeText]) -> Result<Option<Value>, String> {
    let parse = |i: usize, path: &str, side: &str, text: &Option<String>| {
        text.as_deref()
            .map(serde_json::from_str::<Value>)
            .transpose()
            .map_err(|e| format!("fields: change {i} ({path:?}): {side} is not JSON: {e}"))
    };
    let mut fields = Vec::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        fields.push(FieldChange {
            before: parse(i, &t.path, "before", &t.before)?,
            after: parse(i, &t.path, "after", &t.after)?,
            path: t.path.clone(),
        });
    }
    replay(current.clone(), &fields, Direction::Forward).map_err(|e| format!("fields: {e}"))
}

fn json_patch_on(current: &Option<Value>, text: &str) -> Result<Value, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("json patch: invalid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(format!(
            "json patch: expected an array of operations, found {}",
            json_type(&value)
        ));
    };
    // Parse op by op so the reason names the operation that is malformed.
    let mut ops = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let op: PatchOperation = serde_json::from_value(item)
            .map_err(|e| format!("json patch op {i}: not an operation: {e}"))?;
        ops.push(op);
    }
    // Patch a copy with patch_unsafe: a failure discards the copy, so no undo is
    // needed, and json_patch's undo path (which can panic) is never taken.
    let mut doc = current.clone().unwrap_or(Value::Null);
    json_patch::patch_unsafe(&mut doc, &ops).map_err(|e| {
        let what = ops
            .get(e.operation)
            .map(describe_op)
            .unwrap_or_else(|| e.path.to_string());
        format!(
            "json patch op {} ({what}): {}",
            e.operation,
            describe_kind(&e.kind)
        )
    })?;
    Ok(doc)
}

fn describe_op(op: &PatchOperation) -> String {
    match op {
        PatchOperation::Add(o) => format!("add {}", o.path),
        PatchOperation::Remove(o) => format!("remove {}", o.path),
        PatchOperation::Replace(o) => format!("replace {}", o.path),
        PatchOperation::Move(o) => format!("move {} to {}", o.from, o.path),
        PatchOperation::Copy(o) => format!("copy {} to {}", o.from, o.path),
        PatchOperation::Test(o) => format!("test {}", o.path),
    }
}

fn describe_kind(kind: &PatchErrorKind) -> String {
    match kind {
        PatchErrorKind::TestFailed => "test failed: the value did not match".to_owned(),
        PatchErrorKind::InvalidFromPointer => "from path not found".to_owned(),
        PatchErrorKind::InvalidPointer => "path not found".to_owned(),
        PatchErrorKind::CannotMoveInsideItself => "cannot move a value inside itself".to_owned(),
        #[allow(unreachable_patterns)] // the enum is non_exhaustive upstream
        other => other.to_string(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn reason(o: Outcome) -> String {
        match o {
            Outcome::Rejected { reason } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn rejections_name_the_operation() {
        let s = Some(json!({"a": 1}));
        let p = r#"[{"op":"test","path":"/a","value":1},{"op":"add","path":"/b","value":2},{"op":"replace","path":"/status","value":3}]"#;
        assert_eq!(
            reason(apply_change(&s, &ChangeInput::JsonPatch(p.into()))),
            "json patch op 2 (replace /status): path not found"
        );
        assert!(
            reason(apply_change(&s, &ChangeInput::JsonPatch("{}".into())))
                .contains("expected an array")
        );
        assert!(reason(apply_change(
            &s,
            &ChangeInput::JsonPatch(r#"[{"op":"x"}]"#.into())
        ))
        .starts_with("json patch op 0: not an operation"));
        assert!(reason(apply_change(&s, &ChangeInput::Set("{".into())))
            .starts_with("set: invalid JSON"));
    }

    fn text(path: &str, before: Option<&str>, after: Option<&str>) -> FieldChangeText {
        FieldChangeText {
            path: path.into(),
            before: before.map(str::to_owned),
            after: after.map(str::to_owned),
        }
    }

    #[test]
    fn fields_apply_strictly_or_are_rejected_with_the_place() {
        let s = Some(json!({"a": 1, "b": [1, 2]}));
        let ok = ChangeInput::Fields(vec![
            text("/a", Some("1"), Some("2")),
            text("/c", None, Some(r#"{"d":true}"#)),
            text("/b/0", Some("1"), None),
        ]);
        match apply_change(&s, &ok) {
            Outcome::Applied { state, fields } => {
                let want = Some(json!({"a": 2, "b": [2], "c": {"d": true}}));
                assert_eq!(state, want);
                // The canonical diff is kept, not the list as sent.
                assert_eq!(fields, field_changes(&s, &want));
            }
            other => panic!("{other:?}"),
        }
        // The before of change 1 is not what the state holds.
        let stale = ChangeInput::Fields(vec![
            text("/a", Some("1"), Some("2")),
            text("/b/1", Some("3"), Some("4")),
        ]);
        assert_eq!(
            reason(apply_change(&s, &stale)),
            r#"fields: field change 1 ("/b/1"): the value there is not the expected one"#
        );
        // Insert over an existing key.
        let occupied = ChangeInput::Fields(vec![text("/a", None, Some("5"))]);
        assert_eq!(
            reason(apply_change(&s, &occupied)),
            r#"fields: field change 0 ("/a"): expected no value there, but one exists"#
        );
        assert_eq!(
            reason(apply_change(&None, &occupied)),
            r#"fields: field change 0 ("/a"): the state is absent"#
        );
        let bad = ChangeInput::Fields(vec![
            text("/a", Some("1"), Some("2")),
            text("/x", None, Some("{")),
        ]);
        assert!(reason(apply_change(&s, &bad))
            .starts_with(r#"fields: change 1 ("/x"): after is not JSON"#));
        // Whole-state changes, either side absent.
        let create = ChangeInput::Fields(vec![text("", None, Some("[1]"))]);
        assert!(matches!(
            apply_change(&None, &create),
            Outcome::Applied { state: Some(_), .. }
        ));
        let delete = ChangeInput::Fields(vec![text("", Some(r#"{"b":[1,2],"a":1}"#), None)]);
        assert!(matches!(
            apply_change(&s, &delete),
            Outcome::Applied { state: None, .. }
        ));
        // No fields: applied, nothing changed.
        assert_eq!(
            apply_change(&s, &ChangeInput::Fields(vec![])),
            Outcome::Applied {
                state: s.clone(),
                fields: vec![]
            }
        );
    }

    #[test]
    fn patches_on_absent_start_from_null() {
        let o = apply_change(
            &None,
            &ChangeInput::MergePatch(r#"{"a":1,"b":null}"#.into()),
        );
        assert_eq!(
            o,
            Outcome::Applied {
                state: Some(json!({"a": 1})),
                fields: vec![FieldChange::root(None, Some(json!({"a": 1})))]
            }
        );
        let o = apply_change(
            &None,
            &ChangeInput::JsonPatch(r#"[{"op":"add","path":"/a","value":1}]"#.into()),
        );
        assert!(matches!(o, Outcome::Rejected { .. }));
        let o = apply_change(&None, &ChangeInput::Delete);
        assert_eq!(
            o,
            Outcome::Applied {
                state: None,
                fields: vec![]
            }
        );
    }
}

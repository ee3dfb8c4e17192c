//! Applying one change to a state: the only place that decides what a change
//! does and why it is rejected. Pure and deterministic: the same state and
//! input always give the same outcome and the same reason text.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use crate::fields::{field_changes, FieldChange};
use crate::input::ChangeInput;

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
    };
    let fields = field_changes(current, &new);
    Outcome::Applied { state: new, fields }
}

fn rejected(reason: String) -> Outcome {
    Outcome::Rejected { reason }
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

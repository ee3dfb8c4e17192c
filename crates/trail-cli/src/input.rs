//! Events as the CLI takes them: JSON lines using the proto's field names.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use trail_proto::v1::{state_change::Kind, Event, Outcome, StateChange};

/// One JSON line of `trail append --file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventLine {
    #[serde(default)]
    pub event_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub trace_id: String,
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub occurred_at_unix_nanos: Option<i64>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Any JSON value; sent as its JSON text.
    #[serde(default)]
    pub payload: Option<serde_json::Value>,
    #[serde(default)]
    pub change: Option<ChangeLine>,
}

/// `{"set": V}`, `{"merge_patch": V}`, `{"json_patch": [ops]}` or `{"delete": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum ChangeLine {
    Set(serde_json::Value),
    MergePatch(serde_json::Value),
    JsonPatch(Vec<serde_json::Value>),
    Delete(bool),
}

/// Parses an outcome name: `success`, `failure`, `denied` (or the proto's
/// `OUTCOME_SUCCESS` spelling).
///
/// # Errors
/// The name is not one of those.
pub fn parse_outcome(text: &str) -> Result<Outcome, String> {
    let lower = text.to_ascii_lowercase();
    match lower.strip_prefix("outcome_").unwrap_or(&lower) {
        "success" => Ok(Outcome::Success),
        "failure" => Ok(Outcome::Failure),
        "denied" => Ok(Outcome::Denied),
        _ => Err(format!(
            "outcome {text:?} is not one of success, failure, denied"
        )),
    }
}

/// Parses a JSON value (`--set-json`, `--merge-patch`); a clap value
/// parser, so a bad value is a usage error naming its flag.
///
/// # Errors
/// The text is not JSON, with where it stops being JSON.
pub fn parse_json_value(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))
}

/// Parses a JSON Patch (`--json-patch`): an array of operations, each an
/// object naming its `op` (the server checks the rest).
///
/// # Errors
/// Not JSON, not an array, or an element that is not an operation.
pub fn parse_json_patch(text: &str) -> Result<JsonPatch, String> {
    let serde_json::Value::Array(operations) = parse_json_value(text)? else {
        return Err(
            "a JSON Patch is an array of operations, e.g. [{\"op\":\"remove\",\"path\":\"/x\"}]"
                .to_owned(),
        );
    };
    for (index, operation) in operations.iter().enumerate() {
        if !operation
            .get("op")
            .is_some_and(serde_json::Value::is_string)
        {
            return Err(format!(
                "operation {index} is not an object with an \"op\" (add, remove, replace, move, copy, test)"
            ));
        }
    }
    Ok(JsonPatch(operations))
}

/// A JSON Patch's operations (`--json-patch`), checked by [`parse_json_patch`].
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPatch(pub Vec<serde_json::Value>);

/// Now, in unix nanoseconds.
#[must_use]
pub fn now_unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// An event id for events given without one: time plus a per-process counter.
#[must_use]
pub fn generated_event_id(sequence: u64) -> String {
    format!("cli-{}-{}-{sequence}", now_unix_nanos(), std::process::id())
}

fn json_text(value: &serde_json::Value) -> Result<String, String> {
    serde_json::to_string(value).map_err(|error| format!("cannot encode JSON: {error}"))
}

impl EventLine {
    /// The event this line describes; `occurred_at_default` stands in for a
    /// missing `occurred_at_unix_nanos`.
    ///
    /// # Errors
    /// A bad outcome or change, described.
    pub fn into_event(self, sequence: u64, occurred_at_default: i64) -> Result<Event, String> {
        let outcome = parse_outcome(self.outcome.as_deref().unwrap_or("success"))?;
        let payload = match &self.payload {
            None => Vec::new(),
            Some(value) => json_text(value)?.into_bytes(),
        };
        let change = match self.change {
            None => None,
            Some(ChangeLine::Set(value)) => Some(Kind::SetJson(json_text(&value)?)),
            Some(ChangeLine::MergePatch(value)) => Some(Kind::MergePatchJson(json_text(&value)?)),
            Some(ChangeLine::JsonPatch(operations)) => Some(Kind::JsonPatchJson(json_text(
                &serde_json::Value::Array(operations),
            )?)),
            Some(ChangeLine::Delete(true)) => Some(Kind::Delete(true)),
            Some(ChangeLine::Delete(false)) => {
                return Err(
                    "change: {\"delete\": false} means nothing; leave change out".to_owned(),
                )
            }
        };
        Ok(Event {
            event_id: self
                .event_id
                .unwrap_or_else(|| generated_event_id(sequence)),
            actor: self.actor,
            action: self.action,
            resource: self.resource,
            trace_id: self.trace_id,
            outcome: outcome as i32,
            occurred_at_unix_nanos: self.occurred_at_unix_nanos.unwrap_or(occurred_at_default),
            attributes: self.attributes,
            payload,
            change: change.map(|kind| StateChange { kind: Some(kind) }),
            compensation: None,
        })
    }
}

/// Parses one JSON line into an event. A line without
/// `occurred_at_unix_nanos` gets 0 (not "now"), so appending the same file
/// twice sends the same content and the retry returns the original receipts.
///
/// # Errors
/// What is wrong with the line.
pub fn parse_line(line: &str, sequence: u64) -> Result<Event, String> {
    let parsed: EventLine = serde_json::from_str(line).map_err(|error| error.to_string())?;
    parsed.into_event(sequence, 0)
}

/// An event as a JSON object with every field (for `read --json`).
#[must_use]
pub fn event_to_json(event: &Event) -> serde_json::Value {
    let outcome = Outcome::try_from(event.outcome).map_or_else(
        |_| event.outcome.to_string(),
        |outcome| outcome_name(outcome).to_owned(),
    );
    let payload = if event.payload.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&event.payload)
            .unwrap_or_else(|_| serde_json::json!({ "hex": hex::encode(&event.payload) }))
    };
    let change = event
        .change
        .as_ref()
        .and_then(|change| change.kind.as_ref())
        .map(|kind| {
            let parse = |text: &str| {
                serde_json::from_str(text)
                    .unwrap_or_else(|_| serde_json::Value::String(text.to_owned()))
            };
            match kind {
                Kind::SetJson(text) => serde_json::json!({ "set": parse(text) }),
                Kind::MergePatchJson(text) => serde_json::json!({ "merge_patch": parse(text) }),
                Kind::JsonPatchJson(text) => serde_json::json!({ "json_patch": parse(text) }),
                Kind::Delete(delete) => serde_json::json!({ "delete": delete }),
                Kind::FieldChanges(fields) => serde_json::json!({
                    "field_changes": fields
                        .changes
                        .iter()
                        .map(|field| {
                            let mut value = serde_json::json!({ "path": field.path });
                            if let Some(before) = &field.before_json {
                                value["before"] = parse(before);
                            }
                            if let Some(after) = &field.after_json {
                                value["after"] = parse(after);
                            }
                            value
                        })
                        .collect::<Vec<_>>()
                }),
            }
        });
    let mut json = serde_json::json!({
        "event_id": event.event_id,
        "actor": event.actor,
        "action": event.action,
        "resource": event.resource,
        "trace_id": event.trace_id,
        "outcome": outcome,
        "occurred_at_unix_nanos": event.occurred_at_unix_nanos,
        "attributes": event.attributes,
        "payload": payload,
        "change": change,
    });
    // Only compensation records carry a note; other events' JSON is as it was.
    if let Some(note) = &event.compensation {
        json["compensation"] = serde_json::json!({
            "reason": note.reason,
            "mode": note.mode,
            "requested_lsn": note.requested_lsn,
        });
    }
    json
}

/// The CLI's name for an outcome.
#[must_use]
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Unspecified => "unspecified",
        Outcome::Success => "success",
        Outcome::Failure => "failure",
        Outcome::Denied => "denied",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_line_round_trips_to_json() -> Result<(), String> {
        let line = r#"{"event_id":"e1","actor":"a","action":"b","resource":"r","outcome":"denied","payload":{"x":[1,2]},"change":{"json_patch":[{"op":"remove","path":"/x"}]},"attributes":{"k":"v"}}"#;
        let event = parse_line(line, 0)?;
        assert_eq!(event.outcome, Outcome::Denied as i32);
        assert_eq!(event.payload, br#"{"x":[1,2]}"#.to_vec());
        let json = event_to_json(&event);
        assert_eq!(json["payload"]["x"][1], 2);
        assert_eq!(json["change"]["json_patch"][0]["op"], "remove");
        assert_eq!(json["outcome"], "denied");
        Ok(())
    }

    #[test]
    fn change_flag_values_are_checked() {
        assert_eq!(
            parse_json_value(r#"{"a": [1, null]}"#),
            Ok(serde_json::json!({"a": [1, null]}))
        );
        assert_eq!(parse_json_value("3"), Ok(serde_json::json!(3)));
        assert!(parse_json_value("{a: 1}").is_err_and(|error| error.starts_with("not JSON: ")));
        assert!(parse_json_value("").is_err());
        assert_eq!(
            parse_json_patch(r#"[{"op":"remove","path":"/x"}]"#),
            Ok(JsonPatch(vec![
                serde_json::json!({"op": "remove", "path": "/x"})
            ]))
        );
        assert_eq!(parse_json_patch("[]"), Ok(JsonPatch(Vec::new())));
        assert!(parse_json_patch(r#"{"op":"remove","path":"/x"}"#)
            .is_err_and(|error| error.contains("array of operations")));
        assert!(parse_json_patch(r#"[{"op":"remove"}, {"path":"/x"}]"#)
            .is_err_and(|error| error.starts_with("operation 1 ")));
        assert!(parse_json_patch("[1]").is_err_and(|error| error.starts_with("operation 0 ")));
    }

    #[test]
    fn unknown_fields_and_bad_changes_are_refused() {
        assert!(parse_line(r#"{"actor":"a","action":"b","resource":"r","actr":"x"}"#, 0).is_err());
        assert!(parse_line(
            r#"{"actor":"a","action":"b","resource":"r","change":{"sett":1}}"#,
            0
        )
        .is_err());
        assert!(parse_line(
            r#"{"actor":"a","action":"b","resource":"r","outcome":"maybe"}"#,
            0
        )
        .is_err());
        assert!(parse_line(
            r#"{"actor":"a","action":"b","resource":"r","change":{"json_patch":{}}}"#,
            0
        )
        .is_err());
    }
}

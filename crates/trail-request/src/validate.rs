//! Checks what a client sends before any of it reaches the log. Every refusal
//! names the field (`events[3].actor`) and, for a limit, the limit's
//! configuration key, so the client knows exactly what to change.
//!
//! One rule for codes: anything over a configured size or count limit is
//! RESOURCE_EXHAUSTED, `<what> is <size> <unit>; the limit is <limit>
//! (limits.<key>)` (see [`over_limit`]); content that is wrong whatever the
//! limits (empty, not JSON, a control character, a repeated id) is
//! INVALID_ARGUMENT.

use std::collections::HashSet;

use prost::Message;
use tonic::Status;
use trail_log::LogName;
use trail_proto::v1::{state_change::Kind, Event, Outcome, StateChange};

use crate::limits::Limits;

/// The event-id prefix Trail keeps for the records it appends itself
/// (compensations: `trail:compensates:<lsn>`); producers may not use it.
pub const RESERVED_EVENT_ID_PREFIX: &str = "trail:";

/// Parses the `log` field of a request; empty means `default`.
///
/// # Errors
/// INVALID_ARGUMENT naming `log` and what is wrong with it.
pub fn log_name(name: &str) -> Result<LogName, Status> {
    LogName::new(name).map_err(|error| Status::invalid_argument(format!("log: {error}")))
}

/// Checks one append request's events: count, each event, and that no event
/// id repeats within the request.
///
/// # Errors
/// INVALID_ARGUMENT or RESOURCE_EXHAUSTED naming the first bad field.
pub fn append_events(events: &[Event], limits: &Limits) -> Result<(), Status> {
    event_count(events.len(), limits)?;
    let mut seen = HashSet::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        event_fields(index, event, limits)?;
        unique_id(index, event, &mut seen)?;
    }
    Ok(())
}

/// Checks one append request's events as the server receives them: each the
/// `trail.v1.Event` exactly as the producer encoded it. Checks the count, each
/// event's encoded size (before decoding it), that it decodes, its fields,
/// and that no event id repeats within the request; the same checks and
/// messages as [`append_events`]. Returns the decoded events, in order; the
/// caller stores the bytes it was given, not a re-encoding of these.
///
/// # Errors
/// INVALID_ARGUMENT or RESOURCE_EXHAUSTED naming the first bad field;
/// INVALID_ARGUMENT naming the event that is not a `trail.v1.Event`.
pub fn encoded_events<B: AsRef<[u8]>>(events: &[B], limits: &Limits) -> Result<Vec<Event>, Status> {
    event_count(events.len(), limits)?;
    let mut decoded = Vec::with_capacity(events.len());
    for (index, bytes) in events.iter().enumerate() {
        let bytes = bytes.as_ref();
        event_size(index, bytes.len(), limits)?;
        let event = Event::decode(bytes).map_err(|error| {
            Status::invalid_argument(format!(
                "events[{index}]: not a trail.v1.Event ({} bytes): {error}",
                bytes.len()
            ))
        })?;
        checked_fields(index, &event, limits)?;
        decoded.push(event);
    }
    let mut seen = HashSet::with_capacity(decoded.len());
    for (index, event) in decoded.iter().enumerate() {
        unique_id(index, event, &mut seen)?;
    }
    Ok(decoded)
}

fn event_count(count: usize, limits: &Limits) -> Result<(), Status> {
    if count == 0 {
        return Err(Status::invalid_argument(
            "events: empty; send 1 or more events",
        ));
    }
    if count > limits.events_per_request_max {
        return Err(over_limit(
            "request",
            count,
            "events",
            limits.events_per_request_max,
            "events_per_request_max",
        ));
    }
    Ok(())
}

fn unique_id<'a>(
    index: usize,
    event: &'a Event,
    seen: &mut HashSet<&'a str>,
) -> Result<(), Status> {
    if seen.insert(event.event_id.as_str()) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "events[{index}].event_id: {:?} appears twice in this request",
            event.event_id
        )))
    }
}

fn event_size(index: usize, encoded: usize, limits: &Limits) -> Result<(), Status> {
    if encoded > limits.event_bytes_max {
        return Err(over_limit(
            &format!("events[{index}]"),
            encoded,
            "bytes",
            limits.event_bytes_max,
            "event_bytes_max",
        ));
    }
    Ok(())
}

/// The refusal of anything over a configured limit: RESOURCE_EXHAUSTED,
/// `<what> is <size> <unit>; the limit is <limit> (limits.<key>)`, `key`
/// being the `[limits]` key a user would raise.
#[must_use]
pub fn over_limit(what: &str, size: usize, unit: &str, limit: usize, key: &str) -> Status {
    Status::resource_exhausted(format!(
        "{what} is {size} {unit}; the limit is {limit} (limits.{key})"
    ))
}

fn invalid(index: usize, field: &str, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("events[{index}].{field}: {why}"))
}

fn too_large(index: usize, field: &str, size: usize, limit: usize, key: &str) -> Status {
    over_limit(
        &format!("events[{index}].{field}"),
        size,
        "bytes",
        limit,
        key,
    )
}

fn text_field(
    index: usize,
    field: &str,
    value: &str,
    required: bool,
    limits: &Limits,
) -> Result<(), Status> {
    if required && value.is_empty() {
        return Err(invalid(index, field, "empty"));
    }
    if value.len() > limits.field_bytes_max {
        return Err(too_large(
            index,
            field,
            value.len(),
            limits.field_bytes_max,
            "field_bytes_max",
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(index, field, "contains a control character"));
    }
    Ok(())
}

/// Checks one event's fields.
///
/// # Errors
/// INVALID_ARGUMENT naming the bad field, RESOURCE_EXHAUSTED naming the limit
/// for an event, payload or attribute set that is too large.
pub fn event_fields(index: usize, event: &Event, limits: &Limits) -> Result<(), Status> {
    event_size(index, event.encoded_len(), limits)?;
    checked_fields(index, event, limits)
}

/// [`event_fields`] but the encoded size, which the caller has checked.
fn checked_fields(index: usize, event: &Event, limits: &Limits) -> Result<(), Status> {
    // Destructured in full: a new field in event.proto fails to compile here
    // until someone decides how to check it.
    let Event {
        event_id,
        actor,
        action,
        resource,
        trace_id,
        outcome,
        occurred_at_unix_nanos,
        attributes,
        payload,
        change,
        compensation,
    } = event;

    if event_id.is_empty() {
        return Err(invalid(
            index,
            "event_id",
            "empty; every event needs an id unique in its log",
        ));
    }
    if event_id.len() > limits.event_id_bytes_max {
        return Err(too_large(
            index,
            "event_id",
            event_id.len(),
            limits.event_id_bytes_max,
            "event_id_bytes_max",
        ));
    }
    if event_id.chars().any(char::is_control) {
        return Err(invalid(index, "event_id", "contains a control character"));
    }
    if event_id.starts_with(RESERVED_EVENT_ID_PREFIX) {
        return Err(invalid(
            index,
            "event_id",
            format!(
                "starts with {:?}, which Trail keeps for the records it appends itself (compensations)",
                RESERVED_EVENT_ID_PREFIX
            ),
        ));
    }
    if compensation.is_some() {
        return Err(invalid(
            index,
            "compensation",
            "is set by Trail only, on the records Compensate and Rollback append",
        ));
    }
    text_field(index, "actor", actor, true, limits)?;
    text_field(index, "action", action, true, limits)?;
    text_field(index, "resource", resource, true, limits)?;
    text_field(index, "trace_id", trace_id, false, limits)?;

    match Outcome::try_from(*outcome) {
        Ok(Outcome::Unspecified) => {
            return Err(invalid(
                index,
                "outcome",
                "unspecified; set success, failure or denied",
            ));
        }
        Ok(Outcome::Success | Outcome::Failure | Outcome::Denied) => {}
        Err(_) => {
            return Err(invalid(
                index,
                "outcome",
                format!("{outcome} is not a known outcome"),
            ))
        }
    }
    if *occurred_at_unix_nanos < 0 {
        return Err(invalid(
            index,
            "occurred_at_unix_nanos",
            format!("{occurred_at_unix_nanos} is before 1970"),
        ));
    }

    if attributes.len() > limits.attributes_max {
        return Err(over_limit(
            &format!("events[{index}].attributes"),
            attributes.len(),
            "entries",
            limits.attributes_max,
            "attributes_max",
        ));
    }
    for (key, value) in attributes {
        if key.is_empty() {
            return Err(invalid(index, "attributes", "empty key"));
        }
        if key.len() > limits.attribute_key_bytes_max {
            return Err(too_large(
                index,
                "attributes key",
                key.len(),
                limits.attribute_key_bytes_max,
                "attribute_key_bytes_max",
            ));
        }
        if value.len() > limits.attribute_value_bytes_max {
            return Err(too_large(
                index,
                &format!("attributes[{key:?}]"),
                value.len(),
                limits.attribute_value_bytes_max,
                "attribute_value_bytes_max",
            ));
        }
    }

    if payload.len() > limits.payload_bytes_max {
        return Err(too_large(
            index,
            "payload",
            payload.len(),
            limits.payload_bytes_max,
            "payload_bytes_max",
        ));
    }

    if let Some(change) = change {
        state_change(index, change, limits)?;
    }
    Ok(())
}

fn state_change(index: usize, change: &StateChange, limits: &Limits) -> Result<(), Status> {
    let StateChange { kind } = change;
    let (field, json) = match kind {
        None => {
            return Err(invalid(
                index,
                "change",
                "no kind set; set one of set_json, merge_patch_json, json_patch_json, delete",
            ))
        }
        Some(Kind::Delete(true)) => return Ok(()),
        Some(Kind::Delete(false)) => {
            return Err(invalid(
                index,
                "change.delete",
                "false; leave change unset for no state change",
            ));
        }
        Some(Kind::FieldChanges(fields)) => return field_changes(index, fields, limits),
        Some(Kind::SetJson(json)) => ("change.set_json", json),
        Some(Kind::MergePatchJson(json)) => ("change.merge_patch_json", json),
        Some(Kind::JsonPatchJson(json)) => ("change.json_patch_json", json),
    };
    if json.len() > limits.change_bytes_max {
        return Err(too_large(
            index,
            field,
            json.len(),
            limits.change_bytes_max,
            "change_bytes_max",
        ));
    }
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|error| invalid(index, field, format!("not JSON: {error}")))?;
    if let Some(Kind::JsonPatchJson(_)) = kind {
        json_patch(index, field, &value)?;
    }
    Ok(())
}

/// Strict field changes: at least one, each path a JSON pointer, each
/// value (when set) JSON, all of it within `change_bytes_max`.
fn field_changes(
    index: usize,
    fields: &trail_proto::v1::FieldChanges,
    limits: &Limits,
) -> Result<(), Status> {
    let size = fields.encoded_len();
    if size > limits.change_bytes_max {
        return Err(too_large(
            index,
            "change.field_changes",
            size,
            limits.change_bytes_max,
            "change_bytes_max",
        ));
    }
    if fields.changes.is_empty() {
        return Err(invalid(
            index,
            "change.field_changes",
            "empty; leave change unset for no state change",
        ));
    }
    for (at, field) in fields.changes.iter().enumerate() {
        let name = format!("change.field_changes.changes[{at}]");
        if !field.path.is_empty() && !field.path.starts_with('/') {
            return Err(invalid(
                index,
                &name,
                format!(
                    "path {:?} is not a JSON pointer (empty, or starting with /)",
                    field.path
                ),
            ));
        }
        for (side, value) in [
            ("before_json", &field.before_json),
            ("after_json", &field.after_json),
        ] {
            if let Some(json) = value {
                serde_json::from_str::<serde_json::Value>(json).map_err(|error| {
                    invalid(
                        index,
                        &format!("{name}.{side}"),
                        format!("not JSON: {error}"),
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// An RFC 6902 patch: an array of objects, each with a known `op`, a string
/// `path`, and `value` or `from` where the op needs one.
fn json_patch(index: usize, field: &str, value: &serde_json::Value) -> Result<(), Status> {
    let Some(operations) = value.as_array() else {
        return Err(invalid(
            index,
            field,
            "not a JSON array of patch operations (RFC 6902)",
        ));
    };
    for (position, operation) in operations.iter().enumerate() {
        let here = format!("{field}[{position}]");
        let Some(object) = operation.as_object() else {
            return Err(invalid(index, &here, "not a JSON object"));
        };
        let Some(op) = object.get("op").and_then(serde_json::Value::as_str) else {
            return Err(invalid(index, &here, "has no string \"op\""));
        };
        if object
            .get("path")
            .and_then(serde_json::Value::as_str)
            .is_none()
        {
            return Err(invalid(index, &here, "has no string \"path\""));
        }
        let needs = match op {
            "add" | "replace" | "test" => Some("value"),
            "move" | "copy" => Some("from"),
            "remove" => None,
            other => {
                return Err(invalid(
                    index,
                    &here,
                    format!("op {other:?} is not one of add, remove, replace, move, copy, test"),
                ))
            }
        };
        if let Some(member) = needs {
            if !object.contains_key(member) {
                return Err(invalid(index, &here, format!("op {op:?} needs {member:?}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn good() -> Event {
        Event {
            event_id: "e-1".into(),
            actor: "alice".into(),
            action: "login".into(),
            resource: "user/alice".into(),
            outcome: Outcome::Success as i32,
            ..Event::default()
        }
    }

    fn message(result: Result<(), Status>) -> (Code, String) {
        match result {
            Ok(()) => (Code::Ok, String::new()),
            Err(status) => (status.code(), status.message().to_owned()),
        }
    }

    #[test]
    fn a_good_event_passes() {
        assert_eq!(
            message(append_events(&[good()], &Limits::default())).0,
            Code::Ok
        );
    }

    #[test]
    fn each_required_field_is_named() {
        let limits = Limits::default();
        for field in ["event_id", "actor", "action", "resource"] {
            let mut event = good();
            match field {
                "event_id" => event.event_id.clear(),
                "actor" => event.actor.clear(),
                "action" => event.action.clear(),
                _ => event.resource.clear(),
            }
            let (code, text) = message(append_events(&[good(), event], &limits));
            // The second event is bad; the first has the same id only when
            // the id is not the field under test.
            assert_eq!(code, Code::InvalidArgument, "{field}");
            assert!(text.starts_with("events[1]."), "{text}");
        }
        let mut event = good();
        event.actor.clear();
        assert_eq!(
            message(append_events(&[event], &limits)).1,
            "events[0].actor: empty"
        );
    }

    #[test]
    fn outcome_and_change_are_checked() {
        let limits = Limits::default();
        let mut event = good();
        event.outcome = 0;
        assert!(message(event_fields(0, &event, &limits))
            .1
            .contains("events[0].outcome"));
        event.outcome = 9;
        assert!(message(event_fields(0, &event, &limits))
            .1
            .contains("not a known outcome"));
        let mut event = good();
        event.change = Some(StateChange {
            kind: Some(Kind::SetJson("{nope".into())),
        });
        assert!(message(event_fields(0, &event, &limits))
            .1
            .contains("events[0].change.set_json: not JSON"));
        event.change = Some(StateChange {
            kind: Some(Kind::JsonPatchJson("{}".into())),
        });
        assert!(message(event_fields(0, &event, &limits))
            .1
            .contains("not a JSON array"));
        event.change = Some(StateChange {
            kind: Some(Kind::JsonPatchJson(
                r#"[{"op":"add","path":"/a","value":1},{"op":"jump","path":"/"}]"#.into(),
            )),
        });
        assert!(message(event_fields(0, &event, &limits))
            .1
            .contains("json_patch_json[1]"));
        event.change = Some(StateChange {
            kind: Some(Kind::MergePatchJson(r#"{"a":null}"#.into())),
        });
        assert_eq!(message(event_fields(0, &event, &limits)).0, Code::Ok);
    }

    #[test]
    fn limits_are_named() {
        let limits = Limits {
            payload_bytes_max: 4,
            events_per_request_max: 2,
            ..Limits::default()
        };
        let mut event = good();
        event.payload = vec![0; 5];
        let (code, text) = message(event_fields(0, &event, &limits));
        assert_eq!(code, Code::ResourceExhausted);
        assert!(text.contains("limits.payload_bytes_max"), "{text}");
        let (code, text) = message(append_events(&[good(), good(), good()], &limits));
        assert_eq!(code, Code::ResourceExhausted);
        assert!(text.contains("limits.events_per_request_max"), "{text}");
        let mut event = good();
        event.actor = "a".repeat(limits.field_bytes_max + 1);
        let (code, text) = message(event_fields(0, &event, &limits));
        assert_eq!(
            (code, text.as_str()),
            (
                Code::ResourceExhausted,
                "events[0].actor is 1025 bytes; the limit is 1024 (limits.field_bytes_max)"
            )
        );
    }

    #[test]
    fn encoded_events_are_checked_like_decoded_ones() {
        let limits = Limits::default();
        let good_bytes = good().encode_to_vec();
        // An unknown field (number 99, a string) is kept by the caller and
        // ignored by the checks.
        let mut extended = good_bytes.clone();
        extended.extend_from_slice(&[0x9a, 0x06, 0x02, b'h', b'i']);
        let decoded = encoded_events(&[extended], &limits);
        assert_eq!(decoded.ok(), Some(vec![good()]));

        let mut bad = good();
        bad.actor.clear();
        let (code, text) =
            message(encoded_events(&[good_bytes.clone(), bad.encode_to_vec()], &limits).map(drop));
        assert_eq!(
            (code, text.as_str()),
            (Code::InvalidArgument, "events[1].actor: empty")
        );

        let (code, text) = message(encoded_events(&[vec![0xff, 0xff]], &limits).map(drop));
        assert_eq!(code, Code::InvalidArgument);
        assert!(
            text.starts_with("events[0]: not a trail.v1.Event"),
            "{text}"
        );

        let (code, text) = message(encoded_events::<Vec<u8>>(&[], &limits).map(drop));
        assert_eq!(
            (code, text.as_str()),
            (
                Code::InvalidArgument,
                "events: empty; send 1 or more events"
            )
        );

        let (code, text) =
            message(encoded_events(&[good_bytes.clone(), good_bytes.clone()], &limits).map(drop));
        assert_eq!(code, Code::InvalidArgument);
        assert!(text.contains("events[1].event_id"), "{text}");

        // The size limit applies to the bytes as sent, before decoding.
        let tight = Limits {
            event_bytes_max: good_bytes.len() - 1,
            ..Limits::default()
        };
        let (code, text) = message(encoded_events(&[good_bytes], &tight).map(drop));
        assert_eq!(code, Code::ResourceExhausted);
        assert!(text.contains("limits.event_bytes_max"), "{text}");
    }

    #[test]
    fn repeated_event_id_in_one_request_is_refused() {
        let (code, text) = message(append_events(&[good(), good()], &Limits::default()));
        assert_eq!(code, Code::InvalidArgument);
        assert!(text.contains("events[1].event_id"), "{text}");
    }
}

//! When two encodings of a `trail.v1.Event` carry the same event: the rule
//! the log engine is given for idempotent retries ("same id, same content
//! gets the original receipt; other content is ALREADY_EXISTS").
//!
//! Equal bytes are the same event. Otherwise both are put in one canonical
//! form and compared: the fields this build knows, decoded and re-encoded
//! by prost (field order, map order, explicit defaults and repeated
//! singular fields stop mattering), followed by every field it does not
//! know, kept byte for byte and ordered by field number (the order among
//! occurrences of one number is kept, since it can matter). So a retry that
//! adds a field a newer producer knows is not a duplicate: its new bytes
//! would otherwise be dropped silently. An unknown field inside a nested
//! message (the state change, an attribute entry) cannot be placed in that
//! form without the newer schema, so such events compare by bytes only:
//! the rule may call a retry different (ALREADY_EXISTS, which is safe), and
//! never calls different events the same.

use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;

use crate::v1::Event;

/// Field numbers of `trail.v1.Event` this build knows.
const EVENT_FIELDS: std::ops::RangeInclusive<u32> = 1..=10;
/// `Event.attributes`, a map: each entry is a message of fields 1 and 2.
const ATTRIBUTES_FIELD: u32 = 8;
/// `Event.change`, a `StateChange` of fields 1 to 4.
const CHANGE_FIELD: u32 = 10;

/// Whether `sent` carries the same event as `stored` (see the module docs).
#[must_use]
pub fn same_event(stored: &[u8], sent: &[u8]) -> bool {
    if stored == sent {
        return true;
    }
    match (canonical(stored), canonical(sent)) {
        (Some(stored), Some(sent)) => stored == sent,
        _ => false,
    }
}

/// One field occurrence: its number, wire type, the raw bytes of key and
/// value, and the value's payload (for length-delimited fields).
struct Field<'a> {
    number: u32,
    wire_type: WireType,
    raw: &'a [u8],
    payload: &'a [u8],
}

/// Splits a message into its field occurrences; `None` for bytes that are
/// not a well-formed message (or use groups, which `trail.v1` never does).
fn fields(mut bytes: &[u8]) -> Option<Vec<Field<'_>>> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let (number, wire_type) = decode_key(&mut bytes).ok()?;
        let payload: &[u8] = match wire_type {
            WireType::Varint => {
                decode_varint(&mut bytes).ok()?;
                &[]
            }
            WireType::SixtyFourBit => {
                bytes = bytes.get(8..)?;
                &[]
            }
            WireType::ThirtyTwoBit => {
                bytes = bytes.get(4..)?;
                &[]
            }
            WireType::LengthDelimited => {
                let length = usize::try_from(decode_varint(&mut bytes).ok()?).ok()?;
                let payload = bytes.get(..length)?;
                bytes = &bytes[length..];
                payload
            }
            WireType::StartGroup | WireType::EndGroup => return None,
        };
        let consumed = start.len() - bytes.len();
        found.push(Field {
            number,
            wire_type,
            raw: &start[..consumed],
            payload,
        });
    }
    Some(found)
}

/// Whether a nested message holds only fields `known` (so prost's
/// re-encoding of it loses nothing).
fn only_known_fields(bytes: &[u8], known: std::ops::RangeInclusive<u32>) -> bool {
    fields(bytes).is_some_and(|nested| nested.iter().all(|field| known.contains(&field.number)))
}

/// The canonical form of an event's encoding; `None` when there is none
/// (not a valid event, or unknown fields nested inside known ones).
fn canonical(bytes: &[u8]) -> Option<Vec<u8>> {
    let occurrences = fields(bytes)?;
    let mut unknown: Vec<&Field<'_>> = Vec::new();
    for field in &occurrences {
        if !EVENT_FIELDS.contains(&field.number) {
            unknown.push(field);
            continue;
        }
        let nested_known = match field.number {
            ATTRIBUTES_FIELD => Some(1..=2),
            CHANGE_FIELD => Some(1..=4),
            _ => None,
        };
        if let Some(known) = nested_known {
            if field.wire_type != WireType::LengthDelimited
                || !only_known_fields(field.payload, known)
            {
                return None;
            }
        }
    }
    let mut form = Event::decode(bytes).ok()?.encode_to_vec();
    // Stable: occurrences of one field number keep their order.
    unknown.sort_by_key(|field| field.number);
    for field in unknown {
        form.extend_from_slice(field.raw);
    }
    Some(form)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::encoding::{encode_key, encode_varint};

    fn event() -> Event {
        Event {
            event_id: "e-1".into(),
            actor: "alice".into(),
            action: "read".into(),
            resource: "doc/1".into(),
            attributes: [("a".to_string(), "1".to_string()), ("b".into(), "2".into())]
                .into_iter()
                .collect(),
            ..Event::default()
        }
    }

    /// A varint field `number = value`, as a newer producer would add it.
    fn unknown_varint(number: u32, value: u64) -> Vec<u8> {
        let mut bytes = Vec::new();
        encode_key(number, WireType::Varint, &mut bytes);
        encode_varint(value, &mut bytes);
        bytes
    }

    #[test]
    fn reordered_fields_and_map_entries_are_the_same_event() {
        let canonical = event().encode_to_vec();
        let mut reordered = Event {
            resource: "doc/1".into(),
            attributes: [("b".to_string(), "2".to_string())].into_iter().collect(),
            ..Event::default()
        }
        .encode_to_vec();
        reordered.extend(
            Event {
                event_id: "e-1".into(),
                actor: "alice".into(),
                action: "read".into(),
                attributes: [("a".to_string(), "1".to_string())].into_iter().collect(),
                ..Event::default()
            }
            .encode_to_vec(),
        );
        assert_ne!(canonical, reordered);
        assert!(same_event(&canonical, &reordered));
    }

    #[test]
    fn an_added_unknown_field_is_other_content() {
        let stored = event().encode_to_vec();
        let mut sent = stored.clone();
        sent.extend(unknown_varint(99, 7));
        assert!(
            !same_event(&stored, &sent),
            "the new field would be dropped"
        );
        assert!(!same_event(&sent, &stored));
    }

    #[test]
    fn unknown_fields_compare_by_number_and_bytes_wherever_they_stand() {
        let known = event().encode_to_vec();
        let mut first = unknown_varint(50, 1);
        first.extend(&known);
        first.extend(unknown_varint(60, 2));
        let mut second = unknown_varint(60, 2);
        second.extend(&known);
        second.extend(unknown_varint(50, 1));
        assert!(same_event(&first, &second));
        let mut other_value = unknown_varint(60, 3);
        other_value.extend(&known);
        other_value.extend(unknown_varint(50, 1));
        assert!(!same_event(&first, &other_value));
        // Two occurrences of one number keep their order.
        let mut twice = known.clone();
        twice.extend(unknown_varint(50, 1));
        twice.extend(unknown_varint(50, 2));
        let mut swapped = known.clone();
        swapped.extend(unknown_varint(50, 2));
        swapped.extend(unknown_varint(50, 1));
        assert!(!same_event(&twice, &swapped));
    }

    #[test]
    fn unknown_fields_nested_in_known_ones_compare_by_bytes() {
        let mut change = Vec::new();
        encode_key(1, WireType::LengthDelimited, &mut change);
        encode_varint(2, &mut change);
        change.extend(b"{}");
        change.extend(unknown_varint(9, 1));
        let mut stored = event().encode_to_vec();
        encode_key(CHANGE_FIELD, WireType::LengthDelimited, &mut stored);
        encode_varint(change.len() as u64, &mut stored);
        stored.extend(&change);
        assert!(same_event(&stored, &stored.clone()));
        // The same event with a known field moved: no canonical form, so
        // bytes decide (different).
        let mut moved = stored.clone();
        moved.extend(
            Event {
                actor: "alice".into(),
                ..Event::default()
            }
            .encode_to_vec(),
        );
        assert!(!same_event(&stored, &moved));
    }

    #[test]
    fn explicit_defaults_are_the_same_event_and_garbage_is_not() {
        let stored = event().encode_to_vec();
        let mut explicit = stored.clone();
        // `trace_id = ""` written out.
        encode_key(5, WireType::LengthDelimited, &mut explicit);
        encode_varint(0, &mut explicit);
        assert!(same_event(&stored, &explicit));
        assert!(!same_event(&stored, &[0xff, 0xff, 0xff]));
        assert!(!same_event(&stored, &event_with_actor("bob")));
    }

    fn event_with_actor(actor: &str) -> Vec<u8> {
        Event {
            actor: actor.into(),
            ..event()
        }
        .encode_to_vec()
    }
}

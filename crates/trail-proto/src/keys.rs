//! A partial view of `trail.v1.Event` for the readers that need only its
//! keys (the query index, resource state, filtered Subscribe): protobuf
//! skips the fields a message does not declare, so decoding this view never
//! copies the payload. Field numbers are the ones in `event.proto`; the
//! test below decodes a full event through it.

use std::collections::BTreeMap;

/// `trail.v1.Event` without `event_id` and `payload`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventKeys {
    /// `Event.actor`.
    #[prost(string, tag = "2")]
    pub actor: String,
    /// `Event.action`.
    #[prost(string, tag = "3")]
    pub action: String,
    /// `Event.resource`.
    #[prost(string, tag = "4")]
    pub resource: String,
    /// `Event.trace_id`.
    #[prost(string, tag = "5")]
    pub trace_id: String,
    /// `Event.outcome`.
    #[prost(enumeration = "crate::v1::Outcome", tag = "6")]
    pub outcome: i32,
    /// `Event.occurred_at_unix_nanos`.
    #[prost(int64, tag = "7")]
    pub occurred_at_unix_nanos: i64,
    /// `Event.attributes`.
    #[prost(btree_map = "string, string", tag = "8")]
    pub attributes: BTreeMap<String, String>,
    /// `Event.change`.
    #[prost(message, optional, tag = "10")]
    pub change: Option<crate::v1::StateChange>,
    /// `Event.compensation`.
    #[prost(message, optional, tag = "11")]
    pub compensation: Option<crate::v1::CompensationNote>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::EventKeys;
    use crate::v1::{state_change, CompensationNote, Event, Outcome, StateChange};

    #[test]
    fn a_full_event_decodes_through_the_view_with_every_key() {
        let event = Event {
            event_id: "e-1".into(),
            actor: "alice".into(),
            action: "refund.create".into(),
            resource: "order/7".into(),
            trace_id: "t-9".into(),
            outcome: Outcome::Denied as i32,
            occurred_at_unix_nanos: -5,
            attributes: [("ip".to_owned(), "10.0.0.1".to_owned())].into(),
            payload: vec![7; 300],
            change: Some(StateChange {
                kind: Some(state_change::Kind::MergePatchJson("{}".into())),
            }),
            compensation: Some(CompensationNote {
                reason: "wrong refund".into(),
                mode: "compensate".into(),
                requested_lsn: 4,
            }),
        };
        let keys = EventKeys::decode(event.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(
            keys,
            EventKeys {
                actor: event.actor,
                action: event.action,
                resource: event.resource,
                trace_id: event.trace_id,
                outcome: event.outcome,
                occurred_at_unix_nanos: event.occurred_at_unix_nanos,
                attributes: event.attributes,
                change: event.change,
                compensation: event.compensation,
            }
        );
    }
}

//! The server view (`proto/trail/v1/server_view/log.proto`) must stay the
//! contract (`proto/trail/v1/log.proto`) with two changes: `AppendRequest`
//! field 2 is `repeated bytes` instead of `repeated trail.v1.Event`, and
//! `Record` field 8 is `bytes` instead of `trail.v1.Event`. Anything
//! else that differs (a new field, method, message, option or number) would
//! make the server and its clients disagree on the wire, so the two compiled
//! descriptors are compared here, comments and source positions aside.

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{FileDescriptorProto, FileDescriptorSet};

type Result<T = (), E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const CONTRACT: &str = "trail/v1/log.proto";
const VIEW: &str = "trail/v1/server_view/log.proto";

fn file(set: &[u8], name: &str) -> Result<FileDescriptorProto> {
    let set = FileDescriptorSet::decode(set)?;
    let found = set
        .file
        .into_iter()
        .find(|file| file.name() == name)
        .ok_or_else(|| format!("{name} is not in the descriptor set"))?;
    Ok(found)
}

/// Checks that `message.field` is `bytes` (with `label`) in the view and an
/// embedded `trail.v1.Event` in the contract, then makes the view's field
/// equal to the contract's, so the rest can be compared whole.
fn accept_event_as_bytes(
    view: &mut FileDescriptorProto,
    contract: &FileDescriptorProto,
    message: &str,
    field: &str,
    number: i32,
    label: Label,
) -> Result {
    let in_view = view
        .message_type
        .iter_mut()
        .find(|candidate| candidate.name() == message)
        .and_then(|found| {
            found
                .field
                .iter_mut()
                .find(|candidate| candidate.name() == field)
        })
        .ok_or_else(|| format!("the server view has no {message}.{field}"))?;
    assert_eq!(in_view.number(), number);
    assert_eq!(in_view.label(), label);
    assert_eq!(in_view.r#type(), Type::Bytes);
    assert_eq!(in_view.type_name, None);
    let in_contract = contract
        .message_type
        .iter()
        .find(|candidate| candidate.name() == message)
        .and_then(|found| {
            found
                .field
                .iter()
                .find(|candidate| candidate.name() == field)
        })
        .ok_or_else(|| format!("the contract has no {message}.{field}"))?;
    assert_eq!(in_contract.r#type(), Type::Message);
    assert_eq!(in_contract.type_name(), ".trail.v1.Event");
    *in_view = in_contract.clone();
    Ok(())
}

#[test]
fn server_view_differs_from_the_contract_only_in_event_bytes() -> Result {
    let contract = file(trail_proto::FILE_DESCRIPTOR_SET, CONTRACT)?;
    let mut view = file(trail_proto::server_view::FILE_DESCRIPTOR_SET, VIEW)?;

    // The two intended differences: events as bytes, same numbers and labels.
    accept_event_as_bytes(
        &mut view,
        &contract,
        "AppendRequest",
        "events",
        2,
        Label::Repeated,
    )?;
    accept_event_as_bytes(&mut view, &contract, "Record", "event", 8, Label::Optional)?;

    // Everything else is the same, once the file name and the source info
    // (comments, line numbers) are set aside.
    view.name = contract.name.clone();
    view.source_code_info = None;
    let mut contract = contract;
    contract.source_code_info = None;
    assert_eq!(view, contract);
    Ok(())
}

#[test]
fn both_import_the_same_event_proto() -> Result {
    let event = "trail/v1/event.proto";
    let mut from_contract = file(trail_proto::FILE_DESCRIPTOR_SET, event)?;
    let mut from_view = file(trail_proto::server_view::FILE_DESCRIPTOR_SET, event)?;
    from_contract.source_code_info = None;
    from_view.source_code_info = None;
    assert_eq!(from_contract, from_view);
    Ok(())
}

/// The reason the server view works at all: an `AppendRequest` a client
/// encodes decodes in the server view with each event's bytes intact.
#[test]
fn a_client_request_decodes_as_the_server_view() -> Result {
    let event = trail_proto::v1::Event {
        event_id: "e-1".to_owned(),
        actor: "alice".to_owned(),
        ..trail_proto::v1::Event::default()
    };
    let request = trail_proto::v1::AppendRequest {
        log: "payments".to_owned(),
        events: vec![event.clone(), event.clone()],
        atomic: true,
    };
    let view = trail_proto::server_view::AppendRequest::decode(request.encode_to_vec().as_slice())?;
    assert_eq!(view.log, "payments");
    assert!(view.atomic);
    assert_eq!(
        view.events,
        vec![event.encode_to_vec(), event.encode_to_vec()]
    );
    Ok(())
}

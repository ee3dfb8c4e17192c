//! The server stores each event exactly as the producer encoded it
//! (DESIGN.md, "The log"): an event whose encoding has its fields out of
//! order and fields this server does not know is appended through a raw
//! client, and the bytes on disk are the bytes that were sent.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_prost::ProstCodec;
use trail_log::{LogName, Lsn, Store};
use trail_proto::server_view;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{AppendResponse, Event, Outcome, ReadRequest, StateChange};
use trail_server::{Limits, Metrics};

mod common;

use common::{sync_options, test_config, Result, Served};

const LOG: &str = "exact";

/// A protobuf field key.
fn key(number: u32, wire_type: u8) -> Vec<u8> {
    varint(u64::from(number) << 3 | u64::from(wire_type))
}

fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn length_delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = key(number, 2);
    out.extend(varint(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

fn varint_field(number: u32, value: u64) -> Vec<u8> {
    let mut out = key(number, 0);
    out.extend(varint(value));
    out
}

/// An event as some other encoder might write it: fields in descending
/// order, and two fields (99 and 1000) from a newer event.proto.
fn hand_encoded(event_id: &str) -> Vec<u8> {
    let mut attribute = length_delimited(1, b"ip");
    attribute.extend(length_delimited(2, b"10.0.0.1"));
    let change = length_delimited(1, br#"{"logged_in":true}"#);
    [
        varint_field(1000, 7),
        length_delimited(10, &change),
        length_delimited(9, b"payload"),
        length_delimited(8, &attribute),
        length_delimited(99, b"a field this server does not know"),
        varint_field(7, 1_700_000_000_000_000_000),
        varint_field(6, Outcome::Success as u64),
        length_delimited(5, b"t-1"),
        length_delimited(4, b"user/alice"),
        length_delimited(3, b"login"),
        length_delimited(2, b"alice"),
        length_delimited(1, event_id.as_bytes()),
    ]
    .concat()
}

/// What `hand_encoded` means to this server's event.proto.
fn known_fields(event_id: &str) -> Event {
    Event {
        event_id: event_id.to_owned(),
        actor: "alice".to_owned(),
        action: "login".to_owned(),
        resource: "user/alice".to_owned(),
        trace_id: "t-1".to_owned(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000,
        attributes: [("ip".to_owned(), "10.0.0.1".to_owned())].into(),
        payload: b"payload".to_vec(),
        change: Some(StateChange {
            kind: Some(Kind::SetJson(r#"{"logged_in":true}"#.to_owned())),
        }),
        compensation: None,
    }
}

/// Appends events given as bytes, as a client that does not re-encode them
/// would (`/trail.v1.Log/Append` with the server view's request message).
async fn append_raw(
    channel: &Channel,
    events: Vec<Vec<u8>>,
) -> Result<AppendResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let request = server_view::AppendRequest {
        log: LOG.to_owned(),
        events,
        atomic: false,
    };
    let codec = ProstCodec::<server_view::AppendRequest, AppendResponse>::default();
    grpc.unary(
        tonic::Request::new(request),
        PathAndQuery::from_static("/trail.v1.Log/Append"),
        codec,
    )
    .await
    .map(tonic::Response::into_inner)
}

fn stored_events(store: &Store) -> Result<Vec<Vec<u8>>> {
    let log = store
        .get(&LogName::new(LOG)?)?
        .ok_or("the log does not exist")?;
    let mut events = Vec::new();
    for record in log.read(Lsn(1), log.head().lsn) {
        events.push(record?.record.event);
    }
    Ok(events)
}

#[tokio::test]
async fn appended_bytes_are_stored_exactly_as_sent() -> Result {
    let dir = tempfile::tempdir()?;
    let config = test_config(Limits::default());
    let options = sync_options(&config);
    let store = Arc::new(Store::open(dir.path(), options.clone())?);
    let served = Served::start(config, Arc::clone(&store), Metrics::disabled()).await?;
    let address = served.address.clone();
    let channel = Endpoint::from_shared(address)?.connect().await?;

    let odd = hand_encoded("e-odd");
    // The hand encoding really is one prost would not produce.
    assert_ne!(known_fields("e-odd").encode_to_vec(), odd);
    let canonical = known_fields("e-canonical").encode_to_vec();
    let receipts = append_raw(&channel, vec![odd.clone(), canonical.clone()])
        .await?
        .receipts;
    assert_eq!(
        receipts
            .iter()
            .map(|receipt| (receipt.event_id.as_str(), receipt.lsn, receipt.duplicate))
            .collect::<Vec<_>>(),
        vec![("e-odd", 1, false), ("e-canonical", 2, false)]
    );

    // The bytes the engine holds are the bytes sent.
    assert_eq!(stored_events(&store)?, vec![odd.clone(), canonical.clone()]);

    // A retry with the same bytes, or with another encoding of the same
    // event (the known fields in canonical order, the unknown ones after
    // them), gets the original receipt.
    let again = append_raw(&channel, vec![odd.clone()]).await?.receipts;
    assert_eq!((again[0].lsn, again[0].duplicate), (1, true));
    assert_eq!(again[0].hash, receipts[0].hash);
    let mut reordered = known_fields("e-odd").encode_to_vec();
    reordered.extend(length_delimited(99, b"a field this server does not know"));
    reordered.extend(varint_field(1000, 7));
    assert_ne!(reordered, odd);
    let again = append_raw(&channel, vec![reordered]).await?.receipts;
    assert_eq!((again[0].lsn, again[0].duplicate), (1, true));

    // A retry that drops (or changes) a field this build does not know is
    // other content: passing it as a duplicate would silently drop bytes.
    for other in [
        known_fields("e-odd").encode_to_vec(),
        [
            known_fields("e-odd").encode_to_vec(),
            length_delimited(99, b"a field this server does not know"),
            varint_field(1000, 8),
        ]
        .concat(),
    ] {
        let conflict = append_raw(&channel, vec![other])
            .await
            .err()
            .ok_or("other content passed as a duplicate")?;
        assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");
    }

    // Bytes that are not an event are refused, naming the event.
    let refused = append_raw(&channel, vec![canonical.clone(), vec![0x0a, 0xff]])
        .await
        .err()
        .ok_or("garbage was accepted")?;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with("events[1]: not a trail.v1.Event"),
        "{refused:?}"
    );
    // The checks still apply to what the bytes decode to.
    let mut no_actor = known_fields("e-no-actor");
    no_actor.actor.clear();
    let refused = append_raw(&channel, vec![no_actor.encode_to_vec()])
        .await
        .err()
        .ok_or("an event without an actor was accepted")?;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(refused.message(), "events[0].actor: empty");

    // Read decodes the stored bytes: the known fields come back.
    let mut client = LogClient::new(channel.clone());
    let mut stream = client
        .read(ReadRequest {
            log: LOG.to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut read = Vec::new();
    while let Some(record) = stream.next().await {
        read.push(record?.event.ok_or("a record without its event")?);
    }
    assert_eq!(
        read,
        vec![known_fields("e-odd"), known_fields("e-canonical")]
    );

    // And a reader that takes the event as bytes gets exactly what was sent
    // (unknown fields and field order included): Read never re-encodes.
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec = ProstCodec::<ReadRequest, server_view::Record>::default();
    let mut raw = grpc
        .server_streaming(
            tonic::Request::new(ReadRequest {
                log: LOG.to_owned(),
                from_lsn: 1,
                to_lsn: 0,
            }),
            PathAndQuery::from_static("/trail.v1.Log/Read"),
            codec,
        )
        .await?
        .into_inner();
    let mut read_bytes = Vec::new();
    while let Some(record) = raw.next().await {
        read_bytes.push(record?.event);
    }
    assert_eq!(read_bytes, vec![odd.clone(), canonical.clone()]);

    served.stop().await?;
    store.close()?;
    drop(store);

    // And on disk, read back by a fresh store after shutdown.
    let reopened = Store::open(dir.path(), options)?;
    assert_eq!(stored_events(&reopened)?, vec![odd, canonical]);
    reopened.close()?;
    Ok(())
}

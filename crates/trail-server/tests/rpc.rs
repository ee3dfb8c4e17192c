//! Every RPC over a real loopback server: the happy paths, and each error
//! path with the status code and a message naming the field or limit.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use trail_log::fault::{FaultPlan, FaultyFileSystem};
use trail_log::fs::OsFileSystem;
use trail_log::{LogOptions, Store};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    AppendRequest, Event, HeadRequest, Outcome, ReadRequest, Record, StateChange, SubscribeRequest,
    VerifyRequest,
};
use trail_server::{Limits, Metrics};

mod common;

use common::{sync_options, test_config, Result, Served};

struct TestServer {
    client: LogClient<Channel>,
    address: String,
    served: Served,
    store: Arc<Store>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Result<TestServer> {
        TestServer::start_with(Limits::default(), None).await
    }

    async fn start_with(limits: Limits, plan: Option<FaultPlan>) -> Result<TestServer> {
        let dir = tempfile::tempdir()?;
        let config = test_config(limits);
        let options = LogOptions {
            segment_bytes: 4 << 20,
            group_bytes_max: 1 << 20,
            // An injected fault must hit the append under test, not the
            // background preparer's zero fill of the next segment.
            prepare_segments_ahead: plan.is_none(),
            ..sync_options(&config)
        };
        let store = match plan {
            None => Store::open(dir.path(), options)?,
            Some(plan) => Store::open_with_fs(
                Arc::new(FaultyFileSystem::new(OsFileSystem, plan)),
                dir.path(),
                options,
            )?,
        };
        let store = Arc::new(store);
        let served = Served::start(config, Arc::clone(&store), Metrics::disabled()).await?;
        let address = served.address.clone();
        let client = LogClient::connect(address.clone()).await?;
        Ok(TestServer {
            client,
            address,
            served,
            store,
            _dir: dir,
        })
    }

    async fn stop(self) -> Result {
        self.served.stop().await?;
        self.store.close()?;
        Ok(())
    }
}

fn event(id: &str) -> Event {
    Event {
        event_id: id.to_owned(),
        actor: "alice".to_owned(),
        action: "login".to_owned(),
        resource: "user/alice".to_owned(),
        trace_id: "t-1".to_owned(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000,
        attributes: BTreeMap::from([("ip".to_owned(), "10.0.0.1".to_owned())]),
        payload: br#"{"ok":true}"#.to_vec(),
        change: Some(StateChange {
            kind: Some(Kind::SetJson(r#"{"logged_in":true}"#.to_owned())),
        }),
        compensation: None,
    }
}

fn append(log: &str, events: Vec<Event>) -> AppendRequest {
    AppendRequest {
        log: log.to_owned(),
        events,
        atomic: false,
    }
}

async fn read_all(
    client: &mut LogClient<Channel>,
    log: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Record>, tonic::Status> {
    let mut stream = client
        .read(ReadRequest {
            log: log.to_owned(),
            from_lsn: from,
            to_lsn: to,
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await {
        records.push(record?);
    }
    Ok(records)
}

fn assert_status<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} naming {needle:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            assert!(
                status.message().contains(needle),
                "{:?} does not name {needle:?}",
                status.message()
            );
        }
    }
}

#[tokio::test]
async fn append_read_head_verify_round_trip() -> Result {
    let mut server = TestServer::start().await?;
    let client = &mut server.client;
    let events: Vec<Event> = (1..=5).map(|n| event(&format!("e{n}"))).collect();
    let receipts = client
        .append(append("audit", events.clone()))
        .await?
        .into_inner()
        .receipts;
    assert_eq!(
        receipts.iter().map(|r| r.lsn).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert!(receipts.iter().all(|r| !r.duplicate && r.hash.len() == 32));
    assert_eq!(receipts[2].event_id, "e3");

    let records = read_all(client, "audit", 0, 0).await?;
    assert_eq!(records.len(), 5);
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.lsn, index as u64 + 1);
        assert_eq!(record.hash, receipts[index].hash);
        assert_eq!(record.event.as_ref(), Some(&events[index]));
        if index > 0 {
            assert_eq!(record.prev_hash, records[index - 1].hash);
        }
    }
    assert_eq!(read_all(client, "audit", 2, 3).await?.len(), 2);

    let head = client
        .head(HeadRequest {
            log: "audit".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!((head.lsn, &head.hash), (5, &receipts[4].hash));
    let report = client
        .verify(VerifyRequest {
            log: "audit".to_owned(),
            from_lsn: 0,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    assert_eq!(
        (report.verified, report.head_lsn, report.first_bad_lsn),
        (5, 5, 0)
    );
    assert_eq!(report.head_hash, receipts[4].hash);

    // A retry with the same id and content returns the original receipt.
    let again = client
        .append(append("audit", vec![events[1].clone()]))
        .await?
        .into_inner()
        .receipts;
    assert_eq!(
        (again[0].lsn, again[0].duplicate, &again[0].hash),
        (2, true, &receipts[1].hash)
    );
    // The same id with other content is refused.
    let mut other = events[1].clone();
    other.actor = "mallory".to_owned();
    assert_status(
        client.append(append("audit", vec![other])).await,
        Code::AlreadyExists,
        "e2",
    );

    // The empty log name means "default".
    client.append(append("", vec![event("d1")])).await?;
    assert_eq!(
        client
            .head(HeadRequest {
                log: "default".to_owned()
            })
            .await?
            .into_inner()
            .lsn,
        1
    );
    server.stop().await
}

#[tokio::test]
async fn each_bad_field_is_invalid_argument_naming_it() -> Result {
    let mut server = TestServer::start().await?;
    let client = &mut server.client;
    type Breaker = fn(&mut Event);
    let cases: Vec<(&str, Breaker)> = vec![
        ("events[0].event_id", |e| e.event_id.clear()),
        ("events[0].actor", |e| e.actor.clear()),
        ("events[0].action", |e| e.action.clear()),
        ("events[0].resource", |e| e.resource.clear()),
        ("events[0].outcome", |e| e.outcome = 0),
        ("events[0].outcome", |e| e.outcome = 42),
        ("events[0].occurred_at_unix_nanos", |e| {
            e.occurred_at_unix_nanos = -1
        }),
        ("events[0].attributes", |e| {
            e.attributes.insert(String::new(), "v".to_owned());
        }),
        ("events[0].change", |e| {
            e.change = Some(StateChange { kind: None })
        }),
        ("events[0].change.set_json", |e| {
            e.change = Some(StateChange {
                kind: Some(Kind::SetJson("{".to_owned())),
            })
        }),
        ("events[0].change.merge_patch_json", |e| {
            e.change = Some(StateChange {
                kind: Some(Kind::MergePatchJson("nope".to_owned())),
            });
        }),
        ("events[0].change.json_patch_json", |e| {
            e.change = Some(StateChange {
                kind: Some(Kind::JsonPatchJson(r#"{"op":"add"}"#.to_owned())),
            });
        }),
        ("events[0].change.delete", |e| {
            e.change = Some(StateChange {
                kind: Some(Kind::Delete(false)),
            })
        }),
    ];
    for (field, breaker) in cases {
        let mut bad = event("x");
        breaker(&mut bad);
        assert_status(
            client.append(append("audit", vec![bad])).await,
            Code::InvalidArgument,
            field,
        );
    }
    // The index names the bad event among good ones.
    let mut bad = event("b");
    bad.actor.clear();
    assert_status(
        client.append(append("audit", vec![event("a"), bad])).await,
        Code::InvalidArgument,
        "events[1].actor: empty",
    );
    assert_status(
        client.append(append("audit", vec![])).await,
        Code::InvalidArgument,
        "events: empty",
    );
    assert_status(
        client.append(append("Bad/Name", vec![event("a")])).await,
        Code::InvalidArgument,
        "log:",
    );
    assert_status(
        client
            .head(HeadRequest {
                log: "../etc".to_owned(),
            })
            .await,
        Code::InvalidArgument,
        "log:",
    );
    // Nothing was appended by any refused request.
    assert_status(
        client
            .head(HeadRequest {
                log: "audit".to_owned(),
            })
            .await,
        Code::NotFound,
        "audit",
    );
    // A range backwards.
    client
        .append(append("audit", vec![event("a"), event("b")]))
        .await?;
    assert_status(
        read_all(client, "audit", 2, 1).await,
        Code::InvalidArgument,
        "from_lsn",
    );
    server.stop().await
}

#[tokio::test]
async fn each_limit_is_named() -> Result {
    let limits = Limits {
        events_per_request_max: 3,
        event_bytes_max: 2_000,
        payload_bytes_max: 1_000,
        field_bytes_max: 64,
        event_id_bytes_max: 16,
        attributes_max: 2,
        attribute_value_bytes_max: 32,
        change_bytes_max: 100,
        request_bytes_max: 8_000,
        ..Limits::default()
    };
    let mut server = TestServer::start_with(limits, None).await?;
    let client = &mut server.client;
    let many: Vec<Event> = (0..4).map(|n| event(&format!("m{n}"))).collect();
    assert_status(
        client.append(append("l", many)).await,
        Code::ResourceExhausted,
        "limits.events_per_request_max",
    );

    let mut big = event("big");
    big.payload = vec![b'x'; 1_500];
    assert_status(
        client.append(append("l", vec![big])).await,
        Code::ResourceExhausted,
        "limits.payload_bytes_max",
    );
    let mut huge = event("huge");
    huge.attributes = (0..2).map(|n| (format!("k{n}"), "v".repeat(30))).collect();
    huge.payload = vec![b'x'; 990];
    huge.trace_id = "t".repeat(60);
    huge.resource = "r".repeat(60);
    huge.actor = "a".repeat(60);
    huge.action = "b".repeat(60);
    huge.change = Some(StateChange {
        kind: Some(Kind::SetJson(format!("\"{}\"", "s".repeat(90)))),
    });
    let mut oversized = huge.clone();
    oversized.payload = vec![b'x'; 999];
    oversized.attributes.insert("k9".to_owned(), "v".repeat(30));
    // Too many attributes.
    assert_status(
        client.append(append("l", vec![oversized])).await,
        Code::ResourceExhausted,
        "limits.attributes_max",
    );

    let mut long_actor = event("a1");
    long_actor.actor = "a".repeat(65);
    assert_status(
        client.append(append("l", vec![long_actor])).await,
        Code::ResourceExhausted,
        "limits.field_bytes_max",
    );
    let mut long_id = event("a1");
    long_id.event_id = "i".repeat(17);
    assert_status(
        client.append(append("l", vec![long_id])).await,
        Code::ResourceExhausted,
        "limits.event_id_bytes_max",
    );
    let mut long_value = event("a1");
    long_value.attributes.insert("k".to_owned(), "v".repeat(33));
    assert_status(
        client.append(append("l", vec![long_value])).await,
        Code::ResourceExhausted,
        "limits.attribute_value_bytes_max",
    );
    let mut long_change = event("a1");
    long_change.change = Some(StateChange {
        kind: Some(Kind::SetJson(format!("\"{}\"", "s".repeat(120)))),
    });
    assert_status(
        client.append(append("l", vec![long_change])).await,
        Code::ResourceExhausted,
        "limits.change_bytes_max",
    );

    // The whole event over event_bytes_max while every field is within its own limit.
    let mut whole = event("w");
    whole.payload = vec![b'x'; 1_000];
    whole.actor = "a".repeat(64);
    whole.action = "b".repeat(64);
    whole.resource = "r".repeat(64);
    whole.trace_id = "t".repeat(64);
    whole.change = Some(StateChange {
        kind: Some(Kind::SetJson(format!("\"{}\"", "s".repeat(90)))),
    });
    let tight = Limits {
        event_bytes_max: 1_200,
        ..Limits::default()
    };
    let result = trail_request::validate::event_fields(0, &whole, &tight);
    assert_status(result, Code::ResourceExhausted, "limits.event_bytes_max");

    // A request above request_bytes_max is refused before it is decoded,
    // with the same code and shape as every other limit (not tonic's
    // OUT_OF_RANGE).
    let wide: Vec<Event> = (0..8)
        .map(|n| {
            let mut e = event(&format!("r{n}"));
            e.payload = vec![b'x'; 990];
            e.actor = "a".repeat(64);
            e.action = "b".repeat(64);
            e.resource = "r".repeat(64);
            e.trace_id = "t".repeat(64);
            e
        })
        .collect();
    let request = append("l", wide);
    assert!(prost::Message::encoded_len(&request) > 8_000);
    let status = client
        .append(request)
        .await
        .err()
        .ok_or("a request above request_bytes_max was accepted")?;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("request is ")
            && status
                .message()
                .ends_with("bytes; the limit is 8000 (limits.request_bytes_max)"),
        "{status:?}"
    );
    // Nothing refused was appended.
    assert_status(
        client
            .head(HeadRequest {
                log: "l".to_owned(),
            })
            .await,
        Code::NotFound,
        "l",
    );
    server.stop().await
}

#[tokio::test]
async fn unknown_logs_and_lsns_are_not_found() -> Result {
    let mut server = TestServer::start().await?;
    let client = &mut server.client;
    assert_status(
        client
            .head(HeadRequest {
                log: "nope".to_owned(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(read_all(client, "nope", 1, 0).await, Code::NotFound, "nope");
    assert_status(
        client
            .verify(VerifyRequest {
                log: "nope".to_owned(),
                from_lsn: 0,
                to_lsn: 0,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    assert_status(
        client
            .subscribe(SubscribeRequest {
                log: "nope".to_owned(),
                from_lsn: 1,
                filter: None,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    client
        .append(append("real", vec![event("a"), event("b"), event("c")]))
        .await?;
    assert_status(
        read_all(client, "real", 1, 9).await,
        Code::NotFound,
        "to_lsn",
    );
    assert_status(
        read_all(client, "real", 9, 0).await,
        Code::NotFound,
        "from_lsn",
    );
    assert_status(
        client
            .verify(VerifyRequest {
                log: "real".to_owned(),
                from_lsn: 1,
                to_lsn: 4,
            })
            .await,
        Code::NotFound,
        "to_lsn",
    );
    assert_status(
        client
            .subscribe(SubscribeRequest {
                log: "real".to_owned(),
                from_lsn: 5,
                filter: None,
            })
            .await,
        Code::NotFound,
        "from_lsn",
    );
    // Reading from just past the head is an empty range, not an error.
    assert!(read_all(client, "real", 4, 0).await?.is_empty());
    server.stop().await
}

#[tokio::test]
async fn a_fail_stopped_log_is_unavailable_and_still_readable() -> Result {
    let plan = FaultPlan::default();
    let mut server = TestServer::start_with(Limits::default(), Some(plan.clone())).await?;
    let client = &mut server.client;
    client.append(append("audit", vec![event("a")])).await?;
    plan.fail_sync_after(0);
    let failed = client.append(append("audit", vec![event("b")])).await;
    assert!(
        failed.is_err(),
        "the append whose fsync failed must not be acknowledged"
    );
    assert_status(
        client.append(append("audit", vec![event("c")])).await,
        Code::Unavailable,
        "audit",
    );
    // Reads still work; the unacknowledged event is not visible.
    let records = read_all(client, "audit", 1, 0).await?;
    assert_eq!(records.len(), 1);
    assert_eq!(
        records[0].event.as_ref().map(|e| e.event_id.as_str()),
        Some("a")
    );
    assert_eq!(
        client
            .head(HeadRequest {
                log: "audit".to_owned()
            })
            .await?
            .into_inner()
            .lsn,
        1
    );
    // Shutdown still completes; the store reports the failed log on close.
    server.served.stop().await?;
    let _ = server.store.close();
    Ok(())
}

#[tokio::test]
async fn subscribe_catches_up_then_follows() -> Result {
    let mut server = TestServer::start().await?;
    server
        .client
        .append(append("live", vec![event("a"), event("b")]))
        .await?;
    let mut stream = server
        .client
        .subscribe(SubscribeRequest {
            log: "live".to_owned(),
            from_lsn: 1,
            filter: None,
        })
        .await?
        .into_inner();
    let mut producer = LogClient::connect(server.address.clone()).await?;
    let mut seen = Vec::new();
    for round in 0..3 {
        producer
            .append(append("live", vec![event(&format!("live-{round}"))]))
            .await?;
    }
    while seen.len() < 5 {
        let record = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await?
            .ok_or("stream ended")??;
        seen.push(record.lsn);
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    // Shutdown ends the subscription instead of waiting for it.
    server.stop().await?;
    let end = tokio::time::timeout(Duration::from_secs(10), stream.next()).await?;
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    Ok(())
}

#[tokio::test]
async fn append_stream_answers_in_order_and_ends_on_error() -> Result {
    let mut server = TestServer::start().await?;
    let requests: Vec<AppendRequest> = (0..20)
        .map(|n| AppendRequest {
            log: "s".to_owned(),
            // Uneven sizes, so concurrent requests finish checking out of order.
            events: (0..5)
                .map(|k| {
                    let mut event = event(&format!("s{n}-{k}"));
                    event.payload = vec![b'x'; (n * 7919 + k * 104_729) % 20_000];
                    event
                })
                .collect(),
            atomic: n % 2 == 0,
        })
        .collect();
    let mut responses = server
        .client
        .append_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let mut index = 0;
    let mut last_lsn = 0;
    while let Some(response) = responses.next().await {
        let response = response?;
        assert_eq!(response.receipts.len(), 5);
        for (k, receipt) in response.receipts.iter().enumerate() {
            assert_eq!(receipt.event_id, format!("s{index}-{k}"));
            // Requests run concurrently but enter the log in stream order.
            assert_eq!(receipt.lsn, last_lsn + 1, "lsns follow the stream's order");
            last_lsn = receipt.lsn;
        }
        index += 1;
    }
    assert_eq!(index, 20);
    let records = read_all(&mut server.client, "s", 1, 0).await?;
    assert_eq!(records.len(), 100);

    let mut bad = event("bad");
    bad.resource.clear();
    let requests = vec![
        append("s", vec![event("ok-1")]),
        append("s", vec![bad]),
        append("s", vec![event("ok-3")]),
    ];
    let mut responses = server
        .client
        .append_stream(tokio_stream::iter(requests))
        .await?
        .into_inner();
    assert!(responses.next().await.ok_or("no first response")?.is_ok());
    let second = responses.next().await.ok_or("no second response")?;
    assert_status(
        second,
        Code::InvalidArgument,
        "request 2 of the stream: events[0].resource",
    );
    assert!(
        responses.next().await.is_none(),
        "the stream ends at the error"
    );
    // The request after the failed one was not appended: the client saw no
    // answer for it, so it must not land unseen.
    let head = server
        .client
        .head(HeadRequest {
            log: "s".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(head.lsn, 101);
    server.stop().await
}

#[tokio::test]
async fn health_and_reflection_are_served() -> Result {
    let server = TestServer::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(server.address.clone())?
        .connect()
        .await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let answer = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "trail.v1.Log".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(
        answer.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let answer = answers.next().await.ok_or("no reflection answer")??;
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        return Err("unexpected reflection answer".into());
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(names.iter().any(|name| name == "trail.v1.Log"), "{names:?}");
    server.stop().await
}

/// Python's grpcio-reflection and older grpcurl builds speak only
/// `grpc.reflection.v1alpha`; it lists the same services as v1.
#[tokio::test]
async fn reflection_v1alpha_lists_the_services() -> Result {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;

    let server = TestServer::start().await?;
    let channel = tonic::transport::Endpoint::from_shared(server.address.clone())?
        .connect()
        .await?;
    let mut reflection = ServerReflectionClient::new(channel);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "trail.v1.Log".to_owned(),
            )),
        },
    ];
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await?
        .ok_or("no reflection answer")??;
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        return Err(format!("unexpected reflection answer {answer:?}").into());
    };
    let names: Vec<String> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    for wanted in [
        "trail.v1.Log",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|name| name == wanted),
            "{wanted} not in {names:?}"
        );
    }
    let answer = tokio::time::timeout(Duration::from_secs(10), answers.next())
        .await?
        .ok_or("no second reflection answer")??;
    let Some(MessageResponse::FileDescriptorResponse(files)) = answer.message_response else {
        return Err(format!("unexpected reflection answer {answer:?}").into());
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.stop().await
}

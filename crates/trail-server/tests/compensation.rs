//! Compensation through the real gRPC server (issue 9): dry run, refusal on
//! later changes, force, cascade, a compensation of a compensation (redo),
//! a change-less event marked reverted, idempotent repeats (also after a
//! restart, and by event id), rollback to an LSN, an event id and a time,
//! marks on Read and Query, `Verify` counting the links, and every refusal
//! path with its status and message.

mod common;

use common::Result;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    rollback_request, AppendRequest, CompensateMode, CompensateRequest, CompensateResponse,
    CompensationNote, Event, Filter, GetStateRequest, HistoryRequest, Outcome, QueryRequest,
    ReadRequest, Receipt, Record, RecordKind, RollbackRequest, StateChange, VerifyRequest,
};

const LOG: &str = "shop";

type Server = common::StoreServer;

async fn start(dir: &std::path::Path) -> Result<Server> {
    Server::start(dir).await
}

fn change_event(id: &str, actor: &str, resource: &str, change: Option<Kind>) -> Event {
    Event {
        event_id: id.to_owned(),
        actor: actor.to_owned(),
        action: "order.update".to_owned(),
        resource: resource.to_owned(),
        outcome: Outcome::Success as i32,
        change: change.map(|kind| StateChange { kind: Some(kind) }),
        ..Event::default()
    }
}

fn merge(json: &str) -> Option<Kind> {
    Some(Kind::MergePatchJson(json.to_owned()))
}

async fn append(client: &mut LogClient<Channel>, log: &str, event: Event) -> Result<Receipt> {
    let mut receipts = client
        .append(AppendRequest {
            log: log.to_owned(),
            events: vec![event],
            atomic: false,
        })
        .await?
        .into_inner()
        .receipts;
    receipts.pop().ok_or_else(|| "no receipt".into())
}

fn request(lsn: u64, mode: CompensateMode) -> CompensateRequest {
    CompensateRequest {
        log: LOG.to_owned(),
        lsn,
        actor: "ops".to_owned(),
        reason: "wrong refund".to_owned(),
        mode: mode as i32,
        ..CompensateRequest::default()
    }
}

async fn state(
    client: &mut LogClient<Channel>,
    resource: &str,
    min_lsn: u64,
) -> Result<Option<serde_json::Value>> {
    let answer = client
        .get_state(GetStateRequest {
            log: LOG.to_owned(),
            resource: resource.to_owned(),
            min_lsn,
            ..GetStateRequest::default()
        })
        .await?
        .into_inner();
    Ok(if answer.exists {
        Some(serde_json::from_str(&answer.state_json)?)
    } else {
        None
    })
}

fn response_state(response: &CompensateResponse) -> Option<serde_json::Value> {
    let state = response.state.as_ref()?;
    state
        .exists
        .then(|| serde_json::from_str(&state.state_json).ok())
        .flatten()
}

async fn read_all(client: &mut LogClient<Channel>) -> Result<Vec<Record>> {
    let mut stream = client
        .read(ReadRequest {
            log: LOG.to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = stream.next().await {
        records.push(record?);
    }
    Ok(records)
}

fn expect_code<T: std::fmt::Debug>(
    result: std::result::Result<T, tonic::Status>,
    code: Code,
    needle: &str,
) -> Result {
    match result {
        Err(status) if status.code() == code && status.message().contains(needle) => Ok(()),
        other => Err(format!("expected {code:?} containing {needle:?}, got {other:?}").into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensate_refuses_forces_cascades_redoes_and_repeats() -> Result {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path()).await?;
    let client = &mut server.client;
    let created = append(
        client,
        LOG,
        change_event(
            "e1",
            "alice",
            "order/1",
            Some(Kind::SetJson(r#"{"status":"new","amount":10}"#.into())),
        ),
    )
    .await?;
    let paid = append(
        client,
        LOG,
        change_event("e2", "bob", "order/1", merge(r#"{"status":"paid"}"#)),
    )
    .await?;
    let noted = append(
        client,
        LOG,
        change_event("e3", "carol", "order/1", merge(r#"{"note":"x"}"#)),
    )
    .await?;
    let login = append(client, LOG, change_event("e4", "alice", "user/alice", None)).await?;
    assert_eq!((created.lsn, paid.lsn, noted.lsn, login.lsn), (1, 2, 3, 4));

    // A later change to the same resource: refused, naming it.
    expect_code(
        client.compensate(request(2, CompensateMode::Refuse)).await,
        Code::FailedPrecondition,
        "lsn 3 by carol (order.update)",
    )?;

    // Force, dry run first: the exact record, nothing written.
    let dry = client
        .compensate(CompensateRequest {
            dry_run: true,
            ..request(2, CompensateMode::Force)
        })
        .await?
        .into_inner();
    assert!(dry.dry_run && !dry.already_compensated);
    assert_eq!(dry.records.len(), 1);
    let record = &dry.records[0];
    assert_eq!((record.lsn, record.compensates), (0, 2));
    assert_eq!(record.compensates_hash, paid.hash);
    assert_eq!(record.kind, RecordKind::Compensation as i32);
    let event = record.event.clone().ok_or("dry run event")?;
    assert_eq!(event.event_id, "trail:compensates:2");
    assert_eq!(
        (event.actor.as_str(), event.resource.as_str()),
        ("ops", "order/1")
    );
    assert_eq!(
        event.compensation,
        Some(CompensationNote {
            reason: "wrong refund".into(),
            mode: "force".into(),
            requested_lsn: 2
        })
    );
    let expected = serde_json::json!({"status": "new", "amount": 10, "note": "x"});
    assert_eq!(response_state(&dry), Some(expected.clone()));
    assert_eq!(read_all(client).await?.len(), 4, "a dry run writes nothing");

    // For real, with auto-verify.
    let forced = client
        .compensate(CompensateRequest {
            auto_verify: true,
            ..request(2, CompensateMode::Force)
        })
        .await?
        .into_inner();
    assert_eq!(forced.records.len(), 1);
    assert_eq!(
        (forced.records[0].lsn, forced.records[0].compensates),
        (5, 2)
    );
    assert!(forced
        .auto_verify
        .as_ref()
        .is_some_and(|verify| verify.matched));
    assert_eq!(state(client, "order/1", 5).await?, Some(expected.clone()));

    // Again, by LSN and by event id: the existing compensation, nothing new.
    for again in [
        request(2, CompensateMode::Refuse),
        CompensateRequest {
            lsn: 0,
            event_id: "e2".into(),
            ..request(0, CompensateMode::Cascade)
        },
    ] {
        let repeat = client.compensate(again).await?.into_inner();
        assert!(repeat.already_compensated);
        assert_eq!(
            repeat.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![5]
        );
    }
    assert_eq!(read_all(client).await?.len(), 5);

    // Compensating the compensation redoes the change.
    let redo = client
        .compensate(request(5, CompensateMode::Refuse))
        .await?
        .into_inner();
    assert_eq!((redo.records[0].lsn, redo.records[0].compensates), (6, 5));
    assert_eq!(
        state(client, "order/1", 6).await?,
        Some(serde_json::json!({"status": "paid", "amount": 10, "note": "x"}))
    );

    // Cascade from the creation: the live later changes newest first (6
    // redid 2; 3), then 1 itself, in one atomic batch.
    let cascade = client
        .compensate(CompensateRequest {
            auto_verify: true,
            ..request(1, CompensateMode::Cascade)
        })
        .await?
        .into_inner();
    let undone: Vec<(u64, u64)> = cascade
        .records
        .iter()
        .map(|record| (record.lsn, record.compensates))
        .collect();
    assert_eq!(undone, vec![(7, 6), (8, 3), (9, 1)]);
    assert!(cascade
        .records
        .iter()
        .all(|record| record.batch_last_lsn == 9));
    assert_eq!(response_state(&cascade), None);
    assert_eq!(state(client, "order/1", 9).await?, None);

    // A change-less event is marked reverted, with no state change.
    let reverted = client
        .compensate(request(4, CompensateMode::Refuse))
        .await?
        .into_inner();
    let event = reverted.records[0].event.clone().ok_or("event")?;
    assert_eq!(event.change, None);
    assert_eq!(reverted.records[0].compensates, 4);

    // Visible everywhere: Read and Query mark the undone records, History
    // shows the compensations as rows, Verify checks every link.
    let history = client
        .history(HistoryRequest {
            log: LOG.to_owned(),
            resource: "user/alice".into(),
            min_lsn: 10,
            ..HistoryRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(history.changes.len(), 1);
    assert_eq!(
        (
            history.changes[0].lsn,
            history.changes[0].compensates,
            history.changes[0].change_kind.as_str()
        ),
        (10, 4, "none")
    );
    assert_eq!(history.changes[0].reason, "wrong refund");
    let records = read_all(client).await?;
    let marks: Vec<(u64, u64)> = records
        .iter()
        .filter(|record| record.compensated_by != 0)
        .map(|record| (record.lsn, record.compensated_by))
        .collect();
    assert_eq!(marks, vec![(1, 9), (2, 5), (3, 8), (4, 10), (5, 6), (6, 7)]);
    let query = client
        .query(QueryRequest {
            log: LOG.to_owned(),
            filter: Some(Filter {
                kind: RecordKind::Compensation as i32,
                ..Filter::default()
            }),
            min_lsn: 10,
            ..QueryRequest::default()
        })
        .await?
        .into_inner();
    let found: Vec<(u64, u64)> = query
        .records
        .iter()
        .map(|record| (record.lsn, record.compensated_by))
        .collect();
    assert_eq!(found, vec![(5, 6), (6, 7), (7, 0), (8, 0), (9, 0), (10, 0)]);
    let verify = client
        .verify(VerifyRequest {
            log: LOG.to_owned(),
            ..VerifyRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!((verify.first_bad_lsn, verify.compensations_checked), (0, 6));

    // After a restart the log's own id index still knows.
    server.stop().await?;
    let mut server = start(dir.path()).await?;
    let repeat = server
        .client
        .compensate(request(3, CompensateMode::Force))
        .await?
        .into_inner();
    assert!(repeat.already_compensated);
    assert_eq!(repeat.records[0].lsn, 8);
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_and_where() -> Result {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path()).await?;
    let client = &mut server.client;
    let first = append(
        client,
        LOG,
        change_event(
            "a1",
            "alice",
            "r/1",
            Some(Kind::SetJson(r#"{"a":1}"#.into())),
        ),
    )
    .await?;
    append(
        client,
        LOG,
        change_event("a2", "bob", "r/1", merge(r#"{"a":2}"#)),
    )
    .await?;
    let other = append(
        client,
        "other",
        change_event("o1", "alice", "r/1", merge(r#"{"a":3}"#)),
    )
    .await?;

    expect_code(
        client.compensate(request(99, CompensateMode::Refuse)).await,
        Code::NotFound,
        "lsn: 99 is not in log shop",
    )?;
    expect_code(
        client
            .compensate(CompensateRequest {
                lsn: 0,
                event_id: "o1".into(),
                ..request(0, CompensateMode::Refuse)
            })
            .await,
        Code::NotFound,
        "no event with id \"o1\" in log shop",
    )?;
    // A receipt of another log at the same LSN.
    expect_code(
        client
            .compensate(CompensateRequest {
                expected_hash: other.hash.clone(),
                ..request(1, CompensateMode::Refuse)
            })
            .await,
        Code::FailedPrecondition,
        "expected_hash: lsn 1 of log shop has hash",
    )?;
    assert_eq!(first.lsn, other.lsn);
    expect_code(
        client
            .compensate(CompensateRequest {
                reason: " ".into(),
                ..request(1, CompensateMode::Refuse)
            })
            .await,
        Code::InvalidArgument,
        "reason: must not be empty",
    )?;
    expect_code(
        client
            .compensate(CompensateRequest {
                actor: String::new(),
                ..request(1, CompensateMode::Refuse)
            })
            .await,
        Code::InvalidArgument,
        "actor: must not be empty",
    )?;
    expect_code(
        client
            .compensate(CompensateRequest {
                reason: "x".repeat(2_000),
                ..request(1, CompensateMode::Refuse)
            })
            .await,
        Code::InvalidArgument,
        "limits.reason_bytes_max",
    )?;
    expect_code(
        client
            .compensate(CompensateRequest {
                lsn: 0,
                ..request(0, CompensateMode::Refuse)
            })
            .await,
        Code::InvalidArgument,
        "name the record to compensate",
    )?;
    // The inverse of the creation no longer applies: the state moved on.
    expect_code(
        client.compensate(request(1, CompensateMode::Force)).await,
        Code::FailedPrecondition,
        "the inverse of lsn 1 of log shop no longer applies to today's state",
    )?;
    // Producers cannot write Trail's own records.
    expect_code(
        client
            .append(AppendRequest {
                log: LOG.into(),
                events: vec![change_event("trail:compensates:1", "mallory", "r/1", None)],
                atomic: false,
            })
            .await,
        Code::InvalidArgument,
        "events[0].event_id: starts with \"trail:\"",
    )?;
    expect_code(
        client
            .append(AppendRequest {
                log: LOG.into(),
                events: vec![Event {
                    compensation: Some(CompensationNote::default()),
                    ..change_event("m1", "mallory", "r/1", None)
                }],
                atomic: false,
            })
            .await,
        Code::InvalidArgument,
        "events[0].compensation: is set by Trail only",
    )?;
    expect_code(
        client
            .rollback(RollbackRequest {
                log: LOG.into(),
                resource: "r/1".into(),
                to: None,
                actor: "ops".into(),
                reason: "r".into(),
                ..RollbackRequest::default()
            })
            .await,
        Code::InvalidArgument,
        "to: name the point",
    )?;
    assert_eq!(read_all(client).await?.len(), 2, "nothing was appended");
    server.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_an_lsn_an_event_or_a_time_restores_that_state() -> Result {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path()).await?;
    let client = &mut server.client;
    let mut receipts = Vec::new();
    for step in 0..10 {
        let change = if step == 0 {
            Some(Kind::SetJson(r#"{"n":0}"#.into()))
        } else {
            merge(&format!(r#"{{"n":{step},"k{step}":true}}"#))
        };
        receipts.push(
            append(
                client,
                LOG,
                change_event(&format!("c{step}"), "alice", "acct/1", change),
            )
            .await?,
        );
        // Another resource in between, which the rollback leaves alone.
        append(
            client,
            LOG,
            change_event(
                &format!("x{step}"),
                "bob",
                "acct/2",
                merge(&format!(r#"{{"n":{step}}}"#)),
            ),
        )
        .await?;
    }
    let at_third = receipts[2].lsn;
    let expected = client
        .get_state(GetStateRequest {
            log: LOG.into(),
            resource: "acct/1".into(),
            at_lsn: at_third,
            min_lsn: receipts[9].lsn,
            ..GetStateRequest::default()
        })
        .await?
        .into_inner();
    let rollback = |to: rollback_request::To, dry_run: bool| RollbackRequest {
        log: LOG.into(),
        resource: "acct/1".into(),
        to: Some(to),
        actor: "ops".into(),
        reason: "bad import".into(),
        dry_run,
        auto_verify: !dry_run,
        ..RollbackRequest::default()
    };
    let dry = client
        .rollback(rollback(rollback_request::To::ToLsn(at_third), true))
        .await?
        .into_inner();
    assert_eq!(dry.records.len(), 7);
    let undone: Vec<u64> = dry
        .records
        .iter()
        .map(|record| record.compensates)
        .collect();
    let mut newest_first: Vec<u64> = receipts[3..].iter().map(|receipt| receipt.lsn).collect();
    newest_first.reverse();
    assert_eq!(undone, newest_first);
    assert_eq!(
        dry.state.as_ref().map(|state| state.state_json.clone()),
        Some(serde_json::from_str::<serde_json::Value>(&expected.state_json)?.to_string())
    );
    let head = read_all(client).await?.len();
    assert_eq!(head, 20, "a dry run writes nothing");
    // By event id: the same point.
    let done = client
        .rollback(rollback(
            rollback_request::To::ToEventId("c2".into()),
            false,
        ))
        .await?
        .into_inner();
    assert_eq!(done.records.len(), 7);
    assert!(done.auto_verify.is_some_and(|verify| verify.matched));
    assert_eq!(
        state(client, "acct/1", 27).await?,
        Some(serde_json::from_str(&expected.state_json)?)
    );
    assert_eq!(
        state(client, "acct/2", 27).await?,
        Some(serde_json::json!({"n": 9})),
        "another resource is untouched"
    );
    // Nothing after the point any more: nothing to do.
    let again = client
        .rollback(rollback(rollback_request::To::ToLsn(at_third), false))
        .await?
        .into_inner();
    assert!(again.records.is_empty());
    // To a time before the first change: everything goes, the state with it.
    let all = client
        .rollback(rollback(rollback_request::To::ToUnixNanos(0), false))
        .await?
        .into_inner();
    assert_eq!(all.records.len(), 3, "c2, c1, c0 are what is live");
    assert_eq!(state(client, "acct/1", 30).await?, None);
    server.stop().await
}

/// A compensation planned while producers keep changing the same resource:
/// each append of the compensation is refused by the writer if a record
/// about the resource landed after the plan's cut, and planned again. The
/// answer's auto-verify then proves the plan held when it landed (the state
/// read back at the compensation's LSN is the predicted one); a condition
/// that let a change slip in between would show as a mismatch here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_planned_under_concurrent_changes_still_holds() -> Result {
    let dir = tempfile::tempdir()?;
    let server = start(dir.path()).await?;
    let mut client = server.client.clone();
    append(
        &mut client,
        LOG,
        change_event(
            "s0",
            "alice",
            "hot/1",
            Some(Kind::SetJson(r#"{"a":1,"b":0}"#.into())),
        ),
    )
    .await?;
    let undone = append(
        &mut client,
        LOG,
        change_event("s1", "bob", "hot/1", merge(r#"{"a":2}"#)),
    )
    .await?;
    // Producers touch field b of the same resource, bounded in count.
    let mut producer = server.client.clone();
    let producing = tokio::spawn(async move {
        for step in 0..300 {
            let event = change_event(
                &format!("p{step}"),
                "svc",
                "hot/1",
                merge(&format!(r#"{{"b":{step}}}"#)),
            );
            if append(&mut producer, LOG, event).await.is_err() {
                return false;
            }
        }
        true
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut answer = None;
    for _ in 0..20 {
        match client
            .compensate(CompensateRequest {
                auto_verify: true,
                ..request(undone.lsn, CompensateMode::Force)
            })
            .await
        {
            Ok(done) => {
                answer = Some(done.into_inner());
                break;
            }
            // Five replans in a row lost to the producers: nothing landed.
            Err(status) if status.code() == Code::Aborted => continue,
            Err(status) => return Err(status.into()),
        }
    }
    let answer = answer.ok_or("the compensation never landed")?;
    assert!(producing.await?, "the producers' appends all landed");
    let auto_verify = answer.auto_verify.ok_or("auto-verify ran")?;
    assert!(auto_verify.matched);
    let landed = answer.records.first().ok_or("one record")?;
    assert_eq!(landed.compensates, undone.lsn);
    // Field a is undone; b is whatever the last producer wrote.
    let head = read_all(&mut client).await?.len() as u64;
    assert_eq!(
        state(&mut client, "hot/1", head).await?,
        Some(serde_json::json!({"a": 1, "b": 299}))
    );
    server.stop().await
}

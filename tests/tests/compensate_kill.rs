//! The real `traild`, killed with SIGKILL while it carries out one large
//! compensation: a cascade of a resource's first change (or a rollback of
//! it to that change) that appends well over a thousand compensation
//! records in one atomic batch (issue 9, "a `traild` killed during a
//! cascade: the batch is all there or not at all").
//!
//! Each round builds a fresh resource with [`CHANGES`] changes, asks for a
//! dry run (the exact plan and the predicted state), sends the real request
//! and kills the server a different delay after it, then restarts it and
//! checks, from the log itself (`Read`):
//!
//! - the compensation records about the resource are none or exactly the
//!   planned ones: the same targets and hashes in the same order, at
//!   contiguous LSNs, all with the batch's last LSN as `batch_last_lsn`;
//! - an acknowledged request's batch is there;
//! - `Verify` passes and counts every compensation link so far;
//! - the resource's state is the state before (no batch) or the predicted
//!   one (the batch);
//! - the same request sent again completes (no batch yet) or answers that
//!   it is done (already compensated; a rollback with nothing left to undo),
//!   and there is never a second batch.
//!
//! The delays are fractions of how long the same request took on a round
//! that was not killed, so that kills land before, during and after the
//! append whatever the machine's speed; the test prints how many rounds saw
//! the batch and how many did not.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};
use trail_e2e::{Error, Traild};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    rollback_request, AppendRequest, CompensateMode, CompensateRequest, CompensateResponse, Event,
    Filter, GetStateRequest, HeadRequest, Outcome, QueryRequest, ReadRequest, Record, RecordKind,
    RollbackRequest, StateChange, VerifyRequest,
};

const LOG: &str = "undo";
/// Changes per resource: the size of the batch a cascade of the first one
/// appends.
const CHANGES: usize = 1_500;
/// Events per `Append` while building a resource.
const APPEND_BATCH: usize = 500;
/// The kill delays, as fractions of the calibrated request time.
const DELAY_FRACTIONS: [f64; 6] = [0.0, 0.25, 0.4, 0.55, 0.8, 1.3];
const WAIT: Duration = Duration::from_secs(120);

async fn connect(address: &str) -> Result<LogClient<Channel>, Error> {
    let channel = Endpoint::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LogClient::new(channel))
}

fn change(step: usize) -> Kind {
    if step == 0 {
        Kind::SetJson(r#"{"n":0,"created":true}"#.to_owned())
    } else {
        Kind::MergePatchJson(format!(r#"{{"n":{step},"k{}":{step}}}"#, step % 10))
    }
}

/// Appends the [`CHANGES`] changes of `resource`; the LSN of the first.
async fn build_resource(client: &mut LogClient<Channel>, resource: &str) -> Result<u64, Error> {
    let mut first = 0;
    for start in (0..CHANGES).step_by(APPEND_BATCH) {
        let events = (start..(start + APPEND_BATCH).min(CHANGES))
            .map(|step| Event {
                event_id: format!("{resource}-{step}"),
                actor: format!("writer-{}", step % 3),
                action: "doc.update".to_owned(),
                resource: resource.to_owned(),
                outcome: Outcome::Success as i32,
                change: Some(StateChange {
                    kind: Some(change(step)),
                }),
                ..Event::default()
            })
            .collect();
        let receipts = client
            .append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic: true,
            })
            .await?
            .into_inner()
            .receipts;
        assert_eq!(receipts.len(), (start + APPEND_BATCH).min(CHANGES) - start);
        if start == 0 {
            first = receipts[0].lsn;
        }
    }
    Ok(first)
}

/// Waits (bounded) until both derived stores have taken in the head.
async fn caught_up(client: &mut LogClient<Channel>) -> Result<u64, Error> {
    let started = Instant::now();
    loop {
        let head = client
            .head(HeadRequest {
                log: LOG.to_owned(),
            })
            .await?
            .into_inner();
        assert!(head.derived_error.is_empty(), "{}", head.derived_error);
        if head.index_lsn == head.lsn && head.state_lsn == head.lsn {
            return Ok(head.lsn);
        }
        if started.elapsed() > WAIT {
            return Err(format!("derived stores did not catch up: {head:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn state(
    client: &mut LogClient<Channel>,
    resource: &str,
    min_lsn: u64,
) -> Result<Option<serde_json::Value>, Error> {
    let answer = client
        .get_state(GetStateRequest {
            log: LOG.to_owned(),
            resource: resource.to_owned(),
            min_lsn,
            min_lsn_timeout_ms: 60_000,
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
        .then(|| serde_json::from_str(&state.state_json).unwrap())
}

/// What a round asks for: a cascade of the first change, or a rollback to
/// it (the two ways to append one large batch).
#[derive(Clone, Copy, Debug)]
enum Ask {
    Cascade { first: u64 },
    Rollback { first: u64 },
}

impl Ask {
    async fn send(
        self,
        client: &mut LogClient<Channel>,
        resource: &str,
        dry_run: bool,
    ) -> Result<CompensateResponse, tonic::Status> {
        let reason = format!("undo all of {resource}");
        let answer = match self {
            Ask::Cascade { first } => {
                client
                    .compensate(CompensateRequest {
                        log: LOG.to_owned(),
                        lsn: first,
                        actor: "ops".to_owned(),
                        reason,
                        mode: CompensateMode::Cascade as i32,
                        dry_run,
                        ..CompensateRequest::default()
                    })
                    .await
            }
            Ask::Rollback { first } => {
                client
                    .rollback(RollbackRequest {
                        log: LOG.to_owned(),
                        resource: resource.to_owned(),
                        to: Some(rollback_request::To::ToLsn(first)),
                        actor: "ops".to_owned(),
                        reason,
                        dry_run,
                        ..RollbackRequest::default()
                    })
                    .await
            }
        };
        answer.map(tonic::Response::into_inner)
    }
}

/// One resource, built and planned: what a kill round checks against.
struct Planned {
    resource: String,
    ask: Ask,
    /// The head before the request: every record after it is the request's.
    head: u64,
    before: Option<serde_json::Value>,
    predicted: Option<serde_json::Value>,
    /// `(compensates, compensates_hash)` of the planned records, in order.
    plan: Vec<(u64, Vec<u8>)>,
}

async fn prepare(
    client: &mut LogClient<Channel>,
    round: usize,
    cascade: bool,
) -> Result<Planned, Error> {
    let resource = format!("doc/{round}");
    let first = build_resource(client, &resource).await?;
    let head = caught_up(client).await?;
    let before = state(client, &resource, head).await?;
    assert!(before.is_some(), "{resource}");
    let ask = if cascade {
        Ask::Cascade { first }
    } else {
        Ask::Rollback { first }
    };
    let dry = ask.send(client, &resource, true).await?;
    assert!(dry.dry_run && !dry.already_compensated);
    let plan: Vec<(u64, Vec<u8>)> = dry
        .records
        .iter()
        .map(|record| (record.compensates, record.compensates_hash.clone()))
        .collect();
    // Newest first, down to the first change (cascade) or to the one after
    // it (rollback).
    let undone: Vec<u64> = plan.iter().map(|(lsn, _)| *lsn).collect();
    let expected: Vec<u64> = match ask {
        Ask::Cascade { first } => (first..first + CHANGES as u64).rev().collect(),
        Ask::Rollback { first } => (first + 1..first + CHANGES as u64).rev().collect(),
    };
    assert_eq!(undone, expected, "{resource}: the plan");
    let predicted = response_state(&dry);
    match ask {
        Ask::Cascade { .. } => assert_eq!(predicted, None),
        Ask::Rollback { .. } => assert_eq!(
            predicted,
            Some(serde_json::json!({"n": 0, "created": true}))
        ),
    }
    assert_eq!(caught_up(client).await?, head, "a dry run appends nothing");
    Ok(Planned {
        resource,
        ask,
        head,
        before,
        predicted,
        plan,
    })
}

/// The compensation records after `planned.head`, from the log; asserts
/// that every record there is one (about the resource).
async fn batch_records(
    client: &mut LogClient<Channel>,
    planned: &Planned,
) -> Result<Vec<Record>, Error> {
    let mut stream = client
        .read(ReadRequest {
            log: LOG.to_owned(),
            from_lsn: planned.head + 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut after = Vec::new();
    while let Some(record) = stream.next().await {
        after.push(record?);
    }
    for record in &after {
        assert_eq!(
            record.kind,
            RecordKind::Compensation as i32,
            "lsn {}",
            record.lsn
        );
        assert_eq!(
            record.event.as_ref().map(|event| event.resource.as_str()),
            Some(planned.resource.as_str())
        );
    }
    Ok(after)
}

/// The LSNs of the compensation records about `resource`, through `Query`
/// (paged).
async fn indexed_compensations(
    client: &mut LogClient<Channel>,
    resource: &str,
    head: u64,
) -> Result<Vec<u64>, Error> {
    let mut found = Vec::new();
    let mut cursor = String::new();
    for _ in 0..100 {
        let page = client
            .query(QueryRequest {
                log: LOG.to_owned(),
                filter: Some(Filter {
                    resource: resource.to_owned(),
                    kind: RecordKind::Compensation as i32,
                    ..Filter::default()
                }),
                limit: 1_000,
                cursor: cursor.clone(),
                min_lsn: head,
                ..QueryRequest::default()
            })
            .await?
            .into_inner();
        found.extend(page.records.iter().map(|record| record.lsn));
        if page.next_cursor.is_empty() {
            return Ok(found);
        }
        cursor = page.next_cursor;
    }
    Err("query pages never end".into())
}

/// The batch is there exactly as planned (true) or not at all (false).
fn all_or_nothing(planned: &Planned, records: &[Record]) -> bool {
    if records.is_empty() {
        return false;
    }
    let got: Vec<(u64, Vec<u8>)> = records
        .iter()
        .map(|record| (record.compensates, record.compensates_hash.clone()))
        .collect();
    assert_eq!(
        got.len(),
        planned.plan.len(),
        "{}: a partial or second batch",
        planned.resource
    );
    assert_eq!(got, planned.plan, "{}", planned.resource);
    let lsns: Vec<u64> = records.iter().map(|record| record.lsn).collect();
    let contiguous: Vec<u64> =
        (planned.head + 1..=planned.head + planned.plan.len() as u64).collect();
    assert_eq!(lsns, contiguous, "{}", planned.resource);
    let last = *lsns.last().unwrap();
    assert!(
        records.iter().all(|record| record.batch_last_lsn == last),
        "{}: one batch ends at {last}",
        planned.resource
    );
    true
}

/// After a kill (or a retry): all or nothing, the state it implies, Verify
/// (`links_before`: the compensation links of the log before this round).
async fn check(
    client: &mut LogClient<Channel>,
    planned: &Planned,
    links_before: u64,
) -> Result<bool, Error> {
    let head = caught_up(client).await?;
    let records = batch_records(client, planned).await?;
    let present = all_or_nothing(planned, &records);
    // The query index agrees: none or all of them, never a part.
    let indexed = indexed_compensations(client, &planned.resource, head).await?;
    let expected: Vec<u64> = records.iter().map(|record| record.lsn).collect();
    assert_eq!(indexed, expected, "{}: the query index", planned.resource);
    let expected = if present {
        &planned.predicted
    } else {
        &planned.before
    };
    assert_eq!(
        &state(client, &planned.resource, head).await?,
        expected,
        "{}: the state (batch present: {present})",
        planned.resource
    );
    let verify = client
        .verify(VerifyRequest {
            log: LOG.to_owned(),
            ..VerifyRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(
        (verify.first_bad_lsn, verify.reason.as_str()),
        (0, ""),
        "verify"
    );
    assert_eq!(verify.head_lsn, head);
    let links = if present {
        planned.plan.len() as u64
    } else {
        0
    };
    assert_eq!(verify.compensations_checked, links_before + links);
    Ok(present)
}

/// The same request again after the restart: it completes, or says it is
/// done; either way exactly one batch. `links_before`: the compensation
/// links of the log before this round.
async fn retry(
    client: &mut LogClient<Channel>,
    planned: &Planned,
    present: bool,
    links_before: u64,
) -> Result<(), Error> {
    let answer = planned.ask.send(client, &planned.resource, false).await?;
    match (planned.ask, present) {
        (_, false) => {
            assert!(!answer.already_compensated);
            assert_eq!(answer.records.len(), planned.plan.len());
            assert_eq!(answer.records[0].lsn, planned.head + 1);
        }
        (Ask::Cascade { .. }, true) => {
            assert!(answer.already_compensated, "{answer:?}");
            // The record that compensates the first change: the batch's last.
            assert_eq!(
                answer.records.iter().map(|r| r.lsn).collect::<Vec<_>>(),
                [planned.head + planned.plan.len() as u64]
            );
        }
        (Ask::Rollback { .. }, true) => {
            assert!(answer.records.is_empty(), "nothing left to undo");
        }
    }
    assert_eq!(response_state(&answer), planned.predicted);
    assert!(
        check(client, planned, links_before).await?,
        "{}: the batch after the retry",
        planned.resource
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_during_a_large_compensation_batch_it_is_all_or_nothing() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut server = Traild::start(&data, &[])?;
    let mut client = connect(&server.address).await?;

    // Calibration: the same kind of request, not killed, timed.
    let planned = prepare(&mut client, 0, true).await?;
    let started = Instant::now();
    let done = planned
        .ask
        .send(&mut client, &planned.resource, false)
        .await?;
    let took = started.elapsed();
    assert_eq!(done.records.len(), CHANGES);
    assert!(check(&mut client, &planned, 0).await?);
    let mut links = CHANGES as u64;
    eprintln!(
        "calibration: a cascade of {CHANGES} compensation records took {} ms",
        took.as_millis()
    );

    let mut outcomes = Vec::new();
    for (index, fraction) in DELAY_FRACTIONS.iter().enumerate() {
        let round = index + 1;
        let planned = prepare(&mut client, round, round % 2 == 1).await?;
        let delay = took.mul_f64(*fraction);
        // Its own connection, made before the clock starts.
        let mut sender = connect(&server.address).await?;
        let (ask, resource) = (planned.ask, planned.resource.clone());
        let request = tokio::spawn(async move { ask.send(&mut sender, &resource, false).await });
        tokio::time::sleep(delay).await;
        server.kill()?;
        let answered = tokio::time::timeout(Duration::from_secs(60), request).await??;

        server = Traild::start(&data, &[])?;
        client = connect(&server.address).await?;
        let present = check(&mut client, &planned, links).await?;
        if let Ok(response) = &answered {
            assert!(present, "{}: acknowledged, then lost", planned.resource);
            assert_eq!(response.records.len(), planned.plan.len());
        }
        eprintln!(
            "round {round} ({:?}): killed {} ms after the request; batch {}; the client saw {}",
            planned.ask,
            delay.as_millis(),
            if present { "present" } else { "absent" },
            match &answered {
                Ok(_) => "success".to_owned(),
                Err(status) => format!("{:?}", status.code()),
            }
        );
        outcomes.push(present);
        retry(&mut client, &planned, present, links).await?;
        links += planned.plan.len() as u64;
    }
    let present = outcomes.iter().filter(|present| **present).count();
    eprintln!(
        "batch present in {present} rounds, absent in {} rounds",
        outcomes.len() - present
    );
    server.terminate()?;
    Ok(())
}

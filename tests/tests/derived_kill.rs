//! The real `traild`, killed with SIGKILL while producers append events that
//! change resource state, so its derived stores (query index, state store)
//! are mid-batch at the kill, several times in one run. After each restart
//! both stores must catch up to the log's head, and at the end every
//! resource's state, history and query answer must equal what a plain
//! replay of the log (read back through `Read`) says.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use trail_e2e::{Error, Traild};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    AppendRequest, Event, Filter, GetStateRequest, HeadRequest, HistoryRequest, Outcome,
    QueryRequest, Record, StateChange,
};

const CYCLES: usize = 3;
const PRODUCERS: usize = 4;
/// Most requests one producer sends in one cycle (the kill comes first).
const REQUESTS_PER_PRODUCER_MAX: usize = 400;
const RESOURCES: usize = 12;
const LOG: &str = "derived";

fn event(producer: usize, cycle: usize, sequence: usize, index: usize) -> Event {
    let resource = (sequence * 7 + index) % RESOURCES;
    Event {
        event_id: format!("p{producer}-c{cycle}-s{sequence}-{index}"),
        actor: format!("producer-{producer}"),
        action: "doc.update".to_owned(),
        resource: format!("doc/{resource}"),
        outcome: Outcome::Success as i32,
        change: Some(StateChange {
            kind: Some(Kind::MergePatchJson(format!(
                r#"{{"by":"producer-{producer}","seq":{sequence},"c{cycle}":true}}"#
            ))),
        }),
        ..Event::default()
    }
}

async fn connect(address: &str) -> Result<LogClient<Channel>, Error> {
    let channel = Endpoint::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LogClient::new(channel))
}

/// Appends until told to stop or the cap is reached; errors (the kill) end it.
async fn produce(address: String, producer: usize, cycle: usize) {
    let Ok(mut client) = connect(&address).await else {
        return;
    };
    for sequence in 0..REQUESTS_PER_PRODUCER_MAX {
        let events = (0..10)
            .map(|index| event(producer, cycle, sequence, index))
            .collect();
        let sent = client
            .append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic: false,
            })
            .await;
        if sent.is_err() {
            return;
        }
    }
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
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("derived stores did not catch up: {head:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// RFC 7396 for the flat objects this test writes: keys replace.
fn model_states(records: &[Record]) -> BTreeMap<String, (serde_json::Value, Vec<u64>)> {
    let mut states: BTreeMap<String, (serde_json::Value, Vec<u64>)> = BTreeMap::new();
    for record in records {
        let event = record.event.as_ref().unwrap();
        let Some(Kind::MergePatchJson(patch)) = event.change.as_ref().and_then(|c| c.kind.clone())
        else {
            panic!("every event carries a merge patch");
        };
        let patch: serde_json::Value = serde_json::from_str(&patch).unwrap();
        let entry = states
            .entry(event.resource.clone())
            .or_insert_with(|| (serde_json::json!({}), Vec::new()));
        for (key, value) in patch.as_object().unwrap() {
            entry.0[key] = value.clone();
        }
        entry.1.push(record.lsn);
    }
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_indexing_resumes_and_converges() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    for cycle in 0..CYCLES {
        let server = Traild::start(&data, &[])?;
        let mut client = connect(&server.address).await?;
        if cycle > 0 {
            caught_up(&mut client).await?;
        }
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| tokio::spawn(produce(server.address.clone(), producer, cycle)))
            .collect();
        // Let the stores fall into the middle of a batch, then kill.
        tokio::time::sleep(Duration::from_millis(700 + 300 * cycle as u64)).await;
        server.kill()?;
        for producer in producers {
            tokio::time::timeout(Duration::from_secs(30), producer).await??;
        }
    }
    let server = Traild::start(&data, &[])?;
    let mut client = connect(&server.address).await?;
    let head = caught_up(&mut client).await?;
    let records = trail_e2e::read_all(&mut client, LOG).await?;
    assert_eq!(records.len() as u64, head);
    assert!(
        head > 100,
        "the producers appended too little to test anything: {head}"
    );
    let model = model_states(&records);
    for (resource, (state, lsns)) in &model {
        let answer = client
            .get_state(GetStateRequest {
                log: LOG.to_owned(),
                resource: resource.clone(),
                min_lsn: head,
                ..GetStateRequest::default()
            })
            .await?
            .into_inner();
        let got: serde_json::Value = serde_json::from_str(&answer.state_json)?;
        assert_eq!(&got, state, "{resource}");
        assert_eq!(answer.last_change_lsn, *lsns.last().unwrap(), "{resource}");
        // History: one row per change, in LSN order (paged).
        let mut rows = Vec::new();
        let mut from = 1;
        loop {
            let page = client
                .history(HistoryRequest {
                    log: LOG.to_owned(),
                    resource: resource.clone(),
                    from_lsn: from,
                    limit: 1_000,
                    ..HistoryRequest::default()
                })
                .await?
                .into_inner();
            rows.extend(page.changes.iter().map(|row| row.lsn));
            if page.next_from_lsn == 0 {
                break;
            }
            from = page.next_from_lsn;
        }
        assert_eq!(&rows, lsns, "history of {resource}");
        // Query by resource: the same LSNs.
        let mut found = Vec::new();
        let mut cursor = String::new();
        loop {
            let page = client
                .query(QueryRequest {
                    log: LOG.to_owned(),
                    filter: Some(Filter {
                        resource: resource.clone(),
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
                break;
            }
            cursor = page.next_cursor;
        }
        assert_eq!(&found, lsns, "query of {resource}");
    }
    server.terminate()?;
    Ok(())
}

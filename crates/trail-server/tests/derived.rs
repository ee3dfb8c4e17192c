//! Derived state through the real gRPC server: Query against a brute-force
//! scan of the log for random filters, directions and page sizes; the
//! read-your-writes wait; GetState now, at an LSN and at a time; History
//! with field changes and a rejected change; Snapshot; filtered Subscribe;
//! and a damaged query index rebuilt to identical answers after a restart.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Result;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;
use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    AppendRequest, Event, Filter, GetStateRequest, GetStateResponse, HeadRequest, HistoryRequest,
    Outcome, QueryRequest, Record, RecordKind, SnapshotRequest, StateChange, SubscribeRequest,
};

const LOG: &str = "audit";

/// A small deterministic generator, so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[usize::try_from(self.below(items.len() as u64)).unwrap_or(0)]
    }
}

const ACTORS: [&str; 4] = ["alice", "bob", "svc/billing", "svc/orders"];
const ACTIONS: [&str; 4] = ["refund.create", "refund.approve", "order.update", "login"];
const RESOURCES: [&str; 4] = ["order/1", "order/2", "order/10", "user/alice"];
const TRACES: [&str; 3] = ["t-1", "t-2", "t-3"];

fn random_event(rng: &mut Rng, index: usize) -> Event {
    let mut attributes = BTreeMap::new();
    if rng.below(2) == 0 {
        attributes.insert("region".to_owned(), rng.pick(&["eu", "us"]).to_owned());
    }
    if rng.below(3) == 0 {
        attributes.insert("tier".to_owned(), rng.pick(&["gold", "free"]).to_owned());
    }
    Event {
        event_id: format!("e-{index}"),
        actor: rng.pick(&ACTORS).to_owned(),
        action: rng.pick(&ACTIONS).to_owned(),
        resource: rng.pick(&RESOURCES).to_owned(),
        trace_id: rng.pick(&TRACES).to_owned(),
        outcome: i32::try_from(1 + rng.below(3)).unwrap_or(1),
        occurred_at_unix_nanos: i64::try_from(1_000 + rng.below(1_000)).unwrap_or(0),
        attributes,
        payload: Vec::new(),
        change: None,
        compensation: None,
    }
}

fn random_text(rng: &mut Rng, values: &[&str]) -> String {
    match rng.below(4) {
        0 => {
            let value = rng.pick(values);
            let cut = usize::try_from(rng.below(value.len() as u64 + 1)).unwrap_or(0);
            format!("{}*", &value[..cut])
        }
        1 => rng.pick(values).to_owned(),
        _ => String::new(),
    }
}

fn random_filter(rng: &mut Rng, times: &[i64]) -> Filter {
    let mut filter = Filter {
        actor: random_text(rng, &ACTORS),
        resource: random_text(rng, &RESOURCES),
        action: random_text(rng, &ACTIONS),
        ..Filter::default()
    };
    if rng.below(4) == 0 {
        filter.trace_id = rng.pick(&TRACES).to_owned();
    }
    if rng.below(4) == 0 {
        filter.outcome = i32::try_from(1 + rng.below(3)).unwrap_or(1);
    }
    if rng.below(4) == 0 {
        filter
            .attributes
            .insert("region".to_owned(), rng.pick(&["eu", "us"]).to_owned());
    }
    if rng.below(4) == 0 {
        let at = times[usize::try_from(rng.below(times.len() as u64)).unwrap_or(0)];
        filter.recorded_since_unix_nanos = Some(at);
    }
    if rng.below(4) == 0 {
        let at = times[usize::try_from(rng.below(times.len() as u64)).unwrap_or(0)];
        filter.recorded_until_unix_nanos = Some(at + 1);
    }
    if rng.below(4) == 0 {
        filter.occurred_since_unix_nanos = Some(i64::try_from(1_000 + rng.below(500)).unwrap_or(0));
        filter.occurred_until_unix_nanos = Some(i64::try_from(1_500 + rng.below(500)).unwrap_or(0));
    }
    if let (Some(since), Some(until)) = (
        filter.recorded_since_unix_nanos,
        filter.recorded_until_unix_nanos,
    ) {
        if since >= until {
            filter.recorded_until_unix_nanos = None;
        }
    }
    filter
}

/// The reference: written from the contract's words, not from the server's code.
fn text_matches(wanted: &str, value: &str) -> bool {
    match wanted.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => wanted.is_empty() || wanted == value,
    }
}

fn brute_force(records: &[Record], filter: &Filter) -> Vec<u64> {
    let in_range = |t: i64, since: Option<i64>, until: Option<i64>| {
        since.is_none_or(|since| t >= since) && until.is_none_or(|until| t < until)
    };
    records
        .iter()
        .filter(|record| {
            let event = record.event.as_ref().expect("events");
            text_matches(&filter.actor, &event.actor)
                && text_matches(&filter.resource, &event.resource)
                && text_matches(&filter.action, &event.action)
                && (filter.trace_id.is_empty() || filter.trace_id == event.trace_id)
                && (filter.outcome == 0 || filter.outcome == event.outcome)
                && filter
                    .attributes
                    .iter()
                    .all(|(key, value)| event.attributes.get(key) == Some(value))
                && in_range(
                    record.recorded_at_unix_nanos,
                    filter.recorded_since_unix_nanos,
                    filter.recorded_until_unix_nanos,
                )
                && in_range(
                    event.occurred_at_unix_nanos,
                    filter.occurred_since_unix_nanos,
                    filter.occurred_until_unix_nanos,
                )
        })
        .map(|record| record.lsn)
        .collect()
}

/// Every page of a query, following cursors; the LSNs in the order served.
async fn query_all(
    client: &mut LogClient<Channel>,
    filter: &Filter,
    descending: bool,
    limit: u32,
    min_lsn: u64,
) -> Result<Vec<u64>> {
    let mut lsns = Vec::new();
    let mut cursor = String::new();
    for _page in 0..10_000 {
        let page = client
            .query(QueryRequest {
                log: LOG.to_owned(),
                filter: Some(filter.clone()),
                limit,
                cursor: cursor.clone(),
                descending,
                min_lsn,
                min_lsn_timeout_ms: 10_000,
            })
            .await?
            .into_inner();
        assert!(page.records.len() <= limit as usize);
        assert!(page.index_lsn >= min_lsn);
        for record in &page.records {
            assert!(record.event.is_some(), "whole records come back");
            lsns.push(record.lsn);
        }
        if page.next_cursor.is_empty() {
            return Ok(lsns);
        }
        cursor = page.next_cursor;
    }
    Err("more than 10,000 pages".into())
}

async fn read_everything(client: &mut LogClient<Channel>) -> Result<Vec<Record>> {
    let mut stream = client
        .read(trail_proto::v1::ReadRequest {
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

type Server = common::StoreServer;

async fn start(dir: &std::path::Path) -> Result<Server> {
    Server::start(dir).await
}

fn cases() -> usize {
    std::env::var("TRAIL_QUERY_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_equals_a_scan_of_the_log_and_survives_a_rebuild() -> Result {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path()).await?;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut last = 0;
    for batch in 0..12 {
        let events = (0..50)
            .map(|i| random_event(&mut rng, batch * 50 + i))
            .collect();
        let response = server
            .client
            .append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic: false,
            })
            .await?
            .into_inner();
        last = response.receipts.last().map_or(0, |receipt| receipt.lsn);
    }
    let records = read_everything(&mut server.client).await?;
    assert_eq!(records.len(), 600);
    let times: Vec<i64> = records.iter().map(|r| r.recorded_at_unix_nanos).collect();
    let mut answers = Vec::new();
    for case in 0..cases() {
        let filter = random_filter(&mut rng, &times);
        let descending = rng.below(2) == 0;
        let limit = u32::try_from(1 + rng.below(70)).unwrap_or(1);
        let mut expected = brute_force(&records, &filter);
        if descending {
            expected.reverse();
        }
        let got = query_all(&mut server.client, &filter, descending, limit, last).await?;
        assert_eq!(
            got, expected,
            "case {case}: {filter:?} descending {descending} limit {limit}"
        );
        answers.push((filter, descending, got));
    }

    // A cursor is bound to its query.
    let page = server
        .client
        .query(QueryRequest {
            log: LOG.to_owned(),
            limit: 1,
            min_lsn: last,
            ..QueryRequest::default()
        })
        .await?
        .into_inner();
    let other = server
        .client
        .query(QueryRequest {
            log: LOG.to_owned(),
            limit: 1,
            cursor: page.next_cursor.clone(),
            filter: Some(Filter {
                actor: "alice".to_owned(),
                ..Filter::default()
            }),
            ..QueryRequest::default()
        })
        .await;
    let status = other.expect_err("cursor of another filter");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("cursor"), "{}", status.message());

    // Waiting for an LSN that never comes is DEADLINE_EXCEEDED, saying how far it got.
    let waited = server
        .client
        .query(QueryRequest {
            log: LOG.to_owned(),
            min_lsn: last + 10,
            min_lsn_timeout_ms: 200,
            ..QueryRequest::default()
        })
        .await
        .expect_err("never reached");
    assert_eq!(waited.code(), Code::DeadlineExceeded);
    assert!(
        waited.message().contains(&format!("min_lsn {}", last + 10)),
        "{}",
        waited.message()
    );
    // Bounds are named.
    let too_big = server
        .client
        .query(QueryRequest {
            log: LOG.to_owned(),
            limit: 1_000_000,
            ..QueryRequest::default()
        })
        .await
        .expect_err("page too large");
    assert_eq!(too_big.code(), Code::ResourceExhausted);
    assert!(too_big.message().contains("limits.query_page_records_max"));
    server.stop().await?;

    // Damage the query index: it is rebuilt from the log, never trusted,
    // and answers exactly as before.
    let index_dir = dir.path().join(LOG).join("derived").join("query");
    let meta = index_dir.join("meta.json");
    std::fs::write(&meta, b"{ not json")?;
    let mut server = start(dir.path()).await?;
    for (case, (filter, descending, before)) in answers.iter().enumerate().take(40) {
        let got = query_all(&mut server.client, filter, *descending, 25, last).await?;
        assert_eq!(&got, before, "after rebuild, case {case}");
    }
    server.stop().await?;
    Ok(())
}

/// Restarts a server on `dir` and checks that order/7's state at LSN 1 and
/// now are `first` and `now`.
async fn same_state_after_restart(
    dir: &std::path::Path,
    first: &GetStateResponse,
    now: &GetStateResponse,
) -> Result {
    let mut server = start(dir).await?;
    let get = |at_lsn| GetStateRequest {
        log: LOG.to_owned(),
        resource: "order/7".to_owned(),
        at_lsn,
        min_lsn: 9,
        min_lsn_timeout_ms: 10_000,
        ..GetStateRequest::default()
    };
    let again = server.client.get_state(get(1)).await?.into_inner();
    assert_eq!(again.state_json, first.state_json);
    let again_now = server.client.get_state(get(0)).await?.into_inner();
    assert_eq!(again_now.state_json, now.state_json);
    assert_eq!(again_now.last_change_lsn, now.last_change_lsn);
    server.stop().await
}

fn change_event(id: &str, actor: &str, resource: &str, kind: Kind) -> Event {
    Event {
        event_id: id.to_owned(),
        actor: actor.to_owned(),
        action: "order.update".to_owned(),
        resource: resource.to_owned(),
        outcome: Outcome::Success as i32,
        change: Some(StateChange { kind: Some(kind) }),
        ..Event::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_history_snapshot_and_filtered_subscribe() -> Result {
    let dir = tempfile::tempdir()?;
    let mut server = start(dir.path()).await?;
    let subscription = server
        .client
        .subscribe(SubscribeRequest {
            log: LOG.to_owned(),
            from_lsn: 1,
            filter: Some(Filter {
                resource: "order/*".to_owned(),
                ..Filter::default()
            }),
        })
        .await;
    // The log does not exist before its first append.
    assert_eq!(
        subscription.as_ref().err().map(tonic::Status::code),
        Some(Code::NotFound)
    );
    let events = vec![
        change_event(
            "c1",
            "alice",
            "order/7",
            Kind::SetJson(r#"{"status":"pending","total":10}"#.into()),
        ),
        change_event(
            "c2",
            "bob",
            "user/bob",
            Kind::SetJson(r#"{"name":"bob"}"#.into()),
        ),
        change_event(
            "c3",
            "bob",
            "order/7",
            Kind::MergePatchJson(r#"{"status":"active"}"#.into()),
        ),
        change_event(
            "c4",
            "carol",
            "order/7",
            Kind::JsonPatchJson(r#"[{"op":"replace","path":"/missing","value":1}]"#.into()),
        ),
        change_event(
            "c5",
            "dave",
            "order/7",
            Kind::JsonPatchJson(r#"[{"op":"add","path":"/note","value":"gift"}]"#.into()),
        ),
        change_event("c6", "erin", "order/8", Kind::SetJson("1".into())),
        change_event("c7", "erin", "order/8", Kind::Delete(true)),
    ];
    let receipts = server
        .client
        .append(AppendRequest {
            log: LOG.to_owned(),
            events,
            atomic: false,
        })
        .await?
        .into_inner()
        .receipts;
    assert_eq!(receipts.len(), 7);
    let get = |at_lsn: u64, at_unix_nanos: Option<i64>| GetStateRequest {
        log: LOG.to_owned(),
        resource: "order/7".to_owned(),
        at_lsn,
        at_unix_nanos,
        min_lsn: 7,
        min_lsn_timeout_ms: 10_000,
    };
    let now = server.client.get_state(get(0, None)).await?.into_inner();
    assert!(now.exists);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&now.state_json)?,
        serde_json::json!({"status": "active", "total": 10, "note": "gift"})
    );
    assert_eq!(now.last_change_lsn, 5);
    assert_eq!(now.state_lsn, 7);
    assert_eq!(now.state_hash, receipts[6].hash);
    let first = server.client.get_state(get(1, None)).await?.into_inner();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.state_json)?,
        serde_json::json!({"status": "pending", "total": 10})
    );
    assert_eq!(first.last_change_lsn, 1);
    // As of the time of lsn 3: after the merge patch, before the rest.
    let at_three = server
        .client
        .get_state(get(0, Some(receipts[2].recorded_at_unix_nanos)))
        .await?
        .into_inner();
    assert!(at_three.last_change_lsn >= 3, "{at_three:?}");
    let deleted = server
        .client
        .get_state(GetStateRequest {
            resource: "order/8".to_owned(),
            ..get(0, None)
        })
        .await?
        .into_inner();
    assert!(!deleted.exists);
    let beyond = server
        .client
        .get_state(get(99, None))
        .await
        .expect_err("beyond head");
    assert_eq!(beyond.code(), Code::NotFound);

    let history = server
        .client
        .history(HistoryRequest {
            log: LOG.to_owned(),
            resource: "order/7".to_owned(),
            min_lsn: 7,
            ..HistoryRequest::default()
        })
        .await?
        .into_inner();
    let rows: Vec<(u64, bool, &str)> = history
        .changes
        .iter()
        .map(|row| (row.lsn, row.applied, row.actor.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (1, true, "alice"),
            (3, true, "bob"),
            (4, false, "carol"),
            (5, true, "dave")
        ]
    );
    let merge = &history.changes[1];
    assert_eq!(merge.change_kind, "merge_patch");
    assert_eq!(merge.fields.len(), 1);
    assert_eq!(merge.fields[0].path, "/status");
    assert_eq!(merge.fields[0].before_json.as_deref(), Some(r#""pending""#));
    assert_eq!(merge.fields[0].after_json.as_deref(), Some(r#""active""#));
    assert!(history.changes[2].fields.is_empty());
    assert!(!history.changes[2].rejected_reason.is_empty());
    // Paged.
    let page = server
        .client
        .history(HistoryRequest {
            log: LOG.to_owned(),
            resource: "order/7".to_owned(),
            limit: 2,
            ..HistoryRequest::default()
        })
        .await?
        .into_inner();
    assert_eq!(page.changes.len(), 2);
    assert_eq!(page.next_from_lsn, 4);

    // Filtered Subscribe: only order/* records, catching up then live.
    let mut subscription = server
        .client
        .subscribe(SubscribeRequest {
            log: LOG.to_owned(),
            from_lsn: 1,
            filter: Some(Filter {
                resource: "order/*".to_owned(),
                ..Filter::default()
            }),
        })
        .await?
        .into_inner();
    server
        .client
        .append(AppendRequest {
            log: LOG.to_owned(),
            events: vec![
                change_event("c8", "x", "user/x", Kind::SetJson("{}".into())),
                change_event("c9", "x", "order/9", Kind::SetJson("{}".into())),
            ],
            atomic: false,
        })
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let record = tokio::time::timeout(Duration::from_secs(10), subscription.next())
            .await?
            .ok_or("subscription ended")??;
        assert_eq!(record.kind, RecordKind::Event as i32);
        seen.push(record.lsn);
    }
    assert_eq!(seen, vec![1, 3, 4, 5, 6, 7 /* then 9 */]);
    let next = tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await?
        .ok_or("subscription ended")??;
    assert_eq!(next.lsn, 9);
    drop(subscription);

    // A snapshot on demand; Head shows how far each store has come.
    let mut admin = AdminClient::connect(server.address.clone()).await?;
    let snapshot = admin
        .snapshot(SnapshotRequest {
            log: LOG.to_owned(),
        })
        .await?
        .into_inner();
    assert!(snapshot.lsn >= 7, "{snapshot:?}");
    assert!(snapshot.file.ends_with(".snap"), "{snapshot:?}");
    assert!(dir
        .path()
        .join(LOG)
        .join("snapshots")
        .join(&snapshot.file)
        .exists());
    let head = server
        .client
        .head(HeadRequest {
            log: LOG.to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!(head.lsn, 9);
    assert!(head.derived_error.is_empty(), "{}", head.derived_error);
    assert!(head.state_lsn <= 9 && head.index_lsn <= 9);
    server.stop().await?;

    // The state store removed: rebuilt from the snapshot plus the tail,
    // with the same answers.
    let state_dir = dir.path().join(LOG).join("derived").join("state");
    std::fs::remove_dir_all(&state_dir)?;
    same_state_after_restart(dir.path(), &first, &now).await?;

    // A damaged snapshot is skipped, never trusted: with the state store
    // gone again, it is rebuilt from the log alone, to the same answers.
    let snapshot_path = dir.path().join(LOG).join("snapshots").join(&snapshot.file);
    let mut bytes = std::fs::read(&snapshot_path)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snapshot_path, &bytes)?;
    std::fs::remove_dir_all(&state_dir)?;
    same_state_after_restart(dir.path(), &first, &now).await?;
    Ok(())
}

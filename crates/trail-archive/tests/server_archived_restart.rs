//! A `traild` with most of its log only in the archive (issue "Tiered
//! storage", read-through and the last test of part 6), against a real S3
//! server on loopback: `Query` hits and `Verify` ranges before the log's
//! first local LSN are served from the archive; after a restart over the
//! same data dir (the log opens from `wal/PREFIX`), `Head`, `Read` from LSN
//! 1, `Query`, `Verify` from 1 and `GetState` answer as before and appends
//! continue the chain. And a `wal/PREFIX` that does not continue the
//! archive it is served with (another log's archive of the same name):
//! `Read` across the boundary and `Verify` answer DATA_LOSS naming the
//! boundary LSN, and nothing panics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use prost::Message;

use common::served::Served;
use common::{blocking, log_name, small_segments, S3Server, TestResult};
use trail_log::{EventInput, Log, Receipt, Store};
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    AppendRequest, ArchiveNowRequest, Event, Filter, GetStateRequest, HeadRequest, Outcome,
    QueryRequest, Record, StateChange, VerifyRequest, VerifyResponse,
};
use trail_server::config::ArchiveConfig;
use trail_server::Config;

/// How long any one wait of this test may take.
const WAIT: Duration = Duration::from_secs(30);

/// Events written before the archive takes them.
const ARCHIVED_EVENTS: u64 = 700;

impl Served {
    fn log(&self) -> Result<Arc<Log>, Box<dyn std::error::Error>> {
        Ok(blocking(|| self.store.get(&log_name()))?.ok_or("the log exists")?)
    }

    /// Appends events `from..from + count` in batches; their receipts.
    async fn append(
        &mut self,
        from: u64,
        count: u64,
    ) -> Result<Vec<trail_proto::v1::Receipt>, Box<dyn std::error::Error>> {
        let mut receipts = Vec::new();
        let mut next = from;
        while next < from + count {
            let batch = (from + count - next).min(20);
            let events = (next..next + batch).map(event).collect();
            let response = self
                .client
                .append(AppendRequest {
                    log: "audit".into(),
                    events,
                    atomic: false,
                })
                .await?
                .into_inner();
            receipts.extend(response.receipts);
            next += batch;
        }
        Ok(receipts)
    }

    /// Seals and archives everything, appends one more event (so every
    /// archived segment may go locally) and waits until retention removed
    /// them all: the local log then starts at `ARCHIVED_EVENTS + 1`.
    async fn archive_all_but_the_newest(
        &mut self,
    ) -> Result<trail_proto::v1::Receipt, Box<dyn std::error::Error>> {
        let now = self
            .admin
            .archive_now(ArchiveNowRequest {
                log: "audit".into(),
            })
            .await?
            .into_inner();
        assert_eq!(now.archived_through_lsn, ARCHIVED_EVENTS);
        assert!(now.archived_segments >= 3, "{now:?}");
        let next = self.append(ARCHIVED_EVENTS, 1).await?;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.archive_status().await?;
            if status.first_local_lsn == ARCHIVED_EVENTS + 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not removed: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(next.into_iter().next().ok_or("a receipt")?)
    }

    async fn verify(&mut self, from: u64, to: u64) -> Result<VerifyResponse, tonic::Status> {
        Ok(self
            .client
            .verify(VerifyRequest {
                log: "audit".into(),
                from_lsn: from,
                to_lsn: to,
            })
            .await?
            .into_inner())
    }

    /// Every record of `actor`'s events, waiting for the index to take in
    /// `min_lsn`.
    async fn query_actor(
        &mut self,
        actor: &str,
        min_lsn: u64,
    ) -> Result<Vec<Record>, Box<dyn std::error::Error>> {
        let response = self
            .client
            .query(QueryRequest {
                log: "audit".into(),
                filter: Some(Filter {
                    actor: actor.into(),
                    ..Filter::default()
                }),
                limit: 1000,
                min_lsn,
                min_lsn_timeout_ms: 20_000,
                ..QueryRequest::default()
            })
            .await?
            .into_inner();
        assert!(response.next_cursor.is_empty(), "one page holds them all");
        Ok(response.records)
    }

    async fn state(
        &mut self,
        resource: &str,
        min_lsn: u64,
    ) -> Result<trail_proto::v1::GetStateResponse, Box<dyn std::error::Error>> {
        Ok(self
            .client
            .get_state(GetStateRequest {
                log: "audit".into(),
                resource: resource.into(),
                min_lsn,
                min_lsn_timeout_ms: 20_000,
                ..GetStateRequest::default()
            })
            .await?
            .into_inner())
    }
}

/// Event `position`: one of 13 actors, a state change on one of 4 orders,
/// padded so a few hundred fill several small segments.
fn event(position: u64) -> Event {
    Event {
        event_id: format!("e-{position}"),
        actor: format!("user-{}", position % 13),
        action: "order.update".into(),
        resource: format!("order/{}", position % 4),
        outcome: Outcome::Success as i32,
        change: Some(StateChange {
            kind: Some(Kind::SetJson(format!(
                "{{\"n\":{position},\"note\":\"{}\"}}",
                "y".repeat(200)
            ))),
        }),
        ..Event::default()
    }
}

fn archive_config(s3: &S3Server, prefix: &str) -> ArchiveConfig {
    let target = s3.config(prefix);
    ArchiveConfig {
        url: target.url,
        endpoint: target.endpoint,
        region: target.region,
        access_key_id: target.access_key_id,
        secret_access_key: target.secret_access_key,
        archive_after_secs: 0,
        local_retention_secs: 0,
        check_interval_ms: 100,
        ..ArchiveConfig::default()
    }
}

/// The records are the receipts' (LSN and hash), in order, each linked to
/// the one before it.
fn assert_same_log(records: &[Record], receipts: &[trail_proto::v1::Receipt]) {
    assert_eq!(records.len(), receipts.len());
    for (index, (record, receipt)) in records.iter().zip(receipts).enumerate() {
        assert_eq!(record.lsn, receipt.lsn);
        assert_eq!(record.hash, receipt.hash, "lsn {}", record.lsn);
        if index > 0 && records[index - 1].lsn + 1 == record.lsn {
            assert_eq!(
                record.prev_hash,
                records[index - 1].hash,
                "lsn {}",
                record.lsn
            );
        }
    }
}

/// What a query for `user-3` must answer: its events' receipts.
fn expected_hits(
    receipts: &[trail_proto::v1::Receipt],
    actor: u64,
) -> Vec<trail_proto::v1::Receipt> {
    receipts
        .iter()
        .enumerate()
        .filter(|(position, _)| *position as u64 % 13 == actor)
        .map(|(_, receipt)| receipt.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_most_of_its_log_only_in_the_archive_serves_it_all() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let s3 = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let config = Config {
        archive: archive_config(&s3, "restart"),
        ..Config::default()
    };

    let mut served = Served::start(data.path(), config.clone()).await?;
    let mut receipts = served.append(0, ARCHIVED_EVENTS).await?;
    receipts.push(served.archive_all_but_the_newest().await?);
    let head = ARCHIVED_EVENTS + 1;
    assert_eq!(served.log()?.first_local_lsn().0, head);

    // Query hits in the archived part (all but maybe one) come from the
    // archive, with their hashes.
    let hits = expected_hits(&receipts, 3);
    assert!(hits.iter().filter(|hit| hit.lsn < head).count() > 50);
    let found = served.query_actor("user-3", head).await?;
    assert_same_log(&found, &hits);
    // Verify from 1: the archive, the boundary, the local part.
    let all = served.verify(1, 0).await?;
    assert_eq!(
        (all.verified, all.head_lsn, all.first_bad_lsn),
        (head, head, 0),
        "{all:?}"
    );
    assert_eq!(all.head_hash, receipts[700].hash);
    // A range inside the archive, ending mid-segment.
    let inside = served.verify(123, 456).await?;
    assert_eq!((inside.verified, inside.head_lsn), (334, 456), "{inside:?}");
    assert_eq!(inside.head_hash, receipts[455].hash);
    // The state store holds the retention gate (DECISIONS #33): it took
    // everything in before the segments went.
    let state = served.state("order/1", head).await?;
    assert!(state.exists);
    assert!(state.state_json.contains("\"n\":697"), "{state:?}");
    served.stop().await?;

    // Restarted over the same data dir: it opens from wal/PREFIX.
    let mut served = Served::start(data.path(), config.clone()).await?;
    let log = served.log()?;
    assert_eq!(log.first_local_lsn().0, head);
    let prefix = log.archived_prefix().ok_or("an archived prefix")?;
    assert_eq!(prefix.prev_hash.0.to_vec(), receipts[699].hash);
    drop(log);
    let answered = served
        .client
        .head(HeadRequest {
            log: "audit".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answered.lsn, head);
    assert_eq!(answered.hash, receipts[700].hash);
    let read = served.read(1, 0).await?;
    assert_same_log(&read, &receipts);
    let found = served.query_actor("user-3", head).await?;
    assert_same_log(&found, &hits);
    let all = served.verify(1, 0).await?;
    assert_eq!((all.verified, all.first_bad_lsn), (head, 0), "{all:?}");
    let again = served.state("order/1", head).await?;
    assert_eq!(again.state_json, state.state_json);
    assert_eq!(again.last_change_lsn, state.last_change_lsn);

    // Appends continue the chain.
    receipts.extend(served.append(head, 5).await?);
    let tail = served.read(head - 1, 0).await?;
    assert_same_log(&tail, &receipts[699..]);
    assert_eq!(tail[1].prev_hash, receipts[699].hash);
    let all = served.verify(1, 0).await?;
    assert_eq!(
        (all.verified, all.head_lsn, all.first_bad_lsn),
        (head + 5, head + 5, 0),
        "{all:?}"
    );
    served.stop().await
}

/// Appends events `from..from + count` the way clients encode them,
/// straight to `log`.
fn append_direct(log: &Log, from: u64, count: u64) -> Result<Vec<Receipt>, trail_log::LogError> {
    blocking(|| {
        (from..from + count)
            .map(|position| {
                let event = event(position);
                log.append_blocking(
                    vec![EventInput::new(
                        event.event_id.clone(),
                        event.encode_to_vec(),
                    )],
                    false,
                )
                .map(|receipts| receipts[0])
            })
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_that_does_not_continue_the_archive_is_data_loss_at_the_boundary() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let s3 = S3Server::start(bucket.path()).await?;

    // Another log of the same name, archived under another prefix: the
    // same genesis, other records (so other hashes at every LSN).
    let elsewhere = tempfile::tempdir()?;
    let other_store = blocking(|| Store::open(elsewhere.path(), small_segments()))?;
    let other = blocking(|| other_store.get_or_create(&log_name()))?;
    append_direct(&other, 10_000, 900)?;
    let manifests = common::archive_sealed(&s3.target("other"), &other).await?;
    let other_end = manifests.last().ok_or("archived segments")?.last_lsn.0;
    drop(other);
    blocking(|| other_store.close())?;

    // This log: archived under its own prefix, all but the newest segment
    // removed locally.
    let data = tempfile::tempdir()?;
    let mut config = Config::default();
    config.derived.enabled = false;
    config.archive = archive_config(&s3, "mine");
    let mut served = Served::start(data.path(), config.clone()).await?;
    let log = served.log_or_create()?;
    append_direct(&log, 0, ARCHIVED_EVENTS)?;
    drop(log);
    served.archive_all_but_the_newest().await?;
    let boundary = ARCHIVED_EVENTS + 1;
    assert!(other_end >= boundary, "the other archive reaches past it");
    // Served with its own archive, it verifies.
    let own = served.verify(1, 0).await?;
    assert_eq!((own.verified, own.first_bad_lsn), (boundary, 0), "{own:?}");
    served.stop().await?;

    // Served with the other log's archive: its wal/PREFIX names a hash
    // that archive does not have at the boundary.
    config.archive = archive_config(&s3, "other");
    let mut served = Served::start(data.path(), config).await?;
    let named = format!("lsn {boundary}");
    let refused = served
        .read(1, 0)
        .await
        .expect_err("a read across the boundary");
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");
    assert!(
        refused.message().contains("boundary") && refused.message().contains(&named),
        "{refused:?}"
    );
    let refused = served.verify(1, 0).await.expect_err("verify across it");
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");
    assert!(
        refused.message().contains("boundary") && refused.message().contains(&named),
        "{refused:?}"
    );
    let refused = served
        .verify(boundary - 10, boundary)
        .await
        .expect_err("a short range across it");
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused:?}");
    // What does not cross the boundary still answers, and so does the
    // server: nothing panicked.
    let local = served.verify(boundary, 0).await?;
    assert_eq!((local.verified, local.first_bad_lsn), (1, 0), "{local:?}");
    let answered = served
        .client
        .head(HeadRequest {
            log: "audit".into(),
        })
        .await?
        .into_inner();
    assert_eq!(answered.lsn, boundary);
    served.stop().await
}

impl Served {
    fn log_or_create(&self) -> Result<Arc<Log>, Box<dyn std::error::Error>> {
        Ok(blocking(|| self.store.get_or_create(&log_name()))?)
    }
}

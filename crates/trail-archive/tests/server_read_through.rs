//! Read-through in a running `traild` (issue "Tiered storage", part 2),
//! against a real S3 server on loopback: a log archived by the server's
//! compactor (`ArchiveNow` seals and archives everything; retention 0
//! removes it locally) still answers `Read` from LSN 1 with every record
//! and the same hashes, cold (downloads, counted as misses) and warm (the
//! cache, hits only); `Subscribe` from 1 catches up through the archive
//! into the local log and goes on following it.

mod common;

use std::sync::Arc;

use prost::Message;
use std::time::Duration;

use common::{blocking, log_name, small_segments, S3Server, TestResult};
use tokio_stream::StreamExt;
use trail_log::{EventInput, Log, Receipt, Store};
use trail_proto::v1::admin_client::AdminClient;
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{
    ArchiveNowRequest, ArchiveStatusRequest, ReadRequest, Record, SubscribeRequest,
};
use trail_server::config::ArchiveConfig;
use trail_server::{Config, Metrics};

/// How long any one wait of this test may take.
const WAIT: Duration = Duration::from_secs(20);

fn append(log: &Log, from: usize, count: usize) -> Result<Vec<Receipt>, trail_log::LogError> {
    blocking(|| {
        (from..from + count)
            .map(|position| {
                // Stored as clients encode it: a protobuf `Event`.
                let event = trail_proto::v1::Event {
                    event_id: format!("e-{position}"),
                    actor: format!("user-{}", position % 13),
                    action: "read".into(),
                    resource: format!("account/{position}/{}", "y".repeat(200)),
                    outcome: trail_proto::v1::Outcome::Success as i32,
                    ..trail_proto::v1::Event::default()
                };
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

/// The value of `name{log="audit"}` in a Prometheus text exposition.
fn value(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}{{log=\"audit\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|number| number.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every record `Read` answers from `from` to the head.
async fn read_all(
    client: &mut LogClient<tonic::transport::Channel>,
) -> Result<Vec<Record>, Box<dyn std::error::Error>> {
    let mut stream = client
        .read(ReadRequest {
            log: "audit".into(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(record) = tokio::time::timeout(WAIT, stream.next()).await? {
        records.push(record?);
    }
    Ok(records)
}

/// The records are the receipts' (LSN and hash) and each links to the one
/// before it.
fn assert_same_log(records: &[Record], receipts: &[Receipt]) {
    assert_eq!(records.len(), receipts.len());
    for (index, (record, receipt)) in records.iter().zip(receipts).enumerate() {
        assert_eq!(record.lsn, receipt.lsn.0);
        assert_eq!(record.hash, receipt.hash.0.to_vec(), "lsn {}", record.lsn);
        if index > 0 {
            assert_eq!(
                record.prev_hash,
                records[index - 1].hash,
                "lsn {}",
                record.lsn
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_subscribe_serve_archived_lsns_cold_then_warm() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let s3 = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let store = Arc::new(blocking(|| Store::open(data.path(), small_segments()))?);
    let log = blocking(|| store.get_or_create(&log_name()))?;
    let mut receipts = append(&log, 0, 700)?;

    let target = s3.config("served");
    let mut config = Config::default();
    // Only the log is under test: no derived stores.
    config.derived.enabled = false;
    config.archive = ArchiveConfig {
        url: target.url,
        endpoint: target.endpoint,
        region: target.region,
        access_key_id: target.access_key_id,
        secret_access_key: target.secret_access_key,
        archive_after_secs: 0,
        local_retention_secs: 0,
        check_interval_ms: 100,
        ..ArchiveConfig::default()
    };
    let (metrics, _endpoint) = Metrics::start("127.0.0.1:0".parse()?)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let served_store = Arc::clone(&store);
    let served_metrics = metrics.clone();
    let server = tokio::spawn(async move {
        trail_server::serve_with_metrics(&config, served_store, listener, served_metrics, async {
            let _ = stopping.await;
        })
        .await
    });
    let channel = tonic::transport::Endpoint::from_shared(address)?
        .connect_timeout(WAIT)
        .connect()
        .await?;
    let mut admin = AdminClient::new(channel.clone());
    let mut client = LogClient::new(channel);

    // Everything written is sealed and archived; one more append opens a
    // new segment, so every archived one may go locally.
    let now = admin
        .archive_now(ArchiveNowRequest {
            log: "audit".into(),
        })
        .await?
        .into_inner();
    assert_eq!(now.archived_through_lsn, 700);
    let archived_segments = now.archived_segments;
    assert!(archived_segments >= 3, "{now:?}");
    receipts.extend(append(&log, 700, 1)?);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = admin
            .archive_status(ArchiveStatusRequest {
                log: "audit".into(),
            })
            .await?
            .into_inner();
        if status.first_local_lsn == 701 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not removed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(log.first_local_lsn().0, 701);

    // A damaged archived object is refused as DATA_LOSS naming its key,
    // and nothing of it is cached.
    let segments_dir = s3.object_path("served/audit/segments");
    let mut objects: Vec<_> = std::fs::read_dir(&segments_dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    objects.sort();
    let first_object = objects.first().ok_or("an archived segment")?.clone();
    let original = std::fs::read(&first_object)?;
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    std::fs::write(&first_object, &damaged)?;
    let refused = read_all(&mut client).await.expect_err("a damaged object");
    let status = refused
        .downcast_ref::<tonic::Status>()
        .ok_or("a gRPC status")?;
    let key = format!(
        "served/audit/segments/{}",
        first_object.file_name().ok_or("a name")?.to_string_lossy()
    );
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status:?}");
    assert!(status.message().contains(&key), "{status:?}");
    std::fs::write(&first_object, &original)?;

    // Cold: each archived segment downloaded once.
    let cold = read_all(&mut client).await?;
    assert_same_log(&cold, &receipts);
    let text = metrics.render();
    #[allow(clippy::cast_precision_loss)]
    let segments = archived_segments as f64;
    // (The refused read above counts nothing: only reads that answer.)
    assert_eq!(
        value(&text, "trail_archive_read_cache_misses_total"),
        segments,
        "{text}"
    );
    let hits_cold = value(&text, "trail_archive_read_cache_hits_total");
    let steps_cold = value(&text, "trail_archive_read_latency_seconds_count");
    assert!(steps_cold >= segments);

    // Warm: the same answer, from the cache only.
    let warm = read_all(&mut client).await?;
    assert_same_log(&warm, &receipts);
    let text = metrics.render();
    assert_eq!(
        value(&text, "trail_archive_read_cache_misses_total"),
        segments
    );
    assert!(value(&text, "trail_archive_read_cache_hits_total") >= hits_cold + segments);
    assert!(value(&text, "trail_archive_read_latency_seconds_count") > steps_cold);

    // Subscribe from 1: the archive, then the local log, then what comes.
    let mut subscription = client
        .subscribe(SubscribeRequest {
            log: "audit".into(),
            from_lsn: 1,
            filter: None,
        })
        .await?
        .into_inner();
    let mut followed = Vec::new();
    while followed.len() < receipts.len() {
        let record = tokio::time::timeout(WAIT, subscription.next())
            .await?
            .ok_or("the subscription ended")??;
        followed.push(record);
    }
    assert_same_log(&followed, &receipts);
    receipts.extend(append(&log, 701, 1)?);
    let next = tokio::time::timeout(WAIT, subscription.next())
        .await?
        .ok_or("the subscription ended")??;
    assert_eq!(next.lsn, 702);
    assert_eq!(next.prev_hash, receipts[700].hash.0.to_vec());
    drop(subscription);

    let _ = stop.send(());
    tokio::time::timeout(WAIT, server).await???;
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

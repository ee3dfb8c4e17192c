//! One damaged log does not stop the server (issue 12): over a data
//! directory holding three logs, one with a flipped byte inside a sealed
//! segment, the server starts, serves the other two, answers DATA_LOSS
//! naming file, offset and LSN for the damaged one, reports it in `Head`,
//! and sets `trail_log_damaged{log}` to 1. The damage is found either when
//! the log opens (`verify_on_open`) or, by default, by the background
//! verification of sealed segments moments after it opened.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use trail_log::segment::SEGMENT_HEADER_BYTES;
use trail_log::{EventInput, LogName, LogOptions, Store, WAL_DIR_NAME};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{
    AppendRequest, Event, HeadRequest, ReadRequest, SubscribeRequest, VerifyRequest,
};
use trail_server::{Limits, Metrics};

mod common;

use common::{sample, scrape, sync_options, test_config, Result, Served};

/// Events per log: enough 1 KiB events to fill a few 64 KiB segments.
const EVENTS: u64 = 150;

fn event(id: &str) -> Event {
    Event {
        payload: vec![b'x'; 1_000],
        ..common::login_event(id)
    }
}

/// The log's segment files, oldest first.
fn segments(root: &Path, log: &str) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(log).join(WAL_DIR_NAME))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|path| path.extension().is_some_and(|extension| extension == "seg"));
    files.sort();
    Ok(files)
}

/// Writes logs `a`, `b` and `c` with small segments, then flips one byte
/// inside the first record of `b`'s first (sealed) segment. Returns that
/// file.
fn damaged_store(root: &Path, options: &LogOptions) -> Result<PathBuf> {
    let store = Store::open(
        root,
        LogOptions {
            segment_bytes: 64 << 10,
            group_bytes_max: 16 << 10,
            append: trail_log::AppendLimits {
                event_bytes_max: 4 << 10,
                ..trail_log::AppendLimits::default()
            },
            ..options.clone()
        },
    )?;
    for log in ["a", "b", "c"] {
        let log = store.get_or_create(&LogName::new(log)?)?;
        for n in 1..=EVENTS {
            let id = format!("e{n}");
            log.append_blocking(
                vec![EventInput::new(id.clone(), event(&id).encode_to_vec())],
                false,
            )?;
        }
    }
    store.close()?;
    drop(store);
    let files = segments(root, "b")?;
    assert!(
        files.len() >= 2,
        "the damaged segment must be a sealed one: {files:?}"
    );
    let mut bytes = std::fs::read(&files[0])?;
    bytes[SEGMENT_HEADER_BYTES + 40] ^= 0x01;
    std::fs::write(&files[0], bytes)?;
    Ok(files[0].clone())
}

fn assert_data_loss<T: std::fmt::Debug>(result: Result<T, tonic::Status>, file: &str) {
    match result {
        Ok(value) => panic!("expected DATA_LOSS, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), Code::DataLoss, "{}", status.message());
            let message = status.message();
            for needle in ["log b is damaged", file, "at offset", "(lsn 1)"] {
                assert!(
                    message.contains(needle),
                    "{message:?} does not name {needle:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn a_log_found_damaged_at_open_is_quarantined_and_the_others_are_served() -> Result {
    quarantine_scenario(true).await
}

#[tokio::test]
async fn a_log_found_damaged_in_the_background_is_quarantined_and_the_others_are_served() -> Result
{
    quarantine_scenario(false).await
}

async fn quarantine_scenario(verify_on_open: bool) -> Result {
    let dir = tempfile::tempdir()?;
    let config = test_config(Limits::default());
    let (root, options) = (dir.path().to_path_buf(), sync_options(&config));
    // The engine's blocking append must not run on the runtime's thread.
    let damaged_file =
        tokio::task::spawn_blocking(move || damaged_store(&root, &options)).await??;
    let file = damaged_file.display().to_string();

    let options = LogOptions {
        verify_on_open,
        ..sync_options(&config)
    };
    let store = Arc::new(Store::open(dir.path(), options)?);
    let (metrics, endpoint) = Metrics::start("127.0.0.1:0".parse()?)?;
    let served = Served::start(config, Arc::clone(&store), metrics).await?;
    let mut client = LogClient::connect(served.address.clone()).await?;
    if !verify_on_open {
        // Background verification of b's few sealed segments takes
        // milliseconds; until it has run, b is served.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let head = client
                .head(HeadRequest {
                    log: "b".to_owned(),
                })
                .await?
                .into_inner();
            if !head.damage.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the damage was never found"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    for log in ["a", "c"] {
        let head = client
            .head(HeadRequest {
                log: log.to_owned(),
            })
            .await?
            .into_inner();
        assert_eq!((head.lsn, head.damage.as_str()), (EVENTS, ""), "log {log}");
        let receipts = client
            .append(AppendRequest {
                log: log.to_owned(),
                events: vec![event("after")],
                atomic: false,
            })
            .await?
            .into_inner()
            .receipts;
        assert_eq!(receipts[0].lsn, EVENTS + 1);
    }

    let head = client
        .head(HeadRequest {
            log: "b".to_owned(),
        })
        .await?
        .into_inner();
    assert_eq!((head.lsn, head.hash.len()), (0, 0));
    for needle in ["corruption in", file.as_str(), "at offset", "(lsn 1)"] {
        assert!(
            head.damage.contains(needle),
            "{:?} does not name {needle:?}",
            head.damage
        );
    }
    assert_data_loss(
        client
            .append(AppendRequest {
                log: "b".to_owned(),
                events: vec![event("after")],
                atomic: false,
            })
            .await,
        &file,
    );
    let read = client
        .read(ReadRequest {
            log: "b".to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await;
    assert_data_loss(read.map(|_| ()), &file);
    let subscribe = client
        .subscribe(SubscribeRequest {
            log: "b".to_owned(),
            from_lsn: 1,
            filter: None,
        })
        .await;
    assert_data_loss(subscribe.map(|_| ()), &file);
    assert_data_loss(
        client
            .verify(VerifyRequest {
                log: "b".to_owned(),
                from_lsn: 0,
                to_lsn: 0,
            })
            .await,
        &file,
    );
    // The healthy logs still read back whole.
    let mut records = client
        .read(ReadRequest {
            log: "a".to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut count = 0;
    while let Some(record) = records.next().await {
        record?;
        count += 1;
    }
    assert_eq!(count, EVENTS + 1);

    let body = scrape(endpoint.address()).await?;
    assert_eq!(
        sample(&body, "trail_log_damaged", &[("log", "b")]),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample(&body, "trail_log_damaged", &[("log", "a")]), None);
    assert_eq!(
        sample(
            &body,
            "trail_append_requests_total",
            &[("log", "b"), ("outcome", "data_loss")]
        ),
        Some(1.0),
        "{body}"
    );

    served.stop().await?;
    store.close()?;
    Ok(())
}

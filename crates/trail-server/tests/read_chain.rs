//! `Read` checks the chain on every link it passes, also between the disk
//! reads it makes in steps (issue "Log engine, second stage"): in a log
//! opened without re-hashing its sealed segments, a record altered in a
//! sealed segment with its CRC recomputed passes the frame check, and only
//! the next record's link shows it. The server used to read in chunks of
//! 256 records with a fresh chain check per chunk, so an altered record 256
//! was served as if it were good.

use std::sync::Arc;

use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;
use trail_log::segment::SEGMENT_HEADER_BYTES;
use trail_log::{EventInput, LogName, LogOptions, Store, WAL_DIR_NAME};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{Event, ReadRequest};
use trail_server::{Limits, Metrics};

mod common;

use common::{sync_options, test_config, Result, Served};

const EVENTS: u64 = 600;
const ALTERED: u64 = 256;

fn options(config: &trail_server::Config) -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 20,
        group_bytes_max: 128 << 10,
        verify_on_open: false,
        verify_in_background: false,
        ..sync_options(config)
    }
}

/// Writes the log, then alters one event byte of record `ALTERED` in the
/// first (sealed) segment and recomputes that frame's CRC.
fn altered_store(root: &std::path::Path, options: LogOptions) -> Result {
    let store = Store::open(root, options)?;
    let log = store.get_or_create(&LogName::new("chain")?)?;
    let append = |index: u64, payload: usize| {
        let event = Event {
            event_id: format!("e{index}"),
            actor: "alice".to_owned(),
            action: "read".to_owned(),
            resource: format!("doc/{index}"),
            payload: vec![b'p'; payload],
            ..Event::default()
        };
        log.append_blocking(
            vec![EventInput::new(
                event.event_id.clone(),
                event.encode_to_vec(),
            )],
            false,
        )
    };
    // Large events until the first segment is sealed, then small ones.
    let mut index = 0;
    while log.segments().len() < 2 {
        index += 1;
        append(index, 2_000)?;
    }
    while log.head().lsn.0 < EVENTS {
        index += 1;
        append(index, 0)?;
    }
    let first = log.segments()[0].clone();
    assert!(first.sealed && first.last_lsn.0 > ALTERED, "{first:?}");
    drop(log);
    store.close()?;
    let mut bytes = std::fs::read(&first.path)?;
    let mut offset = SEGMENT_HEADER_BYTES;
    for _ in 1..ALTERED {
        offset += 8 + u32::from_le_bytes(bytes[offset..offset + 4].try_into()?) as usize;
    }
    let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into()?) as usize;
    let body = offset + 8..offset + 8 + length;
    bytes[body.end - 100] ^= 0x01; // inside the event's payload
    let crc = crc32fast::hash(&bytes[body]);
    bytes[offset + 4..offset + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&first.path, bytes)?;
    assert!(root.join("chain").join(WAL_DIR_NAME).exists());
    Ok(())
}

#[tokio::test]
async fn read_refuses_a_record_whose_successor_does_not_link_to_it() -> Result {
    let dir = tempfile::tempdir()?;
    let config = test_config(Limits::default());
    let root = dir.path().to_path_buf();
    let write_options = options(&config);
    tokio::task::spawn_blocking(move || altered_store(&root, write_options)).await??;
    let store = Arc::new(Store::open(dir.path(), options(&config))?);
    let served = Served::start(config, Arc::clone(&store), Metrics::disabled()).await?;
    let mut client = LogClient::connect(served.address.clone()).await?;
    let mut records = client
        .read(ReadRequest {
            log: "chain".to_owned(),
            from_lsn: 1,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    let mut served_lsns = Vec::new();
    let failure = loop {
        match records.next().await {
            Some(Ok(record)) => served_lsns.push(record.lsn),
            Some(Err(status)) => break status,
            None => panic!(
                "the whole log was served, {} records, damage and all",
                served_lsns.len()
            ),
        }
    };
    assert_eq!(failure.code(), Code::DataLoss, "{failure:?}");
    assert!(
        failure.message().contains("hash chain broken"),
        "{failure:?}"
    );
    assert!(
        failure.message().contains(&format!("lsn {}", ALTERED + 1)),
        "{failure:?}"
    );
    assert_eq!(served_lsns, (1..=ALTERED).collect::<Vec<_>>());
    served.stop().await?;
    store.close()?;
    Ok(())
}

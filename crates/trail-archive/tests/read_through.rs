//! Reads of archived LSNs through the bounded cache, against a real S3
//! server: cold reads download and verify, warm ones hit the cache,
//! concurrent readers of a segment share one download, the cache stays
//! within its bound, and the records are the log's (hashes and bodies).

mod common;

use std::sync::Arc;

use common::{archive_sealed, blocking, log_name, write_log, S3Server, TestResult};
use trail_archive::ArchiveReader;
use trail_log::Lsn;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_warm_shared_and_bounded_reads() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let target = server.target("r");
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 700)?;
    let manifests = archive_sealed(&target, &log).await?;
    let through = manifests
        .last()
        .map(|manifest| manifest.last_lsn)
        .expect("one");
    let expected = blocking(|| log.read(Lsn(1), through).collect::<Result<Vec<_>, _>>())?;

    let reader = Arc::new(ArchiveReader::new(target.clone(), log_name(), u64::MAX));
    let cold = reader.read(Lsn(1), through).await?;
    assert_eq!(cold, expected, "the archive reads back the log's records");
    let stats = reader.stats().await;
    assert_eq!(stats.downloads, manifests.len() as u64);
    assert_eq!(stats.misses, manifests.len() as u64);
    let warm = reader.read(Lsn(2), Lsn(3)).await?;
    assert_eq!(warm, expected[1..3].to_vec());
    assert_eq!(
        reader.stats().await.downloads,
        manifests.len() as u64,
        "warm reads download nothing"
    );
    assert!(reader.stats().await.hits >= 1);
    // Past the archive's end: what there is.
    let tail = reader.read(through, Lsn(through.0 + 50)).await?;
    assert_eq!(tail.len(), 1);

    // Concurrent cold readers of one segment: one download.
    let fresh = Arc::new(ArchiveReader::new(target.clone(), log_name(), u64::MAX));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let fresh = Arc::clone(&fresh);
            tokio::spawn(async move { fresh.read(Lsn(5), Lsn(9)).await })
        })
        .collect();
    for reader in readers {
        assert_eq!(reader.await??, expected[4..9].to_vec());
    }
    assert_eq!(fresh.stats().await.downloads, 1);

    // A cache bound of about one segment keeps at most that.
    let bound = manifests[0].segment.bytes + 1;
    let small = ArchiveReader::new(target.clone(), log_name(), bound);
    assert_eq!(small.read(Lsn(1), through).await?, expected);
    assert!(small.stats().await.cached_bytes <= bound);

    // A damaged object is refused with its key and range.
    let key = format!(
        "r/audit/segments/{:020}-{:020}.seg",
        manifests[0].first_lsn.0, manifests[0].last_lsn.0
    );
    let path = server.object_path(&key);
    let mut bytes = std::fs::read(&path)?;
    bytes[10] ^= 0x01;
    std::fs::write(&path, &bytes)?;
    let damaged = ArchiveReader::new(target, log_name(), u64::MAX);
    let error = damaged.read(Lsn(1), Lsn(1)).await.expect_err("damaged");
    assert!(
        error.is_data_loss() && error.to_string().contains(&key),
        "{error}"
    );
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

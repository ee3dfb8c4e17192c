//! The archiver against a real S3 server on loopback: an outage fails the
//! round, deletes nothing and leaves appends alone; when the server is back
//! the archive catches up, drops local copies through the retention gate
//! (with `wal/PREFIX`), and a restarted archiver neither uploads twice nor
//! breaks the chain. The log reopens, and archive + local tail restore.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{blocking, log_name, small_segments, write_log, S3Server, TestResult};
use trail_archive::{restore_log, verify_archive, Archiver, ArchiverConfig, Encoding};
use trail_log::{EventInput, Lsn, Store};

fn config() -> ArchiverConfig {
    ArchiverConfig {
        encoding: Encoding::default(),
        archive_after: Duration::ZERO,
        hot_bytes_max: u64::MAX,
        local_retention: Duration::ZERO,
        nice: trail_archive::ARCHIVE_NICE_DEFAULT,
    }
}

/// Rounds until the local log starts past `lsn` (removal waits for the
/// background verification); bounded.
async fn step_until_local_after(archiver: &mut Archiver, lsn: Lsn) -> TestResult {
    for _ in 0..100 {
        archiver.step(false).await?;
        if archiver.log().first_local_lsn() > lsn {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "local log still starts at {}",
        archiver.log().first_local_lsn()
    )
    .into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_retries_deletes_nothing_and_resumes() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let mut server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 700)?;
    let sealed: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|info| info.sealed)
        .collect();
    assert!(sealed.len() >= 3);
    let mut archiver = Archiver::new(server.target("p"), Arc::clone(&log), config());

    server.stop().await;
    let started = Instant::now();
    let error = archiver.step(false).await.expect_err("the store is down");
    assert!(error.is_transient(), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails within the retry budget"
    );
    assert_eq!(archiver.status().failures, 1);
    assert!(archiver.status().last_error.is_some());
    assert_eq!(log.first_local_lsn(), Lsn(1), "nothing local is dropped");
    assert!(sealed.iter().all(|info| info.path.exists()));
    // Appends go on during the outage, at their usual pace.
    let appended = Instant::now();
    let receipts = blocking(|| {
        log.append_blocking(
            vec![EventInput::new("during-outage".into(), b"x".to_vec())],
            false,
        )
    })?;
    assert!(appended.elapsed() < Duration::from_secs(2));
    assert_eq!(receipts[0].lsn, Lsn(701));

    server.restart().await?;
    let archived_through = sealed.last().map(|info| info.last_lsn).expect("one");
    step_until_local_after(&mut archiver, archived_through).await?;
    let status = archiver.status();
    assert!(status.uploads >= sealed.len() as u64, "{status:?}");
    assert_eq!(status.last_error, None);
    assert!(data.path().join("audit/wal/PREFIX").exists());
    assert!(
        sealed.iter().all(|info| !info.path.exists()),
        "archived segments left local disk"
    );
    assert!(
        sealed
            .iter()
            .all(|info| info.path.with_extension("idx").exists()),
        "sidecars stay"
    );

    // A restarted archiver (a crash after upload) finds the chain and
    // uploads nothing twice.
    let uploads_before = status.uploads;
    drop(archiver);
    let mut restarted = Archiver::new(server.target("p"), Arc::clone(&log), config());
    assert_eq!(restarted.step(false).await?, 0);
    assert_eq!(restarted.status().archived_segments, uploads_before);

    // The log reopens after its prefix, and archive + local tail are one chain.
    let head = log.head();
    drop(restarted);
    drop(log);
    blocking(|| store.close())?;
    drop(store);
    let store = Store::open(data.path(), small_segments())?;
    let log = store.get_or_create(&log_name())?;
    assert_eq!(log.head(), head);
    let first_local = log.first_local_lsn();
    assert!(first_local > archived_through);
    let local: Vec<_> = log
        .read(first_local, head.lsn)
        .collect::<Result<Vec<_>, _>>()?;
    let target = server.target("p");
    let report = verify_archive(&target, &log_name(), &mut |_| {}).await?;
    assert_eq!(report.last_lsn.next(), first_local);
    assert_eq!(local[0].record.prev_hash, report.last_hash);
    assert_eq!(
        log.archived_prefix().map(|prefix| prefix.voucher),
        Some(report.voucher.clone())
    );
    let fresh = tempfile::tempdir()?;
    restore_log(&target, &log_name(), fresh.path(), &mut |_| {}).await?;
    let restored_store = Store::open(fresh.path(), small_segments())?;
    let restored = restored_store.get_or_create(&log_name())?;
    assert_eq!(restored.head().hash, report.last_hash);
    drop(restored);
    blocking(|| restored_store.close())?;
    drop(log);
    blocking(|| store.close())?;
    server.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_uploaded_before_it_is_due() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 400)?;
    let mut archiver = Archiver::new(
        server.target("p"),
        Arc::clone(&log),
        ArchiverConfig {
            archive_after: Duration::from_secs(3600),
            local_retention: Duration::from_secs(3600),
            ..config()
        },
    );
    assert_eq!(archiver.step(false).await?, 0, "young segments wait");
    assert!(
        archiver.step(true).await? >= 1,
        "archive now takes every sealed segment"
    );
    assert_eq!(
        log.first_local_lsn(),
        Lsn(1),
        "local copies stay for local_retention"
    );
    drop(archiver);
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_objects_and_manifest_leaves_no_duplicate() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 400)?;
    let keep_local = ArchiverConfig {
        local_retention: Duration::from_secs(3600),
        ..config()
    };
    let mut archiver = Archiver::new(server.target("c"), Arc::clone(&log), keep_local);
    let uploaded = archiver.step(false).await?;
    assert!(uploaded >= 2);
    drop(archiver);
    // As if the process died after the last segment's objects were stored
    // but before its manifest was: the objects stay, the manifest is gone.
    let segments_dir = server.object_path("c/audit/segments");
    let mut manifests: Vec<_> = std::fs::read_dir(&segments_dir)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "manifest")
        })
        .collect();
    manifests.sort();
    let last_manifest = manifests.pop().expect("a manifest");
    std::fs::remove_file(&last_manifest)?;
    let objects_before = std::fs::read_dir(&segments_dir)?.count();

    let mut restarted = Archiver::new(server.target("c"), Arc::clone(&log), keep_local);
    assert_eq!(
        restarted.step(false).await?,
        1,
        "only the segment without a manifest"
    );
    assert!(last_manifest.exists());
    assert_eq!(
        std::fs::read_dir(&segments_dir)?.count(),
        objects_before + 1,
        "no second object"
    );
    let report = verify_archive(&server.target("c"), &log_name(), &mut |_| {}).await?;
    assert_eq!(report.segments, uploaded);
    drop(restarted);
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

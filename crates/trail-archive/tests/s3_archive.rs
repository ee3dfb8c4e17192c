//! The archive against a real S3 server on loopback (s3s-fs, SigV4
//! checked): archive, verify, restore to a fresh data dir that the engine
//! opens with the same LSNs and hashes; tampered buckets detected with the
//! object key and LSN range named; uploads idempotent after a crash; an
//! object with other content already under a key is a conflict, never
//! overwritten.

mod common;

use common::{archive_sealed, blocking, log_name, small_segments, write_log, S3Server, TestResult};
use object_store::{ObjectStoreExt, PutPayload};
use trail_archive::layout::{MANIFEST_SUFFIX, SEGMENT_SUFFIX};
use trail_archive::{restore_log, verify_archive, ArchiveError};
use trail_log::{Lsn, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_delete_locally_restore_gives_the_same_log() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let target = server.target("trail/prod");
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 700)?;
    let manifests = archive_sealed(&target, &log).await?;
    assert!(
        manifests.len() >= 3,
        "several segments: {}",
        manifests.len()
    );
    let archived_through = manifests
        .last()
        .map(|manifest| manifest.last_lsn)
        .expect("one");
    assert!(
        manifests
            .iter()
            .all(|manifest| manifest.segment_object.bytes < manifest.segment.bytes / 2),
        "zstd shrinks audit events"
    );

    // Uploading again (a crash between upload and bookkeeping) changes
    // nothing: the same manifests, no second object.
    let again = archive_sealed(&target, &log).await?;
    assert_eq!(again, manifests);

    let report = verify_archive(&target, &log_name(), &mut |_| {}).await?;
    assert_eq!(report.segments, manifests.len() as u64);
    assert_eq!(report.last_lsn, archived_through);
    assert_eq!(report.records, archived_through.0);

    // Delete locally what the archive holds, through the retention gate.
    let hold = log.hold_segments("archive");
    hold.release_through(archived_through);
    let last = manifests.last().expect("one");
    let removal = blocking(|| {
        log.remove_archived_through(
            archived_through,
            last.last_recorded_at_unix_nanos,
            last.voucher(),
        )
    });
    let expected: Vec<_> = log
        .read(archived_through.next(), log.head().lsn)
        .collect::<Result<Vec<_>, _>>()?;
    // Removal may wait for the background verification; either way the
    // archive alone restores the prefix.
    let _ = removal;
    drop(hold);

    let fresh = tempfile::tempdir()?;
    let mut last_progress = trail_archive::Progress::default();
    let restored_report = restore_log(&target, &log_name(), fresh.path(), &mut |progress| {
        last_progress = progress
    })
    .await?;
    assert_eq!(restored_report, report);
    assert_eq!(last_progress.done_bytes, last_progress.total_bytes);
    let restored_store = Store::open(fresh.path(), small_segments())?;
    let restored = restored_store.get_or_create(&log_name())?;
    assert_eq!(restored.head().lsn, archived_through);
    assert_eq!(restored.head().hash, last.last_hash);
    let records: Vec<_> = restored
        .read(Lsn(1), archived_through)
        .collect::<Result<Vec<_>, _>>()?;
    assert_eq!(records.len() as u64, archived_through.0);
    let verified = restored.verify(Lsn(0), archived_through, &mut |_| {})?;
    assert_eq!(verified.failure, None);
    // The original's local tail continues the restored chain exactly.
    if let Some(first_local) = expected.first() {
        assert_eq!(first_local.record.prev_hash, restored.head().hash);
    }
    // The restored log takes appends after the archive's last LSN.
    let receipt = blocking(|| {
        restored.append_blocking(
            vec![trail_log::EventInput::new(
                "after-restore".into(),
                b"x".to_vec(),
            )],
            false,
        )
    })?;
    assert_eq!(receipt[0].lsn, archived_through.next());
    drop(restored);
    blocking(|| restored_store.close())?;
    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

fn assert_data_loss(error: &ArchiveError, key_part: &str, first: Lsn) {
    match error {
        ArchiveError::DataLoss { key, first: at, .. } => {
            assert!(key.contains(key_part), "{key} names {key_part}");
            assert_eq!(*at, first, "{error}");
        }
        other => panic!("expected data loss, got {other}"),
    }
    let text = error.to_string();
    assert!(text.contains(&format!("lsns {first}..=")), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn altered_deleted_or_swapped_objects_fail_verify_and_restore() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let target = server.target("t");
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 700)?;
    let manifests = archive_sealed(&target, &log).await?;
    assert!(manifests.len() >= 3);
    let name = |index: usize, suffix: &str| {
        let manifest = &manifests[index];
        format!(
            "t/audit/segments/{:020}-{:020}.{suffix}",
            manifest.first_lsn.0, manifest.last_lsn.0
        )
    };
    let restore_fails = |expected_key: String, first: Lsn| {
        let target = target.clone();
        async move {
            let fresh = tempfile::tempdir().expect("tempdir");
            let error = restore_log(&target, &log_name(), fresh.path(), &mut |_| {})
                .await
                .expect_err("restore refuses a damaged archive");
            assert_data_loss(&error, &expected_key, first);
            assert!(
                !fresh.path().join("audit").exists(),
                "nothing half-restored is left"
            );
        }
    };

    // Altered: one byte of the second segment's object.
    let path = server.object_path(&name(1, "seg"));
    let original = std::fs::read(&path)?;
    let mut altered = original.clone();
    altered[original.len() / 2] ^= 0x40;
    std::fs::write(&path, &altered)?;
    let error = verify_archive(&target, &log_name(), &mut |_| {})
        .await
        .expect_err("altered");
    assert_data_loss(&error, &name(1, "seg"), manifests[1].first_lsn);
    restore_fails(name(1, "seg"), manifests[1].first_lsn).await;
    std::fs::write(&path, &original)?;
    verify_archive(&target, &log_name(), &mut |_| {}).await?;

    // Swapped: the second and third segments' objects trade places.
    let (second, third) = (
        server.object_path(&name(1, "seg")),
        server.object_path(&name(2, "seg")),
    );
    let (second_bytes, third_bytes) = (std::fs::read(&second)?, std::fs::read(&third)?);
    std::fs::write(&second, &third_bytes)?;
    std::fs::write(&third, &second_bytes)?;
    let error = verify_archive(&target, &log_name(), &mut |_| {})
        .await
        .expect_err("swapped");
    assert_data_loss(&error, &name(1, "seg"), manifests[1].first_lsn);
    std::fs::write(&second, &second_bytes)?;
    std::fs::write(&third, &third_bytes)?;

    // Deleted: a segment object, then a whole segment (manifest too).
    let segment_path = server.object_path(&name(2, "seg"));
    std::fs::remove_file(&segment_path)?;
    let error = verify_archive(&target, &log_name(), &mut |_| {})
        .await
        .expect_err("deleted");
    assert_data_loss(&error, &name(2, "seg"), manifests[2].first_lsn);
    assert!(error.to_string().contains("missing"), "{error}");
    restore_fails(name(2, "seg"), manifests[2].first_lsn).await;
    std::fs::write(&segment_path, &third_bytes)?;
    let manifest_path = server.object_path(&name(1, "manifest"));
    let manifest_bytes = std::fs::read(&manifest_path)?;
    std::fs::remove_file(&manifest_path)?;
    let error = verify_archive(&target, &log_name(), &mut |_| {})
        .await
        .expect_err("gap");
    // The break is found at the next manifest, which names the gap.
    assert_data_loss(&error, &name(2, "manifest"), manifests[2].first_lsn);
    assert!(error.to_string().contains("is missing"), "{error}");

    // A manifest replaced by another segment's manifest under its key.
    std::fs::write(
        &manifest_path,
        std::fs::read(server.object_path(&name(0, "manifest")))?,
    )?;
    let error = verify_archive(&target, &log_name(), &mut |_| {})
        .await
        .expect_err("swapped manifest");
    assert_data_loss(&error, &name(1, "manifest"), manifests[1].first_lsn);
    std::fs::write(&manifest_path, &manifest_bytes)?;
    verify_archive(&target, &log_name(), &mut |_| {}).await?;

    drop(log);
    blocking(|| store.close())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_log_the_archive_does_not_hold_is_refused() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    let fresh = tempfile::tempdir()?;
    let error = restore_log(
        &server.target("empty"),
        &log_name(),
        fresh.path(),
        &mut |_| {},
    )
    .await
    .expect_err("nothing to restore");
    assert!(matches!(error, ArchiveError::Config(_)), "{error}");
    assert!(!fresh.path().join("audit").exists());
    Ok(())
}

/// `trail verify --archive` and restore check compensation links across the
/// whole archive (FORMAT.md 6.3): a good one (its target in an earlier
/// segment) is counted; one naming another record's hash is DATA_LOSS
/// naming its segment and LSN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_links_are_checked_from_the_bucket() -> TestResult {
    let compensation =
        |id: &str, target: trail_log::Receipt, hash: trail_log::RecordHash| trail_log::EventInput {
            kind: trail_log::RecordKind::Compensation {
                compensates: target.lsn,
                compensates_hash: hash,
            },
            ..trail_log::EventInput::new(id.to_owned(), b"undo".to_vec())
        };
    for good in [true, false] {
        let bucket = tempfile::tempdir()?;
        let server = S3Server::start(bucket.path()).await?;
        let target = server.target("trail/prod");
        let data = tempfile::tempdir()?;
        let (store, log) = write_log(data.path(), 300)?;
        let early = log.read(Lsn(3), Lsn(4)).collect::<Result<Vec<_>, _>>()?;
        let receipt = |stored: &trail_log::StoredRecord| trail_log::Receipt {
            lsn: stored.record.lsn,
            hash: stored.hash,
            recorded_at_unix_nanos: stored.record.recorded_at_unix_nanos,
            duplicate: false,
        };
        let named = if good { early[0].hash } else { early[1].hash };
        let undo = blocking(|| {
            log.append_blocking(
                vec![compensation("undo-3", receipt(&early[0]), named)],
                false,
            )
        })?;
        // More records, so the compensation's segment gets sealed.
        for index in 0..300 {
            blocking(|| {
                log.append_blocking(
                    vec![trail_log::EventInput::new(
                        format!("after-{index}"),
                        vec![b'a'; 300],
                    )],
                    false,
                )
            })?;
        }
        let manifests = archive_sealed(&target, &log).await?;
        assert!(
            manifests.iter().any(|manifest| manifest.first_lsn > Lsn(3)
                && manifest.first_lsn <= undo[0].lsn
                && manifest.last_lsn >= undo[0].lsn),
            "the compensation is archived in a later segment than its target"
        );
        let verified = verify_archive(&target, &log_name(), &mut |_| {}).await;
        let fresh = tempfile::tempdir()?;
        let restored = restore_log(&target, &log_name(), fresh.path(), &mut |_| {}).await;
        if good {
            assert_eq!(verified?.compensations_checked, 1);
            assert_eq!(restored?.compensations_checked, 1);
        } else {
            for outcome in [verified.map(|_| ()), restored.map(|_| ())] {
                let error = outcome.expect_err("a wrong hash is found");
                let text = error.to_string();
                assert!(
                    matches!(error, ArchiveError::DataLoss { first, last, .. } if first <= undo[0].lsn && undo[0].lsn <= last),
                    "{text}"
                );
                assert!(
                    text.contains(&format!("compensation at lsn {} names hash", undo[0].lsn)),
                    "{text}"
                );
            }
            assert!(
                !fresh.path().join("audit").exists()
                    || std::fs::read_dir(fresh.path().join("audit"))?
                        .next()
                        .is_none(),
                "a failed restore leaves nothing"
            );
        }
        drop(log);
        blocking(|| store.close())?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_content_under_an_objects_key_is_a_conflict_and_stays() -> TestResult {
    let bucket = tempfile::tempdir()?;
    let server = S3Server::start(bucket.path()).await?;
    for suffix in [SEGMENT_SUFFIX, MANIFEST_SUFFIX] {
        let target = server.target(&format!("conflict-{suffix}"));
        let data = tempfile::tempdir()?;
        let (store, log) = write_log(data.path(), 300)?;
        let first = log
            .segments()
            .into_iter()
            .find(|info| info.sealed)
            .ok_or("a sealed segment")?;
        let layout = target.layout(log_name().as_str());
        let key = layout.key(first.first_lsn, first.last_lsn, suffix);
        let foreign = bytes::Bytes::from_static(b"another writer's object");
        target
            .store()
            .put(&key, PutPayload::from(foreign.clone()))
            .await?;
        match archive_sealed(&target, &log).await {
            Err(ArchiveError::Conflict {
                key: named,
                first: from,
                last: to,
            }) => {
                assert_eq!(named, key.to_string());
                assert_eq!((from, to), (first.first_lsn, first.last_lsn));
            }
            other => panic!("{suffix}: expected a conflict naming {key}, got {other:?}"),
        }
        let there = target.store().get(&key).await?.bytes().await?;
        assert_eq!(there, foreign, "{suffix}: the object was overwritten");
        if suffix == SEGMENT_SUFFIX {
            let manifest = layout.key(first.first_lsn, first.last_lsn, MANIFEST_SUFFIX);
            assert!(
                target.store().head(&manifest).await.is_err(),
                "no manifest (nothing archived) after a conflicting segment object"
            );
        }
        blocking(|| store.close())?;
    }
    Ok(())
}

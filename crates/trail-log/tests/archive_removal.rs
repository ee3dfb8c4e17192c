//! `Log::remove_archived_through`: the engine's half of archiving. Only
//! segments every holder released go, the prefix record comes first, the
//! log reopens after it, the newest segment stays, and retries of archived
//! event ids are still recognised through the kept sidecars.

mod common;

use common::{append_one, open, segment_files, small_segments, wal_dir, TestResult};
use trail_log::{ErrorKind, Lsn};

fn wait_for_background(log: &trail_log::Log) {
    // Bounded: a few hundred small segments re-hash in well under this.
    for _ in 0..500 {
        if !log.background_verification().running {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("background verification did not finish");
}

#[test]
fn removes_only_released_segments_and_reopens_after_the_prefix() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    for position in 0..900 {
        append_one(&log, &format!("e-{position}"))?;
    }
    let sealed: Vec<_> = log
        .segments()
        .into_iter()
        .filter(|info| info.sealed)
        .collect();
    assert!(sealed.len() >= 3, "crosses segments: {}", sealed.len());
    wait_for_background(&log);
    let target = sealed[1].clone();
    let recorded_at = log
        .read(target.last_lsn, target.last_lsn)
        .next()
        .expect("a record")?
        .record
        .recorded_at_unix_nanos;

    // Nobody holds the log: nothing is removable, so nothing goes.
    let refused = log.remove_archived_through(target.last_lsn, recorded_at, "test".into());
    assert_eq!(
        refused.map_err(|error| error.kind()).err(),
        Some(ErrorKind::InvalidArgument)
    );
    let hold = log.hold_segments("archive");
    hold.release_through(sealed[0].last_lsn);
    let refused = log.remove_archived_through(target.last_lsn, recorded_at, "test".into());
    assert!(refused.is_err(), "the second segment is not released yet");

    hold.release_through(target.last_lsn);
    let removal = log.remove_archived_through(
        target.last_lsn,
        recorded_at,
        "archive manifest blake3:00".into(),
    )?;
    assert_eq!(
        removal.removed,
        vec![sealed[0].path.clone(), sealed[1].path.clone()]
    );
    assert_eq!(removal.prefix.first_lsn, target.last_lsn.next());
    assert_eq!(removal.prefix.prev_hash, target.last_hash);
    assert_eq!(log.first_local_lsn(), target.last_lsn.next());
    assert!(!sealed[0].path.exists() && !sealed[1].path.exists());
    assert!(
        sealed[0].path.with_extension("idx").exists(),
        "sidecars stay"
    );
    assert!(wal_dir(directory.path()).join("PREFIX").exists());

    // Archived LSNs answer NotLocal; local ones read and verify.
    let archived = log.read(Lsn(1), Lsn(1)).next().expect("an answer");
    assert_eq!(
        archived.map_err(|error| error.kind()).err(),
        Some(ErrorKind::NotFound)
    );
    let head = log.head();
    let report = log.verify(Lsn(0), head.lsn, &mut |_| {})?;
    assert_eq!(report.failure, None);
    // A retry of an archived event id is recognised, never appended again.
    let retry = append_one(&log, "e-0");
    assert!(retry.is_err(), "an archived id is not appended twice");
    assert_eq!(log.head(), head);
    drop(hold);
    drop(log);
    store.close()?;
    drop(store);

    let (store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.first_local_lsn(), target.last_lsn.next());
    assert_eq!(log.head(), head);
    assert_eq!(segment_files(directory.path()).len(), log.segments().len());
    let next = append_one(&log, "after-reopen")?;
    assert_eq!(next.lsn, head.lsn.next());
    drop(log);
    store.close()?;
    Ok(())
}

#[test]
fn never_removes_the_newest_segment() -> TestResult {
    let directory = tempfile::tempdir()?;
    let options = trail_log::LogOptions {
        segment_age_max: Some(std::time::Duration::from_millis(10)),
        ..small_segments()
    };
    let (store, log) = open(directory.path(), options)?;
    append_one(&log, "only")?;
    // Bounded wait for the age seal.
    for _ in 0..200 {
        std::thread::sleep(std::time::Duration::from_millis(15));
        log.run_timers();
        if log.segments().last().is_some_and(|info| info.sealed) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let newest = log.segments().last().cloned().expect("a segment");
    assert!(newest.sealed);
    wait_for_background(&log);
    let hold = log.hold_segments("archive");
    hold.release_through(newest.last_lsn);
    let refused = log.remove_archived_through(newest.last_lsn, 0, "test".into());
    assert_eq!(
        refused.map_err(|error| error.kind()).err(),
        Some(ErrorKind::InvalidArgument)
    );
    assert!(newest.path.exists());
    drop(hold);
    drop(log);
    store.close()?;
    Ok(())
}

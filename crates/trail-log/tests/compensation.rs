//! What the engine gives compensation (issue 9): records that undo an
//! earlier one and commit to its hash, checked by every verify (each undoes
//! an earlier LSN, once, naming its hash), and appends that land only if no
//! record about a resource came after the caller's view of it.

mod common;

use common::{event, log_name, open, small_segments, TestResult};
use trail_log::{EventInput, LogError, Lsn, RecordHash, RecordKind};

fn compensation(id: &str, target: Lsn, hash: RecordHash) -> EventInput {
    EventInput {
        kind: RecordKind::Compensation {
            compensates: target,
            compensates_hash: hash,
        },
        ..event(id, 100)
    }
}

#[test]
fn a_condition_on_a_resource_fails_only_after_a_record_about_it() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    log.append_blocking(vec![event("a-1", 100).about("order/1")], false)?;
    log.append_blocking(vec![event("b-1", 100).about("order/2")], false)?;
    log.append_blocking(vec![event("plain", 100)], false)?;

    // As of LSN 1, order/1 is unchanged: records about other resources (or
    // none) do not count.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let ok = log
        .prepare(vec![event("a-2", 100).about("order/1")], true)?
        .only_if_unchanged("order/1", Lsn(1));
    let receipts = runtime.block_on(async { log.submit(ok).await?.wait().await })?;
    assert_eq!(receipts[0].lsn, Lsn(4));

    // As of LSN 3 it is not: LSN 4 is about it. Nothing of the batch lands.
    let stale = log
        .prepare(
            vec![event("a-3", 100).about("order/1"), event("a-4", 100)],
            true,
        )?
        .only_if_unchanged("order/1", Lsn(3));
    let refused = runtime.block_on(async { log.submit(stale).await?.wait().await });
    match refused {
        Err(LogError::ResourceChanged { since, last, .. }) => {
            assert_eq!((since, last), (Lsn(3), Lsn(4)));
        }
        other => panic!("expected ResourceChanged, got {other:?}"),
    }
    assert_eq!(log.head().lsn, Lsn(4));
    assert_eq!(
        refused_kind(&LogError::ResourceChanged {
            log: "x".into(),
            since: Lsn(1),
            last: Lsn(2)
        }),
        trail_log::ErrorKind::Aborted
    );

    // After a reopen the writer does not know what came before: a view older
    // than the head fails, one at the head passes.
    drop(log);
    drop(store);
    let (_store, log) = open(directory.path(), small_segments())?;
    let old_view = log
        .prepare(vec![event("c-1", 100).about("order/9")], false)?
        .only_if_unchanged("order/9", Lsn(3));
    assert!(matches!(
        runtime.block_on(async { log.submit(old_view).await?.wait().await }),
        Err(LogError::ResourceChanged { .. })
    ));
    let at_head = log
        .prepare(vec![event("c-1", 100).about("order/9")], false)?
        .only_if_unchanged("order/9", Lsn(4));
    let receipts = runtime.block_on(async { log.submit(at_head).await?.wait().await })?;
    assert_eq!(receipts[0].lsn, Lsn(5));
    Ok(())
}

fn refused_kind(error: &LogError) -> trail_log::ErrorKind {
    error.kind()
}

#[test]
fn verify_checks_every_compensation_online_and_offline() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    let mut receipts = Vec::new();
    // Enough records to put targets in earlier segments than their
    // compensations.
    for index in 0..600 {
        receipts.push(log.append_blocking(vec![event(&format!("e-{index}"), 300)], false)?[0]);
    }
    assert!(log.segments().len() > 1, "targets in sealed segments");
    let first = receipts[2];
    log.append_blocking(vec![compensation("undo-3", first.lsn, first.hash)], false)?;
    let redo = log.head();
    log.append_blocking(vec![compensation("undo-undo", redo.lsn, redo.hash)], false)?;
    let report = log.verify(Lsn::FIRST, Lsn(u64::MAX), &mut |_| {})?;
    assert_eq!(report.failure, None);
    assert_eq!(report.compensations_checked, 2);
    let offline = trail_log::offline::verify(directory.path(), &log_name(), &mut |_| {})?;
    assert_eq!(offline.failure, None);
    assert_eq!(offline.compensations_checked, 2);

    // A compensation that names another hash: the first failure, by LSN.
    log.append_blocking(
        vec![compensation(
            "wrong-hash",
            receipts[10].lsn,
            receipts[11].hash,
        )],
        false,
    )?;
    let wrong = log.head().lsn;
    let report = log.verify(Lsn::FIRST, Lsn(u64::MAX), &mut |_| {})?;
    let failure = report.failure.expect("a wrong hash fails verify");
    assert_eq!(failure.lsn, wrong);
    assert!(
        failure.reason.contains(&receipts[11].hash.to_hex())
            && failure
                .reason
                .contains(&format!("lsn {}", receipts[10].lsn)),
        "{}",
        failure.reason
    );
    assert!(failure.file.exists(), "names the segment file");
    drop(log);
    drop(store);

    // A second log where one record is undone twice.
    let other = tempfile::tempdir()?;
    let (_store, log) = open(other.path(), small_segments())?;
    let target = log.append_blocking(vec![event("t", 100)], false)?[0];
    log.append_blocking(vec![compensation("undo-1", target.lsn, target.hash)], false)?;
    log.append_blocking(vec![compensation("undo-2", target.lsn, target.hash)], false)?;
    let report = log.verify(Lsn::FIRST, Lsn(u64::MAX), &mut |_| {})?;
    let failure = report.failure.expect("twice fails verify");
    assert_eq!(failure.lsn, Lsn(3));
    assert!(
        failure.reason.contains("compensated twice"),
        "{}",
        failure.reason
    );
    Ok(())
}

#[test]
fn the_writer_refuses_a_compensation_of_a_later_record() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (_store, log) = open(directory.path(), small_segments())?;
    log.append_blocking(vec![event("a", 100)], false)?;
    let error = log
        .append_blocking(
            vec![compensation("self", Lsn(2), RecordHash::default())],
            false,
        )
        .expect_err("lsn 2 would be itself");
    assert!(
        error.to_string().contains("undoes an earlier record"),
        "{error}"
    );
    let format_one = EventInput {
        kind: RecordKind::CompensationV1 {
            compensates: Lsn(1),
        },
        ..event("v1", 100)
    };
    let error = log
        .append_blocking(vec![format_one], false)
        .expect_err("format 1 kinds are read only");
    assert!(error.to_string().contains("cannot be written"), "{error}");
    assert_eq!(log.head().lsn, Lsn(1));
    Ok(())
}

#[test]
fn an_event_id_is_found_through_the_writers_index_after_a_reopen() -> TestResult {
    let directory = tempfile::tempdir()?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let (store, log) = open(directory.path(), small_segments())?;
    let mut receipts = Vec::new();
    for index in 0..400 {
        receipts.push(log.append_blocking(vec![event(&format!("e-{index}"), 300)], false)?[0]);
    }
    assert_eq!(
        runtime
            .block_on(log.find_event_id("e-7"))?
            .map(|found| (found.lsn, found.hash)),
        Some((receipts[7].lsn, receipts[7].hash))
    );
    drop(log);
    drop(store);
    let (_store, log) = open(directory.path(), small_segments())?;
    let found = runtime.block_on(log.find_event_id("e-399"))?;
    assert_eq!(found.map(|found| found.lsn), Some(receipts[399].lsn));
    assert!(found.is_some_and(|found| !found.duplicate));
    assert_eq!(runtime.block_on(log.find_event_id("e-400"))?, None);
    Ok(())
}

//! `Log::seal_active`: what `trail archive now` asks of the engine. It
//! seals the active segment only when it holds records, after the appends
//! queued before it, leaves no empty segment behind, and a log sealed this
//! way reopens, reads, verifies and keeps appending with its chain intact.

mod common;

use common::{append_one, event, open, segment_files, small_segments, TestResult};
use trail_log::{Durability, LogOptions, Lsn};

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

#[test]
fn seals_only_a_segment_holding_records_and_the_next_append_starts_one() -> TestResult {
    let directory = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (store, log) = open(directory.path(), small_segments())?;

    // An empty log: nothing to seal, nothing created.
    assert_eq!(runtime.block_on(log.seal_active())?, None);

    let mut receipts = Vec::new();
    for position in 0..5 {
        receipts.push(append_one(&log, &format!("e-{position}"))?);
    }
    let sealed = runtime
        .block_on(log.seal_active())?
        .expect("five records to seal");
    assert!(sealed.sealed);
    assert_eq!((sealed.first_lsn, sealed.last_lsn), (Lsn(1), Lsn(5)));
    assert_eq!(sealed.last_hash, receipts[4].hash);
    // The file is trimmed to its seal and footer, not left preallocated.
    assert_eq!(
        std::fs::metadata(&sealed.path)?.len(),
        sealed.file_bytes,
        "trimmed"
    );
    assert!(sealed.file_bytes < small_segments().segment_bytes);

    // Sealing again finds no active segment; none is created for it.
    assert_eq!(runtime.block_on(log.seal_active())?, None);
    assert_eq!(segment_files(directory.path()).len(), 1);
    assert!(log.segments().iter().all(|info| info.sealed));

    // The next append opens a segment chained to the sealed one.
    receipts.push(append_one(&log, "e-5")?);
    assert_eq!(receipts[5].lsn, Lsn(6));
    let segments = log.segments();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[1].first_lsn, Lsn(6));
    assert_eq!(segments[1].prev_hash, receipts[4].hash);
    assert!(!segments[1].sealed);
    let second = runtime.block_on(log.seal_active())?.expect("one record");
    assert_eq!((second.first_lsn, second.last_lsn), (Lsn(6), Lsn(6)));

    // Reopened with every segment sealed (no active one): reads, verifies,
    // recognises retries, and appends after the last seal.
    log.close()?;
    drop(log);
    drop(store);
    let (_store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(6));
    let read: Vec<_> = log.read(Lsn(1), Lsn(6)).collect::<Result<_, _>>()?;
    assert_eq!(
        read.iter().map(|stored| stored.hash).collect::<Vec<_>>(),
        receipts
            .iter()
            .map(|receipt| receipt.hash)
            .collect::<Vec<_>>()
    );
    let report = log.verify(Lsn(1), Lsn(6), &mut |_| {})?;
    assert_eq!(report.verified, 6);
    assert!(report.failure.is_none(), "{:?}", report.failure);
    let retry = append_one(&log, "e-0")?;
    assert!(retry.duplicate);
    assert_eq!(retry.lsn, Lsn(1));
    let next = append_one(&log, "e-6")?;
    assert_eq!(next.lsn, Lsn(7));
    let segments = log.segments();
    assert_eq!(segments.last().map(|info| info.first_lsn), Some(Lsn(7)));
    assert_eq!(
        segments.last().map(|info| info.prev_hash),
        Some(receipts[5].hash)
    );
    Ok(())
}

#[test]
fn appends_queued_before_the_seal_are_in_the_sealed_segment() -> TestResult {
    let directory = tempfile::tempdir()?;
    let runtime = runtime()?;
    // Interval durability with a long interval: only the seal makes the
    // group durable, so the answer shows the seal synced what it sealed.
    let options = LogOptions {
        durability: Durability::Interval(std::time::Duration::from_secs(60)),
        ..small_segments()
    };
    let (_store, log) = open(directory.path(), options)?;
    let (sealed, receipts) = runtime.block_on(async {
        let mut pending = Vec::new();
        for position in 0..20 {
            let append = log.prepare(vec![event(&format!("q-{position}"), 300)], false)?;
            pending.push(log.submit(append).await?);
        }
        let sealed = log.seal_active().await?;
        let mut receipts = Vec::new();
        for one in pending {
            receipts.extend(one.wait().await?);
        }
        Ok::<_, trail_log::LogError>((sealed, receipts))
    })?;
    let sealed = sealed.expect("records to seal");
    assert_eq!(receipts.len(), 20);
    assert_eq!(sealed.first_lsn, Lsn(1));
    assert_eq!(sealed.last_lsn, Lsn(20), "every queued append is sealed");
    assert_eq!(sealed.last_hash, receipts[19].hash);
    assert_eq!(log.head().lsn, Lsn(20));
    let report = log.verify(Lsn(1), Lsn(20), &mut |_| {})?;
    assert_eq!(report.verified, 20);
    Ok(())
}

#[test]
fn a_closed_log_refuses_to_seal() -> TestResult {
    let directory = tempfile::tempdir()?;
    let runtime = runtime()?;
    let (_store, log) = open(directory.path(), small_segments())?;
    append_one(&log, "only")?;
    log.close()?;
    let refused = runtime.block_on(log.seal_active());
    assert_eq!(
        refused.map_err(|error| error.kind()).err(),
        Some(trail_log::ErrorKind::Unavailable)
    );
    Ok(())
}

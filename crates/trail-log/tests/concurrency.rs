//! Many appenders at once: every receipt matches what a reader sees, LSNs
//! are dense, and retries across a reopen return the original receipts.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::*;
use trail_log::{Lsn, Receipt};

#[test]
fn many_threads_appending_get_receipts_that_match_the_log() -> TestResult {
    let directory = tempfile::tempdir()?;
    let threads = 16;
    let per_thread = 150;
    let receipts: Vec<(String, Receipt)> = {
        let (store, log) = open(directory.path(), small_segments())?;
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let log = Arc::clone(&log);
                std::thread::spawn(
                    move || -> Result<Vec<(String, Receipt)>, trail_log::LogError> {
                        let mut mine = Vec::new();
                        for index in 0..per_thread {
                            if index % 10 == 0 {
                                let events: Vec<_> = (0..3)
                                    .map(|part| event(&format!("t{thread}-{index}-{part}"), 120))
                                    .collect();
                                let batch = log.append_blocking(events, true)?;
                                for window in batch.windows(2) {
                                    assert_eq!(
                                        window[1].lsn,
                                        window[0].lsn.next(),
                                        "an atomic batch is contiguous"
                                    );
                                }
                                for (part, receipt) in batch.into_iter().enumerate() {
                                    mine.push((format!("t{thread}-{index}-{part}"), receipt));
                                }
                            } else {
                                let id = format!("t{thread}-{index}");
                                mine.push((id.clone(), append_one(&log, &id)?));
                            }
                        }
                        Ok(mine)
                    },
                )
            })
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            all.extend(handle.join().map_err(|_| "appender panicked")??);
        }
        assert_log_matches(&log, &all);
        store.close()?;
        all
    };
    let expected_total = threads * (per_thread / 10 * 3 + per_thread - per_thread / 10);
    assert_eq!(receipts.len(), expected_total);
    let mut by_lsn: HashMap<Lsn, &str> = HashMap::new();
    for (id, receipt) in &receipts {
        assert!(
            by_lsn.insert(receipt.lsn, id).is_none(),
            "lsn {} handed out twice",
            receipt.lsn
        );
    }

    let (_store, log) = open(directory.path(), small_segments())?;
    assert_eq!(log.head().lsn, Lsn(expected_total as u64));
    for (id, original) in receipts.iter().step_by(37) {
        let size = if id.matches('-').count() == 2 {
            120
        } else {
            200
        };
        let retried = log.append_blocking(vec![event(id, size)], false)?[0];
        assert!(retried.duplicate, "{id} is a duplicate after reopen");
        assert_eq!((retried.lsn, retried.hash), (original.lsn, original.hash));
    }
    assert_eq!(
        log.head().lsn,
        Lsn(expected_total as u64),
        "retries append nothing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_appending_through_the_async_api() -> TestResult {
    let directory = tempfile::tempdir()?;
    let (store, log) = open(directory.path(), small_segments())?;
    let mut tasks = Vec::new();
    for task in 0..64 {
        let log = Arc::clone(&log);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for index in 0..20 {
                let id = format!("task{task}-{index}");
                let receipt = log.append(vec![event(&id, 200)], false).await?[0];
                mine.push((id, receipt));
            }
            Ok::<_, trail_log::LogError>(mine)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    assert_eq!(all.len(), 64 * 20);
    let checker = Arc::clone(&log);
    tokio::task::spawn_blocking(move || assert_log_matches(&checker, &all)).await?;
    tokio::task::spawn_blocking(move || store.close()).await??;
    Ok(())
}

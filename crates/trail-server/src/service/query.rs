//! `Query`: LSNs from the log's query index, then the records themselves
//! from the log (the index says where; only the log says what). The
//! filter, page size and wait are bounded by `[limits]`; a page is complete
//! through the index's watermark it names, and its cursor pins that
//! watermark so later pages see the same log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Status;
use trail_index::cursor::Cursor;
use trail_index::filter::request_digest;
use trail_index::{Filter, IndexError, PageRequest, Progress};
use trail_log::{Log, LogError, Lsn, StoredRecord};
use trail_proto::server_view::QueryResponse;
use trail_proto::v1::QueryRequest;

use super::admin::archive_status_error;
use super::cache::ArchiveReaders;
use super::read::{compensation_marks, marked_record};
use super::LogService;
use crate::limits::Limits;
use crate::status;

/// LSNs closer than this are read as one range instead of one by one: a
/// single read of a record walks from its sparse-index entry anyway.
const READ_TOGETHER_GAP: u64 = 32;

/// Local reads in a row that may find hits archived (the compactor removed
/// them between the check and the read) before the query gives up: each
/// retry moves them to the archive, so more means a bug.
const NOT_LOCAL_RETRIES_MAX: u32 = 3;

/// Serves one `Query`.
pub(super) async fn query(
    service: &LogService,
    request: QueryRequest,
) -> Result<QueryResponse, Status> {
    let limits = &service.shared.limits;
    let QueryRequest {
        log,
        filter,
        limit,
        cursor,
        descending,
        min_lsn,
        min_lsn_timeout_ms,
    } = request;
    let open = service.existing_open_log(&log).await?;
    let derived = Arc::clone(open.derived.running()?);
    let filter_request = filter.unwrap_or_default();
    let filter = Filter::from_proto(&filter_request, limits.query_filters_max)
        .map_err(|error| index_status(&error))?;
    let limit = page_limit(limit, limits)?;
    let digest = request_digest(&filter_request);
    let cursor = if cursor.is_empty() {
        None
    } else {
        Some(Cursor::decode(&cursor, descending, digest).map_err(|error| index_status(&error))?)
    };
    let timeout = wait_timeout(min_lsn_timeout_ms, limits)?;
    derived.want_query(min_lsn);
    let progress = wait_for(derived.query_progress(), min_lsn, timeout, "query index").await?;
    let through = cursor.map_or(progress.lsn(), |cursor| cursor.through);
    let page = PageRequest {
        after: cursor.map(|cursor| cursor.after),
        descending,
        limit,
        through,
    };
    let log = Arc::clone(&open.log);
    let permit = Arc::clone(&service.disk_reads)
        .acquire_owned()
        .await
        .map_err(|_| Status::unavailable("server is shutting down"))?;
    let searching = Arc::clone(&derived);
    let reading = Arc::clone(&log);
    let archiving = service.archive.is_some();
    let (found, local) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let found = searching
            .search(&filter, page)
            .map_err(|error| index_status(&error))?;
        let local = read_local_part(&reading, &found.lsns, archiving)?;
        let marks = local
            .archived
            .is_empty()
            .then(|| compensation_marks(Some(searching.as_ref()), &local.records));
        Ok::<_, Status>((found, (local, marks)))
    })
    .await
    .map_err(|error| Status::internal(format!("query failed: {error}")))??;
    let (lsns, more) = (found.lsns, found.more);
    let records = match local {
        (local, Some(marks)) => (order(&lsns, local.records)?, marks),
        (local, None) => {
            // Hits before the log's first local LSN: through the log's
            // archive reader (its cache, one download per segment, each
            // segment checked against its manifest and the chain).
            let archive = service
                .archive
                .as_ref()
                .ok_or_else(|| Status::internal("archived hits without an archive"))?;
            let mut records = local.records;
            records.extend(read_archived_lsns(archive, &log, &local.archived).await?);
            let records = order(&lsns, records)?;
            let permit = Arc::clone(&service.disk_reads)
                .acquire_owned()
                .await
                .map_err(|_| Status::unavailable("server is shutting down"))?;
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let marks = compensation_marks(Some(derived.as_ref()), &records);
                (records, marks)
            })
            .await
            .map_err(|error| Status::internal(format!("query failed: {error}")))?
        }
    };
    let next_cursor = match (more, lsns.last()) {
        (true, Some(&after)) => Cursor {
            after,
            through,
            descending,
            filter: digest,
        }
        .encode(),
        _ => String::new(),
    };
    Ok(QueryResponse {
        records: records
            .0
            .iter()
            .map(|stored| marked_record(stored, &records.1))
            .collect(),
        next_cursor,
        index_lsn: through,
    })
}

/// The records at `lsns` (in that order): the local ones in one blocking
/// read under the server-wide disk-read bound, nearby LSNs as one range;
/// archived ones through the log's archive reader. Query does the same in
/// steps of its own (its search and marks share the blocking read);
/// Compensate reads its targets and its landed records with this.
pub(super) async fn read_records_at(
    service: &LogService,
    log: &Arc<Log>,
    lsns: &[u64],
) -> Result<Vec<StoredRecord>, Status> {
    let permit = Arc::clone(&service.disk_reads)
        .acquire_owned()
        .await
        .map_err(|_| Status::unavailable("server is shutting down"))?;
    let reading = Arc::clone(log);
    let wanted = lsns.to_vec();
    let archiving = service.archive.is_some();
    let local = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read_local_part(&reading, &wanted, archiving)
    })
    .await
    .map_err(|error| Status::internal(format!("reading failed: {error}")))??;
    let mut records = local.records;
    if !local.archived.is_empty() {
        let archive = service
            .archive
            .as_ref()
            .ok_or_else(|| Status::internal("archived lsns without an archive"))?;
        records.extend(read_archived_lsns(archive, log, &local.archived).await?);
    }
    order(lsns, records)
}

/// The records at `sorted` (ascending), read from the local log with
/// nearby ones read as one range, in LSN order.
fn read_sorted(log: &Log, sorted: &[u64]) -> Result<Vec<StoredRecord>, LogError> {
    let mut found = Vec::with_capacity(sorted.len());
    let mut at = 0;
    while at < sorted.len() {
        let first = sorted[at];
        let mut last = first;
        while at + 1 < sorted.len() && sorted[at + 1] - last <= READ_TOGETHER_GAP {
            at += 1;
            last = sorted[at];
        }
        at += 1;
        for stored in log.read(Lsn(first), Lsn(last)) {
            let stored = stored?;
            if sorted.binary_search(&stored.record.lsn.0).is_ok() {
                found.push(stored);
            }
        }
    }
    Ok(found)
}

/// `records` in the order of `lsns`; INTERNAL when one is missing.
fn order(lsns: &[u64], records: Vec<StoredRecord>) -> Result<Vec<StoredRecord>, Status> {
    let mut found: HashMap<u64, StoredRecord> = records
        .into_iter()
        .map(|stored| (stored.record.lsn.0, stored))
        .collect();
    lsns.iter()
        .map(|lsn| {
            found.remove(lsn).ok_or_else(|| {
                Status::internal(format!(
                    "lsn {lsn} was asked for (the query index names it, or a compensation), but the log did not return it"
                ))
            })
        })
        .collect()
}

/// What the local log holds of a page's hits, and the hits it does not
/// hold because they are archived.
struct LocalPart {
    /// In LSN order.
    records: Vec<StoredRecord>,
    /// Ascending; before the log's first local LSN.
    archived: Vec<u64>,
}

/// Reads the hits the local log holds. With `archiving`, hits before its
/// first local LSN are left for the archive, and so are those the
/// compactor removes while this reads (the read then starts over with the
/// new first local LSN, a bounded number of times). Blocking.
fn read_local_part(log: &Log, lsns: &[u64], archiving: bool) -> Result<LocalPart, Status> {
    let mut sorted = lsns.to_vec();
    sorted.sort_unstable();
    let mut attempts = 0;
    loop {
        let first_local = if archiving {
            log.first_local_lsn().0
        } else {
            0
        };
        let split = sorted.partition_point(|&lsn| lsn < first_local);
        match read_sorted(log, &sorted[split..]) {
            Ok(records) => {
                return Ok(LocalPart {
                    records,
                    archived: sorted[..split].to_vec(),
                })
            }
            Err(LogError::NotLocal { .. }) if archiving && attempts < NOT_LOCAL_RETRIES_MAX => {
                attempts += 1;
            }
            Err(error) => return Err(status::from_log_error(&error)),
        }
    }
}

/// The archived records at `sorted` (ascending), through `log`'s archive
/// reader, nearby ones read as one range; counted in the archive metrics.
async fn read_archived_lsns(
    archive: &ArchiveReaders,
    log: &Log,
    sorted: &[u64],
) -> Result<Vec<StoredRecord>, Status> {
    let (reader, metrics) = archive.reader(log.name());
    let mut found = Vec::with_capacity(sorted.len());
    let mut at = 0;
    while at < sorted.len() {
        let first = sorted[at];
        let mut last = first;
        while at + 1 < sorted.len() && sorted[at + 1] - last <= READ_TOGETHER_GAP {
            at += 1;
            last = sorted[at];
        }
        at += 1;
        let mut next = first;
        // Bounded: each read returns at least one record (or the loop
        // ends), at most READ_RECORDS_MAX per pass.
        let passes_max = (last - first) / trail_archive::READ_RECORDS_MAX + 2;
        for _ in 0..passes_max {
            if next > last {
                break;
            }
            let started = Instant::now();
            let read = reader
                .read_counted(Lsn(next), Lsn(last))
                .await
                .map_err(|error| archive_status_error(&error))?;
            metrics.read(read.hits, read.misses, started.elapsed());
            let Some(end) = read.records.last().map(|stored| stored.record.lsn.0) else {
                return Err(Status::data_loss(format!(
                    "lsn {next} of log {} is not on local disk and the archive does not hold it",
                    log.name()
                )));
            };
            found.extend(
                read.records
                    .into_iter()
                    .filter(|stored| sorted.binary_search(&stored.record.lsn.0).is_ok()),
            );
            next = end + 1;
        }
        if next <= last {
            return Err(Status::internal(format!(
                "reading archived lsns {next}..={last} of log {} did not finish",
                log.name()
            )));
        }
    }
    Ok(found)
}

/// The page size a request asks for: 0 is the default; above the maximum
/// is refused, naming the limit.
pub(super) fn page_limit(asked: u32, limits: &Limits) -> Result<usize, Status> {
    let asked = usize::try_from(asked).unwrap_or(usize::MAX);
    match asked {
        0 => Ok(limits.query_page_records_default),
        asked if asked > limits.query_page_records_max => Err(Status::resource_exhausted(format!(
            "limit is {asked} records; the limit is {} (limits.query_page_records_max)",
            limits.query_page_records_max
        ))),
        asked => Ok(asked),
    }
}

/// How long a request may wait for a derived store: 0 is the default;
/// above the maximum is refused, naming the limit.
pub(super) fn wait_timeout(asked_ms: u32, limits: &Limits) -> Result<Duration, Status> {
    let asked = u64::from(asked_ms);
    match asked {
        0 => Ok(Duration::from_millis(limits.index_wait_ms_default)),
        asked if asked > limits.index_wait_ms_max => Err(Status::resource_exhausted(format!(
            "min_lsn_timeout_ms is {asked}; the limit is {} (limits.index_wait_ms_max)",
            limits.index_wait_ms_max
        ))),
        asked => Ok(Duration::from_millis(asked)),
    }
}

/// Waits until a derived store has taken in `min_lsn` (at once for 0):
/// DEADLINE_EXCEEDED when `timeout` runs out first, UNAVAILABLE when the
/// store has stopped following the log.
pub(super) async fn wait_for(
    mut progress: watch::Receiver<Progress>,
    min_lsn: u64,
    timeout: Duration,
    store: &str,
) -> Result<Progress, Status> {
    let stopped = |progress: &Progress| {
        progress.error.as_ref().map(|error| {
            Status::unavailable(format!(
                "the {store} stopped following the log at lsn {}: {error}",
                progress.lsn()
            ))
        })
    };
    let reached = tokio::time::timeout(
        timeout,
        progress.wait_for(|progress| progress.lsn() >= min_lsn || progress.error.is_some()),
    )
    .await
    .map(|waited| waited.map(|progress| progress.clone()));
    let current = match reached {
        Ok(Ok(progress)) => progress,
        Ok(Err(_)) => return Err(Status::unavailable(format!("the {store} is shutting down"))),
        Err(_) => {
            let now = progress.borrow().clone();
            return Err(stopped(&now).unwrap_or_else(|| {
                Status::deadline_exceeded(format!(
                    "the {store} reached lsn {} but not min_lsn {min_lsn} within {} ms",
                    now.lsn(),
                    timeout.as_millis()
                ))
            }));
        }
    };
    match stopped(&current) {
        Some(status) => Err(status),
        None => Ok(current),
    }
}

/// The status for a derived-store error: its kind through the one
/// mapping to gRPC codes, its message as it is.
pub(super) fn index_status(error: &IndexError) -> Status {
    let code = status::code_for(error.kind());
    if code == tonic::Code::Internal {
        tracing::error!(%error, "derived store failed");
    }
    Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use trail_log::{Head, Lsn, RecordHash};

    use super::*;

    fn at(lsn: u64, error: Option<&str>) -> Progress {
        Progress {
            applied: Some(Head {
                lsn: Lsn(lsn),
                hash: RecordHash([1; 32]),
            }),
            error: error.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn a_wait_answers_when_reached_times_out_or_reports_a_stopped_store() {
        let (sender, progress) = watch::channel(at(3, None));
        let short = Duration::from_millis(50);
        // Reached already, and 0 never waits.
        assert_eq!(
            wait_for(progress.clone(), 3, short, "query index")
                .await
                .map(|p| p.lsn())
                .ok(),
            Some(3)
        );
        assert!(wait_for(progress.clone(), 0, short, "query index")
            .await
            .is_ok());
        // Not reached in time: DEADLINE_EXCEEDED saying how far it got.
        let late = wait_for(progress.clone(), 9, short, "query index")
            .await
            .expect_err("not reached");
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        assert!(
            late.message().contains("reached lsn 3 but not min_lsn 9"),
            "{}",
            late.message()
        );
        // Reached while waiting.
        let waiting = tokio::spawn(wait_for(
            progress.clone(),
            5,
            Duration::from_secs(5),
            "query index",
        ));
        sender.send_replace(at(5, None));
        assert_eq!(
            waiting.await.ok().and_then(Result::ok).map(|p| p.lsn()),
            Some(5)
        );
        // A store that stopped: UNAVAILABLE with its reason, even when reached.
        sender.send_replace(at(5, Some("disk gone")));
        for wanted in [4, 9] {
            let stopped = wait_for(progress.clone(), wanted, short, "state store")
                .await
                .expect_err("stopped");
            assert_eq!(stopped.code(), tonic::Code::Unavailable);
            assert!(
                stopped
                    .message()
                    .contains("the state store stopped following the log at lsn 5: disk gone"),
                "{}",
                stopped.message()
            );
        }
        // The driver gone: UNAVAILABLE, not a hang.
        drop(sender);
        let gone = wait_for(progress, 9, Duration::from_secs(5), "query index")
            .await
            .expect_err("gone");
        assert_eq!(gone.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn page_and_wait_bounds_default_and_refuse_naming_the_key() {
        let limits = Limits::default();
        assert_eq!(
            page_limit(0, &limits).ok(),
            Some(limits.query_page_records_default)
        );
        assert_eq!(page_limit(7, &limits).ok(), Some(7));
        let over = page_limit(1_001, &limits).expect_err("over");
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
        assert!(over.message().contains("limits.query_page_records_max"));
        assert_eq!(
            wait_timeout(0, &limits).ok(),
            Some(Duration::from_millis(limits.index_wait_ms_default))
        );
        let over = wait_timeout(60_001, &limits).expect_err("over");
        assert!(over.message().contains("limits.index_wait_ms_max"));
    }
}

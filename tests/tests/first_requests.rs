//! Many clients' first requests to a log that does not exist yet, all at
//! once, against the real `traild`: every append succeeds, each event gets
//! one LSN of a dense range, and the server opens the log once on one
//! blocking thread while the other requests wait as tasks. Its threads stay
//! under a bound that does not grow with the number of waiting requests.
//!
//! (The build before, d07e969, waited for the opening on the blocking pool,
//! one blocking thread per waiting request: 117 threads at the peak here,
//! against 18 since.)

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use trail_e2e::{process_status, read_log, sample_process, Error, Traild};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{AppendRequest, Event, Outcome};

const LOG: &str = "first";
/// First requests sent at once, one event each.
const REQUESTS: usize = 100;
/// HTTP/2 connections they share (the server allows 256 streams on each).
const CONNECTIONS: usize = 2;
/// The server's threads may not reach this: 2 tokio workers, the log's
/// writer and preparer, the derived stores' threads (about a dozen, most of
/// them sled's and tantivy's), the metrics listener and a few blocking-pool
/// threads. Not one per waiting request.
const THREADS_MAX: u64 = 48;
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn event(sequence: usize) -> Event {
    Event {
        event_id: format!("first-{sequence}"),
        actor: "client".to_owned(),
        action: "write".to_owned(),
        resource: format!("doc/{sequence}"),
        trace_id: String::new(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000 + sequence as i64,
        attributes: BTreeMap::new(),
        payload: vec![b'p'; 64],
        change: None,
        compensation: None,
    }
}

async fn connect(address: &str) -> Result<LogClient<Channel>, Error> {
    let channel = Endpoint::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(LogClient::new(channel))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_requests_to_a_new_log_wait_for_one_opening_without_a_thread_each(
) -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server = Traild::start(&dir.path().join("data"), &[])?;
    let pid = server.pid();
    let at_start = process_status(pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_process(pid, Arc::clone(&stop));

    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(connect(&server.address).await?);
    }
    let mut requests = Vec::with_capacity(REQUESTS);
    for sequence in 0..REQUESTS {
        let mut client = clients[sequence % CONNECTIONS].clone();
        requests.push(tokio::spawn(async move {
            let receipts = tokio::time::timeout(
                STEP_TIMEOUT,
                client.append(AppendRequest {
                    log: LOG.to_owned(),
                    events: vec![event(sequence)],
                    atomic: false,
                }),
            )
            .await
            .map_err(|_| format!("first request {sequence} took over 30 s"))??
            .into_inner()
            .receipts;
            Ok::<_, Error>((sequence, receipts))
        }));
    }
    let mut lsns = Vec::with_capacity(REQUESTS);
    for request in requests {
        let (sequence, receipts) = request.await??;
        assert_eq!(receipts.len(), 1, "one receipt for request {sequence}");
        assert_eq!(receipts[0].event_id, format!("first-{sequence}"));
        assert!(!receipts[0].duplicate, "event {sequence} taken for a retry");
        lsns.push(receipts[0].lsn);
    }
    lsns.sort_unstable();
    let dense: Vec<u64> = (1..=REQUESTS as u64).collect();
    assert_eq!(
        lsns, dense,
        "one LSN each, dense from 1: the log opened once"
    );

    stop.store(true, Ordering::Relaxed);
    let peaks = sampler.join().map_err(|_| "the sampler panicked")??;
    let threads = peaks.threads.max(process_status(pid)?.threads);
    eprintln!(
        "traild with {REQUESTS} first requests at once: threads {} at start, peak {threads} \
         ({} samples)",
        at_start.threads, peaks.samples
    );
    assert!(
        threads < THREADS_MAX,
        "traild reached {threads} threads for {REQUESTS} first requests to one log \
         (bound {THREADS_MAX}); its log:\n{}",
        read_log(&server.log_file)
    );
    Ok(())
}

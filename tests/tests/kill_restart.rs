//! The real `traild`, killed with SIGKILL while many clients append, several
//! times in one run. After each restart every acknowledged event must be in
//! the log at the LSN and with the hash its receipt named, LSNs must be dense
//! from 1, the hash chain must link, and retrying any event (acknowledged or
//! in flight at the kill) must be safe: the original receipt, or one new copy.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint};
use trail_e2e::{Error, Traild};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::{AppendRequest, Event, Outcome, Record, VerifyRequest};

/// Kill cycles in one run.
const CYCLES: usize = 4;
/// Concurrent producers.
const CLIENTS: usize = 16;
/// Most requests one producer sends in one cycle (the kill comes first).
const REQUESTS_PER_CLIENT_MAX: usize = 2_000;
const LOG: &str = "crash";

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ack {
    lsn: u64,
    hash: Vec<u8>,
}

#[derive(Default)]
struct Ledger {
    /// Every event sent, by id.
    sent: HashMap<String, Event>,
    /// What the server acknowledged, by event id.
    acked: HashMap<String, Ack>,
}

fn event(id: String, client: usize, sequence: usize) -> Event {
    Event {
        event_id: id,
        actor: format!("client-{client}"),
        action: "write".to_owned(),
        resource: format!("doc/{}", sequence % 7),
        trace_id: String::new(),
        outcome: Outcome::Success as i32,
        occurred_at_unix_nanos: 1_700_000_000_000_000_000 + sequence as i64,
        attributes: BTreeMap::from([("client".to_owned(), client.to_string())]),
        payload: vec![b'p'; 64 + sequence % 200],
        change: None,
        compensation: None,
    }
}

async fn connect(address: &str) -> Result<Channel, Error> {
    Ok(Endpoint::from_shared(address.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// One producer: appends batches of 1..=4 events until the server dies or
/// the bound is reached. Records what was sent before sending and what was
/// acknowledged after.
async fn produce(
    channel: Channel,
    cycle: usize,
    client: usize,
    seed: u64,
    ledger: Arc<Mutex<Ledger>>,
) {
    let mut grpc = LogClient::new(channel);
    let mut sequence = 0usize;
    let started = Instant::now();
    for request in 0..REQUESTS_PER_CLIENT_MAX {
        if started.elapsed() > Duration::from_secs(20) {
            return;
        }
        let batch = 1 + ((seed as usize + client * 31 + request * 17) % 4);
        let events: Vec<Event> = (0..batch)
            .map(|_| {
                sequence += 1;
                event(format!("c{cycle}-k{client}-s{sequence}"), client, sequence)
            })
            .collect();
        {
            let mut ledger = ledger.lock().unwrap();
            for event in &events {
                ledger.sent.insert(event.event_id.clone(), event.clone());
            }
        }
        let atomic = request % 3 == 0;
        let Ok(response) = grpc
            .append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic,
            })
            .await
        else {
            return;
        };
        let mut ledger = ledger.lock().unwrap();
        for receipt in response.into_inner().receipts {
            assert!(
                !receipt.duplicate,
                "a fresh event came back as a duplicate: {receipt:?}"
            );
            ledger.acked.insert(
                receipt.event_id,
                Ack {
                    lsn: receipt.lsn,
                    hash: receipt.hash,
                },
            );
        }
    }
}

/// Every acked event at its LSN with its hash; LSNs dense from 1; the chain
/// links; the server's own verify agrees.
async fn check_log(address: &str, ledger: &Ledger) -> Result<Vec<Record>, Error> {
    let mut grpc = LogClient::new(connect(address).await?);
    let records = trail_e2e::read_all(&mut grpc, LOG).await?;
    for (index, record) in records.iter().enumerate() {
        assert_eq!(record.lsn, index as u64 + 1, "LSNs are not dense");
        if index > 0 {
            assert_eq!(
                record.prev_hash,
                records[index - 1].hash,
                "chain broken at lsn {}",
                record.lsn
            );
        }
    }
    let mut positions = HashMap::with_capacity(records.len());
    for record in &records {
        let id = record
            .event
            .as_ref()
            .map(|event| event.event_id.clone())
            .unwrap_or_default();
        assert!(
            positions.insert(id.clone(), record).is_none(),
            "event {id} is in the log twice"
        );
    }
    for (id, ack) in &ledger.acked {
        let Some(record) = positions.get(id) else {
            panic!(
                "acknowledged event {id} (lsn {}) is missing after the restart",
                ack.lsn
            );
        };
        assert_eq!(record.lsn, ack.lsn, "event {id} moved");
        assert_eq!(record.hash, ack.hash, "event {id} has another hash");
        assert_eq!(
            record.event.as_ref(),
            ledger.sent.get(id),
            "event {id} changed"
        );
    }
    let report = grpc
        .verify(VerifyRequest {
            log: LOG.to_owned(),
            from_lsn: 0,
            to_lsn: 0,
        })
        .await?
        .into_inner();
    assert_eq!(report.first_bad_lsn, 0, "verify failed: {}", report.reason);
    assert_eq!(report.verified, records.len() as u64);
    Ok(records)
}

/// Retries every event sent in the last cycle that was not acknowledged
/// (in flight at the kill), plus a sample of acknowledged ones: an event
/// already durable comes back with its original receipt (duplicate), one that
/// was lost is appended once.
async fn retry(address: &str, ledger: &mut Ledger, cycle: usize) -> Result<(usize, usize), Error> {
    let mut grpc = LogClient::new(connect(address).await?);
    let prefix = format!("c{cycle}-");
    let mut unacked: Vec<Event> = ledger
        .sent
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix) && !ledger.acked.contains_key(*id))
        .map(|(_, event)| event.clone())
        .collect();
    unacked.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let mut acked_sample: Vec<(String, Ack)> = ledger
        .acked
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(id, ack)| (id.clone(), ack.clone()))
        .collect();
    acked_sample.sort_by_key(|(_, ack)| ack.lsn);
    acked_sample.truncate(50);
    for (id, ack) in &acked_sample {
        let event = ledger.sent[id].clone();
        let receipt = grpc
            .append(AppendRequest {
                log: LOG.to_owned(),
                events: vec![event],
                atomic: false,
            })
            .await?
            .into_inner()
            .receipts
            .remove(0);
        assert!(
            receipt.duplicate,
            "retry of acknowledged {id} was not a duplicate"
        );
        assert_eq!(
            (receipt.lsn, &receipt.hash),
            (ack.lsn, &ack.hash),
            "retry of {id} got another receipt"
        );
    }
    let mut durable_anyway = 0;
    for chunk in unacked.chunks(20) {
        let receipts = grpc
            .append(AppendRequest {
                log: LOG.to_owned(),
                events: chunk.to_vec(),
                atomic: false,
            })
            .await?
            .into_inner()
            .receipts;
        for receipt in receipts {
            durable_anyway += usize::from(receipt.duplicate);
            ledger.acked.insert(
                receipt.event_id,
                Ack {
                    lsn: receipt.lsn,
                    hash: receipt.hash,
                },
            );
        }
    }
    Ok((unacked.len(), durable_anyway))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_repeated_sigkill() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let seed = trail_e2e::unique();
    println!("seed {seed}");
    let mut ledger = Ledger::default();
    let mut server = Traild::start(&data, &[])?;
    for cycle in 0..CYCLES {
        let shared = Arc::new(Mutex::new(std::mem::take(&mut ledger)));
        let mut channels = Vec::new();
        for _ in 0..4 {
            channels.push(connect(&server.address).await?);
        }
        let producers: Vec<_> = (0..CLIENTS)
            .map(|client| {
                tokio::spawn(produce(
                    channels[client % channels.len()].clone(),
                    cycle,
                    client,
                    seed,
                    Arc::clone(&shared),
                ))
            })
            .collect();
        // Wait (bounded) for the load to be flowing, then kill at a time that
        // depends on the seed: 50..=550 ms later.
        let acked_at_start = shared.lock().unwrap().acked.len();
        let waiting = Instant::now();
        while shared.lock().unwrap().acked.len() < acked_at_start + 20
            && waiting.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let delay = Duration::from_millis(
            50 + ((seed / 1000)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(cycle as u64 * 7_919)
                % 500),
        );
        tokio::time::sleep(delay).await;
        server.kill()?;
        for producer in producers {
            tokio::time::timeout(Duration::from_secs(30), producer).await??;
        }
        ledger = Arc::try_unwrap(shared)
            .map_err(|_| "ledger still shared")?
            .into_inner()
            .map_err(|_| "poisoned")?;
        assert!(
            ledger.acked.len() >= acked_at_start + 20,
            "no load reached the server"
        );

        server = Traild::start(&data, &[])?;
        let records = check_log(&server.address, &ledger).await?;
        let (unacked, durable_anyway) = retry(&server.address, &mut ledger, cycle).await?;
        let records_after = check_log(&server.address, &ledger).await?;
        println!(
            "cycle {cycle}: killed after {delay:?}; {} acked so far, log had {} records; {unacked} in flight at the kill, \
             {durable_anyway} of them durable anyway; log now {}",
            ledger.acked.len(),
            records.len(),
            records_after.len()
        );
        // After the retries every record is one of ours and acknowledged.
        assert_eq!(records_after.len(), ledger.acked.len());
    }
    let status = server.terminate()?;
    assert!(
        status.success(),
        "traild exited with {status} after SIGTERM"
    );

    // The files verify offline too, without a server.
    let name = trail_log::LogName::new(LOG)?;
    let report = trail_log::offline::verify(&data, &name, &mut |_| {})?;
    assert!(report.failure.is_none(), "{:?}", report.failure);
    assert_eq!(report.verified as usize, ledger.acked.len());
    Ok(())
}

//! Compensation latency through the real gRPC server (docs/BENCHMARKS.md,
//! "Compensation"; run by `scripts/bench-compensation.sh`): a `traild`
//! service in this process on 127.0.0.1, fsync before every ack, a client
//! over loopback.
//!
//! - a resource with CHANGES (default 10,000) changes: compensation of its
//!   newest change, dry run and real (each real one lands, so the next
//!   compensates that one: undo, redo, ...), back to back (each waits for
//!   the state store to commit the one before, at most every 5 ms) and at
//!   an operator's pace; and the refusal of its first change (the conflict
//!   check walks every later change);
//! - a resource with ROLLBACK (default 1,000) changes: a rollback of all of
//!   them, dry run and real (one atomic batch of that many records).
//!
//! Usage: compensation_bench [CHANGES] [ROLLBACK] [ROUNDS]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tonic::transport::Channel;
use trail_log::{Durability, Store};
use trail_proto::v1::log_client::LogClient;
use trail_proto::v1::state_change::Kind;
use trail_proto::v1::{
    rollback_request, AppendRequest, CompensateMode, CompensateRequest, Event, GetStateRequest,
    Outcome, RollbackRequest, StateChange,
};
use trail_server::{Config, Metrics};

type Result<T = (), E = Box<dyn std::error::Error + Send + Sync>> = std::result::Result<T, E>;

const LOG: &str = "bench";

fn arg(index: usize, default: usize) -> usize {
    std::env::args()
        .nth(index)
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

fn change(id: String, resource: &str, step: usize) -> Event {
    Event {
        event_id: id,
        actor: format!("svc-{}", step % 7),
        action: "account.update".to_owned(),
        resource: resource.to_owned(),
        outcome: Outcome::Success as i32,
        change: Some(StateChange {
            kind: Some(Kind::MergePatchJson(format!(
                r#"{{"f{}":{step},"balance":{step}}}"#,
                step % 50
            ))),
        }),
        ..Event::default()
    }
}

/// Appends `count` changes of `resource`, 500 per request; the last LSN.
async fn fill(client: &mut LogClient<Channel>, resource: &str, count: usize) -> Result<u64> {
    let mut last = 0;
    for start in (0..count).step_by(500) {
        let events = (start..(start + 500).min(count))
            .map(|step| change(format!("{resource}-{step}"), resource, step))
            .collect();
        let receipts = client
            .append(AppendRequest {
                log: LOG.to_owned(),
                events,
                atomic: false,
            })
            .await?
            .into_inner()
            .receipts;
        last = receipts.last().map_or(last, |receipt| receipt.lsn);
    }
    // Wait until the state store has all of it.
    client
        .get_state(GetStateRequest {
            log: LOG.to_owned(),
            resource: resource.to_owned(),
            min_lsn: last,
            min_lsn_timeout_ms: 60_000,
            ..GetStateRequest::default()
        })
        .await?;
    Ok(last)
}

fn ask(lsn: u64, dry_run: bool) -> CompensateRequest {
    CompensateRequest {
        log: LOG.to_owned(),
        lsn,
        actor: "ops".to_owned(),
        reason: "benchmark".to_owned(),
        mode: CompensateMode::Refuse as i32,
        dry_run,
        ..CompensateRequest::default()
    }
}

struct Timings(Vec<Duration>);

impl Timings {
    fn at(&self, quantile: f64) -> f64 {
        let mut sorted = self.0.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * quantile).round() as usize;
        sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
    fn row(&self, what: &str) {
        println!(
            "| {what} | {} | {:.2} | {:.2} | {:.2} |",
            self.0.len(),
            self.at(0.5),
            self.at(0.99),
            self.at(1.0)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result {
    let changes = arg(1, 10_000);
    let rollback = arg(2, 1_000);
    let rounds = arg(3, 200);
    let dir = tempfile::tempdir()?;
    let config = Config::default();
    let options = trail_log::LogOptions {
        durability: Durability::Sync,
        ..config.log_options()
    };
    let store = Arc::new(Store::open(dir.path(), options)?);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served_store = Arc::clone(&store);
    let server = tokio::spawn(async move {
        trail_server::serve_with_metrics(
            &config,
            served_store,
            listener,
            Metrics::disabled(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let mut client = LogClient::connect(address).await?;

    println!("| operation | runs | p50 ms | p99 ms | max ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut newest = fill(&mut client, "acct/big", changes).await?;
    let mut dry = Timings(Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let answer = client.compensate(ask(newest, true)).await?.into_inner();
        dry.0.push(started.elapsed());
        assert_eq!(answer.records.len(), 1);
    }
    dry.row(&format!(
        "compensate the newest of {changes} changes, dry run"
    ));
    let mut real = Timings(Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let answer = client.compensate(ask(newest, false)).await?.into_inner();
        real.0.push(started.elapsed());
        newest = answer.records.first().map_or(newest, |record| record.lsn);
    }
    real.row(&format!(
        "compensate the newest of {changes} changes (appended, fsync), back to back"
    ));
    // At an operator's pace: the state store has committed the previous
    // compensation before the next request, so nothing waits for it.
    let mut paced = Timings(Vec::new());
    for _ in 0..rounds.min(100) {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        let answer = client.compensate(ask(newest, false)).await?.into_inner();
        paced.0.push(started.elapsed());
        newest = answer.records.first().map_or(newest, |record| record.lsn);
    }
    paced.row(&format!(
        "compensate the newest of {changes} changes (appended, fsync), one every 150 ms"
    ));
    let mut refused = Timings(Vec::new());
    for _ in 0..rounds.min(50) {
        let started = Instant::now();
        let answer = client.compensate(ask(1, true)).await;
        refused.0.push(started.elapsed());
        assert_eq!(
            answer.err().map(|status| status.code()),
            Some(tonic::Code::FailedPrecondition)
        );
    }
    refused.row(&format!(
        "refuse the first of {changes} changes (conflict check over all later ones)"
    ));

    let mut dry_rollback = Timings(Vec::new());
    let mut real_rollback = Timings(Vec::new());
    for round in 0..5 {
        let resource = format!("acct/roll-{round}");
        fill(&mut client, &resource, rollback).await?;
        let request = |dry_run: bool| RollbackRequest {
            log: LOG.to_owned(),
            resource: resource.clone(),
            to: Some(rollback_request::To::ToLsn(0)),
            actor: "ops".to_owned(),
            reason: "benchmark".to_owned(),
            dry_run,
            ..RollbackRequest::default()
        };
        for _ in 0..4 {
            let started = Instant::now();
            let answer = client.rollback(request(true)).await?.into_inner();
            dry_rollback.0.push(started.elapsed());
            assert_eq!(answer.records.len(), rollback);
        }
        let started = Instant::now();
        let answer = client.rollback(request(false)).await?.into_inner();
        real_rollback.0.push(started.elapsed());
        assert_eq!(answer.records.len(), rollback);
    }
    dry_rollback.row(&format!("rollback over {rollback} changes, dry run"));
    real_rollback.row(&format!(
        "rollback over {rollback} changes (one atomic batch, fsync)"
    ));

    drop(client);
    let _ = stop.send(());
    server.await??;
    store.close()?;
    Ok(())
}

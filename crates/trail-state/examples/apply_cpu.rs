//! `cargo run --release -p trail-state --example apply_cpu [BATCHES]`: the
//! `apply/merge_1000` workload of `benches/state.rs` (1,000 resources seeded
//! with a full state, then batches of 1,000 merge patches, one per resource),
//! reporting inputs per second of wall time and of this process's CPU time
//! (user + system, so less sensitive to other work on the machine).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use trail_state::{ChangeInput, StateInput, StateStore, Watermark};

fn wm(lsn: u64) -> Watermark {
    Watermark {
        lsn,
        hash: *blake3::hash(&lsn.to_le_bytes()).as_bytes(),
    }
}

fn event(lsn: u64, resource: String, change: ChangeInput) -> StateInput {
    StateInput {
        lsn,
        recorded_at_unix_nanos: 1_700_000_000_000_000_000 + lsn as i64 * 1000,
        actor: "svc-orders".to_owned(),
        action: "order.update".to_owned(),
        outcome: "success".to_owned(),
        resource,
        change,
    }
}

fn order_patch(i: u64) -> ChangeInput {
    let status = ["new", "paid", "packed", "shipped", "delivered"][(i % 5) as usize];
    ChangeInput::MergePatch(format!(
        r#"{{"status":"{status}","updated_by":"user-{}","version":{i},"shipping":{{"carrier":"dhl","eta_days":{}}},"note":{}}}"#,
        i % 97,
        i % 9,
        if i.is_multiple_of(4) {
            "null".to_owned()
        } else {
            format!("\"n{i}\"")
        }
    ))
}

fn cpu_secs() -> f64 {
    // /proc/self/stat fields 14 and 15: utime and stime in clock ticks.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let batches: u64 = std::env::args().nth(1).map_or(200, |n| n.parse().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    let seed: Vec<_> = (0..1000u64)
        .map(|r| {
            event(
                r + 1,
                format!("order/{r}"),
                ChangeInput::Set(format!(
                    r#"{{"id":"order/{r}","customer":"c{}","status":"new","lines":[{{"sku":"A","qty":1}},{{"sku":"B","qty":2}}],"total_cents":{}}}"#,
                    r % 31,
                    r * 100
                )),
            )
        })
        .collect();
    store.apply(&seed, wm(1000)).unwrap();
    let all: Vec<Vec<StateInput>> = (0..batches)
        .map(|b| {
            let first = 1001 + b * 1000;
            (first..first + 1000)
                .map(|l| event(l, format!("order/{}", l % 1000), order_patch(l)))
                .collect()
        })
        .collect();
    let (cpu0, t0) = (cpu_secs(), Instant::now());
    for inputs in &all {
        let last = inputs.last().map(|i| i.lsn).unwrap_or(0);
        store.apply(inputs, wm(last)).unwrap();
    }
    let (cpu, wall) = (cpu_secs() - cpu0, t0.elapsed().as_secs_f64());
    let n = (batches * 1000) as f64;
    let stats = store.stats().unwrap();
    println!(
        "{} inputs: {:.0}/s wall, {:.0}/s cpu ({wall:.2} s wall, {cpu:.2} s cpu); {} B on disk ({} B/row)",
        n,
        n / wall,
        n / cpu,
        stats.size_on_disk_bytes,
        stats.size_on_disk_bytes / stats.history_entries.max(1)
    );
}

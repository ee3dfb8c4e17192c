//! `cargo bench -p trail-state --bench state`
//!
//! - `apply/merge_1000`: one `apply` of 1,000 inputs (merge patches on small
//!   order-like JSON states spread over 1,000 resources), into a store that
//!   keeps growing across iterations, as a follower's would.
//! - `state_depth/{first,middle,last}`: `state(resource, Some(lsn))` on one
//!   resource with 10,000 changes, at its first, middle and last change.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::Cell;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
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
        change: Some(change),
        compensation: None,
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

fn apply_throughput(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    // Seed every resource with a full state first.
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
    let next = Cell::new(1001u64);

    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    g.bench_function("merge_1000", |b| {
        b.iter_batched(
            || {
                let first = next.get();
                next.set(first + 1000);
                (first..first + 1000)
                    .map(|l| event(l, format!("order/{}", l % 1000), order_patch(l)))
                    .collect::<Vec<_>>()
            },
            |inputs| {
                let last = inputs.last().map(|i| i.lsn).unwrap_or(0);
                store.apply(&inputs, wm(last)).unwrap()
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
    let stats = store.stats().unwrap();
    eprintln!(
        "apply bench store: {} history rows, {} bytes on disk ({} B/row)",
        stats.history_entries,
        stats.size_on_disk_bytes,
        stats.size_on_disk_bytes / stats.history_entries.max(1)
    );
}

fn state_depth(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    let n = 10_000u64;
    let mut inputs = vec![event(
        1,
        "order/deep".to_owned(),
        ChangeInput::Set(r#"{"id":"order/deep","status":"new","lines":[]}"#.to_owned()),
    )];
    inputs.extend((2..=n).map(|l| event(l, "order/deep".to_owned(), order_patch(l))));
    for chunk in inputs.chunks(1000) {
        store
            .apply(chunk, wm(chunk.last().map(|i| i.lsn).unwrap_or(0)))
            .unwrap();
    }
    store.flush().unwrap();

    let mut g = c.benchmark_group("state_depth");
    for (name, lsn) in [("first", 1), ("middle", n / 2), ("last", n)] {
        g.bench_function(name, |b| {
            b.iter(|| store.state("order/deep", Some(lsn)).unwrap())
        });
    }
    // Worst case for a checkpoint interval of 64: the row just before one.
    g.bench_function("before_checkpoint", |b| {
        b.iter(|| store.state("order/deep", Some(64 * 77 - 1)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, apply_throughput, state_depth);
criterion_main!(benches);

//! Snapshots: a store rebuilt from one answers exactly like the original for
//! every LSN up to the snapshot; damaged files are skipped with a reason that
//! names the file and what failed, and the next older good one is used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;

use common::{input, merge, patch, set, wm};
use trail_state::{
    list_snapshots, load_newest_snapshot, prune_snapshots, verify_snapshot, ChangeInput,
    CompensationInput, FieldChangeText, SnapshotDefect, StateError, StateInput, StateStore,
    StoreOptions,
};

const RESOURCES: [&str; 4] = ["order/1", "order/2", "user/7", "doc"];

fn change(i: u64) -> ChangeInput {
    match i % 9 {
        0 => set(&format!(r#"{{"status":"new","n":{i},"tags":["a","b"]}}"#)),
        1..=3 => merge(&format!(
            r#"{{"status":"s{}","n":{i},"extra":null}}"#,
            i % 4
        )),
        4 => patch(&format!(r#"[{{"op":"replace","path":"/n","value":{i}}}]"#)),
        5 => patch(r#"[{"op":"add","path":"/tags/-","value":"c"}]"#),
        6 => patch(r#"[{"op":"remove","path":"/missing"}]"#), // rejected
        7 => set("{not json"),                                // rejected
        _ => ChangeInput::Delete,
    }
}

/// Records at even multiples of 11 carry no state change; the odd multiples
/// from 33 on are change-less compensations of the one 11 before them, and
/// every 13th record (but those) undoes the record 4 before it (of the same
/// resource, never one of the change-less) with `Fields`, which may or may
/// not still apply (a rejected compensation records no compensation key).
fn inputs(from: u64, to: u64) -> Vec<StateInput> {
    (from..=to)
        .filter(|l| !l.is_multiple_of(22))
        .map(|l| {
            let resource = RESOURCES[(l % 4) as usize];
            let t = 1_000 + (l as i64 / 3);
            let mut i = input(l, t, resource, change(l / 4));
            if l.is_multiple_of(11) && l > 11 {
                i.change = None;
                i.compensation = Some(CompensationInput {
                    compensates: l - 11,
                    reason: format!("undo {}", l - 11),
                });
            } else if l.is_multiple_of(13) && !(l - 4).is_multiple_of(22) {
                // The `n` that record l - 4 wrote, if it was one that sets it.
                i.change = Some(ChangeInput::Fields(vec![FieldChangeText {
                    path: "/n".into(),
                    before: Some(((l - 4) / 4).to_string()),
                    after: Some("0".into()),
                }]));
                i.compensation = Some(CompensationInput {
                    compensates: l - 4,
                    reason: "fix n".into(),
                });
            }
            i
        })
        .collect()
}

/// Every answer the store can give for LSNs up to `through`.
fn assert_same(a: &StateStore, b: &StateStore, through: u64) {
    for r in RESOURCES {
        for n in 0..=through {
            let (x, y) = (a.state(r, Some(n)).unwrap(), b.state(r, Some(n)).unwrap());
            assert_eq!(
                (x.state, x.last_change_lsn),
                (y.state, y.last_change_lsn),
                "{r} at {n}"
            );
        }
        assert_eq!(
            a.history(r, 0, through, usize::MAX).unwrap(),
            b.history(r, 0, through, usize::MAX).unwrap(),
            "{r} history"
        );
        for n in 0..=through {
            let (x, y) = (a.compensated_by(n).unwrap(), b.compensated_by(n).unwrap());
            if x.is_none_or(|x| x <= through) {
                assert_eq!(x, y, "compensated_by({n})");
            }
        }
        for t in 990..(1_000 + through as i64 / 3 + 2) {
            let (x, y) = (
                a.state_at_time(r, t).unwrap(),
                b.state_at_time(r, t).unwrap(),
            );
            if x.last_change_lsn.is_none_or(|l| l <= through) {
                assert_eq!(x.state, y.state, "{r} at time {t}");
            }
        }
    }
}

/// Build a store with snapshots at 100, 200 and 300.
fn setup(root: &Path) -> StateStore {
    let store = StateStore::open_with(
        root.join("store"),
        StoreOptions {
            checkpoint_every: 8,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for (from, to) in [(1, 100), (101, 200), (201, 300)] {
        store.apply(&inputs(from, to), wm(to)).unwrap();
        let info = store.write_snapshot(root.join("snaps")).unwrap();
        assert_eq!(info.watermark, wm(to));
        assert!(info.path.ends_with(format!("{to:020}.snap")));
    }
    store
}

#[test]
fn restored_store_answers_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let store = setup(tmp.path());
    let snaps = tmp.path().join("snaps");
    assert_eq!(
        list_snapshots(&snaps)
            .unwrap()
            .iter()
            .map(|s| s.lsn)
            .collect::<Vec<_>>(),
        [100, 200, 300]
    );

    let (info, skipped) = load_newest_snapshot(&snaps, tmp.path().join("restored")).unwrap();
    assert!(skipped.is_empty());
    let info = info.unwrap();
    assert_eq!(info.watermark, wm(300));
    assert_eq!(verify_snapshot(&info.path).unwrap(), info);

    let restored = StateStore::open(tmp.path().join("restored")).unwrap();
    assert_eq!(restored.watermark().unwrap(), Some(wm(300)));
    assert_same(&store, &restored, 300);
    let compensations = store.compensations_between(0, 300).unwrap();
    assert_eq!(
        restored.compensations_between(0, 300).unwrap(),
        compensations
    );
    // Both kinds are in the snapshot: change-less ones and applied `Fields`.
    assert!(compensations.contains(&(22, 33)), "{compensations:?}");
    assert!(
        compensations.iter().any(|&(t, c)| c == t + 4),
        "{compensations:?}"
    );
    let (s, r) = (store.stats().unwrap(), restored.stats().unwrap());
    assert_eq!(
        (s.resources, s.history_entries, s.watermark),
        (r.resources, r.history_entries, r.watermark)
    );

    // The restored store goes on from the tail like the original.
    store.apply(&inputs(301, 350), wm(350)).unwrap();
    restored.apply(&inputs(301, 350), wm(350)).unwrap();
    assert_same(&store, &restored, 350);

    // Never loads over an existing store.
    match load_newest_snapshot(&snaps, tmp.path().join("restored")) {
        Err(StateError::StoreDirNotEmpty { .. }) => {}
        other => panic!("expected StoreDirNotEmpty, got {other:?}"),
    }
}

#[test]
fn damaged_snapshots_are_skipped_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let store = setup(tmp.path());
    let snaps = tmp.path().join("snaps");
    let newest = snaps.join(format!("{:020}.snap", 300));
    let middle = snaps.join(format!("{:020}.snap", 200));

    // A flipped byte in the middle of the newest.
    let mut bytes = fs::read(&newest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    fs::write(&newest, &bytes).unwrap();

    let (info, skipped) = load_newest_snapshot(&snaps, tmp.path().join("r1")).unwrap();
    assert_eq!(info.unwrap().watermark, wm(200));
    assert_eq!(skipped.len(), 1);
    let text = skipped[0].to_string();
    assert!(
        text.contains("00000000000000000300.snap") && text.contains("digest mismatch"),
        "{text}"
    );
    assert!(matches!(
        skipped[0].reason,
        SnapshotDefect::DigestMismatch { .. }
    ));
    assert_same(
        &store,
        &StateStore::open(tmp.path().join("r1")).unwrap(),
        200,
    );

    // Truncate the middle one too: the oldest is used.
    let len = fs::metadata(&middle).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&middle)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let (info, skipped) = load_newest_snapshot(&snaps, tmp.path().join("r2")).unwrap();
    assert_eq!(info.unwrap().watermark, wm(100));
    assert_eq!(skipped.len(), 2);
    assert!(
        skipped[1].to_string().contains("00000000000000000200.snap"),
        "{}",
        skipped[1]
    );
    assert_same(
        &store,
        &StateStore::open(tmp.path().join("r2")).unwrap(),
        100,
    );

    // A file shorter than a header, and one with a bad magic.
    fs::write(snaps.join(format!("{:020}.snap", 400)), b"short").unwrap();
    let mut bad_magic = fs::read(snaps.join(format!("{:020}.snap", 100))).unwrap();
    bad_magic[0] = b'X';
    fs::write(snaps.join(format!("{:020}.snap", 500)), &bad_magic).unwrap();
    let (info, skipped) = load_newest_snapshot(&snaps, tmp.path().join("r3")).unwrap();
    assert_eq!(info.unwrap().watermark, wm(100));
    let reasons: Vec<String> = skipped.iter().map(|s| s.to_string()).collect();
    assert!(
        reasons[0].contains("00000000000000000500.snap") && reasons[0].contains("bad magic"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("00000000000000000400.snap") && reasons[1].contains("shorter"),
        "{reasons:?}"
    );

    // Nothing good: no store is built.
    for s in list_snapshots(&snaps).unwrap() {
        fs::write(&s.path, b"").unwrap();
    }
    let (info, skipped) = load_newest_snapshot(&snaps, tmp.path().join("r4")).unwrap();
    assert!(info.is_none());
    assert_eq!(skipped.len(), 5);
    assert!(!tmp.path().join("r4").exists());
}

#[test]
fn a_valid_digest_over_a_bad_structure_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let _store = setup(tmp.path());
    let path = tmp.path().join("snaps").join(format!("{:020}.snap", 100));
    let mut bytes = fs::read(&path).unwrap();
    // The first entry's key starts at 64 + 4: give it an unknown tag, then
    // re-seal the file with a correct digest, as a buggy writer would.
    bytes[68] = 0x77;
    let body = bytes.len() - 32;
    let digest = *blake3::hash(&bytes[..body]).as_bytes();
    bytes[body..].copy_from_slice(&digest);
    fs::write(&path, &bytes).unwrap();
    match verify_snapshot(&path) {
        Err(SnapshotDefect::Entry {
            index: 0,
            offset: 64,
            ref problem,
        }) => {
            assert!(problem.contains("0x77"), "{problem}")
        }
        other => panic!("expected an entry defect, got {other:?}"),
    }
}

#[test]
fn a_bad_compensation_key_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let _store = setup(tmp.path());
    let path = tmp.path().join("snaps").join(format!("{:020}.snap", 100));
    let mut bytes = fs::read(&path).unwrap();
    // The compensation keys sort last (tag 0x50); find the first and make
    // its compensator (a one-byte varint) its own target, re-sealed as a
    // buggy writer would.
    let key: Vec<u8> = [&[9, 0, 0, 0, 0x50][..], &22u64.to_be_bytes()[..]].concat();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("the compensation of lsn 22 is in the snapshot");
    let value = at + key.len();
    assert_eq!(&bytes[value..value + 5], &[1, 0, 0, 0, 33]);
    bytes[value + 4] = 22;
    let body = bytes.len() - 32;
    let digest = *blake3::hash(&bytes[..body]).as_bytes();
    bytes[body..].copy_from_slice(&digest);
    fs::write(&path, &bytes).unwrap();
    match verify_snapshot(&path) {
        Err(SnapshotDefect::Entry { ref problem, .. }) => {
            assert!(problem.contains("compensation of lsn 22"), "{problem}")
        }
        other => panic!("expected an entry defect, got {other:?}"),
    }
}

#[test]
fn prune_keeps_the_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let _store = setup(tmp.path());
    let snaps = tmp.path().join("snaps");
    fs::write(
        snaps.join(format!("{:020}.snap.tmp", 5)),
        b"left by a crash",
    )
    .unwrap();
    let removed = prune_snapshots(&snaps, 2).unwrap();
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(
        list_snapshots(&snaps)
            .unwrap()
            .iter()
            .map(|s| s.lsn)
            .collect::<Vec<_>>(),
        [200, 300]
    );
    assert_eq!(fs::read_dir(&snaps).unwrap().count(), 2);
}

#[test]
fn an_empty_store_has_nothing_to_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    assert!(matches!(
        store.write_snapshot(tmp.path().join("snaps")),
        Err(StateError::NothingToSnapshot { .. })
    ));
}

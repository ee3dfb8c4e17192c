//! A store whose bytes cannot be trusted is reported as `Damaged`, so the
//! driver deletes and rebuilds it; errors that are not damage are not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;

use common::{input, merge, wm};
use trail_state::{StateError, StateStore, LAYOUT_VERSION};

fn assert_damaged<T: std::fmt::Debug>(r: Result<T, StateError>, what: &str) {
    match r {
        Err(StateError::Damaged { ref detail, .. }) => {
            eprintln!("{what}: damaged as expected: {detail}");
        }
        other => panic!("{what}: expected Damaged, got {other:?}"),
    }
}

#[test]
fn garbage_files_in_the_store_dir_are_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let garbage: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for names in [&["conf", "db"][..], &["db"][..], &["conf"][..]] {
        let dir = tmp.path().join(names.join("-"));
        fs::create_dir_all(&dir).unwrap();
        for name in names {
            fs::write(dir.join(name), &garbage).unwrap();
        }
        assert_damaged(StateStore::open(&dir), &format!("garbage {names:?}"));
    }
}

#[test]
fn overwritten_sled_file_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    {
        let store = StateStore::open(&dir).unwrap();
        let inputs: Vec<_> = (1..=200)
            .map(|l| input(l, l as i64, "r", merge(r#"{"a":1}"#)))
            .collect();
        store.apply(&inputs, wm(200)).unwrap();
        store.flush().unwrap();
    }
    let db = dir.join("db");
    let mut bytes = fs::read(&db).unwrap();
    for b in bytes.iter_mut() {
        *b ^= 0x5a;
    }
    fs::write(&db, &bytes).unwrap();
    assert_damaged(StateStore::open(&dir), "flipped db file");
}

#[test]
fn unknown_layout_version_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    drop(StateStore::open(&dir).unwrap());
    // The previous layout (2: no compensation keys or rows) and a future one.
    for version in [LAYOUT_VERSION - 1, LAYOUT_VERSION + 1] {
        {
            let db = sled::open(&dir).unwrap();
            db.insert([0x01], &version.to_le_bytes()).unwrap();
            db.flush().unwrap();
        }
        assert_damaged(StateStore::open(&dir), &format!("layout version {version}"));
    }
}

#[test]
fn entries_without_version_or_watermark_are_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    {
        let db = sled::open(&dir).unwrap();
        db.insert([0x10, 0, 0, 0, 1, b'r'], &[0u8][..]).unwrap();
        db.flush().unwrap();
    }
    assert_damaged(StateStore::open(&dir), "no layout version");

    let dir = tmp.path().join("b");
    drop(StateStore::open(&dir).unwrap());
    {
        let db = sled::open(&dir).unwrap();
        db.insert([0x10, 0, 0, 0, 1, b'r'], &[0u8][..]).unwrap();
        db.flush().unwrap();
    }
    assert_damaged(StateStore::open(&dir), "no watermark");
}

#[test]
fn undecodable_values_are_damage_when_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    {
        let store = StateStore::open(&dir).unwrap();
        store
            .apply(&[input(1, 1, "r", merge(r#"{"a":1}"#))], wm(1))
            .unwrap();
        store.flush().unwrap();
    }
    {
        let db = sled::open(&dir).unwrap();
        // The head of "r" and its history row at lsn 1.
        db.insert([0x10, 0, 0, 0, 1, b'r'], &[0xff, 0xff][..])
            .unwrap();
        let mut h = vec![0x20, 0, 0, 0, 1, b'r'];
        h.extend_from_slice(&1u64.to_be_bytes());
        db.insert(h, &[0x07][..]).unwrap();
        db.insert([0x02], &[1u8, 2, 3][..]).unwrap();
        db.flush().unwrap();
    }
    assert_damaged(StateStore::open(&dir), "watermark of 3 bytes");
    {
        let db = sled::open(&dir).unwrap();
        db.insert([0x02], &[0u8; 40][..]).unwrap();
        db.flush().unwrap();
    }
    let store = StateStore::open(&dir).unwrap();
    assert_damaged(store.state("r", None), "head");
    assert_damaged(store.history("r", 0, u64::MAX, 10), "history row");
}

#[test]
fn a_store_open_elsewhere_is_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("s");
    let _first = StateStore::open(&dir).unwrap();
    match StateStore::open(&dir) {
        Err(StateError::Sled { .. }) => {}
        other => panic!("expected a sled (lock) error, got {:?}", other.map(|_| ())),
    }
}

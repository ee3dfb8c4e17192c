//! Files written by earlier format versions keep opening (docs/FORMAT.md
//! §11). `tests/fixtures/format-v<N>/` holds a data directory written by
//! body format version N (segments, sidecars, the clean-close marker, and a
//! log with an archived prefix; version 2 also compensation records) and
//! the receipts it answered; every test run opens a copy, reads every
//! record back against those receipts, verifies it online and offline, and
//! appends to it (a version-1 log then holds bodies of both versions).
//!
//! The fixtures are never rewritten by a normal run. Only the current
//! version can be written: `TRAIL_WRITE_FIXTURES=2 cargo test -p trail-log
//! --test format_fixtures` regenerates `format-v2` after a deliberate change
//! (say why in FORMAT.md's history). `format-v1` was written by the last
//! build of format 1 and can no longer be regenerated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use trail_log::fs::OsFileSystem;
use trail_log::{
    ArchivedPrefix, Durability, EventInput, LogName, LogOptions, Lsn, ManualClock, RecordHash,
    RecordKind, Store, WAL_DIR_NAME,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fixture_dir(version: u8) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-v{version}"))
}

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::Sync,
        segment_bytes: 64 * 1024,
        group_bytes_max: 16 * 1024,
        append: trail_log::AppendLimits {
            event_bytes_max: 4 * 1024,
            ..trail_log::AppendLimits::default()
        },
        prepare_segments_ahead: false,
        verify_in_background: false,
        clock: Arc::new(ManualClock::new(1_767_225_600_000_000_000)),
        ..LogOptions::default()
    }
}

fn event(index: usize) -> EventInput {
    let payload = format!("fixture event {index} ").repeat(8);
    EventInput::new(format!("fixture-{index:05}"), payload.into_bytes())
}

/// Writes the fixture: log `audit` (single events and atomic batches across
/// three segments, closed cleanly) and log `archived` (the same, with its
/// first segment removed and an archived-prefix record).
fn write_fixture(root: &Path) -> Result<String, Box<dyn std::error::Error>> {
    let mut expected = String::new();
    let store = Store::open(root, options())?;
    for name in ["audit", "archived"] {
        let log = store.get_or_create(&LogName::new(name)?)?;
        let mut index = 0;
        while log.segments().len() < 3 {
            let receipts = if index % 7 == 0 {
                log.append_blocking((index..index + 3).map(event).collect(), true)?
            } else {
                log.append_blocking(vec![event(index)], false)?
            };
            // Format 2: now and then a compensation of the record before.
            let receipts = if index % 50 == 49 {
                let target = receipts[receipts.len() - 1];
                // Its id is the next index, so "event k is at lsn k + 1" holds.
                let next = index + receipts.len();
                let mut all = receipts;
                all.extend(log.append_blocking(
                    vec![EventInput {
                        kind: RecordKind::Compensation {
                            compensates: target.lsn,
                            compensates_hash: target.hash,
                        },
                        ..event(next)
                    }],
                    false,
                )?);
                all
            } else {
                receipts
            };
            index += receipts.len();
            for receipt in receipts {
                expected.push_str(&format!("{name} {} {}\n", receipt.lsn, receipt.hash));
            }
        }
    }
    store.close()?;
    drop(store);
    let wal = root.join("archived").join(WAL_DIR_NAME);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&wal)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    segments.sort();
    let header = trail_log::segment::SegmentHeader::decode(&std::fs::read(&segments[1])?[..96])?;
    std::fs::remove_file(&segments[0])?;
    ArchivedPrefix {
        first_lsn: header.first_lsn,
        prev_hash: header.prev_hash,
        prev_recorded_at_unix_nanos: 0,
        voucher: "fixture: first segment archived".into(),
    }
    .write(&OsFileSystem, &wal)?;
    Ok(expected)
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[test]
fn format_v1_files_open_read_verify_and_take_appends() -> TestResult {
    check_fixture(1, 0)
}

#[test]
fn format_v2_files_open_read_verify_and_take_appends() -> TestResult {
    if std::env::var("TRAIL_WRITE_FIXTURES").as_deref() == Ok("2") {
        let data = fixture_dir(2).join("data");
        let _ = std::fs::remove_dir_all(&data);
        let expected = write_fixture(&data)?;
        std::fs::remove_file(data.join("LOCK"))?;
        std::fs::write(fixture_dir(2).join("receipts.txt"), expected)?;
    }
    check_fixture(2, 5)
}

/// Opens, reads, verifies and appends to a copy of fixture `version`, whose
/// `audit` log holds at least `compensations` compensation records.
fn check_fixture(version: u8, compensations: u64) -> TestResult {
    let fixture_dir = || fixture_dir(version);
    let receipts = std::fs::read_to_string(fixture_dir().join("receipts.txt"))?;
    // Offline verification reads the fixture where it is, and changes nothing.
    for name in ["audit", "archived"] {
        let report = trail_log::offline::verify(
            &fixture_dir().join("data"),
            &LogName::new(name)?,
            &mut |_| {},
        )?;
        assert_eq!(report.failure, None, "{name}");
        assert_eq!(report.torn_tail, None, "{name}");
        if name == "audit" {
            assert!(report.compensations_checked >= compensations, "{name}");
        }
    }
    let copy = tempfile::tempdir()?;
    copy_tree(&fixture_dir().join("data"), copy.path())?;
    let store = Store::open(copy.path(), options())?;
    for name in ["audit", "archived"] {
        let log = store
            .get(&LogName::new(name)?)?
            .ok_or("fixture log missing")?;
        let first_local = log.first_local_lsn();
        if name == "archived" {
            assert!(first_local > Lsn(1), "the prefix record was read");
        }
        let mut count = 0u64;
        let mut last = Lsn::ZERO;
        for line in receipts
            .lines()
            .filter(|line| line.starts_with(&format!("{name} ")))
        {
            let mut fields = line.split(' ').skip(1);
            let lsn = Lsn(fields.next().ok_or("lsn")?.parse()?);
            let hash = RecordHash::from_hex(fields.next().ok_or("hash")?)?;
            last = last.max(lsn);
            if lsn < first_local {
                continue;
            }
            let stored: Vec<_> = log.read(lsn, lsn).collect::<Result<_, _>>()?;
            assert_eq!(stored[0].hash, hash, "{name} lsn {lsn}");
            count += 1;
        }
        assert!(count > 100, "{name}: {count} records checked");
        assert_eq!(log.head().lsn, last, "{name}");
        let report = log.verify(Lsn(1), last, &mut |_| {})?;
        assert_eq!(report.failure, None, "{name}");
        assert_eq!(report.verified, last.0 - first_local.0 + 1, "{name}");
        let next = log.append_blocking(vec![event(99_999)], false)?;
        let after = log.verify(Lsn(1), next[0].lsn, &mut |_| {})?;
        assert_eq!(after.failure, None, "{name}: both body versions verify");
        assert_eq!(next[0].lsn, last.next(), "{name} goes on");
        // A retry of a version-1 event (the last one: index = lsn - 1) is
        // recognised.
        let retry = log.append_blocking(vec![event(usize::try_from(last.0 - 1)?)], false)?;
        assert!(retry[0].duplicate, "{name}");
    }
    store.close()?;
    Ok(())
}

//! Unit tests of the simulated disk itself: if it lied about durability, every
//! crash test built on it would prove nothing.

use std::io;
use std::path::Path;

use trail_log::fs::FileSystem;
use trail_sim::{OpClass, SimFileSystem, SimOptions};

const EIO: i32 = 5;
const ENOSPC: i32 = 28;

fn no_tearing(seed: u64) -> SimFileSystem {
    SimFileSystem::with_options(SimOptions {
        tear: false,
        ..SimOptions::seeded(seed)
    })
}

fn is_eio(error: &io::Error) -> bool {
    error.raw_os_error() == Some(EIO)
}

/// A durable directory `/d` to put files in.
fn with_directory(fs: &SimFileSystem) -> io::Result<()> {
    fs.create_dir_all(Path::new("/d"))?;
    fs.sync_dir(Path::new("/"))
}

#[test]
fn unsynced_writes_are_lost_and_synced_ones_survive() -> io::Result<()> {
    let fs = no_tearing(1);
    with_directory(&fs)?;
    let path = Path::new("/d/a");
    let mut file = fs.create(path)?;
    fs.sync_dir(Path::new("/d"))?;
    file.write_all_at(b"durable", 0)?;
    file.sync_data()?;
    file.write_all_at(b"-volatile", 7)?;
    assert_eq!(fs.contents(path)?, b"durable-volatile");
    fs.crash();
    assert_eq!(fs.contents(path)?, b"durable");
    let reopened = fs.open_read(path)?;
    assert_eq!(reopened.len()?, 7);
    Ok(())
}

#[test]
fn a_new_name_needs_sync_dir_of_its_parent() -> io::Result<()> {
    let fs = no_tearing(2);
    with_directory(&fs)?;
    let mut file = fs.create(Path::new("/d/a"))?;
    file.write_all_at(b"x", 0)?;
    file.sync_all()?;
    fs.crash();
    assert!(
        !fs.exists(Path::new("/d/a"))?,
        "a created file whose directory was not synced must vanish"
    );

    let mut file = fs.create(Path::new("/d/b"))?;
    file.write_all_at(b"y", 0)?;
    fs.sync_dir(Path::new("/d"))?;
    fs.crash();
    assert!(fs.exists(Path::new("/d/b"))?);
    assert_eq!(
        fs.contents(Path::new("/d/b"))?,
        b"",
        "the name is durable, the unsynced data is not"
    );
    Ok(())
}

#[test]
fn a_new_directory_needs_sync_dir_of_its_parent() -> io::Result<()> {
    let fs = no_tearing(3);
    fs.create_dir_all(Path::new("/store/log/wal"))?;
    fs.sync_dir(Path::new("/store/log/wal"))?;
    fs.sync_dir(Path::new("/store/log"))?;
    fs.crash();
    assert!(
        !fs.exists(Path::new("/store"))?,
        "/store was never made durable in /"
    );

    fs.create_dir_all(Path::new("/store/log/wal"))?;
    for directory in ["/", "/store", "/store/log"] {
        fs.sync_dir(Path::new(directory))?;
    }
    fs.crash();
    assert!(fs.exists(Path::new("/store/log/wal"))?);
    assert_eq!(
        fs.list_dir(Path::new("/store/log"))?,
        vec!["wal".to_owned()]
    );
    Ok(())
}

#[test]
fn rename_and_remove_are_durable_only_after_sync_dir() -> io::Result<()> {
    let fs = no_tearing(4);
    with_directory(&fs)?;
    fs.install_file(Path::new("/d/old"), b"old")?;
    fs.install_file(Path::new("/d/gone"), b"gone")?;
    fs.rename(Path::new("/d/old"), Path::new("/d/new"))?;
    fs.remove_file(Path::new("/d/gone"))?;
    assert_eq!(fs.list_dir(Path::new("/d"))?, vec!["new".to_owned()]);
    fs.crash();
    assert_eq!(
        fs.list_dir(Path::new("/d"))?,
        vec!["gone".to_owned(), "old".to_owned()]
    );

    fs.rename(Path::new("/d/old"), Path::new("/d/new"))?;
    fs.remove_file(Path::new("/d/gone"))?;
    fs.sync_dir(Path::new("/d"))?;
    fs.crash();
    assert_eq!(fs.list_dir(Path::new("/d"))?, vec!["new".to_owned()]);
    assert_eq!(fs.contents(Path::new("/d/new"))?, b"old");
    Ok(())
}

#[test]
fn rename_replaces_the_target() -> io::Result<()> {
    let fs = no_tearing(5);
    fs.install_file(Path::new("/d/a"), b"a")?;
    fs.install_file(Path::new("/d/b"), b"b")?;
    fs.rename(Path::new("/d/a"), Path::new("/d/b"))?;
    fs.sync_dir(Path::new("/d"))?;
    fs.crash();
    assert_eq!(fs.list_dir(Path::new("/d"))?, vec!["b".to_owned()]);
    assert_eq!(fs.contents(Path::new("/d/b"))?, b"a");
    Ok(())
}

#[test]
fn a_crash_invalidates_every_open_handle() -> io::Result<()> {
    let fs = no_tearing(6);
    fs.install_file(Path::new("/d/a"), b"abc")?;
    let mut writer = fs.open_write(Path::new("/d/a"))?;
    let reader = fs.open_read(Path::new("/d/a"))?;
    fs.crash();
    let mut buffer = [0u8; 3];
    assert!(is_eio(
        &reader
            .read_at(&mut buffer, 0)
            .err()
            .ok_or_else(|| io::Error::other("read worked"))?
    ));
    assert!(is_eio(
        &writer
            .write_all_at(b"z", 0)
            .err()
            .ok_or_else(|| io::Error::other("write worked"))?
    ));
    assert!(is_eio(
        &writer
            .sync_data()
            .err()
            .ok_or_else(|| io::Error::other("sync worked"))?
    ));
    assert!(is_eio(
        &writer
            .len()
            .err()
            .ok_or_else(|| io::Error::other("len worked"))?
    ));
    assert_eq!(
        fs.contents(Path::new("/d/a"))?,
        b"abc",
        "an old handle must not change the new generation"
    );
    let fresh = fs.open_read(Path::new("/d/a"))?;
    fresh.read_exact_at(&mut buffer, 0)?;
    assert_eq!(&buffer, b"abc");
    Ok(())
}

#[test]
fn freeze_at_the_nth_sync_stops_everything_until_the_crash() -> io::Result<()> {
    let fs = no_tearing(7);
    fs.install_file(Path::new("/d/a"), b"")?;
    let mut file = fs.open_write(Path::new("/d/a"))?;
    fs.freeze_after(OpClass::Sync, 1);
    file.write_all_at(b"one", 0)?;
    file.sync_data()?;
    file.write_all_at(b"two", 3)?;
    let error = file
        .sync_data()
        .err()
        .ok_or_else(|| io::Error::other("second sync worked"))?;
    assert!(is_eio(&error));
    assert!(fs.is_frozen());
    assert!(fs.open_read(Path::new("/d/a")).is_err());
    assert!(file.write_all_at(b"three", 6).is_err());
    fs.crash();
    assert!(!fs.is_frozen());
    assert_eq!(fs.contents(Path::new("/d/a"))?, b"one");
    Ok(())
}

#[test]
fn fail_after_fails_exactly_one_operation() -> io::Result<()> {
    let fs = no_tearing(8);
    fs.install_file(Path::new("/d/a"), b"")?;
    let mut file = fs.open_write(Path::new("/d/a"))?;
    fs.fail_after(OpClass::Write, 2);
    file.write_all_at(b"a", 0)?;
    file.write_all_at(b"b", 1)?;
    assert!(file.write_all_at(b"c", 2).is_err());
    file.write_all_at(b"d", 3)?;
    file.sync_data()?;
    assert!(!fs.is_frozen());
    let contents = fs.contents(Path::new("/d/a"))?;
    assert_eq!(contents.len(), 4);
    assert_eq!(&contents[..2], b"ab");
    assert_eq!(contents[3], b'd');
    Ok(())
}

#[test]
fn a_failed_sync_makes_nothing_durable() -> io::Result<()> {
    let fs = no_tearing(9);
    fs.install_file(Path::new("/d/a"), b"")?;
    let mut file = fs.open_write(Path::new("/d/a"))?;
    fs.fail_after(OpClass::Sync, 0);
    file.write_all_at(b"lost", 0)?;
    assert!(file.sync_data().is_err());
    fs.crash();
    assert_eq!(fs.contents(Path::new("/d/a"))?, b"");
    Ok(())
}

#[test]
fn a_full_disk_refuses_growth_but_not_overwrites() -> io::Result<()> {
    let fs = no_tearing(10);
    fs.install_file(Path::new("/d/a"), &[0u8; 100])?;
    fs.set_capacity_bytes(Some(120));
    let mut file = fs.open_write(Path::new("/d/a"))?;
    file.write_all_at(&[1u8; 100], 0)?;
    file.write_all_at(&[2u8; 20], 100)?;
    let error = file
        .write_all_at(&[3u8], 120)
        .err()
        .ok_or_else(|| io::Error::other("grew past capacity"))?;
    assert_eq!(error.raw_os_error(), Some(ENOSPC));
    assert_eq!(
        file.set_len(200)
            .err()
            .and_then(|error| error.raw_os_error()),
        Some(ENOSPC)
    );
    assert_eq!(
        fs.create(Path::new("/d/b"))
            .err()
            .and_then(|error| error.raw_os_error()),
        Some(ENOSPC)
    );
    fs.set_capacity_bytes(None);
    file.set_len(200)?;
    assert_eq!(fs.used_bytes(), 200);
    Ok(())
}

#[test]
fn create_truncates_an_existing_file() -> io::Result<()> {
    let fs = no_tearing(11);
    fs.install_file(Path::new("/d/a"), b"abcdef")?;
    let mut file = fs.create(Path::new("/d/a"))?;
    assert_eq!(file.len()?, 0);
    file.write_all_at(b"xy", 4)?;
    assert_eq!(fs.contents(Path::new("/d/a"))?, b"\0\0\0\0xy");
    fs.crash();
    assert_eq!(
        fs.contents(Path::new("/d/a"))?,
        b"abcdef",
        "the truncation was never synced"
    );
    Ok(())
}

#[test]
fn reads_past_the_end_return_nothing() -> io::Result<()> {
    let fs = no_tearing(12);
    fs.install_file(Path::new("/d/a"), b"abc")?;
    let file = fs.open_read(Path::new("/d/a"))?;
    let mut buffer = [0u8; 8];
    assert_eq!(file.read_at(&mut buffer, 1)?, 2);
    assert_eq!(&buffer[..2], b"bc");
    assert_eq!(file.read_at(&mut buffer, 3)?, 0);
    assert_eq!(file.read_at(&mut buffer, u64::MAX)?, 0);
    assert!(file.read_exact_at(&mut buffer, 0).is_err());
    assert!(fs.open_read(Path::new("/d/missing")).is_err());
    assert!(fs.list_dir(Path::new("/missing")).is_err());
    assert!(fs.exists(Path::new("/"))?);
    Ok(())
}

/// Whatever a tearing crash keeps, each sector is either what was durable or
/// what was written, never anything else, and over many seeds both happen.
#[test]
fn a_tearing_crash_keeps_whole_sectors_of_either_version() -> io::Result<()> {
    const SECTOR: usize = 16;
    let durable: Vec<u8> = (0..64u8).collect();
    let written: Vec<u8> = (0..96u8).map(|byte| byte | 0x80).collect();
    let mut saw_kept = false;
    let mut saw_dropped = false;
    let mut saw_long = false;
    for seed in 0..200 {
        let fs = SimFileSystem::with_options(SimOptions {
            seed,
            sector_bytes: SECTOR,
            tear: true,
        });
        fs.install_file(Path::new("/d/a"), &durable)?;
        let mut file = fs.open_write(Path::new("/d/a"))?;
        file.write_all_at(&written, 0)?;
        let report = fs.crash();
        saw_kept |= report.sectors_kept > 0;
        saw_dropped |= report.sectors_dropped > 0;
        let survived = fs.contents(Path::new("/d/a"))?;
        assert!(
            survived.len() == durable.len() || survived.len() == written.len(),
            "seed {seed}"
        );
        saw_long |= survived.len() == written.len();
        for (index, sector) in survived.chunks(SECTOR).enumerate() {
            let range = index * SECTOR..index * SECTOR + sector.len();
            let old = durable
                .get(range.clone())
                .map_or(&[0u8; SECTOR][..sector.len()], |old| old);
            assert!(
                sector == old || sector == &written[range],
                "seed {seed}: sector {index} is neither version"
            );
        }
    }
    assert!(saw_kept && saw_dropped && saw_long);
    Ok(())
}

#[test]
fn a_tearing_crash_keeps_a_prefix_of_directory_changes() -> io::Result<()> {
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..100 {
        let fs = SimFileSystem::new(seed);
        fs.create_dir_all(Path::new("/d"))?;
        fs.sync_dir(Path::new("/"))?;
        for name in ["a", "b", "c"] {
            fs.create(&Path::new("/d").join(name))?;
        }
        fs.crash();
        let names = fs.list_dir(Path::new("/d"))?;
        assert!(
            ["", "a", "ab", "abc"].contains(&names.concat().as_str()),
            "seed {seed}: {names:?}"
        );
        outcomes.insert(names.concat());
    }
    assert_eq!(
        outcomes.len(),
        4,
        "every prefix should happen over 100 seeds"
    );
    Ok(())
}

#[test]
fn the_same_seed_replays_the_same_crash() -> io::Result<()> {
    let run = |seed: u64| -> io::Result<Vec<u8>> {
        let fs = SimFileSystem::new(seed);
        fs.install_file(Path::new("/d/a"), &[0u8; 4096])?;
        let mut file = fs.open_write(Path::new("/d/a"))?;
        for round in 0..8u8 {
            file.write_all_at(&[round + 1; 700], u64::from(round) * 500)?;
        }
        fs.crash();
        fs.contents(Path::new("/d/a"))
    };
    assert_eq!(run(99)?, run(99)?);
    let differs = (0..20).any(|seed| run(seed).ok() != run(99).ok());
    assert!(differs, "different seeds should tear differently");
    Ok(())
}

#[test]
fn a_write_cut_by_a_freeze_lands_only_a_sector_aligned_prefix() -> io::Result<()> {
    for seed in 0..50 {
        let fs = SimFileSystem::with_options(SimOptions {
            seed,
            sector_bytes: 8,
            tear: false,
        });
        fs.install_file(Path::new("/d/a"), b"")?;
        let mut file = fs.open_write(Path::new("/d/a"))?;
        fs.freeze_after(OpClass::Write, 0);
        assert!(file.write_all_at(&[7u8; 30], 0).is_err());
        let landed = fs.contents(Path::new("/d/a"))?;
        assert!(
            landed.len() % 8 == 0 || landed.len() == 30,
            "seed {seed}: {} bytes",
            landed.len()
        );
        assert!(landed.iter().all(|&byte| byte == 7));
    }
    Ok(())
}

/// Linux after a failed writeback: the bytes stay readable, but no later
/// sync writes them until they are written again; with the model off, a
/// later sync makes them durable.
#[test]
fn a_failed_sync_that_forgets_needs_the_bytes_written_again() -> io::Result<()> {
    for forgets in [true, false] {
        let fs = no_tearing(3);
        fs.set_failed_sync_forgets(forgets);
        with_directory(&fs)?;
        let path = Path::new("/d/a");
        let mut file = fs.create(path)?;
        fs.sync_dir(Path::new("/d"))?;
        file.write_all_at(b"first", 0)?;
        file.sync_data()?;
        file.write_all_at(b"-second-third", 5)?;
        fs.fail_after(OpClass::Sync, 0);
        assert!(file.sync_data().is_err_and(|error| is_eio(&error)));
        assert_eq!(fs.contents(path)?, b"first-second-third", "still readable");
        file.sync_data()?;
        let expected: &[u8] = if forgets {
            b"first\0\0\0\0\0\0\0\0\0\0\0\0\0"
        } else {
            b"first-second-third"
        };
        assert_eq!(fs.durable_contents(path)?, expected, "forgets: {forgets}");
        // Written again (a part of it), that part is synced.
        file.write_all_at(b"-second", 5)?;
        file.sync_data()?;
        let expected: &[u8] = if forgets {
            b"first-second\0\0\0\0\0\0"
        } else {
            b"first-second-third"
        };
        assert_eq!(fs.durable_contents(path)?, expected, "forgets: {forgets}");
    }
    Ok(())
}

//! What a failed sync leaves behind when the simulated disk behaves as
//! Linux's page cache does after a failed writeback: the bytes the sync did
//! not make durable stay readable, marked clean, and no later sync writes
//! them (`SimFileSystem::set_failed_sync_forgets`).

use std::path::Path;
use std::sync::Arc;

use trail_log::fs::FileSystem;
use trail_log::{EventInput, LogName, Lsn, Store};
use trail_sim::scenario::sim_log_options;
use trail_sim::{OpClass, SimFileSystem, SimOptions};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

fn event(index: usize) -> EventInput {
    EventInput::new(format!("event-{index}"), vec![b'x'; 100])
}

/// The sync of a seal fails and the process stops; the restarted process
/// finds the seal readable, so the log ends with a sealed segment and the
/// next append starts a new segment durably. Open must make the seal
/// itself durable first, by writing it again (a sync alone writes nothing
/// here): else the next machine crash leaves a segment that is not sealed
/// before one that exists, and the log does not open.
#[test]
fn a_seal_whose_sync_failed_survives_the_next_crash() -> Result {
    let fs = SimFileSystem::with_options(SimOptions {
        tear: false,
        ..SimOptions::seeded(7)
    });
    fs.set_failed_sync_forgets(true);
    let root = Path::new("/data");
    fs.install_directory(root)?;
    let name = LogName::new("audit")?;
    let open = || Store::open_with_fs(Arc::new(fs.clone()), root, sim_log_options());
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    {
        let store = open()?;
        let log = store.get_or_create(&name)?;
        for index in 0..10 {
            log.append_blocking(vec![event(index)], false)?;
        }
        fs.fail_after(OpClass::Sync, 0);
        assert!(
            runtime.block_on(log.seal_active()).is_err(),
            "the seal's sync failed"
        );
        assert_eq!(fs.injected_failures(), 1, "the seal failed on its sync");
    }
    fs.restart_process();
    {
        let store = open()?;
        let log = store.get_or_create(&name)?;
        assert_eq!(log.head().lsn, Lsn(10));
        for index in 10..20 {
            log.append_blocking(vec![event(index)], false)?;
        }
        let segments = fs
            .list_dir(&root.join("audit/wal"))?
            .into_iter()
            .filter(|file| file.ends_with(".seg"))
            .count();
        assert_eq!(segments, 2, "the ten new records are in a new segment");
    }
    fs.crash();
    let store = open()?;
    let log = store.get_or_create(&name)?;
    assert_eq!(
        log.head().lsn,
        Lsn(20),
        "every acknowledged record is there"
    );
    for (index, stored) in log.read(Lsn(1), Lsn(20)).enumerate() {
        assert_eq!(stored?.record.event_id, format!("event-{index}"));
    }
    Ok(())
}

/// Open writes bytes again only when the last process may have left some
/// unsynced: after a clean close (which synced everything it wrote) it
/// writes nothing, after a process that stopped without closing it writes
/// the records after the last durable watermark again.
#[test]
fn open_writes_the_tail_again_only_after_an_unclean_stop() -> Result {
    let fs = SimFileSystem::with_options(SimOptions {
        tear: false,
        ..SimOptions::seeded(8)
    });
    let root = Path::new("/data");
    fs.install_directory(root)?;
    let name = LogName::new("audit")?;
    let open = || Store::open_with_fs(Arc::new(fs.clone()), root, sim_log_options());
    let append_ten = |store: &Store, from: usize| -> Result {
        let log = store.get_or_create(&name)?;
        for index in from..from + 10 {
            log.append_blocking(vec![event(index)], false)?;
        }
        Ok(())
    };
    let store = open()?;
    append_ten(&store, 0)?;
    store.close()?;
    drop(store);
    let writes = fs.counts().writes;
    let store = open()?;
    store.get_or_create(&name)?;
    assert_eq!(
        fs.counts().writes,
        writes,
        "nothing written after a clean close"
    );
    append_ten(&store, 10)?;
    // Dropped without a close: no marker, as after a crash.
    drop(store);
    let writes = fs.counts().writes;
    let store = open()?;
    let log = store.get_or_create(&name)?;
    assert!(
        fs.counts().writes > writes,
        "the last group written again after an unclean stop"
    );
    assert_eq!(log.head().lsn, Lsn(20));
    Ok(())
}

//! WORM retention with S3 Object Lock, against a server that enforces it:
//! moto (`moto[server]`, installed by the harness into `target/moto-venv`,
//! tests/common/moto.rs), beside the s3s-fs server the other tests use,
//! which has no Object Lock.
//!
//! - `traild` archiving with `lock_mode` governance and compliance: every
//!   archived object (segments, sidecars, manifests) has that retention
//!   until about now + `lock_retention_days` (GetObjectRetention), deleting
//!   an archived version is refused, the status shows mode, retention and
//!   the probe's "enforced", and `ArchiveHold` sets and clears legal holds
//!   that GetObjectLegalHold then reports.
//! - The probe: enforced on moto with an Object Lock bucket; "not enabled"
//!   on a moto bucket without it; not enforced on s3s-fs.
//! - A failure to lock is a failed upload: no manifest, nothing archived,
//!   nothing released.
//! - Objects archived before their lock (a crash between upload and lock,
//!   or lock mode turned on later) are locked when the archiver reads the
//!   chain, before their local copies may go.
//! - `file://` targets refuse a lock policy.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::ObjectStoreExt;

use common::moto::Moto;
use common::served::Served;
use common::{archive_sealed, blocking, moto_config, moto_target, write_log, S3Server, TestResult};
use trail_archive::lock::{is_access_denied, unix_secs_now};
use trail_archive::{
    ArchiveError, ArchiveTarget, Archiver, ArchiverConfig, Encoding, LockFailure, LockMode,
    LockPolicy, LockProbe, TargetConfig,
};
use trail_proto::v1::{
    ArchiveHoldRequest, ArchiveNowRequest, ArchiveStatusResponse, LockProbe as ProtoLockProbe,
};
use trail_server::config::ArchiveConfig;
use trail_server::Config;

/// How long any one wait of these tests may take.
const WAIT: Duration = Duration::from_secs(60);
const DAY_SECS: i64 = 24 * 3600;
/// How far a retain-until date may be from now + retention (the test's
/// own duration and the store's whole-second dates).
const SLACK_SECS: i64 = 600;

fn start_moto() -> Result<Moto, Box<dyn std::error::Error>> {
    // Never skipped: a moto that cannot be installed fails the test.
    blocking(Moto::start)
        .map_err(|error| format!("moto is needed for the Object Lock tests: {error}").into())
}

fn policy(mode: LockMode) -> LockPolicy {
    LockPolicy {
        mode,
        retention: Duration::from_secs(24 * 3600),
    }
}

fn archiver_config() -> ArchiverConfig {
    ArchiverConfig {
        encoding: Encoding::default(),
        archive_after: Duration::ZERO,
        hot_bytes_max: u64::MAX,
        // Keep local copies: these tests look at the bucket.
        local_retention: Duration::from_secs(3600),
        nice: trail_archive::ARCHIVE_NICE_DEFAULT,
    }
}

/// Every archived object key under `prefix` (the probe's objects left out).
async fn archived_keys(target: &ArchiveTarget) -> Result<Vec<Path>, Box<dyn std::error::Error>> {
    let mut keys: Vec<Path> = target
        .store()
        .list(Some(target.prefix()))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    keys.retain(|key| !key.as_ref().contains("/_probe/"));
    keys.sort();
    Ok(keys)
}

async fn version_of(
    target: &ArchiveTarget,
    key: &Path,
) -> Result<Option<String>, Box<dyn std::error::Error>> {
    Ok(target.store().head(key).await?.version)
}

/// Each key's retention is `mode` until about now + one day.
async fn assert_locked(target: &ArchiveTarget, keys: &[Path], mode: LockMode) -> TestResult {
    let lock = target.lock_client()?;
    let expected = unix_secs_now() + DAY_SECS;
    for key in keys {
        let version = version_of(target, key).await?;
        assert!(
            version.is_some(),
            "{key}: a versioned bucket names versions"
        );
        let retention = lock
            .get_retention(key, version.as_deref())
            .await?
            .ok_or_else(|| format!("{key} has no retention"))?;
        assert_eq!(retention.mode, mode, "{key}");
        assert!(
            (retention.retain_until_unix_secs - expected).abs() < SLACK_SECS,
            "{key}: retain until {} is not about now + 1 day ({expected})",
            retention.retain_until_unix_secs
        );
    }
    Ok(())
}

/// Each key's legal hold is `on`.
async fn assert_held(target: &ArchiveTarget, keys: &[Path], on: bool) -> TestResult {
    let lock = target.lock_client()?;
    for key in keys {
        let version = version_of(target, key).await?;
        assert_eq!(
            lock.get_legal_hold(key, version.as_deref()).await?,
            on,
            "{key}"
        );
    }
    Ok(())
}

impl Served {
    /// The status once the probe has run (bounded).
    async fn probed_status(&mut self) -> Result<ArchiveStatusResponse, Box<dyn std::error::Error>> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.archive_status().await?;
            if status.lock_probe != i32::from(ProtoLockProbe::Pending) {
                return Ok(status);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the probe never finished: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn locked_archive_config(target: &TargetConfig, mode: &str) -> ArchiveConfig {
    ArchiveConfig {
        url: target.url.clone(),
        endpoint: target.endpoint.clone(),
        region: target.region.clone(),
        access_key_id: target.access_key_id.clone(),
        secret_access_key: target.secret_access_key.clone(),
        archive_after_secs: 0,
        local_retention_secs: 3600,
        check_interval_ms: 100,
        lock_mode: mode.into(),
        lock_retention_days: 1,
        ..ArchiveConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traild_locks_every_archived_object_and_holds_them_on_demand() -> TestResult {
    let moto = start_moto()?;
    for (mode, name) in [
        (LockMode::Governance, "governance"),
        (LockMode::Compliance, "compliance"),
    ] {
        let bucket = format!("worm-{name}");
        blocking(|| moto.create_bucket(&bucket, true))?;
        let target_config = moto_config(&moto, &bucket, "trail/prod");
        let data = tempfile::tempdir()?;
        let (store, log) = write_log(data.path(), 500)?;
        drop(log);
        let config = Config {
            archive: locked_archive_config(&target_config, name),
            ..Config::default()
        };
        let mut served = Served::start_with(store, config).await?;
        let now = served
            .admin
            .archive_now(ArchiveNowRequest {
                log: "audit".into(),
            })
            .await?
            .into_inner();
        assert_eq!(now.archived_through_lsn, 500, "{now:?}");
        assert!(now.archived_segments >= 2, "{now:?}");

        let status = served.probed_status().await?;
        assert_eq!(status.lock_mode, name);
        assert_eq!(status.lock_retention_secs, 24 * 3600);
        assert_eq!(
            status.lock_probe,
            i32::from(ProtoLockProbe::Enforced),
            "moto enforces Object Lock: {status:?}"
        );
        assert!(
            status.objects_locked >= 3 * status.archived_segments,
            "{status:?}"
        );

        // Every object the compactor put is locked as configured.
        let target = ArchiveTarget::open(&target_config)?;
        let all_keys = archived_keys(&target).await?;
        // Segments' objects (snapshots, if any, are locked too: checked below).
        let keys: Vec<Path> = all_keys
            .iter()
            .filter(|key| key.as_ref().contains("/segments/"))
            .cloned()
            .collect();
        assert_eq!(keys.len() as u64, 3 * status.archived_segments, "{keys:?}");
        for suffix in [".seg", ".idx", ".manifest"] {
            assert!(
                keys.iter().any(|key| key.as_ref().ends_with(suffix)),
                "{keys:?}"
            );
        }
        assert_locked(&target, &all_keys, mode).await?;

        // Deleting an archived version is refused, whatever the object.
        let lock = target.lock_client()?;
        for key in [&keys[0], &keys[keys.len() - 1]] {
            let version = version_of(&target, key).await?;
            let refused = lock
                .delete_version(key, version.as_deref(), false)
                .await
                .expect_err("a locked version cannot be deleted");
            assert!(is_access_denied(&refused), "{refused}");
        }
        if mode == LockMode::Compliance {
            // Not even with the governance bypass.
            let version = version_of(&target, &keys[0]).await?;
            let refused = lock
                .delete_version(&keys[0], version.as_deref(), true)
                .await
                .expect_err("a COMPLIANCE lock cannot be bypassed");
            assert!(is_access_denied(&refused), "{refused}");
        }
        assert_eq!(archived_keys(&target).await?, all_keys, "nothing went");

        // Legal holds through the server: the first segment, then all, then off.
        let first = keys
            .iter()
            .find(|key| key.as_ref().ends_with(".manifest"))
            .ok_or("a manifest")?
            .clone();
        let first_stem = first.as_ref().trim_end_matches(".manifest").to_owned();
        let (first_keys, other_keys): (Vec<Path>, Vec<Path>) = keys
            .iter()
            .cloned()
            .partition(|key| key.as_ref().starts_with(&first_stem));
        assert_eq!(first_keys.len(), 3);
        assert_held(&target, &keys, false).await?;
        let held = served
            .admin
            .archive_hold(ArchiveHoldRequest {
                log: "audit".into(),
                on: true,
                from_lsn: 1,
                to_lsn: 1,
            })
            .await?
            .into_inner();
        assert_eq!(
            (held.segments, held.objects, held.first_lsn),
            (1, 3, 1),
            "{held:?}"
        );
        assert_held(&target, &first_keys, true).await?;
        assert_held(&target, &other_keys, false).await?;
        let all = served
            .admin
            .archive_hold(ArchiveHoldRequest {
                log: "audit".into(),
                on: true,
                from_lsn: 0,
                to_lsn: 0,
            })
            .await?
            .into_inner();
        assert_eq!(all.segments, status.archived_segments, "{all:?}");
        assert_eq!((all.first_lsn, all.last_lsn), (1, 500));
        assert_held(&target, &keys, true).await?;
        let off = served
            .admin
            .archive_hold(ArchiveHoldRequest {
                log: "audit".into(),
                on: false,
                from_lsn: 0,
                to_lsn: 0,
            })
            .await?
            .into_inner();
        assert_eq!(off.objects, 3 * status.archived_segments);
        assert_held(&target, &keys, false).await?;
        // A range the archive does not hold is refused, naming it.
        let beyond = served
            .admin
            .archive_hold(ArchiveHoldRequest {
                log: "audit".into(),
                on: true,
                from_lsn: 10_000,
                to_lsn: 20_000,
            })
            .await
            .expect_err("nothing archived there");
        assert_eq!(beyond.code(), tonic::Code::FailedPrecondition, "{beyond:?}");
        assert!(beyond.message().contains("10000..=20000"), "{beyond:?}");
        served.stop().await?;
    }
    drop(moto);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tells_an_enforcing_store_from_others() -> TestResult {
    let moto = start_moto()?;
    blocking(|| moto.create_bucket("probe-locked", true))?;
    blocking(|| moto.create_bucket("probe-plain", false))?;
    let governance = Some(policy(LockMode::Governance));

    let locked = moto_target(&moto, "probe-locked", "trail").with_lock_policy(governance)?;
    assert_eq!(locked.probe_lock().await, LockProbe::Enforced);

    let plain = moto_target(&moto, "probe-plain", "trail").with_lock_policy(governance)?;
    match plain.probe_lock().await {
        LockProbe::NotEnabled(detail) => {
            assert!(detail.contains("InvalidRequest"), "{detail}");
        }
        other => panic!("a bucket without Object Lock: {other:?}"),
    }
    // The probe object of a refused probe is removed again.
    assert_eq!(
        plain
            .store()
            .list(Some(plain.prefix()))
            .try_collect::<Vec<_>>()
            .await?
            .len(),
        0
    );

    let directory = tempfile::tempdir()?;
    let s3s = S3Server::start(directory.path()).await?;
    let s3s_target = s3s.target("trail").with_lock_policy(governance)?;
    let found = s3s_target.probe_lock().await;
    eprintln!("the probe against s3s-fs: {found:?}");
    assert!(
        matches!(
            found,
            LockProbe::NotEnforced(_) | LockProbe::NotEnabled(_) | LockProbe::Unsupported(_)
        ),
        "s3s-fs has no Object Lock: {found:?}"
    );
    assert_ne!(found.name(), LockProbe::Enforced.name());
    assert!(!found.detail().is_empty());

    // No lock policy: nothing probed.
    assert_eq!(
        moto_target(&moto, "probe-locked", "trail")
            .probe_lock()
            .await,
        LockProbe::Off
    );
    drop(moto);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_to_lock_is_a_failed_upload() -> TestResult {
    let moto = start_moto()?;
    blocking(|| moto.create_bucket("no-lock", false))?;
    let directory = tempfile::tempdir()?;
    let s3s = S3Server::start(directory.path()).await?;
    let targets = [
        moto_target(&moto, "no-lock", "p").with_lock_policy(Some(policy(LockMode::Compliance)))?,
        s3s.target("p")
            .with_lock_policy(Some(policy(LockMode::Governance)))?,
    ];
    for target in targets {
        let data = tempfile::tempdir()?;
        let (store, log) = write_log(data.path(), 300)?;
        let local_before = log.segments();
        let mut archiver = Archiver::new(target.clone(), Arc::clone(&log), archiver_config());
        let error = archiver
            .step(true)
            .await
            .expect_err("the store cannot lock");
        assert!(
            matches!(
                error,
                ArchiveError::Lock {
                    failure: LockFailure::NotEnabled(_) | LockFailure::Unsupported(_),
                    ..
                }
            ),
            "{}: {error}",
            target.url()
        );
        assert!(!error.is_transient());
        let status = archiver.status();
        assert_eq!(status.archived_segments, 0, "{status:?}");
        assert_eq!(status.uploads, 0);
        assert_eq!(status.failures, 1);
        assert!(status
            .last_error
            .is_some_and(|text| text.contains("object lock")));
        // The segment object went up, but no manifest: nothing is archived.
        let keys = archived_keys(&target).await?;
        assert!(
            !keys.iter().any(|key| key.as_ref().ends_with(".manifest")),
            "{keys:?}"
        );
        assert_eq!(log.segments(), local_before, "nothing local was released");
        drop(archiver);
        drop(log);
        blocking(|| store.close())?;
    }
    drop(moto);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_archived_before_their_lock_are_locked_when_the_chain_is_read() -> TestResult {
    let moto = start_moto()?;
    blocking(|| moto.create_bucket("late-lock", true))?;
    let unlocked = moto_target(&moto, "late-lock", "p");
    let data = tempfile::tempdir()?;
    let (store, log) = write_log(data.path(), 500)?;
    // Archived without a lock (as after a crash between upload and lock,
    // or before lock mode was turned on).
    let manifests = archive_sealed(&unlocked, &log).await?;
    assert!(manifests.len() >= 2);
    let keys = archived_keys(&unlocked).await?;
    let lock = unlocked.lock_client()?;
    for key in &keys {
        let version = version_of(&unlocked, key).await?;
        assert_eq!(
            lock.get_retention(key, version.as_deref()).await?,
            None,
            "{key}"
        );
    }
    let locked = unlocked
        .clone()
        .with_lock_policy(Some(policy(LockMode::Governance)))?;
    let mut archiver = Archiver::new(locked.clone(), Arc::clone(&log), archiver_config());
    assert_eq!(archiver.step(false).await?, 0, "nothing new to upload");
    let status = archiver.status();
    assert_eq!(
        status.objects_locked,
        3 * manifests.len() as u64,
        "{status:?}"
    );
    assert_eq!(status.lock, Some(policy(LockMode::Governance)));
    assert_locked(&locked, &keys, LockMode::Governance).await?;
    // A second read of an already locked object leaves it as it is.
    let first = &keys[0];
    let version = version_of(&locked, first).await?;
    let before = lock.get_retention(first, version.as_deref()).await?;
    let again = lock
        .ensure_retention(
            first,
            version.as_deref(),
            policy(LockMode::Governance),
            unix_secs_now() - 60,
        )
        .await?;
    assert_eq!(Some(again), before);
    drop(archiver);
    drop(log);
    blocking(|| store.close())?;
    drop(moto);
    Ok(())
}

#[tokio::test]
async fn file_targets_refuse_a_lock_policy() -> TestResult {
    let directory = tempfile::tempdir()?;
    let target = ArchiveTarget::open(&TargetConfig {
        url: format!("file://{}", directory.path().display()),
        ..TargetConfig::default()
    })?;
    match target
        .clone()
        .with_lock_policy(Some(policy(LockMode::Compliance)))
    {
        Err(ArchiveError::Config(message)) => {
            assert!(
                message.contains("file:// targets cannot enforce Object Lock"),
                "{message}"
            );
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(target.clone().with_lock_policy(None).is_ok());
    assert!(matches!(
        target.lock_client(),
        Err(ArchiveError::Lock {
            failure: LockFailure::NotS3,
            ..
        })
    ));
    // A zero retention is refused too.
    let s3 = ArchiveTarget::open(&TargetConfig {
        url: "s3://bucket/p".into(),
        endpoint: "http://127.0.0.1:9".into(),
        region: "us-east-1".into(),
        access_key_id: "k".into(),
        secret_access_key: "s".into(),
    })?;
    assert!(matches!(
        s3.with_lock_policy(Some(LockPolicy {
            mode: LockMode::Governance,
            retention: Duration::ZERO,
        })),
        Err(ArchiveError::Config(_))
    ));
    Ok(())
}

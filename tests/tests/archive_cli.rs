//! Tiered storage through the binaries: a `traild` with `[archive]` on a
//! `file://` target archives what was written (`trail archive now` seals
//! the active segment first; `trail archive status`) and drops local
//! copies, still serving every LSN (read-through); then, with the server
//! stopped, `trail verify --archive` checks the bucket alone and `trail
//! restore` rebuilds a data dir that a fresh `traild` serves with the same
//! LSNs and hashes. A tampered object fails verify and restore with DATA_LOSS naming
//! the object key and LSN range. (The S3 protocol itself, outages and the
//! archiver's rules are tested in crates/trail-archive/tests against a real
//! S3 server.) And S3 Object Lock through the CLI against moto (a real S3
//! server that enforces it, installed and started by the same harness as
//! crates/trail-archive/tests/object_lock.rs): `trail archive status` shows
//! the mode, retention and "target enforces it: yes", `trail archive hold`
//! sets and clears legal holds that the bucket then reports; `traild`
//! refuses a lock mode with a `file://` target. And `trail restore
//! --from-snapshot`: only the segments from the archived snapshot's
//! watermark on come back, with `wal/PREFIX` and the snapshot; the restored
//! `traild` reads every LSN (the earlier ones through the archive) and
//! answers `trail state`, also as of LSNs before its first local one, as
//! the original did.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use trail_e2e::{trail_path, traild_path, Error, Traild};

#[path = "../../crates/trail-archive/tests/common/moto.rs"]
mod moto;

fn trail(args: &[&str]) -> Result<Output, Error> {
    Ok(Command::new(trail_path()).args(args).output()?)
}

fn json_lines(output: &Output) -> Result<Vec<serde_json::Value>, Error> {
    let text = String::from_utf8(output.stdout.clone())?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

fn ok(output: &Output) {
    assert!(
        output.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Appends events `from..from + count`; returns their receipts' (lsn, hash).
fn append(addr: &str, dir: &Path, from: usize, count: usize) -> Result<Vec<(u64, String)>, Error> {
    let file = dir.join(format!("events-{from}.jsonl"));
    let lines: String = (from..from + count)
        .map(|position| {
            format!(
                "{{\"event_id\":\"e-{position}\",\"actor\":\"user-{}\",\"action\":\"login\",\"resource\":\"account/{position}\",\"outcome\":\"success\"}}\n",
                position % 7
            )
        })
        .collect();
    append_file(addr, &file, &lines)
}

/// (lsn, hash) of every record the server reads from `from` on.
fn lsns_and_hashes(addr: &str, from: u64) -> Result<Vec<(u64, String)>, Error> {
    let output = trail(&[
        "--addr",
        addr,
        "--json",
        "read",
        "--log",
        "cli",
        "--from",
        &from.to_string(),
    ])?;
    ok(&output);
    Ok(json_lines(&output)?
        .iter()
        .map(|record| {
            (
                record["lsn"].as_u64().unwrap(),
                record["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect())
}

fn archive_now(addr: &str) -> Result<serde_json::Value, Error> {
    let output = trail(&["--addr", addr, "--json", "archive", "now", "--log", "cli"])?;
    ok(&output);
    Ok(json_lines(&output)?.remove(0))
}

fn status(addr: &str) -> Result<serde_json::Value, Error> {
    let output = trail(&[
        "--addr", addr, "--json", "archive", "status", "--log", "cli",
    ])?;
    ok(&output);
    Ok(json_lines(&output)?.remove(0))
}

#[test]
fn archive_verify_restore_and_tamper_through_the_cli() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let url = format!("file://{}", archive.display());
    let config = dir.path().join("traild.toml");
    std::fs::write(
        &config,
        format!(
            "[archive]\nurl = \"{url}\"\narchive_after_secs = 0\nlocal_retention_secs = 0\ncheck_interval_ms = 200\n"
        ),
    )?;
    let server = Traild::start(&data, &["--config", config.to_str().unwrap()])?;
    let addr = server.address.clone();

    // Three segments, each sealed by `trail archive now` (no age-based
    // sealing is configured: the background compactor never seals), each
    // call archiving exactly what was written before it. The compactor may
    // drop them locally as soon as they are archived: the receipts are the
    // record of what was written.
    let mut original = Vec::new();
    let mut archived_segments = 0;
    for (from, count) in [(0, 40), (40, 40), (80, 5)] {
        original.extend(append(&addr, dir.path(), from, count)?);
        let now = archive_now(&addr)?;
        archived_segments += 1;
        assert_eq!(now["uploaded_now"], 1, "{now}");
        assert_eq!(now["archived_segments"], archived_segments, "{now}");
        assert_eq!(
            now["archived_through_lsn"].as_u64().unwrap(),
            (from + count) as u64,
            "{now}"
        );
        assert_eq!(now["target"], url.as_str());
    }
    assert_eq!(
        original.iter().map(|(lsn, _)| *lsn).collect::<Vec<_>>(),
        (1..=85).collect::<Vec<_>>()
    );
    // Nothing new: nothing sealed, nothing uploaded.
    let again = archive_now(&addr)?;
    assert_eq!(again["uploaded_now"], 0, "{again}");
    assert_eq!(again["archived_segments"], 3, "{again}");
    let archived_through = 85;

    // The next append opens a new segment, so the newest sealed one is no
    // longer the newest local segment and the compactor drops every
    // archived one (retention 0) while the server keeps taking appends.
    original.extend(append(&addr, dir.path(), 85, 1)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    let first_local = loop {
        let current = status(&addr)?;
        let first_local = current["first_local_lsn"].as_u64().unwrap();
        if first_local > archived_through {
            assert_eq!(current["failures"], 0, "{current}");
            break first_local;
        }
        assert!(
            Instant::now() < deadline,
            "local segments were not dropped: {current}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first_local, 86);
    assert!(data.join("cli/wal/PREFIX").exists());
    // What is local still reads, and so does what is only in the archive
    // now (read-through, chained across the boundary).
    assert_eq!(
        lsns_and_hashes(&addr, first_local)?,
        original[(first_local - 1) as usize..].to_vec()
    );
    assert_eq!(lsns_and_hashes(&addr, 1)?, original);
    let text =
        String::from_utf8(trail(&["--addr", &addr, "archive", "status", "--log", "cli"])?.stdout)?;
    assert!(
        text.contains("archive:") && text.contains("local:"),
        "{text}"
    );
    server.terminate()?;

    // From the bucket alone.
    let verified = trail(&["--json", "verify", "--archive", &url, "--log", "cli"])?;
    ok(&verified);
    let verified = json_lines(&verified)?.remove(0);
    assert_eq!(verified["ok"], true);
    assert_eq!(verified["last_lsn"].as_u64().unwrap(), archived_through);
    assert_eq!(
        verified["last_hash"].as_str().unwrap(),
        original[(archived_through - 1) as usize].1
    );

    let fresh = dir.path().join("fresh");
    ok(&trail(&[
        "restore",
        "--from",
        &url,
        "--log",
        "cli",
        "--to",
        fresh.to_str().unwrap(),
    ])?);
    let restored = Traild::start(&fresh, &[])?;
    assert_eq!(
        lsns_and_hashes(&restored.address, 1)?,
        original[..archived_through as usize].to_vec()
    );
    let online = trail(&["--addr", &restored.address, "verify", "--log", "cli"])?;
    ok(&online);
    restored.terminate()?;
    // Restore never writes over an existing log.
    let again = trail(&[
        "restore",
        "--from",
        &url,
        "--log",
        "cli",
        "--to",
        fresh.to_str().unwrap(),
    ])?;
    assert!(!again.status.success());

    // One flipped byte in the first segment's object.
    let segments = archive.join("cli/segments");
    let mut objects: Vec<_> = std::fs::read_dir(&segments)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    objects.sort();
    let first_object = objects.first().unwrap().clone();
    let mut bytes = std::fs::read(&first_object)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&first_object, &bytes)?;
    let key = format!(
        "cli/segments/{}",
        first_object.file_name().unwrap().to_string_lossy()
    );
    let damaged = trail(&["verify", "--archive", &url, "--log", "cli"])?;
    assert_eq!(damaged.status.code(), Some(1));
    let stderr = String::from_utf8(damaged.stderr)?;
    assert!(
        stderr.contains("DATA_LOSS") && stderr.contains(&key) && stderr.contains("lsns 1..="),
        "{stderr}"
    );
    let json = json_lines(&trail(&[
        "--json",
        "verify",
        "--archive",
        &url,
        "--log",
        "cli",
    ])?)?
    .remove(0);
    assert_eq!(json["ok"], false);
    assert_eq!(json["data_loss"]["key"], key.as_str());
    assert_eq!(json["data_loss"]["first_lsn"], 1);
    let elsewhere = dir.path().join("elsewhere");
    let refused = trail(&[
        "restore",
        "--from",
        &url,
        "--log",
        "cli",
        "--to",
        elsewhere.to_str().unwrap(),
    ])?;
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8(refused.stderr)?.contains(&key));
    assert!(!elsewhere.join("cli").exists());
    Ok(())
}

/// Appends the JSON lines `lines` (written to `file`) to log `cli`; the
/// receipts' (lsn, hash).
fn append_file(addr: &str, file: &Path, lines: &str) -> Result<Vec<(u64, String)>, Error> {
    std::fs::write(file, lines)?;
    let output = trail(&[
        "--addr",
        addr,
        "--json",
        "append",
        "--log",
        "cli",
        "--file",
        file.to_str().unwrap(),
    ])?;
    ok(&output);
    Ok(json_lines(&output)?
        .iter()
        .map(|receipt| {
            (
                receipt["lsn"].as_u64().unwrap(),
                receipt["hash"].as_str().unwrap().to_owned(),
            )
        })
        .collect())
}

/// `count` events from `from` on, each setting the state of one of five
/// documents; their (lsn, hash).
fn append_changes(
    addr: &str,
    dir: &Path,
    from: usize,
    count: usize,
) -> Result<Vec<(u64, String)>, Error> {
    let file = dir.join(format!("changes-{from}.jsonl"));
    let lines: String = (from..from + count)
        .map(|position| {
            format!(
                "{{\"event_id\":\"c-{position}\",\"actor\":\"user-{}\",\"action\":\"edit\",\"resource\":\"doc/{}\",\"change\":{{\"set\":{{\"n\":{position}}}}}}}\n",
                position % 3,
                position % 5
            )
        })
        .collect();
    append_file(addr, &file, &lines)
}

/// `trail state` of the five documents now and as of lsns 30 and 60 (the
/// state store's history: before a suffix restore's first local lsn, only
/// a snapshot can answer), once the store has `min_lsn`.
fn states(addr: &str, min_lsn: u64) -> Result<Vec<serde_json::Value>, Error> {
    let mut states = Vec::new();
    for at in [None, Some("30"), Some("60")] {
        for document in 0..5 {
            let resource = format!("doc/{document}");
            let min_lsn = min_lsn.to_string();
            let mut args = vec![
                "--addr",
                addr,
                "--json",
                "state",
                "--log",
                "cli",
                &resource,
                "--min-lsn",
                &min_lsn,
            ];
            if let Some(at) = at {
                args.extend(["--at-lsn", at]);
            }
            let output = trail(&args)?;
            ok(&output);
            states.push(json_lines(&output)?.remove(0));
        }
    }
    Ok(states)
}

#[test]
fn restore_from_a_snapshot_through_the_cli() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let archive = dir.path().join("archive");
    let url = format!("file://{}", archive.display());
    let config = dir.path().join("traild.toml");
    std::fs::write(
        &config,
        format!(
            "[archive]\nurl = \"{url}\"\narchive_after_secs = 0\nlocal_retention_secs = 3600\ncheck_interval_ms = 200\n"
        ),
    )?;
    let server = Traild::start(&data, &["--config", config.to_str().unwrap()])?;
    let addr = server.address.clone();

    // Segment 1 (lsns 1..=40) archived; segment 2 (41..=80) holds the
    // snapshot's watermark; segment 3 (81..=85) is the tail after it.
    let mut original = append_changes(&addr, dir.path(), 0, 40)?;
    assert_eq!(archive_now(&addr)?["archived_through_lsn"], 40);
    original.extend(append_changes(&addr, dir.path(), 40, 40)?);
    states(&addr, 80)?;
    let snapshot = trail(&["--addr", &addr, "--json", "snapshot", "--log", "cli"])?;
    ok(&snapshot);
    let snapshot = json_lines(&snapshot)?.remove(0);
    let watermark = snapshot["lsn"].as_u64().unwrap();
    assert!((41..=80).contains(&watermark), "{snapshot}");
    assert_eq!(archive_now(&addr)?["archived_through_lsn"], 80);
    // The compactor uploads the snapshot once its watermark's segment is
    // archived (a later round).
    let key = format!("{watermark:020}.snap");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !archive.join("cli/snapshots").join(&key).exists() {
        assert!(
            Instant::now() < deadline,
            "the snapshot at lsn {watermark} was not archived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    original.extend(append_changes(&addr, dir.path(), 80, 5)?);
    assert_eq!(archive_now(&addr)?["archived_through_lsn"], 85);
    let before = states(&addr, 85)?;
    server.terminate()?;

    let fresh = dir.path().join("fresh");
    let restored = trail(&[
        "--json",
        "restore",
        "--from",
        &url,
        "--log",
        "cli",
        "--to",
        fresh.to_str().unwrap(),
        "--from-snapshot",
    ])?;
    ok(&restored);
    let report = json_lines(&restored)?.remove(0);
    assert_eq!(report["from_snapshot"], true, "{report}");
    assert_eq!(report["snapshot_lsn"].as_u64(), Some(watermark), "{report}");
    assert_eq!(report["first_lsn"], 41, "{report}");
    assert_eq!(report["last_lsn"], 85, "{report}");
    assert_eq!(report["chain_segments"], 3, "{report}");
    assert!(fresh.join("cli/wal/PREFIX").exists());
    assert!(!fresh
        .join("cli/wal")
        .join(format!("{:020}.seg", 1))
        .exists());

    // The restored server: the same records (1..=40 read through from the
    // archive), the same state (from the snapshot plus the tail), verified.
    let server = Traild::start(&fresh, &["--config", config.to_str().unwrap()])?;
    assert_eq!(lsns_and_hashes(&server.address, 1)?, original);
    assert_eq!(states(&server.address, 85)?, before);
    ok(&trail(&[
        "--addr",
        &server.address,
        "verify",
        "--log",
        "cli",
    ])?);
    server.terminate()?;
    Ok(())
}

/// The legal hold moto reports for `key` in `bucket` (its current version).
fn legal_hold(moto: &moto::Moto, bucket: &str, key: &str) -> Result<String, Error> {
    let (status, body) = moto::http(
        moto.address,
        "GET",
        &format!("/{bucket}/{key}?legal-hold"),
        &[],
        b"",
    )?;
    assert_eq!(status, 200, "{body}");
    Ok(if body.contains("<Status>ON</Status>") {
        "ON".into()
    } else if body.contains("<Status>OFF</Status>") {
        "OFF".into()
    } else {
        "none".into()
    })
}

#[test]
fn object_lock_status_and_legal_hold_through_the_cli() -> Result<(), Error> {
    let moto = moto::Moto::start()?;
    moto.create_bucket("worm", true)?;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let config = dir.path().join("traild.toml");
    std::fs::write(
        &config,
        format!(
            "[archive]\nurl = \"s3://worm/cli\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"moto\"\nsecret_access_key = \"moto\"\narchive_after_secs = 0\nlocal_retention_secs = 3600\ncheck_interval_ms = 200\nlock_mode = \"governance\"\nlock_retention_days = 1\n",
            moto.endpoint()
        ),
    )?;
    let server = Traild::start(&data, &["--config", config.to_str().unwrap()])?;
    let addr = server.address.clone();
    append(&addr, dir.path(), 0, 40)?;
    let now = archive_now(&addr)?;
    assert_eq!(now["archived_through_lsn"], 40, "{now}");
    assert_eq!(now["lock_mode"], "governance", "{now}");
    assert_eq!(now["lock_retention_secs"], 24 * 3600, "{now}");

    // The probe runs in the compactor's first round.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let current = status(&addr)?;
        if current["lock_probe"] != "pending" {
            assert_eq!(current["lock_probe"], "enforced", "{current}");
            assert_eq!(current["lock_enforced"], true, "{current}");
            assert_eq!(current["objects_locked"], 3, "{current}");
            break;
        }
        assert!(Instant::now() < deadline, "never probed: {current}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = trail(&["--addr", addr.as_str(), "archive", "status", "--log", "cli"])?;
    ok(&text);
    let text = String::from_utf8(text.stdout)?;
    assert!(
        text.contains(
            "object lock: governance for 1 day after upload; target enforces it: yes; 3 objects locked since start"
        ),
        "{text}"
    );

    let keys: Vec<String> = ["seg", "idx", "manifest"]
        .iter()
        .map(|suffix| {
            format!("cli/cli/segments/00000000000000000001-00000000000000000040.{suffix}")
        })
        .collect();
    for key in &keys {
        assert_eq!(legal_hold(&moto, "worm", key)?, "none", "{key}");
    }
    let hold = |state: &str, range: &[&str]| -> Result<serde_json::Value, Error> {
        let mut args = vec![
            "--addr",
            addr.as_str(),
            "--json",
            "archive",
            "hold",
            "--log",
            "cli",
            state,
        ];
        args.extend_from_slice(range);
        let output = trail(&args)?;
        ok(&output);
        Ok(json_lines(&output)?.remove(0))
    };
    let on = hold("--on", &["--from-lsn", "5", "--to-lsn", "7"])?;
    assert_eq!(on["legal_hold"], "on", "{on}");
    assert_eq!(
        (on["segments"].as_u64(), on["objects"].as_u64()),
        (Some(1), Some(3)),
        "{on}"
    );
    assert_eq!(
        (on["first_lsn"].as_u64(), on["last_lsn"].as_u64()),
        (Some(1), Some(40)),
        "{on}"
    );
    for key in &keys {
        assert_eq!(legal_hold(&moto, "worm", key)?, "ON", "{key}");
    }
    let off = hold("--off", &["--all"])?;
    assert_eq!(off["objects"], 3, "{off}");
    for key in &keys {
        assert_eq!(legal_hold(&moto, "worm", key)?, "OFF", "{key}");
    }
    // A range nothing archived holds: refused, naming it.
    let beyond = trail(&[
        "--addr",
        addr.as_str(),
        "archive",
        "hold",
        "--log",
        "cli",
        "--on",
        "--from-lsn",
        "100",
        "--to-lsn",
        "200",
    ])?;
    assert!(!beyond.status.success());
    let stderr = String::from_utf8(beyond.stderr)?;
    assert!(
        stderr.contains("no archived segment holds lsns 100..=200"),
        "{stderr}"
    );
    drop(server);

    // A lock mode with a file:// target: traild refuses to start.
    let refused_config = dir.path().join("file-lock.toml");
    std::fs::write(
        &refused_config,
        format!(
            "[archive]\nurl = \"file://{}\"\nlock_mode = \"compliance\"\nlock_retention_days = 7\n",
            dir.path().join("archive").display()
        ),
    )?;
    let mut child = Command::new(traild_path())
        .arg("--data-dir")
        .arg(dir.path().join("refused"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .arg("--config")
        .arg(&refused_config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait()? {
            break exit;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("traild started with a lock mode on a file:// target");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exit.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)?;
    assert!(
        stderr.contains("file targets cannot enforce Object Lock"),
        "{stderr}"
    );
    Ok(())
}

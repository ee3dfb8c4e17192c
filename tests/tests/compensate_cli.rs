//! `trail compensate` and `trail rollback` end to end against a real
//! `traild` (issue 9): events with state changes appended through `trail
//! append` (flags and `--file`), then a dry run (table and JSON) that writes
//! nothing, a refusal on later changes, a force whose inverse no longer
//! applies, a force with `--auto-verify`, idempotent repeats by LSN and by
//! `--event-id` (also after a restart), a change-less event marked reverted,
//! a cascade, and a rollback to an LSN, an event id and a time that leaves
//! exactly the state `trail state --at-lsn` showed before. The undone records
//! are visible in `trail history`, `trail read`, `trail query --kind
//! compensation`, and `trail verify` (online and offline) checks the links.
//!
//! Outputs are compared exactly wherever they are deterministic; hashes and
//! recorded times come from the server's own answers.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use trail_e2e::{trail_path, Error, Traild};

fn trail(args: &[&str]) -> Result<Output, Error> {
    Ok(Command::new(trail_path()).args(args).output()?)
}

/// Runs `trail --addr ADDR ARGS...`, which must succeed; its stdout.
fn ok(addr: &str, args: &[&str]) -> Result<String, Error> {
    let output = trail(&[&["--addr", addr], args].concat())?;
    if !output.status.success() {
        return Err(format!(
            "trail {args:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Runs `trail --addr ADDR ARGS...`, which must fail with exit code `code`
/// and print nothing on stdout; its stderr.
fn fails(addr: &str, args: &[&str], code: i32) -> Result<String, Error> {
    let output = trail(&[&["--addr", addr], args].concat())?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "",
        "{args:?} printed on stdout"
    );
    Ok(stderr)
}

fn json_lines(text: &str) -> Result<Vec<Value>, Error> {
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

/// One JSON object (the whole stdout).
fn json_one(text: &str) -> Result<Value, Error> {
    let mut lines = json_lines(text)?;
    assert_eq!(lines.len(), 1, "{text}");
    Ok(lines.remove(0))
}

fn lines(lines: &[&str]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// Unix nanoseconds as RFC 3339 in UTC, every digit of the fraction kept.
fn rfc3339(nanos: i64) -> String {
    format!(
        "{:.9}",
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap()
    )
}

/// The log's head LSN, from `trail --json head`.
fn head_lsn(addr: &str, log: &str) -> Result<u64, Error> {
    let head = json_one(&ok(addr, &["--json", "head", "--log", log])?)?;
    Ok(head["lsn"].as_u64().ok_or("no head lsn")?)
}

/// Every record of `log` through `trail --json read`.
fn read_json(addr: &str, log: &str) -> Result<Vec<Value>, Error> {
    json_lines(&ok(addr, &["--json", "read", "--log", log])?)
}

/// `trail --json state --log LOG RESOURCE --min-lsn M ARGS...`.
fn state(
    addr: &str,
    log: &str,
    resource: &str,
    min_lsn: u64,
    args: &[&str],
) -> Result<Value, Error> {
    let min = min_lsn.to_string();
    json_one(&ok(
        addr,
        &[
            &["--json", "state", "--log", log, resource, "--min-lsn", &min][..],
            args,
        ]
        .concat(),
    )?)
}

/// The line `trail read` prints for a record (its format, written out again
/// here), from the record's JSON.
fn read_line(record: &Value, links: &str) -> String {
    let event = &record["event"];
    format!(
        "{:>10}  {}  {:<8}  {:<16} {:<16} {:<24} {}{links}",
        record["lsn"].as_u64().unwrap(),
        &record["hash"].as_str().unwrap()[..16],
        event["outcome"].as_str().unwrap(),
        event["actor"].as_str().unwrap(),
        event["action"].as_str().unwrap(),
        event["resource"].as_str().unwrap(),
        event["event_id"].as_str().unwrap(),
    )
}

/// The row `trail history` prints for a change (its format, written out
/// again here).
fn history_row(lsn: u64, recorded_at: i64, actor: &str, action: &str, change: &str) -> String {
    format!(
        "{lsn:>10}  {:<30}  {actor:<16} {action:<16} {:<8}  {change}",
        rfc3339(recorded_at),
        "success"
    )
}

const SHOP: &str = "shop";

/// Appends log `shop`, returning the receipts' hashes by LSN - 1:
///
/// | lsn | id | actor | action | resource | change |
/// | --- | --- | --- | --- | --- | --- |
/// | 1 | e1 | alice | order.create | order/1 | set `{"status":"new","amount":10}` |
/// | 2 | e2 | bob | order.update | order/1 | merge `{"status":"paid"}` |
/// | 3 | e3 | carol | order.update | order/1 | merge `{"note":"x"}` |
/// | 4 | e4 | dave | login | user/dave | none |
/// | 5 | e5 | erin | order.create | order/2 | set `{"items":[1]}` |
/// | 6 | e6 | erin | order.update | order/2 | JSON patch adding `/items/0` = 0 |
///
/// 1 to 3 by flags, one `trail append` each; 4 to 6 as JSON lines in one
/// `--file`.
fn append_shop(addr: &str, dir: &Path) -> Result<Vec<String>, Error> {
    let flags: [&[&str]; 3] = [
        &[
            "--event-id",
            "e1",
            "--actor",
            "alice",
            "--action",
            "order.create",
            "--resource",
            "order/1",
            "--set-json",
            r#"{"status":"new","amount":10}"#,
        ],
        &[
            "--event-id",
            "e2",
            "--actor",
            "bob",
            "--action",
            "order.update",
            "--resource",
            "order/1",
            "--merge-patch",
            r#"{"status":"paid"}"#,
        ],
        &[
            "--event-id",
            "e3",
            "--actor",
            "carol",
            "--action",
            "order.update",
            "--resource",
            "order/1",
            "--merge-patch",
            r#"{"note":"x"}"#,
        ],
    ];
    let mut receipts = Vec::new();
    for flags in flags {
        let args = [&["--json", "append", "--log", SHOP][..], flags].concat();
        receipts.extend(json_lines(&ok(addr, &args)?)?);
    }
    let file = dir.join("shop.jsonl");
    std::fs::write(
        &file,
        [
            json!({"event_id": "e4", "actor": "dave", "action": "login", "resource": "user/dave"}),
            json!({"event_id": "e5", "actor": "erin", "action": "order.create", "resource": "order/2",
                   "change": {"set": {"items": [1]}}}),
            json!({"event_id": "e6", "actor": "erin", "action": "order.update", "resource": "order/2",
                   "change": {"json_patch": [{"op": "add", "path": "/items/0", "value": 0}]}}),
        ]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect::<String>(),
    )?;
    receipts.extend(json_lines(&ok(
        addr,
        &[
            "--json",
            "append",
            "--log",
            SHOP,
            "--file",
            file.to_str().unwrap(),
        ],
    )?)?);
    let lsns: Vec<u64> = receipts
        .iter()
        .map(|receipt| receipt["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5, 6]);
    Ok(receipts
        .iter()
        .map(|receipt| receipt["hash"].as_str().unwrap().to_owned())
        .collect())
}

/// `trail compensate --log shop ARGS... --actor ops --reason REASON`.
fn compensate_args<'a>(args: &[&'a str], reason: &'a str) -> Vec<&'a str> {
    [
        &["compensate", "--log", SHOP][..],
        args,
        &["--actor", "ops", "--reason", reason],
    ]
    .concat()
}

/// Dry run (table and JSON, nothing written), conflict, a force whose
/// inverse no longer applies, a force with auto-verify, repeats by LSN and
/// by event id, a change-less event marked reverted, a cascade; then the
/// marks in history, read and query; verify online; a restart (repeats
/// still answered from the log) and verify offline.
#[test]
fn compensate_dry_run_conflict_force_cascade_and_repeats() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    let hashes = append_shop(&addr, dir.path())?;
    // The state store has taken in lsn 6 once this answers.
    assert_eq!(
        state(&addr, SHOP, "order/1", 6, &[])?["state"],
        json!({"status": "paid", "amount": 10, "note": "x"})
    );

    // A dry run of the newest change: the exact record and state; nothing
    // written.
    let dry = ok(&addr, &compensate_args(&["3", "--dry-run"], "wrong note"))?;
    assert_eq!(
        dry,
        lines(&[
            "dry run: would append 1 compensation record to log shop (planned at state lsn 6)",
            r#"         -  undoes 3  trail.compensate  by ops: "wrong note""#,
            r#"            /note: "x" -> (absent)"#,
            "state of order/1 after it:",
            "{",
            r#"  "amount": 10,"#,
            r#"  "status": "paid""#,
            "}",
        ])
    );
    let mut dry = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &compensate_args(&["3", "--dry-run"], "wrong note"),
        ]
        .concat(),
    )?)?;
    // The producer-side time the record would carry is the server's clock.
    let occurred = dry["records"][0]["event"]["occurred_at_unix_nanos"].take();
    assert!(occurred.as_i64().unwrap() > 0, "{occurred}");
    assert_eq!(
        dry,
        json!({
            "log": SHOP, "dry_run": true, "already_compensated": false,
            "records": [{
                "lsn": 0, "hash": "", "batch_last_lsn": 0,
                "compensates": 3, "compensates_hash": hashes[2],
                "event": {
                    "event_id": "trail:compensates:3", "actor": "ops",
                    "action": "trail.compensate", "resource": "order/1", "trace_id": "",
                    "outcome": "success", "occurred_at_unix_nanos": null,
                    "attributes": {}, "payload": null,
                    "change": {"field_changes": [{"path": "/note", "before": "x"}]},
                    "compensation": {"reason": "wrong note", "mode": "compensate", "requested_lsn": 3},
                },
            }],
            "resource": "order/1",
            "state": {"status": "paid", "amount": 10},
            "planned_at_lsn": 6,
            "auto_verify": null,
        })
    );
    // Bound to the receipt's hash: the right one plans, another refuses.
    let bound = ok(
        &addr,
        &compensate_args(
            &["3", "--dry-run", "--expect-hash", &hashes[2]],
            "wrong note",
        ),
    )?;
    assert!(
        bound.starts_with("dry run: would append 1 compensation record"),
        "{bound}"
    );
    assert_eq!(
        fails(
            &addr,
            &compensate_args(
                &["3", "--dry-run", "--expect-hash", &hashes[1]],
                "wrong note"
            ),
            1
        )?,
        format!(
            "trail: FailedPrecondition: expected_hash: lsn 3 of log shop has hash {}, not {} \
             (a receipt of another log, or of another record?)\n",
            hashes[2], hashes[1]
        )
    );
    assert_eq!(head_lsn(&addr, SHOP)?, 6, "a dry run appends nothing");
    let read = ok(&addr, &["read", "--log", SHOP])?;
    assert_eq!(read.lines().count(), 6, "{read}");
    assert!(!read.contains("compensated by"), "{read}");

    // A later change stands in the way: refused, naming it (LSN, actor,
    // action); two later changes, both named.
    assert_eq!(
        fails(&addr, &compensate_args(&["2"], "wrong payment"), 1)?,
        "trail: FailedPrecondition: lsn 2 of log shop has later changes to its resource that are not compensated: \
         lsn 3 by carol (order.update); compensate them first, cascade (undo them too, newest first) or force \
         (apply the inverse to today's state)\n"
    );
    let refused = fails(&addr, &compensate_args(&["1"], "bad order"), 1)?;
    assert!(
        refused.starts_with("trail: FailedPrecondition: lsn 1 of log shop has later changes")
            && refused.contains(": lsn 2 by bob (order.update), lsn 3 by carol (order.update); "),
        "{refused}"
    );
    // A force whose inverse no longer applies (the state moved on since the
    // creation): refused with the reason.
    assert_eq!(
        fails(&addr, &compensate_args(&["1", "--force"], "bad order"), 1)?,
        "trail: FailedPrecondition: the inverse of lsn 1 of log shop no longer applies to today's state: \
         field change 0 (\"\"): the value there is not the expected one; nothing was appended\n"
    );
    // The same for order/2: its creation's inverse meets [0, 1], not [1].
    let refused = fails(&addr, &compensate_args(&["5", "--force"], "bad order"), 1)?;
    assert!(
        refused.starts_with(
            "trail: FailedPrecondition: the inverse of lsn 5 of log shop no longer applies to today's state: "
        ) && refused.ends_with("; nothing was appended\n"),
        "{refused}"
    );
    assert_eq!(head_lsn(&addr, SHOP)?, 6, "a refusal appends nothing");
    // Unknown LSN; flags that contradict each other (usage errors).
    assert_eq!(
        fails(&addr, &compensate_args(&["99"], "r"), 1)?,
        "trail: NotFound: lsn: 99 is not in log shop (its head is 6)\n"
    );
    for args in [
        &["1", "--cascade", "--force"][..],
        &["1", "--dry-run", "--auto-verify"],
        &["1", "--event-id", "e1"],
        &["0"],
    ] {
        fails(&addr, &compensate_args(args, "r"), 2)?;
    }

    // Force past the later change, with auto-verify.
    assert_eq!(
        ok(
            &addr,
            &compensate_args(&["2", "--force", "--auto-verify"], "undo paid")
        )?,
        lines(&[
            "appended 1 compensation record to log shop (lsn 7..7, planned at state lsn 6)",
            r#"         7  undoes 2  trail.compensate  by ops: "undo paid""#,
            r#"            /status: "paid" -> "new""#,
            "state of order/1 now:",
            "{",
            r#"  "amount": 10,"#,
            r#"  "note": "x","#,
            r#"  "status": "new""#,
            "}",
            "auto-verify: the state read back at state lsn 7 equals the prediction",
        ])
    );
    // Again, by LSN and by event id, in any mode: the existing one.
    let existing = |target: &str| {
        lines(&[
            &format!("{target} is already compensated by lsn 7; nothing appended"),
            r#"         7  undoes 2  trail.compensate  by ops: "undo paid""#,
            r#"            /status: "paid" -> "new""#,
            "state of order/1 now:",
            "{",
            r#"  "amount": 10,"#,
            r#"  "note": "x","#,
            r#"  "status": "new""#,
            "}",
        ])
    };
    assert_eq!(
        ok(&addr, &compensate_args(&["2"], "again"))?,
        existing("lsn 2")
    );
    assert_eq!(
        ok(
            &addr,
            &compensate_args(&["--event-id", "e2", "--cascade"], "again")
        )?,
        existing("event \"e2\"")
    );
    assert_eq!(
        ok(
            &addr,
            &compensate_args(&["--event-id", "e2", "--dry-run"], "again")
        )?,
        existing("event \"e2\"")
    );
    assert_eq!(head_lsn(&addr, SHOP)?, 7, "a repeat appends nothing");

    // An event without a state change: marked reverted, no change.
    assert_eq!(
        ok(&addr, &compensate_args(&["--event-id", "e4"], "no login"))?,
        lines(&[
            "appended 1 compensation record to log shop (lsn 8..8, planned at state lsn 7)",
            r#"         8  undoes 4  trail.compensate  by ops: "no login""#,
            "            (no state change: the event is marked reverted)",
            "state of user/dave now:",
            "no state (never set, or deleted)",
        ])
    );

    // Cascade from the creation: the live later change (3; 2 is undone by
    // 7 already) newest first, then 1, in one atomic batch.
    assert_eq!(
        ok(
            &addr,
            &compensate_args(&["--event-id", "e1", "--cascade", "--dry-run"], "bad order")
        )?,
        lines(&[
            "dry run: would append 2 compensation records to log shop (planned at state lsn 8)",
            r#"         -  undoes 3  trail.compensate  by ops: "bad order""#,
            r#"            /note: "x" -> (absent)"#,
            r#"         -  undoes 1  trail.compensate  by ops: "bad order""#,
            r#"            (state): {"amount":10,"status":"new"} -> (absent)"#,
            "state of order/1 after it:",
            "no state (never set, or deleted)",
        ])
    );
    assert_eq!(head_lsn(&addr, SHOP)?, 8);
    let cascade = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &compensate_args(&["1", "--cascade", "--auto-verify"], "bad order"),
        ]
        .concat(),
    )?)?;
    assert_eq!(
        (
            &cascade["dry_run"],
            &cascade["already_compensated"],
            &cascade["state"],
            &cascade["planned_at_lsn"],
            &cascade["auto_verify"],
        ),
        (
            &json!(false),
            &json!(false),
            &Value::Null,
            &json!(8),
            &json!({"matched": true, "state_lsn": 10}),
        )
    );
    let records = cascade["records"].as_array().unwrap();
    let links: Vec<(u64, u64, &str, u64, &str)> = records
        .iter()
        .map(|record| {
            (
                record["lsn"].as_u64().unwrap(),
                record["compensates"].as_u64().unwrap(),
                record["compensates_hash"].as_str().unwrap(),
                record["batch_last_lsn"].as_u64().unwrap(),
                record["event"]["compensation"]["mode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            (9, 3, hashes[2].as_str(), 10, "cascade"),
            (10, 1, hashes[0].as_str(), 10, "cascade"),
        ]
    );
    assert_eq!(
        state(&addr, SHOP, "order/1", 10, &[])?["exists"],
        json!(false)
    );
    // order/2 was never touched.
    assert_eq!(
        state(&addr, SHOP, "order/2", 10, &[])?["state"],
        json!({"items": [0, 1]})
    );

    // History: the compensations are rows of their own; the undone rows are
    // marked.
    let records = read_json(&addr, SHOP)?;
    assert_eq!(records.len(), 10);
    let at = |lsn: usize| records[lsn - 1]["recorded_at_unix_nanos"].as_i64().unwrap();
    let header = format!(
        "{:>10}  {:<30}  {:<16} {:<16} {:<8}  change",
        "lsn", "time", "actor", "action", "outcome"
    );
    let history = trail(&[
        "--addr",
        &addr,
        "history",
        "--log",
        SHOP,
        "order/1",
        "--min-lsn",
        "10",
    ])?;
    assert!(history.status.success());
    assert_eq!(
        String::from_utf8(history.stdout)?,
        lines(&[
            &header,
            &history_row(
                1,
                at(1),
                "alice",
                "order.create",
                "set  (compensated by 10)"
            ),
            r#"            (state): (absent) -> {"amount":10,"status":"new"}"#,
            &history_row(
                2,
                at(2),
                "bob",
                "order.update",
                "merge_patch  (compensated by 7)"
            ),
            r#"            /status: "new" -> "paid""#,
            &history_row(
                3,
                at(3),
                "carol",
                "order.update",
                "merge_patch  (compensated by 9)"
            ),
            r#"            /note: (absent) -> "x""#,
            &history_row(
                7,
                at(7),
                "ops",
                "trail.compensate",
                r#"field_changes  undoes 2: "undo paid""#
            ),
            r#"            /status: "paid" -> "new""#,
            &history_row(
                9,
                at(9),
                "ops",
                "trail.compensate",
                r#"field_changes  undoes 3: "bad order""#
            ),
            r#"            /note: "x" -> (absent)"#,
            &history_row(
                10,
                at(10),
                "ops",
                "trail.compensate",
                r#"field_changes  undoes 1: "bad order""#
            ),
            r#"            (state): {"amount":10,"status":"new"} -> (absent)"#,
        ])
    );
    assert_eq!(
        String::from_utf8(history.stderr)?,
        "6 changes; state_lsn 10\n"
    );
    let rows = json_lines(&ok(
        &addr,
        &["--json", "history", "--log", SHOP, "user/dave"],
    )?)?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (
            &rows[0]["lsn"],
            &rows[0]["compensates"],
            &rows[0]["reason"],
            &rows[0]["change_kind"]
        ),
        (&json!(8), &json!(4), &json!("no login"), &json!("none"))
    );

    // Read: "undoes N" on compensations, "(compensated by M)" on the undone.
    let marks = [
        (1, "  (compensated by 10)"),
        (2, "  (compensated by 7)"),
        (3, "  (compensated by 9)"),
        (4, "  (compensated by 8)"),
        (5, ""),
        (6, ""),
        (7, "  undoes 2"),
        (8, "  undoes 4"),
        (9, "  undoes 3"),
        (10, "  undoes 1"),
    ];
    let expected: Vec<String> = marks
        .iter()
        .map(|(lsn, links)| read_line(&records[lsn - 1], links))
        .collect();
    assert_eq!(
        ok(&addr, &["read", "--log", SHOP])?,
        lines(&expected.iter().map(String::as_str).collect::<Vec<_>>())
    );
    for (record, (lsn, _)) in records.iter().zip(marks) {
        let kind = if lsn > 6 { "compensation" } else { "event" };
        assert_eq!(record["kind"], kind, "{record}");
    }
    // Query by kind: the compensations, as `trail read` prints them.
    let query = trail(&[
        "--addr",
        &addr,
        "query",
        "--log",
        SHOP,
        "--kind",
        "compensation",
        "--min-lsn",
        "10",
    ])?;
    assert!(query.status.success());
    assert_eq!(
        String::from_utf8(query.stdout)?,
        lines(&expected[6..].iter().map(String::as_str).collect::<Vec<_>>())
    );
    assert_eq!(
        String::from_utf8(query.stderr)?,
        "4 records; index_lsn 10; no further page\n"
    );
    let mut queried = json_lines(&ok(
        &addr,
        &[
            "--json",
            "query",
            "--log",
            SHOP,
            "--kind",
            "event",
            "--min-lsn",
            "10",
        ],
    )?)?;
    queried.pop();
    let compensated_by: Vec<(u64, u64)> = queried
        .iter()
        .map(|record| {
            (
                record["lsn"].as_u64().unwrap(),
                record["compensated_by"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        compensated_by,
        [(1, 10), (2, 7), (3, 9), (4, 8), (5, 0), (6, 0)]
    );

    // Verify online: every link checked.
    let head_hash = records[9]["hash"].as_str().unwrap().to_owned();
    assert_eq!(
        ok(&addr, &["verify", "--log", SHOP])?,
        format!(
            "ok: 10 records verified; chain head lsn 10 hash {head_hash}; 4 compensation links checked\n"
        )
    );

    // After a restart the log's own id index still knows what is undone.
    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");
    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    let repeat = ok(&addr, &compensate_args(&["3", "--force"], "again"))?;
    assert!(
        repeat.starts_with(
            "lsn 3 is already compensated by lsn 9; nothing appended\n         9  undoes 3  trail.compensate  by ops: \"bad order\"\n"
        ),
        "{repeat}"
    );
    assert_eq!(
        ok(&addr, &compensate_args(&["4"], "again"))?,
        lines(&[
            "lsn 4 is already compensated by lsn 8; nothing appended",
            r#"         8  undoes 4  trail.compensate  by ops: "no login""#,
            "            (no state change: the event is marked reverted)",
            "state of user/dave now:",
            "no state (never set, or deleted)",
        ])
    );
    let again = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &compensate_args(&["--event-id", "e1", "--cascade"], "again"),
        ]
        .concat(),
    )?)?;
    assert_eq!(again["already_compensated"], true);
    assert_eq!(again["records"][0]["lsn"], 10);
    assert_eq!(head_lsn(&addr, SHOP)?, 10, "repeats append nothing");
    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");

    // Verify offline, on the stopped server's data directory.
    assert_eq!(
        String::from_utf8(
            trail(&["verify", "--dir", data.to_str().unwrap(), "--log", SHOP])?.stdout
        )?,
        format!(
            "ok: 10 records verified (lsn 1..=10); chain head {head_hash}; 4 compensation links checked\n"
        )
    );
    Ok(())
}

const BANK: &str = "bank";

/// `trail rollback --log bank acct/1 ARGS... --actor ops --reason REASON`.
fn rollback_args<'a>(args: &[&'a str], reason: &'a str) -> Vec<&'a str> {
    [
        &["rollback", "--log", BANK, "acct/1"][..],
        args,
        &["--actor", "ops", "--reason", reason],
    ]
    .concat()
}

/// Rollback to an LSN (dry run), to an event id (real, auto-verified), to a
/// time (dry run, then real), and with nothing after the point; each real
/// one leaves `trail state` equal to what `trail state --at-lsn N` said
/// before; another resource is left alone; history, query and verify
/// (online and offline) see the compensations.
#[test]
fn rollback_to_an_lsn_an_event_id_and_a_time() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    // acct/1 changes at the odd LSNs 1..=11 (c0..c5), acct/2 at the even.
    let mut receipts = Vec::new();
    for step in 0..6 {
        let (flag, change) = if step == 0 {
            ("--set-json", r#"{"n":0}"#.to_owned())
        } else {
            ("--merge-patch", format!(r#"{{"n":{step},"k{step}":true}}"#))
        };
        for (id, actor, resource, flag, change) in [
            (format!("c{step}"), "alice", "acct/1", flag, change),
            (
                format!("x{step}"),
                "bob",
                "acct/2",
                "--merge-patch",
                format!(r#"{{"n":{step}}}"#),
            ),
        ] {
            receipts.extend(json_lines(&ok(
                &addr,
                &[
                    "--json",
                    "append",
                    "--log",
                    BANK,
                    "--event-id",
                    &id,
                    "--actor",
                    actor,
                    "--action",
                    "acct.update",
                    "--resource",
                    resource,
                    flag,
                    &change,
                ],
            )?)?);
        }
    }
    assert_eq!(receipts.len(), 12);
    let recorded_at = |lsn: usize| {
        receipts[lsn - 1]["recorded_at_unix_nanos"]
            .as_i64()
            .unwrap()
    };
    let at_5 = state(&addr, BANK, "acct/1", 12, &["--at-lsn", "5"])?["state"].clone();
    let at_7 = state(&addr, BANK, "acct/1", 12, &["--at-lsn", "7"])?["state"].clone();
    assert_eq!(at_5, json!({"n": 2, "k1": true, "k2": true}));
    assert_eq!(at_7, json!({"n": 3, "k1": true, "k2": true, "k3": true}));
    let acct_2 = state(&addr, BANK, "acct/2", 12, &[])?["state"].clone();
    assert_eq!(acct_2, json!({"n": 5}));

    // A dry run to lsn 5: 11, 9, 7 newest first; nothing written.
    assert_eq!(
        ok(
            &addr,
            &rollback_args(&["--to-lsn", "5", "--dry-run"], "bad import")
        )?,
        lines(&[
            "dry run: would append 3 compensation records to log bank (planned at state lsn 12)",
            r#"         -  undoes 11  trail.rollback  by ops: "bad import""#,
            "            /n: 5 -> 4",
            "            /k5: true -> (absent)",
            r#"         -  undoes 9  trail.rollback  by ops: "bad import""#,
            "            /n: 4 -> 3",
            "            /k4: true -> (absent)",
            r#"         -  undoes 7  trail.rollback  by ops: "bad import""#,
            "            /n: 3 -> 2",
            "            /k3: true -> (absent)",
            "state of acct/1 after it:",
            "{",
            r#"  "k1": true,"#,
            r#"  "k2": true,"#,
            r#"  "n": 2"#,
            "}",
        ])
    );
    let dry = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &rollback_args(&["--to-lsn", "5", "--dry-run"], "bad import"),
        ]
        .concat(),
    )?)?;
    assert_eq!(dry["state"], at_5);
    let notes: Vec<&Value> = dry["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["event"]["compensation"])
        .collect();
    assert_eq!(
        notes,
        [&json!({"reason": "bad import", "mode": "rollback", "requested_lsn": 5}); 3]
    );
    assert_eq!(head_lsn(&addr, BANK)?, 12, "a dry run appends nothing");

    // For real, to event c3 (lsn 7): 11 and 9 undone, auto-verified.
    assert_eq!(
        ok(
            &addr,
            &rollback_args(&["--to-event-id", "c3", "--auto-verify"], "bad import")
        )?,
        lines(&[
            "appended 2 compensation records to log bank (lsn 13..14, planned at state lsn 12)",
            r#"        13  undoes 11  trail.rollback  by ops: "bad import""#,
            "            /n: 5 -> 4",
            "            /k5: true -> (absent)",
            r#"        14  undoes 9  trail.rollback  by ops: "bad import""#,
            "            /n: 4 -> 3",
            "            /k4: true -> (absent)",
            "state of acct/1 now:",
            "{",
            r#"  "k1": true,"#,
            r#"  "k2": true,"#,
            r#"  "k3": true,"#,
            r#"  "n": 3"#,
            "}",
            "auto-verify: the state read back at state lsn 14 equals the prediction",
        ])
    );
    let now = state(&addr, BANK, "acct/1", 14, &[])?;
    assert_eq!(now["state"], at_7);
    assert_eq!(now["last_change_lsn"], 14);

    // To a time: lsn 5's recorded time exactly (at or before it is kept).
    // The compensations 13 and 14 net out with what they undid; 7 is what
    // is live after the point.
    let to = rfc3339(recorded_at(5));
    let dry = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &rollback_args(&["--to", &to, "--dry-run"], "older import"),
        ]
        .concat(),
    )?)?;
    let undone: Vec<u64> = dry["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["compensates"].as_u64().unwrap())
        .collect();
    assert_eq!(undone, [7]);
    assert_eq!(dry["state"], at_5);
    assert_eq!(head_lsn(&addr, BANK)?, 14);
    let done = json_one(&ok(
        &addr,
        &[
            &["--json"][..],
            &rollback_args(&["--to", &to, "--auto-verify"], "older import"),
        ]
        .concat(),
    )?)?;
    assert_eq!(done["records"][0]["lsn"], 15);
    assert_eq!(done["records"][0]["compensates"], 7);
    assert_eq!(
        done["auto_verify"],
        json!({"matched": true, "state_lsn": 15})
    );
    assert_eq!(state(&addr, BANK, "acct/1", 15, &[])?["state"], at_5);
    assert_eq!(
        state(&addr, BANK, "acct/2", 15, &[])?["state"],
        acct_2,
        "another resource is untouched"
    );

    // Nothing live after the point any more: nothing appended, by any name
    // of the point.
    for point in [
        &["--to-lsn", "5"][..],
        &["--to-event-id", "c2"],
        &["--to", &to],
    ] {
        assert_eq!(
            ok(&addr, &rollback_args(point, "again"))?,
            lines(&[
                "nothing to undo after the point; nothing appended",
                "state of acct/1 now:",
                "{",
                r#"  "k1": true,"#,
                r#"  "k2": true,"#,
                r#"  "n": 2"#,
                "}",
            ]),
            "{point:?}"
        );
    }
    assert_eq!(head_lsn(&addr, BANK)?, 15);
    // Refusals: no point; a point beyond the head; an unknown event id.
    fails(&addr, &rollback_args(&[], "r"), 2)?;
    assert_eq!(
        fails(&addr, &rollback_args(&["--to-lsn", "99"], "r"), 1)?,
        "trail: NotFound: to_lsn: 99 is beyond the log's head 15\n"
    );
    assert_eq!(
        fails(&addr, &rollback_args(&["--to-event-id", "zz"], "r"), 1)?,
        "trail: NotFound: event_id: no event with id \"zz\" in log bank\n"
    );

    // History shows the three compensations; query by kind lists them.
    let rows = json_lines(&ok(
        &addr,
        &["--json", "history", "--log", BANK, "acct/1", "--from", "6"],
    )?)?;
    // Per row: lsn, compensates, compensated_by, reason (null: absent).
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!([
                row["lsn"],
                row["compensates"],
                row["compensated_by"],
                row["reason"]
            ])
        })
        .collect();
    assert_eq!(
        rows,
        [
            json!([7, null, 15, null]),
            json!([9, null, 14, null]),
            json!([11, null, 13, null]),
            json!([13, 11, null, "bad import"]),
            json!([14, 9, null, "bad import"]),
            json!([15, 7, null, "older import"]),
        ]
    );
    let mut queried = json_lines(&ok(
        &addr,
        &[
            "--json",
            "query",
            "--log",
            BANK,
            "--kind",
            "compensation",
            "--min-lsn",
            "15",
        ],
    )?)?;
    let footer = queried.pop().unwrap();
    assert_eq!(footer["records"], 3);
    let found: Vec<(u64, u64, u64)> = queried
        .iter()
        .map(|record| {
            (
                record["lsn"].as_u64().unwrap(),
                record["compensates"].as_u64().unwrap(),
                record["batch_last_lsn"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(found, [(13, 11, 14), (14, 9, 14), (15, 7, 15)]);

    let verify = ok(&addr, &["verify", "--log", BANK])?;
    assert!(
        verify.starts_with("ok: 15 records verified; chain head lsn 15 hash ")
            && verify.ends_with("; 3 compensation links checked\n"),
        "{verify}"
    );
    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");
    let offline = String::from_utf8(
        trail(&["verify", "--dir", data.to_str().unwrap(), "--log", BANK])?.stdout,
    )?;
    assert!(
        offline.starts_with("ok: 15 records verified (lsn 1..=15); chain head ")
            && offline.ends_with("; 3 compensation links checked\n"),
        "{offline}"
    );
    Ok(())
}

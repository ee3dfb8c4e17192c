//! The `trail` CLI's derived-state commands against a real `traild`:
//! events with state changes appended through `trail append` (flags and
//! `--file`), then `trail query` with every kind of filter, paging and
//! read-your-writes, `trail state` now / at an LSN / at a time, `trail
//! history` with field changes and a rejected change, `trail snapshot`,
//! `trail head`'s derived watermarks, a filtered `trail tail`, and `trail
//! index rebuild` on a stopped server's data directory followed by a
//! restarted server giving the same answers.
//!
//! Every test appends the same seven events to log `shop` (see
//! [`append_shop`]); their ids and `occurred_at` are fixed, so everything but
//! hashes and recorded times is known in advance.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use trail_e2e::{trail_path, Error, Traild};

const LOG: &str = "shop";
/// 2026-01-01T00:00:00Z in unix nanoseconds; event `eN` occurred N hours later.
const JAN_1: i64 = 1_767_225_600_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
/// Why lsn 4's JSON patch does not apply (trail-state's wording).
const LSN_4_REJECTED: &str = "json patch op 0 (test /status): test failed: the value did not match";

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

fn json_lines(text: &str) -> Result<Vec<Value>, Error> {
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn occurred(hours: i64) -> String {
    (JAN_1 + hours * HOUR).to_string()
}

/// Unix nanoseconds as RFC 3339 in UTC, every digit of the fraction kept.
fn rfc3339(nanos: i64) -> String {
    format!(
        "{:.9}",
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).unwrap()
    )
}

/// The same instant written with a +02:00 offset.
fn rfc3339_plus_2h(nanos: i64) -> String {
    jiff::Timestamp::from_nanosecond(i128::from(nanos))
        .unwrap()
        .display_with_offset(jiff::tz::Offset::constant(2))
        .to_string()
}

/// What the tests know about each appended record, by LSN - 1.
struct Receipt {
    hash: String,
    recorded_at: i64,
}

/// Appends the seven events of log `shop` and returns their receipts:
///
/// | lsn | id | actor | action | resource | outcome | change |
/// | --- | --- | --- | --- | --- | --- | --- |
/// | 1 | e1 | alice | order.create | order/1 | success | set `{"status":"new","items":[1]}` (attr region=eu, trace t1) |
/// | 2 | e2 | bob | order.update | order/1 | success | merge `{"status":"paid"}` (attr region=us, trace t1) |
/// | 3 | e3 | carol | refund.create | order/2 | denied | set `{"status":"x"}` |
/// | 4 | e4 | alice | order.update | order/1 | success | JSON patch testing status = "new": rejected |
/// | 5 | e5 | dave | login | user/dave | success | none (trace t2) |
/// | 6 | e6 | alice | order.update | order/1 | success | JSON patch removing /items (attr region=eu) |
/// | 7 | e7 | bob | order.delete | order/2 | success | delete |
///
/// 1 to 4 by flags, one `trail append` each (so their recorded times
/// differ), 5 to 7 as JSON lines in one `--file`. `eN` occurred at
/// 2026-01-01 N:00 UTC.
fn append_shop(addr: &str, dir: &Path) -> Result<Vec<Receipt>, Error> {
    let flags: [&[&str]; 4] = [
        &[
            "--event-id",
            "e1",
            "--actor",
            "alice",
            "--action",
            "order.create",
            "--resource",
            "order/1",
            "--attr",
            "region=eu",
            "--trace-id",
            "t1",
            "--set-json",
            r#"{"status":"new","items":[1]}"#,
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
            "--attr",
            "region=us",
            "--trace-id",
            "t1",
            "--merge-patch",
            r#"{"status":"paid"}"#,
        ],
        &[
            "--event-id",
            "e3",
            "--actor",
            "carol",
            "--action",
            "refund.create",
            "--resource",
            "order/2",
            "--outcome",
            "denied",
            "--set-json",
            r#"{"status":"x"}"#,
        ],
        &[
            "--event-id",
            "e4",
            "--actor",
            "alice",
            "--action",
            "order.update",
            "--resource",
            "order/1",
            "--json-patch",
            r#"[{"op":"test","path":"/status","value":"new"},{"op":"replace","path":"/status","value":"shipped"}]"#,
        ],
    ];
    let mut receipts = Vec::new();
    for (index, flags) in flags.iter().enumerate() {
        let hours = occurred(index as i64 + 1);
        let args = [
            &[
                "--json",
                "append",
                "--log",
                LOG,
                "--occurred-at-unix-nanos",
                &hours,
            ][..],
            flags,
        ]
        .concat();
        receipts.extend(json_lines(&ok(addr, &args)?)?);
    }
    let file = dir.join("shop.jsonl");
    std::fs::write(
        &file,
        [
            json!({"event_id": "e5", "actor": "dave", "action": "login", "resource": "user/dave",
                   "trace_id": "t2", "occurred_at_unix_nanos": JAN_1 + 5 * HOUR}),
            json!({"event_id": "e6", "actor": "alice", "action": "order.update", "resource": "order/1",
                   "attributes": {"region": "eu"}, "occurred_at_unix_nanos": JAN_1 + 6 * HOUR,
                   "change": {"json_patch": [{"op": "remove", "path": "/items"}]}}),
            json!({"event_id": "e7", "actor": "bob", "action": "order.delete", "resource": "order/2",
                   "occurred_at_unix_nanos": JAN_1 + 7 * HOUR, "change": {"delete": true}}),
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
            LOG,
            "--file",
            file.to_str().unwrap(),
        ],
    )?)?);
    let lsns: Vec<u64> = receipts
        .iter()
        .map(|receipt| receipt["lsn"].as_u64().unwrap())
        .collect();
    assert_eq!(lsns, [1, 2, 3, 4, 5, 6, 7]);
    Ok(receipts
        .iter()
        .map(|receipt| Receipt {
            hash: receipt["hash"].as_str().unwrap().to_owned(),
            recorded_at: receipt["recorded_at_unix_nanos"].as_i64().unwrap(),
        })
        .collect())
}

/// `trail --json query --log shop --min-lsn 7 ARGS...`: the LSNs of the
/// records, and the footer (the last line).
fn query(addr: &str, args: &[&str]) -> Result<(Vec<u64>, Value), Error> {
    let base = ["--json", "query", "--log", LOG, "--min-lsn", "7"];
    let mut lines = json_lines(&ok(addr, &[&base[..], args].concat())?)?;
    let footer = lines.pop().ok_or("no footer line")?;
    assert!(footer.get("next_cursor").is_some(), "footer {footer}");
    let lsns = lines
        .iter()
        .map(|record| record["lsn"].as_u64().ok_or("a record without lsn"))
        .collect::<Result<_, _>>()?;
    Ok((lsns, footer))
}

fn lsns(addr: &str, args: &[&str]) -> Result<Vec<u64>, Error> {
    Ok(query(addr, args)?.0)
}

/// Every filter, alone and together; exact and prefix text; times by RFC
/// 3339 (with offsets) and relative; direction; cursor pages by hand and
/// with `--all`; the table output (the same lines as `trail read`, the
/// footer on stderr); the read-your-writes wait running out; bad flags.
#[test]
fn query_filters_pages_and_waits() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server = Traild::start(&dir.path().join("data"), &[])?;
    let addr = server.address.clone();
    let receipts = append_shop(&addr, dir.path())?;

    let (all, footer) = query(&addr, &[])?;
    assert_eq!(all, [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(
        footer,
        json!({"records": 7, "index_lsn": 7, "next_cursor": null})
    );
    // JSON records are `trail read --json`'s, byte for byte.
    let queried = ok(
        &addr,
        &[
            "--json",
            "query",
            "--log",
            LOG,
            "--min-lsn",
            "7",
            "--trace-id",
            "t1",
        ],
    )?;
    let read = ok(
        &addr,
        &["--json", "read", "--log", LOG, "--from", "1", "--to", "2"],
    )?;
    assert!(queried.starts_with(&read), "{queried}\nvs\n{read}");

    for (args, expected) in [
        (&["--actor", "alice"][..], &[1, 4, 6][..]),
        (&["--actor", "al*"], &[1, 4, 6]),
        (&["--actor", "al"], &[]),
        (&["--resource", "order/2"], &[3, 7]),
        (&["--resource", "order/*"], &[1, 2, 3, 4, 6, 7]),
        (&["--action", "order.*"], &[1, 2, 4, 6, 7]),
        (&["--action", "order"], &[]),
        (&["--trace-id", "t1"], &[1, 2]),
        (&["--outcome", "denied"], &[3]),
        (&["--outcome", "success"], &[1, 2, 4, 5, 6, 7]),
        (&["--attr", "region=eu"], &[1, 6]),
        (&["--attr", "region=us"], &[2]),
        (&["--attr", "region=eu", "--attr", "tier=gold"], &[]),
        (&["--actor", "alice", "--action", "order.update"], &[4, 6]),
        (&["--resource", "order/*", "--actor", "bob"], &[2, 7]),
        (&["--kind", "event"], &[1, 2, 3, 4, 5, 6, 7]),
        (&["--kind", "compensation"], &[]),
        (&["--desc", "--actor", "alice"], &[6, 4, 1]),
        // The producer's clock: since inclusive, until exclusive;
        // 06:00+01:00 is 05:00Z.
        (
            &[
                "--occurred-since",
                "2026-01-01T03:00:00Z",
                "--occurred-until",
                "2026-01-01T06:00:00+01:00",
            ],
            &[3, 4],
        ),
        (
            &["--occurred-until", "2026-01-01T01:00:00.000000001Z"],
            &[1],
        ),
        // Relative to now: everything was recorded in the last hour.
        (&["--since", "1h"], &[1, 2, 3, 4, 5, 6, 7]),
        (&["--until", "1h"], &[]),
        (&["--since", "7d", "--until", "now"], &[1, 2, 3, 4, 5, 6, 7]),
    ] {
        assert_eq!(lsns(&addr, args)?, expected, "query {args:?}");
    }
    // The server's clock, at the recorded time of lsn 3 exactly.
    let at_3 = rfc3339(receipts[2].recorded_at);
    assert_eq!(lsns(&addr, &["--since", &at_3])?, [3, 4, 5, 6, 7]);
    assert_eq!(lsns(&addr, &["--until", &at_3])?, [1, 2]);
    let at_3_offset = rfc3339_plus_2h(receipts[2].recorded_at);
    assert!(at_3_offset.contains("+02:00"), "{at_3_offset}");
    assert_eq!(lsns(&addr, &["--until", &at_3_offset])?, [1, 2]);
    let at_4 = rfc3339(receipts[3].recorded_at);
    assert_eq!(
        lsns(
            &addr,
            &["--since", &at_3, "--until", &at_4, "--resource", "order/*"]
        )?,
        [3]
    );

    // Pages by hand: the cursor of each page leads to the next.
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut args = vec!["--resource", "order/*", "--limit", "2"];
        if let Some(cursor) = &cursor {
            args.extend(["--cursor", cursor.as_str()]);
        }
        let (page, footer) = query(&addr, &args)?;
        assert!(page.len() <= 2, "{page:?}");
        assert_eq!(footer["index_lsn"], 7);
        assert_eq!(footer["records"], page.len());
        pages.push(page);
        match footer["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
        assert!(pages.len() < 10, "pages never end: {pages:?}");
    }
    assert_eq!(pages[0], [1, 2]);
    assert_eq!(pages.concat(), [1, 2, 3, 4, 6, 7]);
    let (desc, footer) = query(&addr, &["--resource", "order/*", "--limit", "4", "--desc"])?;
    assert_eq!(desc, [7, 6, 4, 3]);
    let next = footer["next_cursor"]
        .as_str()
        .ok_or("no cursor")?
        .to_owned();
    assert_eq!(
        lsns(
            &addr,
            &[
                "--resource",
                "order/*",
                "--limit",
                "4",
                "--desc",
                "--cursor",
                &next
            ]
        )?,
        [2, 1]
    );
    // --all follows the cursors: one footer for the lot.
    let (every, footer) = query(&addr, &["--resource", "order/*", "--limit", "2", "--all"])?;
    assert_eq!(every, [1, 2, 3, 4, 6, 7]);
    assert_eq!(
        footer,
        json!({"records": 6, "index_lsn": 7, "next_cursor": null})
    );
    let (every, _) = query(&addr, &["--limit", "3", "--all", "--desc"])?;
    assert_eq!(every, [7, 6, 5, 4, 3, 2, 1]);

    // The table: `trail read`'s lines; the footer on stderr.
    let table = trail(&[
        "--addr",
        &addr,
        "query",
        "--log",
        LOG,
        "--actor",
        "carol",
        "--min-lsn",
        "7",
    ])?;
    assert!(table.status.success(), "{}", stderr(&table));
    assert_eq!(
        stdout(&table),
        ok(&addr, &["read", "--log", LOG, "--from", "3", "--to", "3"])?
    );
    assert_eq!(stderr(&table), "1 record; index_lsn 7; no further page\n");
    let table = trail(&[
        "--addr",
        &addr,
        "query",
        "--log",
        LOG,
        "--actor",
        "alice",
        "--limit",
        "2",
        "--min-lsn",
        "7",
    ])?;
    assert!(table.status.success(), "{}", stderr(&table));
    assert_eq!(stdout(&table).lines().count(), 2);
    assert!(
        stderr(&table).starts_with("2 records; index_lsn 7; next page: --cursor "),
        "{}",
        stderr(&table)
    );
    let table = trail(&[
        "--addr",
        &addr,
        "query",
        "--log",
        LOG,
        "--actor",
        "nobody",
        "--min-lsn",
        "7",
    ])?;
    assert_eq!(
        (stdout(&table).as_str(), stderr(&table).as_str()),
        ("", "0 records; index_lsn 7; no further page\n")
    );

    // Read your own writes: a wait for an LSN that never comes runs out.
    let waited = trail(&[
        "--addr",
        &addr,
        "query",
        "--log",
        LOG,
        "--min-lsn",
        "100",
        "--timeout-ms",
        "200",
    ])?;
    assert_eq!(waited.status.code(), Some(1), "{}", stderr(&waited));
    assert!(
        stderr(&waited).contains("DeadlineExceeded"),
        "{}",
        stderr(&waited)
    );

    // Bad flags: usage errors (exit 2) naming the flag.
    for (args, flag) in [
        (&["--since", "yesterday"][..], "--since"),
        (&["--until", "2026-12-01T10:00:00"], "--until"),
        (&["--attr", "region"], "--attr"),
        (&["--outcome", "maybe"], "--outcome"),
        (&["--kind", "both"], "--kind"),
        (&["--limit", "0"], "--limit"),
        (&["--timeout-ms", "5"], "--min-lsn"),
    ] {
        let output = trail(&[&["--addr", &addr, "query", "--log", LOG][..], args].concat())?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(flag),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    // Conflicting --attr values: exit 1 before anything is sent.
    let clash = trail(&[
        "--addr", &addr, "query", "--log", LOG, "--attr", "k=1", "--attr", "k=2",
    ])?;
    assert_eq!(clash.status.code(), Some(1));
    assert!(
        stderr(&clash).contains("--attr k=1 and --attr k=2"),
        "{}",
        stderr(&clash)
    );
    drop(server);
    Ok(())
}

/// `trail state` now, at LSNs (a rejected change leaves the state as it
/// was; a delete leaves none), at a time; JSON and table, exactly.
#[test]
fn state_now_at_an_lsn_and_at_a_time() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server = Traild::start(&dir.path().join("data"), &[])?;
    let addr = server.address.clone();
    let receipts = append_shop(&addr, dir.path())?;
    let head_hash = receipts[6].hash.clone();

    let state = |resource: &str, extra: &[&str]| -> Result<Value, Error> {
        let args = [
            &["--json", "state", "--log", LOG, resource, "--min-lsn", "7"][..],
            extra,
        ]
        .concat();
        let mut lines = json_lines(&ok(&addr, &args)?)?;
        assert_eq!(lines.len(), 1, "{lines:?}");
        Ok(lines.remove(0))
    };
    assert_eq!(
        state("order/1", &[])?,
        json!({
            "log": LOG, "resource": "order/1", "at_lsn": null, "at_unix_nanos": null,
            "exists": true, "state": {"status": "paid"}, "last_change_lsn": 6,
            "state_lsn": 7, "state_hash": head_hash,
        })
    );
    for (resource, at_lsn, expected, last_change_lsn) in [
        ("order/1", 1, json!({"status": "new", "items": [1]}), 1),
        ("order/1", 2, json!({"status": "paid", "items": [1]}), 2),
        // lsn 4's patch was rejected: nothing changed.
        ("order/1", 4, json!({"status": "paid", "items": [1]}), 2),
        ("order/1", 6, json!({"status": "paid"}), 6),
        ("order/2", 3, json!({"status": "x"}), 3),
        ("order/2", 6, json!({"status": "x"}), 3),
    ] {
        let at = at_lsn.to_string();
        let answer = state(resource, &["--at-lsn", &at])?;
        assert_eq!(answer["exists"], true, "{resource} at {at}: {answer}");
        assert_eq!(answer["state"], expected, "{resource} at {at}");
        assert_eq!(
            answer["last_change_lsn"], last_change_lsn,
            "{resource} at {at}"
        );
        assert_eq!(answer["at_lsn"], at_lsn);
        assert_eq!(answer["state_lsn"], 7);
        assert_eq!(answer["state_hash"], head_hash.as_str());
    }
    // Deleted, never changed, never set at that point.
    for (resource, extra, last_change_lsn) in [
        ("order/2", &[][..], 7),
        ("user/dave", &[], 0),
        ("order/9", &[], 0),
        ("order/2", &["--at-lsn", "2"], 0),
    ] {
        let answer = state(resource, extra)?;
        assert_eq!(
            (
                &answer["exists"],
                &answer["state"],
                &answer["last_change_lsn"]
            ),
            (&json!(false), &Value::Null, &json!(last_change_lsn)),
            "{resource} {extra:?}"
        );
    }
    // At a time: between lsn 3's and lsn 4's recorded times, lsn 2 set the
    // state of order/1; before the first record there was none.
    let between = (receipts[2].recorded_at + receipts[3].recorded_at) / 2;
    let answer = state("order/1", &["--at", &rfc3339(between)])?;
    assert_eq!(answer["state"], json!({"status": "paid", "items": [1]}));
    assert_eq!(answer["last_change_lsn"], 2);
    assert_eq!(answer["at_unix_nanos"], between);
    let answer = state("order/1", &["--at", "2026-01-01T00:00:00+01:00"])?;
    assert_eq!(answer["exists"], false);
    let answer = state("order/1", &["--at", "now"])?;
    assert_eq!(answer["state"], json!({"status": "paid"}));

    // The table.
    assert_eq!(
        ok(&addr, &["state", "--log", LOG, "order/1", "--min-lsn", "7"])?,
        format!(
            "resource order/1 as of now  last change lsn 6  state_lsn 7  hash {head_hash}\n{{\n  \"status\": \"paid\"\n}}\n"
        )
    );
    assert_eq!(
        ok(&addr, &["state", "--log", LOG, "order/1", "--at-lsn", "1"])?,
        format!(
            "resource order/1 as of lsn 1  last change lsn 1  state_lsn 7  hash {head_hash}\n{{\n  \"items\": [\n    1\n  ],\n  \"status\": \"new\"\n}}\n"
        )
    );
    assert_eq!(
        ok(&addr, &["state", "--log", LOG, "user/dave"])?,
        format!(
            "resource user/dave as of now  never changed  state_lsn 7  hash {head_hash}\nno state (never set, or deleted)\n"
        )
    );
    assert_eq!(
        ok(&addr, &["state", "--log", LOG, "order/2", "--at", &rfc3339(between)])?,
        format!(
            "resource order/2 as of {}  last change lsn 3  state_lsn 7  hash {head_hash}\n{{\n  \"status\": \"x\"\n}}\n",
            rfc3339(between)
        )
    );
    // Usage errors.
    for args in [
        &[
            "state", "--log", LOG, "order/1", "--at-lsn", "1", "--at", "1h",
        ][..],
        &["state", "--log", LOG, "order/1", "--at", "tomorrow"],
        &["state", "--log", LOG],
    ] {
        let output = trail(&[&["--addr", &addr][..], args].concat())?;
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    drop(server);
    Ok(())
}

/// The history row the CLI prints for a change (its format, written out
/// again here).
fn history_row(lsn: u64, recorded_at: i64, actor: &str, action: &str, change: &str) -> String {
    format!(
        "{lsn:>10}  {:<30}  {actor:<16} {action:<16} {:<8}  {change}",
        rfc3339(recorded_at),
        "success"
    )
}

/// `trail history`: field changes with before and after, the whole state
/// as `(state)`, absent values, a rejected change with its reason; pages of
/// two rows joined, `--limit`, `--from`/`--to`; JSON and table, exactly.
#[test]
fn history_shows_each_change_path_by_path() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    // Pages of two rows, so the CLI must follow next_from_lsn.
    let config = dir.path().join("traild.toml");
    std::fs::write(
        &config,
        "[limits]\nquery_page_records_default = 2\nquery_page_records_max = 2\n",
    )?;
    let server = Traild::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    )?;
    let addr = server.address.clone();
    let receipts = append_shop(&addr, dir.path())?;
    let at = |lsn: usize| receipts[lsn - 1].recorded_at;
    let row = |lsn: usize, actor: &str, action: &str, kind: &str, applied: bool, fields: Value| {
        json!({
            "lsn": lsn, "recorded_at_unix_nanos": at(lsn), "recorded_at": rfc3339(at(lsn)),
            "actor": actor, "action": action, "outcome": if lsn == 3 { "denied" } else { "success" },
            "change_kind": kind, "applied": applied,
            "rejected_reason": if applied { Value::Null } else { json!(LSN_4_REJECTED) },
            "fields": fields,
        })
    };

    let history = |resource: &str, extra: &[&str]| -> Result<(Vec<Value>, String), Error> {
        let args = [
            &[
                "--addr",
                &addr,
                "--json",
                "history",
                "--log",
                LOG,
                resource,
                "--min-lsn",
                "7",
            ][..],
            extra,
        ]
        .concat();
        let output = trail(&args)?;
        assert!(output.status.success(), "{extra:?}: {}", stderr(&output));
        Ok((json_lines(&stdout(&output))?, stderr(&output)))
    };
    let (rows, footer) = history("order/1", &[])?;
    assert_eq!(
        rows,
        [
            row(
                1,
                "alice",
                "order.create",
                "set",
                true,
                json!([{"path": "", "after": {"status": "new", "items": [1]}}])
            ),
            row(
                2,
                "bob",
                "order.update",
                "merge_patch",
                true,
                json!([{"path": "/status", "before": "new", "after": "paid"}])
            ),
            row(4, "alice", "order.update", "json_patch", false, json!([])),
            row(
                6,
                "alice",
                "order.update",
                "json_patch",
                true,
                json!([{"path": "/items", "before": [1]}])
            ),
        ]
    );
    assert_eq!(footer, "4 changes; state_lsn 7\n");
    let (rows, _) = history("order/2", &[])?;
    assert_eq!(
        rows,
        [
            row(
                3,
                "carol",
                "refund.create",
                "set",
                true,
                json!([{"path": "", "after": {"status": "x"}}])
            ),
            row(
                7,
                "bob",
                "order.delete",
                "delete",
                true,
                json!([{"path": "", "before": {"status": "x"}}])
            ),
        ]
    );
    let (rows, footer) = history("user/dave", &[])?;
    assert_eq!(
        (rows.len(), footer.as_str()),
        (0, "0 changes; state_lsn 7\n")
    );

    let lsns = |rows: &[Value]| -> Vec<u64> {
        rows.iter()
            .map(|row| row["lsn"].as_u64().unwrap())
            .collect()
    };
    let (rows, footer) = history("order/1", &["--limit", "3"])?;
    assert_eq!(lsns(&rows), [1, 2, 4]);
    assert_eq!(
        footer,
        "3 changes (--limit reached; more from --from 6); state_lsn 7\n"
    );
    let (rows, footer) = history("order/1", &["--limit", "4"])?;
    assert_eq!(
        (lsns(&rows), footer.as_str()),
        (vec![1, 2, 4, 6], "4 changes; state_lsn 7\n")
    );
    let (rows, _) = history("order/1", &["--from", "2", "--to", "4"])?;
    assert_eq!(lsns(&rows), [2, 4]);
    let (rows, _) = history("order/1", &["--from", "3"])?;
    assert_eq!(lsns(&rows), [4, 6]);
    let (rows, _) = history("order/1", &["--to", "5"])?;
    assert_eq!(lsns(&rows), [1, 2, 4]);

    // The table for people.
    let header = format!(
        "{:>10}  {:<30}  {:<16} {:<16} {:<8}  change",
        "lsn", "time", "actor", "action", "outcome"
    );
    let table = trail(&[
        "--addr",
        &addr,
        "history",
        "--log",
        LOG,
        "order/1",
        "--min-lsn",
        "7",
    ])?;
    assert!(table.status.success(), "{}", stderr(&table));
    let expected = [
        header.clone(),
        history_row(1, at(1), "alice", "order.create", "set"),
        r#"            (state): (absent) -> {"items":[1],"status":"new"}"#.to_owned(),
        history_row(2, at(2), "bob", "order.update", "merge_patch"),
        r#"            /status: "new" -> "paid""#.to_owned(),
        history_row(
            4,
            at(4),
            "alice",
            "order.update",
            &format!("json_patch  REJECTED: {LSN_4_REJECTED}"),
        ),
        history_row(6, at(6), "alice", "order.update", "json_patch"),
        "            /items: [1] -> (absent)".to_owned(),
    ];
    assert_eq!(stdout(&table), expected.map(|line| line + "\n").concat());
    assert_eq!(stderr(&table), "4 changes; state_lsn 7\n");
    let table = ok(&addr, &["history", "--log", LOG, "order/2", "--from", "7"])?;
    assert_eq!(
        table,
        format!(
            "{header}\n{}\n            (state): {{\"status\":\"x\"}} -> (absent)\n",
            history_row(7, at(7), "bob", "order.delete", "delete")
        )
    );

    let backwards = trail(&[
        "--addr", &addr, "history", "--log", LOG, "order/1", "--from", "5", "--to", "3",
    ])?;
    assert_eq!(backwards.status.code(), Some(1));
    assert!(
        stderr(&backwards).contains("--from 5 is after --to 3"),
        "{}",
        stderr(&backwards)
    );
    drop(server);
    Ok(())
}

/// `trail head` reports the derived watermarks once they have caught up;
/// `trail snapshot` (table, then JSON after one more event) names the LSN
/// and hash it holds the state as of.
#[test]
fn head_and_snapshot_report_the_derived_state() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server = Traild::start(&dir.path().join("data"), &[])?;
    let addr = server.address.clone();
    let receipts = append_shop(&addr, dir.path())?;
    let hash_7 = receipts[6].hash.clone();
    // Both stores have taken in lsn 7 once these answer.
    query(&addr, &[])?;
    ok(&addr, &["state", "--log", LOG, "order/1", "--min-lsn", "7"])?;

    let head = json_lines(&ok(&addr, &["--json", "head", "--log", LOG])?)?;
    assert_eq!(
        head,
        [json!({
            "log": LOG, "lsn": 7, "hash": hash_7, "damage": null,
            "index_lsn": 7, "index_lag": 0, "state_lsn": 7, "state_lag": 0,
            "derived_error": null,
        })]
    );
    assert_eq!(
        ok(&addr, &["head", "--log", LOG])?,
        format!("log {LOG}  lsn 7  hash {hash_7}  index_lsn 7 (lag 0)  state_lsn 7 (lag 0)\n")
    );

    let table = ok(&addr, &["snapshot", "--log", LOG])?;
    let prefix = format!("snapshot of log {LOG}  lsn 7  hash {hash_7}  file ");
    assert!(
        table.starts_with(&prefix) && table.ends_with(" bytes\n") && table.lines().count() == 1,
        "{table}"
    );
    let eighth = json_lines(&ok(
        &addr,
        &[
            "--json",
            "append",
            "--log",
            LOG,
            "--event-id",
            "e8",
            "--actor",
            "erin",
            "--action",
            "order.create",
            "--resource",
            "order/8",
            "--set-json",
            "{\"n\":8}",
        ],
    )?)?;
    assert_eq!(eighth[0]["lsn"], 8);
    ok(&addr, &["state", "--log", LOG, "order/8", "--min-lsn", "8"])?;
    let snapshot = json_lines(&ok(&addr, &["--json", "snapshot", "--log", LOG])?)?;
    assert_eq!(snapshot.len(), 1);
    let snapshot = &snapshot[0];
    assert_eq!(snapshot["log"], LOG);
    assert_eq!(snapshot["lsn"], 8);
    assert_eq!(snapshot["hash"], eighth[0]["hash"]);
    assert!(!snapshot["file"].as_str().unwrap().is_empty(), "{snapshot}");
    assert!(snapshot["bytes"].as_u64().unwrap() > 0, "{snapshot}");
    assert_ne!(
        Some(snapshot["file"].as_str().unwrap()),
        table
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split("  ").next()),
        "a later snapshot is another file"
    );
    drop(server);
    Ok(())
}

/// `trail tail` with filter flags: from lsn 1 it sends alice's `order/*`
/// records only, then follows the log live with the same filter. Bounded:
/// reads a fixed number of lines, then kills the process.
#[test]
fn tail_with_a_filter_follows_only_matching_records() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let server = Traild::start(&dir.path().join("data"), &[])?;
    let addr = server.address.clone();
    append_shop(&addr, dir.path())?;

    let mut child = Command::new(trail_path())
        .args([
            "--addr",
            &addr,
            "--json",
            "tail",
            "--log",
            LOG,
            "--from",
            "1",
            "--actor",
            "alice",
            "--resource",
            "order/*",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let next_lsn = || -> Result<u64, Error> {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "trail tail printed no line within 30 s")?;
        let record: Value = serde_json::from_str(&line)?;
        assert_eq!(record["event"]["actor"], "alice", "{record}");
        Ok(record["lsn"].as_u64().ok_or("no lsn")?)
    };
    let caught_up = [next_lsn()?, next_lsn()?, next_lsn()?];
    assert_eq!(caught_up, [1, 4, 6]);
    // Live: 8 and 11 match; 9 (bob) and 10 (not order/*) do not.
    for (id, actor, resource) in [
        ("e8", "alice", "order/3"),
        ("e9", "bob", "order/3"),
        ("e10", "alice", "user/alice"),
        ("e11", "alice", "order/4"),
    ] {
        ok(
            &addr,
            &[
                "append",
                "--log",
                LOG,
                "--event-id",
                id,
                "--actor",
                actor,
                "--action",
                "order.touch",
                "--resource",
                resource,
            ],
        )?;
    }
    let live = [next_lsn()?, next_lsn()?];
    child.kill()?;
    child.wait()?;
    assert_eq!(live, [8, 11]);

    // A bad filter flag is a usage error before anything is sent.
    let bad = trail(&["--addr", &addr, "tail", "--log", LOG, "--until", "soon"])?;
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--until"), "{}", stderr(&bad));
    drop(server);
    Ok(())
}

/// `trail index rebuild` refuses a data directory a server has open; on a
/// stopped server's directory it rebuilds the query index and resource
/// state from the log, and the restarted server answers queries, state and
/// history exactly as before.
#[test]
fn index_rebuild_offline_gives_the_same_answers() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap().to_owned();
    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    append_shop(&addr, dir.path())?;
    let asks: [&[&str]; 6] = [
        &[
            "--json",
            "query",
            "--log",
            LOG,
            "--min-lsn",
            "7",
            "--resource",
            "order/*",
        ],
        &[
            "--json",
            "query",
            "--log",
            LOG,
            "--min-lsn",
            "7",
            "--attr",
            "region=eu",
            "--desc",
        ],
        &[
            "--json",
            "query",
            "--log",
            LOG,
            "--min-lsn",
            "7",
            "--limit",
            "3",
            "--all",
        ],
        &["--json", "state", "--log", LOG, "order/1", "--min-lsn", "7"],
        &[
            "--json",
            "state",
            "--log",
            LOG,
            "order/1",
            "--min-lsn",
            "7",
            "--at-lsn",
            "2",
        ],
        &[
            "--json",
            "history",
            "--log",
            LOG,
            "order/1",
            "--min-lsn",
            "7",
        ],
    ];
    let before = asks
        .iter()
        .map(|args| ok(&addr, args))
        .collect::<Result<Vec<_>, _>>()?;

    // The server holds the store's lock.
    let refused = trail(&["index", "rebuild", "--dir", &data_arg, "--log", LOG])?;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains(LOG), "{}", stderr(&refused));

    let status = server.terminate()?;
    assert!(status.success(), "traild exited with {status}");

    let rebuilt = trail(&[
        "--json", "index", "rebuild", "--dir", &data_arg, "--log", LOG,
    ])?;
    assert!(rebuilt.status.success(), "{}", stderr(&rebuilt));
    let report = json_lines(&stdout(&rebuilt))?;
    assert_eq!(report.len(), 1, "{report:?}");
    assert_eq!(
        (
            &report[0]["log"],
            &report[0]["ok"],
            &report[0]["head_lsn"],
            &report[0]["records"]
        ),
        (&json!(LOG), &json!(true), &json!(7), &json!(7))
    );
    assert!(report[0]["seconds"].as_f64().unwrap() >= 0.0);
    // Again, for the table: the same result.
    let table = trail(&["index", "rebuild", "--dir", &data_arg, "--log", LOG])?;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    assert!(
        text.starts_with(&format!(
            "rebuilt the query index and resource state of log {LOG}: 7 records through lsn 7 in "
        )) && text.ends_with(" s\n"),
        "{text}"
    );
    let missing = trail(&["index", "rebuild", "--dir", &data_arg, "--log", "nosuchlog"])?;
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
    let bad_name = trail(&["index", "rebuild", "--dir", &data_arg, "--log", "../x"])?;
    assert_eq!(bad_name.status.code(), Some(1));
    assert!(stderr(&bad_name).contains("--log"), "{}", stderr(&bad_name));

    let server = Traild::start(&data, &[])?;
    let addr = server.address.clone();
    for (args, before) in asks.iter().zip(&before) {
        assert_eq!(&ok(&addr, args)?, before, "{args:?} after the rebuild");
    }
    let head = json_lines(&ok(&addr, &["--json", "head", "--log", LOG])?)?;
    assert_eq!(
        (&head[0]["index_lsn"], &head[0]["state_lsn"]),
        (&json!(7), &json!(7))
    );
    drop(server);
    Ok(())
}

//! One resource with 10,000 changes: the state at its first, middle and last
//! change (and around checkpoints) equals a plain replay. Speed is measured
//! by `benches/state.rs`, not here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{input, merge, patch, set, wm};
use serde_json::Value;
use trail_state::{ChangeInput, StateStore};

const N: u64 = 10_000;

fn change(i: u64) -> ChangeInput {
    match i % 50 {
        0 => set(&format!(r#"{{"status":"open","version":{i},"lines":[]}}"#)),
        1..=9 => patch(&format!(
            r#"[{{"op":"add","path":"/lines/-","value":{{"sku":"s{i}","qty":{}}}}}]"#,
            i % 7
        )),
        10 => patch(r#"[{"op":"remove","path":"/nope"}]"#), // rejected
        _ => merge(&format!(
            r#"{{"version":{i},"status":"s{}","note":{}}}"#,
            i % 5,
            if i.is_multiple_of(3) {
                "null".to_owned()
            } else {
                format!("\"n{i}\"")
            }
        )),
    }
}

#[test]
fn state_at_any_depth_equals_a_plain_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let store = StateStore::open(tmp.path().join("s")).unwrap();
    let all: Vec<_> = (1..=N)
        .map(|l| input(l, l as i64, "order/deep", change(l - 1)))
        .collect();
    for chunk in all.chunks(1000) {
        store.apply(chunk, wm(chunk.last().unwrap().lsn)).unwrap();
    }

    // The model: apply every change with json_patch directly.
    let mut states: Vec<Option<Value>> = vec![None]; // states[lsn]
    let mut state: Option<Value> = None;
    for i in &all {
        let next = match i.change.as_ref().expect("every input has a change") {
            ChangeInput::Set(t) => Some(serde_json::from_str(t).unwrap()),
            ChangeInput::MergePatch(t) => {
                let mut d = state.clone().unwrap_or(Value::Null);
                json_patch::merge(&mut d, &serde_json::from_str(t).unwrap());
                Some(d)
            }
            ChangeInput::JsonPatch(t) => {
                let mut d = state.clone().unwrap_or(Value::Null);
                match json_patch::patch_unsafe(
                    &mut d,
                    &serde_json::from_str::<json_patch::Patch>(t).unwrap(),
                ) {
                    Ok(()) => Some(d),
                    Err(_) => state.clone(),
                }
            }
            ChangeInput::Delete => None,
            other => panic!("not generated here: {other:?}"),
        };
        state = next;
        states.push(state.clone());
    }

    let mut probes = vec![1, 2, N / 2, N - 1, N];
    probes.extend([63, 64, 65, 127, 128, 129, 5_000 - 64, 9_983, 9_984, 9_985]);
    for n in probes {
        let got = store.state("order/deep", Some(n)).unwrap();
        assert_eq!(got.state, states[n as usize], "state at lsn {n}");
    }
    assert_eq!(
        store.state("order/deep", None).unwrap().state,
        states[N as usize]
    );
    assert_eq!(
        store
            .state_at_time("order/deep", (N / 2) as i64)
            .unwrap()
            .state,
        states[(N / 2) as usize]
    );
    let stats = store.stats().unwrap();
    assert_eq!((stats.resources, stats.history_entries), (1, N));
    assert!(stats.size_on_disk_bytes > 0);
}

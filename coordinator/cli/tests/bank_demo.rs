//! The README's first command, short: `decree demo` against real `decree start` processes with
//! faults (TESTING.md, "The bank check"). Every audit must be valid, enough cross-group
//! transfers must commit, the coordinator leader's node must be killed and survived, and the
//! history must pass `check_history`: every `ok` read sums to the total.

use std::io::BufReader;
use std::process::Command;

use decree_client::bank::check_history;

#[test]
fn a_short_demo_with_a_coordinator_leader_kill_keeps_every_audit_valid() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("decree-demo-test-{}-{nanos}", std::process::id()));
    // Phase 1: a 30-second run with three faults, which cycle through all three kinds
    // (participant leader kill, coordinator leader kill, leader pause), on the layout the
    // README's command runs: every group on every node, so killing the coordinator leader's
    // node may also kill participant leaders.
    let out = Command::new(env!("CARGO_BIN_EXE_decree"))
        .args(["demo", "--duration", "30", "--faults", "3", "--clients", "6", "--accounts", "6"])
        .args(["--seed", "2", "--json", "--quiet", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout}"));

    // Phase 2: the bank check held, and the run did real work.
    assert_eq!(report["audits_invalid"], 0, "{report}");
    assert!(report["audits_valid"].as_u64().unwrap() >= 10, "{report}");
    assert!(report["transfers_cross_group"].as_u64().unwrap() >= 100, "{report}");

    // Phase 3: the coordinator leader's node was killed, and every group was led again.
    let faults = report["faults"].as_array().unwrap();
    let coordinator_kills: Vec<&serde_json::Value> =
        faults.iter().filter(|f| f["kind"] == "kill-coordinator-leader").collect();
    assert!(!coordinator_kills.is_empty(), "no coordinator leader kill: {report}");
    for f in &coordinator_kills {
        assert!(f["all_led_after_ms"].is_u64(), "no leader again after {f}");
    }

    // Phase 4: the history: every ok read sums to the total; ok transfers match the report.
    let path = report["history"]["path"].as_str().unwrap();
    let file = std::fs::File::open(path).unwrap();
    let total = report["total"].as_i64().unwrap();
    let summary = check_history(BufReader::new(file), total).unwrap();
    assert!(summary.invalid_reads.is_empty(), "invalid reads {:?}", summary.invalid_reads);
    assert!(summary.reads_ok >= 10, "{summary:?}");
    assert_eq!(summary.transfers[0], report["transfers_ok"].as_u64().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

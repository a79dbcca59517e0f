//! Golden interaction tests in the style of etcd-io/raft's `testdata/*.txt`.
//!
//! A script is a sequence of blocks:
//!
//! ```text
//! # comments and blank lines are kept
//! command arg arg
//! ----
//! expected output (no blank lines; "ok" when there is none)
//! ```
//!
//! `DECREE_BLESS=1 cargo test -p decree-raft golden` rewrites the expected outputs.
//!
//! Commands (times in milliseconds, node ids are numbers):
//! `add-nodes N [pre_vote=B] [check_quorum=B] [max_append_bytes=N] [max_inflight=N]
//! [snapshot_chunk_bytes=N]`, `campaign ID`, `fire ID` (jump to ID's next deadline and tick
//! it), `advance MS` (the clock moves; nobody ticks), `tick ID..`, `run MS` (time passes in 10 ms steps,
//! ticking and stabilizing silently), `stabilize [ID..]`, `process-ready ID..`,
//! `deliver-msgs ID..`, `drop-msgs [ID..]`, `propose ID DATA`, `read-index ID CTX`,
//! `transfer-leadership FROM TO`, `isolate ID`, `cut A B`, `heal`, `crash ID`, `restart ID`,
//! `snapshot ID`, `status`, `log ID`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use decree_types::NodeId;

use super::harness::{render_msg, test_config, Cluster, MS};

fn run_file(name: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let bless = std::env::var_os("DECREE_BLESS").is_some();
    let mut cluster: Option<Cluster> = None;
    let mut rewritten = String::new();
    let mut failures = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() || line.starts_with('#') {
            rewritten.push_str(line);
            rewritten.push('\n');
            i += 1;
            continue;
        }
        let command = line;
        let line_no = i + 1;
        i += 1;
        assert!(
            i < lines.len() && lines[i] == "----",
            "{name}:{line_no}: expected ---- after command"
        );
        i += 1;
        let mut expected = String::new();
        while i < lines.len() && !lines[i].trim().is_empty() {
            expected.push_str(lines[i]);
            expected.push('\n');
            i += 1;
        }
        let mut actual = run_command(&mut cluster, command);
        if actual.is_empty() {
            actual = "ok\n".to_string();
        }
        if actual != expected {
            failures.push(format!(
                "{name}:{line_no}: {command}\n--- expected\n{expected}--- actual\n{actual}"
            ));
        }
        rewritten.push_str(command);
        rewritten.push_str("\n----\n");
        rewritten.push_str(&actual);
    }
    if bless {
        std::fs::write(&path, rewritten).expect("rewrite golden file");
    } else if !failures.is_empty() {
        panic!(
            "{} block(s) differ (DECREE_BLESS=1 to rewrite):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
}

fn ids(args: &[&str]) -> Option<BTreeSet<NodeId>> {
    if args.is_empty() {
        None
    } else {
        Some(args.iter().map(|a| NodeId(a.parse().expect("node id"))).collect())
    }
}

fn run_command(cluster: &mut Option<Cluster>, command: &str) -> String {
    let words: Vec<&str> = command.split_whitespace().collect();
    let (cmd, args) = (words[0], &words[1..]);
    let id = |k: usize| NodeId(args[k].parse().expect("node id"));
    if cmd == "add-nodes" {
        let mut config = test_config();
        for kv in &args[1..] {
            let (k, v) = kv.split_once('=').expect("key=value");
            match k {
                "pre_vote" => config.pre_vote = v.parse().expect("bool"),
                "check_quorum" => config.check_quorum = v.parse().expect("bool"),
                "max_append_bytes" => config.max_append_bytes = v.parse().expect("number"),
                "max_inflight" => config.max_inflight_appends = v.parse().expect("number"),
                "snapshot_chunk_bytes" => config.snapshot_chunk_bytes = v.parse().expect("number"),
                _ => panic!("unknown option {k}"),
            }
        }
        *cluster = Some(Cluster::new(args[0].parse().expect("count"), config));
        return String::new();
    }
    let c = cluster.as_mut().expect("add-nodes first");
    let now = c.now_ns;
    let mut out = String::new();
    match cmd {
        "campaign" => c.nodes.get_mut(&id(0)).expect("node").core_mut().campaign(now),
        "fire" => c.fire(id(0)),
        "advance" => c.now_ns += args[0].parse::<u64>().expect("ms") * MS,
        "tick" => {
            for id in ids(args).expect("ids") {
                c.nodes.get_mut(&id).expect("node").core_mut().tick(now);
            }
        }
        "run" => c.run_for(args[0].parse().expect("ms")),
        "stabilize" => out = c.stabilize(ids(args).as_ref()),
        "process-ready" => {
            for id in ids(args).expect("ids") {
                if c.nodes[&id].core.as_ref().is_some_and(|core| core.has_ready()) {
                    let _ = writeln!(out, "> {} ready", id.0);
                    out.push_str(&c.process_ready(id));
                }
            }
        }
        "deliver-msgs" => {
            c.trace_delivery = true;
            out = c.deliver_all(ids(args).as_ref());
            c.trace_delivery = false;
        }
        "drop-msgs" => {
            let to = ids(args);
            let (dropped, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut c.net)
                .into_iter()
                .partition(|m| to.as_ref().is_none_or(|s| s.contains(&m.to)));
            c.net = kept;
            for m in dropped {
                let _ = writeln!(out, "  dropped: {}->{} {}", m.from.0, m.to.0, render_msg(&m.msg));
            }
        }
        "propose" => {
            let data = args[1..].join(" ").into_bytes();
            match c.nodes.get_mut(&id(0)).expect("node").core_mut().propose(now, data) {
                Ok(index) => out = format!("index {}\n", index.0),
                Err(e) => out = format!("error: {e}\n"),
            }
        }
        "read-index" => {
            let ctx = args[1].parse().expect("ctx");
            if let Err(e) = c.nodes.get_mut(&id(0)).expect("node").core_mut().read_index(now, ctx) {
                out = format!("error: {e}\n");
            }
        }
        "transfer-leadership" => {
            let to = id(1);
            if let Err(e) =
                c.nodes.get_mut(&id(0)).expect("node").core_mut().transfer_leadership(now, to)
            {
                out = format!("error: {e}\n");
            }
        }
        "isolate" => c.isolate(id(0)),
        "cut" => {
            c.cut.insert((id(0), id(1)));
            c.cut.insert((id(1), id(0)));
        }
        "heal" => c.heal(),
        "crash" => c.crash(id(0)),
        "restart" => c.restart(id(0)),
        "snapshot" => match c.snapshot(id(0)) {
            Ok(meta) => out = format!("snapshot at {}/{}\n", meta.last_term.0, meta.last_index.0),
            Err(e) => out = format!("error: {e}\n"),
        },
        "status" => out = c.render_state(),
        "log" => out = c.render_log(id(0)),
        _ => panic!("unknown command {cmd}"),
    }
    out
}

macro_rules! golden {
    ($($test:ident => $file:literal,)*) => {$(
        #[test]
        fn $test() {
            run_file($file);
        }
    )*};
}

golden! {
    golden_election => "election.txt",
    golden_prevote_partition => "prevote_partition.txt",
    golden_log_backtracking => "log_backtracking.txt",
    golden_figure8_commit_rule => "figure8.txt",
    golden_read_index => "read_index.txt",
    golden_transfer_leadership => "transfer_leadership.txt",
    golden_snapshot_install => "snapshot_install.txt",
    golden_restart => "restart.txt",
    golden_check_quorum => "check_quorum.txt",
    golden_pipeline => "pipeline.txt",
}

//! The live progress line and the final report of a bank run (`decree bank`, `decree demo`).

use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use decree_client::bank::check_history;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use super::workload::{Stats, Workload};

/// One injected fault and how the cluster recovered from it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// Seconds since the run started when it was injected.
    pub at_s: f64,
    /// What was done, e.g. "SIGKILL n2 (leader of coordinator group 100)".
    pub what: String,
    /// Which kind: `kill-participant-leader`, `kill-coordinator-leader`, `pause-leader`.
    pub kind: &'static str,
    /// How long the node was down or paused, in milliseconds.
    pub down_ms: u64,
    /// Milliseconds from injection until every group had a leader again (observed).
    pub all_led_after_ms: Option<u64>,
    /// Milliseconds from injection until no in-doubt transaction was left.
    pub in_doubt_clear_after_ms: Option<u64>,
}

/// The live line of a bank run: a spinner, and a task that refreshes its text from `stats`
/// every second (abort it when the run ends).
pub fn live_line(hidden: bool, stats: &Arc<Stats>) -> (ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = progress(hidden);
    let (shown, stats) = (bar.clone(), Arc::clone(stats));
    let ticker = tokio::spawn(async move {
        let mut last = (0, 0.0);
        loop {
            shown.set_message(progress_message(&stats, &mut last));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    (bar, ticker)
}

/// A spinner showing the run as it goes.
fn progress(hidden: bool) -> ProgressBar {
    let bar = if hidden { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    // Invariant: the template is a constant that parses.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The text of the live line.
fn progress_message(stats: &Stats, last_ok: &mut (u64, f64)) -> String {
    let ok = stats.transfers_ok.load(Ordering::Relaxed);
    let now = stats.elapsed().as_secs_f64();
    let rate =
        if now > last_ok.1 { (ok - last_ok.0.min(ok)) as f64 / (now - last_ok.1) } else { 0.0 };
    *last_ok = (ok, now);
    format!(
        "transfers {ok} ({rate:.0}/s)  audits {} valid{}  faults {}  in-doubt now {}  unknown {}",
        stats.audits_valid.load(Ordering::Relaxed),
        match stats.audits_invalid.load(Ordering::Relaxed) {
            0 => String::new(),
            n => format!(", {n} INVALID"),
        },
        stats.faults.load(Ordering::Relaxed),
        stats.in_doubt_now.load(Ordering::Relaxed),
        stats.transfers_unknown.load(Ordering::Relaxed),
    )
}

/// Everything the report says, for `--json` and for the text.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Seconds the transfers ran.
    pub seconds: f64,
    /// Accounts and the total they must sum to.
    pub accounts: usize,
    /// The total.
    pub total: i64,
    /// Transfers committed with writes.
    pub transfers_ok: u64,
    /// Of those, between two groups (2PC).
    pub transfers_cross_group: u64,
    /// Declined for insufficient funds (committed, no writes).
    pub transfers_declined: u64,
    /// Certainly not applied because of an error.
    pub transfers_failed: u64,
    /// Outcome unknown.
    pub transfers_unknown: u64,
    /// Ambiguous commits the client library resolved (committed or aborted) by asking.
    pub ambiguous_resolved: u64,
    /// Committed transfers per second.
    pub transfers_per_s: f64,
    /// Latency of committed transfers, ms.
    pub p50_ms: f64,
    /// Latency of committed transfers, ms.
    pub p99_ms: f64,
    /// Audits that were valid.
    pub audits_valid: u64,
    /// Audits that were not.
    pub audits_invalid: u64,
    /// Audits that could not read.
    pub audits_failed: u64,
    /// Errors by kind.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Faults and recoveries.
    pub faults: Vec<FaultRecord>,
    /// The history file and what checking it found.
    pub history: Option<serde_json::Value>,
    /// Every audit: (seconds, valid, description).
    pub audit_log: Vec<(f64, bool, String)>,
}

impl Report {
    /// Collects the report of a finished workload.
    pub fn new(
        w: &Workload,
        seconds: f64,
        ambiguous_resolved: u64,
        faults: Vec<FaultRecord>,
    ) -> Report {
        let s = &w.stats;
        let ok = s.transfers_ok.load(Ordering::Relaxed);
        let history = w.history.as_deref().map(|path| check(path, w.bank.total()));
        Report {
            seconds,
            accounts: w.bank.accounts().len(),
            total: w.bank.total(),
            transfers_ok: ok,
            transfers_cross_group: s.transfers_cross_group.load(Ordering::Relaxed),
            transfers_declined: s.transfers_declined.load(Ordering::Relaxed),
            transfers_failed: s.transfers_failed.load(Ordering::Relaxed),
            transfers_unknown: s.transfers_unknown.load(Ordering::Relaxed),
            ambiguous_resolved,
            transfers_per_s: if seconds > 0.0 { ok as f64 / seconds } else { 0.0 },
            p50_ms: s.latency_ms(0.50),
            p99_ms: s.latency_ms(0.99),
            audits_valid: s.audits_valid.load(Ordering::Relaxed),
            audits_invalid: s.audits_invalid.load(Ordering::Relaxed),
            audits_failed: s.audits_failed.load(Ordering::Relaxed),
            errors: s.errors(),
            faults,
            history,
            audit_log: s.audits(),
        }
    }

    /// Did every audit (and the history check) pass, with at least one audit?
    pub fn consistent(&self) -> bool {
        let history_ok = self.history.as_ref().is_none_or(|h| h["invalid_reads"] == json!(0));
        self.audits_invalid == 0 && self.audits_valid > 0 && history_ok
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let line = |out: &mut String, s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(
            &mut out,
            format!(
                "== bank run: {:.1} s, {} accounts, total {}",
                self.seconds, self.accounts, self.total
            ),
        );
        line(
            &mut out,
            format!(
                "transfers  ok {} ({} cross-group, {:.0}/s)  declined {}  failed {}  unknown {}  \
                 (ambiguous outcomes resolved by the library: {})",
                self.transfers_ok,
                self.transfers_cross_group,
                self.transfers_per_s,
                self.transfers_declined,
                self.transfers_failed,
                self.transfers_unknown,
                self.ambiguous_resolved
            ),
        );
        line(
            &mut out,
            format!(
                "latency    p50 {:.2} ms  p99 {:.2} ms (committed transfers)",
                self.p50_ms, self.p99_ms
            ),
        );
        line(
            &mut out,
            format!(
                "audits     {} valid, {} INVALID, {} could not read",
                self.audits_valid, self.audits_invalid, self.audits_failed
            ),
        );
        for (at, valid, what) in self.audit_log.iter().filter(|a| !a.1) {
            line(&mut out, format!("  INVALID audit at {at:.1} s: {what} (valid: {valid})"));
        }
        if !self.errors.is_empty() {
            let errors: Vec<String> = self.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            line(&mut out, format!("errors     {}", errors.join(", ")));
        }
        if !self.faults.is_empty() {
            line(&mut out, "faults".to_string());
            let ms =
                |v: Option<u64>| v.map_or_else(|| "not observed".into(), |v| format!("{v} ms"));
            for f in &self.faults {
                line(
                    &mut out,
                    format!(
                        "  {:>5.1} s  {:<52} down {:>5} ms  all groups led after {}, in-doubt clear after {}",
                        f.at_s,
                        f.what,
                        f.down_ms,
                        ms(f.all_led_after_ms),
                        ms(f.in_doubt_clear_after_ms)
                    ),
                );
            }
        }
        if let Some(h) = &self.history {
            line(&mut out, format!("history    {}", h["path"].as_str().unwrap_or("?")));
            line(
                &mut out,
                format!(
                    "           {} ok reads checked, {} invalid; transfers ok/fail/info {}",
                    h["reads_ok"], h["invalid_reads"], h["transfers"]
                ),
            );
        }
        line(
            &mut out,
            if self.consistent() {
                "verdict    CONSISTENT: every audit summed to the total with no negative balance"
                    .into()
            } else {
                "verdict    INCONSISTENT".into()
            },
        );
        out
    }
}

/// Checks a written history with `check_history`.
fn check(path: &Path, total: i64) -> serde_json::Value {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return json!({"path": path.display().to_string(), "error": e.to_string(), "invalid_reads": -1})
        }
    };
    match check_history(BufReader::new(file), total) {
        Ok(s) => json!({
            "path": path.display().to_string(),
            "reads_ok": s.reads_ok,
            "invalid_reads": s.invalid_reads.len(),
            "transfers": s.transfers,
        }),
        Err(e) => {
            json!({"path": path.display().to_string(), "error": e.to_string(), "invalid_reads": -1})
        }
    }
}

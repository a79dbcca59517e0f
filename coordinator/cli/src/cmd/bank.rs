//! `decree bank`: the bank workload (the demo's, without the faults) against a running
//! cluster — e.g. the local one, while you kill nodes by hand, or for the benchmark.
//!
//! It resets the accounts to the initial balance first, so run only one at a time per
//! cluster.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::client_opts::{runtime, ClusterArgs, CmdError};
use super::report::{live_line, Report};
use super::workload::{bank_for, point_reads, Workload, WorkloadConfig};

/// Run the bank workload against a running cluster.
#[derive(Debug, Args)]
pub struct BankArgs {
    /// Seconds of transfers.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Accounts in each participant group.
    #[arg(long, default_value_t = 10)]
    pub accounts: usize,
    /// Concurrent transfer clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Seed of the transfer choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only transfers inside one group (1PC).
    #[arg(long, conflicts_with = "cross_group")]
    pub same_group: bool,
    /// Only transfers between two groups (2PC).
    #[arg(long)]
    pub cross_group: bool,
    /// Instead of transfers: snapshot point reads of random accounts from this many readers
    /// (the benchmark's read figure).
    #[arg(long, value_name = "READERS")]
    pub point_reads: Option<usize>,
    /// Milliseconds between audits.
    #[arg(long, default_value_t = 250)]
    pub audit_every_ms: u64,
    /// Write every operation to FILE (JSON Lines, Jepsen's history form).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// No live line.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs `decree bank`.
pub fn run(args: BankArgs) -> Result<(), CmdError> {
    runtime()?.block_on(async {
        let client = args.cluster.connect().await?;
        let config = args.cluster.config()?;
        let Some(file) = config.cluster else {
            return Err(CmdError::Usage("decree bank needs a cluster file (--cluster)".into()));
        };
        let bank = bank_for(&file, args.accounts, 1_000);
        Workload::init(&client, &bank).await?;
        if let Some(readers) = args.point_reads {
            let duration = Duration::from_secs(args.duration);
            let (ok, failed, h) = point_reads(&client, &bank, readers, duration, args.seed).await;
            client.close().await;
            let per_s = ok as f64 / duration.as_secs_f64().max(0.001);
            let (p50, p99) = (
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
            );
            if args.cluster.json {
                println!(
                    "{}",
                    serde_json::json!({"readers": readers, "reads_ok": ok, "reads_failed": failed,
                        "reads_per_s": per_s, "p50_ms": p50, "p99_ms": p99})
                );
            } else {
                println!(
                    "point reads: {readers} readers, {ok} ok ({per_s:.0}/s), {failed} failed, \
                     p50 {p50:.2} ms, p99 {p99:.2} ms"
                );
            }
            return Ok(());
        }
        let config = WorkloadConfig {
            clients: args.clients,
            duration: Duration::from_secs(args.duration),
            audit_every: Duration::from_millis(args.audit_every_ms.max(1)),
            max_amount: 50,
            seed: args.seed,
            history: args.history.clone(),
            same_group_only: args.same_group,
            cross_group_only: args.cross_group,
        };
        let stats = Workload::new_stats();
        let (bar, ticker) = live_line(args.quiet || args.cluster.json, &stats);
        let workload = Workload::run(client.clone(), bank, config, Arc::clone(&stats)).await?;
        ticker.abort();
        bar.finish_and_clear();
        client.close().await;
        let report =
            Report::new(&workload, args.duration as f64, client.ambiguous_resolved(), Vec::new());
        if args.cluster.json {
            let text = serde_json::to_string(&report).map_err(|e| CmdError::Io(e.to_string()))?;
            println!("{text}");
        } else {
            print!("{}", report.render());
        }
        if report.consistent() {
            Ok(())
        } else {
            Err(CmdError::Failed(format!(
                "the bank check failed: {} invalid audit(s)",
                report.audits_invalid
            )))
        }
    })
}

//! The `decree` command-line tool.
//!
//! Each subcommand is a variant of [`Command`] with its own argument struct in
//! `src/cmd/<name>.rs` and a `run` function returning a [`CliError`]; `main` only parses,
//! dispatches and turns errors into one line on stderr and a non-zero exit status.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// decree: a distributed transactional key-value store.
#[derive(Debug, Parser)]
#[command(name = "decree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a server node: host the groups `cluster.toml` places on it and serve them over QUIC.
    Start(cmd::start::StartArgs),
    /// Generate a cluster CA and node and client certificates (PEM) into a directory.
    Certs(cmd::certs::CertsArgs),
    /// Read one key at a fresh snapshot.
    Get(cmd::get::GetArgs),
    /// Write one key.
    Put(cmd::put::PutArgs),
    /// Run several operations in one transaction: `decree txn put a 1 put b 2 get c`.
    Txn(cmd::txn::TxnArgs),
    /// Show whether a (cross-group) transaction committed, from its coordinator group.
    TxnStatus(cmd::txn_status::TxnStatusArgs),
    /// Show every group (leader, term, commit/applied index) and every in-doubt transaction.
    Status(cmd::status::StatusArgs),
    /// Run the bank workload (transfers and audits) against a running cluster.
    Bank(cmd::bank::BankArgs),
    /// The bank demo: a local cluster of real processes, transfers and audits, with faults.
    Demo(cmd::demo::DemoArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(args) => cmd::start::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::Get(args) => cmd::get::run(args).map_err(Into::into),
        Command::Put(args) => cmd::put::run(args).map_err(Into::into),
        Command::Txn(args) => cmd::txn::run(args).map_err(Into::into),
        Command::TxnStatus(args) => cmd::txn_status::run(args).map_err(Into::into),
        Command::Status(args) => cmd::status::run(args).map_err(Into::into),
        Command::Bank(args) => cmd::bank::run(args).map_err(Into::into),
        Command::Demo(args) => cmd::demo::run(args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree: error: {e}");
            ExitCode::FAILURE
        }
    }
}

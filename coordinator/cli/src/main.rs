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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Start(args) => cmd::start::run(args),
        Command::Certs(args) => cmd::certs::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree: error: {e}");
            ExitCode::FAILURE
        }
    }
}

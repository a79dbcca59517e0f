//! The `decree` command-line tool.
//!
//! Each subcommand is a variant of [`Command`] with its own argument struct and a `run_*`
//! function returning a [`CliError`]; `main` only parses, dispatches and turns errors into a
//! message and exit status. New subcommands (demo, bank, get/put/txn, status) slot in the same
//! way.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use decree_runtime::certs::{self, CertError};
use decree_types::NodeId;

/// decree: a distributed transactional key-value store.
#[derive(Debug, Parser)]
#[command(name = "decree", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a cluster CA and node and client certificates (PEM) into a directory.
    Certs(CertsArgs),
}

#[derive(Debug, Args)]
struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Node ids to issue certificates for, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "IDS", required = true)]
    nodes: Vec<u64>,
    /// Client names to issue certificates for, comma separated (a-z, 0-9, '-').
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    clients: Vec<String>,
    /// Extra host names or IP addresses added to every node certificate, comma separated
    /// (`localhost`, `127.0.0.1` and `node-<id>` are always included).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    hosts: Vec<String>,
    /// Replace an existing CA (every certificate it signed stops being trusted).
    #[arg(long)]
    force: bool,
}

/// A failed command: the message printed to the user.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Certs(#[from] CertError),
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Certs(args) => run_certs(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("decree: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_certs(args: CertsArgs) -> Result<(), CliError> {
    let mut nodes: Vec<NodeId> = args.nodes.iter().copied().map(NodeId).collect();
    nodes.sort();
    let before = nodes.len();
    nodes.dedup();
    if nodes.len() != before {
        return Err(CliError::Usage("--nodes lists a node id twice".into()));
    }
    let mut clients = args.clients.clone();
    clients.sort();
    clients.dedup();
    let written = certs::write_dir(&args.out, &nodes, &clients, &args.hosts, args.force)?;
    println!("wrote {} files to {}:", written.paths.len(), args.out.display());
    for path in &written.paths {
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        let what = describe(&name);
        println!("  {name:<24} {what}");
    }
    // Certificates left over from a replaced CA are no longer trusted; say which.
    let mut stale: Vec<String> = std::fs::read_dir(&args.out)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension().is_some_and(|e| e == "pem") && !written.paths.contains(path)
        })
        .map(|path| path.display().to_string())
        .collect();
    stale.sort();
    for path in stale {
        println!("note: {path} was signed by the replaced CA and is no longer trusted");
    }
    println!("keep ca.key offline: whoever holds it can join the cluster.");
    Ok(())
}

/// A human description of a file written by `certs`.
fn describe(file: &str) -> &'static str {
    match file {
        certs::CA_CERT_FILE => "cluster CA certificate (every process trusts it)",
        certs::CA_KEY_FILE => "cluster CA private key (mode 0600)",
        f if f.ends_with(".key") => "private key (mode 0600)",
        f if f.starts_with("node-") => "node certificate",
        _ => "client certificate",
    }
}

//! `decree certs`: a cluster CA and node and client certificates (PEM) in a directory.

use std::path::PathBuf;

use clap::Args;
use decree_runtime::certs;
use decree_types::NodeId;

use super::CliError;

/// Arguments of `decree certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Node ids to issue certificates for, comma separated.
    #[arg(long, value_delimiter = ',', value_name = "IDS", required = true)]
    pub nodes: Vec<u64>,
    /// Client names to issue certificates for, comma separated (a-z, 0-9, '-').
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub clients: Vec<String>,
    /// Extra host names or IP addresses added to every node certificate, comma separated
    /// (`localhost`, `127.0.0.1` and `node-<id>` are always included).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub hosts: Vec<String>,
    /// Replace an existing CA (every certificate it signed stops being trusted).
    #[arg(long)]
    pub force: bool,
}

/// `decree certs`.
pub fn run(args: CertsArgs) -> Result<(), CliError> {
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

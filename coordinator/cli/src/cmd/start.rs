//! `decree start`: run a server node until SIGTERM or ctrl-c.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use decree_server::ServerConfig;

use super::CliError;

/// Arguments of `decree start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The node's configuration file (`node.toml`; it names the shared `cluster.toml`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// UDP address to listen on for QUIC, instead of the file's `listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Data directory, instead of the file's `data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// `decree start`: exit status 0 after SIGTERM/ctrl-c; an error (bad configuration, a data
/// directory another process holds, missing certificates, a fatal disk error) otherwise.
pub fn run(args: StartArgs) -> Result<(), CliError> {
    let mut config = ServerConfig::load(&args.config)?;
    if let Some(listen) = args.listen {
        config.node.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        config.node.data_dir = dir;
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(decree_server::run(config, decree_server::shutdown_signal()));
    // Do not wait for stray tasks (e.g. a handler blocked on a dead shell) at exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    Ok(result?)
}

//! One module per subcommand.

pub mod bank;
pub mod certs;
pub mod client_opts;
pub mod demo;
pub mod get;
pub mod local;
pub mod probe;
pub mod put;
pub mod report;
pub mod start;
pub mod status;
pub mod txn;
pub mod txn_status;
pub mod workload;

/// A failed command: the message printed to the user (one line).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Certificates could not be written.
    #[error(transparent)]
    Certs(#[from] decree_runtime::certs::CertError),
    /// The configuration could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] decree_server::ConfigError),
    /// The server could not start or stopped on an error.
    #[error(transparent)]
    Server(#[from] decree_server::ServerError),
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// A client command (get, put, txn, status, bank, demo, ...) failed.
    #[error(transparent)]
    Client(#[from] client_opts::CmdError),
}

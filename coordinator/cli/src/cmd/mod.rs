//! One module per subcommand.

pub mod certs;
pub mod start;

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
}

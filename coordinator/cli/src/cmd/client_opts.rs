//! What every client command shares: where the cluster is (`--cluster cluster.toml`), which
//! certificates to present (`--certs DIR`, `--client NAME`), how long to keep trying, and how
//! to print (`--json`). Also the one error type the client commands return, so `main` prints
//! a failure as one line and exits non-zero — never a backtrace.
//!
//! Defaults point at the local cluster `scripts/local-cluster.sh` runs: the directory
//! `$DECREE_CLUSTER_DIR`, else `/tmp/decree-local-cluster`, holding `cluster.toml` and
//! `certs/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use decree_client::{Client, ClientConfig, ConfigError, Error};

/// The directory of the local cluster when `$DECREE_CLUSTER_DIR` is not set.
pub const LOCAL_CLUSTER_DIR: &str = "/tmp/decree-local-cluster";

/// Where the cluster is and how to talk to it.
#[derive(Clone, Debug, Args)]
pub struct ClusterArgs {
    /// The cluster file every node shares [default: $DECREE_CLUSTER_DIR/cluster.toml, else
    /// /tmp/decree-local-cluster/cluster.toml].
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// Directory holding ca.pem and client-<NAME>.pem/.key [default: certs/ beside the cluster
    /// file].
    #[arg(long, value_name = "DIR")]
    pub certs: Option<PathBuf>,
    /// The client certificate to present: client-<NAME>.pem [default: the only (or first)
    /// client certificate in the certificate directory].
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    /// Give up on an unreachable cluster after this many seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub timeout: f64,
    /// Print JSON (one object) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a command failed: printed as `decree: error: <this>`, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The client library's error, with what the command was doing.
    #[error("{doing}: {}{hint}", one_line(&.error.to_string()))]
    Client {
        /// What the command was doing.
        doing: String,
        /// The library's error.
        error: Error,
        /// A suggestion for the user (may be empty).
        hint: &'static str,
    },
    /// The arguments make no sense.
    #[error("{0}")]
    Usage(String),
    /// A local file or process problem.
    #[error("{0}")]
    Io(String),
    /// The command ran and found something wrong (an invalid audit, ...).
    #[error("{0}")]
    Failed(String),
}

impl CmdError {
    /// Wraps a library error, with a hint for the errors a user can fix.
    pub fn client(doing: impl Into<String>, error: Error) -> CmdError {
        let hint = match &error {
            Error::Unavailable { .. } => {
                " (is the cluster running? `scripts/local-cluster.sh start` starts a local one)"
            }
            Error::Tls { .. } => " (are --certs from this cluster's CA?)",
            Error::Config(ConfigError::Certificates { .. }) => {
                " (`decree certs --out DIR --nodes 1,2,3 --clients cli` makes them)"
            }
            _ => "",
        };
        CmdError::Client { doing: doing.into(), error, hint }
    }
}

impl ClusterArgs {
    /// The directory the defaults come from.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("DECREE_CLUSTER_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(LOCAL_CLUSTER_DIR), PathBuf::from)
    }

    /// The cluster file to read.
    pub fn cluster_file(&self) -> PathBuf {
        self.cluster.clone().unwrap_or_else(|| Self::default_dir().join("cluster.toml"))
    }

    /// The certificate directory to read.
    pub fn certs_dir(&self) -> PathBuf {
        if let Some(dir) = &self.certs {
            return dir.clone();
        }
        match &self.cluster {
            Some(file) => file.parent().unwrap_or(Path::new(".")).join("certs"),
            None => Self::default_dir().join("certs"),
        }
    }

    /// How long one operation keeps trying.
    pub fn timeout(&self) -> Result<Duration, CmdError> {
        if !(self.timeout.is_finite() && self.timeout > 0.0 && self.timeout <= 3600.0) {
            return Err(CmdError::Usage("--timeout must be between 0 and 3600 seconds".into()));
        }
        Ok(Duration::from_secs_f64(self.timeout))
    }

    /// The client name whose certificate to present.
    pub fn client_name(&self) -> Result<String, CmdError> {
        if let Some(name) = &self.client {
            return Ok(name.clone());
        }
        let dir = self.certs_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            CmdError::client(
                "loading the client certificate",
                Error::Config(ConfigError::Certificates {
                    reason: format!("cannot read {}: {e}", dir.display()),
                }),
            )
        })?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|f| {
                f.strip_prefix("client-").and_then(|s| s.strip_suffix(".pem")).map(str::to_owned)
            })
            .collect();
        names.sort();
        names.into_iter().next().ok_or_else(|| {
            CmdError::client(
                "loading the client certificate",
                Error::Config(ConfigError::Certificates {
                    reason: format!("no client-<name>.pem in {}", dir.display()),
                }),
            )
        })
    }

    /// The client configuration: cluster file, certificates and timeouts.
    pub fn config(&self) -> Result<ClientConfig, CmdError> {
        let timeout = self.timeout()?;
        let name = self.client_name()?;
        let mut config = ClientConfig::load(&self.cluster_file(), &self.certs_dir(), &name)
            .map_err(|e| CmdError::client("loading the client configuration", e.into()))?;
        config.settings.operation_timeout = timeout;
        config.settings.attempt_timeout = config.settings.attempt_timeout.min(timeout);
        config.settings.retry.deadline = timeout;
        Ok(config)
    }

    /// Connects, failing with one clear line if the cluster cannot be reached at all.
    pub async fn connect(&self) -> Result<Client, CmdError> {
        let config = self.config()?;
        let client = Client::connect(config)
            .await
            .map_err(|e| CmdError::client("connecting to the cluster", e))?;
        // `connect` falls back on the cluster file's map when no node answers; a CLI command
        // wants to know now rather than after its first operation times out.
        client
            .refresh_routes()
            .await
            .map_err(|e| CmdError::client("connecting to the cluster", e))?;
        Ok(client)
    }
}

/// `text` on one line: a parser's multi-line message (with its source snippet) joined by ` | `.
pub fn one_line(text: &str) -> String {
    let parts: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "|").collect();
    parts.join(" | ")
}

/// A multi-threaded tokio runtime for one command.
pub fn runtime() -> Result<tokio::runtime::Runtime, CmdError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::Io(format!("cannot start the async runtime: {e}")))
}

/// A value as a person reads it: UTF-8 if it is, else escaped bytes.
pub fn show_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_owned(),
        Err(_) => decree_client::Key::new(bytes.to_vec()).escaped(),
    }
}

/// Prints a JSON value on one line.
pub fn print_json(value: &serde_json::Value) {
    println!("{value}");
}

//! `decree get KEY`: reads one key at a fresh snapshot (lock-free, read-only).

use clap::Args;
use serde_json::json;

use super::client_opts::{print_json, runtime, show_bytes, ClusterArgs, CmdError};

/// Read one key.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key (UTF-8).
    pub key: String,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Runs `decree get`.
pub fn run(args: GetArgs) -> Result<(), CmdError> {
    runtime()?.block_on(async {
        let client = args.cluster.connect().await?;
        let snapshot = client.read_only();
        let value = snapshot
            .get(args.key.as_str())
            .await
            .map_err(|e| CmdError::client(format!("reading {:?}", args.key), e))?;
        if args.cluster.json {
            let value = value.as_deref().map(show_bytes);
            print_json(&json!({"key": args.key, "value": value, "read_ts": snapshot.read_ts().to_string()}));
        } else {
            match value {
                Some(v) => println!("{}", show_bytes(&v)),
                None => println!("(not found)"),
            }
        }
        client.close().await;
        Ok(())
    })
}

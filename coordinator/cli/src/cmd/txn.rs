//! `decree txn OP...`: several operations in one transaction, e.g.
//! `decree txn put a 1 put b 2 get c delete d`. Reads see the transaction's own earlier
//! writes; everything commits atomically (1PC if every write is in one group, else 2PC
//! through a coordinator group), rerun on conflicts by `Client::transact`.

use clap::Args;
use serde_json::json;

use super::client_opts::{print_json, runtime, show_bytes, ClusterArgs, CmdError};

/// Run several operations in one transaction.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Operations: `get KEY`, `put KEY VALUE`, `delete KEY`, in order.
    #[arg(value_name = "OP", required = true, num_args = 1..)]
    pub ops: Vec<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// One operation of a `txn` command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read a key.
    Get(String),
    /// Write a key.
    Put(String, String),
    /// Delete a key.
    Delete(String),
}

/// Parses `get K`, `put K V`, `delete K` (or `del K`) sequences.
pub fn parse_ops(words: &[String]) -> Result<Vec<Op>, CmdError> {
    let mut ops = Vec::new();
    let mut rest = words.iter();
    while let Some(word) = rest.next() {
        let mut arg = |what: &str| {
            rest.next().cloned().ok_or_else(|| {
                CmdError::Usage(format!("`{word}` needs a {what} (e.g. `put KEY VALUE`)"))
            })
        };
        let op = match word.to_ascii_lowercase().as_str() {
            "get" => Op::Get(arg("key")?),
            "put" | "set" => {
                let key = arg("key")?;
                Op::Put(key, arg("value")?)
            }
            "delete" | "del" => Op::Delete(arg("key")?),
            other => {
                return Err(CmdError::Usage(format!(
                    "unknown operation `{other}`: expected get KEY, put KEY VALUE or delete KEY"
                )))
            }
        };
        ops.push(op);
    }
    if ops.is_empty() {
        return Err(CmdError::Usage("no operations given".into()));
    }
    Ok(ops)
}

/// Runs `decree txn`.
pub fn run(args: TxnArgs) -> Result<(), CmdError> {
    let ops = parse_ops(&args.ops)?;
    runtime()?.block_on(async {
        let client = args.cluster.connect().await?;
        let (reads, info) = client
            .transact(|txn| {
                let ops = ops.clone();
                async move {
                    let mut reads = Vec::new();
                    for op in ops {
                        match op {
                            Op::Get(key) => {
                                let value = txn.get(key.as_str()).await?;
                                reads.push((key, value));
                            }
                            Op::Put(key, value) => txn.put(key, value.into_bytes())?,
                            Op::Delete(key) => txn.delete(key)?,
                        }
                    }
                    Ok(reads)
                }
            })
            .await
            .map_err(|e| CmdError::client("running the transaction", e))?;
        if args.cluster.json {
            let reads: Vec<_> = reads
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v.as_deref().map(show_bytes)}))
                .collect();
            print_json(&json!({
                "txn_id": info.txn_id.to_string(),
                "commit_ts": info.commit_ts.to_string(),
                "reads": reads,
            }));
        } else {
            for (key, value) in &reads {
                let shown = value.as_deref().map_or_else(|| "(not found)".into(), show_bytes);
                println!("{key}\t{shown}");
            }
            println!("committed  txn {}  commit_ts {}", info.txn_id, info.commit_ts);
        }
        client.close().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn operations_parse_in_order() {
        let ops = parse_ops(&words("put a 1 put b 2 get c delete d")).unwrap();
        assert_eq!(
            ops,
            vec![
                Op::Put("a".into(), "1".into()),
                Op::Put("b".into(), "2".into()),
                Op::Get("c".into()),
                Op::Delete("d".into()),
            ]
        );
    }

    #[test]
    fn a_missing_argument_or_unknown_word_is_a_usage_error() {
        let e = parse_ops(&words("put a")).unwrap_err();
        assert!(matches!(&e, CmdError::Usage(m) if m.contains("value")), "{e}");
        let e = parse_ops(&words("frobnicate a")).unwrap_err();
        assert!(matches!(&e, CmdError::Usage(m) if m.contains("frobnicate")), "{e}");
    }
}

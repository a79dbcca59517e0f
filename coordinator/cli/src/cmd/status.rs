//! `decree status`: every group (leader, term, commit and applied index, which replicas
//! answer) and every in-doubt transaction (age, groups, what it waits for), from one parallel
//! round of `ClusterStatus` requests (see [`super::probe`]): it answers within about a second
//! even with nodes down.

use std::time::Duration;

use clap::Args;
use decree_client::{ClusterFile, ConfigError, Error, QuicLink};

use super::client_opts::{runtime, ClusterArgs, CmdError};
use super::probe::{ClusterView, Prober, REPLICA_TIMEOUT};

/// Show groups, leaders and in-doubt transactions.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// Builds a prober from the client options (no range-map fetch needed: it asks every replica).
pub fn prober(args: &ClusterArgs) -> Result<Prober, CmdError> {
    let config = args.config()?;
    let cluster: ClusterFile = config.cluster.clone().ok_or_else(|| {
        CmdError::client("reading the cluster file", Error::Config(ConfigError::NoSeeds))
    })?;
    let link = QuicLink::new(config.identity.clone(), cluster.nodes.clone()).map_err(|e| {
        CmdError::client(
            "starting the client endpoint",
            Error::Config(ConfigError::Certificates { reason: e.to_string() }),
        )
    })?;
    Ok(Prober::new(link, cluster))
}

/// Runs `decree status`.
pub fn run(args: StatusArgs) -> Result<(), CmdError> {
    runtime()?.block_on(async {
        let prober = prober(&args.cluster)?;
        let timeout = args.cluster.timeout()?.min(REPLICA_TIMEOUT.max(Duration::from_millis(100)));
        let view = prober.view(timeout).await;
        let node_count = prober.cluster().nodes.len();
        if view.nodes_down.len() == node_count {
            return Err(CmdError::client(
                "asking the cluster for its status",
                Error::Unavailable {
                    what: format!("none of the {node_count} nodes answered within {timeout:?}"),
                },
            ));
        }
        if args.cluster.json {
            let text = serde_json::to_string(&view)
                .map_err(|e| CmdError::Io(format!("cannot encode the status: {e}")))?;
            println!("{text}");
        } else {
            print!("{}", render(&view));
        }
        Ok(())
    })
}

/// The status as tables a person reads.
pub fn render(view: &ClusterView) -> String {
    let dash = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut out = String::new();
    out.push_str(&format!(
        "{:<6} {:<12} {:<16} {:>6} {:>6} {:>10} {:>10}  {}\n",
        "GROUP", "ROLE", "RANGE", "LEADER", "TERM", "COMMIT", "APPLIED", "REPLICAS"
    ));
    for g in &view.groups {
        let replicas = {
            let mut s = g.replicas_up.iter().map(|n| format!("n{n}")).collect::<Vec<_>>();
            s.extend(g.replicas_down.iter().map(|n| format!("n{n}(down)")));
            s.join(",")
        };
        out.push_str(&format!(
            "{:<6} {:<12} {:<16} {:>6} {:>6} {:>10} {:>10}  {}\n",
            g.group,
            g.role,
            g.range.as_deref().unwrap_or("-"),
            g.leader.map_or_else(|| "none".to_string(), |l| format!("n{l}")),
            dash(g.term),
            dash(g.commit_index),
            dash(g.applied_index),
            replicas,
        ));
    }
    if !view.nodes_down.is_empty() {
        let down: Vec<String> = view.nodes_down.iter().map(|n| format!("n{n}")).collect();
        out.push_str(&format!("nodes not answering: {}\n", down.join(", ")));
    }
    out.push('\n');
    if view.in_doubt.is_empty() {
        out.push_str("in-doubt transactions: none\n");
    } else {
        out.push_str(&format!("in-doubt transactions: {}\n", view.in_doubt.len()));
        out.push_str(&format!(
            "{:<32} {:>9} {:>6} {:<12}  {}\n",
            "TXN", "AGE", "COORD", "GROUPS", "WAITING FOR"
        ));
        for t in &view.in_doubt {
            let groups: Vec<String> = t.groups.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "{:<32} {:>7}ms {:>6} {:<12}  {}\n",
                t.txn_id,
                t.age_ms,
                t.coord_group,
                groups.join(","),
                t.waiting_for
            ));
        }
    }
    if view.in_doubt_omitted > 0 {
        out.push_str(&format!("(and {} more not listed)\n", view.in_doubt_omitted));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::probe::{GroupView, InDoubtView};

    #[test]
    fn the_table_names_leaders_missing_values_and_in_doubt_transactions() {
        let view = ClusterView {
            groups: vec![GroupView {
                group: 100,
                role: "coordinator",
                range: None,
                leader: Some(2),
                term: Some(7),
                commit_index: None,
                applied_index: None,
                replicas_up: vec![1, 2],
                replicas_down: vec![3],
            }],
            in_doubt: vec![InDoubtView {
                txn_id: "00ff".into(),
                coord_group: 100,
                groups: vec![1, 2],
                age_ms: 1500,
                waiting_for: "votes from participants".into(),
            }],
            in_doubt_omitted: 0,
            nodes_down: vec![3],
        };
        let text = render(&view);
        assert!(text.contains("coordinator"), "{text}");
        assert!(text.contains("n2"), "{text}");
        assert!(text.contains("n3(down)"), "{text}");
        assert!(text.contains("1500ms"), "{text}");
        assert!(text.contains("votes from participants"), "{text}");
        assert!(text.contains("nodes not answering: n3"), "{text}");
    }
}

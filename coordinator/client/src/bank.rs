//! The bank workload: accounts spread over every participant group, transfers between them,
//! audits that read every account at one snapshot, and the check that defines "consistent"
//! (TESTING.md, "The bank check"): **every audit sums to the initial total and shows no
//! negative balance**.
//!
//! Operations are recorded as a history in Jepsen's form, one JSON object per line:
//! `{"index", "time" (ns since the start), "type": "invoke"|"ok"|"fail"|"info", "process",
//! "f": "transfer"|"read", "value"}`. A transfer's value is `{"from", "to", "amount"}`; a
//! read's value is an object from account to balance (`null` on invoke). An outcome the client
//! could not learn is `info`, never `fail`.
//!
//! Balances are stored as decimal ASCII (`decree get` shows them as they are), signed, so a
//! negative balance — a bug this check exists to catch — is representable and visible.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Write};

use decree_types::{DetRng, Key};
use serde::{Deserialize, Serialize};

/// The accounts of one bank run and what their balances must add up to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bank {
    accounts: Vec<Key>,
    initial_balance: i64,
}

/// A planned transfer between two accounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// The account money leaves.
    pub from: String,
    /// The account money arrives at.
    pub to: String,
    /// How much (> 0).
    pub amount: i64,
}

/// What an audit found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audit {
    /// The sum of the balances read.
    pub total: i64,
    /// What must be the total.
    pub expected_total: i64,
    /// Accounts with a negative balance.
    pub negative: Vec<String>,
    /// Accounts missing from the read, or whose value is not a balance.
    pub unreadable: Vec<String>,
}

impl Audit {
    /// Does the audit show a consistent bank?
    pub fn is_valid(&self) -> bool {
        self.total == self.expected_total && self.negative.is_empty() && self.unreadable.is_empty()
    }
}

impl std::fmt::Display for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "total {} (expected {})", self.total, self.expected_total)?;
        if !self.negative.is_empty() {
            write!(f, ", negative: {}", self.negative.join(", "))?;
        }
        if !self.unreadable.is_empty() {
            write!(f, ", unreadable: {}", self.unreadable.join(", "))?;
        }
        Ok(())
    }
}

impl Bank {
    /// `per_prefix` accounts under each key prefix (one prefix per participant group, so the
    /// accounts spread over every group), each starting with `initial_balance`.
    pub fn new(prefixes: &[&str], per_prefix: usize, initial_balance: i64) -> Bank {
        let accounts = prefixes
            .iter()
            .flat_map(|p| (0..per_prefix).map(move |i| Key::new(format!("{p}acct-{i:04}"))))
            .collect();
        Bank { accounts, initial_balance }
    }

    /// Every account key, in key order of creation.
    pub fn accounts(&self) -> &[Key] {
        &self.accounts
    }

    /// What every audit must sum to.
    pub fn total(&self) -> i64 {
        self.initial_balance * self.accounts.len() as i64
    }

    /// The balance every account starts with.
    pub fn initial_balance(&self) -> i64 {
        self.initial_balance
    }

    /// A random transfer between two different accounts, of 1 to `max_amount`.
    pub fn plan_transfer(&self, rng: &mut DetRng, max_amount: i64) -> Transfer {
        let n = self.accounts.len() as u64;
        let from = rng.range(0, n) as usize;
        let mut to = rng.range(0, n - 1) as usize;
        if to >= from {
            to += 1;
        }
        Transfer {
            from: self.accounts[from].escaped(),
            to: self.accounts[to].escaped(),
            amount: 1 + rng.range(0, max_amount.max(1) as u64) as i64,
        }
    }

    /// Checks one snapshot read of every account.
    pub fn audit(&self, balances: &BTreeMap<String, Option<i64>>) -> Audit {
        let mut audit = Audit {
            total: 0,
            expected_total: self.total(),
            negative: Vec::new(),
            unreadable: Vec::new(),
        };
        for account in &self.accounts {
            let name = account.escaped();
            match balances.get(&name) {
                Some(Some(b)) => {
                    audit.total += b;
                    if *b < 0 {
                        audit.negative.push(name);
                    }
                }
                _ => audit.unreadable.push(name),
            }
        }
        audit
    }
}

/// A balance as stored: decimal ASCII.
pub fn encode_balance(balance: i64) -> Vec<u8> {
    balance.to_string().into_bytes()
}

/// A stored balance, or `None` if the bytes are not one.
pub fn decode_balance(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// The phase of an operation in a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpType {
    /// The operation started.
    Invoke,
    /// It took effect.
    Ok,
    /// It certainly did not take effect.
    Fail,
    /// Its outcome is unknown.
    Info,
}

/// What an operation was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// A transfer.
    Transfer,
    /// An audit read of every account.
    Read,
}

/// One line of a history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryOp {
    /// Position in the history, from 0.
    pub index: u64,
    /// Nanoseconds since the run started.
    pub time: u64,
    /// The phase.
    #[serde(rename = "type")]
    pub op_type: OpType,
    /// Which client process did it.
    pub process: u64,
    /// What it was.
    pub f: OpKind,
    /// A transfer's `{from, to, amount}`, a read's `{account: balance}`, or `null`.
    pub value: serde_json::Value,
}

/// Writes a history as JSON Lines.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
    next_index: u64,
}

impl<W: Write> HistoryWriter<W> {
    /// A history written to `out`.
    pub fn new(out: W) -> Self {
        HistoryWriter { out, next_index: 0 }
    }

    /// Appends one operation.
    pub fn record(
        &mut self,
        time_ns: u64,
        process: u64,
        op_type: OpType,
        f: OpKind,
        value: serde_json::Value,
    ) -> io::Result<()> {
        let op = HistoryOp { index: self.next_index, time: time_ns, op_type, process, f, value };
        self.next_index += 1;
        serde_json::to_writer(&mut self.out, &op)?;
        self.out.write_all(b"\n")
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What a recorded history shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistorySummary {
    /// Transfers by outcome: ok, fail, info.
    pub transfers: [u64; 3],
    /// Reads that completed (`ok`).
    pub reads_ok: u64,
    /// Indexes of `ok` reads whose balances do not sum to the total or show a negative one.
    pub invalid_reads: Vec<u64>,
}

/// Why a history could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// Reading failed.
    #[error("reading the history: {0}")]
    Io(#[from] io::Error),
    /// A line is not a history operation.
    #[error("line {line}: {error}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// Why.
        error: serde_json::Error,
    },
}

/// Reads a history and checks every `ok` read against `total` (the bank check).
pub fn check_history(input: impl BufRead, total: i64) -> Result<HistorySummary, HistoryError> {
    let mut summary = HistorySummary::default();
    for (i, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op: HistoryOp = serde_json::from_str(&line)
            .map_err(|error| HistoryError::Malformed { line: i + 1, error })?;
        match (op.f, op.op_type) {
            (OpKind::Transfer, OpType::Ok) => summary.transfers[0] += 1,
            (OpKind::Transfer, OpType::Fail) => summary.transfers[1] += 1,
            (OpKind::Transfer, OpType::Info) => summary.transfers[2] += 1,
            (OpKind::Read, OpType::Ok) => {
                summary.reads_ok += 1;
                let balances = op
                    .value
                    .as_object()
                    .map(|m| m.values().map(|v| v.as_i64()).collect::<Option<Vec<i64>>>());
                let valid = match balances {
                    Some(Some(b)) => b.iter().sum::<i64>() == total && b.iter().all(|&x| x >= 0),
                    _ => false,
                };
                if !valid {
                    summary.invalid_reads.push(op.index);
                }
            }
            _ => {}
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bank() -> Bank {
        Bank::new(&["a/", "b/", "c/"], 4, 100)
    }

    #[test]
    fn accounts_spread_over_every_prefix_and_sum_to_the_total() {
        let b = bank();
        assert_eq!(b.accounts().len(), 12);
        assert_eq!(b.total(), 1200);
        for p in ["a/", "b/", "c/"] {
            assert_eq!(b.accounts().iter().filter(|k| k.escaped().starts_with(p)).count(), 4);
        }
    }

    #[test]
    fn transfers_are_between_two_different_accounts_with_a_positive_amount() {
        let b = bank();
        let mut rng = DetRng::new(7);
        for _ in 0..1000 {
            let t = b.plan_transfer(&mut rng, 10);
            assert_ne!(t.from, t.to);
            assert!((1..=10).contains(&t.amount), "{t:?}");
        }
    }

    #[test]
    fn an_audit_is_valid_only_with_the_exact_total_and_no_negative_or_missing_balance() {
        let b = bank();
        let mut balances: BTreeMap<String, Option<i64>> =
            b.accounts().iter().map(|k| (k.escaped(), Some(100))).collect();
        assert!(b.audit(&balances).is_valid());

        let first = b.accounts()[0].escaped();
        let second = b.accounts()[1].escaped();
        *balances.get_mut(&first).unwrap() = Some(-5);
        *balances.get_mut(&second).unwrap() = Some(205);
        let audit = b.audit(&balances);
        assert_eq!(audit.total, 1200);
        assert_eq!(audit.negative, vec![first.clone()]);
        assert!(!audit.is_valid());

        *balances.get_mut(&first).unwrap() = Some(95);
        assert!(!b.audit(&balances).is_valid(), "money was created");
        balances.remove(&first);
        assert_eq!(b.audit(&balances).unreadable, vec![first]);
    }

    #[test]
    fn balances_round_trip_and_garbage_is_not_a_balance() {
        for v in [0, 1, -3, i64::MAX] {
            assert_eq!(decode_balance(&encode_balance(v)), Some(v));
        }
        assert_eq!(decode_balance(b"ten"), None);
        assert_eq!(decode_balance(&[0xff]), None);
    }

    #[test]
    fn a_history_is_written_in_jepsens_form_and_checked() {
        let mut w = HistoryWriter::new(Vec::new());
        let t = json!({"from": "a/acct-0000", "to": "b/acct-0000", "amount": 5});
        w.record(10, 0, OpType::Invoke, OpKind::Transfer, t.clone()).unwrap();
        w.record(20, 0, OpType::Ok, OpKind::Transfer, t.clone()).unwrap();
        w.record(30, 1, OpType::Invoke, OpKind::Transfer, t.clone()).unwrap();
        w.record(40, 1, OpType::Info, OpKind::Transfer, t).unwrap();
        w.record(50, 2, OpType::Invoke, OpKind::Read, serde_json::Value::Null).unwrap();
        w.record(60, 2, OpType::Ok, OpKind::Read, json!({"a/acct-0000": 95, "b/acct-0000": 105}))
            .unwrap();
        w.record(70, 2, OpType::Ok, OpKind::Read, json!({"a/acct-0000": 95, "b/acct-0000": 100}))
            .unwrap();
        let bytes = w.finish().unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(
            first,
            json!({"index": 0, "time": 10, "type": "invoke", "process": 0, "f": "transfer",
                   "value": {"from": "a/acct-0000", "to": "b/acct-0000", "amount": 5}})
        );

        let summary = check_history(&bytes[..], 200).unwrap();
        assert_eq!(summary.transfers, [1, 0, 1]);
        assert_eq!(summary.reads_ok, 2);
        assert_eq!(summary.invalid_reads, vec![6]);
    }

    #[test]
    fn a_malformed_history_line_is_named() {
        let e = check_history(&b"{\"index\": 0}\n"[..], 0).unwrap_err();
        assert!(matches!(e, HistoryError::Malformed { line: 1, .. }), "{e}");
    }
}

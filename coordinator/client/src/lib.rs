//! `decree-client`: the library applications link to use a decree cluster.
//!
//! decree is a distributed transactional key-value store: keys live in participant groups
//! (Raft groups, one key range each), and transactions that touch several groups commit
//! atomically through a coordinator group (two-phase commit over Raft). This crate gives an
//! application:
//!
//! - [`Client::connect`] — from a cluster file or seed addresses and a client certificate; the
//!   client fetches the range map and the group leaders, caches them, and follows redirects;
//! - [`Client::begin`] → [`Txn`] with [`Txn::get`], [`Txn::get_many`], [`Txn::scan`],
//!   [`Txn::put`], [`Txn::delete`], [`Txn::commit`] → [`CommitInfo`] `{ txn_id, commit_ts }`,
//!   and [`Txn::rollback`]. Reads are at the transaction's snapshot timestamp, writes are
//!   buffered until commit, and the read set travels with the commit so it is serializable.
//!   A transaction that writes one group commits in one round (1PC); others go through a
//!   coordinator group;
//! - [`Client::transact`] — runs a closure in a transaction until it commits, retrying
//!   conflicts with backoff, and *resolving every ambiguous outcome before it reruns
//!   anything*, so a retry never applies a transaction twice;
//! - [`Client::read_only`] / [`Client::snapshot`] — lock-free reads at one timestamp;
//! - [`Client::txn_status`] — the outcome of a commit that ended [`Error::Ambiguous`];
//! - [`Error`] — typed: [`Error::Conflict`] (retryable), [`Error::Ambiguous`],
//!   [`Error::Unavailable`], [`Error::KeyOutOfRange`], [`Error::InvalidArgument`],
//!   [`Error::Tls`], [`Error::Config`], ...; see [`Error::is_retryable`].
//!
//! # Example: a transfer between two accounts
//!
//! ```no_run
//! use decree_client::{Client, ClientConfig, Error};
//!
//! # async fn example() -> Result<(), Error> {
//! let config = ClientConfig::load(
//!     "cluster.toml".as_ref(), // the file every node shares
//!     "certs".as_ref(),        // ca.pem, client-teller.pem, client-teller.key
//!     "teller",
//! )?;
//! let client = Client::connect(config).await?;
//!
//! // Move 10 from alice to bob, atomically, exactly once, even across failovers.
//! let (moved, commit) = client
//!     .transact(|txn| async move {
//!         let balances = txn.get_many(["acct/alice", "acct/bob"]).await?;
//!         let balance = |v: &Option<Vec<u8>>| {
//!             v.as_deref().and_then(|b| <[u8; 8]>::try_from(b).ok()).map_or(0, i64::from_be_bytes)
//!         };
//!         let (alice, bob) = (balance(&balances[0]), balance(&balances[1]));
//!         if alice < 10 {
//!             return Ok(false); // no writes: nothing is committed
//!         }
//!         txn.put("acct/alice", (alice - 10).to_be_bytes())?;
//!         txn.put("acct/bob", (bob + 10).to_be_bytes())?;
//!         Ok(true)
//!     })
//!     .await?;
//! println!("moved: {moved}, txn {} at {}", commit.txn_id, commit.commit_ts);
//!
//! // Read both balances at one snapshot, without locks.
//! let audit = client.read_only();
//! let both = audit.get_many(["acct/alice", "acct/bob"]).await?;
//! # let _ = both;
//! # Ok(())
//! # }
//! ```
//!
//! # How it is built
//!
//! - [`client`] — the [`Client`], its routing table, HLC, and the request loop that follows
//!   leaders and tells "not delivered" from "maybe delivered";
//! - [`txn`] — [`Txn`] and [`Snapshot`];
//! - [`retry`] — [`Client::transact`];
//! - [`link`] — the network as a small trait ([`Link`]), with the QUIC implementation
//!   ([`QuicLink`]); tests and the simulator plug in their own;
//! - [`routing`] — the range map, the leader cache and [`coordinator_for`];
//! - [`config`] and [`error`].

#![warn(missing_docs)]

pub mod bank;
pub mod client;
pub mod config;
pub mod error;
pub mod link;
pub mod retry;
pub mod routing;
pub mod txn;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use client::{Client, TxnState, UNRESOLVED_COMMITS_MAX};
pub use config::{ClientConfig, ClientSettings, ClusterFile, GroupReplicas, RetryPolicy};
pub use decree_proto::txn::{AbortReason, Isolation, NoReason};
pub use decree_types::{HlcTimestamp, Key, KeyRange, TxnId};
pub use error::{ConfigError, ConflictReason, Error};
pub use link::{Link, LinkError, LinkFuture, QuicLink};
pub use routing::coordinator_for;
pub use txn::{CommitInfo, Snapshot, Txn, TxnOptions};

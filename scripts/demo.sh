#!/usr/bin/env bash
# What to run first. No setup: builds decree in release, then `decree demo` starts three
# `decree start` processes on loopback (its own run directory, free ports, an ephemeral CA),
# creates bank accounts spread over every participant group, and runs concurrent transfers
# (cross-group two-phase commits) and snapshot audits while it SIGKILLs and restarts the node
# leading a participant group, the node leading the coordinator group, and SIGSTOPs a leader
# for longer than the election timeout. A live line shows transfers/s, audits, faults and
# in-doubt transactions; the report gives totals, latency, every fault's recovery time and the
# verdict: every audit must sum to the initial total with no negative balance (exit 1 if not).
# The operation history (JSON Lines, Jepsen's form) is written into the run directory.
#
#   scripts/demo.sh [decree demo flags]     about a minute; see `--help` for the flags
#                                           (--duration, --accounts, --clients, --faults,
#                                           --seed, --history FILE, --json)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

echo "==> building decree (release)"
cargo build --release --locked -q -p decree-cli --bin decree
exec "$(release_bin decree)" demo "$@"

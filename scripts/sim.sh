#!/usr/bin/env bash
# Runs the deterministic simulator over many seeds in release mode and reports failures with
# the command that replays each one.
#
#   scripts/sim.sh --seeds 1000 [--start 5000] [any other `sim` flag]
#   scripts/sim.sh --workload bank --seeds 1000   # transactions: transfers, audits, 2PC crashes
#
# Exit status is non-zero if any seed failed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
if [[ $# -eq 0 ]]; then
  set -- --seeds 500
fi
cargo build --release -p decree-sim --bin sim
exec "$(release_bin sim)" "$@"

#!/usr/bin/env bash
# Benchmarks; the figures and the machine they ran on are recorded in BENCHMARKS.md.
#
#   scripts/bench.sh replication [--seconds N] [--concurrency 1,16,64] [--entry-bytes 128]
#       three decree-lognode processes on loopback (QUIC + mutual TLS, fsync on), C concurrent
#       proposers against the leader; prints throughput, p50/p99 and where the time goes.
set -euo pipefail
cd "$(dirname "$0")/.."

mode="${1:-}"
[ $# -gt 0 ] && shift

case "$mode" in
  replication)
    cargo build --release --locked -p decree-sim --bin decree-lognode --bin decree-logctl
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "date:    $(date -u +%Y-%m-%dT%H:%MZ)"
    exec target/release/decree-logctl bench "$@"
    ;;
  *)
    sed -n '2,8p' "$0" >&2
    exit 2
    ;;
esac

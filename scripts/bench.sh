#!/usr/bin/env bash
# Benchmarks; the figures and the machine they ran on are recorded in BENCHMARKS.md.
#
#   scripts/bench.sh transport
#       two endpoints on loopback with mutual TLS and 64-byte payloads: RPC round trip p50/p99
#       and pipelined one-way messages per second, each beside a bare quinn baseline measured
#       in the same run. DECREE_BENCH_SCALE=N multiplies the iteration counts.
#   scripts/bench.sh replication [--seconds N] [--concurrency 1,16,64] [--entry-bytes 128]
#                                [--data-root DIR]
#       three decree-lognode processes on loopback (QUIC + mutual TLS, fsync on), C concurrent
#       proposers against the leader; throughput, p50/p99 and where the time goes.
#
# Both build in release.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,13p' "$0" >&2
    exit 2
}

[ $# -ge 1 ] || usage
mode="$1"
shift

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
case "$mode" in
transport)
    cargo bench -p decree-runtime --bench transport
    ;;
replication)
    cargo build --release --locked -q -p decree-sim --bin decree-lognode --bin decree-logctl
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-minute load average before the run)"
    "$(release_bin decree-logctl)" bench "$@"
    ;;
*)
    usage
    ;;
esac

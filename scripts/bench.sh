#!/usr/bin/env bash
# Benchmarks. Usage: scripts/bench.sh transport
#
# transport: two endpoints on loopback with mutual TLS and 64-byte payloads: RPC round trip
# p50/p99 and pipelined one-way messages per second, each beside a bare quinn baseline measured
# in the same run. Builds in release. DECREE_BENCH_SCALE=N multiplies the iteration counts.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    echo "usage: scripts/bench.sh transport" >&2
    exit 2
}

[ $# -ge 1 ] || usage
case "$1" in
transport)
    echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
    echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "commit:  $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    cargo bench -p decree-runtime --bench transport
    ;;
*)
    usage
    ;;
esac

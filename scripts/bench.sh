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
#   scripts/bench.sh bank [--seconds N] [--concurrency 1,16,64]
#       three `decree start` processes on loopback (3 participant groups + 1 coordinator group,
#       3 replicas each, fsync on): bank transfers between accounts in different groups (2PC)
#       and inside one group (1PC) at each concurrency, then snapshot point reads at 64
#       readers; committed transfers/s, p50, p99 and the share that failed.
#
# All build in release.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,19p' "$0" >&2
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
bank)
    seconds=15
    concurrency=1,16,64
    while [ $# -gt 0 ]; do
        case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --concurrency) concurrency="$2"; shift 2 ;;
        *) usage ;;
        esac
    done
    cargo build --release --locked -q -p decree-cli --bin decree
    echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15-minute load average before the run)"
    export DECREE_CLUSTER_DIR
    DECREE_CLUSTER_DIR=$(mktemp -d -t decree-bench.XXXXXX)
    export DECREE_BASE_PORT="${DECREE_BASE_PORT:-17000}"
    trap 'scripts/local-cluster.sh clean >/dev/null' EXIT
    RUST_LOG=warn scripts/local-cluster.sh start >/dev/null
    decree=$(release_bin decree)
    # Wait until every group has a leader.
    for _ in $(seq 60); do
        "$decree" status --json 2>/dev/null | grep -q '"leader":null' || break
        sleep 0.5
    done
    sleep 2
    printf '%-22s %6s %10s %9s %9s %8s\n' workload conc "txn/s" "p50 ms" "p99 ms" failed
    for mode in cross-group same-group; do
        for c in ${concurrency//,/ }; do
            out=$("$decree" bank --$mode --clients "$c" --duration "$seconds" --accounts 64 \
                --audit-every-ms 1000 --quiet --json)
            python3 - "$mode" "$c" "$out" <<'PY'
import json, sys
mode, c, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
tried = r["transfers_ok"] + r["transfers_declined"] + r["transfers_failed"] + r["transfers_unknown"]
failed = (r["transfers_failed"] + r["transfers_unknown"]) / max(tried, 1)
name = {"cross-group": "transfer 2PC (2 groups)", "same-group": "transfer 1PC (1 group)"}[mode]
print(f"{name:<22} {c:>6} {r['transfers_per_s']:>10.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} {failed:>7.1%}"
      f"  audits {r['audits_valid']} valid / {r['audits_invalid']} invalid")
PY
        done
    done
    out=$("$decree" bank --point-reads 64 --duration "$seconds" --accounts 64 --json)
    python3 - "$out" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"{'snapshot point read':<22} {r['readers']:>6} {r['reads_per_s']:>10.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f}   failed {r['reads_failed']}")
PY
    ;;
*)
    usage
    ;;
esac

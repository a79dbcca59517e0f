#!/usr/bin/env bash
# What to run first. No setup: builds in release, makes an ephemeral CA and certificates in a
# temp dir, starts three decree-lognode processes (QUIC with mutual TLS on loopback), and
# streams proposals at the replicated log while the current leader is SIGKILLed and restarted
# on its data directory a few times. A live line shows acknowledged proposals, kills, and the
# current leader and term; at the end the verdict says whether every acknowledged proposal is
# on every replica, in the same order, once (the same check as the multi-process kill test).
#
#   scripts/demo.sh [--kills N]        about a minute; ctrl-c stops it and cleans up
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

echo "==> building (release)"
cargo build --release --locked -q -p decree-sim --bin decree-lognode --bin decree-logctl
logctl=$(release_bin decree-logctl)

tmp=$(mktemp -d -t decree-demo.XXXXXX)
cleanup() {
  # Stop any node still running (the driver also kills them on exit), then remove the files.
  for f in "$tmp"/n*.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> ephemeral CA and certificates in $tmp/certs"
"$logctl" certs --out "$tmp/certs" --nodes 3

echo "==> 3-node cluster, 2 groups; proposing while the leader is killed and restarted"
"$logctl" demo --root "$tmp" "$@"

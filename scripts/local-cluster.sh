#!/usr/bin/env bash
# A local three-node decree-lognode cluster in the background, for trying things by hand.
#
#   scripts/local-cluster.sh start     build (release), make certificates, start nodes 1..3
#   scripts/local-cluster.sh status    role, term, leader, commit/applied index per group
#   scripts/local-cluster.sh stop      stop the nodes (SIGTERM), keep the data
#   scripts/local-cluster.sh clean     stop and delete the data and certificates
#
# State lives in $DECREE_CLUSTER_DIR (default /tmp/decree-local-cluster); nodes listen on
# 127.0.0.1:7001..7003 (UDP). Logs: $DECREE_CLUSTER_DIR/n<id>.log. Then, for example (the
# binaries are in cargo's target directory: target/ unless CARGO_TARGET_DIR moves it):
#   target/release/decree-logctl --certs $DECREE_CLUSTER_DIR/certs \
#       --node 1=127.0.0.1:7001 --node 2=127.0.0.1:7002 --node 3=127.0.0.1:7003 propose 1 hello
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

dir="${DECREE_CLUSTER_DIR:-/tmp/decree-local-cluster}"
groups="${DECREE_GROUPS:-2}"
ids=(1 2 3)
addr() { echo "127.0.0.1:700$1"; }
nodes_args() { for i in "${ids[@]}"; do printf -- '--node %s=%s ' "$i" "$(addr "$i")"; done; }
running() { [ -f "$dir/n$1.pid" ] && kill -0 "$(cat "$dir/n$1.pid")" 2>/dev/null; }

case "${1:-}" in
  start)
    cargo build --release --locked -q -p decree-sim --bin decree-lognode --bin decree-logctl
    mkdir -p "$dir"
    [ -d "$dir/certs" ] || "$(release_bin decree-logctl)" certs --out "$dir/certs" --nodes 3
    for i in "${ids[@]}"; do
      if running "$i"; then echo "n$i already running (pid $(cat "$dir/n$i.pid"))"; continue; fi
      peers=()
      for j in "${ids[@]}"; do [ "$j" = "$i" ] || peers+=(--peer "$j=$(addr "$j")"); done
      RUST_LOG="${RUST_LOG:-info}" nohup "$(release_bin decree-lognode)" --id "$i" \
        --listen "$(addr "$i")" "${peers[@]}" --data "$dir/n$i" --certs "$dir/certs" \
        --groups "$groups" >>"$dir/n$i.log" 2>&1 &
      echo $! >"$dir/n$i.pid"
      echo "n$i started (pid $!, $(addr "$i"))"
    done
    ;;
  status)
    # shellcheck disable=SC2046
    "$(release_bin decree-logctl)" --certs "$dir/certs" $(nodes_args) status
    ;;
  stop|clean)
    for i in "${ids[@]}"; do
      running "$i" || { rm -f "$dir/n$i.pid"; continue; }
      pid=$(cat "$dir/n$i.pid")
      kill -TERM "$pid"
      # Wait up to 5 s for a clean exit, then SIGKILL.
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "n$i killed"; else echo "n$i stopped"; fi
      rm -f "$dir/n$i.pid"
    done
    if [ "$1" = clean ]; then rm -rf "$dir" && echo "removed $dir"; fi
    ;;
  *)
    sed -n '2,15p' "$0" >&2
    exit 2
    ;;
esac

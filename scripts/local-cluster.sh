#!/usr/bin/env bash
# A local three-node decree cluster in the background, for trying things by hand.
#
#   scripts/local-cluster.sh start     build (release), write configs and certificates, start
#                                      nodes 1..3 (`decree start`)
#   scripts/local-cluster.sh status    `decree status`: groups, leaders, in-doubt transactions
#   scripts/local-cluster.sh stop      stop the nodes (SIGTERM), keep the data
#   scripts/local-cluster.sh clean     stop and delete the data, configs and certificates
#
# Each node hosts a replica of every participant group ($DECREE_GROUPS, default 3) and of the
# coordinator group. State lives in $DECREE_CLUSTER_DIR (default /tmp/decree-local-cluster):
# cluster.toml, node-<id>.toml, certs/ (CA, node-<id>, client-cli), n<id>/ (data),
# n<id>.log. Nodes listen on 127.0.0.1:7001..7003 (UDP; $DECREE_BASE_PORT moves them).
# The client commands find this directory by default, so then, for example:
#   decree put a/x 1;  decree txn put a/x 2 put c/y 3 get a/x;  decree status
# (decree is in cargo's target directory: target/release/decree unless CARGO_TARGET_DIR
# moves it.)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

dir="${DECREE_CLUSTER_DIR:-/tmp/decree-local-cluster}"
groups="${DECREE_GROUPS:-3}"
base_port="${DECREE_BASE_PORT:-7000}"
ids=(1 2 3)
running() { [ -f "$dir/n$1.pid" ] && kill -0 "$(cat "$dir/n$1.pid")" 2>/dev/null; }
decree() { "$(release_bin decree)" "$@"; }

write_configs() {
  {
    for i in "${ids[@]}"; do
      printf '[[nodes]]\nid = %s\naddr = "127.0.0.1:%s"\n\n' "$i" "$((base_port + i))"
    done
    printf '[[coordinator_groups]]\nid = 100\nreplicas = [1, 2, 3]\n\n'
    # Split the key space at single letters: keys starting with a, b, c, ... spread over groups.
    letters=(a b c d e f g h i j k l m n o p q r s t u v w x y z)
    for ((g = 0; g < groups; g++)); do
      printf '[[participant_groups]]\nid = %s\n' "$((g + 1))"
      if [ "$g" -eq 0 ]; then printf 'start = ""\n'; else printf 'start = "%s"\n' "${letters[$g]}"; fi
      if [ "$((g + 1))" -lt "$groups" ]; then printf 'end = "%s"\n' "${letters[$((g + 1))]}"; fi
      printf 'replicas = [1, 2, 3]\n\n'
    done
  } >"$dir/cluster.toml"
  for i in "${ids[@]}"; do
    cat >"$dir/node-$i.toml" <<EOF
node_id = $i
listen = "127.0.0.1:$((base_port + i))"
data_dir = "n$i"
certs_dir = "certs"
cluster = "cluster.toml"
EOF
  done
}

case "${1:-}" in
  start)
    cargo build --release --locked -q -p decree-cli --bin decree
    mkdir -p "$dir"
    [ -f "$dir/cluster.toml" ] || write_configs
    [ -d "$dir/certs" ] || decree certs --out "$dir/certs" --nodes 1,2,3 --clients cli >/dev/null
    for i in "${ids[@]}"; do
      if running "$i"; then echo "n$i already running (pid $(cat "$dir/n$i.pid"))"; continue; fi
      RUST_LOG="${RUST_LOG:-info}" nohup "$(release_bin decree)" start --config "$dir/node-$i.toml" \
        >>"$dir/n$i.log" 2>&1 &
      echo $! >"$dir/n$i.pid"
      echo "n$i started (pid $!, 127.0.0.1:$((base_port + i)), log $dir/n$i.log)"
    done
    echo "cluster files in $dir; try: $(release_bin decree) status"
    ;;
  status)
    for i in "${ids[@]}"; do
      if running "$i"; then echo "n$i running (pid $(cat "$dir/n$i.pid"))"; else echo "n$i not running"; fi
    done
    echo
    DECREE_CLUSTER_DIR="$dir" decree status
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
    sed -n '2,18p' "$0" >&2
    exit 2
    ;;
esac

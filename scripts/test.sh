#!/usr/bin/env bash
# The one gate: formatting, lints, and every test (unit, property, golden, model check,
# simulator sweep, multi-process tests over real QUIC). CI runs exactly this.
#
#   scripts/test.sh            # the default suite (what CI runs)
#   scripts/test.sh --quick    # skip clippy (faster local loop)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
for arg in "$@"; do
  case "$arg" in
    --quick) quick=1 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
start=$(date +%s)

step "cargo fmt --check"
cargo fmt --all -- --check

if [ "$quick" -eq 0 ]; then
  step "cargo clippy -D warnings"
  cargo clippy --workspace --all-targets --locked -- -D warnings
fi

step "cargo test"
cargo test --workspace --locked

echo
echo "all checks passed in $(( $(date +%s) - start )) s"

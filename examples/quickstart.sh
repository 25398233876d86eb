#!/usr/bin/env bash
# dtask's tour on the embedded local default: no scheduler configured, so
# the first submit starts a local cluster in the background.
#
#   ./examples/quickstart.sh
#
# Builds dtask and the example guest if needed (DTASK and TASKS_WASM
# override the binaries used), runs a few futures, and stops the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${DTASK:-}" ]; then
    cargo build --release --quiet
    DTASK="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/dtask"
fi
TASKS_WASM="${TASKS_WASM:-$(cargo run --quiet --release -p dtask-guests -- tasks)}"
dtask() { "$DTASK" "$@"; }
trap 'dtask shutdown >/dev/null 2>&1 || true' EXIT

echo "# inc 10"
k1=$(dtask submit "$TASKS_WASM" inc 10)
echo "$k1"
dtask gather "$k1"

echo "# add @inc(10) 5: a future as an argument"
k2=$(dtask submit "$TASKS_WASM" add "@$k1" 5)
dtask gather "$k2"

echo "# seq 1 1000 | map inc | gather, summed"
seq 1 1000 | dtask map "$TASKS_WASM" inc | dtask gather | awk '{s += $1} END {print s}'

echo "# structured values"
dtask gather "$(dtask submit "$TASKS_WASM" norm '{"x": 3, "y": 4}')"

echo "# an error, and a dependent that inherits it"
bad=$(dtask submit "$TASKS_WASM" div 1 0)
dep=$(dtask submit "$TASKS_WASM" inc "@$bad")
if dtask gather "$dep" 2>&1; then
    echo "expected an error" >&2
    exit 1
fi
echo "# done"

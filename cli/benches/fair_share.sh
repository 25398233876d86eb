#!/usr/bin/env bash
# A small request beside a big pipeline, on a fresh local default: while
# `seq N | dtask map TASKS inc | dtask gather --release` runs (N = 1,000,000
# by default), five `dtask submit TASKS inc K` + `dtask gather` one second
# apart from 3 s on, each timed; then the pipeline's own time and its sum.
#
# Usage: fair_share.sh DTASK TASKS_WASM   (`just fair-share` passes both)
set -uo pipefail
D=${1:?the dtask binary}
W=${2:?the example tasks guest (.wasm)}
N=${N:-1000000}
export DTASK_STATE_DIR
DTASK_STATE_DIR=$(mktemp -d)
trap '"$D" shutdown >/dev/null 2>&1; rm -rf "$DTASK_STATE_DIR"' EXIT
"$D" gather "$("$D" submit "$W" inc 1)" >/dev/null
sum_file="$DTASK_STATE_DIR/sum"
start=$(date +%s.%N)
(seq "$N" | "$D" map "$W" inc | "$D" gather --release | awk '{s+=$1} END {printf "%.0f\n", s}' >"$sum_file") &
pipeline=$!
sleep 3
for i in 1 2 3 4 5; do
    a=$(date +%s.%N)
    key=$("$D" submit "$W" inc $((1000 + i)))
    m=$(date +%s.%N)
    result=$("$D" gather "$key")
    b=$(date +%s.%N)
    echo "at $(echo "$a - $start" | bc) s: submit $(echo "$m - $a" | bc) s, gather $(echo "$b - $m" | bc) s, result $result"
    sleep 1
done
wait "$pipeline"
end=$(date +%s.%N)
echo "pipeline: $N tasks in $(echo "$end - $start" | bc) s, sum $(cat "$sum_file") (expected $((N * (N + 1) / 2 + N)))"

#!/usr/bin/env bash
# Tasks that are clients and coordinate: recursive Fibonacci by nested
# submit and gather, a counter guarded by a lock, a monitor loop that
# secedes, and values passed between the shell and tasks over queues.
# COORD_WASM is the `coord` example guest (wasm-tasks/coord):
#   COORD_WASM=$(cargo run -q --release -p dtask-guests -- coord)
set -euo pipefail
DTASK=${DTASK:-dtask}
COORD_WASM=${COORD_WASM:?set COORD_WASM to the coord example guest}
dtask() { "$DTASK" "$@"; }

# Every fib task waits for its two subtasks; waiting gives the slot back,
# so this finishes on any number of slots.
echo "fib(20) = $(dtask gather "$(dtask submit "$COORD_WASM" fib 20)")"

# Twenty tasks increment one variable under one lock.
run=$(date +%s%N)
for _ in $(seq 20); do
    dtask submit --pure=false "$COORD_WASM" locked-increment "count-$run" "lock-$run"
done | dtask wait >/dev/null
echo "counter after 20 locked increments: $(dtask var get "count-$run")"

# The shell hands a task work over a queue, and takes its answer back.
dtask queue put "jobs-$run" 41
echo "a task took $(dtask gather "$(dtask submit "$COORD_WASM" take "jobs-$run")") from the shell"
dtask gather "$(dtask submit "$COORD_WASM" give "answers-$run" 42)" >/dev/null
echo "the shell took $(dtask queue get "answers-$run") from a task"

# A monitor secedes and counts events until told to stop.
monitor=$(dtask submit "$COORD_WASM" monitor "events-$run" "stop-$run")
for i in 1 2 3; do dtask queue put "events-$run" "$i"; done
while [ "$(dtask queue len "events-$run")" != 0 ]; do :; done
dtask event set "stop-$run"
echo "the monitor counted $(dtask gather "$monitor") events"

# Pub/sub fan-out: 3 subscriber tasks each get all 1000 messages in order.
echo "fan-out sums: $(dtask gather "$(dtask submit "$COORD_WASM" fanout "news-$run" 3 1000)")"

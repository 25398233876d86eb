#!/usr/bin/env bash
# A Monte Carlo estimate of pi that stops early: submit many sampling tasks,
# take results as they complete, stop once enough points are in, and cancel
# the rest.
#
#   examples/monte-carlo-pi.sh [TASKS] [POINTS_PER_TASK] [POINTS_WANTED]
set -euo pipefail
tasks=${1:-200}
per_task=${2:-100000}
wanted=${3:-2000000}
DTASK=${DTASK:-dtask}
TASKS_WASM=${TASKS_WASM:?set TASKS_WASM to the example tasks component}
dtask() { "$DTASK" "$@"; }

keys=$(mktemp)
trap 'rm -f "$keys"' EXIT
seq 1 "$tasks" | sed "s/\$/ $per_task/" | dtask map "$TASKS_WASM" pi-hits > "$keys"

# as-completed streams `key<TAB>hits`; awk stops reading once it has enough,
# which closes the pipe and ends as-completed.
dtask as-completed --with-results < "$keys" |
    awk -v per="$per_task" -v wanted="$wanted" '
        { hits += $2; points += per }
        points >= wanted { printf "pi ~ %.4f from %d points\n", 4 * hits / points, points; exit }
    ' || true

# Whatever has not run yet is not needed any more.
dtask cancel < "$keys"
dtask release < "$keys"

#!/usr/bin/env bash
# Word frequency over a folder of text files, as a map-reduce of futures:
# scatter each file, count words per file (map), merge the counts pairwise
# (a reduction tree of futures), and print the top words.
#
#   examples/word-frequency.sh DIR [N]
#
# Uses DTASK (default: dtask on PATH) and TASKS_WASM (the example tasks).
set -euo pipefail
dir=${1:?usage: word-frequency.sh DIR [N]}
top=${2:-10}
DTASK=${DTASK:-dtask}
TASKS_WASM=${TASKS_WASM:?set TASKS_WASM to the example tasks component}
dtask() { "$DTASK" "$@"; }

# One future per file, then one word-count task per file.
mapfile -t counts < <(dtask scatter --text "$dir"/*.txt | sed 's/^/@/' | dtask map "$TASKS_WASM" word-count)

# Merge pairwise until one future is left; nothing waits until the end.
while [ "${#counts[@]}" -gt 1 ]; do
    next=()
    for ((i = 0; i < ${#counts[@]}; i += 2)); do
        if ((i + 1 < ${#counts[@]})); then
            next+=("$(dtask submit "$TASKS_WASM" merge-counts "@${counts[i]}" "@${counts[i + 1]}")")
        else
            next+=("${counts[i]}")
        fi
    done
    counts=("${next[@]}")
done

# The top words as JSON: [["the", 42], ["a", 17], …].
dtask gather "$(dtask submit "$TASKS_WASM" top-words "@${counts[0]}" "$top")"

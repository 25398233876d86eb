#!/usr/bin/env bash
# A flaky task made reliable with --retries: `fails-before T` panics until
# the clock passes T. Without retries the future errs; with them dtask runs
# it again until it succeeds.
set -euo pipefail
DTASK=${DTASK:-dtask}
TASKS_WASM=${TASKS_WASM:?set TASKS_WASM to the example tasks component}
dtask() { "$DTASK" "$@"; }

soon=$(( $(date +%s%3N) + 1500 ))
flaky=$(dtask submit --pure=false "$TASKS_WASM" fails-before "$soon")
if dtask gather "$flaky" 2>/dev/null; then
    echo "unexpected: succeeded without retries" >&2
    exit 1
fi
echo "without retries: $(dtask status "$flaky" | cut -f2)"
reliable=$(dtask submit --pure=false --retries 300 "$TASKS_WASM" fails-before "$soon")
echo "with --retries 300: $(dtask gather "$reliable")"

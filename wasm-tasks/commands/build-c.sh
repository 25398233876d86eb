#!/usr/bin/env bash
# Rebuilds the committed C command fixtures (wc.wasm, upper.wasm) from their
# sources. Needs clang, lld and a WASI sysroot; on Debian 12:
#   apt-get install clang lld wasi-libc libclang-rt-dev-wasm32
# (Debian's wasi-libc installs its sysroot under /usr, where clang's
# wasm32-wasi target finds it; elsewhere pass --sysroot=/path/to/wasi-sysroot
# in CFLAGS.)
set -euo pipefail
cd "$(dirname "$0")"
for prog in wc upper; do
    clang --target=wasm32-wasi -O2 -Wall -Wextra ${CFLAGS:-} \
        -Wl,--strip-all "$prog.c" -o "$prog.wasm"
done

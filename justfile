# dtask's recipes. Every recipe is plain cargo underneath; `just` is optional.

# One optimised build serves tests, demo and bench.
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/dtask/target")

default: build

# Build dtask and the example guests.
build:
    cargo build --release --workspace

# Run every test (unit and end-to-end).
test:
    cargo test --release --workspace

# The tour on the embedded local default.
demo:
    ./examples/quickstart.sh

# Throughput, latency and per-task overhead figures, then the same on Dask
# distributed for comparison (skipped when Dask is not installed).
bench:
    cargo bench -p dtask --bench cluster
    cargo bench -p dtask --bench pipelines
    cargo bench -p dtask --bench bigdata
    cargo bench -p dtask --bench simulator
    cargo bench -p dtask --bench state
    cargo bench -p dtask --bench dashboard
    cargo bench -p dtask --bench production
    cargo bench -p dtask --bench versus
    python3 cli/benches/dask_baseline.py

# A 20,000-task graph while a worker is killed every second, the
# scheduler every 4 s and every 25th Run message is lost (CHAOS_DROP_RUNS),
# ten runs (CHAOS_RUNS); checks every result.
chaos:
    cargo bench -p dtask --bench chaos

# The Slurm recipe (deploy/slurm/dtask.sbatch) for real, on a one-node
# Slurm from Debian's slurm-wlm started here (needs root).
slurm-test: build
    bash deploy/slurm/test.sh "$CARGO_TARGET_DIR/release/dtask" "$(cargo run --quiet --release -p dtask-guests -- tasks)"

# A small submit + gather from another command while a million-task
# pipeline runs on a fresh local default, each timed (clients take turns).
fair-share: build
    bash cli/benches/fair_share.sh "$CARGO_TARGET_DIR/release/dtask" "$(cargo run --quiet --release -p dtask-guests -- tasks)"

# Print the path of the built example guest.
guests:
    cargo run --quiet --release -p dtask-guests -- tasks

# Property tests of the decoders that face untrusted input (frames,
# MessagePack, JSON, shell words, WIT conversion), with many more cases than
# `just test` runs.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p dtask-runtime --lib fuzz

fmt:
    cargo fmt --all

lint:
    cargo fmt --all --check
    cargo clippy --release --workspace --all-targets -- -D warnings

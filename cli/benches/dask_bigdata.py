"""The Dask side of `cargo bench -p dtask --bench bigdata`: the same bytes
through `client.scatter` and `client.gather` on a LocalCluster of 2 worker
processes x 1 thread, best of 3, and a task reversing them (submit to
gathered bytes). Skipped when Dask is not installed
(`pip install "dask[distributed]"`)."""

import sys
import time

try:
    from distributed import Client, LocalCluster
except ImportError:
    print("Dask baseline: skipped (pip install 'dask[distributed]' to measure it)")
    sys.exit(0)

RUNS = 3


def reverse(b):
    return b[::-1]


def best(f):
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    mb = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    size = mb * 1_000_000
    data = bytes((i * 31 + i // 7) & 0xFF for i in range(size)) if size <= 1_000_000 else None
    if data is None:
        # Same pattern as the Rust side, built quickly.
        try:
            import numpy as np
        except ImportError:
            print("Dask baseline: skipped (pip install numpy to build its 100 MB input)")
            sys.exit(0)
        i = np.arange(size, dtype=np.uint64)
        data = ((i * 31 + i // 7) & 0xFF).astype(np.uint8).tobytes()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(reverse, b"x").result()
        futures = []

        def scatter():
            futures.append(client.scatter(data))

        def gather():
            got = client.gather(futures[-1])
            assert len(got) == size

        def rev():
            f = client.submit(reverse, futures[-1], pure=False)
            got = f.result()
            assert len(got) == size and got[:1] == data[-1:]
            del f

        s = best(scatter)
        g = best(gather)
        r = best(rev)
        print(f"Dask: scatter {mb} MB (client.scatter)      {s * 1e3:>8.1f} ms  {size / 1e6 / s:>7.0f} MB/s")
        print(f"Dask: gather  {mb} MB (client.gather)       {g * 1e3:>8.1f} ms  {size / 1e6 / g:>7.0f} MB/s")
        print(f"Dask: reverse {mb} MB, submit to bytes      {r * 1e3:>8.1f} ms  {size / 1e6 / r:>7.0f} MB/s")


if __name__ == "__main__":
    main()

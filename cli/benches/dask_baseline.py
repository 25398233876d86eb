"""The same measurements as `cargo bench -p dtask --bench cluster`, taken on
Dask distributed (2 single-thread worker processes), so `just bench` prints
both side by side from one run. Skipped when Dask is not installed
(`pip install "dask[distributed]"`)."""

import statistics
import sys
import threading
import time

try:
    from distributed import Client, LocalCluster, Lock, Queue
except ImportError:
    print("Dask baseline: skipped (pip install 'dask[distributed]' to measure it)",
          file=sys.stderr if "--json" in sys.argv else sys.stdout)
    sys.exit(3 if "--json" in sys.argv else 0)


def inc(x):
    return x + 1


def main():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(inc, -1).result()
        print("Dask baseline: LocalCluster, 2 worker processes x 1 thread")
        print("-" * 78)
        f = measure_once(client, 0)
        print(f"map+gather  10,000 inc tasks (Dask)          {f['map_gather']:>10.0f} tasks/s")
        print(f"submit->result round trip, 300 sequential  p50 {f['round_trip_us']:>7.0f} us  p99 {f['round_trip_p99_us']:>7.0f} us")
        print(f"1,000-task dependency chain (Dask)       {f['chain_ms']:>10.1f} ms wall")
        print(f"queue put+get round trip, 500 sequential   p50 {f['queue_us']:>7.0f} us  p99 {f['queue_p99_us']:>7.0f} us")
        print(f"lock acquire+release, 500 sequential       p50 {f['lock_us']:>7.0f} us  p99 {f['lock_p99_us']:>7.0f} us")

        # Dask removed Pub/Sub in 2025.4; its replacement is event topics
        # (log_event / subscribe_topic), through the scheduler.
        n = 20_000
        received = []
        done = threading.Event()

        def handler(event):
            received.append(event[1])
            if len(received) >= n:
                done.set()

        client.subscribe_topic("bench-topic", handler)
        # The subscription reaches the scheduler asynchronously; one event
        # through proves it is in place.
        for _ in range(100):
            client.log_event("bench-topic", -1)
            time.sleep(0.05)
            if received:
                break
        time.sleep(0.2)
        received.clear()
        start = time.perf_counter()
        for i in range(n):
            client.log_event("bench-topic", i)
        assert done.wait(120), f"only {len(received)} of {n} events arrived"
        rate = n / (time.perf_counter() - start)
        assert received[:n] == list(range(n)), "events out of order"
        print(f"events {n:,} to 1 subscriber (Dask topics) {rate:>10.0f} msgs/s")


def measure_once(client, run):
    """One sample of each figure `cargo bench --bench versus` compares, with
    the sample sizes it uses: {figure: value}."""
    out = {}
    n = 10_000
    offset = run * 1_000_000
    start = time.perf_counter()
    results = client.gather(client.map(inc, range(offset, offset + n)))
    out["map_gather"] = n / (time.perf_counter() - start)
    assert sum(results) == sum(range(offset + 1, offset + n + 1))
    times = []
    for i in range(300):
        start = time.perf_counter()
        assert client.submit(inc, 10_000_000 + offset + i).result() == 10_000_001 + offset + i
        times.append(time.perf_counter() - start)
    out["round_trip_us"], out["round_trip_p99_us"] = (t * 1e6 for t in percentiles(times))
    start = time.perf_counter()
    f = client.submit(inc, 0, pure=False)
    for _ in range(999):
        f = client.submit(inc, f, pure=False)
    assert f.result() == 1000
    out["chain_ms"] = (time.perf_counter() - start) * 1e3
    queue = Queue(f"versus-queue-{run}")
    times = []
    for i in range(500):
        start = time.perf_counter()
        queue.put(i)
        assert queue.get() == i
        times.append(time.perf_counter() - start)
    out["queue_us"], out["queue_p99_us"] = (t * 1e6 for t in percentiles(times))
    lock = Lock(f"versus-lock-{run}")
    times = []
    for _ in range(500):
        start = time.perf_counter()
        lock.acquire()
        lock.release()
        times.append(time.perf_counter() - start)
    out["lock_us"], out["lock_p99_us"] = (t * 1e6 for t in percentiles(times))
    start = time.perf_counter()
    work = uneven_ms()
    assert sum(client.gather(client.map(spin, work, pure=False))) == sum(work)
    out["uneven_s"] = time.perf_counter() - start
    return out


def uneven_ms(n=2_000):
    """The lengths of the uneven tasks, in ms: the sequence versus.rs draws
    (a 64-bit LCG, bits 33 and up, modulo 21)."""
    x, out = 42, []
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append((x >> 33) % 21)
    return out


def spin(ms):
    """Keeps the CPU busy for `ms` milliseconds (as the dtask guest's `spin`)."""
    until = time.perf_counter() + ms / 1e3
    while time.perf_counter() < until:
        pass
    return ms


def json_samples(runs):
    """`--json RUNS`: RUNS samples of every figure, as one JSON object of
    lists on stdout (what `cargo bench --bench versus` reads)."""
    import json
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.submit(inc, -1).result()
        samples = {}
        for run in range(runs):
            for k, v in measure_once(client, run).items():
                samples.setdefault(k, []).append(v)
        print(json.dumps(samples))


def percentiles(times):
    times = sorted(times)
    return times[len(times) // 2], times[len(times) * 99 // 100]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--json":
        json_samples(int(sys.argv[2]))
    else:
        main()

"""`serve --cluster` against plain `serve`: throughput of 1 and 2 Ray Serve replicas, and the cost per job.

Starts a local Ray instance (one CPU per replica), then in one run:
  - the overhead per job: the same txt2img sent one at a time, alternating, to a plain server and to a
    cluster ingress with one replica (median latency; the difference is what the cluster path adds:
    the Serve handle, the task board, pickling the request and images);
  - throughput: --jobs jobs from --clients concurrent HTTP clients to the plain server, then to the
    cluster with 1 and with 2 replicas (images/s, and the ratios).
On a machine with fewer cores than replicas + 1 the replicas share the CPUs: 2 replicas scale only as
far as the cores (and, with GPUs, the devices) allow. Ray runs a one-CPU replica with one torch thread
(OMP_NUM_THREADS=1); the plain server here gets as many (--threads), so the two paths do the same work.
Uses the bundled tiny model.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_cluster.py [--jobs 16] [--clients 4] [--steps 10] [--size 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


class Served:
    """An sdstudio API server over real HTTP in this process (uvicorn in a thread)."""

    def __init__(self, app: Any, workers: int) -> None:
        import httpx
        import uvicorn

        from sdstudio.engine.job_queue import JobQueue
        from sdstudio.server.app import ServerOptions, create_api

        self.queue = JobQueue(workers)
        api = create_api(app, self.queue, ServerOptions())
        self.server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
        threading.Thread(target=self.server.run, daemon=True).start()
        self.queue.start()
        while not self.server.started:
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)

    def txt2img(self, body: dict[str, Any]) -> float:
        """One job's latency, seconds."""
        start = time.perf_counter()
        self.client.post("/sdapi/v1/txt2img", json=body).raise_for_status()
        return time.perf_counter() - start

    def throughput(self, body: dict[str, Any], jobs: int, clients: int) -> float:
        """Images per second for `jobs` jobs sent by `clients` clients at once."""
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(lambda seed: self.txt2img({**body, "seed": seed}), range(jobs)))
        return jobs / (time.perf_counter() - start)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.queue.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16, help="jobs per throughput run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients in the throughput runs")
    parser.add_argument("--latency-jobs", type=int, default=10, help="jobs per path for the overhead per job")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the plain server (a replica: 1)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    import ray
    from ray import serve

    from sdstudio.app import open_app
    from sdstudio.server.cluster import NAMESPACE, cluster_app, start_cluster

    root = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    body = {
        "prompt": "a red circle on a blue background",
        "steps": args.steps,
        "sampler_name": "Euler",
        "width": args.size,
        "height": args.size,
    }
    ray.init(num_cpus=2, include_dashboard=False, namespace=NAMESPACE)
    plain = Served(open_app(root / "plain"), 1)
    cluster_data = open_app(root / "cluster")
    workers = start_cluster(cluster_data, None, 1)
    cluster = Served(cluster_app(cluster_data, workers), workers.replicas)
    try:
        plain.txt2img({**body, "seed": 0}), cluster.txt2img({**body, "seed": 0})  # warm-up: model loads
        latency: dict[str, list[float]] = {"serve": [], "cluster, 1 replica": []}
        for seed in range(1, args.latency_jobs + 1):
            latency["serve"].append(plain.txt2img({**body, "seed": seed}))
            latency["cluster, 1 replica"].append(cluster.txt2img({**body, "seed": seed}))
        rates = {
            "serve": plain.throughput(body, args.jobs, args.clients),
            "cluster, 1 replica": cluster.throughput(body, args.jobs, args.clients),
        }
        cluster.stop()
        workers.close()
        workers = start_cluster(cluster_data, None, 2)
        cluster = Served(cluster_app(cluster_data, workers), workers.replicas)
        cluster.txt2img({**body, "seed": 0})
        rates["cluster, 2 replicas"] = cluster.throughput(body, args.jobs, args.clients)
    finally:
        plain.stop()
        cluster.stop()
        workers.close()
        serve.shutdown()
        ray.shutdown()

    print(
        f"txt2img {args.size}x{args.size}, {args.steps} steps Euler, tiny model; ray {ray.__version__}; "
        f"plain server: {args.threads} torch thread(s)"
    )
    base = statistics.median(latency["serve"])
    print(f"\none job at a time ({args.latency_jobs} each, alternating)")
    print(f"{'path':<22} {'median s/job':>13} {'ratio':>7}")
    for name, values in latency.items():
        median = statistics.median(values)
        print(f"{name:<22} {median:>13.4f} {median / base:>7.3f}")
    overhead = statistics.median(latency["cluster, 1 replica"]) - base
    print(f"cluster overhead per job: {overhead * 1000:.1f} ms ({overhead / base:.1%})")
    print(f"\nthroughput ({args.jobs} jobs, {args.clients} clients at once)")
    print(f"{'path':<22} {'images/s':>9} {'vs serve':>9} {'vs 1 replica':>13}")
    for name, rate in rates.items():
        one = rates["cluster, 1 replica"]
        print(f"{name:<22} {rate:>9.2f} {rate / rates['serve']:>9.2f} {rate / one:>13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scale-out on Ray: sandbox jobs/s on one node vs two node processes, and Ray's cost per job.

All on this machine, in one run, on the same trivial jobs (so the figures are about scheduling,
not about the jobs): the baseline is a local `SandboxPool` with one container; then a real Ray
cluster (`ray start` processes, see agent.scale.local_cluster) with one node, then the same
cluster after a second node joins, each node running one container. The per-job overhead is
(Ray time - local time) / jobs at one container. On a 2-core machine two nodes share the same two
cores (and Ray's own processes take their share), so expect little gain from the second node: on a
real cluster each node brings its own cores.

    python benchmarks/ray_bench.py [--jobs 200] [--repeats 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import ExitStack

from rich.console import Console
from rich.table import Table

from agent.scale.job_runner import RayJobRunner
from agent.scale.local_cluster import LocalRayCluster
from sandbox import Job, Limits, SandboxConfig, SandboxPool
from sandbox.image import ensure_image

LIMITS = Limits(wall_s=10, cpu_s=10, memory_mb=256)


def trivial_jobs(count: int) -> list[Job]:
    return [
        Job(
            f"def f(x):\n    return x + {i}\n",
            (f"assert f(1) == {1 + i}",),
            entry_point="f",
            limits=LIMITS,
        )
        for i in range(count)
    ]


def timed(runner, jobs: list[Job]) -> float:
    started = time.perf_counter()
    verdicts = list(runner.run_iter(jobs))
    elapsed = time.perf_counter() - started
    if len(verdicts) != len(jobs) or not all(v.passed for _, v in verdicts):
        raise RuntimeError("a trivial job did not pass: the figures would be meaningless")
    return elapsed


def interleaved(runners: dict[str, object], jobs: list[Job], repeats: int) -> dict[str, float]:
    """Median seconds per runner; the runners take turns in every round, so load from other
    users of the machine falls on all of them alike (one warm-up pass each first)."""
    for runner in runners.values():
        timed(runner, jobs[: max(4, len(jobs) // 10)])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            times[name].append(timed(runner, jobs))
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", dest="json_path", help="write the figures here")
    args = parser.parse_args()
    if args.jobs < 10 or args.repeats < 1:
        parser.error("--jobs must be >= 10 and --repeats >= 1")

    import ray

    image = ensure_image()
    one = SandboxConfig(image=image, workers=1)
    jobs = trivial_jobs(args.jobs)
    console = Console()
    with ExitStack() as stack:
        cluster = stack.enter_context(LocalRayCluster(nodes=2, cpus_per_node=1))
        stack.callback(ray.shutdown)  # leave the cluster before it stops
        runners: dict[str, object] = {
            "local pool, 1 container": stack.enter_context(SandboxPool(one)),
            "local pool, 2 containers": stack.enter_context(
                SandboxPool(SandboxConfig(image=image, workers=2))
            ),
        }
        both = stack.enter_context(
            RayJobRunner(cluster.address, workers_per_node=1, sandbox_config=one)
        )
        if len(both.nodes) != 2:
            raise RuntimeError(f"expected pools on 2 nodes, got {both.nodes}")
        first = both.nodes[:1]
        runners["ray, 1 node x 1 container"] = stack.enter_context(
            RayJobRunner(cluster.address, 1, one, node_ids=first)
        )
        runners["ray, 1 node x 1 container, batch 1"] = stack.enter_context(
            RayJobRunner(cluster.address, 1, one, batch_size=1, node_ids=first)
        )
        runners["ray, 2 nodes x 1 container"] = both
        seconds = interleaved(runners, jobs, args.repeats)
    rows = list(seconds.items())

    base = seconds["local pool, 1 container"]
    figures = {
        "jobs": args.jobs,
        "repeats": args.repeats,
        **{f"jobs_per_s[{name}]": args.jobs / s for name, s in rows},
        "overhead_ms_per_job_ray_vs_local": 1000
        * (seconds["ray, 1 node x 1 container"] - base)
        / args.jobs,
        "overhead_ms_per_job_ray_batch1_vs_local": 1000
        * (seconds["ray, 1 node x 1 container, batch 1"] - base)
        / args.jobs,
        "speedup_2_nodes_vs_1_node": seconds["ray, 1 node x 1 container"]
        / seconds["ray, 2 nodes x 1 container"],
        "speedup_local_2_vs_1_containers": base / seconds["local pool, 2 containers"],
    }

    table = Table(title=f"sandbox jobs on Ray vs a local pool ({args.jobs} trivial jobs)")
    table.add_column("setup")
    table.add_column("seconds", justify="right")
    table.add_column("jobs/s", justify="right")
    table.add_column("vs local 1 container", justify="right")
    for name, s in rows:
        table.add_row(name, f"{s:.2f}", f"{args.jobs / s:.1f}", f"{base / s:.2f}x")
    console.print(table)
    console.print(
        f"Ray scheduling overhead: {figures['overhead_ms_per_job_ray_vs_local']:.2f} ms/job "
        f"(one job per call: {figures['overhead_ms_per_job_ray_batch1_vs_local']:.2f} ms/job); "
        f"2 nodes vs 1: {figures['speedup_2_nodes_vs_1_node']:.2f}x "
        f"(local 2 vs 1 containers: {figures['speedup_local_2_vs_1_containers']:.2f}x)"
    )
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
